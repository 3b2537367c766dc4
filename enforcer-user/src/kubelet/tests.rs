//! Tests of the [`Watcher`] and [`wait_for_kubepods`]: on plain directories in a
//! temporary directory (inotify behaves the same there), and on real cgroups below the
//! cgroup2 mount when running as root.

use std::{
    collections::BTreeMap,
    fs,
    io::Write,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use tokio::time::timeout;

use super::*;
use crate::cgroup::{Cgroup2Mount, cgroup_id};

/// How long a test waits for an event before failing. Generous: it only bounds a hang.
const PATIENCE: Duration = Duration::from_secs(10);

const UID_A: &str = "11111111-2222-3333-4444-555555555555";
const UID_A_ESCAPED: &str = "11111111_2222_3333_4444_555555555555";
const UID_B: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
const UID_B_ESCAPED: &str = "aaaaaaaa_bbbb_cccc_dddd_eeeeeeeeeeee";
const UID_C: &str = "6a4b1d0f2a5b1d0f2a5b1d0f2a5b1d0f";

/// A container id made of one repeated hex digit.
fn cid(c: char) -> String {
    c.to_string().repeat(64)
}

fn id_of(path: &Path) -> u64 {
    cgroup_id(path).unwrap()
}

async fn next_event(watcher: &mut Watcher) -> CgroupEvent {
    match timeout(PATIENCE, watcher.next()).await {
        Ok(Ok(event)) => event,
        Ok(Err(e)) => panic!("watcher failed: {e}"),
        Err(_) => panic!("no event within {PATIENCE:?}"),
    }
}

/// What a consumer of the events knows: pods by path, with their uid, id and containers
/// (path to cgroup id). Applying an event checks that it makes sense.
#[derive(Debug, Default, PartialEq, Eq)]
struct Mirror {
    pods: BTreeMap<PathBuf, (String, u64, BTreeMap<PathBuf, u64>)>,
}

impl Mirror {
    fn from_pods<'a>(pods: impl IntoIterator<Item = &'a PodCgroup>) -> Self {
        let mut mirror = Self::default();
        for pod in pods {
            mirror.apply(CgroupEvent::PodAdded(pod.clone()));
        }
        mirror
    }

    fn apply(&mut self, event: CgroupEvent) {
        match event {
            CgroupEvent::PodAdded(pod) => {
                let containers = pod
                    .containers
                    .iter()
                    .map(|c| (c.path.clone(), c.cgroup_id))
                    .collect();
                let old = self
                    .pods
                    .insert(pod.path.clone(), (pod.uid, pod.id, containers));
                assert!(old.is_none(), "pod {} added twice", pod.path.display());
            }
            CgroupEvent::PodRemoved { uid, path } => {
                let (known_uid, _, containers) = self
                    .pods
                    .remove(&path)
                    .unwrap_or_else(|| panic!("unknown pod {} removed", path.display()));
                assert_eq!(uid, known_uid);
                assert!(containers.is_empty(), "pod removed before {containers:?}");
            }
            CgroupEvent::ContainerAdded { pod_uid, container } => {
                let pod = self.pod(&container.path, &pod_uid);
                let old = pod.insert(container.path.clone(), container.cgroup_id);
                assert!(old.is_none(), "{} added twice", container.path.display());
            }
            CgroupEvent::ContainerRemoved { pod_uid, path } => {
                let pod = self.pod(&path, &pod_uid);
                assert!(pod.remove(&path).is_some(), "unknown {}", path.display());
            }
        }
    }

    /// The containers of the pod holding the container at `path`.
    fn pod(&mut self, path: &Path, uid: &str) -> &mut BTreeMap<PathBuf, u64> {
        let parent = path.parent().unwrap();
        let (known_uid, _, containers) = self
            .pods
            .get_mut(parent)
            .unwrap_or_else(|| panic!("container {} in an unknown pod", path.display()));
        assert_eq!(uid, known_uid);
        containers
    }

    /// The expected state: pods (path, uid) with container paths, ids read from the
    /// filesystem.
    fn expect(pods: &[(&Path, &str, &[&Path])]) -> Self {
        let pods = pods
            .iter()
            .map(|(path, uid, containers)| {
                let containers = containers.iter().map(|c| (c.to_path_buf(), id_of(c)));
                let value = (uid.to_string(), id_of(path), containers.collect());
                (path.to_path_buf(), value)
            })
            .collect();
        Self { pods }
    }
}

/// Apply events to `mirror` until it equals `expected`.
async fn converge(watcher: &mut Watcher, mirror: &mut Mirror, expected: &Mirror) {
    while mirror != expected {
        match timeout(PATIENCE, watcher.next()).await {
            Ok(Ok(event)) => mirror.apply(event),
            Ok(Err(e)) => panic!("watcher failed: {e}"),
            Err(_) => panic!("stuck at\n{mirror:#?}\nexpected\n{expected:#?}"),
        }
    }
    assert_eq!(
        Mirror::from_pods(watcher.pods()),
        *expected,
        "the watcher's own model"
    );
}

fn mkdir(path: &Path) {
    fs::create_dir(path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
}

fn rmdir(path: &Path) {
    fs::remove_dir(path).unwrap_or_else(|e| panic!("rmdir {}: {e}", path.display()));
}

/// Remove `dir` and every directory below it, deepest first: cgroups can only be removed
/// that way (their interface files cannot be unlinked). Errors are returned, not raised.
fn try_rmdir_tree(dir: &Path) -> Vec<(PathBuf, std::io::Error)> {
    fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                collect(&entry.path(), out);
            }
        }
        // After its children.
        out.push(dir.to_owned());
    }
    let mut dirs = Vec::new();
    collect(dir, &mut dirs);
    dirs.into_iter()
        .filter_map(|dir| fs::remove_dir(&dir).err().map(|e| (dir, e)))
        .collect()
}

fn rmdir_tree(dir: &Path) {
    let errors = try_rmdir_tree(dir);
    assert!(errors.is_empty(), "removing {}: {errors:?}", dir.display());
}

fn container_added(pod_uid: &str, id: String, runtime: Runtime, path: PathBuf) -> CgroupEvent {
    CgroupEvent::ContainerAdded {
        pod_uid: pod_uid.into(),
        container: ContainerCgroup {
            id,
            runtime,
            cgroup_id: id_of(&path),
            path,
        },
    }
}

fn container_removed(pod_uid: &str, path: PathBuf) -> CgroupEvent {
    CgroupEvent::ContainerRemoved {
        pod_uid: pod_uid.into(),
        path,
    }
}

/// Walk a systemd tree through its life: QoS class, pods and containers created (some
/// faster than watches can be added), conmon and nested cgroups ignored, everything
/// removed again. Shared by the temporary-directory and the real-cgroup tests.
async fn systemd_lifecycle(base: &Path) {
    let root = KubepodsRoot::at(base.join("kubepods.slice"));
    let r = root.path.clone();
    let burstable = r.join("kubepods-burstable.slice");
    mkdir(&r);
    mkdir(&burstable);
    // A pod that exists before the watcher starts.
    let pod_a = burstable.join(format!("kubepods-burstable-pod{UID_A_ESCAPED}.slice"));
    let a1 = pod_a.join(format!("cri-containerd-{}.scope", cid('1')));
    mkdir(&pod_a);
    mkdir(&a1);

    let (mut watcher, initial) = Watcher::new(root.clone()).unwrap();
    assert_eq!(initial, scan(&root));
    let mut mirror = Mirror::from_pods(&initial);
    assert_eq!(mirror, Mirror::expect(&[(&pod_a, UID_A, &[&a1])]));

    // A Guaranteed pod, then its containers one at a time: one event each.
    let pod_b = r.join(format!("kubepods-pod{UID_B_ESCAPED}.slice"));
    let started = Instant::now();
    mkdir(&pod_b);
    let event = next_event(&mut watcher).await;
    let latency = started.elapsed();
    assert_eq!(
        event,
        CgroupEvent::PodAdded(PodCgroup {
            uid: UID_B.into(),
            qos: Qos::Guaranteed,
            path: pod_b.clone(),
            id: id_of(&pod_b),
            containers: vec![],
        })
    );
    mirror.apply(event);
    eprintln!("pod creation reported after {latency:?}");

    let b1 = pod_b.join(format!("crio-{}.scope", cid('2')));
    mkdir(&b1);
    let event = next_event(&mut watcher).await;
    assert_eq!(
        event,
        container_added(UID_B, cid('2'), Runtime::CriO, b1.clone())
    );
    mirror.apply(event);

    // conmon and cgroups nested by workloads are not reported: the next event is the
    // container created after them.
    mkdir(&pod_b.join(format!("crio-conmon-{}.scope", cid('3'))));
    mkdir(&pod_b.join("workload-made"));
    mkdir(&b1.join("nested"));
    let b2 = pod_b.join(format!("crio-{}.scope", cid('3')));
    mkdir(&b2);
    let event = next_event(&mut watcher).await;
    assert_eq!(
        event,
        container_added(UID_B, cid('3'), Runtime::CriO, b2.clone())
    );
    mirror.apply(event);

    // A new QoS class with a pod and a container, created in one go: the pod's directory
    // usually exists before the watch on the QoS class does, and the container's before
    // the pod's watch. The rescan after each new watch finds them.
    let besteffort = r.join("kubepods-besteffort.slice");
    let pod_c = besteffort.join(format!("kubepods-besteffort-pod{UID_C}.slice"));
    let c1 = pod_c.join(format!("cri-containerd-{}.scope", cid('4')));
    mkdir(&besteffort);
    mkdir(&pod_c);
    mkdir(&c1);
    let expected = Mirror::expect(&[
        (&pod_a, UID_A, &[&a1]),
        (&pod_b, UID_B, &[&b1, &b2]),
        (&pod_c, UID_C, &[&c1]),
    ]);
    converge(&mut watcher, &mut mirror, &expected).await;

    // Removals, deepest first as the kubelet (and the kernel) require.
    rmdir(&b1.join("nested"));
    rmdir(&b1);
    let event = next_event(&mut watcher).await;
    assert_eq!(event, container_removed(UID_B, b1.clone()));
    mirror.apply(event);

    rmdir_tree(&besteffort);
    for dir in [
        "workload-made".into(),
        format!("crio-conmon-{}.scope", cid('3')),
    ] {
        rmdir(&pod_b.join(dir));
    }
    rmdir(&b2);
    rmdir(&pod_b);
    let expected = Mirror::expect(&[(&pod_a, UID_A, &[&a1])]);
    converge(&mut watcher, &mut mirror, &expected).await;

    rmdir(&a1);
    rmdir(&pod_a);
    assert_eq!(
        next_event(&mut watcher).await,
        container_removed(UID_A, a1.clone())
    );
    assert_eq!(
        next_event(&mut watcher).await,
        CgroupEvent::PodRemoved {
            uid: UID_A.into(),
            path: pod_a.clone()
        }
    );
    assert_eq!(watcher.pods().count(), 0);
}

/// The cgroupfs layout: a pod appears with its container already in it, a container is
/// replaced under the same name, everything is removed.
async fn cgroupfs_lifecycle(base: &Path, ids_are_unique: bool) {
    let root = KubepodsRoot::at(base.join("kubepods"));
    let r = root.path.clone();
    mkdir(&r);
    let (mut watcher, initial) = Watcher::new(root.clone()).unwrap();
    assert_eq!(initial, vec![]);
    let mut mirror = Mirror::default();

    let pod_a = r.join(format!("burstable/pod{UID_A}"));
    let a1 = pod_a.join(cid('a'));
    let a2 = pod_a.join(format!("crio-{}", cid('b')));
    fs::create_dir_all(&a1).unwrap();
    mkdir(&a2);
    mkdir(&pod_a.join(format!("crio-conmon-{}", cid('b'))));
    let pod_b = r.join(format!("pod{UID_B}"));
    mkdir(&pod_b);
    let expected = Mirror::expect(&[(&pod_a, UID_A, &[&a1, &a2]), (&pod_b, UID_B, &[])]);
    converge(&mut watcher, &mut mirror, &expected).await;

    // Recreated under the same name: on cgroup2 a new cgroup id, so a removal and an
    // addition. (Plain directories may get the same inode back, which is no change.)
    if ids_are_unique {
        let old = id_of(&a1);
        rmdir(&a1);
        mkdir(&a1);
        assert_ne!(old, id_of(&a1));
        let expected = Mirror::expect(&[(&pod_a, UID_A, &[&a1, &a2]), (&pod_b, UID_B, &[])]);
        converge(&mut watcher, &mut mirror, &expected).await;
    }

    rmdir_tree(&r.join("burstable"));
    rmdir(&pod_b);
    converge(&mut watcher, &mut mirror, &Mirror::default()).await;
}

#[tokio::test]
async fn watches_systemd_tree_in_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    systemd_lifecycle(dir.path()).await;
}

#[tokio::test]
async fn watches_cgroupfs_tree_in_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    cgroupfs_lifecycle(dir.path(), false).await;
}

/// The watcher and its futures can move to other tasks and threads (checked when
/// compiling).
#[test]
fn watcher_is_send() {
    fn _send<T: Send>(_: &T) {}
    fn _check(watcher: &mut Watcher, base: &Path) {
        _send(watcher);
        _send(&watcher.next());
        _send(&wait_for_kubepods(base, None));
    }
}

#[tokio::test]
async fn new_fails_without_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = KubepodsRoot::at(dir.path().join("kubepods.slice"));
    assert!(matches!(Watcher::new(root), Err(Error::Watch { .. })));
}

#[tokio::test]
async fn rescan_reports_differences() {
    let dir = tempfile::tempdir().unwrap();
    let root = KubepodsRoot::at(dir.path().join("kubepods"));
    let r = root.path.clone();
    let pod_a = r.join(format!("pod{UID_A}"));
    let pod_b = r.join(format!("burstable/pod{UID_B}"));
    let pod_c = r.join(format!("besteffort/pod{UID_C}"));
    let (a1, b1, b2, c1) = (
        pod_a.join(cid('1')),
        pod_b.join(cid('2')),
        pod_b.join(cid('3')),
        pod_c.join(cid('4')),
    );
    for path in [&a1, &b1] {
        fs::create_dir_all(path).unwrap();
    }
    let (mut watcher, initial) = Watcher::new(root.clone()).unwrap();
    let mut mirror = Mirror::from_pods(&initial);

    // Changes made while events are not read; the rescan (what a queue overflow runs)
    // reports them, ahead of the events still queued in inotify.
    rmdir(&a1);
    rmdir(&pod_a);
    rmdir(&b1);
    mkdir(&b2);
    fs::create_dir_all(&c1).unwrap();
    watcher.rescan_all();
    let mut events = Vec::new();
    for _ in 0..5 {
        events.push(next_event(&mut watcher).await);
    }
    assert_eq!(
        events,
        [
            container_removed(UID_A, a1.clone()),
            CgroupEvent::PodRemoved {
                uid: UID_A.into(),
                path: pod_a.clone()
            },
            CgroupEvent::PodAdded(PodCgroup {
                uid: UID_C.into(),
                qos: Qos::BestEffort,
                path: pod_c.clone(),
                id: id_of(&pod_c),
                containers: vec![ContainerCgroup {
                    id: cid('4'),
                    runtime: Runtime::Containerd,
                    path: c1.clone(),
                    cgroup_id: id_of(&c1),
                }],
            }),
            container_removed(UID_B, b1.clone()),
            container_added(UID_B, cid('3'), Runtime::Containerd, b2.clone()),
        ]
    );
    for event in events {
        mirror.apply(event);
    }

    // The queued inotify events change nothing: the next event is about the pod created
    // after them.
    let pod_d = r.join(format!("besteffort/pod{}", UID_A));
    mkdir(&pod_d);
    match next_event(&mut watcher).await {
        CgroupEvent::PodAdded(pod) => assert_eq!(pod.path, pod_d),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn recovers_from_queue_overflow() {
    let limit: usize = fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(16384);
    if limit > 100_000 {
        skip(
            "recovers_from_queue_overflow",
            "max_queued_events is too large",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = KubepodsRoot::at(dir.path().join("kubepods.slice"));
    let r = root.path.clone();
    let pod_a = r.join(format!("kubepods-pod{UID_A_ESCAPED}.slice"));
    let a1 = pod_a.join(format!("cri-containerd-{}.scope", cid('1')));
    fs::create_dir_all(&a1).unwrap();
    let (mut watcher, initial) = Watcher::new(root.clone()).unwrap();
    let mut mirror = Mirror::from_pods(&initial);

    // Fill the queue with events about directories of no interest, then make changes
    // whose events are dropped.
    for i in 0..=limit {
        mkdir(&r.join(format!("junk-{i}")));
    }
    let pod_b = r.join(format!("kubepods-pod{UID_B_ESCAPED}.slice"));
    let b1 = pod_b.join(format!("docker-{}.scope", cid('2')));
    fs::create_dir_all(&b1).unwrap();
    rmdir(&a1);

    let expected = Mirror::expect(&[(&pod_a, UID_A, &[]), (&pod_b, UID_B, &[&b1])]);
    converge(&mut watcher, &mut mirror, &expected).await;
    assert_eq!(watcher.overflows, 1);

    // Still watching afterwards.
    rmdir(&b1);
    assert_eq!(
        next_event(&mut watcher).await,
        container_removed(UID_B, b1.clone())
    );
}

#[tokio::test]
async fn reports_root_removal() {
    let dir = tempfile::tempdir().unwrap();
    let root = KubepodsRoot::at(dir.path().join("kubepods"));
    let pod = root.path.join(format!("besteffort/pod{UID_A}"));
    let container = pod.join(cid('1'));
    fs::create_dir_all(&container).unwrap();
    let (mut watcher, initial) = Watcher::new(root.clone()).unwrap();
    let mut mirror = Mirror::from_pods(&initial);

    rmdir_tree(&root.path);
    converge(&mut watcher, &mut mirror, &Mirror::default()).await;
    for _ in 0..2 {
        match timeout(PATIENCE, watcher.next()).await {
            Ok(Err(Error::RootRemoved(path))) => assert_eq!(path, root.path),
            other => panic!("expected RootRemoved, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn waits_for_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().to_owned();

    // Default names, directly below the cgroup root.
    let waiter = tokio::spawn({
        let base = base.clone();
        async move { wait_for_kubepods(&base, None).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    mkdir(&base.join("unrelated"));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiter.is_finished());
    mkdir(&base.join("kubepods"));
    let root = timeout(PATIENCE, waiter).await.unwrap().unwrap().unwrap();
    assert_eq!(root, KubepodsRoot::at(base.join("kubepods")));

    // Immediately when it exists.
    assert_eq!(wait_for_kubepods(&base, None).await.unwrap(), root);

    // A nested root whose parent does not exist yet either.
    let rel = PathBuf::from("kubelet.slice/kubelet-kubepods.slice");
    let waiter = tokio::spawn({
        let (base, rel) = (base.clone(), rel.clone());
        async move { wait_for_kubepods(&base, Some(&rel)).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    mkdir(&base.join("kubelet.slice"));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiter.is_finished());
    mkdir(&base.join(&rel));
    let root = timeout(PATIENCE, waiter).await.unwrap().unwrap().unwrap();
    assert_eq!(
        root,
        KubepodsRoot {
            path: base.join(&rel),
            driver: Driver::Systemd
        }
    );
}

// ---------------------------------------------------------------------------------------
// Real cgroups
// ---------------------------------------------------------------------------------------

/// Record a loud skip, as the kernel tier does (`enforcer_tests::skip`): printed, and
/// appended to `$ENFORCER_SKIP_LOG` so a tier summary counts it as skipped.
fn skip(test: &str, reason: &str) {
    eprintln!("\n*** SKIPPED {test}: {reason} ***\n");
    if let Some(path) = std::env::var_os("ENFORCER_SKIP_LOG")
        && let Ok(mut f) = fs::OpenOptions::new().create(true).append(true).open(path)
    {
        let _ = writeln!(f, "{test}\t{reason}");
    }
}

/// A directory made for a test directly below the cgroup2 mount. Dropping it removes
/// every cgroup below it, deepest first, so a failed test leaves nothing behind.
struct TestCgroup {
    path: PathBuf,
}

impl TestCgroup {
    /// Create one, or explain why not (not root, no cgroup2).
    fn create() -> Result<Self, String> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        // SAFETY: no arguments, cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err("needs root".into());
        }
        let mount = Cgroup2Mount::detect().map_err(|e| e.to_string())?;
        let name = format!(
            "enf-kubelet-test-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let path = mount.path.join(name);
        fs::create_dir(&path).map_err(|e| format!("mkdir {}: {e}", path.display()))?;
        Ok(Self { path })
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for (dir, e) in try_rmdir_tree(&self.path) {
            eprintln!("cleanup: rmdir {}: {e}", dir.display());
        }
    }
}

#[tokio::test]
async fn watches_real_systemd_cgroups() {
    let test = match TestCgroup::create() {
        Ok(test) => test,
        Err(reason) => return skip("watches_real_systemd_cgroups", &reason),
    };
    systemd_lifecycle(&test.path).await;
}

#[tokio::test]
async fn watches_real_cgroupfs_cgroups() {
    let test = match TestCgroup::create() {
        Ok(test) => test,
        Err(reason) => return skip("watches_real_cgroupfs_cgroups", &reason),
    };
    cgroupfs_lifecycle(&test.path, true).await;
}

#[tokio::test]
async fn real_cgroup_ids_are_what_the_scan_reports() {
    let test = match TestCgroup::create() {
        Ok(test) => test,
        Err(reason) => return skip("real_cgroup_ids_are_what_the_scan_reports", &reason),
    };
    let r = test.path.join("kubepods.slice");
    let pod = r.join(format!(
        "kubepods-besteffort.slice/kubepods-besteffort-pod{UID_A_ESCAPED}.slice"
    ));
    let container = pod.join(format!("cri-containerd-{}.scope", cid('e')));
    fs::create_dir_all(&container).unwrap();

    // Found where the kubelet would be, by the default name.
    let root = wait_for_kubepods(&test.path, None).await.unwrap();
    assert_eq!(root, KubepodsRoot::at(&r));
    let pods = scan(&root);
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0].id, id_of(&pod));
    assert_eq!(pods[0].containers[0].cgroup_id, id_of(&container));
    // The cgroup id is also what the kernel reports for the cgroup (its file handle).
    assert_eq!(pods[0].id, kernel_cgroup_id(&pod));
    assert_eq!(
        pods[0].containers[0].cgroup_id,
        kernel_cgroup_id(&container)
    );
}

/// The cgroup id as the kernel exposes it to user space: the 64-bit handle of
/// `name_to_handle_at` on cgroup2 (what `bpf_get_current_cgroup_id` returns).
fn kernel_cgroup_id(path: &Path) -> u64 {
    use std::{ffi::CString, os::unix::ffi::OsStrExt};

    #[repr(C)]
    struct Handle {
        bytes: u32,
        kind: i32,
        id: u64,
    }
    let c_path = CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut handle = Handle {
        bytes: 8,
        kind: 0,
        id: 0,
    };
    let mut mount_id = 0;
    // SAFETY: `c_path` is NUL-terminated and `handle` is a `struct file_handle` with room
    // for the 8 bytes announced in `bytes`; both outlive the call.
    let rc = unsafe {
        libc::name_to_handle_at(
            libc::AT_FDCWD,
            c_path.as_ptr(),
            (&raw mut handle).cast(),
            &mut mount_id,
            0,
        )
    };
    assert_eq!(
        rc,
        0,
        "name_to_handle_at {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    handle.id
}
