//! Runtime guards: what every guard program shares.
//!
//! # Which tasks a guard applies to
//!
//! A guard applies to a task when all hold:
//! 1. the task's **own cgroup is armed** (it has an entry in `ARMED`),
//! 2. the cgroup resolves (see `endpoint`) to a pod whose `guards_enforce` or
//!    `guards_audit` has the guard's bit, or, for a cgroup below the attach root that no
//!    endpoint classifies yet, `Config::unclassified_guards` has it (enforced), and
//! 3. the task is **not exempt**: a container runtime task that entered the pod's cgroup
//!    from outside the pods (`runc init` of `kubectl exec`) is exempt until it execs the
//!    workload (`guards/exempt.rs`). The cgroup programs (devices, sysctls, raw IP
//!    sockets) cannot read the exemption on the kernels enforcer supports and rely on
//!    arming alone.
//!
//! # Arming: why guards wait for the first exec
//!
//! The container runtime prepares a container from *inside* its cgroup: `runc init` (or
//! crun's child) joins the container cgroup, then mounts the root filesystem, `/proc` and
//! the volumes, applies the pod's sysctls, creates device nodes, sets up namespaces,
//! capabilities and the user, and only then execs the container's entrypoint. Every one of
//! those steps is an operation a guard forbids, so a guard that applied to every task of the
//! cgroup would make every guarded container fail to start. The first exec in a cgroup
//! marks the end of that set-up: `guard_exec` (tracepoint `sched_process_exec`) inserts the
//! cgroup id into `ARMED` the first time a task execs while in a cgroup below the attach
//! root, and from then on every task of that cgroup is guarded, whatever its lineage.
//! The agent arms the cgroups of containers that were already running when it attached the
//! programs (`ARM_AGENT`) and removes entries when cgroups are deleted.
//!
//! What this cannot cover:
//! - Anything a task does in a cgroup before the first exec in it. A process that moves
//!   itself into a fresh cgroup it created (cgroup v2 delegation, `CAP_SYS_ADMIN`) is
//!   unguarded until something execs there. Creating a cgroup below an armed one and
//!   moving into it needs write access to the pod's cgroup directory, which pods do not
//!   get unless they are privileged or have it delegated; the agent can close the gap by
//!   arming new cgroups below armed ones when it sees them.
//! - The exec that arms a cgroup is itself not checked (root-escalation, root-exec): it is
//!   the runtime's exec of the entrypoint. Only later execs are.
//! - Runtimes that start `exec` sessions (`kubectl exec`) inside the container's cgroup
//!   *before* joining the container's namespaces find the cgroup already armed: runc
//!   1.4.0 and later start `runc exec`'s `runc init` with `clone3(CLONE_INTO_CGROUP)`,
//!   and its exec of the runc binary by root and its `setns()` calls would be root-exec
//!   and dangerous-capabilities hits. Such tasks are exempt (`exempt.rs`): created into a
//!   pod cgroup by a parent outside the pods, they stay unguarded until their second exec
//!   (the first is the runtime's own binary); that exec, the workload's, is checked. The
//!   same mechanism keeps a runtime that creates a container this way from arming the
//!   fresh cgroup with the exec of its own binary.
//! - Programs are attached once, at the pods' cgroup root (cgroup programs) or globally
//!   (LSM, tracepoints); a cgroup outside that root is never guarded.

use aya_ebpf::helpers::generated::{
    bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
    bpf_get_current_uid_gid, bpf_probe_read_kernel,
};
use enforcer_common::*;

use crate::{
    endpoint,
    maps::{config, count, ARMED, ENDPOINTS, EVENTS, GUARD_CONFIG},
};

mod cgroup;
mod exempt;
mod fallback;
mod lsm;

pub const EPERM: i32 = 1;

pub const AF_INET: u32 = 2;
pub const AF_INET6: u32 = 10;
pub const AF_PACKET: u32 = 17;
pub const SOCK_RAW: u32 = 3;
/// Obsolete packet socket type; `socket(AF_INET, SOCK_PACKET, ...)` makes an AF_PACKET
/// socket.
pub const SOCK_PACKET: u32 = 10;
pub const SOCK_TYPE_MASK: u32 = 0xf;

/// Kernel struct offsets, resolved by the agent from the running kernel's BTF and written
/// into this read-only global before the object is loaded (`EbpfLoader::override_global`).
/// The value compiled in means "nothing resolved".
#[unsafe(no_mangle)]
static GUARD_OFFSETS: KernelOffsets = KernelOffsets::UNRESOLVED;

/// Read one field of `GUARD_OFFSETS` (volatile: the compiler must not fold the compiled-in
/// value; the verifier sees the loaded, frozen value).
macro_rules! off {
    ($($f:tt)+) => {
        // SAFETY: reading a field of a static; volatile so that the load stays in the code.
        unsafe { core::ptr::read_volatile(core::ptr::addr_of!($crate::guards::GUARD_OFFSETS.$($f)+)) }
    };
}
pub(crate) use off;

/// Were all `OFF_*` bits in `bits` resolved?
#[inline(always)]
pub fn has(bits: u64) -> bool {
    off!(present) & bits == bits
}

/// A uid no task has ((uid_t)-1): what a failed credential read yields.
pub const NO_UID: u32 = u32::MAX;

/// Read a `T` at `base + offset` of kernel memory, `dflt` if that fails. (Returning a
/// plain value rather than an `Option` keeps every register the verifier sees
/// initialised on every path.)
#[inline(always)]
pub fn kread<T: Copy>(base: u64, offset: u32, dflt: T) -> T {
    if base == 0 {
        return dflt;
    }
    let mut v = dflt;
    // SAFETY: the helper writes at most size_of::<T>() bytes into `v` and copes with any
    // source address (a bad one returns an error).
    let r = unsafe {
        bpf_probe_read_kernel(
            &mut v as *mut T as *mut core::ffi::c_void,
            core::mem::size_of::<T>() as u32,
            (base + offset as u64) as *const core::ffi::c_void,
        )
    };
    if r == 0 {
        v
    } else {
        dflt
    }
}

/// Read a kernel pointer (0 if that fails).
#[inline(always)]
pub fn kptr(base: u64, offset: u32) -> u64 {
    kread(base, offset, 0u64)
}

/// What a guard check concluded for the current task.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pass,
    Deny,
    Audit,
}

/// The current task as the guards see it: an armed cgroup and the guards of its pod.
pub struct Subject {
    pub cgid: u64,
    pub endpoint: u32,
    pub enforce: u32,
    pub audit: u32,
}

impl Subject {
    #[inline(always)]
    pub fn action(&self, guard: u32) -> Action {
        if self.enforce & guard != 0 {
            Action::Deny
        } else if self.audit & guard != 0 {
            Action::Audit
        } else {
            Action::Pass
        }
    }

    /// Is any of `guards` enforced or audited?
    #[inline(always)]
    pub fn any(&self, guards: u32) -> bool {
        (self.enforce | self.audit) & guards != 0
    }
}

/// The current task, if its cgroup is armed, resolves to guards, and the task is not
/// exempt (`exempt.rs`): what every LSM and tracing guard program asks. The `ARMED` lookup
/// comes first: it is the cheap rejection of every task that is not in a pod.
#[inline(always)]
pub fn subject() -> Option<Subject> {
    let s = subject_armed()?;
    if exempt::current_is_exempt(s.cgid, 1) {
        count(CNT_EXEMPT_PASSED);
        return None;
    }
    Some(s)
}

/// [`subject`] for checks of an exec itself (the LSM tier's `bprm_creds_from_file`): an
/// exempt task's exec is exempt only while it is not the workload's: not the last exec
/// of its exemption, and not made from another mount namespace than the runtime's (see
/// `exempt.rs`).
#[inline(always)]
pub fn subject_exec(bprm: u64) -> Option<Subject> {
    let s = subject_armed()?;
    if exempt::current_exec_is_exempt(s.cgid, bprm) {
        count(CNT_EXEMPT_PASSED);
        return None;
    }
    Some(s)
}

/// The current task, if its cgroup is armed and resolves to guards, exempt or not: for the
/// cgroup programs (device, sysctl, sock_create), which cannot read task storage on the
/// kernels enforcer supports (see `exempt.rs`) and so rely on arming alone.
#[inline(always)]
pub fn subject_armed() -> Option<Subject> {
    // SAFETY: helper without arguments.
    let cgid = unsafe { bpf_get_current_cgroup_id() };
    // SAFETY: only the presence of the entry is used.
    unsafe { ARMED.get(cgid) }?;
    let cfg = config()?;
    let (_, ep) = endpoint::of_current(cfg.root_cgroup_id, cfg.root_level);
    match ep {
        Some(e) => Some(Subject {
            cgid,
            endpoint: e.id,
            enforce: e.guards_enforce,
            audit: e.guards_audit & !e.guards_enforce,
        }),
        None => {
            if cfg.unclassified_guards == 0
                || !endpoint::current_under_root(cfg.root_cgroup_id, cfg.root_level)
            {
                return None;
            }
            Some(Subject {
                cgid,
                endpoint: 0,
                enforce: cfg.unclassified_guards,
                audit: 0,
            })
        }
    }
}

/// Tier to report from programs that both tiers attach.
#[inline(always)]
pub fn shared_tier() -> u8 {
    match GUARD_CONFIG.get(0) {
        Some(g) if g.tier == TIER_FALLBACK as u32 => TIER_FALLBACK,
        _ => TIER_LSM,
    }
}

/// Report a guard hit (unless `action` is `Pass`). `detail` fills the event's 64-byte
/// detail field in place (it is zeroed first). Returns whether the operation must be
/// denied.
#[inline(always)]
pub fn report<F: FnOnce(*mut u8)>(
    s: &Subject,
    action: Action,
    guard: u32,
    tier: u8,
    arg: u64,
    detail: F,
) -> bool {
    let verdict = match action {
        Action::Pass => return false,
        Action::Deny => {
            count(CNT_GUARD_DENY);
            VERDICT_DENY
        }
        Action::Audit => {
            count(CNT_GUARD_AUDIT);
            VERDICT_AUDIT
        }
    };
    match EVENTS.reserve::<GuardEvent>(0) {
        Some(mut slot) => {
            let e = slot.as_mut_ptr();
            // SAFETY: `e` is a reserved, exclusively owned record of the right size; every
            // field is written before submit. The helpers write into fields of that record
            // with the sizes passed.
            unsafe {
                (*e).kind = EVENT_GUARD;
                (*e).guard = guard;
                (*e).cgroup_id = s.cgid;
                (*e).endpoint = s.endpoint;
                (*e).verdict = verdict;
                (*e).tier = tier;
                (*e)._pad = [0; 2];
                (*e).pid = (bpf_get_current_pid_tgid() >> 32) as u32;
                (*e).uid = bpf_get_current_uid_gid() as u32;
                (*e).arg = arg;
                (*e).comm = [0; 16];
                bpf_get_current_comm((*e).comm.as_mut_ptr() as *mut _, 16);
                (*e).detail = [0; 64];
                detail((*e).detail.as_mut_ptr());
            }
            slot.submit(0);
        }
        None => count(CNT_RINGBUF_DROPS),
    }
    action == Action::Deny
}

/// No detail.
#[inline(always)]
pub fn no_detail(_: *mut u8) {}

/// Copy a short constant into the detail field.
#[inline(always)]
pub fn text<const N: usize>(s: &'static [u8; N]) -> impl FnOnce(*mut u8) {
    move |dst: *mut u8| {
        let mut i = 0;
        while i < N && i < 63 {
            // SAFETY: `dst` is the 64-byte detail field; i < 63.
            unsafe { *dst.add(i) = s[i] };
            i += 1;
        }
    }
}

/// Copy a NUL-terminated kernel string (at most 63 bytes) into the detail field.
#[inline(always)]
pub fn kernel_str(src: u64) -> impl FnOnce(*mut u8) {
    move |dst: *mut u8| {
        if src != 0 {
            // SAFETY: the helper writes at most 63 bytes (and a NUL) into the 64-byte
            // field and copes with a bad source address.
            unsafe {
                aya_ebpf::helpers::generated::bpf_probe_read_kernel_str(
                    dst as *mut _,
                    63,
                    src as *const _,
                );
            }
        }
    }
}

/// Endpoint id and cgroup id of another task (`task_struct *`), by its cgroup v2 cgroup
/// (`task->cgroups->dfl_cgrp->kn`) and that cgroup's kernfs ancestors: the first id with
/// an `ENDPOINTS` entry names its pod. `None` when the offsets are missing or unreadable;
/// endpoint 0 when no ancestor is classified.
#[inline(always)]
pub fn task_endpoint(task: u64) -> Option<(u32, u64)> {
    if !has(OFF_TASK_CGROUPS
        | OFF_CSS_SET_DFL_CGRP
        | OFF_CGROUP_KN
        | OFF_KERNFS_NODE_ID
        | OFF_KERNFS_NODE_PARENT)
    {
        return None;
    }
    let css = kptr(task, off!(task_cgroups));
    let cgrp = kptr(css, off!(css_set_dfl_cgrp));
    let mut kn = kptr(cgrp, off!(cgroup_kn));
    if kn == 0 {
        return None;
    }
    let cgid = kread(kn, off!(kernfs_node_id), 0u64);
    let mut i = 0;
    while i <= MAX_ANCESTOR_DEPTH {
        let id = kread(kn, off!(kernfs_node_id), 0u64);
        if id == 0 {
            break;
        }
        // SAFETY: the value is copied out at once.
        if let Some(ep) = unsafe { ENDPOINTS.get(id) } {
            return Some((ep.id, cgid));
        }
        kn = kptr(kn, off!(kernfs_node_parent));
        if kn == 0 {
            break;
        }
        i += 1;
    }
    Some((0, cgid))
}

/// Is `task` in the same pod as the current task (`s`)? Unknown counts as not.
#[inline(always)]
pub fn same_pod(s: &Subject, task: u64) -> bool {
    match task_endpoint(task) {
        Some((ep, cgid)) => {
            if s.endpoint != 0 {
                ep == s.endpoint
            } else {
                cgid == s.cgid
            }
        }
        None => false,
    }
}
