//! Watching a kubepods root for pod and container cgroups coming and going.
//!
//! inotify is not recursive, so the [`Watcher`] puts one watch on each directory that can
//! gain pods or containers: the root, the QoS class cgroups and every pod cgroup. It
//! treats inotify events as hints only: an event about `<dir>/<name>` makes it re-read
//! that one path from the filesystem and compare what it finds with its model of the
//! pods it has reported (`reconcile`). That keeps the reported state equal to the
//! filesystem whatever the order of events, and makes the recovery from a lost event
//! (queue overflow) the same code run on the whole tree.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    ffi::OsString,
    io,
    path::{Path, PathBuf},
};

use futures_util::StreamExt;
use inotify::{EventMask, EventStream, Inotify, WatchDescriptor, WatchMask, Watches};
use tracing::{debug, warn};

use super::{
    Error,
    layout::{Classified, KubepodsRoot, classify, locate},
    scan::{ContainerCgroup, PodCgroup, read_container, read_pods},
};

/// What is watched on each directory: children created or removed. Renames cannot happen
/// on cgroup2 but are handled (as a removal and a creation) for other filesystems.
const DIR_EVENTS: WatchMask = WatchMask::CREATE
    .union(WatchMask::DELETE)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::ONLYDIR);

/// Size of the buffer inotify events are read into; one event takes at most 16 bytes
/// plus a name of up to 256.
const EVENT_BUFFER: usize = 16 * 1024;

/// A change below the kubepods root.
///
/// Every pod and container reported added is reported removed exactly once when its
/// cgroup goes, and a pod's containers are reported removed before the pod. A cgroup
/// removed and created again under the same name is a removal and an addition (with a new
/// cgroup id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CgroupEvent {
    /// A pod cgroup appeared, with the container cgroups it already holds (they are not
    /// reported again as [`CgroupEvent::ContainerAdded`]).
    PodAdded(PodCgroup),
    /// A pod cgroup was removed.
    PodRemoved { uid: String, path: PathBuf },
    /// A container cgroup appeared in an already reported pod.
    ContainerAdded {
        pod_uid: String,
        container: ContainerCgroup,
    },
    /// A container cgroup was removed.
    ContainerRemoved { pod_uid: String, path: PathBuf },
}

/// Reports pod and container cgroups created or removed below a kubepods root, through
/// inotify (no polling).
///
/// ```no_run
/// # async fn run() -> Result<(), enforcer::kubelet::Error> {
/// use enforcer::{cgroup::Cgroup2Mount, kubelet};
///
/// let mount = Cgroup2Mount::detect().expect("cgroup2");
/// loop {
///     // Returns at once if the kubelet has created its root already.
///     let root = kubelet::wait_for_kubepods(&mount.path, None).await?;
///     let (mut watcher, pods) = kubelet::Watcher::new(root)?;
///     // ... install `pods` ...
///     loop {
///         match watcher.next().await {
///             Ok(event) => { /* ... apply `event` ... */ }
///             // Every pod has been reported removed already; wait for a new root.
///             Err(kubelet::Error::RootRemoved(_)) => break,
///             Err(e) => return Err(e),
///         }
///     }
/// }
/// # }
/// ```
pub struct Watcher {
    root: KubepodsRoot,
    /// The inotify instance's events.
    events: EventStream<Vec<u8>>,
    /// Adds watches to the inotify instance.
    watches: Watches,
    /// The directory each watch is on.
    dirs: HashMap<WatchDescriptor, PathBuf>,
    /// The watch on the root; `None` once the root is gone.
    root_wd: Option<WatchDescriptor>,
    /// The pods as reported so far (initial scan plus events), by path.
    pods: BTreeMap<PathBuf, PodCgroup>,
    /// Events found but not yet returned by `next`.
    pending: VecDeque<CgroupEvent>,
    /// How many queue overflows were handled, for tests.
    #[cfg(test)]
    pub(super) overflows: usize,
}

impl Watcher {
    /// Start watching `root`, which must exist (see [`wait_for_kubepods`]), and return the
    /// pods below it. Changes after the watches were set up are reported by
    /// [`Watcher::next`], so none are lost between the scan and the events.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime with I/O enabled.
    pub fn new(root: KubepodsRoot) -> Result<(Self, Vec<PodCgroup>), Error> {
        let inotify = Inotify::init().map_err(Error::Inotify)?;
        let mut watches = inotify.watches();
        let events = inotify
            .into_event_stream(vec![0; EVENT_BUFFER])
            .map_err(Error::Inotify)?;
        // Watch the root before anything else, so that a missing root is an error rather
        // than an empty pod list.
        let root_wd = watches
            .add(&root.path, DIR_EVENTS)
            .map_err(|source| Error::Watch {
                path: root.path.clone(),
                source,
            })?;
        let mut watcher = Self {
            dirs: HashMap::from([(root_wd.clone(), root.path.clone())]),
            root_wd: Some(root_wd),
            root,
            events,
            watches,
            pods: BTreeMap::new(),
            pending: VecDeque::new(),
            #[cfg(test)]
            overflows: 0,
        };
        watcher.rescan_all();
        // The initial pods are returned, not reported as events.
        watcher.pending.clear();
        let pods = watcher.pods.values().cloned().collect();
        Ok((watcher, pods))
    }

    /// The root being watched.
    pub fn root(&self) -> &KubepodsRoot {
        &self.root
    }

    /// The pods as reported so far: the initial scan with every event returned by
    /// [`Watcher::next`] (and those it has found but not yet returned) applied.
    pub fn pods(&self) -> impl Iterator<Item = &PodCgroup> {
        self.pods.values()
    }

    /// The next change. Waits for one if none is pending.
    ///
    /// After the root itself is removed, the removal of every pod and container is
    /// reported and then every call returns [`Error::RootRemoved`]; wait for the root
    /// to come back with [`wait_for_kubepods`] and start a new watcher.
    ///
    /// Cancel-safe: dropping the future (e.g. in `tokio::select!`) loses no event.
    pub async fn next(&mut self) -> Result<CgroupEvent, Error> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(event);
            }
            if self.root_wd.is_none() {
                return Err(Error::RootRemoved(self.root.path.clone()));
            }
            // The only await point. The stream keeps what it has read but not yet
            // returned, and an event it returns is processed before this function
            // returns.
            let event = match self.events.next().await {
                Some(Ok(event)) => event,
                Some(Err(e)) => return Err(Error::Inotify(e)),
                None => return Err(Error::Inotify(io::ErrorKind::UnexpectedEof.into())),
            };
            self.handle(event.wd, event.mask, event.name);
        }
    }

    /// Process one inotify event.
    fn handle(&mut self, wd: WatchDescriptor, mask: EventMask, name: Option<OsString>) {
        if mask.contains(EventMask::Q_OVERFLOW) {
            warn!(
                "inotify queue overflowed: rescanning {}",
                self.root.path.display()
            );
            #[cfg(test)]
            {
                self.overflows += 1;
            }
            self.rescan_all();
            return;
        }
        if mask.contains(EventMask::IGNORED) {
            // The watch is gone: its directory was removed.
            self.dirs.remove(&wd);
            if self.root_wd.as_ref() == Some(&wd) {
                debug!("kubepods root {} removed", self.root.path.display());
                // Reports every pod as removed, unless the root is already back.
                self.rescan_all();
            }
            return;
        }
        // Everything else is about a child of a watched directory; only directories
        // (cgroups) matter.
        if !mask.contains(EventMask::ISDIR) {
            return;
        }
        let (Some(dir), Some(name)) = (self.dirs.get(&wd), name) else {
            return;
        };
        let path = dir.join(name);
        self.reconcile(&path);
    }

    /// Bring the model of the whole tree in line with the filesystem. If the root is
    /// gone, `root_wd` stays `None` and every pod is reported removed.
    pub(super) fn rescan_all(&mut self) {
        self.root_wd = None;
        let root = self.root.path.clone();
        self.reconcile(&root);
    }

    /// Bring the model in line with the filesystem at `path` and below, queueing events
    /// for every difference. `path` is below the root; only roots, QoS classes, pods and
    /// containers are of interest.
    fn reconcile(&mut self, path: &Path) {
        let Ok(rel) = path.strip_prefix(&self.root.path) else {
            return;
        };
        match classify(&self.root, rel) {
            Classified::Root | Classified::QosClass(_) | Classified::Pod { .. } => {
                self.reconcile_pods(path)
            }
            Classified::Container { .. } => self.reconcile_container(path),
            Classified::Conmon { .. } | Classified::Other => {
                debug!("ignoring cgroup {}", path.display());
            }
        }
    }

    /// `reconcile` for the root, a QoS class or a pod: read the pods at or below `dir`
    /// (watching every directory before listing it) and compare with the model's.
    fn reconcile_pods(&mut self, dir: &Path) {
        let Self {
            root,
            watches,
            dirs,
            root_wd,
            ..
        } = self;
        let mut enter = |path: &Path| match watches.add(path, DIR_EVENTS) {
            Ok(wd) => {
                if path == root.path {
                    *root_wd = Some(wd.clone());
                }
                dirs.insert(wd, path.to_owned());
                true
            }
            Err(e) if is_gone(&e) => false,
            Err(e) => {
                // Most likely fs.inotify.max_user_watches is exhausted. The directory is
                // still read, but later changes in it are missed. (The root cannot get
                // here: it is watched already, so adding its watch only updates it.)
                warn!("cannot watch {}: {e}", path.display());
                true
            }
        };
        let found: BTreeMap<PathBuf, PodCgroup> = read_pods(root, dir, &mut enter)
            .into_iter()
            .map(|pod| (pod.path.clone(), pod))
            .collect();

        // Pods of the model in this subtree that are gone or were replaced (new id).
        let stale: Vec<PathBuf> = self
            .pods
            .iter()
            .filter(|(path, known)| {
                path.starts_with(dir) && found.get(*path).is_none_or(|pod| pod.id != known.id)
            })
            .map(|(path, _)| path.clone())
            .collect();
        for path in stale {
            if let Some(pod) = self.pods.remove(&path) {
                pod_removed(pod, &mut self.pending);
            }
        }

        for (path, pod) in found {
            match self.pods.get_mut(&path) {
                Some(known) => update_containers(known, pod.containers, &mut self.pending),
                None => {
                    self.pending.push_back(CgroupEvent::PodAdded(pod.clone()));
                    self.pods.insert(path, pod);
                }
            }
        }
    }

    /// `reconcile` for one container cgroup: compare it with the model of its pod. Does
    /// nothing for a pod not in the model (its own reconcile reads its containers).
    fn reconcile_container(&mut self, path: &Path) {
        let Some(pod) = path.parent().and_then(|p| self.pods.get_mut(p)) else {
            return;
        };
        let found = read_container(&self.root, path);
        let known = pod.containers.iter().position(|c| c.path == path);
        if let Some(i) = known {
            if found
                .as_ref()
                .is_some_and(|c| c.cgroup_id == pod.containers[i].cgroup_id)
            {
                return;
            }
            let gone = pod.containers.remove(i);
            self.pending.push_back(CgroupEvent::ContainerRemoved {
                pod_uid: pod.uid.clone(),
                path: gone.path,
            });
        }
        if let Some(container) = found {
            add_container(pod, container, &mut self.pending);
        }
    }
}

/// Queue the removal of `pod`'s containers and then of `pod`.
fn pod_removed(pod: PodCgroup, pending: &mut VecDeque<CgroupEvent>) {
    for container in pod.containers {
        pending.push_back(CgroupEvent::ContainerRemoved {
            pod_uid: pod.uid.clone(),
            path: container.path,
        });
    }
    pending.push_back(CgroupEvent::PodRemoved {
        uid: pod.uid,
        path: pod.path,
    });
}

/// Replace the containers of `known` with `found` (both sorted by path), queueing the
/// removals and then the additions.
fn update_containers(
    known: &mut PodCgroup,
    found: Vec<ContainerCgroup>,
    pending: &mut VecDeque<CgroupEvent>,
) {
    let old = std::mem::take(&mut known.containers);
    let mut added = Vec::new();
    for container in &old {
        if !found.contains(container) {
            pending.push_back(CgroupEvent::ContainerRemoved {
                pod_uid: known.uid.clone(),
                path: container.path.clone(),
            });
        }
    }
    for container in &found {
        if !old.contains(container) {
            added.push(container.clone());
        }
    }
    known.containers = found;
    for container in added {
        pending.push_back(CgroupEvent::ContainerAdded {
            pod_uid: known.uid.clone(),
            container,
        });
    }
}

/// Add `container` to `pod` (keeping the containers sorted) and queue its addition.
fn add_container(
    pod: &mut PodCgroup,
    container: ContainerCgroup,
    pending: &mut VecDeque<CgroupEvent>,
) {
    let at = pod.containers.partition_point(|c| c.path < container.path);
    pod.containers.insert(at, container.clone());
    pending.push_back(CgroupEvent::ContainerAdded {
        pod_uid: pod.uid.clone(),
        container,
    });
}

/// An error adding a watch that means the directory is not there (any more).
fn is_gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR)
}

/// Wait until the kubepods root exists below `cgroup_root`, then return it; returns at
/// once if it exists already. `rel` is as for [`locate`]: `None` looks for `kubepods.slice`
/// and `kubepods` directly below `cgroup_root`, `Some` names the root's path relative to
/// `cgroup_root` (e.g. `kubelet.slice/kubelet-kubepods.slice`).
///
/// Waits with inotify, without polling: it watches the deepest existing directory on the
/// way to the root (`cgroup_root` itself when `rel` is `None`), and looks again whenever
/// something is created there, moving its watch down as the intermediate directories
/// appear. Never returns if the kubelet never starts; callers that need a deadline can
/// wrap it in `tokio::time::timeout`. Must run in a tokio runtime with I/O enabled.
pub async fn wait_for_kubepods(
    cgroup_root: &Path,
    rel: Option<&Path>,
) -> Result<KubepodsRoot, Error> {
    // The directory the root will be created in (which may not exist yet either).
    let parent = match rel {
        None => cgroup_root.to_owned(),
        Some(rel) => cgroup_root
            .join(rel)
            .parent()
            .map_or_else(|| cgroup_root.to_owned(), Path::to_owned),
    };
    let deepest_existing =
        || -> Option<PathBuf> { parent.ancestors().find(|p| p.is_dir()).map(Path::to_owned) };
    loop {
        if let Some(root) = locate(cgroup_root, rel) {
            return Ok(root);
        }
        let Some(dir) = deepest_existing() else {
            // Only for a relative `cgroup_root` below a missing directory.
            return Err(Error::Watch {
                path: parent,
                source: io::ErrorKind::NotFound.into(),
            });
        };
        let inotify = Inotify::init().map_err(Error::Inotify)?;
        match inotify.watches().add(
            &dir,
            WatchMask::CREATE | WatchMask::MOVED_TO | WatchMask::ONLYDIR,
        ) {
            Ok(_) => {}
            // Removed since we looked: look again.
            Err(e) if is_gone(&e) => continue,
            Err(source) => return Err(Error::Watch { path: dir, source }),
        }
        // What was created before the watch existed produces no event: look again now
        // that it does, and move down if a directory on the way has appeared meanwhile.
        if locate(cgroup_root, rel).is_some() || deepest_existing().as_ref() != Some(&dir) {
            continue;
        }
        debug!("waiting for the kubepods root in {}", dir.display());
        // Something was created in `dir`: look again. The event itself is not needed;
        // the inotify instance is dropped and a new one made for the next wait.
        let mut events = inotify
            .into_event_stream(vec![0; 1024])
            .map_err(Error::Inotify)?;
        if let Some(Err(e)) = events.next().await {
            return Err(Error::Inotify(e));
        }
    }
}
