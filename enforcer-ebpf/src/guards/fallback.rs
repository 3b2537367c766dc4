//! Tier `fallback`: kernels without the BPF LSM (GKE Ubuntu nodes, this project's CI
//! host). Besides the cgroup programs both tiers share (host-devices, sysctl-write: precise
//! EPERM) and the exec tracepoint (root-escalation and root-exec at exec: SIGKILL before
//! the new program runs), this tier has:
//!
//! - `guard_sock_create` (`cgroup/sock_create` at the pods' root): AF_INET/AF_INET6
//!   SOCK_RAW sockets fail with EPERM, precisely. Like every cgroup program it relies on
//!   arming alone (an exempt runtime task is denied too, see `exempt.rs`).
//! - `guard_sys_enter` (`tp_btf/sys_enter`, every syscall of the node): a syscall listed in
//!   `SYSCALL_RULES` (filled by the agent for the node's architecture, with the i386 table
//!   in `SYSCALL_RULES_COMPAT` for 32-bit syscalls on x86-64) from an armed, guarded task
//!   makes the task's process receive SIGKILL (enforce) or an event (audit). Exempt
//!   runtime tasks (`exempt.rs`) are skipped.
//!
//! What this tier cannot guarantee:
//! - **The syscall completes.** A signal sent at syscall entry is delivered when the
//!   syscall returns: the call runs to completion and its effects stay. A mount stays in
//!   the container's mount namespace (other processes of the container see it), a module
//!   loaded by init_module stays loaded, a ptrace attach happened. What the killed process
//!   never gets is the *result*: no code of it runs with the uid 0 it asked for, the fd or
//!   the attached tracee. Other threads of the process may run briefly before the group
//!   exit reaches them. Only the cgroup programs (devices, sysctls, raw IP sockets) deny,
//!   and the exec check kills before the new program's first instruction.
//! - **Capability coverage is by syscall list, not by capability.** dangerous-capabilities
//!   kills the syscalls that need one of those capabilities: the mount family, setns,
//!   unshare/clone/clone3 with namespace flags (including CLONE_NEWUSER, which would grant
//!   all capabilities in a new user namespace), sethostname, setdomainname, swapon,
//!   swapoff, quotactl, kexec_load, kexec_file_load, reboot, settimeofday, clock_settime,
//!   adjtimex/clock_adjtime that change the clock, iopl, ioperm, open_by_handle_at,
//!   init/finit/delete_module, bpf, perf_event_open. Uses of those capabilities through
//!   ioctl, netlink, setsockopt or file writes (most of CAP_NET_ADMIN, CAP_MAC_ADMIN,
//!   CAP_SYS_RAWIO beyond iopl/ioperm and device nodes) are not seen.
//! - **ptrace baseline.** Without an LSM hook the target of ptrace(2) is only a pid in the
//!   caller's PID namespace, which a BPF program cannot resolve to a task. Every container
//!   gets its own PID namespace (or shares its pod's) unless the pod sets `hostPID`, so a
//!   caller outside the initial PID namespace can only name processes of its own pod:
//!   baseline allows it. A caller in the initial PID namespace (`hostPID` pods) is killed
//!   on PTRACE_ATTACH/SEIZE/TRACEME, process_vm_readv/writev and pidfd_getfd whatever the
//!   target. With ptrace-any those calls are killed everywhere.
//! - Module autoloading (`request_module` on behalf of the task) has no syscall of its
//!   own: kernel-modules covers init_module, finit_module and delete_module only.
//! - root-escalation by setuid family covers setuid, setreuid, setresuid, setfsuid (and
//!   their 16/32-bit compat variants) asking for uid 0 from a task whose real and effective
//!   uid are not 0.
//! - On arm64, AArch32 (compat) tasks are not told apart from native ones: their syscall
//!   numbers are judged against the native table. x86-64 32-bit syscalls (including
//!   `int 0x80` from 64-bit processes) use the i386 table.
//! - **Cost for the whole node.** With a `sys_enter` program attached every syscall of
//!   every task takes the kernel's tracing slow path and runs this program, guarded or not.
//!   Measured on this project's host (`cargo xtask bench`, which runs
//!   `kernel_guards::bench_fallback_guards_on_vs_off`): about +90 ns per getpid(2), +140 ns
//!   per getppid(2) (a number the i386 table also uses, so the compat check runs), within
//!   noise for fork+exec.

use aya_ebpf::{
    helpers::generated::{bpf_get_current_task, bpf_probe_read_user, bpf_send_signal},
    macros::{btf_tracepoint, cgroup_sock},
    programs::{BtfTracePointContext, SockContext},
};
use enforcer_common::*;

use super::{
    has, kptr, kread, no_detail, off, report, shared_tier, subject, subject_armed, Action, Subject,
    AF_INET, AF_INET6, AF_PACKET, SOCK_PACKET, SOCK_RAW, SOCK_TYPE_MASK,
};
use crate::maps::{SYSCALL_RULES, SYSCALL_RULES_COMPAT};

const SIGKILL: u32 = 9;

/// x86-64: x32 syscalls carry this bit; x32 shares the native numbers for every call we
/// guard except a few in 512..547, which the agent adds to the native table.
const X32_SYSCALL_BIT: u64 = 0x4000_0000;

const PTRACE_TRACEME: u64 = 0;
const PTRACE_ATTACH: u64 = 16;
const PTRACE_SEIZE: u64 = 0x4206;

/// `timex.modes` of adjtimex(2) that only reads.
const ADJ_OFFSET_SS_READ: u32 = 0xa001;

/// i386 socketcall(2) call number of socket(2).
const SYS_SOCKET: u64 = 1;

const CLONE_FILES: u64 = 0x400;
const CLONE_THREAD: u64 = 0x10000;

/// `raw-sockets` for the IP families: 1 allows, 0 fails socket(2) with EPERM. AF_PACKET
/// does not run this hook; `guard_sys_enter` kills those.
#[cgroup_sock(sock_create)]
pub fn guard_sock_create(ctx: SockContext) -> i32 {
    let sk = ctx.sock;
    // SAFETY: reads of the program's own context fields.
    let (family, ty) = unsafe { ((*sk).family, (*sk).type_) };
    if !((family == AF_INET || family == AF_INET6) && (ty & SOCK_TYPE_MASK) == SOCK_RAW) {
        return 1;
    }
    // Arming only: this program type cannot read the exemption (`exempt.rs`).
    let Some(s) = subject_armed() else {
        return 1;
    };
    let action = s.action(GUARD_RAW_SOCKETS);
    if report(
        &s,
        action,
        GUARD_RAW_SOCKETS,
        shared_tier(),
        family as u64,
        no_detail,
    ) {
        0
    } else {
        1
    }
}

/// Syscall argument `i` from the saved user registers.
#[inline(always)]
fn sc_arg(regs: u64, i: u8, compat: bool) -> u64 {
    let o = if compat {
        match i {
            0 => off!(compat_regs_args[0]),
            1 => off!(compat_regs_args[1]),
            2 => off!(compat_regs_args[2]),
            3 => off!(compat_regs_args[3]),
            4 => off!(compat_regs_args[4]),
            _ => off!(compat_regs_args[5]),
        }
    } else {
        match i {
            0 => off!(regs_args[0]),
            1 => off!(regs_args[1]),
            2 => off!(regs_args[2]),
            3 => off!(regs_args[3]),
            4 => off!(regs_args[4]),
            _ => off!(regs_args[5]),
        }
    };
    let v = kread(regs, o, 0u64);
    // A 64-bit process can make 32-bit syscalls (int 0x80): the kernel only uses the low
    // halves of the registers then, and so must we.
    if compat {
        v & 0xffff_ffff
    } else {
        v
    }
}

/// Is the current syscall a 32-bit compat one?
#[inline(always)]
fn in_compat_syscall() -> bool {
    let flag = off!(ti_status_compat);
    if flag == 0 || !has(OFF_TASK_TI_STATUS) {
        return false;
    }
    // SAFETY: helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    kread(task, off!(task_ti_status), 0u32) & flag != 0
}

/// Is the current task not root (neither its real nor its effective uid is 0)? Unknown
/// counts as root (nothing to escalate).
#[inline(always)]
fn current_not_root() -> bool {
    if !has(OFF_TASK_CRED | OFF_CRED_UID | OFF_CRED_EUID) {
        return false;
    }
    // SAFETY: helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    let cred = kptr(task, off!(task_cred));
    kread(cred, off!(cred_uid), 0u32) != 0 && kread(cred, off!(cred_euid), 0u32) != 0
}

/// Is the current task in the initial PID namespace? Unknown counts as yes (strict).
#[inline(always)]
fn in_initial_pid_ns() -> bool {
    if !has(OFF_TASK_THREAD_PID | OFF_PID_LEVEL) {
        return true;
    }
    // SAFETY: helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    let pid = kptr(task, off!(task_thread_pid));
    pid == 0 || kread(pid, off!(pid_level), 0u32) == 0
}

/// Read a `T` of user memory at `addr`; `None` if that fails. A program at syscall entry
/// cannot fault pages in: memory the caller has not touched yet, or whose page table entry
/// was dropped (`MADV_DONTNEED` on shared memory, a file page not mapped yet), fails here
/// and is read fine by the syscall a moment later. Every check treats `None` as the
/// dangerous value (fail closed).
#[inline(always)]
fn uread<T: Copy + Default>(addr: u64) -> Option<T> {
    let mut v = T::default();
    // SAFETY: the helper writes at most size_of::<T>() bytes into `v` and copes with any
    // user address.
    let r = unsafe {
        bpf_probe_read_user(
            &mut v as *mut T as *mut core::ffi::c_void,
            core::mem::size_of::<T>() as u32,
            addr as *const core::ffi::c_void,
        )
    };
    if r == 0 {
        Some(v)
    } else {
        None
    }
}

/// `arg` of a rule, without the `SC_ARG_USER` flag.
#[inline(always)]
fn arg_index(arg: u8) -> u8 {
    arg & !SC_ARG_USER
}

/// Is the current task neither root (uid, euid) nor in group 0 (gid, egid)? Unknown
/// counts as root (nothing to escalate), like `current_not_root`.
#[inline(always)]
fn current_not_root_group() -> bool {
    if !current_not_root() || !has(OFF_CRED_GID | OFF_CRED_EGID) {
        return false;
    }
    // SAFETY: helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    let cred = kptr(task, off!(task_cred));
    kread(cred, off!(cred_gid), 0u32) != 0 && kread(cred, off!(cred_egid), 0u32) != 0
}

/// Does any of the first `n` id arguments ask for id 0, at the id width `mask`?
#[inline(always)]
fn asks_id_zero(regs: u64, n: u8, mask: u64, compat: bool) -> bool {
    let mask = if mask == 0 { 0xffff_ffff } else { mask };
    (n > 0 && sc_arg(regs, 0, compat) & mask == 0)
        || (n > 1 && sc_arg(regs, 1, compat) & mask == 0)
        || (n > 2 && sc_arg(regs, 2, compat) & mask == 0)
}

/// Which guard, if any, this call falls under for `s`: the enforced one first.
#[inline(always)]
fn pick(s: &Subject, guards: u32) -> Option<(u32, Action)> {
    let e = guards & s.enforce;
    if e != 0 {
        return Some((e & e.wrapping_neg(), Action::Deny));
    }
    let a = guards & s.audit;
    if a != 0 {
        return Some((a & a.wrapping_neg(), Action::Audit));
    }
    None
}

/// ptrace-family rule: with ptrace-any always, with ptrace only from the initial PID
/// namespace.
#[inline(always)]
fn ptrace_pick(s: &Subject) -> Option<(u32, Action)> {
    if let Some(p) = pick(s, GUARD_PTRACE_ANY) {
        return Some(p);
    }
    if s.any(GUARD_PTRACE) && in_initial_pid_ns() {
        return pick(s, GUARD_PTRACE);
    }
    None
}

#[btf_tracepoint(function = "sys_enter")]
pub fn guard_sys_enter(ctx: BtfTracePointContext) -> i32 {
    let id: i64 = ctx.arg(1);
    if id < 0 {
        return 0;
    }
    let nr = (id as u64) & !X32_SYSCALL_BIT;
    if nr >= SYSCALL_RULES_MAX as u64 {
        return 0;
    }
    let nr = nr as u32;
    let native = SYSCALL_RULES.get(nr).copied().unwrap_or_default();
    let compat_rule = SYSCALL_RULES_COMPAT.get(nr).copied().unwrap_or_default();
    if native.guards == 0 && compat_rule.guards == 0 {
        return 0;
    }
    let compat = in_compat_syscall();
    let rule = if compat { compat_rule } else { native };
    if rule.guards == 0 {
        return 0;
    }
    let Some(s) = subject() else {
        return 0;
    };
    if !s.any(rule.guards | GUARD_PTRACE_ANY) {
        return 0;
    }
    let regs: u64 = ctx.arg(0);
    let hit = match rule.check {
        SC_ANY => pick(&s, rule.guards),
        SC_UIDS_TO_ROOT => {
            if asks_id_zero(regs, rule.arg, rule.value, compat) && current_not_root() {
                pick(&s, rule.guards)
            } else {
                None
            }
        }
        SC_GIDS_TO_ROOT => {
            if asks_id_zero(regs, rule.arg, rule.value, compat) && current_not_root_group() {
                pick(&s, rule.guards)
            } else {
                None
            }
        }
        SC_ARG_MASK => {
            if sc_arg(regs, rule.arg, compat) & rule.value != 0 {
                pick(&s, rule.guards)
            } else {
                None
            }
        }
        SC_ARG_EQ => {
            if sc_arg(regs, rule.arg, compat) == rule.value {
                pick(&s, rule.guards)
            } else {
                None
            }
        }
        SC_CLONE => {
            let a = sc_arg(regs, arg_index(rule.arg), compat);
            let flags = if rule.arg & SC_ARG_USER != 0 {
                uread::<u64>(a)
            } else {
                Some(a)
            };
            match flags {
                // Unreadable: judged as the worst flags.
                None => pick(&s, rule.guards),
                Some(f) if f & rule.value != 0 => pick(&s, GUARD_DANGEROUS_CAPABILITIES),
                Some(f) if f & CLONE_FILES != 0 && f & CLONE_THREAD == 0 => pick(&s, rule.guards),
                Some(_) => None,
            }
        }
        SC_TIMEX_WRITE => match uread::<u32>(sc_arg(regs, rule.arg, compat)) {
            Some(modes) if modes == 0 || modes == ADJ_OFFSET_SS_READ => None,
            _ => pick(&s, rule.guards),
        },
        SC_PTRACE => {
            let req = sc_arg(regs, 0, compat);
            if req == PTRACE_TRACEME || req == PTRACE_ATTACH || req == PTRACE_SEIZE {
                ptrace_pick(&s)
            } else {
                None
            }
        }
        SC_PTRACE_LIKE => ptrace_pick(&s),
        SC_SOCKET_PACKET => {
            let family = sc_arg(regs, 0, compat);
            let ty = sc_arg(regs, 1, compat) as u32 & SOCK_TYPE_MASK;
            if family == AF_PACKET as u64 || ty == SOCK_PACKET {
                pick(&s, rule.guards)
            } else {
                None
            }
        }
        SC_SOCKETCALL_PACKET => {
            if sc_arg(regs, 0, compat) != SYS_SOCKET {
                None
            } else {
                // socket(2)'s arguments as an array of 32-bit longs: family, type.
                let args = sc_arg(regs, 1, compat);
                match (uread::<u32>(args), uread::<u32>(args + 4)) {
                    (Some(family), Some(ty))
                        if family != AF_PACKET && ty & SOCK_TYPE_MASK != SOCK_PACKET =>
                    {
                        None
                    }
                    _ => pick(&s, rule.guards),
                }
            }
        }
        _ => None,
    };
    let Some((guard, action)) = hit else {
        return 0;
    };
    let arg = ((compat as u64) << 32) | nr as u64;
    if report(&s, action, guard, TIER_FALLBACK, arg, no_detail) {
        // SAFETY: helper with a scalar argument; signals the current task's process.
        unsafe { bpf_send_signal(SIGKILL) };
    }
    0
}
