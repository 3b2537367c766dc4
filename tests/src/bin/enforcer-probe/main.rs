//! enforcer-probe: the process tests place inside a pod's cgroup and network namespace to
//! make real connections and real syscalls.
//!
//! ```text
//! enforcer-probe serve [id=NAME] tcp:80 udp:81 dns:53 ...
//!                                                 listen (dual stack), print "ready"; TCP
//!                                                 answers "ok\nNAME\n", UDP echoes (and
//!                                                 answers "who" with NAME), dns answers
//!                                                 every A query with 192.0.2.53
//! enforcer-probe connect tcp|udp ADDR PORT [MS]   one connection; prints the outcome
//! enforcer-probe whoserves tcp|udp ADDR PORT [MS] which server answered, and the peer
//!                                                 address the socket API shows:
//!                                                 "NAME peer=ADDR:PORT"
//! enforcer-probe udp-connected ADDR PORT [MS]     connect()ed UDP ping; "ok" only if the
//!                                                 reply came and getpeername shows ADDR
//! enforcer-probe dns SERVER NAME [MS]             one A query over UDP; prints the address
//! enforcer-probe spoof-udp SRC DST PORT           one UDP datagram with a forged source
//!                                                 address, from a raw socket (IPv4/IPv6)
//! enforcer-probe recv-once PORT MS                wait for one UDP datagram on PORT (dual
//!                                                 stack): "got FROM" or "timeout"
//! enforcer-probe matrix MS tcp|udp,ADDR,PORT ...  many connections in parallel, one line each
//! enforcer-probe socket packet|packet-inet|raw4|raw6|tcp   create a socket
//! ```
//!
//! Runtime guard operations (module `guard_cmds`; each prints its outcome word):
//!
//! ```text
//! as-user UID[:SUID] CMD...   drop to UID (keeping saved uid SUID) in-process, then run CMD
//! whoami                      print "uid=U euid=E suid=S capprm=HEX"
//! setuid UID                  setuid(UID), then whoami
//! exec PATH ARGS...           execv (prints the outcome only if it fails)
//! mount-tmpfs DIR             mount a tmpfs on DIR and unmount it again
//! unshare mnt|uts|net|user    unshare(2) one namespace
//! sethostname-same            set the current hostname again (CAP_SYS_ADMIN, no change)
//! open-by-handle PATH         name_to_handle_at + open_by_handle_at (CAP_DAC_READ_SEARCH)
//! rcvbuf-force                setsockopt(SO_RCVBUFFORCE) on a UDP socket (CAP_NET_ADMIN)
//! init-module                 init_module() with a bogus 64-byte image
//! request-module FAMILY       socket(FAMILY, SOCK_DGRAM, 0): makes the kernel autoload a module
//! ptrace-child                fork a child and PTRACE_ATTACH to it
//! ptrace PID                  PTRACE_ATTACH to PID (and detach)
//! ptrace-traceme              fork a child that calls PTRACE_TRACEME
//! ptrace-in-pidns             in a new PID namespace, ptrace-child (needs CAP_SYS_ADMIN)
//! bpf-map                     bpf(BPF_MAP_CREATE) of a tiny array
//! perf-open                   perf_event_open of a software counter on itself
//! open PATH [r|w]             open(2)
//! write-file PATH VALUE       open O_WRONLY and write VALUE (sysctls)
//! sleep MS                    print "ready PID", sleep (a target for ptrace)
//! bench-syscalls N            N getppid(), getpid(), failing open(); print ns per call
//! bench-spawn N PATH ARGS...  N fork+exec+wait of PATH; print us per spawn
//! bench-fork N                N fork+_exit+wait; print us per fork
//! ```
//!
//! Composing them (how a container runtime enters a pod; CMD is another of these
//! commands, run in-process by the task that entered, before any exec):
//!
//! ```text
//! clone-into-cgroup DIR CMD...      clone3(CLONE_INTO_CGROUP) a child into the cgroup DIR;
//!                                   the child runs CMD; then print "child exit:N" or
//!                                   "child signal:N" (runc >= 1.4 `runc exec`)
//! migrate-into-cgroup DIR CMD...    fork a child, write its pid into DIR/cgroup.procs
//!                                   from this (the parent) process, then the child runs
//!                                   CMD; report as above (runc < 1.4)
//! migrate-into-cgroup DIR --self CMD...  the same, but the child writes "0" itself
//! in-child CMD...                   fork; the child runs CMD; report as above
//! comm NAME CMD...                  set this process's name (PR_SET_NAME), then run CMD
//! then CMD... -- PATH ARGS...       run CMD, then execv PATH ARGS (whatever CMD printed)
//! fexec-self [--unshare-mnt] ARGS... re-exec this probe from a memfd copy with fexecve (as
//!                                   runc < 1.2 starts `runc init`), running ARGS;
//!                                   --unshare-mnt: from a new mount namespace
//! ```
//!
//! Outcome words: ok 0, eperm 2 (EPERM), eacces 5, other errors `errno:N` 4.
//!
//! Outcomes (word printed, and exit code for single probes): ok 0, timeout 1, eperm 2,
//! refused 3, error 4.

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    process::exit,
    time::Duration,
};

fn outcome_of(e: &std::io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => "eperm",
        Some(libc::ECONNREFUSED) => "refused",
        _ => match e.kind() {
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => "timeout",
            _ => "error",
        },
    }
}

fn code(outcome: &str) -> i32 {
    match outcome {
        "ok" => 0,
        "timeout" => 1,
        "eperm" => 2,
        "refused" => 3,
        _ => 4,
    }
}

fn connect(proto: &str, addr: IpAddr, port: u16, timeout: Duration) -> &'static str {
    let sa = SocketAddr::new(addr, port);
    match proto {
        "tcp" => {
            let mut s = match TcpStream::connect_timeout(&sa, timeout) {
                Ok(s) => s,
                Err(e) => return outcome_of(&e),
            };
            let _ = s.set_read_timeout(Some(timeout));
            let mut buf = [0u8; 3];
            match s.read_exact(&mut buf) {
                Ok(()) if &buf == b"ok\n" => "ok",
                Ok(()) => "error",
                Err(e) => outcome_of(&e),
            }
        }
        "udp" => {
            let bind: SocketAddr = if addr.is_ipv4() {
                "0.0.0.0:0".parse().unwrap()
            } else {
                "[::]:0".parse().unwrap()
            };
            let s = match UdpSocket::bind(bind) {
                Ok(s) => s,
                Err(e) => return outcome_of(&e),
            };
            let _ = s.set_read_timeout(Some(timeout));
            if let Err(e) = s.send_to(b"ping", sa) {
                return outcome_of(&e);
            }
            let mut buf = [0u8; 16];
            match s.recv_from(&mut buf) {
                Ok((n, from)) if &buf[..n] == b"ping" && from == sa => "ok",
                Ok(_) => "error",
                Err(e) => outcome_of(&e),
            }
        }
        "sctp" => match sctp::connect(sa, timeout) {
            Ok(mut s) => {
                let _ = s.set_read_timeout(Some(timeout));
                let mut buf = [0u8; 3];
                match s.read_exact(&mut buf) {
                    Ok(()) if &buf == b"ok\n" => "ok",
                    Ok(()) => "error",
                    Err(e) => outcome_of(&e),
                }
            }
            Err(e) => outcome_of(&e),
        },
        _ => "error",
    }
}

/// SCTP one-to-one (SOCK_STREAM) sockets through libc: std has no SCTP, but such a socket
/// reads and writes like a TCP stream, so it is wrapped as one once connected.
mod sctp {
    use std::{
        io,
        net::{SocketAddr, TcpListener, TcpStream},
        os::fd::FromRawFd,
        time::Duration,
    };

    fn sockaddr(sa: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
        // SAFETY: zeroed storage is a valid sockaddr_storage.
        let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let len = match sa {
            SocketAddr::V4(a) => {
                // SAFETY: sockaddr_storage is large enough and suitably aligned.
                let sin = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in) };
                sin.sin_family = libc::AF_INET as u16;
                sin.sin_port = a.port().to_be();
                sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
                size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(a) => {
                // SAFETY: as above.
                let sin6 = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in6) };
                sin6.sin6_family = libc::AF_INET6 as u16;
                sin6.sin6_port = a.port().to_be();
                sin6.sin6_addr.s6_addr = a.ip().octets();
                size_of::<libc::sockaddr_in6>()
            }
        };
        (ss, len as libc::socklen_t)
    }

    fn socket(v6: bool) -> io::Result<i32> {
        let fam = if v6 { libc::AF_INET6 } else { libc::AF_INET };
        // SAFETY: plain syscall.
        let fd = unsafe {
            libc::socket(
                fam,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                libc::IPPROTO_SCTP,
            )
        };
        if fd < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(fd)
        }
    }

    /// Connect with a timeout (non-blocking connect, then poll).
    pub fn connect(sa: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
        let fd = socket(sa.is_ipv6())?;
        // SAFETY: fd is ours; the stream owns it from here (closed on error paths too).
        let stream = unsafe { TcpStream::from_raw_fd(fd) };
        stream.set_nonblocking(true)?;
        let (ss, len) = sockaddr(sa);
        // SAFETY: valid address of the given length.
        let r = unsafe { libc::connect(fd, &ss as *const _ as *const libc::sockaddr, len) };
        if r != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINPROGRESS) {
                return Err(e);
            }
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLOUT,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) };
            if n == 0 {
                return Err(io::ErrorKind::TimedOut.into());
            }
            if let Some(e) = stream.take_error()? {
                return Err(e);
            }
        }
        stream.set_nonblocking(false)?;
        Ok(stream)
    }

    /// A dual-stack SCTP listener on `port`.
    pub fn listen(port: u16) -> io::Result<TcpListener> {
        let fd = socket(true)?;
        // SAFETY: fd is ours; the listener owns it.
        let l = unsafe { TcpListener::from_raw_fd(fd) };
        let one: libc::c_int = 1;
        // SAFETY: valid option pointer and length.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_REUSEADDR,
                &one as *const _ as *const _,
                4,
            );
        }
        let (ss, len) = sockaddr(SocketAddr::new(
            std::net::Ipv6Addr::UNSPECIFIED.into(),
            port,
        ));
        // SAFETY: valid address; plain syscalls.
        unsafe {
            if libc::bind(fd, &ss as *const _ as *const libc::sockaddr, len) != 0
                || libc::listen(fd, 64) != 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(l)
    }
}

fn serve(specs: &[String]) -> ! {
    let mut handles = Vec::new();
    let id: &'static str = specs
        .iter()
        .find_map(|s| s.strip_prefix("id="))
        .map(|s| &*Box::leak(s.to_string().into_boxed_str()))
        .unwrap_or("");
    for spec in specs.iter().filter(|s| !s.starts_with("id=")) {
        let (proto, port) = spec.split_once(':').unwrap_or_else(|| usage());
        let port: u16 = port.parse().unwrap_or_else(|_| usage());
        let addr: SocketAddr = format!("[::]:{port}").parse().unwrap();
        match proto {
            "tcp" => {
                let l = TcpListener::bind(addr)
                    .unwrap_or_else(|e| fail(&format!("bind tcp {port}: {e}")));
                handles.push(std::thread::spawn(move || {
                    for s in l.incoming().flatten() {
                        let mut s = s;
                        let _ = s.write_all(format!("ok\n{id}\n").as_bytes());
                    }
                }));
            }
            "dns" => {
                let s = UdpSocket::bind(addr)
                    .unwrap_or_else(|e| fail(&format!("bind udp {port}: {e}")));
                handles.push(std::thread::spawn(move || {
                    let mut buf = [0u8; 512];
                    while let Ok((n, from)) = s.recv_from(&mut buf) {
                        if let Some(reply) = dns::answer(&buf[..n], [192, 0, 2, 53]) {
                            let _ = s.send_to(&reply, from);
                        }
                    }
                }));
            }
            "sctp" => {
                let l =
                    sctp::listen(port).unwrap_or_else(|e| fail(&format!("bind sctp {port}: {e}")));
                handles.push(std::thread::spawn(move || {
                    for s in l.incoming().flatten() {
                        let mut s = s;
                        let _ = s.write_all(b"ok\n");
                    }
                }));
            }
            "udp" => {
                let s = UdpSocket::bind(addr)
                    .unwrap_or_else(|e| fail(&format!("bind udp {port}: {e}")));
                handles.push(std::thread::spawn(move || {
                    let mut buf = [0u8; 64];
                    while let Ok((n, from)) = s.recv_from(&mut buf) {
                        if &buf[..n] == b"who" {
                            let _ = s.send_to(id.as_bytes(), from);
                        } else {
                            let _ = s.send_to(&buf[..n], from);
                        }
                    }
                }));
            }
            _ => usage(),
        }
    }
    println!("ready");
    let _ = std::io::stdout().flush();
    for h in handles {
        let _ = h.join();
    }
    exit(0)
}

fn socket(kind: &str) -> &'static str {
    let (fam, ty, proto) = match kind {
        "packet" => (
            libc::AF_PACKET,
            libc::SOCK_RAW,
            (libc::ETH_P_ALL as u16).to_be() as i32,
        ),
        "packet-inet" => (
            libc::AF_INET,
            10, // SOCK_PACKET: obsolete, the kernel makes it an AF_PACKET socket
            (libc::ETH_P_ALL as u16).to_be() as i32,
        ),
        "raw4" => (libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP),
        "raw6" => (libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_ICMPV6),
        "tcp" => (libc::AF_INET, libc::SOCK_STREAM, 0),
        _ => usage(),
    };
    // SAFETY: plain syscall.
    let fd = unsafe { libc::socket(fam, ty, proto) };
    if fd < 0 {
        return outcome_of(&std::io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket().
    unsafe { libc::close(fd) };
    "ok"
}

fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_string()))
}

/// Which server answers at ADDR:PORT, and the peer address the socket API reports.
fn whoserves(proto: &str, sa: SocketAddr, timeout: Duration) -> Result<String, &'static str> {
    match proto {
        "tcp" => {
            let mut s = TcpStream::connect_timeout(&sa, timeout).map_err(|e| outcome_of(&e))?;
            let _ = s.set_read_timeout(Some(timeout));
            let mut text = String::new();
            s.read_to_string(&mut text).map_err(|e| outcome_of(&e))?;
            let peer = s.peer_addr().map_err(|e| outcome_of(&e))?;
            let name = text.lines().nth(1).unwrap_or("");
            Ok(format!("{name} peer={peer}"))
        }
        "udp" => {
            let bind: SocketAddr = if sa.is_ipv4() {
                "0.0.0.0:0".parse().unwrap()
            } else {
                "[::]:0".parse().unwrap()
            };
            let s = UdpSocket::bind(bind).map_err(|e| outcome_of(&e))?;
            let _ = s.set_read_timeout(Some(timeout));
            s.send_to(b"who", sa).map_err(|e| outcome_of(&e))?;
            let mut buf = [0u8; 64];
            let (n, from) = s.recv_from(&mut buf).map_err(|e| outcome_of(&e))?;
            Ok(format!(
                "{} peer={from}",
                String::from_utf8_lossy(&buf[..n])
            ))
        }
        _ => usage(),
    }
}

/// A connected UDP socket: send, receive, and check what getpeername says.
fn udp_connected(sa: SocketAddr, timeout: Duration) -> &'static str {
    let bind: SocketAddr = if sa.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    let s = match UdpSocket::bind(bind) {
        Ok(s) => s,
        Err(e) => return outcome_of(&e),
    };
    let _ = s.set_read_timeout(Some(timeout));
    if let Err(e) = s.connect(sa) {
        return outcome_of(&e);
    }
    if let Err(e) = s.send(b"ping") {
        return outcome_of(&e);
    }
    let mut buf = [0u8; 16];
    match s.recv(&mut buf) {
        Ok(n) if &buf[..n] == b"ping" => match s.peer_addr() {
            Ok(p) if p == sa => "ok",
            _ => "error",
        },
        Ok(_) => "error",
        Err(e) => outcome_of(&e),
    }
}

/// One UDP datagram "spoof" from SRC (forged) to DST:PORT through a raw socket that
/// writes its own IP header.
fn spoof_udp(src: IpAddr, dst: IpAddr, port: u16) -> &'static str {
    let payload = b"spoof";
    let udp_len = 8 + payload.len();
    let mut udp = Vec::with_capacity(udp_len);
    udp.extend_from_slice(&40000u16.to_be_bytes());
    udp.extend_from_slice(&port.to_be_bytes());
    udp.extend_from_slice(&(udp_len as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    fn fold(mut sum: u32) -> u16 {
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }
    fn add(sum: &mut u32, b: &[u8]) {
        for c in b.chunks(2) {
            *sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
    }
    let (family, packet, sa) = match (src, dst) {
        (IpAddr::V4(s4), IpAddr::V4(d4)) => {
            let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
            ip[2..4].copy_from_slice(&((20 + udp_len) as u16).to_be_bytes());
            ip.extend_from_slice(&s4.octets());
            ip.extend_from_slice(&d4.octets());
            ip.extend_from_slice(&udp);
            // SAFETY: a zeroed sockaddr_in is valid; fields set below.
            let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            sin.sin_family = libc::AF_INET as u16;
            sin.sin_addr.s_addr = u32::from_ne_bytes(d4.octets());
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
            // SAFETY: copying the smaller struct into the larger one.
            unsafe { std::ptr::copy_nonoverlapping(&sin, (&mut ss as *mut _) as *mut _, 1) };
            (
                libc::AF_INET,
                ip,
                (ss, std::mem::size_of::<libc::sockaddr_in>()),
            )
        }
        (IpAddr::V6(s6), IpAddr::V6(d6)) => {
            let mut sum = 0u32;
            add(&mut sum, &s6.octets());
            add(&mut sum, &d6.octets());
            add(&mut sum, &(udp_len as u32).to_be_bytes());
            add(&mut sum, &[0, 0, 0, 17]);
            add(&mut sum, &udp);
            let ck = fold(sum);
            udp[6..8].copy_from_slice(&ck.to_be_bytes());
            let mut ip = vec![0x60, 0, 0, 0];
            ip.extend_from_slice(&(udp_len as u16).to_be_bytes());
            ip.extend_from_slice(&[17, 64]);
            ip.extend_from_slice(&s6.octets());
            ip.extend_from_slice(&d6.octets());
            ip.extend_from_slice(&udp);
            // SAFETY: as above.
            let mut sin6: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            sin6.sin6_family = libc::AF_INET6 as u16;
            sin6.sin6_addr.s6_addr = d6.octets();
            // SAFETY: as above.
            let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
            // SAFETY: as above.
            unsafe { std::ptr::copy_nonoverlapping(&sin6, (&mut ss as *mut _) as *mut _, 1) };
            (
                libc::AF_INET6,
                ip,
                (ss, std::mem::size_of::<libc::sockaddr_in6>()),
            )
        }
        _ => usage(),
    };
    // SAFETY: plain socket calls with valid buffers; the descriptor is closed below.
    unsafe {
        let fd = libc::socket(family, libc::SOCK_RAW, libc::IPPROTO_RAW);
        if fd < 0 {
            return outcome_of(&std::io::Error::last_os_error());
        }
        let r = libc::sendto(
            fd,
            packet.as_ptr() as *const _,
            packet.len(),
            0,
            (&sa.0 as *const libc::sockaddr_storage) as *const libc::sockaddr,
            sa.1 as libc::socklen_t,
        );
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if r < 0 {
            return outcome_of(&err);
        }
    }
    "ok"
}

/// Just enough DNS for tests: one A question, one A answer.
mod dns {
    /// A query for `name` with id 0x1234.
    pub fn query(name: &str) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.trim_end_matches('.').split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        q
    }

    /// The answer to a query: the question echoed, one A record with `addr`.
    pub fn answer(q: &[u8], addr: [u8; 4]) -> Option<Vec<u8>> {
        if q.len() < 17 {
            return None;
        }
        let mut end = 12;
        while end < q.len() && q[end] != 0 {
            end += q[end] as usize + 1;
        }
        let qend = end + 5;
        if qend > q.len() {
            return None;
        }
        let mut r = q[..qend].to_vec();
        r[2] = 0x81;
        r[3] = 0x80;
        r[6] = 0;
        r[7] = 1;
        r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4]);
        r.extend_from_slice(&addr);
        Some(r)
    }

    /// The A address of an answer, if it answers query id 0x1234.
    pub fn parse(r: &[u8]) -> Option<[u8; 4]> {
        if r.len() < 16 || r[0] != 0x12 || r[1] != 0x34 || r[7] == 0 {
            return None;
        }
        let a = &r[r.len() - 4..];
        Some([a[0], a[1], a[2], a[3]])
    }
}

fn usage() -> ! {
    eprintln!("usage: enforcer-probe serve|connect|matrix|socket ... (see source)");
    exit(64)
}

fn fail(msg: &str) -> ! {
    eprintln!("enforcer-probe: {msg}");
    exit(70)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else { usage() };
    if let Some(code) = guard_cmds::dispatch(&args).or_else(|| escape::dispatch(&args)) {
        exit(code)
    }
    match cmd.as_str() {
        "serve" => serve(&args[1..]),
        "connect" => {
            if args.len() < 4 {
                usage();
            }
            let addr: IpAddr = args[2].parse().unwrap_or_else(|_| usage());
            let port: u16 = args[3].parse().unwrap_or_else(|_| usage());
            let ms: u64 = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(1000);
            let o = connect(&args[1], addr, port, Duration::from_millis(ms));
            println!("{o}");
            exit(code(o))
        }
        "whoserves" => {
            if args.len() < 4 {
                usage();
            }
            let addr: IpAddr = args[2].parse().unwrap_or_else(|_| usage());
            let port: u16 = args[3].parse().unwrap_or_else(|_| usage());
            let ms: u64 = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(1000);
            match whoserves(
                &args[1],
                SocketAddr::new(addr, port),
                Duration::from_millis(ms),
            ) {
                Ok(line) => println!("{line}"),
                Err(o) => {
                    println!("{o}");
                    exit(code(o))
                }
            }
        }
        "spoof-udp" => {
            if args.len() < 4 {
                usage();
            }
            let src: IpAddr = args[1].parse().unwrap_or_else(|_| usage());
            let dst: IpAddr = args[2].parse().unwrap_or_else(|_| usage());
            let port: u16 = args[3].parse().unwrap_or_else(|_| usage());
            let o = spoof_udp(src, dst, port);
            println!("{o}");
            exit(code(o))
        }
        "recv-once" => {
            if args.len() < 3 {
                usage();
            }
            let port: u16 = args[1].parse().unwrap_or_else(|_| usage());
            let ms: u64 = args[2].parse().unwrap_or_else(|_| usage());
            let s = UdpSocket::bind(SocketAddr::new("::".parse().unwrap(), port))
                .unwrap_or_else(|e| fail(&format!("bind udp {port}: {e}")));
            let _ = s.set_read_timeout(Some(Duration::from_millis(ms)));
            println!("ready");
            let _ = std::io::stdout().flush();
            let mut buf = [0u8; 64];
            match s.recv_from(&mut buf) {
                Ok((_, from)) => println!("got {from}"),
                Err(e) => println!("{}", outcome_of(&e)),
            }
        }
        "udp-connected" => {
            if args.len() < 3 {
                usage();
            }
            let addr: IpAddr = args[1].parse().unwrap_or_else(|_| usage());
            let port: u16 = args[2].parse().unwrap_or_else(|_| usage());
            let ms: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1000);
            let o = udp_connected(SocketAddr::new(addr, port), Duration::from_millis(ms));
            println!("{o}");
            exit(code(o))
        }
        "dns" => {
            if args.len() < 3 {
                usage();
            }
            let server: IpAddr = args[1].parse().unwrap_or_else(|_| usage());
            let ms: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1000);
            let sa = SocketAddr::new(server, 53);
            let bind: SocketAddr = if server.is_ipv4() {
                "0.0.0.0:0".parse().unwrap()
            } else {
                "[::]:0".parse().unwrap()
            };
            let run = || -> Result<String, &'static str> {
                let s = UdpSocket::bind(bind).map_err(|e| outcome_of(&e))?;
                let _ = s.set_read_timeout(Some(Duration::from_millis(ms)));
                s.send_to(&dns::query(&args[2]), sa)
                    .map_err(|e| outcome_of(&e))?;
                let mut buf = [0u8; 512];
                let (n, from) = s.recv_from(&mut buf).map_err(|e| outcome_of(&e))?;
                // Resolvers drop answers from another address than the one they asked.
                if from != sa {
                    return Err("error");
                }
                let a = dns::parse(&buf[..n]).ok_or("error")?;
                Ok(std::net::Ipv4Addr::from(a).to_string())
            };
            match run() {
                Ok(a) => println!("{a}"),
                Err(o) => {
                    println!("{o}");
                    exit(code(o))
                }
            }
        }
        "matrix" => {
            let ms: u64 = args
                .get(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| usage());
            let targets: Vec<(String, IpAddr, u16)> = args[2..]
                .iter()
                .map(|t| {
                    let mut it = t.split(',');
                    let p = it.next().unwrap_or_else(|| usage()).to_string();
                    let a = it
                        .next()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or_else(|| usage());
                    let port = it
                        .next()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or_else(|| usage());
                    (p, a, port)
                })
                .collect();
            let results: Vec<&'static str> = std::thread::scope(|s| {
                let hs: Vec<_> = targets
                    .iter()
                    .map(|(p, a, port)| {
                        s.spawn(move || connect(p, *a, *port, Duration::from_millis(ms)))
                    })
                    .collect();
                hs.into_iter()
                    .map(|h| h.join().unwrap_or("error"))
                    .collect()
            });
            for ((p, a, port), r) in targets.iter().zip(results) {
                println!("{p},{a},{port} {r}");
            }
        }
        "http" => {
            // http ADDR:PORT PATH: a minimal HTTP/1.0 GET; prints the status, then the body.
            if args.len() < 3 {
                usage();
            }
            let addr: SocketAddr = args[1].parse().unwrap_or_else(|_| usage());
            match http_get(addr, &args[2]) {
                Ok((status, body)) => {
                    println!("{status}\n{body}");
                }
                Err(e) => {
                    println!("0\n{e}");
                    exit(1)
                }
            }
        }
        "socket" => {
            let o = socket(args.get(1).map(String::as_str).unwrap_or_else(|| usage()));
            println!("{o}");
            exit(code(o))
        }
        _ => usage(),
    }
}

/// Runtime guard operations: each one real syscall (or a short sequence) whose outcome
/// the guard tests judge.
mod escape;

mod guard_cmds {
    use std::{ffi::CString, io::Write, process::exit, time::Instant};

    fn word(errno: i32) -> String {
        match errno {
            0 => "ok".into(),
            libc::EPERM => "eperm".into(),
            libc::EACCES => "eacces".into(),
            n => format!("errno:{n}"),
        }
    }

    fn code(w: &str) -> i32 {
        match w {
            "ok" => 0,
            "eperm" => 2,
            "eacces" => 5,
            _ => 4,
        }
    }

    fn last_errno() -> i32 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }

    /// `r` is a syscall's return: negative means failure with errno.
    fn outcome(r: i64) -> String {
        if r < 0 {
            word(last_errno())
        } else {
            "ok".into()
        }
    }

    fn cstr(s: &str) -> CString {
        CString::new(s).expect("no NUL in argument")
    }

    fn print_word(w: &str) -> i32 {
        println!("{w}");
        let _ = std::io::stdout().flush();
        code(w)
    }

    fn whoami() -> String {
        let (mut r, mut e, mut s) = (0, 0, 0);
        // SAFETY: plain syscall with valid pointers.
        unsafe { libc::getresuid(&mut r, &mut e, &mut s) };
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let capprm = status
            .lines()
            .find_map(|l| l.strip_prefix("CapPrm:"))
            .map(|v| v.trim().to_string())
            .unwrap_or_default();
        format!("uid={r} euid={e} suid={s} capprm={capprm}")
    }

    fn as_user(spec: &str) -> Result<(), String> {
        let (uid, suid) = match spec.split_once(':') {
            Some((u, s)) => (u.parse::<u32>(), s.parse::<u32>()),
            None => (spec.parse::<u32>(), spec.parse::<u32>()),
        };
        let (Ok(uid), Ok(suid)) = (uid, suid) else {
            return Err(format!("bad uid spec {spec}"));
        };
        // The saved gid follows the saved uid: "1000:0" keeps group 0 as saved gid too
        // (a setuid-root, setgid-root program after dropping privileges).
        let sgid = suid;
        // SAFETY: plain syscalls.
        unsafe {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setresgid(uid, uid, sgid) != 0
                || libc::setresuid(uid, uid, suid) != 0
            {
                return Err(format!(
                    "dropping to {spec}: {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
        Ok(())
    }

    fn ptrace_attach(pid: libc::pid_t) -> String {
        // SAFETY: plain syscalls on a pid.
        unsafe {
            if libc::ptrace(libc::PTRACE_ATTACH, pid, 0, 0) != 0 {
                return word(last_errno());
            }
            let mut st = 0;
            libc::waitpid(pid, &mut st, libc::__WALL);
            libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0);
        }
        "ok".into()
    }

    /// Fork a child running `f`, and return once it is set up. The child dies with its
    /// parent (a killed probe must not leave a stopped tracee behind) and does not hold
    /// the probe's stdout/stderr (the test reads them to EOF).
    fn fork_child(f: impl FnOnce() -> i32) -> libc::pid_t {
        let null = cstr("/dev/null");
        let mut pipe = [0i32; 2];
        // SAFETY: the child only makes async-signal-safe syscalls, runs `f` (the same) and
        // _exits; the parent waits for one byte (or EOF) from it.
        unsafe {
            libc::pipe(pipe.as_mut_ptr());
            let pid = libc::fork();
            if pid == 0 {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                let fd = libc::open(null.as_ptr(), libc::O_RDWR);
                libc::dup2(fd, 1);
                libc::dup2(fd, 2);
                libc::close(pipe[0]);
                libc::write(pipe[1], b"r".as_ptr().cast(), 1);
                libc::close(pipe[1]);
                let c = f();
                libc::_exit(c);
            }
            libc::close(pipe[1]);
            let mut b = 0u8;
            libc::read(pipe[0], (&mut b as *mut u8).cast(), 1);
            libc::close(pipe[0]);
            pid
        }
    }

    fn bench_syscalls(n: u64) -> String {
        let t = Instant::now();
        for _ in 0..n {
            // SAFETY: no arguments.
            unsafe { libc::getppid() };
        }
        let getppid = t.elapsed().as_nanos() as f64 / n as f64;
        let t = Instant::now();
        for _ in 0..n {
            // SAFETY: no arguments (the raw syscall: glibc does not cache getpid any more,
            // but be explicit).
            unsafe { libc::syscall(libc::SYS_getpid) };
        }
        let getpid = t.elapsed().as_nanos() as f64 / n as f64;
        let path = cstr("/nonexistent/enforcer-bench");
        let t = Instant::now();
        for _ in 0..n {
            // SAFETY: valid C string; the call fails with ENOENT.
            unsafe { libc::open(path.as_ptr(), libc::O_RDONLY) };
        }
        let open = t.elapsed().as_nanos() as f64 / n as f64;
        format!("getppid_ns={getppid:.1} getpid_ns={getpid:.1} open_fail_ns={open:.1}")
    }

    fn bench_fork(n: u64) -> String {
        let t = Instant::now();
        for _ in 0..n {
            // SAFETY: the child only _exits; the parent reaps it.
            unsafe {
                let pid = libc::fork();
                if pid == 0 {
                    libc::_exit(0);
                }
                if pid < 0 {
                    return format!("fork failed: {}", std::io::Error::last_os_error());
                }
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
        let us = t.elapsed().as_micros() as f64 / n as f64;
        format!("fork_us={us:.2}")
    }

    /// Wait for `pid` and print how it ended: "child exit:N" or "child signal:N".
    fn report_child(pid: libc::pid_t) -> i32 {
        let mut st = 0;
        // SAFETY: our own child.
        unsafe { libc::waitpid(pid, &mut st, 0) };
        if libc::WIFSIGNALED(st) {
            println!("child signal:{}", libc::WTERMSIG(st));
        } else {
            println!("child exit:{}", libc::WEXITSTATUS(st));
        }
        let _ = std::io::stdout().flush();
        0
    }

    /// In a child: run the probe command `cmd` in-process (one of these, or `socket`)
    /// and exit with its code.
    fn run_and_exit(cmd: &[String]) -> ! {
        let code = if cmd.is_empty() {
            0
        } else {
            dispatch(cmd)
                .or_else(|| super::escape::dispatch(cmd))
                .or_else(|| match (cmd[0].as_str(), cmd.get(1)) {
                    ("socket", Some(kind)) => Some(print_word(super::socket(kind))),
                    _ => None,
                })
                .unwrap_or_else(|| {
                    eprintln!("enforcer-probe: unknown command {:?}", cmd[0]);
                    64
                })
        };
        let _ = std::io::stdout().flush();
        exit(code)
    }

    /// `struct clone_args` (clone3(2), CLONE_ARGS_SIZE_VER2).
    #[repr(C)]
    #[derive(Default)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
        set_tid: u64,
        set_tid_size: u64,
        cgroup: u64,
    }

    const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

    /// clone3(CLONE_INTO_CGROUP) into the cgroup directory `dir`: the child starts life
    /// in that cgroup (as runc >= 1.4 starts `runc init` for `runc exec`). Fork-like: the
    /// child returns 0. The probe is single-threaded, so continuing in Rust is safe.
    fn clone_into_cgroup(dir: &str) -> Result<libc::pid_t, String> {
        let d = cstr(dir);
        // SAFETY: valid C string.
        let fd = unsafe {
            libc::open(
                d.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(format!("open {dir}: {}", std::io::Error::last_os_error()));
        }
        let _ = std::io::stdout().flush();
        let args = CloneArgs {
            flags: CLONE_INTO_CGROUP,
            exit_signal: libc::SIGCHLD as u64,
            cgroup: fd as u64,
            ..Default::default()
        };
        // SAFETY: a valid clone_args of the size passed; no CLONE_VM, so the child runs on
        // a copy of this address space, like fork.
        let r = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &args as *const CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        let err = std::io::Error::last_os_error();
        // SAFETY: our own descriptor (in the parent, and the child's copy).
        unsafe { libc::close(fd) };
        if r < 0 {
            return Err(format!("clone3(CLONE_INTO_CGROUP, {dir}): {err}"));
        }
        Ok(r as libc::pid_t)
    }

    /// Fork a child that waits until this process wrote its pid into `dir`'s
    /// cgroup.procs (or, with `itself`, writes "0" there itself), then runs `cmd`.
    fn migrate_into_cgroup(dir: &str, itself: bool, cmd: &[String]) -> Result<i32, String> {
        let procs = format!("{dir}/cgroup.procs");
        let procs_c = cstr(&procs);
        let mut pipe = [0i32; 2];
        let _ = std::io::stdout().flush();
        // SAFETY: plain syscalls; the child waits on the pipe, then continues as the probe
        // (single-threaded, like the parent).
        unsafe {
            if libc::pipe(pipe.as_mut_ptr()) != 0 {
                return Err(format!("pipe: {}", std::io::Error::last_os_error()));
            }
            let pid = libc::fork();
            if pid < 0 {
                return Err(format!("fork: {}", std::io::Error::last_os_error()));
            }
            if pid == 0 {
                libc::close(pipe[1]);
                let mut b = 0u8;
                libc::read(pipe[0], (&mut b as *mut u8).cast(), 1);
                libc::close(pipe[0]);
                if b != b'g' {
                    libc::_exit(71);
                }
                if itself {
                    let fd = libc::open(procs_c.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                        libc::_exit(72);
                    }
                    libc::close(fd);
                }
                run_and_exit(cmd);
            }
            libc::close(pipe[0]);
            let mut go = b"g";
            if !itself && let Err(e) = std::fs::write(&procs, pid.to_string()) {
                go = b"x";
                eprintln!("enforcer-probe: writing {pid} into {procs}: {e}");
            }
            libc::write(pipe[1], go.as_ptr().cast(), 1);
            libc::close(pipe[1]);
            Ok(report_child(pid))
        }
    }

    fn bench_spawn(n: u64, argv: &[String]) -> String {
        let t = Instant::now();
        for _ in 0..n {
            let st = std::process::Command::new(&argv[0])
                .args(&argv[1..])
                .stdout(std::process::Stdio::null())
                .status();
            if !matches!(st, Ok(s) if s.success()) {
                return format!("spawn failed: {st:?}");
            }
        }
        let us = t.elapsed().as_micros() as f64 / n as f64;
        format!("spawn_us={us:.1}")
    }

    /// Run one guard command; `None` if `args[0]` is not one of them.
    pub fn dispatch(args: &[String]) -> Option<i32> {
        let arg = |i: usize| -> &str {
            args.get(i).map(String::as_str).unwrap_or_else(|| {
                eprintln!("enforcer-probe {}: missing argument {i}", args[0]);
                exit(64)
            })
        };
        let w: String = match args[0].as_str() {
            "as-user" => {
                if let Err(e) = as_user(arg(1)) {
                    eprintln!("enforcer-probe: {e}");
                    return Some(70);
                }
                return Some(
                    dispatch(&args[2..])
                        .or_else(|| super::escape::dispatch(&args[2..]))
                        .unwrap_or_else(|| {
                            eprintln!("enforcer-probe as-user: unknown command {:?}", args.get(2));
                            64
                        }),
                );
            }
            "whoami" => {
                println!("{}", whoami());
                return Some(0);
            }
            "setuid" => {
                let uid: u32 = arg(1).parse().unwrap_or(0);
                // SAFETY: plain syscall.
                let w = outcome(unsafe { libc::setuid(uid) } as i64);
                println!("{w} {}", whoami());
                return Some(code(&w));
            }
            "exec" => {
                let argv: Vec<CString> = args[1..].iter().map(|a| cstr(a)).collect();
                let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
                ptrs.push(std::ptr::null());
                // SAFETY: NUL-terminated argv of valid C strings; returns only on failure.
                unsafe { libc::execv(ptrs[0], ptrs.as_ptr()) };
                word(last_errno())
            }
            "mount-tmpfs" => {
                let dir = cstr(arg(1));
                let (src, fs, data) = (cstr("enforcer-test"), cstr("tmpfs"), cstr("size=64k"));
                // SAFETY: valid C strings.
                let r = unsafe {
                    libc::mount(
                        src.as_ptr(),
                        dir.as_ptr(),
                        fs.as_ptr(),
                        0,
                        data.as_ptr().cast(),
                    )
                };
                let w = outcome(r as i64);
                if r == 0 {
                    // SAFETY: as above.
                    unsafe { libc::umount2(dir.as_ptr(), libc::MNT_DETACH) };
                }
                w
            }
            "unshare" => {
                let flag = match arg(1) {
                    "mnt" => libc::CLONE_NEWNS,
                    "uts" => libc::CLONE_NEWUTS,
                    "net" => libc::CLONE_NEWNET,
                    "user" => libc::CLONE_NEWUSER,
                    "ipc" => libc::CLONE_NEWIPC,
                    other => {
                        eprintln!("unknown namespace {other}");
                        exit(64)
                    }
                };
                // SAFETY: plain syscall.
                outcome(unsafe { libc::unshare(flag) } as i64)
            }
            "sethostname-same" => {
                let mut buf = [0u8; 256];
                // SAFETY: valid buffer.
                unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
                let len = buf.iter().position(|c| *c == 0).unwrap_or(0);
                // SAFETY: as above.
                outcome(unsafe { libc::sethostname(buf.as_ptr().cast(), len) } as i64)
            }
            "open-by-handle" => {
                let path = cstr(arg(1));
                // struct file_handle { u32 handle_bytes; int handle_type; u8 f_handle[]; }
                let mut fh = [0u8; 8 + 128];
                fh[0..4].copy_from_slice(&128u32.to_ne_bytes());
                let mut mount_id = 0;
                // SAFETY: valid pointers; the handle buffer holds 128 bytes.
                let r = unsafe {
                    libc::syscall(
                        libc::SYS_name_to_handle_at,
                        libc::AT_FDCWD,
                        path.as_ptr(),
                        fh.as_mut_ptr(),
                        &mut mount_id as *mut i32,
                        0,
                    )
                };
                if r != 0 {
                    eprintln!("name_to_handle_at: {}", std::io::Error::last_os_error());
                    return Some(print_word(&word(last_errno())));
                }
                // Any fd on the file's mount names the mount: its directory.
                let dir = std::path::Path::new(arg(1))
                    .parent()
                    .and_then(|d| d.to_str())
                    .unwrap_or("/");
                let dir = cstr(if dir.is_empty() { "." } else { dir });
                // SAFETY: valid C string.
                let mfd = unsafe { libc::open(dir.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) };
                // SAFETY: as above.
                let fd = unsafe {
                    libc::syscall(
                        libc::SYS_open_by_handle_at,
                        mfd,
                        fh.as_ptr(),
                        libc::O_RDONLY,
                    )
                };
                outcome(fd)
            }
            "rcvbuf-force" => {
                // SAFETY: plain syscalls on a fresh socket.
                unsafe {
                    let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
                    let v: libc::c_int = 1 << 16;
                    let r = libc::setsockopt(
                        fd,
                        libc::SOL_SOCKET,
                        libc::SO_RCVBUFFORCE,
                        (&v as *const libc::c_int).cast(),
                        4,
                    );
                    let w = outcome(r as i64);
                    libc::close(fd);
                    w
                }
            }
            "init-module" => {
                let image = [0u8; 64];
                let params = cstr("");
                // SAFETY: valid buffer and C string; the image is not an ELF module.
                outcome(unsafe {
                    libc::syscall(
                        libc::SYS_init_module,
                        image.as_ptr(),
                        image.len(),
                        params.as_ptr(),
                    )
                })
            }
            "request-module" => {
                let fam: i32 = arg(1).parse().unwrap_or(0);
                // SAFETY: plain syscall.
                let fd = unsafe { libc::socket(fam, libc::SOCK_DGRAM, 0) };
                let w = outcome(fd as i64);
                if fd >= 0 {
                    // SAFETY: fd was just returned.
                    unsafe { libc::close(fd) };
                }
                w
            }
            "ptrace-child" => {
                let child = fork_child(|| {
                    // SAFETY: plain syscall.
                    unsafe { libc::sleep(5) };
                    0
                });
                let w = ptrace_attach(child);
                // SAFETY: our own child.
                unsafe {
                    libc::kill(child, libc::SIGKILL);
                    libc::waitpid(child, std::ptr::null_mut(), 0);
                }
                w
            }
            "ptrace" => ptrace_attach(arg(1).parse().unwrap_or(0)),
            "ptrace-in-pidns" => {
                // SAFETY: plain syscall.
                if unsafe { libc::unshare(libc::CLONE_NEWPID) } != 0 {
                    word(last_errno())
                } else {
                    // The child is PID 1 of the new namespace; it attaches to its own child.
                    let child = fork_child(|| {
                        let grandchild = fork_child(|| {
                            // SAFETY: plain syscall.
                            unsafe { libc::sleep(5) };
                            0
                        });
                        let w = ptrace_attach(grandchild);
                        // SAFETY: our own child.
                        unsafe { libc::kill(grandchild, libc::SIGKILL) };
                        code(&w)
                    });
                    let mut st = 0;
                    // SAFETY: our own child.
                    unsafe { libc::waitpid(child, &mut st, 0) };
                    if libc::WIFSIGNALED(st) {
                        format!("signal:{}", libc::WTERMSIG(st))
                    } else {
                        match libc::WEXITSTATUS(st) {
                            0 => "ok".into(),
                            2 => "eperm".into(),
                            n => format!("exit:{n}"),
                        }
                    }
                }
            }
            "ptrace-traceme" => {
                let child = fork_child(|| {
                    // SAFETY: plain syscall.
                    let r = unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) };
                    if r == 0 {
                        0
                    } else if last_errno() == libc::EPERM {
                        2
                    } else {
                        4
                    }
                });
                let mut st = 0;
                // SAFETY: our own child.
                unsafe { libc::waitpid(child, &mut st, 0) };
                if libc::WIFSIGNALED(st) {
                    format!("signal:{}", libc::WTERMSIG(st))
                } else {
                    match libc::WEXITSTATUS(st) {
                        0 => "ok".into(),
                        2 => "eperm".into(),
                        n => format!("exit:{n}"),
                    }
                }
            }
            "bpf-map" => {
                // union bpf_attr map_create: map_type, key_size, value_size, max_entries.
                let mut attr = [0u32; 32];
                attr[0] = 2; // BPF_MAP_TYPE_ARRAY
                attr[1] = 4;
                attr[2] = 4;
                attr[3] = 1;
                // SAFETY: a zeroed 128-byte bpf_attr.
                let fd = unsafe { libc::syscall(libc::SYS_bpf, 0, attr.as_mut_ptr(), 128) };
                if fd >= 0 {
                    // SAFETY: fd was just returned.
                    unsafe { libc::close(fd as i32) };
                }
                outcome(fd)
            }
            "perf-open" => {
                // struct perf_event_attr: type, size, config, ... flags at offset 40.
                let mut attr = [0u8; 128];
                attr[0..4].copy_from_slice(&1u32.to_ne_bytes()); // PERF_TYPE_SOFTWARE
                attr[4..8].copy_from_slice(&128u32.to_ne_bytes());
                attr[8..16].copy_from_slice(&0u64.to_ne_bytes()); // PERF_COUNT_SW_CPU_CLOCK
                // disabled | exclude_kernel | exclude_hv
                attr[40..48].copy_from_slice(&(1u64 | 1 << 5 | 1 << 6).to_ne_bytes());
                // SAFETY: a valid perf_event_attr for this process, any CPU.
                let fd = unsafe {
                    libc::syscall(libc::SYS_perf_event_open, attr.as_ptr(), 0, -1, -1, 0)
                };
                if fd >= 0 {
                    // SAFETY: fd was just returned.
                    unsafe { libc::close(fd as i32) };
                }
                outcome(fd)
            }
            "open" => {
                let path = cstr(arg(1));
                let flags = if args.get(2).map(String::as_str) == Some("w") {
                    libc::O_WRONLY
                } else {
                    libc::O_RDONLY
                };
                // SAFETY: valid C string.
                let fd = unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) };
                if fd >= 0 {
                    // SAFETY: fd was just returned.
                    unsafe { libc::close(fd) };
                }
                outcome(fd as i64)
            }
            "write-file" => match std::fs::OpenOptions::new().write(true).open(arg(1)) {
                Ok(mut f) => match f.write_all(arg(2).as_bytes()) {
                    Ok(()) => "ok".into(),
                    Err(e) => word(e.raw_os_error().unwrap_or(0)),
                },
                Err(e) => word(e.raw_os_error().unwrap_or(0)),
            },
            "sleep" => {
                println!("ready {}", std::process::id());
                let _ = std::io::stdout().flush();
                std::thread::sleep(std::time::Duration::from_millis(
                    arg(1).parse().unwrap_or(10_000),
                ));
                return Some(0);
            }
            "bench-syscalls" => {
                println!("{}", bench_syscalls(arg(1).parse().unwrap_or(100_000)));
                return Some(0);
            }
            "bench-spawn" => {
                println!("{}", bench_spawn(arg(1).parse().unwrap_or(100), &args[2..]));
                return Some(0);
            }
            "bench-fork" => {
                println!("{}", bench_fork(arg(1).parse().unwrap_or(1000)));
                return Some(0);
            }
            "clone-into-cgroup" => {
                return Some(match clone_into_cgroup(arg(1)) {
                    Ok(0) => run_and_exit(&args[2..]),
                    Ok(pid) => report_child(pid),
                    Err(e) => {
                        eprintln!("enforcer-probe: {e}");
                        70
                    }
                });
            }
            "migrate-into-cgroup" => {
                let itself = args.get(2).map(String::as_str) == Some("--self");
                let cmd = &args[if itself { 3 } else { 2 }..];
                return Some(match migrate_into_cgroup(arg(1), itself, cmd) {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("enforcer-probe: {e}");
                        70
                    }
                });
            }
            "fexec-self" => {
                let unshare_mnt = arg(1) == "--unshare-mnt";
                let rest = &args[if unshare_mnt { 2 } else { 1 }..];
                if unshare_mnt {
                    // SAFETY: plain syscall.
                    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
                        return Some(print_word(&word(last_errno())));
                    }
                }
                return Some(fexec_self(rest));
            }
            "comm" => {
                let name = cstr(arg(1));
                // SAFETY: a valid C string; the kernel copies at most 15 bytes.
                unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
                return Some(
                    dispatch(&args[2..])
                        .or_else(|| super::escape::dispatch(&args[2..]))
                        .unwrap_or(64),
                );
            }
            "in-child" => {
                let _ = std::io::stdout().flush();
                // SAFETY: the child continues as the single-threaded probe and exits.
                let pid = unsafe { libc::fork() };
                if pid == 0 {
                    run_and_exit(&args[1..]);
                }
                return Some(report_child(pid));
            }
            "then" => {
                let Some(sep) = args.iter().position(|a| a == "--") else {
                    eprintln!("enforcer-probe then: missing `--`");
                    return Some(64);
                };
                if sep > 1 {
                    let _ = dispatch(&args[1..sep]);
                    let _ = std::io::stdout().flush();
                }
                let argv: Vec<CString> = args[sep + 1..].iter().map(|a| cstr(a)).collect();
                if argv.is_empty() {
                    return Some(0);
                }
                let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
                ptrs.push(std::ptr::null());
                // SAFETY: NUL-terminated argv of valid C strings; returns only on failure.
                unsafe { libc::execv(ptrs[0], ptrs.as_ptr()) };
                word(last_errno())
            }
            _ => return None,
        };
        Some(print_word(&w))
    }

    /// Copy /proc/self/exe into a memfd and fexecve it with `args` (argv[0] "enforcer-probe"),
    /// the way runc before 1.2 re-executes `runc init`. Returns only on failure.
    fn fexec_self(args: &[String]) -> i32 {
        let exe = match std::fs::read("/proc/self/exe") {
            Ok(b) => b,
            Err(e) => {
                eprintln!("enforcer-probe fexec-self: {e}");
                return 70;
            }
        };
        // SAFETY: a valid C string; flags are plain bits.
        let fd = unsafe {
            libc::memfd_create(c"runc_cloned:/proc/self/exe".as_ptr(), libc::MFD_CLOEXEC)
        };
        if fd < 0 {
            return print_word(&word(last_errno()));
        }
        // SAFETY: fd is a fresh memfd we own from here on.
        let mut f = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        if let Err(e) = std::io::Write::write_all(&mut f, &exe) {
            eprintln!("enforcer-probe fexec-self: {e}");
            return 70;
        }
        let mut argv: Vec<CString> = vec![cstr("enforcer-probe")];
        argv.extend(args.iter().map(|a| cstr(a)));
        let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        let _ = std::io::stdout().flush();
        // SAFETY: `fd` is open (CLOEXEC closes it in the new image); argv and the
        // environment are NUL-terminated arrays of valid C strings.
        unsafe {
            libc::fexecve(
                std::os::fd::AsRawFd::as_raw_fd(&f),
                ptrs.as_ptr(),
                environ_ptr(),
            )
        };
        print_word(&word(last_errno()))
    }

    fn environ_ptr() -> *const *const libc::c_char {
        unsafe extern "C" {
            static environ: *const *const libc::c_char;
        }
        // SAFETY: reading the C library's environment pointer.
        unsafe { environ }
    }
}
