//! Tier `lsm`: BPF LSM programs. Each returns `-EPERM` when a guard is enforced and the
//! operation falls under it, or 0 and an event in audit mode, and always passes on a
//! non-zero return value of the previous BPF LSM program (its last argument).
//!
//! | guard | hooks |
//! | --- | --- |
//! | root-escalation | `task_fix_setuid` (a non-root task gaining uid/euid/suid/fsuid 0), `task_fix_setgid` (a non-root task outside group 0 gaining gid/egid/sgid/fsgid 0), `bprm_creds_from_file` (exec whose new creds have euid 0, egid 0 the task did not have, or permitted capabilities the task did not have other than `HARMLESS_FILE_CAPS`) |
//! | root-exec (modifier) | `bprm_creds_from_file`: any exec by, or into, euid 0 |
//! | dangerous-capabilities | `capable` for `DANGEROUS_CAPS`, in any user namespace |
//! | mount | `sb_mount` (new, bind, remount, move, propagation), `move_mount` (attaching `fsmount`/`open_tree` results), `sb_remount`, `sb_umount`, `sb_pivotroot` |
//! | kernel-modules | `kernel_module_request` (autoload), `kernel_load_data` and `kernel_read_file` for modules (init_module, finit_module) |
//! | ptrace | `ptrace_access_check`, `ptrace_traceme`: a target outside the pod; with ptrace-any (modifier) every attach |
//! | bpf | `bpf`, `perf_event_open` |
//! | raw-sockets | `socket_create` |
//!
//! host-devices and sysctl-write use cgroup programs in both tiers (`cgroup.rs`).
//!
//! `fsopen`/`fsconfig`/`fsmount` have no LSM hook in 6.1: a detached mount can be created and
//! used through its fd without `move_mount`. Those calls need CAP_SYS_ADMIN, so
//! dangerous-capabilities closes that path; host block devices stay closed by host-devices.

use aya_ebpf::{helpers::generated::bpf_get_current_task, macros::lsm, programs::LsmContext};
use enforcer_common::*;

use super::{
    has, kernel_str, kptr, kread, no_detail, off, report, same_pod, subject, subject_exec, text,
    Action, AF_INET, AF_INET6, AF_PACKET, EPERM, NO_UID, SOCK_PACKET, SOCK_RAW, SOCK_TYPE_MASK,
};

/// Capabilities the dangerous-capabilities guard denies (bit n = CAP n): CAP_DAC_READ_SEARCH
/// (2), CAP_NET_ADMIN (12), CAP_SYS_MODULE (16), CAP_SYS_RAWIO (17), CAP_SYS_PTRACE (19),
/// CAP_SYS_ADMIN (21), CAP_SYS_BOOT (22), CAP_SYS_TIME (25), CAP_MAC_ADMIN (33),
/// CAP_PERFMON (38), CAP_BPF (39).
pub const DANGEROUS_CAPS: u64 = (1 << 2)
    | (1 << 12)
    | (1 << 16)
    | (1 << 17)
    | (1 << 19)
    | (1 << 21)
    | (1 << 22)
    | (1 << 25)
    | (1 << 33)
    | (1 << 38)
    | (1 << 39);

/// `capable()` option: the check is a probe that must not be audited.
const CAP_OPT_NOAUDIT: u32 = 1 << 1;

/// `kernel_load_data_id` / `kernel_read_file_id` value for kernel modules.
const LOADING_MODULE: u32 = 2;
const READING_MODULE: u32 = 2;

/// `ptrace_access_check` mode bits.
const PTRACE_MODE_ATTACH: u32 = 0x02;
const PTRACE_MODE_NOAUDIT: u32 = 0x04;

#[inline(always)]
fn verdict(deny: bool) -> i32 {
    if deny {
        -EPERM
    } else {
        0
    }
}

const CRED_IDS: u64 = OFF_CRED_UID | OFF_CRED_SUID | OFF_CRED_EUID | OFF_CRED_FSUID;

/// `root-escalation`: setuid family. `int task_fix_setuid(struct cred *new,
/// const struct cred *old, int flags)`.
#[lsm(hook = "task_fix_setuid")]
pub fn guard_task_fix_setuid(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(3);
    if prev != 0 {
        return prev;
    }
    if !has(CRED_IDS) {
        return 0;
    }
    let new: u64 = ctx.arg(0);
    let old: u64 = ctx.arg(1);
    let flags: u32 = ctx.arg(2);
    let ouid = kread(old, off!(cred_uid), 0);
    let oeuid = kread(old, off!(cred_euid), 0);
    let osuid = kread(old, off!(cred_suid), 0);
    let ofsuid = kread(old, off!(cred_fsuid), 0);
    // Only a task that is not root (neither real nor effective uid 0) can escalate.
    if ouid == 0 || oeuid == 0 {
        return 0;
    }
    let nuid = kread(new, off!(cred_uid), NO_UID);
    let neuid = kread(new, off!(cred_euid), NO_UID);
    let nsuid = kread(new, off!(cred_suid), NO_UID);
    let nfsuid = kread(new, off!(cred_fsuid), NO_UID);
    let gained =
        nuid == 0 || neuid == 0 || (nsuid == 0 && osuid != 0) || (nfsuid == 0 && ofsuid != 0);
    if !gained {
        return 0;
    }
    let arg = ((flags as u64) << 32) | neuid as u64;
    check(GUARD_ROOT_ESCALATION, arg, text(b"setuid"))
}

const CRED_GIDS: u64 = OFF_CRED_GID | OFF_CRED_SGID | OFF_CRED_EGID | OFF_CRED_FSGID;

/// `root-escalation`: setgid family. `int task_fix_setgid(struct cred *new, const struct
/// cred *old, int flags)`. A task that is neither root (uid, euid) nor in group 0 (gid,
/// egid) gaining gid/egid 0, or a saved/fs gid 0 it did not have, is denied.
#[lsm(hook = "task_fix_setgid")]
pub fn guard_task_fix_setgid(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(3);
    if prev != 0 {
        return prev;
    }
    if !has(CRED_IDS | CRED_GIDS) {
        return 0;
    }
    let new: u64 = ctx.arg(0);
    let old: u64 = ctx.arg(1);
    let flags: u32 = ctx.arg(2);
    // Failed reads of the old ids read as root (nothing to escalate).
    if kread(old, off!(cred_uid), 0u32) == 0
        || kread(old, off!(cred_euid), 0u32) == 0
        || kread(old, off!(cred_gid), 0u32) == 0
        || kread(old, off!(cred_egid), 0u32) == 0
    {
        return 0;
    }
    let osgid = kread(old, off!(cred_sgid), 0u32);
    let ofsgid = kread(old, off!(cred_fsgid), 0u32);
    let ngid = kread(new, off!(cred_gid), NO_UID);
    let negid = kread(new, off!(cred_egid), NO_UID);
    let nsgid = kread(new, off!(cred_sgid), NO_UID);
    let nfsgid = kread(new, off!(cred_fsgid), NO_UID);
    let gained =
        ngid == 0 || negid == 0 || (nsgid == 0 && osgid != 0) || (nfsgid == 0 && ofsgid != 0);
    if !gained {
        return 0;
    }
    let arg = ((flags as u64) << 32) | negid as u64;
    check(GUARD_ROOT_ESCALATION, arg, text(b"setgid"))
}

/// `root-escalation` (exec of setuid-root and file-capability binaries) and `root-exec`.
/// `int bprm_creds_from_file(struct linux_binprm *bprm, struct file *file)`: runs after the
/// capability LSM computed the new credentials into `bprm->cred`; the task still has its
/// old ones.
#[lsm(hook = "bprm_creds_from_file")]
pub fn guard_bprm_creds_from_file(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(2);
    if prev != 0 {
        return prev;
    }
    if !has(CRED_IDS | OFF_CRED_CAP_PERMITTED | OFF_TASK_CRED | OFF_BINPRM_CRED) {
        return 0;
    }
    let bprm: u64 = ctx.arg(0);
    // An exempt task's exec is exempt unless it is the workload's (`exempt.rs`).
    let Some(s) = subject_exec(bprm) else {
        return 0;
    };
    if !s.any(GUARD_ROOT_ESCALATION | GUARD_ROOT_EXEC) {
        return 0;
    }
    // SAFETY: helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    let old = kptr(task, off!(task_cred));
    let new = kptr(bprm, off!(binprm_cred));
    if old == 0 || new == 0 {
        return 0;
    }
    // A failed read of the old ids reads as root (no escalation to judge), of the new
    // euid as "not root".
    let ouid = kread(old, off!(cred_uid), 0);
    let oeuid = kread(old, off!(cred_euid), 0);
    let ocaps = kread(old, off!(cred_cap_permitted), u64::MAX);
    let neuid = kread(new, off!(cred_euid), NO_UID);
    let ncaps = kread(new, off!(cred_cap_permitted), 0u64);
    // setgid-root binaries: group 0 gained by a task outside it (unknown: not gained).
    let gains_group_root = has(OFF_CRED_GID | OFF_CRED_EGID)
        && kread(new, off!(cred_egid), NO_UID) == 0
        && kread(old, off!(cred_gid), 0u32) != 0
        && kread(old, off!(cred_egid), 0u32) != 0;
    let filename = if has(OFF_BINPRM_FILENAME) {
        kptr(bprm, off!(binprm_filename))
    } else {
        0
    };
    if oeuid == 0 || neuid == 0 {
        let action = s.action(GUARD_ROOT_EXEC);
        if action != Action::Pass {
            let deny = report(
                &s,
                action,
                GUARD_ROOT_EXEC,
                TIER_LSM,
                neuid as u64,
                kernel_str(filename),
            );
            if deny {
                return -EPERM;
            }
        }
    }
    let escalates = ouid != 0
        && oeuid != 0
        && (neuid == 0 || ncaps & !ocaps & !HARMLESS_FILE_CAPS != 0 || gains_group_root);
    if !escalates {
        return 0;
    }
    let action = s.action(GUARD_ROOT_ESCALATION);
    verdict(report(
        &s,
        action,
        GUARD_ROOT_ESCALATION,
        TIER_LSM,
        ncaps,
        kernel_str(filename),
    ))
}

/// `dangerous-capabilities`. `int capable(const struct cred *cred, struct user_namespace
/// *ns, int cap, unsigned int opts)`. BPF LSM programs run last: a check the capability
/// LSM already failed never gets here, so every call is a capability the task has and is
/// about to use. Checks of another task's credentials (`has_capability(t, ...)`,
/// `file_ns_capable()` with the opener's) are not the current task using a capability and
/// pass. Non-audited probes (`ns_capable_noaudit`) are denied without an event: they are
/// frequent (memory accounting asks for CAP_SYS_ADMIN on every private writable mapping).
#[lsm(hook = "capable")]
pub fn guard_capable(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(4);
    if prev != 0 {
        return prev;
    }
    let cap: i32 = ctx.arg(2);
    if !(0..64).contains(&cap) || DANGEROUS_CAPS & (1u64 << cap) == 0 {
        return 0;
    }
    if !has(OFF_TASK_CRED) {
        return 0;
    }
    let Some(s) = subject() else {
        return 0;
    };
    let action = s.action(GUARD_DANGEROUS_CAPABILITIES);
    if action == Action::Pass {
        return 0;
    }
    let cred: u64 = ctx.arg(0);
    // SAFETY: helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    if kptr(task, off!(task_cred)) != cred {
        return 0;
    }
    let opts: u32 = ctx.arg(3);
    if opts & CAP_OPT_NOAUDIT != 0 {
        return verdict(action == Action::Deny);
    }
    verdict(report(
        &s,
        action,
        GUARD_DANGEROUS_CAPABILITIES,
        TIER_LSM,
        cap as u64,
        no_detail,
    ))
}

/// The common end of a hook: if the current task is guarded by `guard`, report the
/// operation (`arg`, `detail`) and deny it in enforce mode.
#[inline(always)]
fn check<F: FnOnce(*mut u8)>(guard: u32, arg: u64, detail: F) -> i32 {
    let Some(s) = subject() else {
        return 0;
    };
    let action = s.action(guard);
    verdict(report(&s, action, guard, TIER_LSM, arg, detail))
}

/// `mount`: mount(2) in every form. `int sb_mount(const char *dev_name, const struct path
/// *path, const char *type, unsigned long flags, void *data)`; both strings are kernel
/// copies. Detail: the filesystem type, or the source for binds, moves and remounts.
#[lsm(hook = "sb_mount")]
pub fn guard_sb_mount(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(5);
    if prev != 0 {
        return prev;
    }
    let dev: u64 = ctx.arg(0);
    let ty: u64 = ctx.arg(2);
    let flags: u64 = ctx.arg(3);
    check(
        GUARD_MOUNT,
        flags,
        kernel_str(if ty != 0 { ty } else { dev }),
    )
}

/// `mount`: `int move_mount(const struct path *from_path, const struct path *to_path)`.
#[lsm(hook = "move_mount")]
pub fn guard_move_mount(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(2);
    if prev != 0 {
        return prev;
    }
    check(GUARD_MOUNT, 0, text(b"move_mount"))
}

/// `mount`: `int sb_remount(struct super_block *sb, void *mnt_opts)`.
#[lsm(hook = "sb_remount")]
pub fn guard_sb_remount(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(2);
    if prev != 0 {
        return prev;
    }
    check(GUARD_MOUNT, 0, text(b"remount"))
}

/// `mount`: `int sb_umount(struct vfsmount *mnt, int flags)`.
#[lsm(hook = "sb_umount")]
pub fn guard_sb_umount(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(2);
    if prev != 0 {
        return prev;
    }
    let flags: u32 = ctx.arg(1);
    check(GUARD_MOUNT, flags as u64, text(b"umount"))
}

/// `mount`: `int sb_pivotroot(const struct path *old_path, const struct path *new_path)`.
#[lsm(hook = "sb_pivotroot")]
pub fn guard_sb_pivotroot(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(2);
    if prev != 0 {
        return prev;
    }
    check(GUARD_MOUNT, 0, text(b"pivot_root"))
}

/// `kernel-modules`: module autoloading on behalf of the task (a socket family, a
/// filesystem type, ...). `int kernel_module_request(char *kmod_name)`. Detail: the name.
#[lsm(hook = "kernel_module_request")]
pub fn guard_kernel_module_request(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(1);
    if prev != 0 {
        return prev;
    }
    let name: u64 = ctx.arg(0);
    check(GUARD_KERNEL_MODULES, 0, kernel_str(name))
}

/// `kernel-modules`: init_module(2). `int kernel_load_data(enum kernel_load_data_id id,
/// bool contents)`. Runs before the kernel parses the image.
#[lsm(hook = "kernel_load_data")]
pub fn guard_kernel_load_data(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(2);
    if prev != 0 {
        return prev;
    }
    let id: u32 = ctx.arg(0);
    if id != LOADING_MODULE {
        return 0;
    }
    check(GUARD_KERNEL_MODULES, id as u64, text(b"init_module"))
}

/// `kernel-modules`: finit_module(2). `int kernel_read_file(struct file *file,
/// enum kernel_read_file_id id, bool contents)`.
#[lsm(hook = "kernel_read_file")]
pub fn guard_kernel_read_file(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(3);
    if prev != 0 {
        return prev;
    }
    let id: u32 = ctx.arg(1);
    if id != READING_MODULE {
        return 0;
    }
    check(GUARD_KERNEL_MODULES, id as u64, text(b"finit_module"))
}

/// ptrace guards for a target task. `attach`: the access is an attach (ptrace(2),
/// /proc/pid/mem, process_vm_*, pidfd_getfd), not a read of /proc state.
#[inline(always)]
fn ptrace_guard(target: u64, attach: bool, noaudit: bool) -> i32 {
    let Some(s) = subject() else {
        return 0;
    };
    if !s.any(GUARD_PTRACE | GUARD_PTRACE_ANY) {
        return 0;
    }
    let tgid = if has(OFF_TASK_TGID) {
        kread(target, off!(task_tgid), 0u32)
    } else {
        0
    };
    let mut guard = GUARD_PTRACE_ANY;
    let mut action = if attach {
        s.action(GUARD_PTRACE_ANY)
    } else {
        Action::Pass
    };
    if action == Action::Pass {
        guard = GUARD_PTRACE;
        action = s.action(GUARD_PTRACE);
        if action == Action::Pass || same_pod(&s, target) {
            return 0;
        }
    }
    if noaudit {
        return verdict(action == Action::Deny);
    }
    verdict(report(
        &s,
        action,
        guard,
        TIER_LSM,
        tgid as u64,
        text(b"ptrace"),
    ))
}

/// `ptrace`. `int ptrace_access_check(struct task_struct *child, unsigned int mode)`.
#[lsm(hook = "ptrace_access_check")]
pub fn guard_ptrace_access_check(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(2);
    if prev != 0 {
        return prev;
    }
    let child: u64 = ctx.arg(0);
    let mode: u32 = ctx.arg(1);
    ptrace_guard(
        child,
        mode & PTRACE_MODE_ATTACH != 0,
        mode & PTRACE_MODE_NOAUDIT != 0,
    )
}

/// `ptrace`: PTRACE_TRACEME makes `parent` the tracer. `int ptrace_traceme(struct
/// task_struct *parent)`.
#[lsm(hook = "ptrace_traceme")]
pub fn guard_ptrace_traceme(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(1);
    if prev != 0 {
        return prev;
    }
    let parent: u64 = ctx.arg(0);
    ptrace_guard(parent, true, false)
}

/// `bpf`: every bpf(2) command. `int bpf(int cmd, union bpf_attr *attr, unsigned int size)`
/// (up to 6.14; the agent picks the variant that matches the kernel's BTF).
#[lsm(hook = "bpf")]
pub fn guard_bpf(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(3);
    if prev != 0 {
        return prev;
    }
    let cmd: i32 = ctx.arg(0);
    check(GUARD_BPF, cmd as u64, text(b"bpf"))
}

/// `bpf` from 6.15: `int bpf(int cmd, union bpf_attr *attr, unsigned int size, bool
/// kernel)`. Calls the kernel makes on its own behalf (`kernel`) are not the task's.
#[lsm(hook = "bpf")]
pub fn guard_bpf_kernel_flag(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(4);
    if prev != 0 {
        return prev;
    }
    let kernel: u64 = ctx.arg(3);
    if kernel & 0xff != 0 {
        return 0;
    }
    let cmd: i32 = ctx.arg(0);
    check(GUARD_BPF, cmd as u64, text(b"bpf"))
}

/// `bpf`: perf_event_open(2). `int perf_event_open(struct perf_event_attr *attr, int type)`
/// (up to 6.11).
#[lsm(hook = "perf_event_open")]
pub fn guard_perf_event_open(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(2);
    if prev != 0 {
        return prev;
    }
    let ty: i32 = ctx.arg(1);
    check(GUARD_BPF, ty as u64, text(b"perf_event_open"))
}

/// `bpf`: perf_event_open(2) from 6.12: `int perf_event_open(int type)`.
#[lsm(hook = "perf_event_open")]
pub fn guard_perf_event_open_type(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(1);
    if prev != 0 {
        return prev;
    }
    let ty: i32 = ctx.arg(0);
    check(GUARD_BPF, ty as u64, text(b"perf_event_open"))
}

/// `packet-sockets`: AF_PACKET sockets (also asked as `AF_INET`, `SOCK_PACKET`, which
/// the kernel has turned into AF_PACKET before this hook); `raw-sockets`: those and
/// SOCK_RAW sockets of the IP families.
/// `int socket_create(int family, int type, int protocol, int kern)`.
#[lsm(hook = "socket_create")]
pub fn lsm_socket_create(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(4);
    if prev != 0 {
        return prev;
    }
    let kern: i32 = ctx.arg(3);
    if kern != 0 {
        return 0;
    }
    let family: u32 = ctx.arg(0);
    let ty: u32 = ctx.arg(1);
    let packet = family == AF_PACKET || (ty & SOCK_TYPE_MASK) == SOCK_PACKET;
    if packet {
        let r = check(GUARD_PACKET_SOCKETS, family as u64, no_detail);
        if r != 0 {
            return r;
        }
    }
    let raw =
        packet || ((family == AF_INET || family == AF_INET6) && (ty & SOCK_TYPE_MASK) == SOCK_RAW);
    if !raw {
        return 0;
    }
    check(GUARD_RAW_SOCKETS, family as u64, no_detail)
}

/// Tier probe: does nothing but pass the previous verdict on. The agent loads and attaches
/// it to find out whether the BPF LSM is usable, then detaches it.
#[lsm(hook = "syslog")]
pub fn guard_lsm_probe(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(1);
    prev
}
