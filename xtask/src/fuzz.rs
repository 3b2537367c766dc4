//! Fuzzing (`fuzz/`, cargo-fuzz layout): the manifest loader, label selectors and the
//! policy compiler under libFuzzer.
//!
//! The targets are built the way cargo-fuzz builds them (libFuzzer's coverage
//! instrumentation, `--cfg fuzzing`, debug assertions and overflow checks), without a
//! sanitizer: the code under test is safe Rust, so panics, timeouts and memory are what a
//! run can find, and the stable toolchain is enough. Each target runs for a bounded time
//! from its committed corpus (`fuzz/corpus/TARGET`, read-only here; what a run discovers
//! goes to a scratch directory), with a memory limit (RSS over `RSS_LIMIT_MB` is a
//! failure: "no unbounded memory") and a per-input time limit. Findings are kept under
//! `target/fuzz/artifacts/TARGET/` and the failure names the file to replay:
//! `target/fuzz/x86_64-unknown-linux-gnu/release/TARGET FILE`.
//!
//! `cargo xtask fuzz [TARGET] [--secs N] [--grow]`: the same outside the test tiers;
//! `--grow` adds new inputs to the committed corpus and then minimizes it
//! (`-set_cover_merge=1`).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context, Result, bail};

use crate::{
    tiers::Tally,
    util::{display, root},
};

pub const TARGETS: &[&str] = &["manifest_loader", "label_selector", "policy_compiler"];

/// Seconds per target in `cargo xtask test` (the fuzz tier).
pub const TIER_SECS: u32 = 60;

/// libFuzzer's limits: memory per process, time per input, input size.
const RSS_LIMIT_MB: u32 = 1024;
const INPUT_TIMEOUT_S: u32 = 10;
const MAX_LEN: u32 = 65536;

const TRIPLE: &str = "x86_64-unknown-linux-gnu";

fn target_dir() -> PathBuf {
    root().join("target/fuzz")
}

/// Builds every target (release, instrumented).
pub fn build() -> Result<()> {
    let flags = [
        "-Cpasses=sancov-module",
        "-Cllvm-args=-sanitizer-coverage-level=4",
        "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
        "-Cllvm-args=-sanitizer-coverage-pc-table",
        "-Cllvm-args=-sanitizer-coverage-trace-compares",
        "--cfg",
        "fuzzing",
        "-Cdebug-assertions",
        "-Coverflow-checks",
    ];
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root().join("fuzz"))
        .args(["build", "--release", "--locked", "--target", TRIPLE])
        .arg("--target-dir")
        .arg(target_dir())
        // Only the instrumented host code matters here: no BPF object.
        .env("ENFORCER_SKIP_EBPF", "1")
        // Coverage counters are what libFuzzer needs; full optimisation mostly costs build
        // time (k8s-openapi is large).
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "1")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "0")
        .env("RUSTFLAGS", flags.join(" "))
        .env_remove("CARGO_TARGET_DIR");
    eprintln!("+ {}", display(&cmd));
    let status = cmd.status().context("running cargo")?;
    if !status.success() {
        bail!("building the fuzz targets failed");
    }
    Ok(())
}

fn binary(target: &str) -> PathBuf {
    target_dir().join(TRIPLE).join("release").join(target)
}

/// What one run found.
pub struct Run {
    pub executions: u64,
    pub corpus: usize,
    pub finding: Option<String>,
}

/// Runs `target` for `secs` seconds. With `grow`, new inputs go to the committed corpus.
pub fn run(target: &str, secs: u32, grow: bool) -> Result<Run> {
    let corpus = root().join("fuzz/corpus").join(target);
    fs::create_dir_all(&corpus)?;
    let scratch = target_dir().join("scratch").join(target);
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch)?;
    let artifacts = target_dir().join("artifacts").join(target);
    fs::create_dir_all(&artifacts)?;
    let mut cmd = Command::new(binary(target));
    if grow {
        cmd.arg(&corpus);
    } else {
        cmd.arg(&scratch).arg(&corpus);
    }
    cmd.arg(format!("-max_total_time={secs}"))
        .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
        .arg(format!("-malloc_limit_mb={RSS_LIMIT_MB}"))
        .arg(format!("-timeout={INPUT_TIMEOUT_S}"))
        .arg(format!("-max_len={MAX_LEN}"))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg("-print_final_stats=1");
    eprintln!("+ {}", display(&cmd));
    let out = cmd
        .output()
        .with_context(|| format!("running {}", binary(target).display()))?;
    let log = String::from_utf8_lossy(&out.stderr);
    let executions = stat(&log, "stat::number_of_executed_units:");
    let finding = (!out.status.success()).then(|| {
        let why: Vec<&str> = log
            .lines()
            .filter(|l| {
                l.contains("panicked at")
                    || l.starts_with("==") && l.contains("ERROR")
                    || l.contains("Test unit written to")
                    || l.contains("out-of-memory")
                    || l.contains("timeout")
            })
            .take(8)
            .collect();
        if why.is_empty() {
            log.lines().rev().take(20).collect::<Vec<_>>().join("\n")
        } else {
            why.join("\n")
        }
    });
    let corpus_files = count(&corpus) + if grow { 0 } else { count(&scratch) };
    Ok(Run {
        executions,
        corpus: corpus_files,
        finding,
    })
}

/// Shrinks the committed corpus of `target` to a small set of inputs that keeps its edge
/// coverage (hit counts are left out, or the corpus would keep thousands of files).
fn minimize(target: &str) -> Result<()> {
    let corpus = root().join("fuzz/corpus").join(target);
    let merged = target_dir().join("merged").join(target);
    let _ = fs::remove_dir_all(&merged);
    fs::create_dir_all(&merged)?;
    let mut cmd = Command::new(binary(target));
    cmd.arg("-set_cover_merge=1")
        .arg("-use_counters=0")
        .arg(format!("-max_len={MAX_LEN}"))
        .arg(&merged)
        .arg(&corpus);
    eprintln!("+ {}", display(&cmd));
    let out = cmd.output()?;
    if !out.status.success() {
        bail!(
            "minimizing the corpus of {target}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    fs::remove_dir_all(&corpus)?;
    fs::rename(&merged, &corpus)?;
    Ok(())
}

fn stat(log: &str, key: &str) -> u64 {
    log.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn count(dir: &Path) -> usize {
    fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// The fuzz tier of `cargo xtask test`.
pub fn tier() -> Result<Tally> {
    let mut t = Tally::new("fuzz");
    let start = Instant::now();
    build()?;
    for target in TARGETS {
        let r = run(target, TIER_SECS, false)?;
        eprintln!(
            "fuzz {target}: {} executions in {TIER_SECS}s, corpus {} inputs",
            r.executions, r.corpus
        );
        match r.finding {
            None => t.passed += 1,
            Some(f) => t.failed.push(format!("fuzz {target}: {f}")),
        }
    }
    t.secs = start.elapsed().as_secs_f64();
    Ok(t)
}

/// `cargo xtask fuzz [TARGET] [--secs N] [--grow]`.
pub fn command(args: &[String]) -> Result<()> {
    let mut secs = TIER_SECS;
    let mut grow = false;
    let mut only = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--secs" => {
                secs = it
                    .next()
                    .and_then(|s| s.parse().ok())
                    .context("--secs N: seconds per target")?;
            }
            "--grow" => grow = true,
            t if TARGETS.contains(&t) => only = Some(t.to_string()),
            other => bail!(
                "cargo xtask fuzz [{}] [--secs N] [--grow]: unknown {other:?}",
                TARGETS.join("|")
            ),
        }
    }
    build()?;
    let mut failed = false;
    for target in TARGETS
        .iter()
        .filter(|t| only.as_deref().is_none_or(|o| o == **t))
    {
        let r = run(target, secs, grow)?;
        if grow {
            minimize(target)?;
        }
        println!(
            "{target}: {} executions in {secs}s, corpus {} inputs{}",
            r.executions,
            count(&root().join("fuzz/corpus").join(target)),
            r.finding
                .as_ref()
                .map(|f| format!("\n  FOUND: {f}"))
                .unwrap_or_default()
        );
        failed |= r.finding.is_some();
    }
    if failed {
        bail!("the fuzzers found something (see target/fuzz/artifacts/)");
    }
    Ok(())
}
