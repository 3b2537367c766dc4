//! Probe commands that try the ways around a guard an attacker would: arguments in memory a
//! program at syscall entry cannot read, the i386 ABI, io_uring, and descriptors of a
//! killed call kept alive by another process. Each prints one word (`ok`, `eperm`,
//! `errno:N`, `leaked`, ...) like the other guard commands.

use std::{
    io::Write,
    time::{Duration, Instant},
};

const CLONE_FILES: u64 = 0x400;
const CLONE_NEWUSER: u64 = 0x1000_0000;
const ETH_P_ALL_BE: i32 = (libc::ETH_P_ALL as u16).to_be() as i32;
/// Obsolete packet socket type: `socket(AF_INET, SOCK_PACKET, ...)` is a packet socket.
const SOCK_PACKET: i32 = 10;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn word(r: i64) -> String {
    if r >= 0 {
        return "ok".into();
    }
    match errno() {
        libc::EPERM => "eperm".into(),
        libc::EACCES => "eacces".into(),
        n => format!("errno:{n}"),
    }
}

fn print(w: &str) -> i32 {
    println!("{w}");
    let _ = std::io::stdout().flush();
    match w {
        "ok" => 0,
        "eperm" => 2,
        "eacces" => 5,
        _ => 4,
    }
}

/// A fresh page holding `bytes`; with `low`, below 4 GiB (for the i386 ABI's 32-bit
/// pointers). With `paged_out`, shared memory whose page table entries were dropped: the
/// data stays (shmem keeps the page), but the first access must fault it in again, which a
/// BPF program at syscall entry cannot do.
fn page_with(bytes: &[u8], low: bool, paged_out: bool) -> *mut u8 {
    let len = 4096;
    let mut flags = libc::MAP_ANONYMOUS;
    flags |= if paged_out {
        libc::MAP_SHARED
    } else {
        libc::MAP_PRIVATE
    };
    if low {
        flags |= libc::MAP_32BIT;
    }
    // SAFETY: a fresh anonymous mapping; nothing else refers to it.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            -1,
            0,
        )
    };
    assert!(
        p != libc::MAP_FAILED,
        "mmap: {}",
        std::io::Error::last_os_error()
    );
    let p = p as *mut u8;
    // SAFETY: `bytes` fits in the mapping just made.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len());
        if paged_out {
            libc::madvise(p.cast(), len, libc::MADV_DONTNEED);
        }
    }
    p
}

/// A 32-bit syscall through `int 0x80` (x86-64 with IA-32 emulation). Returns the raw
/// result (negative errno on failure).
#[cfg(target_arch = "x86_64")]
fn int80(nr: u32, a: u32, b: u32, c: u32) -> i32 {
    let ret: i32;
    // SAFETY: `int 0x80` reads eax/ebx/ecx/edx and writes eax. rbx is reserved by LLVM, so
    // the first argument goes through a scratch register swapped in and out around it.
    unsafe {
        core::arch::asm!(
            "xchg {a:r}, rbx",
            "int 0x80",
            "xchg {a:r}, rbx",
            a = inout(reg) a as u64 => _,
            inlateout("eax") nr => ret,
            in("ecx") b,
            in("edx") c,
        );
    }
    ret
}

#[cfg(not(target_arch = "x86_64"))]
fn int80(_: u32, _: u32, _: u32, _: u32) -> i32 {
    -libc::ENOSYS
}

fn word32(r: i32) -> String {
    match -r {
        n if r >= 0 || n == 0 => "ok".into(),
        libc::EPERM => "eperm".into(),
        n => format!("errno:{n}"),
    }
}

/// `clone_args` of clone3(2), version 0 (64 bytes).
fn clone_args(flags: u64) -> [u8; 64] {
    let mut a = [0u8; 64];
    a[..8].copy_from_slice(&flags.to_ne_bytes());
    a[32..40].copy_from_slice(&(libc::SIGCHLD as u64).to_ne_bytes());
    a
}

/// Wait for child `pid`; "ok" if it exited 0.
fn reap(pid: i64) -> String {
    let mut st = 0;
    // SAFETY: our own child.
    unsafe { libc::waitpid(pid as libc::pid_t, &mut st, 0) };
    if libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0 {
        "ok".into()
    } else {
        format!("child:{st}")
    }
}

/// Is `fd` a packet socket?
fn is_packet_socket(fd: i32) -> bool {
    let mut dom: i32 = 0;
    let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: valid out pointers of the sizes passed.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_DOMAIN,
            (&mut dom as *mut i32).cast(),
            &mut len,
        )
    };
    r == 0 && dom == libc::AF_PACKET
}

/// Run one command; `None` if `args[0]` is not one of them.
pub fn dispatch(args: &[String]) -> Option<i32> {
    let a1 = args.get(1).map(String::as_str).unwrap_or("");
    let paged = args.iter().any(|a| a == "--paged-out");
    let w = match args[0].as_str() {
        // setgid(GID): the gid twin of `setuid`.
        "setgid" => {
            let gid: u32 = a1.parse().unwrap_or(0);
            // SAFETY: plain syscall.
            word(unsafe { libc::setgid(gid) } as i64)
        }
        // The i386 ABI's 16-bit setuid/setgid (23, 46): the kernel keeps the low 16 bits.
        "compat-setuid16" | "compat-setgid16" => {
            let nr = if args[0] == "compat-setuid16" { 23 } else { 46 };
            word32(int80(nr, a1.parse().unwrap_or(0), 0, 0))
        }
        // i386 socketcall(SYS_SOCKET, {family, type, protocol}).
        "compat-socket" => {
            let (fam, ty, proto) = match a1 {
                "packet" => (libc::AF_PACKET, libc::SOCK_RAW, ETH_P_ALL_BE),
                "packet-inet" => (libc::AF_INET, SOCK_PACKET, ETH_P_ALL_BE),
                _ => (libc::AF_INET, libc::SOCK_STREAM, 0),
            };
            let mut bytes = [0u8; 12];
            bytes[..4].copy_from_slice(&(fam as u32).to_ne_bytes());
            bytes[4..8].copy_from_slice(&(ty as u32).to_ne_bytes());
            bytes[8..].copy_from_slice(&(proto as u32).to_ne_bytes());
            let p = page_with(&bytes, true, paged);
            let r = int80(102, 1, p as u64 as u32, 0);
            if r >= 0 {
                // SAFETY: our own descriptor.
                unsafe { libc::close(r) };
            }
            word32(r)
        }
        // clone3 with `user` (CLONE_NEWUSER) or `files` (CLONE_FILES, a new process
        // sharing the descriptor table); the child exits at once.
        "clone3" => {
            let flags = if a1 == "user" {
                CLONE_NEWUSER
            } else {
                CLONE_FILES
            };
            let bytes = clone_args(flags);
            let p = page_with(&bytes, false, paged);
            let _ = std::io::stdout().flush();
            // SAFETY: a valid clone_args of the size passed; no CLONE_VM, so the child runs
            // on a copy of this address space, like fork, and exits at once.
            let r = unsafe { libc::syscall(libc::SYS_clone3, p, 64usize) };
            if r == 0 {
                // SAFETY: leaving the child.
                unsafe { libc::_exit(0) };
            }
            if r < 0 { word(r) } else { reap(r) }
        }
        // A process sharing this one's descriptor table (clone with CLONE_FILES, no
        // CLONE_THREAD) watches for a packet socket while this one creates one: prints
        // `leaked` if the sibling got to use it, `ok` if this process survived creating it
        // and the sibling saw it (nothing guarded).
        "files-sibling-packet" => files_sibling_packet(),
        // Another process of the pod copies the packet socket out of this one with
        // pidfd_getfd(2) while it is being created: `leaked` if that worked.
        "pidfd-getfd-packet" => pidfd_getfd_packet(),
        // A thread (clone3 with CLONE_THREAD and CLONE_FILES, as the C library makes them).
        "threads" => match std::thread::spawn(|| 7).join() {
            Ok(7) => "ok".into(),
            r => format!("thread:{r:?}"),
        },
        // io_uring's IORING_OP_SOCKET: `ok`, `eperm` (the LSM refused it), `setup:...`.
        "uring-socket" => uring_socket(a1),
        _ => return None,
    };
    Some(print(&w))
}

/// Children report on a pipe the parent holds open; a killed parent leaves the report to
/// the child, which prints it itself.
fn files_sibling_packet() -> String {
    let _ = std::io::stdout().flush();
    // SAFETY: fork-like clone (no CLONE_VM): the child runs on a copy of this single-
    // threaded address space, sharing only the descriptor table.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            CLONE_FILES | libc::SIGCHLD as u64,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        return word(pid);
    }
    if pid == 0 {
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            for fd in 3..64 {
                if is_packet_socket(fd) {
                    // Use it: the sibling holds a working packet socket.
                    println!("leaked");
                    let _ = std::io::stdout().flush();
                    // SAFETY: leaving the child.
                    unsafe { libc::_exit(0) };
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        // SAFETY: leaving the child.
        unsafe { libc::_exit(1) };
    }
    std::thread::sleep(Duration::from_millis(50));
    // SAFETY: plain syscall.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, ETH_P_ALL_BE) };
    if fd < 0 {
        let w = word(fd as i64);
        reap(pid);
        return w;
    }
    let mut st = 0;
    // SAFETY: our own child.
    unsafe { libc::waitpid(pid as libc::pid_t, &mut st, 0) };
    "ok".into()
}

fn pidfd_getfd_packet() -> String {
    // The next descriptor this process gets: the lowest free one.
    // SAFETY: plain syscalls.
    let next = unsafe { libc::dup(0) };
    // SAFETY: our own descriptor.
    unsafe { libc::close(next) };
    let parent = std::process::id() as i32;
    let _ = std::io::stdout().flush();
    // SAFETY: fork of this single-threaded process.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: plain syscall.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, parent, 0) } as i32;
        if pidfd < 0 {
            // SAFETY: leaving the child.
            unsafe { libc::_exit(2) };
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            // SAFETY: plain syscall.
            let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd, next, 0) } as i32;
            if fd >= 0 && is_packet_socket(fd) {
                println!("leaked");
                let _ = std::io::stdout().flush();
                // SAFETY: leaving the child.
                unsafe { libc::_exit(0) };
            }
            if fd >= 0 {
                // SAFETY: our own descriptor.
                unsafe { libc::close(fd) };
            }
            if fd < 0 && errno() == libc::ESRCH {
                break;
            }
        }
        // SAFETY: leaving the child.
        unsafe { libc::_exit(1) };
    }
    std::thread::sleep(Duration::from_millis(50));
    // SAFETY: plain syscall.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, ETH_P_ALL_BE) };
    let w = word(fd as i64);
    let mut st = 0;
    // SAFETY: our own child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    w
}

fn uring_socket(kind: &str) -> String {
    use io_uring::{IoUring, opcode};
    let (fam, ty, proto) = match kind {
        "packet" => (libc::AF_PACKET, libc::SOCK_RAW, ETH_P_ALL_BE),
        "raw4" => (libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP),
        _ => (libc::AF_INET, libc::SOCK_STREAM, 0),
    };
    let mut ring = match IoUring::new(4) {
        Ok(r) => r,
        Err(e) => return format!("setup:{}", e.raw_os_error().unwrap_or(0)),
    };
    let sqe = opcode::Socket::new(fam, ty, proto).build();
    // SAFETY: the entry refers to no user memory.
    if unsafe { ring.submission().push(&sqe) }.is_err() {
        return "sq-full".into();
    }
    if let Err(e) = ring.submit_and_wait(1) {
        return format!("enter:{}", e.raw_os_error().unwrap_or(0));
    }
    let Some(cqe) = ring.completion().next() else {
        return "no-cqe".into();
    };
    let r = cqe.result();
    if r >= 0 {
        // SAFETY: the socket io_uring made for us.
        unsafe { libc::close(r) };
        "ok".into()
    } else if -r == libc::EPERM {
        "eperm".into()
    } else {
        format!("errno:{}", -r)
    }
}
