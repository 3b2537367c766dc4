//! cgroup v2 helpers: finding the mount, ids and levels.
//!
//! A cgroup's id (what `bpf_get_current_cgroup_id()` returns) is the inode number of its
//! directory on the cgroup2 filesystem. Its level is its depth below the root of the
//! hierarchy (the root cgroup is level 0), which is what the ancestor helpers index by.

use std::{
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum CgroupError {
    #[error("no cgroup2 filesystem is mounted (looked in /proc/self/mountinfo)")]
    NoCgroup2,
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not below the cgroup2 mount {mount}")]
    NotUnderMount { path: PathBuf, mount: PathBuf },
}

/// A mounted cgroup2 hierarchy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cgroup2Mount {
    /// Where it is mounted.
    pub path: PathBuf,
    /// The cgroup the mount shows as its root (not "/" inside a cgroup namespace).
    pub root: PathBuf,
}

impl Cgroup2Mount {
    /// Detect the cgroup2 mount: `/sys/fs/cgroup` on unified hosts, or wherever the
    /// hybrid layout put it (e.g. `/sys/fs/cgroup/unified`).
    pub fn detect() -> Result<Self, CgroupError> {
        let text =
            fs::read_to_string("/proc/self/mountinfo").map_err(|source| CgroupError::Io {
                path: "/proc/self/mountinfo".into(),
                source,
            })?;
        Self::from_mountinfo(&text).ok_or(CgroupError::NoCgroup2)
    }

    /// Pick the cgroup2 mount out of mountinfo text, preferring `/sys/fs/cgroup`.
    pub fn from_mountinfo(text: &str) -> Option<Self> {
        let mut found: Vec<Self> = Vec::new();
        for line in text.lines() {
            // id parent major:minor root mountpoint options [optional...] - fstype source super
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            if right.split_whitespace().next() != Some("cgroup2") {
                continue;
            }
            let fields: Vec<&str> = left.split_whitespace().collect();
            if fields.len() < 5 {
                continue;
            }
            found.push(Self {
                root: PathBuf::from(unescape(fields[3])),
                path: PathBuf::from(unescape(fields[4])),
            });
        }
        let preferred = found
            .iter()
            .position(|m| m.path == Path::new("/sys/fs/cgroup"));
        match preferred {
            Some(i) => Some(found.swap_remove(i)),
            None => found.into_iter().next(),
        }
    }

    /// Level of the cgroup at `path` (a directory below this mount).
    pub fn level_of(&self, path: &Path) -> Result<u32, CgroupError> {
        let rel = path
            .strip_prefix(&self.path)
            .map_err(|_| CgroupError::NotUnderMount {
                path: path.to_owned(),
                mount: self.path.clone(),
            })?;
        let depth = |p: &Path| {
            p.components()
                .filter(|c| matches!(c, std::path::Component::Normal(_)))
                .count() as u32
        };
        Ok(depth(&self.root) + depth(rel))
    }
}

/// The cgroup2 directory this process runs in, below `mount`.
///
/// `/proc/self/cgroup` names it relative to this process's cgroup namespace, which is also
/// what a mount made in that namespace shows as its root; inside a private cgroup namespace
/// with the host's hierarchy mounted (a pod with a hostPath /sys/fs/cgroup) the path does
/// not lead there, so `search` (the kubelet's pod root) is searched for a cgroup.procs that
/// lists this process (by host pid: the agent runs in the host PID namespace).
pub fn own_cgroup(mount: &Cgroup2Mount, search: &Path) -> Option<PathBuf> {
    let pid = std::process::id();
    let lists_me = |dir: &Path| {
        fs::read_to_string(dir.join("cgroup.procs"))
            .map(|s| s.lines().any(|l| l.trim() == pid.to_string()))
            .unwrap_or(false)
    };
    let text = fs::read_to_string("/proc/self/cgroup").ok()?;
    let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    let rel = Path::new(rel.trim());
    let rel = rel.strip_prefix(&mount.root).unwrap_or(rel);
    let candidate = mount.path.join(rel.strip_prefix("/").unwrap_or(rel));
    if lists_me(&candidate) {
        return Some(candidate);
    }
    fn walk(dir: &Path, depth: u32, found: &dyn Fn(&Path) -> bool) -> Option<PathBuf> {
        if found(dir) {
            return Some(dir.to_path_buf());
        }
        if depth == 0 {
            return None;
        }
        let rd = fs::read_dir(dir).ok()?;
        rd.flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .find_map(|e| walk(&e.path(), depth - 1, found))
    }
    // kubepods / QoS / pod / container (systemd and cgroupfs layouts alike).
    walk(search, 4, &lists_me)
}

/// Octal escapes (`\040` for space) used in mountinfo.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup id of the cgroup directory at `path`.
pub fn cgroup_id(path: &Path) -> Result<u64, CgroupError> {
    fs::metadata(path)
        .map(|m| m.ino())
        .map_err(|source| CgroupError::Io {
            path: path.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
30 23 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw
32 30 0:28 / /sys/fs/cgroup/systemd rw,nosuid shared:11 - cgroup cgroup rw,xattr,name=systemd
";
    const UNIFIED: &str = "\
25 1 0:22 / / rw - ext4 /dev/sda rw
35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate
40 24 0:30 /kubepods /mnt/pods\\040x rw shared:9 - cgroup2 cgroup2 rw
";

    #[test]
    fn finds_hybrid_mount() {
        let m = Cgroup2Mount::from_mountinfo(HYBRID).unwrap();
        assert_eq!(m.path, Path::new("/sys/fs/cgroup/unified"));
        assert_eq!(m.root, Path::new("/"));
    }

    #[test]
    fn prefers_sys_fs_cgroup() {
        let m = Cgroup2Mount::from_mountinfo(UNIFIED).unwrap();
        assert_eq!(m.path, Path::new("/sys/fs/cgroup"));
    }

    #[test]
    fn no_cgroup2() {
        assert!(Cgroup2Mount::from_mountinfo("25 1 0:22 / / rw - ext4 /dev/sda rw\n").is_none());
    }

    #[test]
    fn levels_account_for_mount_root_and_escapes() {
        let text = UNIFIED.lines().nth(2).unwrap();
        let m = Cgroup2Mount::from_mountinfo(text).unwrap();
        assert_eq!(m.path, Path::new("/mnt/pods x"));
        assert_eq!(m.level_of(Path::new("/mnt/pods x")).unwrap(), 1);
        assert_eq!(
            m.level_of(Path::new("/mnt/pods x/burstable/pod1")).unwrap(),
            3
        );
        assert!(m.level_of(Path::new("/elsewhere")).is_err());
    }
}
