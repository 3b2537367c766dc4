//! The fallback tier's syscall rules: which syscalls `guard_sys_enter` judges, under which
//! guards, and how it reads their arguments. Numbers are per architecture: the native
//! table comes from the `libc` crate's constants for the architecture enforcer is built
//! for, the x86-64 compat (i386) table is written out below from
//! `arch/x86/entry/syscalls/syscall_32.tbl`.
//!
//! Which capability each entry stands for (dangerous-capabilities) is in the comments; the
//! list is the whole of what the fallback tier covers for that guard (see the kernel
//! module `guards/fallback.rs` for what it cannot see).

use enforcer_common::*;

const CAPS: u32 = GUARD_DANGEROUS_CAPABILITIES;

/// Namespace flags of unshare(2) and clone3(2) (CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC,
/// NEWUSER, NEWPID, NEWNET, NEWTIME).
pub const NS_FLAGS: u64 = 0x0002_0000
    | 0x0200_0000
    | 0x0400_0000
    | 0x0800_0000
    | 0x1000_0000
    | 0x2000_0000
    | 0x4000_0000
    | 0x80;
/// clone(2) keeps the exit signal in the low byte, so CLONE_NEWTIME (0x80) cannot be
/// passed there.
pub const CLONE_NS_FLAGS: u64 = NS_FLAGS & !0xff;
const OPEN_TREE_CLONE: u64 = 1;

fn rule(guards: u32, check: u8, arg: u8, value: u64) -> SyscallRule {
    SyscallRule {
        guards,
        check,
        arg,
        _pad: [0; 2],
        value,
    }
}

fn any(guards: u32) -> SyscallRule {
    rule(guards, SC_ANY, 0, 0)
}

fn uids(n: u8) -> SyscallRule {
    rule(GUARD_ROOT_ESCALATION, SC_UIDS_TO_ROOT, n, 0xffff_ffff)
}

/// The i386 ABI's 16-bit uid calls: the kernel keeps the low 16 bits of each id.
fn uids16(n: u8) -> SyscallRule {
    rule(GUARD_ROOT_ESCALATION, SC_UIDS_TO_ROOT, n, 0xffff)
}

fn gids(n: u8) -> SyscallRule {
    rule(GUARD_ROOT_ESCALATION, SC_GIDS_TO_ROOT, n, 0xffff_ffff)
}

fn gids16(n: u8) -> SyscallRule {
    rule(GUARD_ROOT_ESCALATION, SC_GIDS_TO_ROOT, n, 0xffff)
}

/// Guards whose fallback kills a call that returns a descriptor (packet sockets, bpf
/// objects, perf events, handles, detached mounts, another process's descriptors): a new
/// process sharing the caller's descriptor table would keep that descriptor after the
/// caller is killed, and io_uring creates sockets without socket(2).
pub const FD_GUARDS: u32 = GUARD_PACKET_SOCKETS
    | GUARD_RAW_SOCKETS
    | GUARD_BPF
    | GUARD_MOUNT
    | GUARD_PTRACE
    | GUARD_PTRACE_ANY
    | CAPS;

/// clone(2) (flags in a register) or clone3(2) (flags in `clone_args`, user memory):
/// namespace flags under dangerous-capabilities, a shared descriptor table without
/// CLONE_THREAD under every guard that kills a descriptor-returning call.
fn clone(ns_flags: u64, in_memory: bool) -> SyscallRule {
    let arg = if in_memory { SC_ARG_USER } else { 0 };
    rule(FD_GUARDS, SC_CLONE, arg, ns_flags)
}

/// pidfd_getfd(2) copies a descriptor out of another process of the pod: one that a
/// killed call created is still there until the process has exited. Under the ptrace
/// guards as before, and under every guard that kills a descriptor-returning call.
fn pidfd_getfd() -> SyscallRule {
    any(FD_GUARDS)
}

/// io_uring_setup(2): io_uring's IORING_OP_SOCKET creates sockets without socket(2),
/// where `sys_enter` cannot see the family, and a ring's registered files are shared
/// with every process that holds the ring. Pods whose packet sockets are guarded get no
/// rings in the fallback tier (container runtimes' default seccomp profiles refuse
/// io_uring as well).
fn io_uring_setup() -> SyscallRule {
    any(GUARD_PACKET_SOCKETS | GUARD_RAW_SOCKETS)
}

fn mask(guards: u32, arg: u8, m: u64) -> SyscallRule {
    rule(guards, SC_ARG_MASK, arg, m)
}

fn timex(arg: u8) -> SyscallRule {
    rule(CAPS, SC_TIMEX_WRITE, arg, 0)
}

fn packet_socket() -> SyscallRule {
    rule(
        GUARD_PACKET_SOCKETS | GUARD_RAW_SOCKETS,
        SC_SOCKET_PACKET,
        0,
        0,
    )
}

fn ptrace() -> SyscallRule {
    rule(GUARD_PTRACE, SC_PTRACE, 0, 0)
}

fn ptrace_like() -> SyscallRule {
    rule(GUARD_PTRACE, SC_PTRACE_LIKE, 0, 0)
}

/// Rules whose syscalls every supported architecture has (by their native numbers there).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn shared() -> Vec<(i64, SyscallRule)> {
    vec![
        // root-escalation
        (libc::SYS_setuid, uids(1)),
        (libc::SYS_setreuid, uids(2)),
        (libc::SYS_setresuid, uids(3)),
        (libc::SYS_setfsuid, uids(1)),
        (libc::SYS_setgid, gids(1)),
        (libc::SYS_setregid, gids(2)),
        (libc::SYS_setresgid, gids(3)),
        (libc::SYS_setfsgid, gids(1)),
        // mount (all need CAP_SYS_ADMIN)
        (libc::SYS_mount, any(GUARD_MOUNT | CAPS)),
        (libc::SYS_umount2, any(GUARD_MOUNT | CAPS)),
        (libc::SYS_move_mount, any(GUARD_MOUNT | CAPS)),
        (libc::SYS_fsopen, any(GUARD_MOUNT | CAPS)),
        (libc::SYS_fsmount, any(GUARD_MOUNT | CAPS)),
        (libc::SYS_fspick, any(GUARD_MOUNT | CAPS)),
        (
            libc::SYS_open_tree,
            mask(GUARD_MOUNT | CAPS, 2, OPEN_TREE_CLONE),
        ),
        (libc::SYS_mount_setattr, any(GUARD_MOUNT | CAPS)),
        (libc::SYS_pivot_root, any(GUARD_MOUNT | CAPS)),
        // kernel-modules (CAP_SYS_MODULE)
        (libc::SYS_init_module, any(GUARD_KERNEL_MODULES | CAPS)),
        (libc::SYS_finit_module, any(GUARD_KERNEL_MODULES | CAPS)),
        (libc::SYS_delete_module, any(GUARD_KERNEL_MODULES | CAPS)),
        // ptrace
        (libc::SYS_ptrace, ptrace()),
        (libc::SYS_process_vm_readv, ptrace_like()),
        (libc::SYS_process_vm_writev, ptrace_like()),
        (libc::SYS_pidfd_getfd, pidfd_getfd()),
        // bpf (CAP_BPF, CAP_PERFMON)
        (libc::SYS_bpf, any(GUARD_BPF | CAPS)),
        (libc::SYS_perf_event_open, any(GUARD_BPF | CAPS)),
        // raw-sockets: AF_PACKET (AF_INET/6 SOCK_RAW are denied by cgroup/sock_create)
        (libc::SYS_socket, packet_socket()),
        // dangerous-capabilities
        (libc::SYS_setns, any(CAPS)),                    // CAP_SYS_ADMIN
        (libc::SYS_unshare, mask(CAPS, 0, NS_FLAGS)),    // CAP_SYS_ADMIN (or a new user ns)
        (libc::SYS_clone, clone(CLONE_NS_FLAGS, false)), // as unshare
        (libc::SYS_clone3, clone(NS_FLAGS, true)),
        (libc::SYS_io_uring_setup, io_uring_setup()),
        (libc::SYS_sethostname, any(CAPS)),       // CAP_SYS_ADMIN
        (libc::SYS_setdomainname, any(CAPS)),     // CAP_SYS_ADMIN
        (libc::SYS_swapon, any(CAPS)),            // CAP_SYS_ADMIN
        (libc::SYS_swapoff, any(CAPS)),           // CAP_SYS_ADMIN
        (libc::SYS_quotactl, any(CAPS)),          // CAP_SYS_ADMIN
        (libc::SYS_open_by_handle_at, any(CAPS)), // CAP_DAC_READ_SEARCH
        (libc::SYS_kexec_load, any(CAPS)),        // CAP_SYS_BOOT
        (libc::SYS_kexec_file_load, any(CAPS)),   // CAP_SYS_BOOT
        (libc::SYS_reboot, any(CAPS)),            // CAP_SYS_BOOT
        (libc::SYS_settimeofday, any(CAPS)),      // CAP_SYS_TIME
        (libc::SYS_clock_settime, any(CAPS)),     // CAP_SYS_TIME
        (libc::SYS_adjtimex, timex(0)),           // CAP_SYS_TIME
        (libc::SYS_clock_adjtime, timex(1)),      // CAP_SYS_TIME
    ]
}

/// Native rules of the architecture enforcer is built for: (syscall number, rule).
#[cfg(target_arch = "x86_64")]
pub fn native() -> Vec<(u32, SyscallRule)> {
    let mut v = shared();
    v.extend([
        (libc::SYS_iopl, any(CAPS)),   // CAP_SYS_RAWIO
        (libc::SYS_ioperm, any(CAPS)), // CAP_SYS_RAWIO
    ]);
    // quotactl_fd (5.14+) may be missing from older libc releases: 443 on x86-64.
    v.push((443, any(CAPS)));
    // x32 numbers that differ from x86-64 (512..547); x32 calls are looked up with
    // __X32_SYSCALL_BIT cleared, in this table.
    v.extend([
        (521, ptrace()),
        (528, any(CAPS)), // kexec_load
        (539, ptrace_like()),
        (540, ptrace_like()),
    ]);
    v.into_iter().map(|(n, r)| (n as u32, r)).collect()
}

#[cfg(target_arch = "aarch64")]
pub fn native() -> Vec<(u32, SyscallRule)> {
    shared().into_iter().map(|(n, r)| (n as u32, r)).collect()
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub fn native() -> Vec<(u32, SyscallRule)> {
    Vec::new()
}

/// 32-bit compat rules: i386 numbers on x86-64; none elsewhere.
pub fn compat() -> Vec<(u32, SyscallRule)> {
    if !cfg!(target_arch = "x86_64") {
        return Vec::new();
    }
    vec![
        (23, uids16(1)),                                     // setuid (16-bit ids)
        (70, uids16(2)),                                     // setreuid
        (138, uids16(1)),                                    // setfsuid
        (164, uids16(3)),                                    // setresuid
        (46, gids16(1)),                                     // setgid (16-bit ids)
        (71, gids16(2)),                                     // setregid
        (139, gids16(1)),                                    // setfsgid
        (170, gids16(3)),                                    // setresgid
        (214, gids(1)),                                      // setgid32
        (204, gids(2)),                                      // setregid32
        (210, gids(3)),                                      // setresgid32
        (216, gids(1)),                                      // setfsgid32
        (203, uids(2)),                                      // setreuid32
        (208, uids(3)),                                      // setresuid32
        (213, uids(1)),                                      // setuid32
        (215, uids(1)),                                      // setfsuid32
        (21, any(GUARD_MOUNT | CAPS)),                       // mount
        (22, any(GUARD_MOUNT | CAPS)),                       // umount
        (52, any(GUARD_MOUNT | CAPS)),                       // umount2
        (217, any(GUARD_MOUNT | CAPS)),                      // pivot_root
        (428, mask(GUARD_MOUNT | CAPS, 2, OPEN_TREE_CLONE)), // open_tree
        (429, any(GUARD_MOUNT | CAPS)),                      // move_mount
        (430, any(GUARD_MOUNT | CAPS)),                      // fsopen
        (432, any(GUARD_MOUNT | CAPS)),                      // fsmount
        (433, any(GUARD_MOUNT | CAPS)),                      // fspick
        (442, any(GUARD_MOUNT | CAPS)),                      // mount_setattr
        (128, any(GUARD_KERNEL_MODULES | CAPS)),             // init_module
        (129, any(GUARD_KERNEL_MODULES | CAPS)),             // delete_module
        (350, any(GUARD_KERNEL_MODULES | CAPS)),             // finit_module
        (26, ptrace()),                                      // ptrace
        (347, ptrace_like()),                                // process_vm_readv
        (348, ptrace_like()),                                // process_vm_writev
        (438, pidfd_getfd()),                                // pidfd_getfd
        (357, any(GUARD_BPF | CAPS)),                        // bpf
        (336, any(GUARD_BPF | CAPS)),                        // perf_event_open
        (359, packet_socket()),                              // socket
        (
            102,
            rule(
                GUARD_PACKET_SOCKETS | GUARD_RAW_SOCKETS,
                SC_SOCKETCALL_PACKET,
                0,
                0,
            ),
        ), // socketcall(SYS_SOCKET, {AF_PACKET, ...} or {.., SOCK_PACKET, ..})
        (425, io_uring_setup()),                             // io_uring_setup
        (346, any(CAPS)),                                    // setns
        (310, mask(CAPS, 0, NS_FLAGS)),                      // unshare
        (120, clone(CLONE_NS_FLAGS, false)),                 // clone
        (435, clone(NS_FLAGS, true)),                        // clone3
        (74, any(CAPS)),                                     // sethostname
        (121, any(CAPS)),                                    // setdomainname
        (87, any(CAPS)),                                     // swapon
        (115, any(CAPS)),                                    // swapoff
        (131, any(CAPS)),                                    // quotactl
        (443, any(CAPS)),                                    // quotactl_fd
        (342, any(CAPS)),                                    // open_by_handle_at
        (283, any(CAPS)),                                    // kexec_load
        (88, any(CAPS)),                                     // reboot
        (25, any(CAPS)),                                     // stime
        (79, any(CAPS)),                                     // settimeofday
        (264, any(CAPS)),                                    // clock_settime
        (404, any(CAPS)),                                    // clock_settime64
        (124, timex(0)),                                     // adjtimex
        (343, timex(1)),                                     // clock_adjtime
        (405, timex(1)),                                     // clock_adjtime64
        (110, any(CAPS)),                                    // iopl
        (101, any(CAPS)),                                    // ioperm
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_fit_and_have_no_duplicates() {
        for (name, table) in [("native", native()), ("compat", compat())] {
            let mut seen = std::collections::BTreeSet::new();
            for (nr, r) in &table {
                assert!(*nr < SYSCALL_RULES_MAX, "{name} {nr} beyond the table");
                assert!(seen.insert(*nr), "{name} {nr} listed twice");
                assert_ne!(r.guards, 0, "{name} {nr} guards nothing");
                assert_eq!(r.guards & !GUARD_ALL, 0, "{name} {nr}");
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x86_64_numbers() {
        let n: std::collections::BTreeMap<u32, SyscallRule> = native().into_iter().collect();
        assert_eq!(n[&165].guards, GUARD_MOUNT | CAPS, "mount is 165");
        assert_eq!(n[&105].check, SC_UIDS_TO_ROOT, "setuid is 105");
        assert_eq!(n[&101].check, SC_PTRACE, "ptrace is 101");
        assert!(!n.contains_key(&110), "getppid (110) is not guarded");
        assert!(!n.contains_key(&39), "getpid is not guarded");
        let c: std::collections::BTreeMap<u32, SyscallRule> = compat().into_iter().collect();
        assert_eq!(c[&21].guards, GUARD_MOUNT | CAPS, "i386 mount is 21");
        assert_eq!(c[&213].check, SC_UIDS_TO_ROOT, "i386 setuid32 is 213");
    }
}
