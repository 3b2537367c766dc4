//! The start-up self-test: before the agent claims that a guard denies, it proves it. For
//! each guard (`guards::selftest::OPS`), a child of the agent's own binary runs the guard's
//! operation in a throwaway cgroup where only that guard is enforced, and the guard counts
//! as verified when the operation was refused (EPERM, or SIGKILL in the fallback tier)
//! **and** the guard's own deny event for that cgroup arrived: a refusal from elsewhere (a
//! capability the agent's container lacks, a missing device node) proves nothing and is
//! reported as "not exercised".
//!
//! The throwaway cgroup is a child of the agent's own cgroup when that is below the pods'
//! root (the agent's pod: its cgroup namespace lets it move a child there), else a child of
//! the root. It gets an endpoint of its own (`SELF_TEST_ENDPOINT`) and is armed by the
//! agent; it is removed at the end.

use std::{
    os::unix::process::{CommandExt, ExitStatusExt},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use enforcer_common::*;
use tokio::sync::broadcast;

use super::events::Event;
use crate::{
    bpf::Datapath,
    guards::{
        self,
        selftest::{OP_DENIED, OP_SUCCEEDED, OPS},
    },
};

/// Endpoint id of the self-test cgroup (never allocated to a pod).
pub const SELF_TEST_ENDPOINT: u32 = u32::MAX - 1;

/// How long a deny event may take to arrive.
const EVENT_WAIT: Duration = Duration::from_millis(1000);

/// What the self-test found for one guard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Refused, and the guard reported the denial.
    Verified,
    /// The operation was not refused (or refused without the guard's event): the guard
    /// does not work in this tier.
    Failed(String),
    /// The operation could not be tried here (why).
    NotExercised(String),
}

impl Verdict {
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Verified => "verified",
            Verdict::Failed(_) => "failed",
            Verdict::NotExercised(_) => "not-exercised",
        }
    }
}

/// Where the throwaway cgroup goes: below the agent's own cgroup if that is in the pods'
/// subtree, else below the root.
pub fn parent_dir(root: &Path, own: Option<&Path>) -> PathBuf {
    match own {
        Some(o) if o.starts_with(root) && o != root => o.to_path_buf(),
        _ => root.to_path_buf(),
    }
}

/// Run the self-test of every guard in `guards` (bits). `events` must have subscribed before
/// the call.
pub async fn run(
    dp: &mut Datapath,
    parent: &Path,
    guards_to_test: u32,
    events: &mut broadcast::Receiver<(Event, String)>,
) -> Vec<(u32, Verdict)> {
    let ops: Vec<(u32, &str)> = OPS
        .iter()
        .copied()
        .filter(|(g, _)| guards_to_test & g != 0)
        .collect();
    if ops.is_empty() {
        return Vec::new();
    }
    let dir = parent.join(format!("enforcer-self-test-{}", std::process::id()));
    let _ = std::fs::remove_dir(&dir);
    if let Err(e) = std::fs::create_dir(&dir) {
        let why = format!("cannot create the test cgroup {}: {e}", dir.display());
        return ops
            .into_iter()
            .map(|(g, _)| (g, Verdict::NotExercised(why.clone())))
            .collect();
    }
    let out = run_in(dp, &dir, &ops, events).await;
    // Every child has exited (waited for); the cgroup is empty.
    if let Err(e) = std::fs::remove_dir(&dir) {
        tracing::warn!("removing the self-test cgroup {}: {e}", dir.display());
    }
    out
}

async fn run_in(
    dp: &mut Datapath,
    dir: &Path,
    ops: &[(u32, &str)],
    events: &mut broadcast::Receiver<(Event, String)>,
) -> Vec<(u32, Verdict)> {
    let id = match crate::cgroup::cgroup_id(dir) {
        Ok(id) => id,
        Err(e) => {
            let why = format!("test cgroup {}: {e}", dir.display());
            return ops
                .iter()
                .map(|(g, _)| (*g, Verdict::NotExercised(why.clone())))
                .collect();
        }
    };
    // The ptrace target: a helper of the agent's own, outside the test cgroup.
    let mut helper = Command::new("/proc/self/exe")
        .args(["self-test-op", "sleep"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok();
    let helper_pid = helper.as_ref().map(|h| h.id().to_string());
    let mut out = Vec::new();
    for (guard, op) in ops {
        let v = match set_endpoint(dp, id, *guard) {
            Ok(()) => one(dir, id, *guard, op, helper_pid.as_deref(), events).await,
            Err(e) => Verdict::NotExercised(format!("programming the test cgroup: {e}")),
        };
        out.push((*guard, v));
    }
    if let Some(h) = helper.as_mut() {
        let _ = h.kill();
        let _ = h.wait();
    }
    if let Ok(mut eps) = dp.endpoints() {
        let _ = eps.remove(&id);
    }
    let _ = dp.disarm_cgroup(id);
    out
}

fn set_endpoint(dp: &mut Datapath, id: u64, guard: u32) -> Result<(), crate::bpf::BpfError> {
    dp.endpoints()?
        .insert(
            id,
            Endpoint {
                id: SELF_TEST_ENDPOINT,
                flags: EP_NET_UNMANAGED,
                guards_enforce: guard,
                guards_audit: 0,
            },
            0,
        )
        .map_err(|e| crate::bpf::BpfError::Map {
            map: "ENDPOINTS".into(),
            source: Box::new(e),
        })?;
    dp.arm_cgroup(id)
}

async fn one(
    dir: &Path,
    cgid: u64,
    guard: u32,
    op: &str,
    helper: Option<&str>,
    events: &mut broadcast::Receiver<(Event, String)>,
) -> Verdict {
    // Events of earlier operations are of no interest any more.
    while events.try_recv().is_ok() {}
    let procs = std::ffi::CString::new(dir.join("cgroup.procs").to_string_lossy().as_bytes())
        .expect("no NUL in a cgroup path");
    let mut cmd = Command::new("/proc/self/exe");
    cmd.args(["self-test-op", op]);
    if let Some(h) = helper {
        cmd.arg(h);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: between fork and exec the child only makes raw syscalls (open, write, close):
    // it moves itself into the test cgroup, so that the exec and everything after it
    // happen there.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            libc::close(fd);
            Ok(())
        });
    }
    let refused = match tokio::task::spawn_blocking(move || cmd.output()).await {
        Ok(Ok(o)) => match (o.status.code(), o.status.signal()) {
            (Some(OP_SUCCEEDED), _) => {
                return Verdict::Failed(format!("the operation ({op}) succeeded"));
            }
            (Some(OP_DENIED), _) => "EPERM",
            (_, Some(libc::SIGKILL)) => "SIGKILL",
            (code, sig) => {
                let err = String::from_utf8_lossy(&o.stderr).trim().to_string();
                return Verdict::NotExercised(format!(
                    "the operation ({op}) could not be tried: exit {code:?} signal {sig:?} {err}"
                ));
            }
        },
        // The exec itself refused (root-exec in the LSM tier).
        Ok(Err(e)) if e.raw_os_error() == Some(libc::EPERM) => "EPERM at exec",
        Ok(Err(e)) => return Verdict::NotExercised(format!("starting the operation: {e}")),
        Err(e) => return Verdict::NotExercised(format!("starting the operation: {e}")),
    };
    let deadline = tokio::time::Instant::now() + EVENT_WAIT;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok((Event::Guard(e), _)))
                if e.cgroup_id == cgid && e.guard == guard && e.verdict == VERDICT_DENY =>
            {
                return Verdict::Verified;
            }
            Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
            Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => {
                return Verdict::NotExercised(format!(
                    "refused ({refused}) before the guard saw it ({op}: no deny event from \
                     {}); the agent probably lacks the privilege the operation needs",
                    guards::name_of(guard)
                ));
            }
        }
    }
}
