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
}

impl Netns {
    pub fn new(prefix: &str) -> Self {
        let name = unique(prefix);
        sh("ip", &["netns", "add", &name]);
        let ns = Self { name };
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

impl Drop for Netns {
    fn drop(&mut self) {
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
            if let Some(ns) = &ns_fd
                && libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0
            {
                return Err(std::io::Error::last_os_error());
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
