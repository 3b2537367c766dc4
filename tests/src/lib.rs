//! Test harness shared by enforcer's kernel and VM test tiers.
//!
//! Everything a test creates (network namespaces, cgroups, bpffs directories, processes)
//! is owned by a guard value whose `Drop` removes it, so a failing (panicking) test still
//! cleans up. Test traffic only ever flows between namespaces the test created.

use std::{
    ffi::CString,
    fs,
    io::Write,
    os::{
        fd::AsRawFd,
        unix::{fs::PermissionsExt, process::CommandExt},
    },
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

pub use enforcer::cgroup::{Cgroup2Mount, cgroup_id};

pub mod cluster;
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
/// before exec matters: the child is fully inside before it runs any test code. The child
/// moves *itself* into the cgroup, which never makes it exempt from guards (only a task
/// outside the pods can grant that, see `enforcer-ebpf/src/guards/exempt.rs`): the probe
/// it execs is the pod's workload. `exemption` has the runtime-like entries.
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
/// Give the file at `path` the file capabilities `caps` (bits of capabilities 0-31),
/// permitted and effective: `struct vfs_cap_data` revision 2 (magic_etc, then {permitted,
/// inheritable} for capabilities 0-31 and 32-63) in `security.capability`.
pub fn set_file_caps(path: &Path, caps: u32) {
    let mut v = Vec::new();
    for w in [0x0200_0001u32, caps, 0, 0, 0] {
        v.extend_from_slice(&w.to_le_bytes());
    }
    let p = std::ffi::CString::new(path.to_str().expect("UTF-8 path")).expect("no NUL");
    // SAFETY: valid C strings and a buffer of the length passed.
    let r = unsafe {
        libc::setxattr(
            p.as_ptr(),
            c"security.capability".as_ptr(),
            v.as_ptr().cast(),
            v.len(),
            0,
        )
    };
    assert_eq!(
        r,
        0,
        "setxattr security.capability on {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// The probe binary tests run: the built one, or, when the checkout lives where other users
/// cannot go (a 0700 home or temp directory: tests also run the probe as other uids), a
/// copy that every user can run (`runnable_by_all`).
pub fn probe_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| runnable_by_all(&built_probe())).clone()
}

/// Where the build put the probe (`ENFORCER_PROBE` overrides).
pub fn built_probe() -> PathBuf {
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

/// Can every user reach `p` (search permission for others on every directory above it)?
fn traversable_by_all(p: &Path) -> bool {
    p.ancestors().skip(1).all(|d| {
        d.as_os_str().is_empty()
            || fs::metadata(d)
                .map(|m| m.permissions().mode() & 0o001 != 0)
                .unwrap_or(false)
    })
}

/// `bin` if every user can run it where it is, else a copy in a world-readable directory
/// below /tmp, named by the binary's size and modification time (one copy per build,
/// shared by the test processes, written to a temporary name and renamed into place).
pub fn runnable_by_all(bin: &Path) -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    if traversable_by_all(bin) {
        return bin.to_path_buf();
    }
    let meta = fs::metadata(bin).unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    let dir = PathBuf::from("/tmp").join(format!(
        "enforcer-bin-{}-{}-{}",
        meta.size(),
        meta.mtime(),
        meta.mtime_nsec()
    ));
    let name = bin.file_name().expect("binary file name");
    let dest = dir.join(name);
    if dest.exists() {
        return dest;
    }
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod copy dir");
    let tmp = dir.join(format!(
        ".{}.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    fs::copy(bin, &tmp).unwrap_or_else(|e| panic!("copy {}: {e}", bin.display()));
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).expect("chmod copy");
    fs::rename(&tmp, &dest).expect("rename copy into place");
    dest
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
        Self::spawn_ready(place, args).0
    }

    /// [`Bg::spawn`], also returning the pid of a `ready PID` line (what `sleep` prints):
    /// the process that printed it, which need not be the one spawned
    /// (`clone-into-cgroup DIR exec PROBE sleep MS` prints from the child).
    pub fn spawn_ready(place: Place<'_>, args: &[&str]) -> (Self, Option<u32>) {
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
        let pid = line.split_whitespace().nth(1).and_then(|p| p.parse().ok());
        (Self { child }, pid)
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

/// Forked-child operation (`run_forked_in`): write back the value the host's
/// `net.ipv4.ip_unprivileged_port_start` already has (no change). 0 written, 1 EPERM, 2 other failure.
pub fn write_sysctl_same_value() -> i32 {
    const PATH: &[u8] = b"/proc/sys/net/ipv4/ip_unprivileged_port_start\0";
    // SAFETY: raw syscalls on a static path and a stack buffer.
    unsafe {
        let fd = libc::open(PATH.as_ptr().cast(), libc::O_RDWR);
        if fd < 0 {
            return 2;
        }
        let mut buf = [0u8; 16];
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        if n <= 0 {
            return 2;
        }
        libc::lseek(fd, 0, libc::SEEK_SET);
        let w = libc::write(fd, buf.as_ptr().cast(), n as usize);
        let errno = *libc::__errno_location();
        libc::close(fd);
        if w == n {
            0
        } else if errno == libc::EPERM {
            1
        } else {
            2
        }
    }
}

/// A process that joins `cgroup` *without* exec'ing (a forked child of the test) and runs
/// `op`, returning its result as exit status: what a container runtime does before it
/// execs the entrypoint. It moves itself into the cgroup, so it is not exempt: in an armed
/// cgroup it is guarded like the workload. `op` must only make async-signal-safe calls
/// (raw syscalls).
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

    /// Is the BPF LSM among the kernel's active LSMs?
    pub fn bpf_lsm_active() -> bool {
        fs::read_to_string("/sys/kernel/security/lsm")
            .map(|s| s.split(',').any(|l| l.trim() == "bpf"))
            .unwrap_or(false)
    }

    /// Preconditions of every LSM-tier test: root, and the BPF LSM active. On a host
    /// without it the test skips loudly; inside the VM (ENFORCER_VM=1) a missing BPF LSM
    /// is a failure.
    pub fn lsm_ready(test: &str) -> bool {
        let in_vm = std::env::var_os("ENFORCER_VM").is_some();
        if !is_root() {
            assert!(!in_vm, "the VM runs tests as root");
            skip(test, "needs root");
            return false;
        }
        if !bpf_lsm_active() {
            assert!(
                !in_vm,
                "BPF LSM is not active in the VM kernel (/sys/kernel/security/lsm)"
            );
            skip(
                test,
                "the BPF LSM is not active on this kernel; run `cargo xtask test --tier vm`",
            );
            return false;
        }
        true
    }

    /// A pod tree with the LSM tier's guards, if [`lsm_ready`].
    pub fn lsm_pods(test: &str, guards: u32) -> Option<GuardPods> {
        lsm_ready(test).then(|| GuardPods::new(guards, Tier::Lsm))
    }

    /// A pod tree with the fallback tier's guards: root, and a kernel without the BPF LSM
    /// (where it has one, the LSM tier is the one to use and the VM suites test it).
    pub fn fallback_pods(test: &str, guards: u32) -> Option<GuardPods> {
        if !is_root() {
            skip(test, "needs root (BPF programs, cgroups)");
            return None;
        }
        let mut dp = Datapath::load(None).expect("load eBPF object");
        let probe = dp.probe_guard_tier();
        drop(dp);
        if probe.tier == Tier::Lsm {
            skip(
                test,
                &format!(
                    "this kernel has the BPF LSM ({}); the fallback tier is for kernels without it",
                    probe.reason
                ),
            );
            return None;
        }
        Some(GuardPods::new(guards, Tier::Fallback))
    }

    /// Does this kernel run 32-bit syscalls (IA-32 emulation)? Asked from `free`
    /// (unguarded), as root: setuid16(0) changes nothing. Skips `test` loudly if not.
    pub fn has_ia32(test: &str, free: &Cgroup) -> bool {
        let r = probe_run(at(free), &["compat-setuid16", "0"]);
        if r.word() == "ok" {
            return true;
        }
        skip(test, &format!("no IA-32 emulation here: {r:?}"));
        false
    }

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
        pub attached: enforcer::bpf::GuardsAttached,
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
            Self::refusing(guards, tier, &[])
        }

        /// The same, as on a kernel that refuses the LSM programs of `hooks` (their guards
        /// fall back to the fallback programs, alone).
        pub fn refusing(guards: u32, tier: Tier, hooks: &[&str]) -> GuardPods {
            let root = Cgroup::new_root("enf-g");
            let guarded = root.child("pod-guarded");
            let audit = root.child("pod-audit");
            let free = root.child("pod-free");
            let outside = Cgroup::new_root("enf-go");
            let mut dp = Datapath::load(None).expect("load eBPF object");
            for h in hooks {
                dp.refuse_lsm_hook(h, "refused by the test");
            }
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
            if hooks.is_empty() {
                assert!(
                    attached.fell_back.is_empty(),
                    "this kernel refused LSM programs: {:?}",
                    attached.fell_back
                );
            }
            assert_eq!(
                attached.available & guards,
                guards,
                "guards unavailable on this kernel: {:#?}",
                attached.support
            );
            let ring = dp.take_events().expect("events");
            GuardPods {
                attached,
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
            let tier = self.attached.tier_of(guard).unwrap_or(self.tier);
            assert_eq!(e.tier, tier.code(), "{what}: event tier");
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

        /// The exemption mark of process `pid` (`EXEMPT`), if any.
        pub fn exemption(&mut self, pid: u32) -> Option<ExemptTask> {
            self.dp.exemption(pid).expect("look up EXEMPT")
        }

        /// A container cgroup below the guarded pod, armed by an exec (as uid `UID`, so
        /// that root-exec does not stop it) of a process that was never exempt.
        pub fn armed_container(&mut self, name: &str) -> Cgroup {
            let ctr = self.guarded.child(name);
            let r = probe_run_as(at(&ctr), UID, &["whoami"]);
            assert_eq!(r.code, Some(0), "arming exec in {name}: {r:?}");
            assert!(self.is_armed(ctr.id()), "{name} armed by the exec");
            ctr
        }

        /// Is cgroup `id` in `ARMED`?
        pub fn is_armed(&mut self, id: u64) -> bool {
            self.dp
                .armed_cgroups()
                .unwrap()
                .iter()
                .any(|(c, _)| *c == id)
        }

        /// The exemption's cost, in the same run: every guard program of the tier attached
        /// with vs without the exemption tracepoints (`guard_fork`, `guard_cgroup_attach`;
        /// without them no task is ever exempt, which is how guards behaved before the
        /// exemption, save one task storage lookup per check on an armed pod task).
        /// Measured: fork+_exit+wait and fork+exec+wait by a task outside the pods (root)
        /// and by a pod workload (uid `UID`), and forks by an exempt task (each copies its
        /// mark). Returns a report; asserts nothing about timing.
        pub fn exemption_overhead(&mut self, rounds: usize, forks: u32, spawns: u32) -> String {
            let ctr = self.armed_container("ctr-bench");
            let dir = ctr.path.to_str().unwrap().to_string();
            let bin = probe_bin().to_str().unwrap().to_string();
            let (forks, spawns) = (forks.to_string(), spawns.to_string());
            let num = |r: &ProbeRun, key: &str| -> f64 {
                r.out
                    .split_whitespace()
                    .find_map(|kv| kv.strip_prefix(key))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("no {key} in {r:?}"))
            };
            let names = [
                "outside: fork us",
                "outside: fork+exec us",
                "pod (uid 1000): fork us",
                "pod (uid 1000): fork+exec us",
                "exempt task: fork us",
            ];
            let mut with: Vec<Vec<f64>> = Vec::new();
            let mut without: Vec<Vec<f64>> = Vec::new();
            for round in 0..rounds {
                // Alternate the order: whatever runs first in a round pays for warming up.
                let order = if round % 2 == 0 {
                    [false, true]
                } else {
                    [true, false]
                };
                for enabled in order {
                    if enabled {
                        self.dp.attach_guards(&self.root.path, self.tier).unwrap();
                    } else {
                        for prog in enforcer::guards::EXEMPTION_PROGRAMS {
                            self.dp.detach_guard_program(prog.name).unwrap();
                        }
                    }
                    let out = at(&self.outside);
                    let pod = at(&self.guarded);
                    let row = vec![
                        num(&probe_run(out, &["bench-fork", &forks]), "fork_us="),
                        num(
                            &probe_run(out, &["bench-spawn", &spawns, &bin, "whoami"]),
                            "spawn_us=",
                        ),
                        num(&probe_run_as(pod, UID, &["bench-fork", &forks]), "fork_us="),
                        num(
                            &probe_run_as(pod, UID, &["bench-spawn", &spawns, &bin, "whoami"]),
                            "spawn_us=",
                        ),
                        num(
                            &probe_run(out, &["clone-into-cgroup", &dir, "bench-fork", &forks]),
                            "fork_us=",
                        ),
                    ];
                    if enabled {
                        with.push(row)
                    } else {
                        without.push(row)
                    }
                }
            }
            let med = |rows: &Vec<Vec<f64>>, i: usize| {
                let mut c: Vec<f64> = rows.iter().map(|r| r[i]).collect();
                c.sort_by(|a, b| a.partial_cmp(b).unwrap());
                c[c.len() / 2]
            };
            let mut out = format!(
                "exemption overhead, tier {} (median of {rounds} rounds; {forks} forks, \
                 {spawns} spawns per round; guards attached in both columns):\n",
                self.tier.name()
            );
            for (i, name) in names.iter().enumerate() {
                let (a, b) = (med(&with, i), med(&without, i));
                out.push_str(&format!(
                    "  {name:<30} with {a:>9.2}  without {b:>9.2}  ratio {:.3}\n",
                    a / b
                ));
            }
            // The programs' own cost, from the kernel's run statistics (which cost time
            // themselves, so they are on only for this last pass).
            self.dp.attach_guards(&self.root.path, self.tier).unwrap();
            const STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";
            let previous = fs::read_to_string(STATS).unwrap_or_else(|_| "0".into());
            fs::write(STATS, "1").expect("enable bpf stats");
            let progs = ["guard_fork", "guard_exec", "guard_cgroup_attach"];
            // (what, runs as uid UID in the guarded pod (else as root outside), args)
            let phases: [(&str, bool, Vec<&str>); 5] = [
                ("outside: forks", false, vec!["bench-fork", &forks]),
                (
                    "outside: fork+exec",
                    false,
                    vec!["bench-spawn", &spawns, &bin, "whoami"],
                ),
                (
                    "pod: fork+exec",
                    true,
                    vec!["bench-spawn", &spawns, &bin, "whoami"],
                ),
                (
                    "exempt task: forks",
                    false,
                    vec!["clone-into-cgroup", &dir, "bench-fork", &forks],
                ),
                (
                    "migrations",
                    false,
                    vec!["migrate-into-cgroup", &dir, "bench-fork", "1"],
                ),
            ];
            for (phase, in_pod, args) in &phases {
                let before: Vec<_> = progs
                    .iter()
                    .map(|n| self.dp.program_run_stats(n).ok())
                    .collect();
                if *in_pod {
                    probe_run_as(at(&self.guarded), UID, args);
                } else {
                    probe_run(at(&self.outside), args);
                }
                for (n, b) in progs.iter().zip(before) {
                    let (Some((c0, t0)), Ok((c1, t1))) = (b, self.dp.program_run_stats(n)) else {
                        continue;
                    };
                    let runs = c1.saturating_sub(c0);
                    if runs > 0 {
                        out.push_str(&format!(
                            "  {phase:<20} program {n:<20} {runs:>6} runs, {:>6.0} ns per run\n",
                            (t1 - t0).as_nanos() as f64 / runs as f64
                        ));
                    }
                }
            }
            let _ = fs::write(STATS, previous.trim());
            out
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

/// The runtime exemption (`enforcer-ebpf/src/guards/exempt.rs`), exercised the same way in
/// both tiers: real tasks entering real pod cgroups the way container runtimes do
/// (`clone3(CLONE_INTO_CGROUP)` like runc >= 1.4, a write to `cgroup.procs` by the parent
/// like runc < 1.4), then doing guarded operations before and after their execs. Each
/// function takes a `GuardPods` whose guards include the ones it names.
///
/// A denied operation reads differently per tier: the LSM tier fails it with EPERM (the
/// probe prints `eperm` and exits 2), the fallback tier kills the process (SIGKILL). The
/// runs below report the entering child's end as `child exit:N` / `child signal:N`.
pub mod exemption {
    use enforcer::guards::Tier;
    use enforcer_common::*;

    use super::{
        Bg, ProbeRun,
        guard_pods::{GuardPods, UID, at},
        probe_bin, probe_run,
    };

    /// The probe's output, one entry per line.
    pub fn lines(r: &ProbeRun) -> Vec<String> {
        r.out.lines().map(|l| l.trim().to_string()).collect()
    }

    /// What the last lines look like when an in-process operation of the entering child
    /// (or of the program it exec'd) is denied.
    pub fn denied(tier: Tier) -> Vec<String> {
        match tier {
            Tier::Lsm => vec!["eperm".into(), "child exit:2".into()],
            Tier::Fallback => vec!["child signal:9".into()],
        }
    }

    fn expect(r: &ProbeRun, want: &[String], what: &str) {
        assert_eq!(lines(r), want, "{what}: {r:?}");
    }

    fn v(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    fn probe() -> String {
        probe_bin().to_str().unwrap().to_string()
    }

    /// The inode number of this process's mount namespace: what a creation mark records
    /// for a runtime task started from here.
    fn own_mnt_ns() -> u32 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self/ns/mnt")
            .expect("stat /proc/self/ns/mnt")
            .ino() as u32
    }

    /// (1) `clone3(CLONE_INTO_CGROUP)` from outside the pods into an armed container, the
    /// way runc 1.4 runs `runc exec`: the new task's operations are allowed, so are those
    /// of the runtime binary it execs first (from the runtime's mount namespace); from its
    /// second exec (the workload's) on, they are denied. Needs dangerous-capabilities and
    /// mount.
    pub fn clone_path(p: &mut GuardPods, mountpoint: &str) {
        let ctr = p.armed_container("ctr-clone");
        let (probe, dir) = (probe(), ctr.path.to_str().unwrap().to_string());
        let r = probe_run(
            at(&p.outside),
            &[
                "clone-into-cgroup",
                &dir,
                "then",
                "unshare",
                "uts",
                "--",
                &probe,
                "then",
                "mount-tmpfs",
                mountpoint,
                "--",
                &probe,
                "unshare",
                "mnt",
            ],
        );
        let mut want = v(&["ok", "ok"]);
        want.extend(denied(p.tier));
        expect(
            &r,
            &want,
            "created into the cgroup: before exec, after the first, after the second",
        );
        let denies = p.events_of(ctr.id(), GUARD_DANGEROUS_CAPABILITIES, VERDICT_DENY);
        assert_eq!(
            denies.len(),
            1,
            "only the workload's unshare is denied: {denies:#?}"
        );
        let mounts = p.events_of(ctr.id(), GUARD_MOUNT, VERDICT_DENY);
        assert!(
            mounts.is_empty(),
            "the exempt mount passed silently: {mounts:#?}"
        );
    }

    /// (1b) `clone3(CLONE_INTO_CGROUP)`, then the task joins another mount namespace (the
    /// container's) and execs the command directly, as crun runs exec sessions: that
    /// first exec is already the workload's, so it ends the exemption and is checked.
    /// Needs dangerous-capabilities.
    pub fn clone_path_direct_exec(p: &mut GuardPods) {
        let ctr = p.armed_container("ctr-direct");
        let (probe, dir) = (probe(), ctr.path.to_str().unwrap().to_string());
        let r = probe_run(
            at(&p.outside),
            &[
                "clone-into-cgroup",
                &dir,
                "then",
                "unshare",
                "mnt",
                "--",
                &probe,
                "unshare",
                "uts",
            ],
        );
        let mut want = v(&["ok"]);
        want.extend(denied(p.tier));
        expect(
            &r,
            &want,
            "created into the cgroup, joined another mount namespace: before exec, after it",
        );
        let denies = p.events_of(ctr.id(), GUARD_DANGEROUS_CAPABILITIES, VERDICT_DENY);
        assert_eq!(
            denies.len(),
            1,
            "the workload's unshare is denied, the runtime's was not: {denies:#?}"
        );
    }

    /// (2) Migration: a child written into the armed container's cgroup.procs by its
    /// parent outside the pods may operate until its exec; the exec'd workload may not.
    /// Moving oneself, or being moved by a task inside the pods, exempts nothing. Needs
    /// dangerous-capabilities.
    pub fn migration_path(p: &mut GuardPods) {
        let ctr = p.armed_container("ctr-migr");
        let other = p.armed_container("ctr-other");
        let (probe, dir) = (probe(), ctr.path.to_str().unwrap().to_string());
        let r = probe_run(
            at(&p.outside),
            &[
                "migrate-into-cgroup",
                &dir,
                "then",
                "unshare",
                "mnt",
                "--",
                &probe,
                "unshare",
                "mnt",
            ],
        );
        let mut want = v(&["ok"]);
        want.extend(denied(p.tier));
        expect(&r, &want, "migrated by its parent: before exec, after");
        let r = probe_run(
            at(&p.outside),
            &["migrate-into-cgroup", &dir, "--self", "unshare", "mnt"],
        );
        expect(&r, &denied(p.tier), "moved itself from outside");
        // A workload process of `other` writes its child into `ctr`.
        let r = probe_run(at(&other), &["migrate-into-cgroup", &dir, "unshare", "mnt"]);
        expect(&r, &denied(p.tier), "moved by a task inside the pods");
        // The harness itself (`place_command`) moves the probe before its exec: the probe
        // is the workload, exempt from nothing.
        let bg = Bg::spawn(at(&ctr), &["sleep", "60000"]);
        assert_eq!(
            p.exemption(bg.child.id()),
            None,
            "a self-moved process has no mark"
        );
    }

    /// (2b) runc before 1.2: the migrated `runc init` re-executes itself from a memfd copy
    /// (`fexecve`) at start, racing with its parent's move. That exec of an open file,
    /// from the mover's mount namespace, is the runtime's: the task stays exempt (its
    /// `setns()`-like work passes) until the workload's exec, which is checked. Found on
    /// a real node, where the re-exec ended the mark and `runc:[1:CHILD]`'s setns was
    /// denied. The same re-exec from another mount namespace is taken for the
    /// workload's. Needs dangerous-capabilities.
    pub fn migration_then_runtime_reexec(p: &mut GuardPods) {
        let ctr = p.armed_container("ctr-reexec");
        let (probe, dir) = (probe(), ctr.path.to_str().unwrap().to_string());
        let r = probe_run(
            at(&p.outside),
            &[
                "migrate-into-cgroup",
                &dir,
                "fexec-self",
                "then",
                "unshare",
                "uts",
                "--",
                &probe,
                "unshare",
                "mnt",
            ],
        );
        let mut want = v(&["ok"]);
        want.extend(denied(p.tier));
        expect(
            &r,
            &want,
            "migrated, re-exec'd from a memfd: before the workload's exec, after it",
        );
        let denies = p.events_of(ctr.id(), GUARD_DANGEROUS_CAPABILITIES, VERDICT_DENY);
        assert_eq!(denies.len(), 1, "only the workload's unshare: {denies:#?}");
        // From another mount namespace (a workload that joined the container's), an
        // exec of an open file ends the mark like any exec.
        let r = probe_run(
            at(&p.outside),
            &[
                "migrate-into-cgroup",
                &dir,
                "fexec-self",
                "--unshare-mnt",
                "unshare",
                "uts",
            ],
        );
        expect(
            &r,
            &denied(p.tier),
            "re-exec'd from another mount namespace",
        );
    }

    /// (3) A workload started inside the pod, and its forks, stay guarded while an exempt
    /// runtime task shares their cgroup; its `CLONE_INTO_CGROUP` children get nothing.
    /// Needs dangerous-capabilities.
    pub fn workload_gets_nothing(p: &mut GuardPods) {
        let ctr = p.armed_container("ctr-wl");
        let other = p.armed_container("ctr-wl2");
        let (probe, dir) = (probe(), ctr.path.to_str().unwrap().to_string());
        // A runtime task after its first exec (`runc init`), parked in the container.
        let (runtime, rt_pid) = Bg::spawn_ready(
            at(&p.outside),
            &["clone-into-cgroup", &dir, "exec", &probe, "sleep", "60000"],
        );
        let rt_pid = rt_pid.expect("pid of the parked runtime task");
        assert_eq!(
            p.exemption(rt_pid),
            Some(ExemptTask {
                cgroup_id: ctr.id(),
                remaining: 1,
                via: EXEMPT_VIA_CLONE,
                mnt_ns: own_mnt_ns(),
                _pad: 0,
            }),
            "the runtime task's mark after its first exec"
        );
        let r = probe_run(at(&ctr), &["in-child", "unshare", "mnt"]);
        expect(&r, &denied(p.tier), "a fork of the workload");
        let r = probe_run(
            at(&ctr),
            &[
                "clone-into-cgroup",
                other.path.to_str().unwrap(),
                "unshare",
                "mnt",
            ],
        );
        expect(&r, &denied(p.tier), "CLONE_INTO_CGROUP by the workload");
        let r = probe_run(at(&ctr), &["clone-into-cgroup", &dir, "unshare", "mnt"]);
        expect(
            &r,
            &denied(p.tier),
            "CLONE_INTO_CGROUP by the workload into its own cgroup",
        );
        let wl = Bg::spawn(at(&ctr), &["sleep", "60000"]);
        assert_eq!(p.exemption(wl.child.id()), None, "the workload has no mark");
        drop(runtime);
    }

    /// (4) A fork of an exempt task inherits its mark and count: before the runtime's
    /// first exec both execs remain; after it, the fork's own exec is the workload's.
    /// Needs dangerous-capabilities.
    pub fn inheritance(p: &mut GuardPods) {
        let ctr = p.armed_container("ctr-inh");
        let (probe, dir) = (probe(), ctr.path.to_str().unwrap().to_string());
        let r = probe_run(
            at(&p.outside),
            &["clone-into-cgroup", &dir, "in-child", "unshare", "mnt"],
        );
        expect(
            &r,
            &v(&["ok", "child exit:0", "child exit:0"]),
            "fork of the new task",
        );
        let r = probe_run(
            at(&p.outside),
            &[
                "clone-into-cgroup",
                &dir,
                "then",
                "--",
                &probe,
                "in-child",
                "then",
                "unshare",
                "mnt",
                "--",
                &probe,
                "unshare",
                "mnt",
            ],
        );
        let mut want = v(&["ok"]);
        want.extend(denied(p.tier));
        want.push("child exit:0".into());
        expect(
            &r,
            &want,
            "fork after the runtime's exec: allowed, its exec ends it",
        );
        let (_parked, pid) = Bg::spawn_ready(
            at(&p.outside),
            &[
                "clone-into-cgroup",
                &dir,
                "in-child",
                "exec",
                &probe,
                "sleep",
                "60000",
            ],
        );
        let pid = pid.expect("pid of the parked fork");
        assert_eq!(
            p.exemption(pid),
            Some(ExemptTask {
                cgroup_id: ctr.id(),
                remaining: 1,
                via: EXEMPT_VIA_CLONE | EXEMPT_INHERITED,
                mnt_ns: own_mnt_ns(),
                _pad: 0,
            }),
            "an inherited mark after one exec"
        );
    }

    /// (5) Under restricted (root-exec): the runtime's own exec as root passes, the
    /// workload's exec as root does not, on both entry paths; a non-root workload exec
    /// passes. `plain` is a copy of the probe. Needs root-escalation, root-exec and
    /// dangerous-capabilities.
    pub fn restricted(p: &mut GuardPods, plain: &str) {
        let ctr = p.armed_container("ctr-rx");
        let dir = ctr.path.to_str().unwrap().to_string();
        let uid = UID.to_string();
        let r = probe_run(
            at(&p.outside),
            &[
                "clone-into-cgroup",
                &dir,
                "exec",
                plain,
                "then",
                "unshare",
                "mnt",
                "--",
                plain,
                "whoami",
            ],
        );
        let mut want = v(&["ok"]);
        want.extend(denied(p.tier));
        expect(
            &r,
            &want,
            "created: runtime exec as root, then the workload's as root",
        );
        let e = p.assert_event(
            ctr.id(),
            GUARD_ROOT_EXEC,
            VERDICT_DENY,
            "workload exec as root",
        );
        assert_eq!(
            enforcer::guards::detail_text(&e.detail),
            plain,
            "the denied binary"
        );
        let r = probe_run(
            at(&p.outside),
            &[
                "clone-into-cgroup",
                &dir,
                "exec",
                plain,
                "as-user",
                &uid,
                "exec",
                plain,
                "whoami",
            ],
        );
        let l = lines(&r);
        assert!(
            l[0].starts_with("uid=1000 euid=1000"),
            "non-root workload exec: {r:?}"
        );
        assert_eq!(l[1..], v(&["child exit:0"]), "{r:?}");
        let r = probe_run(
            at(&p.outside),
            &["migrate-into-cgroup", &dir, "exec", plain, "whoami"],
        );
        let want = match p.tier {
            // The exec itself fails: `exec` prints its errno word.
            Tier::Lsm => v(&["eperm", "child exit:2"]),
            Tier::Fallback => v(&["child signal:9"]),
        };
        expect(&r, &want, "migrated: the workload's exec as root");
        let r = probe_run(
            at(&p.outside),
            &[
                "migrate-into-cgroup",
                &dir,
                "as-user",
                &uid,
                "exec",
                plain,
                "whoami",
            ],
        );
        assert!(
            lines(&r)[0].starts_with("uid=1000 euid=1000"),
            "migrated, non-root: {r:?}"
        );
    }

    /// The cgroup programs cannot read the exemption (see `exempt.rs`): in an armed
    /// container an exempt task's sysctl write and host device open are denied (EPERM in
    /// both tiers), and so is a raw IP socket in the fallback tier (cgroup/sock_create);
    /// the LSM tier's socket_create hook lets the exempt task have it. `netns` is a network
    /// namespace the test owns (its sysctl is the one written), `kmsg` a device node of
    /// /dev/kmsg (1:11). Needs sysctl-write, host-devices and raw-sockets.
    pub fn cgroup_programs(p: &mut GuardPods, netns: &super::Netns, kmsg: &str) {
        let ctr = p.armed_container("ctr-cg");
        let dir = ctr.path.to_str().unwrap().to_string();
        let key = "/proc/sys/net/ipv4/ip_unprivileged_port_start";
        let outside = super::Place {
            netns: Some(netns),
            cgroup: Some(&p.outside.path),
        };
        let cases: [(&[&str], &str); 3] = [
            (&["write-file", key, "1000"], "eperm"),
            (&["open", kmsg, "r"], "eperm"),
            (
                &["socket", "raw4"],
                if p.tier == Tier::Lsm { "ok" } else { "eperm" },
            ),
        ];
        for (op, want) in cases {
            let mut args = vec!["clone-into-cgroup", dir.as_str()];
            args.extend_from_slice(op);
            let r = probe_run(outside, &args);
            assert_eq!(lines(&r)[0], want, "exempt task: {op:?}: {r:?}");
        }
        p.assert_event(
            ctr.id(),
            GUARD_SYSCTL_WRITE,
            VERDICT_DENY,
            "exempt sysctl write",
        );
        p.assert_event(
            ctr.id(),
            GUARD_HOST_DEVICES,
            VERDICT_DENY,
            "exempt device open",
        );
    }

    /// (6) Exempt execs do not arm a fresh container cgroup; the exec that ends the
    /// exemption (the entrypoint's) does, and is not checked, as every arming exec. Needs
    /// root-exec (to show the arming exec is not checked).
    pub fn arming(p: &mut GuardPods) {
        let probe = probe();
        let fresh = p.guarded.child("ctr-fresh");
        let dir = fresh.path.to_str().unwrap().to_string();
        let r = probe_run(
            at(&p.outside),
            &["clone-into-cgroup", &dir, "exec", &probe, "whoami"],
        );
        assert_eq!(
            lines(&r).last().map(String::as_str),
            Some("child exit:0"),
            "{r:?}"
        );
        assert!(
            !p.is_armed(fresh.id()),
            "the runtime's own exec does not arm"
        );
        let r = probe_run(
            at(&p.outside),
            &[
                "clone-into-cgroup",
                &dir,
                "exec",
                &probe,
                "exec",
                &probe,
                "whoami",
            ],
        );
        let l = lines(&r);
        assert!(
            l[0].starts_with("uid=0 euid=0"),
            "the entrypoint's exec as root, unchecked: {r:?}"
        );
        assert!(p.is_armed(fresh.id()), "the entrypoint's exec arms");
        let armed = p.dp.armed_cgroups().unwrap();
        assert!(armed.contains(&(fresh.id(), ARM_EXEC)), "{armed:?}");
        let fresh2 = p.guarded.child("ctr-fresh2");
        let r = probe_run(
            at(&p.outside),
            &[
                "migrate-into-cgroup",
                fresh2.path.to_str().unwrap(),
                "exec",
                &probe,
                "whoami",
            ],
        );
        assert!(
            lines(&r)[0].starts_with("uid=0 euid=0"),
            "migrated, entrypoint exec: {r:?}"
        );
        assert!(p.is_armed(fresh2.id()), "the migrated task's exec arms");
    }
}

/// A program attached to a cgroup the way a tool without multi-attach support attaches
/// one (`BPF_PROG_ATTACH` with no flags), which forbids attaching programs of that type
/// anywhere below it. It allows everything. Detached and closed on drop.
pub struct ExclusiveCgroupProgram {
    prog: std::os::fd::OwnedFd,
    cgroup: std::fs::File,
    attach_type: u32,
}

/// `BPF_CGROUP_INET_EGRESS`.
pub const BPF_CGROUP_INET_EGRESS: u32 = 1;

impl ExclusiveCgroupProgram {
    /// A cgroup_skb program returning 1, attached to `cgroup` for `attach_type`.
    pub fn attach(cgroup: &Path, attach_type: u32) -> std::io::Result<Self> {
        use std::os::fd::FromRawFd;
        // r0 = 1; exit
        let insns: [u64; 2] = [
            u64::from_le_bytes([0xb7, 0, 0, 0, 1, 0, 0, 0]),
            u64::from_le_bytes([0x95, 0, 0, 0, 0, 0, 0, 0]),
        ];
        let license = b"GPL\0";
        // union bpf_attr for BPF_PROG_LOAD: prog_type, insn_cnt, insns, license.
        let mut attr = [0u8; 128];
        attr[0..4].copy_from_slice(&8u32.to_ne_bytes()); // BPF_PROG_TYPE_CGROUP_SKB
        attr[4..8].copy_from_slice(&2u32.to_ne_bytes());
        attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
        attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
        attr[48..54].copy_from_slice(b"excl_t");
        // SAFETY: a valid BPF_PROG_LOAD attribute block; the pointers outlive the call.
        let fd = unsafe { libc::syscall(libc::SYS_bpf, 5, attr.as_mut_ptr(), attr.len()) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the kernel just returned this descriptor to us.
        let prog = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) };
        let cgroup = std::fs::File::open(cgroup)?;
        let this = Self {
            prog,
            cgroup,
            attach_type,
        };
        this.call(8, 0)?; // BPF_PROG_ATTACH, no flags
        Ok(this)
    }

    fn call(&self, cmd: libc::c_long, flags: u32) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        let mut attr = [0u8; 128];
        attr[0..4].copy_from_slice(&(self.cgroup.as_raw_fd() as u32).to_ne_bytes());
        attr[4..8].copy_from_slice(&(self.prog.as_raw_fd() as u32).to_ne_bytes());
        attr[8..12].copy_from_slice(&self.attach_type.to_ne_bytes());
        attr[12..16].copy_from_slice(&flags.to_ne_bytes());
        // SAFETY: a valid BPF_PROG_ATTACH/DETACH attribute block.
        let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for ExclusiveCgroupProgram {
    fn drop(&mut self) {
        let _ = self.call(9, 0); // BPF_PROG_DETACH
    }
}
