//! The VM tier: boot Debian's kernels (6.1 and 6.12, BPF LSM active) under QEMU/TCG and run
//! test binaries inside them.
//!
//! The guest sees the host's root filesystem read-only over virtio-9p, under an overlayfs
//! whose upper layer is a tmpfs, so the host's (dynamically linked) test binaries, `ip`,
//! and the rest of the userland run unchanged. A second, writable 9p share carries the run
//! script in and the per-test logs and exit codes out; it is mounted at the same path in
//! the guest as on the host. The kernel package's modules are bind-mounted at
//! /lib/modules/<kver> so that `modprobe` (veth, sctp...) works in the guest.
//!
//! Each test runs alone (`--exact`) under `timeout`; the whole VM has a deadline after
//! which QEMU is killed. A test with no recorded exit code failed (the VM died or hung).

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::Read,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{setup::VmKernel, util::root};

/// Modules the initramfs loads to reach the host filesystem.
const BOOT_MODULES: &[&str] = &["virtio_pci", "9pnet_virtio", "9p", "overlay"];

/// Per-test limit inside the guest (TCG is ~20x slower than the host for CPU work).
const TEST_TIMEOUT_S: u64 = 240;

#[derive(Clone, Debug)]
pub struct VmTest {
    pub binary: PathBuf,
    pub name: String,
}

impl VmTest {
    /// The test executable's file name (`vm_guards-0123abcd`).
    pub fn binary_name(&self) -> String {
        self.binary
            .file_name()
            .map_or(String::new(), |f| f.to_string_lossy().into_owned())
    }
}

#[derive(Debug)]
pub struct VmResult {
    pub binary: String,
    pub name: String,
    /// Some(0) pass, Some(124) timed out, Some(n) failed, None never finished.
    pub rc: Option<i32>,
    pub log: String,
    pub skipped: Option<String>,
}

fn kernel(k: VmKernel) -> Result<(PathBuf, String)> {
    let dir = k
        .dir()
        .filter(|d| d.join("ready").exists())
        .with_context(|| {
            format!(
                "the VM kernel {} is not unpacked: run `cargo xtask setup`",
                k.label
            )
        })?;
    let kver = fs::read_to_string(dir.join("kver"))?.trim().to_string();
    Ok((dir, kver))
}

/// A module's name from its file name (`veth.ko`, `veth.ko.xz`, `9pnet-virtio.ko`).
fn module_name(file: &str) -> String {
    let f = Path::new(file)
        .file_name()
        .map_or(file.into(), |f| f.to_string_lossy());
    f.trim_end_matches(".xz")
        .trim_end_matches(".zst")
        .trim_end_matches(".ko")
        .replace('-', "_")
}

/// Resolve module load order (dependencies first) from modules.dep.
fn module_order(modroot: &Path, wanted: &[&str]) -> Result<Vec<PathBuf>> {
    let dep = fs::read_to_string(modroot.join("modules.dep"))
        .with_context(|| format!("{}/modules.dep", modroot.display()))?;
    let mut deps: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for line in dep.lines() {
        let Some((m, rest)) = line.split_once(':') else {
            continue;
        };
        let name = module_name(m);
        let ds = rest.split_whitespace().map(module_name).collect();
        deps.insert(name, (m.to_string(), ds));
    }
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    fn visit(
        m: &str,
        deps: &BTreeMap<String, (String, Vec<String>)>,
        seen: &mut BTreeSet<String>,
        order: &mut Vec<PathBuf>,
    ) -> Result<()> {
        if !seen.insert(m.to_string()) {
            return Ok(());
        }
        let (path, ds) = deps
            .get(m)
            .with_context(|| format!("module {m} is not in modules.dep (built in?)"))?;
        for d in ds {
            visit(d, deps, seen, order)?;
        }
        order.push(PathBuf::from(path));
        Ok(())
    }
    // Built into this kernel (6.12 has virtio_pci built in): nothing to load.
    let builtin: BTreeSet<String> = fs::read_to_string(modroot.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .map(module_name)
        .collect();
    for w in wanted {
        let w = w.replace('-', "_");
        if !deps.contains_key(&w) && builtin.contains(&w) {
            continue;
        }
        visit(&w, &deps, &mut seen, &mut order)?;
    }
    Ok(order)
}

fn build_initramfs(work: &Path, kdir: &Path, kver: &str) -> Result<PathBuf> {
    let tree = work.join("initramfs");
    let _ = fs::remove_dir_all(&tree);
    for d in [
        "bin", "sbin", "modules", "proc", "sys", "dev", "host", "newroot", "upper",
    ] {
        fs::create_dir_all(tree.join(d))?;
    }
    fs::copy("/bin/busybox", tree.join("bin/busybox"))
        .context("/bin/busybox (busybox-static) is missing: run `cargo xtask setup`")?;
    let modroot = kdir.join("root/lib/modules").join(kver);
    let mut names = Vec::new();
    for m in module_order(&modroot, BOOT_MODULES)? {
        let file = m.file_name().unwrap().to_string_lossy().into_owned();
        // busybox insmod takes plain .ko files: 6.12's packages compress them.
        let name = format!("{}.ko", file.split(".ko").next().unwrap_or(&file));
        let dest = tree.join("modules").join(&name);
        if file.ends_with(".xz") {
            let out = Command::new("xz")
                .arg("-dc")
                .arg(modroot.join(&m))
                .output()?;
            if !out.status.success() {
                bail!(
                    "decompressing {}: {}",
                    m.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            fs::write(&dest, out.stdout)?;
        } else {
            fs::copy(modroot.join(&m), &dest)?;
        }
        names.push(name);
    }
    fs::write(tree.join("modules/order"), names.join("\n") + "\n")?;
    let init = tree.join("init");
    fs::write(&init, INIT)?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&init, fs::Permissions::from_mode(0o755))?;
    // The kernel runs /sbin/modprobe (module autoloading: veth, sctp...) in the initramfs
    // root, not in the chroot where the userland and the modules are: hand it over.
    let modprobe = tree.join("sbin/modprobe");
    fs::write(
        &modprobe,
        "#!/bin/busybox sh\nexec /bin/busybox chroot /newroot /sbin/modprobe \"$@\"\n",
    )?;
    fs::set_permissions(&modprobe, fs::Permissions::from_mode(0o755))?;
    let out = work.join("initramfs.cpio");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd '{}' && find . | cpio -o -H newc --quiet > '{}'",
            tree.display(),
            out.display()
        ))
        .status()?;
    if !status.success() {
        bail!("building the initramfs failed");
    }
    Ok(out)
}

/// The guest's PID 1 (busybox sh). `@RESULTS@` and `@MODULES@` are substituted.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /modules/order); do insmod /modules/$m || echo "init: insmod $m failed"; done
opts=trans=virtio,version=9p2000.L,msize=524288,cache=loose
mount -t 9p -o $opts,ro hostroot /host || { echo "init: cannot mount host root"; poweroff -f; }
mount -t tmpfs -o size=1g tmpfs /upper
mkdir -p /upper/u /upper/w
mount -t overlay overlay -o lowerdir=/host,upperdir=/upper/u,workdir=/upper/w /newroot || { echo "init: overlay failed"; poweroff -f; }
R=$(cat /proc/cmdline | tr ' ' '\n' | sed -n 's/^enforcer.results=//p')
K=$(cat /proc/cmdline | tr ' ' '\n' | sed -n 's/^enforcer.modules=//p')
mkdir -p /newroot$R
mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288 results /newroot$R
mount -t proc proc /newroot/proc
mount -t sysfs sys /newroot/sys
mount -t devtmpfs dev /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts devpts /newroot/dev/pts
mount -t tmpfs tmpfs /newroot/dev/shm
# Fresh /run and /tmp, unless the checkout is below one of them (a clone in /tmp): a
# tmpfs there would hide the test binaries and the results share; the overlay's tmpfs
# upper layer keeps them writable anyway.
case "$R/" in /run/*) ;; *) mount -t tmpfs tmpfs /newroot/run ;; esac
case "$R/" in /tmp/*) ;; *) mount -t tmpfs tmpfs /newroot/tmp ;; esac
mount -t cgroup2 cgroup2 /newroot/sys/fs/cgroup
mount -t bpf bpf /newroot/sys/fs/bpf
mount -t securityfs securityfs /newroot/sys/kernel/security
mount -t tracefs tracefs /newroot/sys/kernel/tracing 2>/dev/null
KV=$(uname -r)
mkdir -p /newroot/lib/modules/$KV
mount --bind /newroot$K /newroot/lib/modules/$KV
echo "init: guest ready, kernel $KV, lsm=$(cat /newroot/sys/kernel/security/lsm)"
chroot /newroot /bin/sh $R/run.sh
echo "init: tests finished"
sync
poweroff -f
"#;

/// Run `tests` in one VM booting kernel `k`. `extra_env` is passed to every test.
pub fn run(k: VmKernel, tests: &[VmTest], extra_env: &[(String, String)]) -> Result<Vec<VmResult>> {
    let (kdir, kver) = kernel(k)?;
    let work = root().join("target/vm");
    fs::create_dir_all(&work)?;
    let results = work.join(format!("run-{}", std::process::id()));
    let _ = fs::remove_dir_all(&results);
    fs::create_dir_all(&results)?;
    // Per run (concurrent runs must not share it), removed with the run directory below.
    let initramfs = build_initramfs(&results, &kdir, &kver)?;
    // Keep only the latest runs' directories.
    if let Ok(entries) = fs::read_dir(&work) {
        let mut runs: Vec<_> = entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("run-"))
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        runs.sort();
        let n = runs.len().saturating_sub(6);
        for (_, old) in runs.into_iter().take(n) {
            let _ = fs::remove_dir_all(old);
        }
    }

    // The run script: one line per test, results into the shared directory.
    let mut script = String::from("set +e\n");
    script.push_str("export ENFORCER_VM=1 RUST_BACKTRACE=1 HOME=/root\n");
    script.push_str(&format!(
        "export ENFORCER_SKIP_LOG={}/skips\n",
        results.display()
    ));
    for (k, v) in extra_env {
        script.push_str(&format!("export {k}='{v}'\n"));
    }
    script.push_str("export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n");
    script.push_str(&format!("cd {}\n", results.display()));
    for (i, t) in tests.iter().enumerate() {
        script.push_str(&format!(
            "echo '>>> {name}'; timeout -k 5 {TEST_TIMEOUT_S} '{bin}' --exact '{name}' --test-threads=1 --nocapture > {i}.log 2>&1; echo $? > {i}.rc; echo \"<<< {name} rc=$(cat {i}.rc)\"\n",
            name = t.name,
            bin = t.binary.display(),
        ));
    }
    fs::write(results.join("run.sh"), script)?;

    let deadline = Duration::from_secs(120 + TEST_TIMEOUT_S * tests.len() as u64 / 2);
    let console = results.join("console.log");
    let append = format!(
        "console=ttyS0 panic=-1 pci=noacpi tsc=reliable no_timer_check cryptomgr.notests \
         mitigations=off rdinit=/init quiet loglevel=4 enforcer.results={} enforcer.modules={}",
        results.display(),
        kdir.join("root/lib/modules").join(&kver).display()
    );
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-accel", "tcg", "-cpu", "max", "-m", "2048", "-smp", "2"])
        .args(["-display", "none", "-monitor", "none", "-no-reboot"])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-kernel")
        .arg(kdir.join("vmlinux"))
        .arg("-initrd")
        .arg(&initramfs)
        .args(["-append", &append])
        .arg("-virtfs")
        .arg("local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap")
        .arg("-virtfs")
        .arg(format!(
            "local,path={},mount_tag=results,security_model=none,multidevs=remap",
            results.display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    eprintln!(
        "vm: booting {kver} under QEMU/TCG for {} test(s) (deadline {:?})",
        tests.len(),
        deadline
    );
    let start = Instant::now();
    let mut child = cmd.spawn().context("starting qemu-system-x86_64")?;
    let mut timed_out = false;
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if start.elapsed() > deadline {
            timed_out = true;
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut qerr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut qerr);
    }
    eprintln!(
        "vm: finished in {:.1?}{}",
        start.elapsed(),
        if timed_out {
            " (KILLED at deadline)"
        } else {
            ""
        }
    );

    let skips = fs::read_to_string(results.join("skips")).unwrap_or_default();
    let mut out = Vec::new();
    for (i, t) in tests.iter().enumerate() {
        let rc = fs::read_to_string(results.join(format!("{i}.rc")))
            .ok()
            .and_then(|s| s.trim().parse().ok());
        let log = fs::read_to_string(results.join(format!("{i}.log"))).unwrap_or_default();
        let skipped = skips.lines().find_map(|l| {
            l.split_once('\t')
                .filter(|(n, _)| *n == t.name)
                .map(|(_, r)| r.to_string())
        });
        out.push(VmResult {
            binary: t.binary.file_name().unwrap().to_string_lossy().into_owned(),
            name: t.name.clone(),
            rc,
            log,
            skipped,
        });
    }
    if out.iter().any(|r| r.rc.is_none()) || timed_out {
        let c = fs::read_to_string(&console).unwrap_or_default();
        let tail: Vec<&str> = c.lines().rev().take(60).collect();
        eprintln!("vm: console (last 60 lines):");
        for l in tail.iter().rev() {
            eprintln!("  | {l}");
        }
        if !qerr.is_empty() {
            eprintln!("vm: qemu stderr: {qerr}");
        }
    }
    Ok(out)
}
