//! kubelet cgroup layouts: pod and container cgroup discovery and watching.
//!
//! The datapath keys everything on cgroup ids, so the agent must know the cgroup of every
//! pod (and of its containers) on the node. The kubelet puts them below one root cgroup,
//! "kubepods", named after its cgroup driver:
//!
//! ```text
//! systemd driver                                     cgroupfs driver
//! kubepods.slice/                                    kubepods/
//!   kubepods-pod<uid>.slice/            Guaranteed     pod<uid>/
//!     cri-containerd-<id>.scope                          <id>
//!   kubepods-burstable.slice/           Burstable      burstable/
//!     kubepods-burstable-pod<uid>.slice/                 pod<uid>/
//!       crio-<id>.scope                                    crio-<id>
//!       crio-conmon-<id>.scope          (CRI-O's monitor, not a container)
//!   kubepods-besteffort.slice/          BestEffort     besteffort/
//!     kubepods-besteffort-pod<uid>.slice/...             pod<uid>/...
//! ```
//!
//! - [`classify`] tells what a path below the root is, by the naming rules above.
//! - [`find_kubepods`] / [`locate`] find the root below the cgroup2 mount;
//!   [`wait_for_kubepods`] waits for it when the kubelet has not created it yet.
//! - [`scan`] lists the pods and containers present.
//! - [`Watcher`] reports pods and containers as they come and go (inotify).
//!
//! Ids are cgroup ids ([`crate::cgroup::cgroup_id`]: the directory's inode number), what
//! the kernel programs see.

mod layout;
mod scan;
mod watch;

#[cfg(test)]
mod tests;

use std::{io, path::PathBuf};

use thiserror::Error;

pub use layout::{Classified, Driver, KubepodsRoot, Qos, Runtime, classify, find_kubepods, locate};
pub use scan::{ContainerCgroup, PodCgroup, scan};
pub use watch::{CgroupEvent, Watcher, wait_for_kubepods};

/// Errors of the [`Watcher`] and [`wait_for_kubepods`].
#[derive(Debug, Error)]
pub enum Error {
    #[error("inotify: {0}")]
    Inotify(#[source] io::Error),
    #[error("watching {path}: {source}")]
    Watch {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The kubepods root was removed (the kubelet was reset); every pod below it has been
    /// reported removed.
    #[error("the kubepods root {0} was removed")]
    RootRemoved(PathBuf),
}
