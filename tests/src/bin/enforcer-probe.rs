//! enforcer-probe: the process tests place inside a pod's cgroup and network namespace to
//! make real connections and real syscalls.
//!
//! ```text
//! enforcer-probe serve tcp:80 udp:81 ...          listen (dual stack), print "ready"
//! enforcer-probe connect tcp|udp ADDR PORT [MS]   one connection; prints the outcome
//! enforcer-probe matrix MS tcp|udp,ADDR,PORT ...  many connections in parallel, one line each
//! enforcer-probe socket packet|raw4|raw6|tcp      create a socket
//! ```
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
        _ => "error",
    }
}

fn serve(specs: &[String]) -> ! {
    let mut handles = Vec::new();
    for spec in specs {
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
                        let _ = s.send_to(&buf[..n], from);
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
        "socket" => {
            let o = socket(args.get(1).map(String::as_str).unwrap_or_else(|| usage()));
            println!("{o}");
            exit(code(o))
        }
        _ => usage(),
    }
}
