//! Reading the pod and container cgroups that exist below a kubepods root.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use tracing::warn;

use super::layout::{Classified, KubepodsRoot, Qos, Runtime, classify};
use crate::cgroup::cgroup_id;

/// A container's cgroup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerCgroup {
    /// The runtime's container id (64 hex digits), as in the pod's
    /// `status.containerStatuses[].containerID` after the `<runtime>://` scheme.
    pub id: String,
    pub runtime: Runtime,
    /// Absolute path of the cgroup directory.
    pub path: PathBuf,
    /// The cgroup id (inode number of the directory).
    pub cgroup_id: u64,
}

/// A pod's cgroup and the container cgroups in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodCgroup {
    /// The pod's `metadata.uid`.
    pub uid: String,
    pub qos: Qos,
    /// Absolute path of the cgroup directory.
    pub path: PathBuf,
    /// The cgroup id (inode number of the directory).
    pub id: u64,
    /// Container cgroups, sorted by path. CRI-O conmon cgroups and unrecognised children
    /// are left out.
    pub containers: Vec<ContainerCgroup>,
}

/// Every pod cgroup below `root`, with its containers, sorted by path. Cgroups removed
/// while they are read are left out; unreadable directories are logged and skipped.
pub fn scan(root: &KubepodsRoot) -> Vec<PodCgroup> {
    read_pods(root, &root.path, &mut |_| true)
}

/// The pods at or below `dir`, which is the root, a QoS class cgroup or a pod cgroup
/// below `root` (anything else yields nothing), sorted by path.
///
/// `enter` is called with every directory that holds pods or containers (the root, QoS
/// class and pod cgroups) just before it is listed; the watcher adds its inotify watch
/// there, so that whatever appears after the listing is reported by inotify. `enter`
/// returns `false` when the directory is gone, which skips it.
pub(super) fn read_pods(
    root: &KubepodsRoot,
    dir: &Path,
    enter: &mut dyn FnMut(&Path) -> bool,
) -> Vec<PodCgroup> {
    let mut pods = Vec::new();
    read_into(root, dir, enter, &mut pods);
    pods.sort_by(|a, b| a.path.cmp(&b.path));
    pods
}

fn read_into(
    root: &KubepodsRoot,
    dir: &Path,
    enter: &mut dyn FnMut(&Path) -> bool,
    pods: &mut Vec<PodCgroup>,
) {
    let Ok(rel) = dir.strip_prefix(&root.path) else {
        return;
    };
    match classify(root, rel) {
        Classified::Root | Classified::QosClass(_) => {
            if !enter(dir) {
                return;
            }
            // `classify` only admits QoS classes directly below the root, so this
            // recursion is at most two levels deep.
            for child in subdirectories(dir) {
                let rel = child.strip_prefix(&root.path).unwrap_or(&child);
                if matches!(
                    classify(root, rel),
                    Classified::QosClass(_) | Classified::Pod { .. }
                ) {
                    read_into(root, &child, enter, pods);
                }
            }
        }
        Classified::Pod { uid, qos } => {
            if !enter(dir) {
                return;
            }
            let Ok(id) = cgroup_id(dir) else {
                return;
            };
            let containers = subdirectories(dir)
                .iter()
                .filter_map(|child| read_container(root, child))
                .collect();
            pods.push(PodCgroup {
                uid,
                qos,
                path: dir.to_owned(),
                id,
                containers,
            });
        }
        Classified::Container { .. } | Classified::Conmon { .. } | Classified::Other => {}
    }
}

/// The container cgroup at `path`, if `path` names one and it exists.
pub(super) fn read_container(root: &KubepodsRoot, path: &Path) -> Option<ContainerCgroup> {
    let rel = path.strip_prefix(&root.path).ok()?;
    let Classified::Container { id, runtime, .. } = classify(root, rel) else {
        return None;
    };
    let cgroup_id = cgroup_id(path).ok()?;
    Some(ContainerCgroup {
        id,
        runtime,
        path: path.to_owned(),
        cgroup_id,
    })
}

/// The subdirectories of `dir`, sorted. A missing `dir` has none; other errors are
/// logged.
fn subdirectories(dir: &Path) -> Vec<PathBuf> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            warn!("listing {}: {e}", dir.display());
            return Vec::new();
        }
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
        .map(|entry| entry.path())
        .collect();
    dirs.sort();
    dirs
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    const UID_A: &str = "11111111-2222-3333-4444-555555555555";
    const UID_B: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
    const UID_C: &str = "6a4b1d0f2a5b1d0f2a5b1d0f2a5b1d0f";

    fn id(c: char) -> String {
        c.to_string().repeat(64)
    }

    fn ino(path: &Path) -> u64 {
        fs::metadata(path).unwrap().ino()
    }

    /// Create the directories `rels` (and their parents) below `base`.
    fn mkdirs(base: &Path, rels: &[String]) {
        for rel in rels {
            fs::create_dir_all(base.join(rel)).unwrap();
        }
    }

    fn pod(uid: &str, qos: Qos, path: PathBuf, containers: Vec<ContainerCgroup>) -> PodCgroup {
        PodCgroup {
            uid: uid.into(),
            qos,
            id: ino(&path),
            path,
            containers,
        }
    }

    fn container(id: String, runtime: Runtime, path: PathBuf) -> ContainerCgroup {
        ContainerCgroup {
            id,
            runtime,
            cgroup_id: ino(&path),
            path,
        }
    }

    #[test]
    fn scans_systemd_layout() {
        let dir = tempfile::tempdir().unwrap();
        let root = KubepodsRoot::at(dir.path().join("kubepods.slice"));
        let r = &root.path;
        let a = "kubepods-burstable.slice/kubepods-burstable-pod11111111_2222_3333_4444_555555555555.slice";
        let b = "kubepods-besteffort.slice/kubepods-besteffort-podaaaaaaaa_bbbb_cccc_dddd_eeeeeeeeeeee.slice";
        let c = format!("kubepods-pod{UID_C}.slice");
        mkdirs(
            r,
            &[
                format!("{a}/cri-containerd-{}.scope", id('1')),
                format!("{a}/cri-containerd-{}.scope/nested/deeper", id('2')),
                format!("{a}/something-else"),
                format!("{b}/crio-{}.scope", id('3')),
                format!("{b}/crio-conmon-{}.scope", id('3')),
                c.clone(),
                // Not pods.
                "kubepods-burstable.slice/stray".into(),
                "kubepods-guaranteed.slice/kubepods-guaranteed-pod1.slice".into(),
            ],
        );
        // cgroup interface files are files, not cgroups.
        fs::write(r.join("cgroup.procs"), b"").unwrap();
        fs::write(r.join(a).join("cgroup.procs"), b"").unwrap();
        fs::write(
            r.join(a).join(format!("cri-containerd-{}.scope", id('4'))),
            b"",
        )
        .unwrap();

        let expected = vec![
            pod(
                UID_B,
                Qos::BestEffort,
                r.join(b),
                vec![container(
                    id('3'),
                    Runtime::CriO,
                    r.join(b).join(format!("crio-{}.scope", id('3'))),
                )],
            ),
            pod(
                UID_A,
                Qos::Burstable,
                r.join(a),
                vec![
                    container(
                        id('1'),
                        Runtime::Containerd,
                        r.join(a).join(format!("cri-containerd-{}.scope", id('1'))),
                    ),
                    container(
                        id('2'),
                        Runtime::Containerd,
                        r.join(a).join(format!("cri-containerd-{}.scope", id('2'))),
                    ),
                ],
            ),
            pod(UID_C, Qos::Guaranteed, r.join(&c), vec![]),
        ];
        assert_eq!(scan(&root), expected);
    }

    #[test]
    fn scans_cgroupfs_layout() {
        let dir = tempfile::tempdir().unwrap();
        let root = KubepodsRoot::at(dir.path().join("kubepods"));
        let r = &root.path;
        let a = format!("burstable/pod{UID_A}");
        let b = format!("pod{UID_B}");
        mkdirs(
            r,
            &[
                format!("{a}/{}", id('1')),
                format!("{a}/crio-{}", id('2')),
                format!("{a}/crio-conmon-{}", id('2')),
                format!("{b}/{}/nested", id('3')),
                "besteffort".into(),
                "burstable/not-a-pod".into(),
            ],
        );
        let expected = vec![
            pod(
                UID_A,
                Qos::Burstable,
                r.join(&a),
                vec![
                    container(id('1'), Runtime::Containerd, r.join(&a).join(id('1'))),
                    container(
                        id('2'),
                        Runtime::CriO,
                        r.join(&a).join(format!("crio-{}", id('2'))),
                    ),
                ],
            ),
            pod(
                UID_B,
                Qos::Guaranteed,
                r.join(&b),
                vec![container(
                    id('3'),
                    Runtime::Containerd,
                    r.join(&b).join(id('3')),
                )],
            ),
        ];
        assert_eq!(scan(&root), expected);
    }

    #[test]
    fn empty_and_missing_roots() {
        let dir = tempfile::tempdir().unwrap();
        let root = KubepodsRoot::at(dir.path().join("kubepods.slice"));
        assert_eq!(scan(&root), vec![]);
        fs::create_dir(&root.path).unwrap();
        assert_eq!(scan(&root), vec![]);
    }

    #[test]
    fn reads_subtrees_and_enters_directories_before_listing() {
        let dir = tempfile::tempdir().unwrap();
        let root = KubepodsRoot::at(dir.path().join("kubepods"));
        let r = &root.path;
        mkdirs(
            r,
            &[
                format!("burstable/pod{UID_A}/{}", id('1')),
                format!("besteffort/pod{UID_B}"),
                format!("pod{UID_C}"),
            ],
        );
        let mut entered = Vec::new();
        let pods = read_pods(&root, &r.join("burstable"), &mut |p| {
            entered.push(p.to_owned());
            true
        });
        assert_eq!(pods.len(), 1);
        assert_eq!(pods[0].uid, UID_A);
        assert_eq!(
            entered,
            [r.join("burstable"), r.join(format!("burstable/pod{UID_A}"))]
        );

        // A pod directory by itself.
        let pods = read_pods(&root, &r.join(format!("pod{UID_C}")), &mut |_| true);
        assert_eq!(pods.len(), 1);
        assert_eq!(pods[0].qos, Qos::Guaranteed);

        // The whole tree, with the QoS classes refused (as if gone).
        entered.clear();
        let pods = read_pods(&root, r, &mut |p| {
            entered.push(p.to_owned());
            !p.ends_with("burstable") && !p.ends_with("besteffort")
        });
        assert_eq!(pods.len(), 1);
        assert_eq!(pods[0].uid, UID_C);
        assert_eq!(entered.len(), 4, "{entered:?}");

        // Containers, conmon and other paths are not pod holders.
        let container = r.join(format!("burstable/pod{UID_A}/{}", id('1')));
        assert_eq!(read_pods(&root, &container, &mut |_| true), vec![]);
        assert_eq!(
            read_container(&root, &container).map(|c| c.cgroup_id),
            Some(ino(&container))
        );
        assert_eq!(read_container(&root, &r.join("burstable")), None);
        // Outside the root.
        assert_eq!(read_pods(&root, dir.path(), &mut |_| true), vec![]);
    }
}
