//! Watching the manifests directory: inotify, bursts coalesced into one notification.
//!
//! The directory itself is watched for any change of its entries. Its parent is watched
//! too, for entries carrying the directory's name: that is how a directory deleted and
//! recreated, or a symbolic link to it atomically replaced, is noticed; the watch is then
//! moved to the new directory. Inside the directory, ConfigMap-style updates (an atomic
//! rename of the `..data` link) are ordinary entry events.
//!
//! Events are not filtered by file name: a reload is cheap, and [`super::Store::reload`]
//! reports whether anything changed.

use std::{
    ffi::OsString,
    fs, io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::Duration,
};

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};
use tokio::{
    io::{Interest, unix::AsyncFd},
    sync::mpsc::{self, error::TrySendError},
    time::{Instant, sleep, timeout_at},
};

/// A burst of events ends after this long without one.
const QUIET: Duration = Duration::from_millis(30);
/// A continuous burst delays its notification by at most this long.
const MAX_DELAY: Duration = Duration::from_millis(200);
/// Without events, the watches are re-checked this often (the directory may appear where
/// nothing could be watched, e.g. below a parent that did not exist either).
const RECHECK: Duration = Duration::from_millis(500);
/// Poll period when inotify is unavailable (e.g. the instance limit is reached).
const POLL: Duration = Duration::from_millis(250);

/// Events on the directory's entries and on the directory itself.
fn dir_mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::CLOSE_WRITE
        | WatchMask::MODIFY
        | WatchMask::ATTRIB
        | WatchMask::DELETE
        | WatchMask::MOVED_TO
        | WatchMask::MOVED_FROM
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
        | WatchMask::ONLYDIR
}

/// Events on the parent's entries (filtered to the directory's name) and on the parent.
fn parent_mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MOVED_TO
        | WatchMask::MOVED_FROM
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
        | WatchMask::ONLYDIR
}

/// Sends `()` on `tx` whenever the content of `dir` may have changed, until the receiver
/// is dropped. A burst of changes (an editor saving, a ConfigMap update) gives one
/// notification, at most 200 ms after it started; changes are noticed within tens
/// of milliseconds.
///
/// One notification is sent as soon as the watches are in place, so that changes made
/// between the caller's initial load and that moment are not missed. Notifications are
/// not queued beyond the channel's capacity: a pending one already asks for a reload that
/// will see every change made before it is received. If inotify is unavailable, the
/// directory is polled every 250 ms instead.
pub async fn watch(dir: PathBuf, tx: mpsc::Sender<()>) {
    let mut watcher = match DirWatcher::new(dir.clone()) {
        Ok(watcher) => watcher,
        Err(e) => {
            tracing::warn!(
                "cannot watch {} with inotify ({e}); polling it every {POLL:?} instead",
                dir.display()
            );
            return poll(&dir, &tx).await;
        }
    };
    if !notify(&tx) {
        return;
    }
    loop {
        tokio::select! {
            _ = tx.closed() => return,
            changed = watcher.changed() => match changed {
                Ok(()) => {
                    if !notify(&tx) {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(
                        "watching {} with inotify failed ({e}); polling it every {POLL:?} \
                         instead",
                        dir.display()
                    );
                    return poll(&dir, &tx).await;
                }
            },
        }
    }
}

/// Asks for a reload; false once the receiver is gone.
fn notify(tx: &mpsc::Sender<()>) -> bool {
    match tx.try_send(()) {
        // A full channel already holds a pending reload request.
        Ok(()) | Err(TrySendError::Full(())) => true,
        Err(TrySendError::Closed(())) => false,
    }
}

/// The fallback without inotify: compares a fingerprint of the directory periodically.
async fn poll(dir: &Path, tx: &mpsc::Sender<()>) {
    let mut last = fingerprint(dir);
    if !notify(tx) {
        return;
    }
    loop {
        tokio::select! {
            _ = tx.closed() => return,
            _ = sleep(POLL) => {}
        }
        let now = fingerprint(dir);
        if now != last {
            last = now;
            if !notify(tx) {
                return;
            }
        }
    }
}

/// (name, inode, size, mtime seconds, mtime nanoseconds) of an entry, links followed.
type EntryStamp = (OsString, u64, u64, i64, i64);

/// What a reload of `dir` depends on: the directory's identity and its entries' names,
/// inodes, sizes and modification times (links followed). None if it cannot be listed.
fn fingerprint(dir: &Path) -> Option<Vec<EntryStamp>> {
    let stamp =
        |name: OsString, m: &fs::Metadata| (name, m.ino(), m.len(), m.mtime(), m.mtime_nsec());
    let mut out = vec![stamp(OsString::new(), &fs::metadata(dir).ok()?)];
    for entry in fs::read_dir(dir).ok()?.flatten() {
        out.push(match fs::metadata(entry.path()) {
            Ok(m) => stamp(entry.file_name(), &m),
            Err(_) => (entry.file_name(), 0, 0, 0, 0),
        });
    }
    out.sort();
    Some(out)
}

/// An inotify watch and the inode (device, inode number) it was placed on.
#[derive(Debug)]
struct Watch {
    wd: WatchDescriptor,
    inode: (u64, u64),
}

/// The device and inode number of the directory at `path`, links followed.
fn dir_inode(path: &Path) -> Option<(u64, u64)> {
    fs::metadata(path)
        .ok()
        .filter(|m| m.is_dir())
        .map(|m| (m.dev(), m.ino()))
}

/// inotify watches on a directory (and its parent) that report coalesced changes.
#[derive(Debug)]
pub struct DirWatcher {
    dir: PathBuf,
    /// The parent directory and the directory's name in it, if it has a parent.
    parent: Option<(PathBuf, OsString)>,
    fd: AsyncFd<Inotify>,
    dir_watch: Option<Watch>,
    parent_watch: Option<Watch>,
    buffer: Vec<u8>,
}

impl DirWatcher {
    /// Watches `dir`, which need not exist yet. Must be called within a Tokio runtime.
    pub fn new(dir: PathBuf) -> io::Result<Self> {
        let inotify = Inotify::init()?;
        // SAFETY: the `Inotify` owns its descriptor and the `AsyncFd` owns the `Inotify`
        // until it is dropped, so the descriptor stays open and the same for as long as it
        // is registered (the `Watches` handles only add references to it).
        let fd = unsafe { AsyncFd::register_with_interest(inotify, Interest::READABLE)? };
        let parent = match (dir.parent(), dir.file_name()) {
            (Some(parent), Some(name)) => {
                let parent = if parent.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    parent
                };
                Some((parent.to_path_buf(), name.to_os_string()))
            }
            _ => None,
        };
        let mut watcher = DirWatcher {
            dir,
            parent,
            fd,
            dir_watch: None,
            parent_watch: None,
            // Room for many events (each at most 16 bytes plus a 256-byte name).
            buffer: vec![0; 4096],
        };
        watcher.rearm();
        Ok(watcher)
    }

    /// The watched path.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Waits until the directory may have changed, then for the burst of changes to end.
    pub async fn changed(&mut self) -> io::Result<()> {
        loop {
            let relevant = tokio::select! {
                relevant = self.read() => relevant?,
                _ = sleep(RECHECK) => false,
            };
            // A watch moved to a new directory is a change too: its content is new.
            let rearmed = self.rearm();
            if relevant || rearmed {
                break;
            }
        }
        let deadline = Instant::now() + MAX_DELAY;
        let mut quiet_until = (Instant::now() + QUIET).min(deadline);
        while let Ok(relevant) = timeout_at(quiet_until, self.read()).await {
            if relevant? {
                quiet_until = (Instant::now() + QUIET).min(deadline);
            }
        }
        self.rearm();
        Ok(())
    }

    /// Places the watches on the directories now at the watched paths, if they changed.
    /// Returns whether the directory's watch changed.
    fn rearm(&mut self) -> bool {
        let watches = self.fd.get_ref().watches();
        let changed = rearm_one(watches.clone(), &self.dir, dir_mask(), &mut self.dir_watch);
        if let Some((parent, _)) = &self.parent {
            rearm_one(watches, parent, parent_mask(), &mut self.parent_watch);
        }
        changed
    }

    /// Reads the pending events (waiting for some) and tells whether any may concern the
    /// directory's content. A watch the kernel dropped (its directory is gone) is
    /// forgotten, so that [`Self::rearm`] places a new one even on a reused inode.
    async fn read(&mut self) -> io::Result<bool> {
        let DirWatcher {
            fd,
            buffer,
            dir_watch,
            parent_watch,
            parent,
            ..
        } = self;
        let name = parent.as_ref().map(|(_, name)| name.as_os_str());
        loop {
            let mut guard = fd.readable_mut().await?;
            let read = guard.try_io(|inner| {
                let mut relevant = false;
                for event in inner.get_mut().read_events(buffer)? {
                    let on = |w: &Option<Watch>| w.as_ref().is_some_and(|w| w.wd == event.wd);
                    let (on_dir, on_parent) = (on(dir_watch), on(parent_watch));
                    if event.mask.contains(EventMask::IGNORED) {
                        if on_dir {
                            *dir_watch = None;
                        }
                        if on_parent {
                            *parent_watch = None;
                        }
                    }
                    // In the parent, only our own entry matters (and the parent itself).
                    relevant |= !on_parent || event.name.is_none() || event.name == name;
                }
                Ok(relevant)
            });
            match read {
                Ok(relevant) => return relevant,
                Err(_would_block) => continue,
            }
        }
    }
}

/// Makes `slot` watch the directory now at `path` (none if there is none). Returns whether
/// the watch changed.
fn rearm_one(
    mut watches: inotify::Watches,
    path: &Path,
    mask: WatchMask,
    slot: &mut Option<Watch>,
) -> bool {
    let inode = dir_inode(path);
    if slot.as_ref().map(|w| w.inode) == inode {
        return false;
    }
    let had = match slot.take() {
        Some(old) => {
            // Fails harmlessly when the kernel already dropped it.
            let _ = watches.remove(old.wd);
            true
        }
        None => false,
    };
    if let Some(inode) = inode {
        match watches.add(path, mask) {
            Ok(wd) => *slot = Some(Watch { wd, inode }),
            Err(e) => tracing::debug!("cannot watch {}: {e}", path.display()),
        }
    }
    had || slot.is_some()
}

#[cfg(test)]
mod tests;
