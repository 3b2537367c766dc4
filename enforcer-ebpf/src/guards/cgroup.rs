//! Programs both tiers attach: arming on exec (and the fallback's exec checks), host
//! devices, sysctl writes.
//!
//! host-devices uses the `cgroup/dev` program type rather than the `file_open` LSM hook:
//! it works on every kernel with cgroup BPF, so both tiers get the same precise EPERM; it
//! is consulted exactly where the kernel checks device access (open of a device node,
//! mknod, and block devices opened by mount), with the device type and numbers as plain
//! context fields (no struct offsets); and, attached at the pods' cgroup root, it runs only
//! for tasks in pods instead of on every file open of the node. What it does not see: a
//! device fd opened before arming (by the runtime) or received over a unix socket.
//!
//! The device and sysctl programs rely on arming alone: they cannot read the runtime
//! exemption (`exempt.rs` says why), so an exempt task in an armed cgroup is denied like
//! any other. The exec tracepoint honours it.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::generated::{bpf_get_current_cgroup_id, bpf_get_current_task, bpf_send_signal},
    macros::{btf_tracepoint, cgroup_device, cgroup_sysctl},
    programs::{BtfTracePointContext, DeviceContext, SysctlContext},
};
use enforcer_common::*;

use super::{
    exempt, has, kernel_str, kptr, kread, off, report, shared_tier, subject, subject_armed, Action,
    Subject, NO_UID,
};
use crate::{
    endpoint,
    maps::{config, count, ARMED, GUARD_CONFIG},
};

const SIGKILL: u32 = 9;

const BPF_DEVCG_DEV_BLOCK: u32 = 1;
const BPF_DEVCG_DEV_CHAR: u32 = 2;
const BPF_DEVCG_ACC_MKNOD: u32 = 1;
const BPF_DEVCG_ACC_READ: u32 = 2;
const BPF_DEVCG_ACC_WRITE: u32 = 4;

/// The devices every container may use: the only place this set is defined.
/// Character devices null 1:3, zero 1:5, full 1:7, random 1:8, urandom 1:9, tty 5:0,
/// ptmx 5:2, and the pseudo-terminal slaves 136-143:* (/dev/pts/N).
#[inline(always)]
pub fn harmless_device(ty: u32, major: u32, minor: u32) -> bool {
    if ty != BPF_DEVCG_DEV_CHAR {
        return false;
    }
    match major {
        1 => matches!(minor, 3 | 5 | 7 | 8 | 9),
        5 => minor == 0 || minor == 2,
        136..=143 => true,
        _ => false,
    }
}

/// `host-devices`. Returns 1 to allow, 0 to fail the access with EPERM. The event's
/// argument is `major << 32 | minor`, its detail the type ("c"/"b") and access letters
/// (m: mknod, r, w).
#[cgroup_device]
pub fn guard_device(ctx: DeviceContext) -> i32 {
    let d = ctx.device;
    // SAFETY: reads of the program's own context fields.
    let (access_type, major, minor) = unsafe { ((*d).access_type, (*d).major, (*d).minor) };
    let ty = access_type & 0xffff;
    let access = access_type >> 16;
    if harmless_device(ty, major, minor) {
        return 1;
    }
    // Arming only: this program type cannot read the exemption (`exempt.rs`).
    let Some(s) = subject_armed() else {
        return 1;
    };
    let action = s.action(GUARD_HOST_DEVICES);
    if action == Action::Pass {
        return 1;
    }
    let arg = ((major as u64) << 32) | minor as u64;
    let deny = report(
        &s,
        action,
        GUARD_HOST_DEVICES,
        shared_tier(),
        arg,
        |dst: *mut u8| {
            let t = if ty == BPF_DEVCG_DEV_BLOCK {
                b'b'
            } else {
                b'c'
            };
            // SAFETY: at most 5 bytes of the 64-byte detail field.
            unsafe {
                *dst = t;
                *dst.add(1) = b' ';
                let mut i = 2;
                if access & BPF_DEVCG_ACC_MKNOD != 0 {
                    *dst.add(i) = b'm';
                    i += 1;
                }
                if access & BPF_DEVCG_ACC_READ != 0 {
                    *dst.add(i) = b'r';
                    i += 1;
                }
                if access & BPF_DEVCG_ACC_WRITE != 0 {
                    *dst.add(i) = b'w';
                }
            }
        },
    );
    if deny {
        0
    } else {
        1
    }
}

/// `sysctl-write`: writes under /proc/sys. Returns 1 to allow, 0 for EPERM. Detail: the
/// sysctl's name ("net/ipv4/ip_forward").
#[cgroup_sysctl]
pub fn guard_sysctl(ctx: SysctlContext) -> i32 {
    let c = ctx.sysctl;
    // SAFETY: read of the program's own context field.
    if unsafe { (*c).write } == 0 {
        return 1;
    }
    // Arming only: this program type cannot read the exemption (`exempt.rs`).
    let Some(s) = subject_armed() else {
        return 1;
    };
    let action = s.action(GUARD_SYSCTL_WRITE);
    if action == Action::Pass {
        return 1;
    }
    let deny = report(
        &s,
        action,
        GUARD_SYSCTL_WRITE,
        shared_tier(),
        0,
        |dst: *mut u8| {
            // SAFETY: the helper writes at most 63 bytes and a NUL into the 64-byte field.
            unsafe {
                aya_ebpf::helpers::generated::bpf_sysctl_get_name(c, dst as *mut _, 63, 0);
            }
        },
    );
    if deny {
        0
    } else {
        1
    }
}

/// Arming, and the fallback tier's exec checks. `sched_process_exec(struct task_struct *p,
/// pid_t old_pid, struct linux_binprm *bprm)` fires in the exec'ing task once the new
/// program is in place and its credentials committed, before it runs a single instruction.
///
/// - An exempt task (`exempt.rs`) with at least two execs left: its count goes down and
///   nothing else happens (neither checked nor arming: the runtime's exec of its own
///   binary). With one left, the mark ends here and the exec goes on as below.
/// - A cgroup below the attach root that is not armed yet becomes armed; this exec is not
///   checked (it is the runtime's exec of the container's entrypoint).
/// - In an armed cgroup, in the fallback tier: root-exec (the new program runs with euid 0)
///   and root-escalation (a task whose real uid is not 0 now runs with euid 0, or with
///   permitted capabilities beyond its ambient set: a setuid-root or file-capability
///   binary) are enforced with SIGKILL. The signal is delivered before the new program's
///   first instruction, so this check is as precise as the LSM one, only later.
#[btf_tracepoint(function = "sched_process_exec")]
pub fn guard_exec(ctx: BtfTracePointContext) -> i32 {
    let Some(cfg) = config() else {
        return 0;
    };
    if !endpoint::current_under_root(cfg.root_cgroup_id, cfg.root_level) {
        return 0;
    }
    // SAFETY: helper without arguments.
    let cgid = unsafe { bpf_get_current_cgroup_id() };
    let bprm: u64 = ctx.arg(2);
    if exempt::consume_exec(cgid, bprm) {
        return 0;
    }
    // SAFETY: only the presence of the entry is used.
    if unsafe { ARMED.get(cgid) }.is_none() {
        if ARMED.insert(cgid, ARM_EXEC, BPF_NOEXIST as u64).is_err() {
            // Either another CPU armed it first, or the map is full.
            // SAFETY: as above.
            if unsafe { ARMED.get(cgid) }.is_none() {
                count(CNT_ARM_ERRORS);
            }
        }
        return 0;
    }
    let fallback = match GUARD_CONFIG.get(0) {
        Some(g) => g.fallback_guards & (GUARD_ROOT_ESCALATION | GUARD_ROOT_EXEC),
        None => 0,
    };
    if fallback == 0 {
        return 0;
    }
    let Some(s) = subject() else {
        return 0;
    };
    fallback_exec_check(&s, bprm, fallback);
    0
}

/// After an exec: did it give the task effective group 0 while its real group is not 0
/// (a setgid-root binary)? Unknown: no.
#[inline(always)]
fn group_root_gained(cred: u64) -> bool {
    has(OFF_CRED_GID | OFF_CRED_EGID)
        && kread(cred, off!(cred_egid), NO_UID) == 0
        && kread(cred, off!(cred_gid), 0u32) != 0
}

/// The fallback's exec checks, for the guards in `fallback`.
#[inline(always)]
fn fallback_exec_check(s: &Subject, bprm: u64, fallback: u32) {
    if !s.any(fallback) {
        return;
    }
    if !has(OFF_TASK_CRED
        | OFF_CRED_UID
        | OFF_CRED_EUID
        | OFF_CRED_CAP_PERMITTED
        | OFF_CRED_CAP_AMBIENT)
    {
        return;
    }
    // SAFETY: helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    let cred = kptr(task, off!(task_cred));
    if cred == 0 {
        return;
    }
    // Failed reads read as "nothing to judge": uid 0 (a root task escalates nothing),
    // euid not 0, no capabilities beyond the ambient set.
    let uid = kread(cred, off!(cred_uid), 0u32);
    let euid = kread(cred, off!(cred_euid), NO_UID);
    let permitted = kread(cred, off!(cred_cap_permitted), 0u64);
    let ambient = kread(cred, off!(cred_cap_ambient), 0u64);
    let filename = if has(OFF_BINPRM_FILENAME) {
        kptr(bprm, off!(binprm_filename))
    } else {
        0
    };
    let (guard, arg) = if euid == 0
        && fallback & GUARD_ROOT_EXEC != 0
        && s.action(GUARD_ROOT_EXEC) != Action::Pass
    {
        (GUARD_ROOT_EXEC, 0)
    } else if fallback & GUARD_ROOT_ESCALATION != 0
        && uid != 0
        && (euid == 0 || permitted & !ambient & !HARMLESS_FILE_CAPS != 0 || group_root_gained(cred))
    {
        (GUARD_ROOT_ESCALATION, permitted)
    } else {
        return;
    };
    let action = s.action(guard);
    if report(s, action, guard, TIER_FALLBACK, arg, kernel_str(filename)) {
        // SAFETY: helper with a scalar argument; signals the current task's process.
        unsafe { bpf_send_signal(SIGKILL) };
    }
}
