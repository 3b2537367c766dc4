//! Test harness shared by enforcer's kernel and VM test tiers.
//!
//! Everything a test creates (network namespaces, cgroups, bpffs directories, processes)
//! is owned by a guard value whose `Drop` removes it, so a failing (panicking) test still
//! cleans up. Test traffic only ever flows between namespaces the test created.

use std::{
    ffi::CString,
    fs,
    io::Write,
    os::{fd::AsRawFd, unix::process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

pub use enforcer::cgroup::{Cgroup2Mount, cgroup_id};

pub mod sim;

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A name unique to this process and call, short enough for interface names (15 chars).
pub fn unique(prefix: &str) -> String {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}x{n}", std::process::id() % 100_000)
}

/// Record a loud skip: printed, and appended to `$ENFORCER_SKIP_LOG` so the tier summary
/// counts it as skipped rather than passed.
pub fn skip(test: &str, reason: &str) {
    eprintln!("\n*** SKIPPED {test}: {reason} ***\n");
    if let Some(path) = std::env::var_os("ENFORCER_SKIP_LOG")
        && let Ok(mut f) = fs::OpenOptions::new().create(true).append(true).open(path)
    {
        let _ = writeln!(f, "{test}\t{reason}");
    }
}

/// Skip the calling test (returning from it) unless `$cond` holds.
#[macro_export]
macro_rules! require {
    ($cond:expr, $test:expr, $reason:expr) => {
        if !$cond {
            $crate::skip($test, &$reason);
            return;
        }
    };
}

pub fn is_root() -> bool {
    // SAFETY: no arguments.
    unsafe { libc::geteuid() == 0 }
}

/// Run a command, panicking with its output if it fails.
pub fn sh(cmd: &str, args: &[&str]) -> Output {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Mount bpffs at /sys/fs/bpf if nothing is mounted there.
pub fn ensure_bpffs() {
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    if !mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf"))
    {
        let _ = fs::create_dir_all("/sys/fs/bpf");
        sh("mount", &["-t", "bpf", "bpf", "/sys/fs/bpf"]);
    }
}

/// A network namespace created by the test; deleted on drop.
pub struct Netns {
    pub name: String,
    owned: bool,
}

impl Netns {
    pub fn new(prefix: &str) -> Self {
        let name = unique(prefix);
        sh("ip", &["netns", "add", &name]);
        let ns = Self { name, owned: true };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// `ip -n <ns> ...`
    pub fn ip(&self, args: &[&str]) -> Output {
        let mut a = vec!["-n", self.name.as_str()];
        a.extend_from_slice(args);
        sh("ip", &a)
    }
}

impl Netns {
    /// Refer to an existing namespace by name without owning (deleting) it.
    pub fn borrowed(name: &str) -> Netns {
        Netns {
            name: name.into(),
            owned: false,
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// Connect two namespaces with a veth pair and give each end an address (CIDR notation).
pub fn veth(a: &Netns, a_addr: &str, b: &Netns, b_addr: &str) {
    let an = unique("va");
    let bn = unique("vb");
    sh(
        "ip",
        &[
            "link", "add", "name", &an, "netns", &a.name, "type", "veth", "peer", "name", &bn,
            "netns", &b.name,
        ],
    );
    for (ns, dev, addr) in [(a, &an, a_addr), (b, &bn, b_addr)] {
        let fam = if addr.contains(':') { "-6" } else { "-4" };
        ns.ip(&[fam, "addr", "add", addr, "dev", dev, "nodad"]);
        ns.ip(&["link", "set", dev, "up"]);
    }
}

/// A cgroup created by the test below the cgroup2 mount; on drop every process in its
/// subtree is killed and the directories are removed.
pub struct Cgroup {
    pub path: PathBuf,
    owned: bool,
}

impl Cgroup {
    /// A new top-level test cgroup.
    pub fn new_root(prefix: &str) -> Self {
        let mount = Cgroup2Mount::detect().expect("cgroup2 mount");
        let path = mount.path.join(unique(prefix));
        fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        Self { path, owned: true }
    }

    /// A child cgroup (removed together with its parent, or by its own drop).
    pub fn child(&self, name: &str) -> Self {
        let path = self.path.join(name);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        Self { path, owned: true }
    }

    pub fn id(&self) -> u64 {
        cgroup_id(&self.path).expect("cgroup id")
    }

    pub fn level(&self) -> u32 {
        Cgroup2Mount::detect()
            .expect("cgroup2 mount")
            .level_of(&self.path)
            .expect("cgroup level")
    }
}

/// Kill every process below `path` and remove the directories, deepest first.
pub fn remove_cgroup_tree(path: &Path) {
    if !path.exists() {
        return;
    }
    // cgroup.kill (5.14+) kills the whole subtree atomically.
    let killed = fs::write(path.join("cgroup.kill"), "1").is_ok();
    for _ in 0..200 {
        let mut busy = false;
        visit_depth_first(path, &mut |dir| {
            if !killed && let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) {
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    // SAFETY: plain syscall; pids come from a cgroup this test created.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            if fs::remove_dir(dir).is_err() {
                busy = true;
            }
        });
        if !busy {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    eprintln!("warning: could not remove cgroup {}", path.display());
}

fn visit_depth_first(dir: &Path, f: &mut dyn FnMut(&Path)) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                visit_depth_first(&e.path(), f);
            }
        }
    }
    f(dir);
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        if self.owned {
            remove_cgroup_tree(&self.path);
        }
    }
}

/// Where a test process runs.
#[derive(Clone, Copy, Default)]
pub struct Place<'a> {
    pub netns: Option<&'a Netns>,
    pub cgroup: Option<&'a Path>,
}

/// Configure `cmd` so that, before exec, the child joins `place`'s cgroup and netns. Joining
/// before exec matters: the child is fully inside before it runs any test code.
pub fn place_command(cmd: &mut Command, place: Place<'_>) {
    let ns_fd = place.netns.map(|ns| {
        fs::File::open(ns.path()).unwrap_or_else(|e| panic!("open netns {}: {e}", ns.name))
    });
    let procs = place
        .cgroup
        .map(|cg| CString::new(cg.join("cgroup.procs").to_str().unwrap()).unwrap());
    // SAFETY: the closure only performs async-signal-safe syscalls (open/write/close/setns)
    // on data prepared before fork.
    unsafe {
        cmd.pre_exec(move || {
            // Network namespace first, cgroup second: a process joining a pod must not make
            // privileged calls (setns needs CAP_SYS_ADMIN) from inside an armed pod cgroup,
            // where runtime guards apply (this is also the order container runtimes used
            // before runc 1.4).
            if let Some(ns) = &ns_fd
                && libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(path) = &procs {
                let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let r = libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
                if r != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Path of the probe binary (built with this crate).
pub fn probe_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("ENFORCER_PROBE") {
        return PathBuf::from(p);
    }
    // Integration tests live in target/<profile>/deps; the binary one level up.
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().expect("exe dir");
    for cand in [dir.join("enforcer-probe"), dir.join("../enforcer-probe")] {
        if cand.exists() {
            return cand;
        }
    }
    panic!("enforcer-probe binary not found next to {}", exe.display());
}

/// Run the probe with `args` at `place`, wait, return (exit code, stdout).
pub fn probe(place: Place<'_>, args: &[&str]) -> (i32, String) {
    let mut cmd = Command::new(probe_bin());
    cmd.args(args).stdin(Stdio::null());
    place_command(&mut cmd, place);
    let out = cmd.output().expect("run probe");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_string()
            + &String::from_utf8_lossy(&out.stderr),
    )
}

/// A background process killed on drop.
pub struct Bg {
    pub child: Child,
}

impl Bg {
    pub fn spawn(place: Place<'_>, args: &[&str]) -> Self {
        let mut cmd = Command::new(probe_bin());
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped());
        place_command(&mut cmd, place);
        let mut child = cmd.spawn().expect("spawn probe");
        // Wait for the "ready" line so that listeners exist before the test proceeds.
        use std::io::BufRead;
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        assert!(
            line.starts_with("ready"),
            "probe {args:?} did not start: {line:?}"
        );
        Self { child }
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How a probe run ended.
#[derive(Debug)]
pub struct ProbeRun {
    /// Exit code, if it exited.
    pub code: Option<i32>,
    /// Terminating signal, if a signal killed it (SIGKILL: 9).
    pub signal: Option<i32>,
    /// errno of a failed spawn (the exec itself failed).
    pub spawn_errno: Option<i32>,
    /// stdout (trimmed), then stderr.
    pub out: String,
}

impl ProbeRun {
    /// The first word of the output: the outcome the probe printed.
    pub fn word(&self) -> &str {
        self.out.split_whitespace().next().unwrap_or("")
    }

    pub fn killed(&self) -> bool {
        self.signal == Some(libc::SIGKILL)
    }
}

fn probe_run_cmd(mut cmd: Command) -> ProbeRun {
    use std::os::unix::process::ExitStatusExt;
    match cmd.output() {
        Ok(out) => ProbeRun {
            code: out.status.code(),
            signal: out.status.signal(),
            spawn_errno: None,
            out: String::from_utf8_lossy(&out.stdout).trim().to_string()
                + &String::from_utf8_lossy(&out.stderr),
        },
        Err(e) => ProbeRun {
            code: None,
            signal: None,
            spawn_errno: e.raw_os_error(),
            out: format!("spawn failed: {e}"),
        },
    }
}

/// Run the probe with `args` at `place` and report how it ended (exit code or signal).
pub fn probe_run(place: Place<'_>, args: &[&str]) -> ProbeRun {
    let mut cmd = Command::new(probe_bin());
    cmd.args(args).stdin(Stdio::null());
    place_command(&mut cmd, place);
    probe_run_cmd(cmd)
}

/// Like [`probe_run`], but the child switches to `uid` (group `uid`, no supplementary
/// groups) after joining `place` and before exec, so that the probe's own exec is not by
/// root.
pub fn probe_run_as(place: Place<'_>, uid: u32, args: &[&str]) -> ProbeRun {
    let mut cmd = Command::new(probe_bin());
    cmd.args(args).stdin(Stdio::null());
    place_command(&mut cmd, place);
    // SAFETY: async-signal-safe syscalls only; runs after place_command's closure.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setresgid(uid, uid, uid) != 0
                || libc::setresuid(uid, uid, uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    probe_run_cmd(cmd)
}

/// A process that joins `cgroup` *without* exec'ing (a forked child of the test) and runs
/// `op`, returning its result as exit status: what a container runtime does before it
/// execs the entrypoint. `op` must only make async-signal-safe calls (raw syscalls).
pub fn run_forked_in(cgroup: &Path, op: fn() -> i32) -> i32 {
    let procs = CString::new(cgroup.join("cgroup.procs").to_str().unwrap()).unwrap();
    // SAFETY: the child only makes raw syscalls (open/write/close, `op`) and _exits.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                libc::_exit(100);
            }
            libc::close(fd);
            libc::_exit(op());
        }
        let mut st = 0;
        libc::waitpid(pid, &mut st, 0);
        if libc::WIFEXITED(st) {
            libc::WEXITSTATUS(st)
        } else {
            -libc::WTERMSIG(st)
        }
    }
}

/// A tmpfs the test mounts (private, so nothing mounted below it propagates), unmounted
/// with everything below it on drop.
pub struct TmpMount {
    pub path: PathBuf,
}

impl TmpMount {
    pub fn new(prefix: &str) -> Self {
        let path = std::env::temp_dir().join(unique(prefix));
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        let p = path.to_str().unwrap();
        sh(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                "size=128m,mode=0755",
                "enforcer-test",
                p,
            ],
        );
        sh("mount", &["--make-private", p]);
        Self { path }
    }
}

impl Drop for TmpMount {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .args(["-l", self.path.to_str().unwrap()])
            .status();
        let _ = fs::remove_dir(&self.path);
    }
}

impl Cgroup {
    /// Refer to an existing cgroup without owning (removing) it.
    pub fn borrowed(path: &Path) -> Cgroup {
        Cgroup {
            path: path.to_path_buf(),
            owned: false,
        }
    }
}

/// Runtime guard fixture shared by the kernel (fallback) and VM (LSM) suites.
pub mod guard_pods {
    use enforcer::{
        bpf::Datapath,
        guards::{self, EventRing, Tier},
    };
    use enforcer_common::*;

    use super::*;

    /// The unprivileged user the probes switch to where a test needs a non-root process.
    pub const UID: u32 = 1000;

    /// A pod tree below a test cgroup root: `pod-guarded` (endpoint 1, guards enforced),
    /// `pod-audit` (endpoint 2, the same guards audited), `pod-free` (endpoint 3, no
    /// guards) and a cgroup outside the root, with the guard programs of one tier attached
    /// at the root.
    pub struct GuardPods {
        pub root: Cgroup,
        pub guarded: Cgroup,
        pub audit: Cgroup,
        pub free: Cgroup,
        pub outside: Cgroup,
        pub dp: Datapath,
        pub tier: Tier,
        ring: EventRing,
        pub events: Vec<GuardEvent>,
    }

    pub fn at(cg: &Cgroup) -> Place<'_> {
        Place {
            netns: None,
            cgroup: Some(&cg.path),
        }
    }

    impl GuardPods {
        /// Build the tree and attach `tier`'s guard programs. Panics if a guard of `guards`
        /// is unavailable on this kernel.
        pub fn new(guards: u32, tier: Tier) -> GuardPods {
            let root = Cgroup::new_root("enf-g");
            let guarded = root.child("pod-guarded");
            let audit = root.child("pod-audit");
            let free = root.child("pod-free");
            let outside = Cgroup::new_root("enf-go");
            let mut dp = Datapath::load(None).expect("load eBPF object");
            dp.set_config(&Config {
                root_cgroup_id: root.id(),
                root_level: root.level(),
                ..Default::default()
            })
            .expect("config");
            {
                let mut eps = dp.endpoints().unwrap();
                for (cg, id, enforce, audit_bits) in [
                    (&guarded, 1, guards, 0),
                    (&audit, 2, 0, guards),
                    (&free, 3, 0, 0),
                ] {
                    eps.insert(
                        cg.id(),
                        Endpoint {
                            id,
                            flags: 0,
                            guards_enforce: enforce,
                            guards_audit: audit_bits,
                        },
                        0,
                    )
                    .unwrap();
                }
            }
            let attached = dp.attach_guards(&root.path, tier).expect("attach guards");
            assert_eq!(
                attached.available & guards,
                guards,
                "guards unavailable on this kernel: {:#?}",
                attached.support
            );
            let ring = dp.take_events().expect("events");
            GuardPods {
                root,
                guarded,
                audit,
                free,
                outside,
                dp,
                tier,
                ring,
                events: Vec::new(),
            }
        }

        pub fn drain(&mut self) {
            self.events.extend(guards::drain_events(&mut self.ring));
        }

        /// Events of `guard` from the cgroup `cgid` with `verdict` seen so far.
        pub fn events_of(&mut self, cgid: u64, guard: u32, verdict: u8) -> Vec<GuardEvent> {
            self.drain();
            self.events
                .iter()
                .filter(|e| e.cgroup_id == cgid && e.guard == guard && e.verdict == verdict)
                .copied()
                .collect()
        }

        /// The last event of `guard` with `verdict` from cgroup `cgid`; checks its tier.
        pub fn assert_event(
            &mut self,
            cgid: u64,
            guard: u32,
            verdict: u8,
            what: &str,
        ) -> GuardEvent {
            let evs = self.events_of(cgid, guard, verdict);
            let Some(e) = evs.last().copied() else {
                panic!(
                    "{what}: no {} event with verdict {verdict} from cgroup {cgid}; events: {:#?}",
                    guards::guard_name(guard),
                    self.events
                )
            };
            assert_eq!(e.tier, self.tier.code(), "{what}: event tier");
            e
        }

        pub fn assert_no_event(&mut self, cgid: u64, what: &str) {
            self.drain();
            let evs: Vec<_> = self.events.iter().filter(|e| e.cgroup_id == cgid).collect();
            assert!(evs.is_empty(), "{what}: unexpected events {evs:#?}");
        }

        /// Run `args` from every place. Enforced: the outcome word `guarded` (or "killed":
        /// SIGKILL) and a deny event of `guard`; unguarded pod and outside the root: the
        /// word `allowed` and no event; audited: `allowed` and an audit event. Returns the
        /// deny event.
        pub fn check(
            &mut self,
            guard: u32,
            args: &[&str],
            guarded: &str,
            allowed: &str,
        ) -> GuardEvent {
            let r = probe_run(at(&self.guarded), args);
            if guarded == "killed" {
                assert!(
                    r.killed(),
                    "{args:?} in the guarded pod: expected SIGKILL, got {r:?}"
                );
            } else {
                assert!(!r.killed(), "{args:?} in the guarded pod: killed: {r:?}");
                assert_eq!(r.word(), guarded, "{args:?} in the guarded pod: {r:?}");
            }
            let deny = self.assert_event(self.guarded.id(), guard, VERDICT_DENY, "enforced");
            assert_eq!(deny.endpoint, 1, "endpoint of the deny event");
            for (cg, name) in [
                (&self.free, "unguarded pod"),
                (&self.outside, "outside the root"),
            ] {
                let r = probe_run(at(cg), args);
                assert!(!r.killed(), "{args:?} {name}: killed: {r:?}");
                assert_eq!(r.word(), allowed, "{args:?} {name}: {r:?}");
            }
            let (free, outside) = (self.free.id(), self.outside.id());
            self.assert_no_event(free, "unguarded pod");
            self.assert_no_event(outside, "outside the root");
            let r = probe_run(at(&self.audit), args);
            assert!(!r.killed(), "{args:?} audited: killed: {r:?}");
            assert_eq!(r.word(), allowed, "{args:?} audited: {r:?}");
            let e = self.assert_event(self.audit.id(), guard, VERDICT_AUDIT, "audited");
            assert_eq!(e.endpoint, 2, "endpoint of the audit event");
            deny
        }

        /// Is cgroup `id` in `ARMED`?
        pub fn is_armed(&mut self, id: u64) -> bool {
            self.dp
                .armed_cgroups()
                .unwrap()
                .iter()
                .any(|(c, _)| *c == id)
        }

        /// Guards on (every program of the tier attached) vs off (detached), in the same
        /// run: a cheap syscall loop (getppid, a failing open) and a fork+exec+wait loop,
        /// run as uid `UID` in the guarded pod (whose guards the caller chose). Returns a
        /// report; asserts nothing about timing.
        pub fn overhead(&mut self, rounds: usize, syscalls: u32, spawns: u32) -> String {
            let bin = probe_bin();
            let bin = bin.to_str().unwrap().to_string();
            let (syscalls, spawns) = (syscalls.to_string(), spawns.to_string());
            let mut on: Vec<Vec<f64>> = Vec::new();
            let mut off: Vec<Vec<f64>> = Vec::new();
            for _ in 0..rounds {
                for enabled in [false, true] {
                    if enabled {
                        self.dp.attach_guards(&self.root.path, self.tier).unwrap();
                    } else {
                        self.dp.detach_guards().unwrap();
                    }
                    let s = probe_run_as(at(&self.guarded), UID, &["bench-syscalls", &syscalls]);
                    let e = probe_run_as(
                        at(&self.guarded),
                        UID,
                        &["bench-spawn", &spawns, &bin, "whoami"],
                    );
                    assert_eq!(s.code, Some(0), "{s:?}");
                    assert_eq!(e.code, Some(0), "{e:?}");
                    let mut v: Vec<f64> = Vec::new();
                    for r in [&s, &e] {
                        v.extend(r.out.split_whitespace().filter_map(|kv| {
                            kv.split_once('=').and_then(|(_, v)| v.parse::<f64>().ok())
                        }));
                    }
                    assert_eq!(v.len(), 4, "bench output {s:?} {e:?}");
                    if enabled { on.push(v) } else { off.push(v) }
                }
            }
            let med = |rows: &Vec<Vec<f64>>, i: usize| {
                let mut c: Vec<f64> = rows.iter().map(|r| r[i]).collect();
                c.sort_by(|a, b| a.partial_cmp(b).unwrap());
                c[c.len() / 2]
            };
            let mut out = format!(
                "guard overhead, tier {} (median of {rounds} rounds; {syscalls} syscalls, \
                 {spawns} spawns per round):\n",
                self.tier.name()
            );
            for (i, name) in [
                "getppid ns/call",
                "getpid ns/call",
                "failing open ns/call",
                "fork+exec+wait us",
            ]
            .iter()
            .enumerate()
            {
                let (a, b) = (med(&on, i), med(&off, i));
                out.push_str(&format!(
                    "  {name:<22} on {a:>10.1}  off {b:>10.1}  ratio {:.2}\n",
                    a / b
                ));
            }
            out
        }
    }
}
