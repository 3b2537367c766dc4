//! Which running containers the agent arms when it attaches the guards (host side: reads
//! cgroupfs and /proc, touches no BPF map).
//!
//! Containers started before the exec tracepoint was attached never had an arming exec
//! seen: the agent arms every populated cgroup below the pods' root itself, except those
//! where a container runtime is still setting a container up (mounts, sysctls, device
//! nodes, namespaces, the user: all operations the guards forbid), which its own workload
//! exec arms a moment later.
//!
//! Telling the two apart must not rest on anything a workload controls. A process name
//! (`comm`) is set with prctl(PR_SET_NAME) by anyone: a workload calling itself
//! `runc:[2:INIT]` must not stay unguarded. What a workload cannot forge is how long
//! its processes have existed: a runtime sets a container up in well under a second
//! (runc create, then start, back to back), so a cgroup counts as in set-up only if every
//! process in it looks like a runtime's (`runc:[...]`, `crun`) **and** started less
//! than [`SETUP_GRACE`] ago. Such cgroups are returned as deferred, and the agent scans
//! again once the grace has passed: by then a real runtime has exec'd the workload (and
//! armed the cgroup), and anything still unarmed and populated is armed, whatever its
//! processes call themselves. A forged name buys at most the grace, and only for a process
//! that started less than the grace before the agent did.

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

/// How long a runtime's set-up process may look like one before it is treated as a
/// workload.
pub const SETUP_GRACE: Duration = Duration::from_secs(10);

/// A populated cgroup below the root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Populated {
    pub path: PathBuf,
    /// Whether it is a container being set up (see the module documentation).
    pub in_setup: bool,
}

/// Every populated cgroup strictly below `root`, judged with `grace`.
pub fn populated_below(root: &Path, grace: Duration) -> Vec<Populated> {
    let uptime = uptime();
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(e.path());
            }
        }
        if dir == root {
            continue;
        }
        let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        let pids: Vec<&str> = procs.split_whitespace().collect();
        if pids.is_empty() {
            continue;
        }
        let in_setup = pids
            .iter()
            .all(|pid| looks_like_runtime(pid) && young(pid, uptime, grace));
        out.push(Populated {
            path: dir,
            in_setup,
        });
    }
    out
}

/// The name a container runtime's set-up process has (a hint only: anyone can take it).
fn looks_like_runtime(pid: &str) -> bool {
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    comm.starts_with("runc:") || comm.trim() == "crun"
}

/// Seconds since boot (`/proc/uptime`); `None` if unreadable.
fn uptime() -> Option<f64> {
    fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Did process `pid` start less than `grace` ago? Unknown counts as not (armed).
fn young(pid: &str, uptime: Option<f64>, grace: Duration) -> bool {
    let (Some(now), Some(started)) = (uptime, start_secs(pid)) else {
        return false;
    };
    now - started < grace.as_secs_f64()
}

/// Start time of `pid` in seconds since boot (`/proc/<pid>/stat` field 22).
fn start_secs(pid: &str) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    start_ticks(&stat).map(|t| t as f64 / clock_ticks())
}

/// Field 22 (`starttime`) of a `/proc/<pid>/stat` line. The name (field 2) may contain
/// spaces and parentheses, so fields are counted after its last `)`.
fn start_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // Fields 3.. follow; starttime is the 20th of them.
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_field_survives_hostile_names() {
        // A name with spaces and a `)` of its own cannot shift the fields.
        let stat = "4242 (runc:[2:INIT]) ) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    1 2 0 0 20 0 1 0 987654 1000000 100 18446744073709551615";
        assert_eq!(start_ticks(stat), Some(987654));
        assert_eq!(start_ticks("garbage"), None);
    }

    #[test]
    fn this_process_is_young_only_within_the_grace() {
        let me = std::process::id().to_string();
        let up = uptime();
        assert!(start_secs(&me).is_some(), "own start time");
        assert!(young(&me, up, Duration::from_secs(1_000_000)));
        assert!(!young(&me, up, Duration::ZERO));
        assert!(!young("999999999", up, Duration::from_secs(1_000_000)));
    }
}
