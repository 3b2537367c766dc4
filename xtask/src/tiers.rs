//! `cargo xtask test`: the test tiers.
//!
//! - `lint`: rustfmt and clippy (`-D warnings`) on the workspace and on the eBPF crate, and
//!   the deploy check (`deploy_check`: the manifests under deploy/).
//! - `unit`: pure Rust tests of every crate except the kernel suites; no privileges.
//! - `kernel`: `enforcer-tests` suites (every `tests/tests/*.rs` not starting with `vm_`),
//!   run as root on this machine's kernel, one test at a time (kernel state is shared).
//! - `vm`: the `vm_*` suites, run inside Debian's 6.1 kernel under QEMU (BPF LSM active).
//! - `cluster`: the real single-node Kubernetes cluster (`cargo xtask cluster`), the
//!   DaemonSet, the `cluster_*` suites and the upstream NetworkPolicy e2e suite
//!   (`cluster::tier`).
//!
//! Each tier prints its own counts; a test that skipped (missing kernel feature, not root)
//! is counted as skipped with its reason, never as passed.

use std::{
    collections::BTreeMap,
    fs,
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context, Result, bail};

use crate::{
    util::{display, is_root, root},
    vm,
};

pub const ALL: &[&str] = &["lint", "unit", "fuzz", "kernel", "vm", "cluster"];

#[derive(Default)]
pub struct Tally {
    pub tier: String,
    pub passed: usize,
    pub failed: Vec<String>,
    pub skipped: Vec<(String, String)>,
    pub ignored: usize,
    pub secs: f64,
    /// The whole tier could not run (reason).
    pub not_run: Option<String>,
}

impl Tally {
    pub fn new(tier: &str) -> Self {
        Self {
            tier: tier.into(),
            ..Default::default()
        }
    }

    pub fn line(&self) -> String {
        if let Some(r) = &self.not_run {
            return format!("tier {:<6} SKIPPED ENTIRELY: {r}", self.tier);
        }
        format!(
            "tier {:<6} {:>4} passed, {:>2} failed, {:>2} skipped, {:>2} ignored  ({:.0}s)",
            self.tier,
            self.passed,
            self.failed.len(),
            self.skipped.len(),
            self.ignored,
            self.secs
        )
    }

    pub fn ok(&self) -> bool {
        self.failed.is_empty() && self.ignored == 0
    }
}

/// Run a libtest-style command, echoing its output, and count results. `skip_log` is read
/// afterwards: tests named in it move from passed to skipped.
pub fn run_libtest(
    cmd: &mut Command,
    tally: &mut Tally,
    skip_log: Option<&PathBuf>,
) -> Result<bool> {
    eprintln!("+ {}", display(cmd));
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| display(cmd))?;
    let stdout = child.stdout.take().unwrap();
    let mut passed_names = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test ")
            && let Some((name, result)) = rest.rsplit_once(" ... ")
        {
            match result.trim() {
                "ok" => passed_names.push(name.to_string()),
                "FAILED" => tally.failed.push(name.to_string()),
                r if r.starts_with("ignored") => tally.ignored += 1,
                _ => {}
            }
        }
    }
    let status = child.wait()?;
    let skips: BTreeMap<String, String> = skip_log
        .and_then(|p| fs::read_to_string(p).ok())
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(n, r)| (n.to_string(), r.to_string()))
        .collect();
    for name in passed_names {
        let short = name.rsplit("::").next().unwrap_or(&name).to_string();
        match skips.get(&short).or_else(|| skips.get(&name)) {
            Some(reason) => tally.skipped.push((name, reason.clone())),
            None => tally.passed += 1,
        }
    }
    Ok(status.success())
}

pub fn lint() -> Result<Tally> {
    let mut t = Tally::new("lint");
    let start = Instant::now();
    let root = root();
    let ebpf = root.join("enforcer-ebpf");
    let checks: Vec<(&str, Command)> = vec![
        ("rustfmt workspace", {
            let mut c = Command::new("cargo");
            c.args(["fmt", "--all", "--check"]).current_dir(&root);
            c
        }),
        ("rustfmt enforcer-ebpf", {
            let mut c = Command::new("cargo");
            c.args(["fmt", "--check"]).current_dir(&ebpf);
            c
        }),
        ("rustfmt fuzz", {
            let mut c = Command::new("cargo");
            c.args(["fmt", "--check"]).current_dir(root.join("fuzz"));
            c
        }),
        ("clippy workspace", {
            let mut c = Command::new("cargo");
            c.args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])
            .current_dir(&root);
            c
        }),
        ("clippy enforcer-ebpf", {
            // Checked for the host target with the rustup toolchain (clippy cannot drive
            // Debian's compiler); the code is target-independent apart from the helpers.
            let mut c = Command::new("cargo");
            c.args([
                "clippy",
                "--ignore-rust-version",
                "--target",
                "x86_64-unknown-linux-gnu",
                "--",
                "-D",
                "warnings",
            ])
            .current_dir(&ebpf)
            .env("CARGO_TARGET_DIR", root.join("target/ebpf-clippy"));
            c
        }),
        ("deploy manifests", crate::deploy_check::command()),
    ];
    for (name, mut cmd) in checks {
        eprintln!("+ {}", display(&cmd));
        let ok = cmd.status().map(|s| s.success()).unwrap_or(false);
        println!("lint {name} ... {}", if ok { "ok" } else { "FAILED" });
        if ok {
            t.passed += 1;
        } else {
            t.failed.push(name.into());
        }
    }
    t.secs = start.elapsed().as_secs_f64();
    Ok(t)
}

pub fn unit() -> Result<Tally> {
    let mut t = Tally::new("unit");
    let start = Instant::now();
    let mut cmd = Command::new("cargo");
    cmd.args(["test", "--workspace", "--exclude", "enforcer-tests"])
        .current_dir(root());
    let ok = run_libtest(&mut cmd, &mut t, None)?;
    if !ok && t.failed.is_empty() {
        t.failed
            .push("cargo test (build or harness failure)".into());
    }
    t.secs = start.elapsed().as_secs_f64();
    Ok(t)
}

/// Test targets of `enforcer-tests` and their executables (builds them).
pub fn test_executables() -> Result<Vec<(String, PathBuf)>> {
    let out = Command::new("cargo")
        .args([
            "test",
            "-p",
            "enforcer-tests",
            "--no-run",
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(root())
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        bail!("building enforcer-tests failed");
    }
    let mut exes = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["reason"] != "compiler-artifact" || v["profile"]["test"] != true {
            continue;
        }
        let kinds = v["target"]["kind"].as_array().cloned().unwrap_or_default();
        if !kinds.iter().any(|k| k == "test") {
            continue;
        }
        if let (Some(name), Some(exe)) = (v["target"]["name"].as_str(), v["executable"].as_str()) {
            exes.push((name.to_string(), PathBuf::from(exe)));
        }
    }
    exes.sort();
    Ok(exes)
}

pub fn probe_path() -> PathBuf {
    root().join("target/debug/enforcer-probe")
}

pub fn agent_path() -> PathBuf {
    root().join("target/debug/enforcer")
}

/// Build the `enforcer` binary (integration tests of another package do not build it).
pub fn build_agent() -> Result<()> {
    crate::util::run(
        Command::new("cargo")
            .args(["build", "-p", "enforcer-user", "--bin", "enforcer"])
            .current_dir(root()),
    )
}

/// Test functions whose name contains this are benchmarks (they measure, they do not
/// judge): the tiers leave them out and `cargo xtask bench` runs them.
pub const BENCH_PREFIX: &str = "bench_";

/// Run the `bench_*` functions of the kernel suites on this host and of the `vm_*` suites
/// in the VM, printing what they report. Fails if one fails.
pub fn guard_benches(vm_too: bool) -> Result<()> {
    build_agent()?;
    let mut vm_tests = Vec::new();
    let mut failed = Vec::new();
    for (name, exe) in test_executables()? {
        let list = Command::new(&exe)
            .args(["--list", "--format", "terse"])
            .output()?;
        let benches: Vec<String> = String::from_utf8_lossy(&list.stdout)
            .lines()
            .filter_map(|l| l.strip_suffix(": test"))
            .filter(|t| t.starts_with(BENCH_PREFIX))
            .map(str::to_string)
            .collect();
        if benches.is_empty() {
            continue;
        }
        if name.starts_with("vm_") {
            vm_tests.extend(benches.into_iter().map(|t| vm::VmTest {
                binary: exe.clone(),
                name: t,
            }));
            continue;
        }
        eprintln!("== {name}: {} (this host's kernel)", benches.join(", "));
        let status = Command::new(&exe)
            .args(["--test-threads=1", "--show-output", BENCH_PREFIX])
            .env("ENFORCER_PROBE", probe_path())
            .env("ENFORCER_BIN", agent_path())
            .current_dir(root())
            .status()?;
        if !status.success() {
            failed.push(name);
        }
    }
    if vm_too && !vm_tests.is_empty() {
        let names: Vec<&str> = vm_tests.iter().map(|t| t.name.as_str()).collect();
        eprintln!(
            "== VM (Debian 6.1, BPF LSM, QEMU/TCG): {}",
            names.join(", ")
        );
        let env = vec![
            (
                "ENFORCER_PROBE".to_string(),
                probe_path().display().to_string(),
            ),
            (
                "ENFORCER_BIN".to_string(),
                agent_path().display().to_string(),
            ),
        ];
        for r in vm::run(crate::setup::VmKernel::ALL[0], &vm_tests, &env)? {
            println!("-- {} (rc {:?})\n{}", r.name, r.rc, r.log.trim_end());
            if r.rc != Some(0) {
                failed.push(r.name);
            }
        }
    }
    if !failed.is_empty() {
        bail!("benchmarks failed: {}", failed.join(", "));
    }
    Ok(())
}

pub fn kernel(filter: Option<&str>) -> Result<Tally> {
    let mut t = Tally::new("kernel");
    let start = Instant::now();
    if !is_root() {
        t.not_run = Some("needs root (loads BPF programs, creates cgroups and netns)".into());
        return Ok(t);
    }
    let skip_log = root().join("target/kernel-skips.log");
    let _ = fs::remove_file(&skip_log);
    // Suites drive the real agent binary.
    build_agent()?;
    for (name, exe) in test_executables()? {
        // The VM and real-cluster tiers run these.
        if name.starts_with("vm_") || name.starts_with("cluster_") {
            continue;
        }
        let mut cmd = Command::new(&exe);
        cmd.arg("--test-threads=1")
            // Benchmarks: `cargo xtask bench` runs them.
            .args(["--skip", BENCH_PREFIX])
            .env("ENFORCER_SKIP_LOG", &skip_log)
            .env("ENFORCER_PROBE", probe_path())
            .env("ENFORCER_BIN", agent_path())
            .env("RUST_BACKTRACE", "1")
            .current_dir(root());
        if let Some(f) = filter {
            cmd.arg(f);
        }
        let ok = run_libtest(&mut cmd, &mut t, Some(&skip_log))?;
        if !ok && t.failed.is_empty() {
            t.failed.push(format!("{name} (harness failure)"));
        }
    }
    t.secs = start.elapsed().as_secs_f64();
    Ok(t)
}

/// VM test suites that run on every VM kernel (the others on the first only).
const VM_EVERY_KERNEL: &[&str] = &["vm_guards", "vm_guard_escapes", "vm_lsm"];

pub fn vm(filter: Option<&str>) -> Result<Tally> {
    let mut t = Tally::new("vm");
    let start = Instant::now();
    let mut tests = Vec::new();
    for (name, exe) in test_executables()? {
        if !name.starts_with("vm_") {
            continue;
        }
        let list = Command::new(&exe)
            .args(["--list", "--format", "terse"])
            .output()?;
        for line in String::from_utf8_lossy(&list.stdout).lines() {
            if let Some(test) = line.strip_suffix(": test")
                && !test.contains(BENCH_PREFIX)
                && filter.is_none_or(|f| test.contains(f))
            {
                tests.push(vm::VmTest {
                    binary: exe.clone(),
                    name: test.to_string(),
                });
            }
        }
    }
    if tests.is_empty() {
        t.not_run = Some("no VM tests selected".into());
        return Ok(t);
    }
    build_agent()?;
    let env = vec![
        (
            "ENFORCER_PROBE".to_string(),
            probe_path().display().to_string(),
        ),
        (
            "ENFORCER_BIN".to_string(),
            agent_path().display().to_string(),
        ),
    ];
    for (i, k) in crate::setup::VmKernel::ALL.into_iter().enumerate() {
        // Every VM test on the first kernel; the runtime guards (what depends on the
        // kernel's LSM hooks and verifier) on the others too.
        let these: Vec<vm::VmTest> = tests
            .iter()
            .filter(|t| {
                i == 0
                    || VM_EVERY_KERNEL
                        .iter()
                        .any(|p| t.binary_name().starts_with(p))
            })
            .cloned()
            .collect();
        if these.is_empty() {
            continue;
        }
        for r in vm::run(k, &these, &env)? {
            let label = format!(
                "{}::{} [{}]",
                r.binary.split('-').next().unwrap_or(""),
                r.name,
                k.label
            );
            let verdict = match (r.rc, &r.skipped) {
                (Some(0), Some(reason)) => {
                    t.skipped.push((label.clone(), reason.clone()));
                    "skipped"
                }
                (Some(0), None) => {
                    t.passed += 1;
                    "ok"
                }
                (Some(124), _) | (Some(137), _) => {
                    t.failed.push(format!("{label} (timed out)"));
                    "FAILED (timeout)"
                }
                (Some(_), _) => {
                    t.failed.push(label.clone());
                    "FAILED"
                }
                (None, _) => {
                    t.failed
                        .push(format!("{label} (never finished: VM died or hung)"));
                    "FAILED (no result)"
                }
            };
            println!("vm test {label} ... {verdict}");
            if verdict.starts_with("FAILED") {
                for l in r.log.lines() {
                    println!("    | {l}");
                }
            }
        }
    }
    t.secs = start.elapsed().as_secs_f64();
    Ok(t)
}
