//! The operations of the agent's start-up self-test (`agent::selftest`): for each guard, one
//! harmless operation that the guard must deny. The agent runs each in a child process of
//! its own binary (`enforcer self-test-op <op>`, hidden) placed in a throwaway cgroup where
//! only that guard is enforced.
//!
//! Every operation is harmless when it is *not* denied (that is what the self-test exists to
//! find out): it acts in a private namespace, on a descriptor closed at once, on a helper
//! process of the agent's own, or writes back a value unchanged.

use enforcer_common::*;

/// Exit codes of `self-test-op`.
pub const OP_SUCCEEDED: i32 = 0;
pub const OP_DENIED: i32 = 2;
/// The operation failed for another reason (errno on stderr): not exercised.
pub const OP_OTHER: i32 = 3;

/// The guards the self-test exercises and the operation for each (modifiers are tested
/// with the guard they modify: `root-exec` is the exec of the operation itself).
pub const OPS: &[(u32, &str)] = &[
    (GUARD_ROOT_ESCALATION, "setuid-root"),
    (GUARD_DANGEROUS_CAPABILITIES, "unshare-uts"),
    (GUARD_MOUNT, "mount-private"),
    (GUARD_KERNEL_MODULES, "init-module"),
    (GUARD_PTRACE, "ptrace-seize"),
    (GUARD_BPF, "bpf-map"),
    (GUARD_RAW_SOCKETS, "raw-socket"),
    (GUARD_PACKET_SOCKETS, "packet-socket"),
    (GUARD_HOST_DEVICES, "open-kmsg"),
    (GUARD_SYSCTL_WRITE, "sysctl-same"),
    (GUARD_ROOT_EXEC, "noop"),
];

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Exit code for a syscall result (`r < 0`: failed with errno).
fn code(r: i64, what: &str) -> i32 {
    if r >= 0 {
        return OP_SUCCEEDED;
    }
    let e = errno();
    if e == libc::EPERM || e == libc::EACCES {
        OP_DENIED
    } else {
        eprintln!("{what}: errno {e}");
        OP_OTHER
    }
}

/// Is capability `cap` in this process's effective set (`/proc/self/status` CapEff)?
/// Unknown counts as yes (the careful answer for the callers).
fn has_effective_cap(cap: u32) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_none_or(|eff| eff & (1u64 << cap) != 0)
}

/// Run operation `op` (`arg`: the pid of the ptrace target); returns the exit code.
pub fn run_op(op: &str, arg: Option<&str>) -> i32 {
    match op {
        "noop" => OP_SUCCEEDED,
        // SAFETY: plain syscalls with valid arguments; descriptors made here are closed.
        "setuid-root" => unsafe {
            // A non-root task that kept saved uid 0 asks for uid 0 again.
            if libc::setresgid(1000, 1000, 0) != 0 || libc::setresuid(1000, 1000, 0) != 0 {
                return code(-1, "dropping to uid 1000");
            }
            code(libc::setuid(0) as i64, "setuid(0)")
        },
        // SAFETY: plain syscalls with valid arguments; descriptors made here are closed.
        "unshare-uts" => unsafe { code(libc::unshare(libc::CLONE_NEWUTS) as i64, "unshare") },
        // SAFETY: plain syscalls with valid arguments; descriptors made here are closed.
        "mount-private" => unsafe {
            // In a mount namespace of its own: a propagation change of "/" is a mount(2).
            // Without CAP_SYS_ADMIN (the DaemonSet) there is no private namespace, and the
            // same call in the container's own namespace is harmless: the guard sees it
            // first (the LSM hook and the syscall-entry program run before the kernel's
            // may_mount() check), and the kernel refuses it without the capability.
            // With CAP_SYS_ADMIN, only ever in a private namespace.
            if libc::unshare(libc::CLONE_NEWNS) != 0
                && (errno() != libc::EPERM || has_effective_cap(21))
            {
                return code(-1, "unshare(CLONE_NEWNS)");
            }
            let r = libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            );
            code(r as i64, "mount")
        },
        // SAFETY: plain syscalls with valid arguments; descriptors made here are closed.
        "init-module" => unsafe {
            // 64 zero bytes: not an ELF image, refused by the loader if it gets that far.
            let image = [0u8; 64];
            let r = libc::syscall(
                libc::SYS_init_module,
                image.as_ptr(),
                image.len(),
                c"".as_ptr(),
            );
            if r < 0 && errno() == libc::ENOEXEC {
                eprintln!("init_module: reached the module loader (ENOEXEC)");
                return OP_SUCCEEDED;
            }
            code(r, "init_module")
        },
        // SAFETY: plain syscalls with valid arguments; descriptors made here are closed.
        "ptrace-seize" => unsafe {
            let pid: libc::pid_t = arg.and_then(|a| a.parse().ok()).unwrap_or(0);
            if pid <= 0 {
                eprintln!("ptrace-seize: no target pid");
                return OP_OTHER;
            }
            let r = libc::ptrace(libc::PTRACE_SEIZE, pid, 0, 0);
            if r == 0 {
                libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0);
            }
            code(r as i64, "ptrace(PTRACE_SEIZE)")
        },
        // SAFETY: plain syscalls with valid arguments; descriptors made here are closed.
        "bpf-map" => unsafe {
            // BPF_MAP_CREATE of a one-entry array.
            let mut attr = [0u32; 30];
            attr[0] = 2; // BPF_MAP_TYPE_ARRAY
            attr[1] = 4; // key size
            attr[2] = 4; // value size
            attr[3] = 1; // max entries
            let fd = libc::syscall(
                libc::SYS_bpf,
                0,
                attr.as_ptr(),
                std::mem::size_of_val(&attr),
            );
            if fd >= 0 {
                libc::close(fd as i32);
            }
            code(fd, "bpf(BPF_MAP_CREATE)")
        },
        // SAFETY: plain syscalls with valid arguments; descriptors made here are closed.
        "raw-socket" | "packet-socket" => unsafe {
            let fd = if op == "raw-socket" {
                libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP)
            } else {
                libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0)
            };
            if fd >= 0 {
                libc::close(fd);
            }
            code(fd as i64, "socket")
        },
        // SAFETY: plain syscalls with valid arguments; descriptors made here are closed.
        "open-kmsg" => unsafe {
            let fd = libc::open(c"/dev/kmsg".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            if fd >= 0 {
                libc::close(fd);
            }
            code(fd as i64, "open /dev/kmsg")
        },
        "sysctl-same" => {
            let path = "/proc/sys/net/ipv4/ip_unprivileged_port_start";
            let Ok(v) = std::fs::read(path) else {
                return code(-1, path);
            };
            match std::fs::OpenOptions::new().write(true).open(path) {
                Ok(mut f) => match std::io::Write::write_all(&mut f, &v) {
                    Ok(()) => OP_SUCCEEDED,
                    Err(e) if e.raw_os_error() == Some(libc::EPERM) => OP_DENIED,
                    Err(e) => {
                        eprintln!("{path}: {e}");
                        OP_OTHER
                    }
                },
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => OP_DENIED,
                Err(e) => {
                    eprintln!("{path}: {e}");
                    OP_OTHER
                }
            }
        }
        "sleep" => {
            std::thread::sleep(std::time::Duration::from_secs(60));
            OP_SUCCEEDED
        }
        _ => {
            eprintln!("unknown self-test operation {op:?}");
            OP_OTHER
        }
    }
}
