//! Runtime guards, user side: kernel offsets from BTF, enforcement tiers, the programs of
//! each tier and what each tier can enforce. The loader functions live on
//! [`crate::bpf::Datapath`]:
//!
//! - [`Datapath::probe_guard_tier`](crate::bpf::Datapath::probe_guard_tier): decide the
//!   tier by trying: load and attach a pass-through LSM program; `Lsm` if that works,
//!   else `Fallback`, with the reason.
//! - [`Datapath::attach_guards`](crate::bpf::Datapath::attach_guards): attach the guard
//!   programs of a tier (cgroup programs at the pods' cgroup root, LSM and tracepoint
//!   programs globally; pinned like the network programs when a pin directory is set) and
//!   report which guards are enforceable.
//! - Container runtime tasks that enter a pod's cgroup from outside the pods (`runc
//!   init` of `kubectl exec`) are exempt until they exec the workload
//!   ([`EXEMPTION_PROGRAMS`], [`Datapath::exemption`](crate::bpf::Datapath::exemption);
//!   the design is in `enforcer-ebpf/src/guards/exempt.rs`).
//! - [`Datapath::arm_cgroup`](crate::bpf::Datapath::arm_cgroup),
//!   [`disarm_cgroup`](crate::bpf::Datapath::disarm_cgroup),
//!   [`arm_running_below`](crate::bpf::Datapath::arm_running_below),
//!   [`armed_cgroups`](crate::bpf::Datapath::armed_cgroups): the `ARMED` map (guards apply
//!   to a cgroup only once a task exec'd in it; see `enforcer-ebpf/src/guards.rs`).
//!
//! Which guards a pod gets is decided elsewhere (Pod Security labels, RuntimePolicy) and
//! written as `Endpoint::guards_enforce` / `guards_audit`.

pub mod arming;
pub mod btf;
pub mod offsets;
pub mod selftest;
pub mod syscalls;

use enforcer_common::*;
pub use offsets::{MissingField, ResolvedOffsets};

/// Stable guard names (events, logs, metrics, configuration).
pub const GUARD_NAMES: &[(u32, &str)] = &[
    (GUARD_ROOT_ESCALATION, "root-escalation"),
    (GUARD_DANGEROUS_CAPABILITIES, "dangerous-capabilities"),
    (GUARD_MOUNT, "mount"),
    (GUARD_KERNEL_MODULES, "kernel-modules"),
    (GUARD_PTRACE, "ptrace"),
    (GUARD_BPF, "bpf"),
    (GUARD_RAW_SOCKETS, "raw-sockets"),
    (GUARD_HOST_DEVICES, "host-devices"),
    (GUARD_SYSCTL_WRITE, "sysctl-write"),
    (GUARD_ROOT_EXEC, "root-exec"),
    (GUARD_PTRACE_ANY, "ptrace-any"),
    (GUARD_PACKET_SOCKETS, "packet-sockets"),
];

/// Names of the guards in `bits`, in `GUARD_NAMES` order.
/// The name of one guard bit ("?" for an unknown one).
pub fn name_of(bit: u32) -> &'static str {
    GUARD_NAMES
        .iter()
        .find(|(b, _)| *b == bit)
        .map_or("?", |(_, n)| n)
}

pub fn names_of(bits: u32) -> Vec<&'static str> {
    GUARD_NAMES
        .iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, n)| *n)
        .collect()
}

pub fn guard_name(bit: u32) -> &'static str {
    GUARD_NAMES
        .iter()
        .find(|(b, _)| *b == bit)
        .map(|(_, n)| *n)
        .unwrap_or("unknown")
}

pub fn guard_by_name(name: &str) -> Option<u32> {
    GUARD_NAMES
        .iter()
        .find(|(_, n)| *n == name)
        .map(|(b, _)| *b)
}

/// Where guards are enforced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tier {
    /// BPF LSM programs (the kernel has CONFIG_BPF_LSM and `bpf` in its active LSMs).
    Lsm,
    /// cgroup programs and tracepoints with SIGKILL (no BPF LSM).
    Fallback,
}

impl Tier {
    pub fn name(self) -> &'static str {
        match self {
            Tier::Lsm => "lsm",
            Tier::Fallback => "fallback",
        }
    }

    /// `TIER_*` as in events.
    pub fn code(self) -> u8 {
        match self {
            Tier::Lsm => TIER_LSM,
            Tier::Fallback => TIER_FALLBACK,
        }
    }

    pub fn from_code(code: u8) -> Option<Tier> {
        match code {
            TIER_LSM => Some(Tier::Lsm),
            TIER_FALLBACK => Some(Tier::Fallback),
            _ => None,
        }
    }
}

/// The outcome of tier probing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TierProbe {
    pub tier: Tier,
    /// Why: what was tried and what the kernel answered.
    pub reason: String,
}

/// How a tier enforces a guard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enforcement {
    /// The operation fails with EPERM before it has any effect.
    Deny,
    /// Some operations fail with EPERM, the others kill the process (see `note`).
    DenyOrKill,
    /// The process is killed (SIGKILL) at syscall entry: the syscall itself completes.
    Kill,
    /// The guard cannot be enforced (offsets missing); see `missing`.
    Unavailable,
}

/// What a tier can do for one guard on this kernel.
#[derive(Clone, Debug)]
pub struct GuardSupport {
    pub guard: u32,
    pub name: &'static str,
    pub enforcement: Enforcement,
    /// How, and what is not covered.
    pub note: &'static str,
    /// Kernel fields the tier needs for this guard that are missing from the BTF.
    pub missing: Vec<MissingField>,
    /// LSM tier: why this kernel refused the guard's LSM program (the guard fell back to
    /// the fallback tier, or is unavailable if that has nothing for it).
    pub refused: Option<String>,
}

/// Kind and attach point of a guard program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgKind {
    /// BPF LSM program on this hook.
    Lsm(&'static str),
    /// BTF tracepoint.
    Tracepoint(&'static str),
    /// cgroup programs, attached at the pods' cgroup root.
    CgroupDevice,
    CgroupSysctl,
    CgroupSockCreate,
}

/// One guard program of the object.
#[derive(Clone, Copy, Debug)]
pub struct GuardProgram {
    pub name: &'static str,
    pub kind: ProgKind,
    /// Guards it serves (0: infrastructure, always attached).
    pub guards: u32,
    /// LSM programs: the hook's parameter names this program is written for, as the
    /// kernel's BTF spells them (`bpf_lsm_<hook>`). Hooks whose signature changed between
    /// kernels have one program per signature; the agent loads the one that matches.
    pub args: &'static [&'static str],
}

const fn prog(name: &'static str, kind: ProgKind, guards: u32) -> GuardProgram {
    GuardProgram {
        name,
        kind,
        guards,
        args: &[],
    }
}

const fn lsm(
    name: &'static str,
    hook: &'static str,
    args: &'static [&'static str],
    guards: u32,
) -> GuardProgram {
    GuardProgram {
        name,
        kind: ProgKind::Lsm(hook),
        guards,
        args,
    }
}

/// Arming (and the fallback's exec checks for root-escalation and root-exec): both tiers,
/// always attached.
pub const EXEC_PROGRAM: GuardProgram = prog(
    "guard_exec",
    ProgKind::Tracepoint("sched_process_exec"),
    GUARD_ROOT_ESCALATION | GUARD_ROOT_EXEC,
);

/// Exemption of container runtime tasks entering pod cgroups (`enforcer-ebpf/src/guards/
/// exempt.rs`): grants on `clone3(CLONE_INTO_CGROUP)` and inheritance on fork, grants on
/// migration into a pod cgroup. Both tiers, always attached (with `EXEC_PROGRAM`, which
/// counts the exempt execs down).
pub const EXEMPTION_PROGRAMS: &[GuardProgram] = &[
    prog("guard_fork", ProgKind::Tracepoint("sched_process_fork"), 0),
    prog(
        "guard_cgroup_attach",
        ProgKind::Tracepoint("cgroup_attach_task"),
        0,
    ),
];

/// Kernel fields the exemption needs (the cgroup of a task other than the current one).
pub const EXEMPTION_OFFSETS: u64 = TARGET_CGROUP;

/// Can runtime tasks be exempted on a kernel whose offsets resolved as `offsets`?
pub fn exemption_available(offsets: &ResolvedOffsets) -> bool {
    offsets.missing_of(EXEMPTION_OFFSETS).is_empty()
}

/// Programs both tiers attach, besides `EXEC_PROGRAM`.
pub const SHARED_PROGRAMS: &[GuardProgram] = &[
    prog("guard_device", ProgKind::CgroupDevice, GUARD_HOST_DEVICES),
    prog("guard_sysctl", ProgKind::CgroupSysctl, GUARD_SYSCTL_WRITE),
];

/// The LSM tier's programs.
pub const LSM_PROGRAMS: &[GuardProgram] = &[
    lsm(
        "guard_task_fix_setuid",
        "task_fix_setuid",
        &["new", "old", "flags"],
        GUARD_ROOT_ESCALATION,
    ),
    lsm(
        "guard_task_fix_setgid",
        "task_fix_setgid",
        &["new", "old", "flags"],
        GUARD_ROOT_ESCALATION,
    ),
    lsm(
        "guard_bprm_creds_from_file",
        "bprm_creds_from_file",
        &["bprm", "file"],
        GUARD_ROOT_ESCALATION | GUARD_ROOT_EXEC,
    ),
    lsm(
        "guard_capable",
        "capable",
        &["cred", "ns", "cap", "opts"],
        GUARD_DANGEROUS_CAPABILITIES,
    ),
    lsm(
        "guard_sb_mount",
        "sb_mount",
        &["dev_name", "path", "type", "flags", "data"],
        GUARD_MOUNT,
    ),
    lsm(
        "guard_move_mount",
        "move_mount",
        &["from_path", "to_path"],
        GUARD_MOUNT,
    ),
    lsm(
        "guard_sb_remount",
        "sb_remount",
        &["sb", "mnt_opts"],
        GUARD_MOUNT,
    ),
    lsm(
        "guard_sb_umount",
        "sb_umount",
        &["mnt", "flags"],
        GUARD_MOUNT,
    ),
    lsm(
        "guard_sb_pivotroot",
        "sb_pivotroot",
        &["old_path", "new_path"],
        GUARD_MOUNT,
    ),
    lsm(
        "guard_kernel_module_request",
        "kernel_module_request",
        &["kmod_name"],
        GUARD_KERNEL_MODULES,
    ),
    lsm(
        "guard_kernel_load_data",
        "kernel_load_data",
        &["id", "contents"],
        GUARD_KERNEL_MODULES,
    ),
    lsm(
        "guard_kernel_read_file",
        "kernel_read_file",
        &["file", "id", "contents"],
        GUARD_KERNEL_MODULES,
    ),
    lsm(
        "guard_ptrace_access_check",
        "ptrace_access_check",
        &["child", "mode"],
        GUARD_PTRACE | GUARD_PTRACE_ANY,
    ),
    lsm(
        "guard_ptrace_traceme",
        "ptrace_traceme",
        &["parent"],
        GUARD_PTRACE | GUARD_PTRACE_ANY,
    ),
    // bpf(2): `kernel` was added in 6.15.
    lsm("guard_bpf", "bpf", &["cmd", "attr", "size"], GUARD_BPF),
    lsm(
        "guard_bpf_kernel_flag",
        "bpf",
        &["cmd", "attr", "size", "kernel"],
        GUARD_BPF,
    ),
    // perf_event_open(2): `attr` was dropped in 6.12.
    lsm(
        "guard_perf_event_open",
        "perf_event_open",
        &["attr", "type"],
        GUARD_BPF,
    ),
    lsm(
        "guard_perf_event_open_type",
        "perf_event_open",
        &["type"],
        GUARD_BPF,
    ),
    lsm(
        "lsm_socket_create",
        "socket_create",
        &["family", "type", "protocol", "kern"],
        GUARD_RAW_SOCKETS | GUARD_PACKET_SOCKETS,
    ),
];

/// LSM hooks `LSM_PROGRAMS` use, each once, in order.
pub fn lsm_hooks() -> Vec<&'static str> {
    let mut hooks: Vec<&'static str> = Vec::new();
    for p in LSM_PROGRAMS {
        if let ProgKind::Lsm(h) = p.kind
            && !hooks.contains(&h)
        {
            hooks.push(h);
        }
    }
    hooks
}

/// The guards the programs on LSM hook `hook` serve (every variant serves the same).
pub fn lsm_hook_guards(hook: &str) -> u32 {
    LSM_PROGRAMS
        .iter()
        .filter(|p| matches!(p.kind, ProgKind::Lsm(h) if h == hook))
        .fold(0, |acc, p| acc | p.guards)
}

/// The program of `LSM_PROGRAMS` for `hook` whose signature is `params` (the kernel's),
/// or an explanation of why none fits.
pub fn lsm_variant(hook: &str, params: Option<&[&str]>) -> Result<&'static GuardProgram, String> {
    let variants = || {
        LSM_PROGRAMS
            .iter()
            .filter(move |p| matches!(p.kind, ProgKind::Lsm(h) if h == hook))
    };
    let Some(params) = params else {
        return Err(format!(
            "the kernel's BTF has no bpf_lsm_{hook} (hook removed or renamed)"
        ));
    };
    variants().find(|p| p.args == params).ok_or_else(|| {
        let known: Vec<String> = variants()
            .map(|p| format!("({})", p.args.join(", ")))
            .collect();
        format!(
            "hook {hook}({}) on this kernel; this build knows {}",
            params.join(", "),
            known.join(" and ")
        )
    })
}

/// The fallback tier's programs.
pub const FALLBACK_PROGRAMS: &[GuardProgram] = &[
    prog(
        "guard_sock_create",
        ProgKind::CgroupSockCreate,
        GUARD_RAW_SOCKETS,
    ),
    prog(
        "guard_sys_enter",
        ProgKind::Tracepoint("sys_enter"),
        GUARD_ROOT_ESCALATION
            | GUARD_DANGEROUS_CAPABILITIES
            | GUARD_MOUNT
            | GUARD_KERNEL_MODULES
            | GUARD_PTRACE
            | GUARD_PTRACE_ANY
            | GUARD_BPF
            | GUARD_RAW_SOCKETS
            | GUARD_PACKET_SOCKETS,
    ),
];

/// The tier-probe program (pass-through LSM program on `syslog`).
pub const LSM_PROBE_PROGRAM: GuardProgram = lsm("guard_lsm_probe", "syslog", &["type"], 0);

const CRED_IDS: u64 = OFF_CRED_UID
    | OFF_CRED_SUID
    | OFF_CRED_EUID
    | OFF_CRED_FSUID
    | OFF_CRED_GID
    | OFF_CRED_SGID
    | OFF_CRED_EGID
    | OFF_CRED_FSGID;
const TARGET_CGROUP: u64 = OFF_TASK_CGROUPS
    | OFF_CSS_SET_DFL_CGRP
    | OFF_CGROUP_KN
    | OFF_KERNFS_NODE_ID
    | OFF_KERNFS_NODE_PARENT;

/// Syscall argument registers the fallback's sys_enter program needs: on x86-64 also the
/// compat ones, or 32-bit syscalls would bypass it.
fn syscall_regs() -> u64 {
    if cfg!(target_arch = "x86_64") {
        OFF_REGS_ARGS | OFF_COMPAT_REGS_ARGS | OFF_TASK_TI_STATUS
    } else {
        OFF_REGS_ARGS
    }
}

/// Per tier and guard: how it is enforced, what it needs from the kernel's BTF, and notes.
fn table(tier: Tier, guard: u32) -> (Enforcement, u64, &'static str) {
    use Enforcement::*;
    match (tier, guard) {
        (Tier::Lsm, GUARD_ROOT_ESCALATION) => (
            Deny,
            CRED_IDS | OFF_CRED_CAP_PERMITTED | OFF_TASK_CRED | OFF_BINPRM_CRED,
            "task_fix_setuid, task_fix_setgid (setuid/setgid families to uid/gid 0 by a \
             non-root task outside group 0), bprm_creds_from_file (exec of setuid-root, \
             setgid-root or file-capability binaries other than cap_net_bind_service)",
        ),
        (Tier::Lsm, GUARD_ROOT_EXEC) => (
            Deny,
            CRED_IDS | OFF_CRED_CAP_PERMITTED | OFF_TASK_CRED | OFF_BINPRM_CRED,
            "bprm_creds_from_file: any exec by, or into, euid 0",
        ),
        (Tier::Lsm, GUARD_DANGEROUS_CAPABILITIES) => (
            Deny,
            OFF_TASK_CRED,
            "capable(): CAP_SYS_ADMIN, SYS_MODULE, SYS_RAWIO, SYS_PTRACE, NET_ADMIN, BPF, \
             PERFMON, SYS_BOOT, SYS_TIME, MAC_ADMIN, DAC_READ_SEARCH in any user namespace",
        ),
        (Tier::Lsm, GUARD_MOUNT) => (
            Deny,
            0,
            "sb_mount, move_mount, sb_remount, sb_umount, sb_pivotroot; fsopen/fsmount \
             detached mounts have no hook (they need CAP_SYS_ADMIN: dangerous-capabilities)",
        ),
        (Tier::Lsm, GUARD_KERNEL_MODULES) => (
            Deny,
            0,
            "kernel_module_request (autoload), kernel_load_data/kernel_read_file for modules",
        ),
        (Tier::Lsm, GUARD_PTRACE) => (
            Deny,
            TARGET_CGROUP,
            "ptrace_access_check, ptrace_traceme: target outside the pod (by its cgroup)",
        ),
        (Tier::Lsm, GUARD_PTRACE_ANY) => (
            Deny,
            0,
            "ptrace_access_check (attach mode), ptrace_traceme: every target",
        ),
        (Tier::Lsm, GUARD_BPF) => (Deny, 0, "bpf and perf_event_open hooks"),
        (Tier::Lsm, GUARD_RAW_SOCKETS) => (Deny, 0, "socket_create: AF_PACKET, SOCK_RAW"),
        (Tier::Lsm, GUARD_PACKET_SOCKETS) => (
            Deny,
            0,
            "socket_create: AF_PACKET (also SOCK_PACKET, and io_uring's socket op)",
        ),
        (_, GUARD_HOST_DEVICES) => (
            Deny,
            0,
            "cgroup/dev: every device but null, zero, full, random, urandom, tty, ptmx, pts",
        ),
        (_, GUARD_SYSCTL_WRITE) => (Deny, 0, "cgroup/sysctl: every write under /proc/sys"),
        (Tier::Fallback, GUARD_ROOT_ESCALATION) => (
            Kill,
            OFF_TASK_CRED
                | OFF_CRED_UID
                | OFF_CRED_EUID
                | OFF_CRED_GID
                | OFF_CRED_EGID
                | OFF_CRED_CAP_PERMITTED
                | OFF_CRED_CAP_AMBIENT
                | syscall_regs(),
            "setuid/setgid families (16- and 32-bit) to uid/gid 0 by a non-root task outside \
             group 0: killed at syscall entry; exec of setuid-root, setgid-root or \
             file-capability binaries (other than cap_net_bind_service): killed before the new \
             program runs",
        ),
        (Tier::Fallback, GUARD_ROOT_EXEC) => (
            Kill,
            OFF_TASK_CRED
                | OFF_CRED_UID
                | OFF_CRED_EUID
                | OFF_CRED_CAP_PERMITTED
                | OFF_CRED_CAP_AMBIENT,
            "exec into euid 0: killed before the new program runs",
        ),
        (Tier::Fallback, GUARD_DANGEROUS_CAPABILITIES) => (
            Kill,
            syscall_regs(),
            "by syscall list (mount family, setns, unshare/clone namespaces, sethostname, \
             swap, quotactl, kexec, reboot, clock setting, iopl/ioperm, open_by_handle_at, \
             modules, bpf, perf); ioctl/netlink/setsockopt uses are not seen",
        ),
        (Tier::Fallback, GUARD_MOUNT) => (
            Kill,
            syscall_regs(),
            "mount, umount2, move_mount, fsopen, fsmount, fspick, open_tree(CLONE), \
             mount_setattr, pivot_root: killed at entry, the call completes",
        ),
        (Tier::Fallback, GUARD_KERNEL_MODULES) => (
            Kill,
            syscall_regs(),
            "init_module, finit_module, delete_module; autoloading is not seen",
        ),
        (Tier::Fallback, GUARD_PTRACE) => (
            Kill,
            syscall_regs() | OFF_TASK_THREAD_PID | OFF_PID_LEVEL,
            "attach/seize/traceme, process_vm_*, pidfd_getfd from the initial PID namespace \
             (hostPID pods); a task in its own PID namespace can only name its pod",
        ),
        (Tier::Fallback, GUARD_PTRACE_ANY) => (
            Kill,
            syscall_regs(),
            "attach/seize/traceme, process_vm_*, pidfd_getfd",
        ),
        (Tier::Fallback, GUARD_BPF) => (Kill, syscall_regs(), "bpf, perf_event_open"),
        (Tier::Fallback, GUARD_RAW_SOCKETS) => (
            DenyOrKill,
            syscall_regs(),
            "AF_INET/AF_INET6 SOCK_RAW: EPERM (cgroup/sock_create); AF_PACKET: killed",
        ),
        (Tier::Fallback, GUARD_PACKET_SOCKETS) => (
            Kill,
            syscall_regs(),
            "socket(AF_PACKET) and socket(AF_INET, SOCK_PACKET), also through i386 socketcall: \
             killed at entry; io_uring's socket op is not seen",
        ),
        _ => (Unavailable, 0, "unknown guard"),
    }
}

/// Every guard bit, in `GUARD_NAMES` order.
pub fn all_guards() -> impl Iterator<Item = u32> {
    GUARD_NAMES.iter().map(|(b, _)| *b)
}

/// What `tier` can enforce on a kernel whose offsets resolved as `offsets`.
pub fn support(tier: Tier, offsets: &ResolvedOffsets) -> Vec<GuardSupport> {
    all_guards()
        .map(|guard| {
            let (enforcement, needs, note) = table(tier, guard);
            let missing: Vec<MissingField> =
                offsets.missing_of(needs).into_iter().cloned().collect();
            GuardSupport {
                guard,
                name: guard_name(guard),
                enforcement: if missing.is_empty() {
                    enforcement
                } else {
                    Enforcement::Unavailable
                },
                note,
                missing,
                refused: None,
            }
        })
        .collect()
}

/// Guard bits `tier` can enforce with `offsets`.
pub fn available(tier: Tier, offsets: &ResolvedOffsets) -> u32 {
    support(tier, offsets)
        .iter()
        .filter(|s| s.enforcement != Enforcement::Unavailable)
        .fold(0, |acc, s| acc | s.guard)
}

/// The programs `tier` attaches (without `EXEC_PROGRAM`).
pub fn programs(tier: Tier) -> impl Iterator<Item = &'static GuardProgram> {
    let own = match tier {
        Tier::Lsm => LSM_PROGRAMS,
        Tier::Fallback => FALLBACK_PROGRAMS,
    };
    SHARED_PROGRAMS.iter().chain(own.iter())
}

/// A guard event's detail field as text.
pub fn detail_text(detail: &[u8]) -> String {
    let end = detail.iter().position(|c| *c == 0).unwrap_or(detail.len());
    String::from_utf8_lossy(&detail[..end]).into_owned()
}

/// The events ring buffer as [`crate::bpf::Datapath::take_events`] returns it.
pub type EventRing = aya::maps::RingBuf<aya::maps::MapData>;

/// Every guard event waiting in `ring` (other records are dropped).
pub fn drain_events(ring: &mut EventRing) -> Vec<GuardEvent> {
    let mut out = Vec::new();
    while let Some(item) = ring.next() {
        if let Some(e) = decode_event(&item) {
            out.push(e);
        }
    }
    out
}

/// Decode a ring buffer record as a guard event (`None` for other records).
pub fn decode_event(bytes: &[u8]) -> Option<GuardEvent> {
    if bytes.len() < size_of::<GuardEvent>() {
        return None;
    }
    // SAFETY: length checked; GuardEvent is plain data valid for any bit pattern.
    let e: GuardEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    (e.kind == EVENT_GUARD).then_some(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_cover_every_bit() {
        let mut all = 0;
        for (bit, name) in GUARD_NAMES {
            assert_eq!(guard_by_name(name), Some(*bit));
            assert_eq!(all & bit, 0, "{name} listed twice");
            all |= bit;
        }
        assert_eq!(all, GUARD_ALL);
    }

    #[test]
    fn every_guard_has_a_program_in_both_tiers() {
        let full = ResolvedOffsets {
            offsets: KernelOffsets::UNRESOLVED,
            missing: Vec::new(),
        };
        for tier in [Tier::Lsm, Tier::Fallback] {
            let mut served = programs(tier).fold(0, |a, p| a | p.guards);
            if tier == Tier::Fallback {
                served |= EXEC_PROGRAM.guards;
            }
            assert_eq!(served, GUARD_ALL, "{tier:?} programs");
            assert_eq!(available(tier, &full), GUARD_ALL, "{tier:?} table");
        }
    }

    #[test]
    fn missing_offsets_make_guards_unavailable_with_the_field_named() {
        let mut r = ResolvedOffsets {
            offsets: KernelOffsets::UNRESOLVED,
            missing: Vec::new(),
        };
        r.missing.push(MissingField {
            bit: OFF_KERNFS_NODE_PARENT,
            field: "kernfs_node.parent|__parent".into(),
            reason: "struct kernfs_node has no member __parent in the kernel's BTF".into(),
        });
        let s = support(Tier::Lsm, &r);
        let ptrace = s.iter().find(|g| g.guard == GUARD_PTRACE).unwrap();
        assert_eq!(ptrace.enforcement, Enforcement::Unavailable);
        assert_eq!(ptrace.missing[0].field, "kernfs_node.parent|__parent");
        let any = s.iter().find(|g| g.guard == GUARD_PTRACE_ANY).unwrap();
        assert_eq!(
            any.enforcement,
            Enforcement::Deny,
            "ptrace-any needs no target"
        );
        assert_eq!(available(Tier::Lsm, &r), GUARD_ALL & !GUARD_PTRACE);
        let nothing = ResolvedOffsets::unresolved("no BTF");
        let fb = available(Tier::Fallback, &nothing);
        assert_eq!(fb, GUARD_HOST_DEVICES | GUARD_SYSCTL_WRITE);
    }
}
