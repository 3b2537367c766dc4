//! How the kubelet and the container runtimes name their cgroups, and what a path below
//! the kubepods root denotes.
//!
//! Everything here is pure string handling except [`find_kubepods`] and [`locate`], which
//! only check whether candidate directories exist.

use std::path::{Component, Path, PathBuf};

/// The kubelet's cgroup driver (`--cgroup-driver`), which decides how cgroups are named.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Driver {
    /// systemd units: `kubepods.slice/kubepods-burstable.slice/
    /// kubepods-burstable-pod<uid>.slice/cri-containerd-<id>.scope`.
    Systemd,
    /// Plain directories: `kubepods/burstable/pod<uid>/<id>`.
    Cgroupfs,
}

/// A pod's QoS class, which decides where the kubelet puts the pod's cgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Qos {
    /// Pods sit directly in the kubepods root.
    Guaranteed,
    /// Pods sit in the `burstable` QoS cgroup.
    Burstable,
    /// Pods sit in the `besteffort` QoS cgroup.
    BestEffort,
}

impl Qos {
    /// The QoS classes that have a cgroup of their own below the kubepods root, with the
    /// name the kubelet gives it (cgroupfs spelling; systemd adds prefix and suffix).
    const WITH_CGROUP: [(Qos, &'static str); 2] = [
        (Qos::Burstable, "burstable"),
        (Qos::BestEffort, "besteffort"),
    ];
}

/// The container runtime that created a container cgroup, as far as its name tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Runtime {
    /// `cri-containerd-<id>.scope` (systemd), or a bare `<id>` (cgroupfs). cri-dockerd
    /// also uses bare ids under cgroupfs, so those are reported as containerd too.
    Containerd,
    /// `crio-<id>.scope` (systemd) or `crio-<id>` (cgroupfs).
    CriO,
    /// `docker-<id>.scope` (systemd, cri-dockerd).
    Docker,
}

/// The kubelet's root cgroup for pods ("kubepods"), as a directory on the cgroup2 mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubepodsRoot {
    /// Absolute path of the directory, e.g. `/sys/fs/cgroup/kubepods.slice`.
    pub path: PathBuf,
    pub driver: Driver,
}

impl KubepodsRoot {
    /// The kubepods root at `path`, with the driver inferred from the directory name: a
    /// `.slice` is systemd's, anything else cgroupfs. Does not touch the filesystem.
    ///
    /// Under systemd every cgroup's name repeats its parent's, so the root's name sets
    /// the prefix of all names below it: `kubelet.slice/kubelet-kubepods.slice` (the
    /// kubelet run with `--cgroup-root=/kubelet`, as in kind) has QoS slices named
    /// `kubelet-kubepods-burstable.slice`. [`classify`] follows that rule.
    pub fn at(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let driver = match path.file_name().and_then(|n| n.to_str()) {
            Some(name) if name.ends_with(".slice") => Driver::Systemd,
            _ => Driver::Cgroupfs,
        };
        Self { path, driver }
    }

    /// The systemd unit name of the root without `.slice` (`kubepods`,
    /// `kubelet-kubepods`): the prefix of every slice name below it.
    fn slice_stem(&self) -> &str {
        let name = self
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        name.strip_suffix(".slice").unwrap_or(name)
    }
}

/// Find the kubelet's root directly below `cgroup_root` (normally the cgroup2 mount):
/// `kubepods.slice` (systemd driver) or `kubepods` (cgroupfs driver). If both exist,
/// systemd's wins: a node that switched drivers keeps a stale, empty `kubepods` around.
pub fn find_kubepods(cgroup_root: &Path) -> Option<KubepodsRoot> {
    ["kubepods.slice", "kubepods"]
        .into_iter()
        .map(|name| cgroup_root.join(name))
        .find(|path| path.is_dir())
        .map(KubepodsRoot::at)
}

/// The kubepods root below `cgroup_root`, if it exists: at `rel` (a path relative to
/// `cgroup_root`, for nodes whose kubelet uses a non-default `--cgroup-root`, e.g.
/// `kubelet.slice/kubelet-kubepods.slice`), or where [`find_kubepods`] looks when `rel` is
/// `None`.
pub fn locate(cgroup_root: &Path, rel: Option<&Path>) -> Option<KubepodsRoot> {
    match rel {
        None => find_kubepods(cgroup_root),
        Some(rel) => {
            let path = cgroup_root.join(rel);
            path.is_dir().then(|| KubepodsRoot::at(path))
        }
    }
}

/// What a cgroup below the kubepods root is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Classified {
    /// The kubepods root itself (the empty relative path).
    Root,
    /// The cgroup of a QoS class (only Burstable and BestEffort have one).
    QosClass(Qos),
    /// A pod's cgroup. `uid` is the pod's `metadata.uid`, with the dashes restored under
    /// systemd.
    Pod { uid: String, qos: Qos },
    /// A container's cgroup, a child of its pod's. `id` is the runtime's container id.
    Container {
        pod_uid: String,
        id: String,
        runtime: Runtime,
    },
    /// CRI-O's `conmon` monitor for a container: a child of the pod's cgroup, but not a
    /// container.
    Conmon { pod_uid: String, id: String },
    /// Anything else: unknown names, cgroups a workload nests below its container's,
    /// paths that are not plain relative paths.
    Other,
}

/// Classify `rel`, a path relative to `root.path` (as from `Path::strip_prefix`), by the
/// naming rules of `root.driver`. Pure: the filesystem is not consulted.
///
/// Recognised, for a root named `kubepods.slice` (systemd) or `kubepods` (cgroupfs):
///
/// | what | systemd | cgroupfs |
/// | --- | --- | --- |
/// | QoS class | `kubepods-burstable.slice` | `burstable` |
/// | pod (Burstable) | `kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice` | `burstable/pod<uid>` |
/// | pod (Guaranteed) | `kubepods-pod<uid>.slice` | `pod<uid>` |
/// | container | `<pod>/cri-containerd-<id>.scope`, `<pod>/crio-<id>.scope`, `<pod>/docker-<id>.scope` | `<pod>/<id>`, `<pod>/crio-<id>` |
/// | CRI-O conmon | `<pod>/crio-conmon-<id>.scope` | `<pod>/crio-conmon-<id>` |
///
/// Container ids are 64 lowercase hex digits. Under systemd the uid in a pod slice name
/// has its dashes written as underscores; they are converted back.
pub fn classify(root: &KubepodsRoot, rel: &Path) -> Classified {
    let mut names = Vec::new();
    for component in rel.components() {
        match component {
            Component::Normal(name) => match name.to_str() {
                Some(name) => names.push(name),
                None => return Classified::Other,
            },
            Component::CurDir => {}
            Component::RootDir | Component::ParentDir | Component::Prefix(_) => {
                return Classified::Other;
            }
        }
    }
    classify_names(&Naming::new(root), &names).unwrap_or(Classified::Other)
}

/// `classify` on the names of `rel`'s components; `None` for `Other`.
fn classify_names(naming: &Naming, names: &[&str]) -> Option<Classified> {
    Some(match *names {
        [] => Classified::Root,
        [first] => match naming.qos_class(first) {
            Some(qos) => Classified::QosClass(qos),
            None => Classified::Pod {
                uid: naming.pod(None, first)?,
                qos: Qos::Guaranteed,
            },
        },
        [first, second] => match naming.qos_class(first) {
            Some(qos) => Classified::Pod {
                uid: naming.pod(Some(qos), second)?,
                qos,
            },
            None => {
                let pod_uid = naming.pod(None, first)?;
                naming.container(pod_uid, second)?
            }
        },
        [first, second, third] => {
            let qos = naming.qos_class(first)?;
            let pod_uid = naming.pod(Some(qos), second)?;
            naming.container(pod_uid, third)?
        }
        _ => return None,
    })
}

/// The naming rules below one kubepods root.
struct Naming<'a> {
    driver: Driver,
    /// systemd only: the root's unit name without `.slice`.
    stem: &'a str,
}

impl<'a> Naming<'a> {
    fn new(root: &'a KubepodsRoot) -> Self {
        Self {
            driver: root.driver,
            stem: root.slice_stem(),
        }
    }

    /// The QoS class whose cgroup (directly below the root) is named `name`.
    fn qos_class(&self, name: &str) -> Option<Qos> {
        let base = match self.driver {
            Driver::Systemd => name
                .strip_suffix(".slice")?
                .strip_prefix(self.stem)?
                .strip_prefix('-')?,
            Driver::Cgroupfs => name,
        };
        Qos::WITH_CGROUP
            .iter()
            .find(|(_, n)| *n == base)
            .map(|(qos, _)| *qos)
    }

    /// The uid of the pod whose cgroup is named `name`, in the QoS class cgroup `qos`
    /// (`None`: directly below the root, i.e. Guaranteed).
    fn pod(&self, qos: Option<Qos>, name: &str) -> Option<String> {
        match self.driver {
            Driver::Systemd => {
                // The pod's slice name is its parent's stem followed by `-pod<uid>`.
                let mut rest = name.strip_suffix(".slice")?.strip_prefix(self.stem)?;
                if let Some(qos) = qos {
                    let (_, qos_name) = Qos::WITH_CGROUP.iter().find(|(q, _)| *q == qos)?;
                    rest = rest.strip_prefix('-')?.strip_prefix(qos_name)?;
                }
                let escaped = rest.strip_prefix("-pod")?;
                let valid = !escaped.is_empty()
                    && escaped
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_');
                valid.then(|| escaped.replace('_', "-"))
            }
            Driver::Cgroupfs => {
                let uid = name.strip_prefix("pod")?;
                let valid =
                    !uid.is_empty() && uid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
                valid.then(|| uid.to_owned())
            }
        }
    }

    /// What the child `name` of the cgroup of pod `pod_uid` is, if it is a container or a
    /// conmon.
    fn container(&self, pod_uid: String, name: &str) -> Option<Classified> {
        let (prefixes, base): (&[(&str, Option<Runtime>)], &str) = match self.driver {
            Driver::Systemd => (
                &[
                    ("cri-containerd-", Some(Runtime::Containerd)),
                    ("crio-conmon-", None),
                    ("crio-", Some(Runtime::CriO)),
                    ("docker-", Some(Runtime::Docker)),
                ],
                name.strip_suffix(".scope")?,
            ),
            Driver::Cgroupfs => (
                &[
                    ("crio-conmon-", None),
                    ("crio-", Some(Runtime::CriO)),
                    ("", Some(Runtime::Containerd)),
                ],
                name,
            ),
        };
        // The first matching prefix decides: `crio-conmon-` is tried before `crio-`.
        let (id, runtime) = prefixes
            .iter()
            .find_map(|(prefix, runtime)| Some((base.strip_prefix(prefix)?, *runtime)))?;
        if !is_container_id(id) {
            return None;
        }
        let id = id.to_owned();
        Some(match runtime {
            Some(runtime) => Classified::Container {
                pod_uid,
                id,
                runtime,
            },
            None => Classified::Conmon { pod_uid, id },
        })
    }
}

/// A runtime container id: 64 lowercase hex digits.
fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "3f1c2a4b-5d6e-4f70-8a9b-0c1d2e3f4a5b";
    /// The same uid as written in systemd slice names.
    const UID_ESCAPED: &str = "3f1c2a4b_5d6e_4f70_8a9b_0c1d2e3f4a5b";

    fn id() -> String {
        "0123456789abcdef".repeat(4)
    }

    fn systemd() -> KubepodsRoot {
        KubepodsRoot::at("/sys/fs/cgroup/kubepods.slice")
    }

    fn cgroupfs() -> KubepodsRoot {
        KubepodsRoot::at("/sys/fs/cgroup/kubepods")
    }

    fn at(root: &KubepodsRoot, rel: &str) -> Classified {
        classify(root, Path::new(rel))
    }

    /// The pod cgroup's path relative to the root, for each driver and QoS class.
    fn pod_dir(driver: Driver, qos: Qos) -> String {
        match (driver, qos) {
            (Driver::Systemd, Qos::Guaranteed) => format!("kubepods-pod{UID_ESCAPED}.slice"),
            (Driver::Systemd, Qos::Burstable) => {
                format!("kubepods-burstable.slice/kubepods-burstable-pod{UID_ESCAPED}.slice")
            }
            (Driver::Systemd, Qos::BestEffort) => {
                format!("kubepods-besteffort.slice/kubepods-besteffort-pod{UID_ESCAPED}.slice")
            }
            (Driver::Cgroupfs, Qos::Guaranteed) => format!("pod{UID}"),
            (Driver::Cgroupfs, Qos::Burstable) => format!("burstable/pod{UID}"),
            (Driver::Cgroupfs, Qos::BestEffort) => format!("besteffort/pod{UID}"),
        }
    }

    fn container(runtime: Runtime) -> Classified {
        Classified::Container {
            pod_uid: UID.into(),
            id: id(),
            runtime,
        }
    }

    #[test]
    fn infers_driver_from_root_name() {
        assert_eq!(systemd().driver, Driver::Systemd);
        assert_eq!(cgroupfs().driver, Driver::Cgroupfs);
        assert_eq!(
            KubepodsRoot::at("/sys/fs/cgroup/kubelet.slice/kubelet-kubepods.slice").driver,
            Driver::Systemd
        );
        assert_eq!(KubepodsRoot::at("/").driver, Driver::Cgroupfs);
    }

    #[test]
    fn root_and_qos_classes() {
        for root in [systemd(), cgroupfs()] {
            assert_eq!(at(&root, ""), Classified::Root);
            assert_eq!(at(&root, "."), Classified::Root);
        }
        let s = systemd();
        assert_eq!(
            at(&s, "kubepods-burstable.slice"),
            Classified::QosClass(Qos::Burstable)
        );
        assert_eq!(
            at(&s, "kubepods-besteffort.slice"),
            Classified::QosClass(Qos::BestEffort)
        );
        let c = cgroupfs();
        assert_eq!(at(&c, "burstable"), Classified::QosClass(Qos::Burstable));
        assert_eq!(at(&c, "besteffort"), Classified::QosClass(Qos::BestEffort));
    }

    #[test]
    fn pods_in_every_layout() {
        for root in [systemd(), cgroupfs()] {
            for qos in [Qos::Guaranteed, Qos::Burstable, Qos::BestEffort] {
                let dir = pod_dir(root.driver, qos);
                assert_eq!(
                    at(&root, &dir),
                    Classified::Pod {
                        uid: UID.into(),
                        qos
                    },
                    "{:?} {dir}",
                    root.driver
                );
            }
        }
    }

    #[test]
    fn containers_conmon_and_others_in_every_layout() {
        let id = id();
        let systemd_children = [
            (
                format!("cri-containerd-{id}.scope"),
                container(Runtime::Containerd),
            ),
            (format!("crio-{id}.scope"), container(Runtime::CriO)),
            (format!("docker-{id}.scope"), container(Runtime::Docker)),
            (
                format!("crio-conmon-{id}.scope"),
                Classified::Conmon {
                    pod_uid: UID.into(),
                    id: id.clone(),
                },
            ),
            // cgroupfs names are not systemd ones.
            (id.clone(), Classified::Other),
            (format!("crio-{id}"), Classified::Other),
            // Something the workload or an agent created.
            ("nested".into(), Classified::Other),
            (
                format!("cri-containerd-{id}.scope/nested"),
                Classified::Other,
            ),
            (format!("crio-{id}.scope/container"), Classified::Other),
        ];
        let cgroupfs_children = [
            (id.clone(), container(Runtime::Containerd)),
            (format!("crio-{id}"), container(Runtime::CriO)),
            (
                format!("crio-conmon-{id}"),
                Classified::Conmon {
                    pod_uid: UID.into(),
                    id: id.clone(),
                },
            ),
            (format!("cri-containerd-{id}.scope"), Classified::Other),
            (format!("{id}.scope"), Classified::Other),
            (format!("docker-{id}"), Classified::Other),
            ("nested".into(), Classified::Other),
            (format!("{id}/nested"), Classified::Other),
        ];
        for (root, children) in [
            (systemd(), &systemd_children[..]),
            (cgroupfs(), &cgroupfs_children[..]),
        ] {
            for qos in [Qos::Guaranteed, Qos::Burstable, Qos::BestEffort] {
                for (child, expected) in children.iter() {
                    let rel = format!("{}/{child}", pod_dir(root.driver, qos));
                    assert_eq!(&at(&root, &rel), expected, "{:?} {rel}", root.driver);
                }
            }
        }
    }

    #[test]
    fn systemd_uids_get_their_dashes_back() {
        // A static pod's uid is a hash without dashes.
        let hash = "6a4b1d0f2a5b1d0f2a5b1d0f2a5b1d0f";
        assert_eq!(
            at(&systemd(), &format!("kubepods-pod{hash}.slice")),
            Classified::Pod {
                uid: hash.into(),
                qos: Qos::Guaranteed
            }
        );
        let Classified::Pod { uid, .. } =
            at(&systemd(), &pod_dir(Driver::Systemd, Qos::BestEffort))
        else {
            panic!("not a pod");
        };
        assert_eq!(uid, UID);
        // cgroupfs names carry the uid verbatim.
        assert_eq!(
            at(&cgroupfs(), &format!("pod{UID_ESCAPED}")),
            Classified::Other
        );
    }

    #[test]
    fn junk_is_other() {
        let id = id();
        let s = systemd();
        for rel in [
            "kubepods-guaranteed.slice",
            "kubepods-burstable",
            "kubepods-burstable.scope",
            "other-burstable.slice",
            "kubepods.slice",
            "system.slice",
            // Pod slices with no, or a malformed, uid.
            "kubepods-pod.slice",
            &format!("kubepods-pod{UID}.slice"),
            &format!("kubepods-pod{UID_ESCAPED}"),
            &format!("kubepods-pod{UID_ESCAPED}.scope"),
            // A pod slice in the wrong parent.
            &format!("kubepods-burstable-pod{UID_ESCAPED}.slice"),
            &format!("kubepods-burstable.slice/kubepods-pod{UID_ESCAPED}.slice"),
            &format!("kubepods-burstable.slice/kubepods-besteffort-pod{UID_ESCAPED}.slice"),
            "kubepods-burstable.slice/kubepods-burstable.slice",
            "kubepods-burstable.slice/kubepods-besteffort.slice",
            // Container ids must be 64 lowercase hex digits.
            &format!("kubepods-pod{UID_ESCAPED}.slice/cri-containerd-abc.scope"),
            &format!(
                "kubepods-pod{UID_ESCAPED}.slice/cri-containerd-{}.scope",
                id.to_uppercase()
            ),
            &format!("kubepods-pod{UID_ESCAPED}.slice/cri-containerd-{id}0.scope"),
            &format!("kubepods-pod{UID_ESCAPED}.slice/cri-containerd-.scope"),
            &format!("kubepods-pod{UID_ESCAPED}.slice/crio-conmon-.scope"),
            &format!("kubepods-pod{UID_ESCAPED}.slice/unknown-{id}.scope"),
            // Not plain relative paths, or too deep.
            "..",
            "/kubepods-burstable.slice",
            &format!("../kubepods.slice/kubepods-pod{UID_ESCAPED}.slice"),
            &format!("kubepods-burstable.slice/a/b/cri-containerd-{id}.scope"),
        ] {
            assert_eq!(at(&s, rel), Classified::Other, "systemd {rel}");
        }
        let c = cgroupfs();
        for rel in [
            "guaranteed",
            "Burstable",
            "burstable.slice",
            "kubepods",
            "pod",
            &format!("pod{UID}.slice"),
            &format!("pod{UID}/x"),
            "burstable/burstable",
            "burstable/besteffort",
            "burstable/pod",
            &format!("burstable/pod{UID}/{}", &id[..63]),
            &format!("besteffort/pod{UID}/crio-"),
            &format!("besteffort/pod{UID}/{id}/{id}"),
            "..",
        ] {
            assert_eq!(at(&c, rel), Classified::Other, "cgroupfs {rel}");
        }
    }

    #[test]
    fn non_utf8_names_are_other() {
        use std::{ffi::OsStr, os::unix::ffi::OsStrExt};
        let rel = Path::new(OsStr::from_bytes(b"pod\xff"));
        assert_eq!(classify(&cgroupfs(), rel), Classified::Other);
    }

    #[test]
    fn nested_roots_set_the_slice_prefix() {
        let id = id();
        let root = KubepodsRoot::at("/sys/fs/cgroup/kubelet.slice/kubelet-kubepods.slice");
        assert_eq!(
            at(&root, "kubelet-kubepods-besteffort.slice"),
            Classified::QosClass(Qos::BestEffort)
        );
        assert_eq!(
            at(
                &root,
                &format!(
                    "kubelet-kubepods-besteffort.slice/\
                     kubelet-kubepods-besteffort-pod{UID_ESCAPED}.slice/\
                     cri-containerd-{id}.scope"
                )
            ),
            container(Runtime::Containerd)
        );
        assert_eq!(
            at(&root, &format!("kubelet-kubepods-pod{UID_ESCAPED}.slice")),
            Classified::Pod {
                uid: UID.into(),
                qos: Qos::Guaranteed
            }
        );
        // The default names do not belong to this root.
        assert_eq!(at(&root, "kubepods-besteffort.slice"), Classified::Other);
        assert_eq!(
            at(&root, &format!("kubepods-pod{UID_ESCAPED}.slice")),
            Classified::Other
        );

        // cgroupfs names do not depend on the root's.
        let root = KubepodsRoot::at("/sys/fs/cgroup/kubelet/kubepods");
        assert_eq!(
            at(&root, &format!("burstable/pod{UID}/{id}")),
            container(Runtime::Containerd)
        );
    }

    #[test]
    fn finds_and_locates_roots() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        assert_eq!(find_kubepods(base), None);
        std::fs::create_dir(base.join("kubepods")).unwrap();
        assert_eq!(
            find_kubepods(base),
            Some(KubepodsRoot {
                path: base.join("kubepods"),
                driver: Driver::Cgroupfs
            })
        );
        // systemd's wins when both exist.
        std::fs::create_dir(base.join("kubepods.slice")).unwrap();
        assert_eq!(
            find_kubepods(base),
            Some(KubepodsRoot {
                path: base.join("kubepods.slice"),
                driver: Driver::Systemd
            })
        );
        assert_eq!(locate(base, None), find_kubepods(base));

        let nested = Path::new("kubelet.slice/kubelet-kubepods.slice");
        assert_eq!(locate(base, Some(nested)), None);
        std::fs::create_dir_all(base.join(nested)).unwrap();
        assert_eq!(
            locate(base, Some(nested)),
            Some(KubepodsRoot {
                path: base.join(nested),
                driver: Driver::Systemd
            })
        );
        // A file is not a cgroup.
        std::fs::write(base.join("kubepods-file"), b"").unwrap();
        assert_eq!(locate(base, Some(Path::new("kubepods-file"))), None);
    }
}
