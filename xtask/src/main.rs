//! Developer tasks: `cargo xtask <command>`.
//!
//! ```text
//! setup [--check]                 install build/test prerequisites (idempotent; root)
//! test [--tier T]... [FILTER]     run test tiers: lint, unit, fuzz, kernel, vm, cluster
//!                                 (default: all)
//! demo [DIR]                      standalone enforcement on a simulated node (root)
//! bench [all|network|guards]     benchmarks, ratios vs a baseline in the same run (root):
//!                                 datapath throughput, propagation, per-packet cost; guards
//!                                 on vs off (fallback tier here, LSM tier in the VM)
//! fuzz [TARGET] [--secs N] [--grow] the fuzz targets in fuzz/ for N seconds each
//! image                           static `enforcer` in an OCI image FROM scratch (buildah)
//! cluster up|down|status|kubectl  a real single-node Kubernetes cluster (root; see cluster/)
//! ```

mod cluster;
mod deploy_check;
mod fuzz;
mod image;
mod setup;
mod tiers;
mod util;
mod vm;

use anyhow::{Result, bail};

fn usage() -> ! {
    eprintln!(
        "usage: cargo xtask setup [--check]\n       cargo xtask test [--tier lint|unit|fuzz|kernel|vm|cluster]... [FILTER]\n       cargo xtask demo [DIR]\n       cargo xtask bench [all|network|guards]\n       cargo xtask fuzz [TARGET] [--secs N] [--grow]\n       cargo xtask image\n       cargo xtask cluster up|down|status|kubectl"
    );
    std::process::exit(2)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else { usage() };
    match cmd.as_str() {
        "setup" => setup::setup(args.iter().any(|a| a == "--check")),
        "test" => test(&args[1..]),
        "demo" => demo(&args[1..]),
        "bench" => bench(&args[1..]),
        "image" => image::image(&args[1..]),
        "fuzz" => fuzz::command(&args[1..]),
        "cluster" => cluster::cluster(&args[1..]),
        _ => usage(),
    }
}

fn demo(args: &[String]) -> Result<()> {
    if std::env::var_os("ENFORCER_NO_SETUP").is_none() {
        setup::setup(false)?;
    }
    if !util::is_root() {
        bail!(
            "the demo loads BPF programs and creates network namespaces and cgroups: run it as root"
        );
    }
    let root = util::root();
    tiers::build_agent()?;
    util::run(
        std::process::Command::new("cargo")
            .args([
                "build",
                "-q",
                "-p",
                "enforcer-tests",
                "--bin",
                "enforcer-demo",
                "--bin",
                "enforcer-probe",
            ])
            .current_dir(&root),
    )?;
    let dir = args
        .first()
        .cloned()
        .unwrap_or_else(|| "deploy/examples/demo".into());
    util::run(
        std::process::Command::new(root.join("target/debug/enforcer-demo"))
            .arg(dir)
            .env("ENFORCER_BIN", tiers::agent_path())
            .env("ENFORCER_PROBE", root.join("target/debug/enforcer-probe"))
            .current_dir(&root),
    )
}

fn bench(args: &[String]) -> Result<()> {
    let what = args.first().map(String::as_str).unwrap_or("all");
    if !["all", "network", "guards"].contains(&what) {
        bail!("cargo xtask bench [all|network|guards]: unknown {what:?}");
    }
    if std::env::var_os("ENFORCER_NO_SETUP").is_none() {
        setup::setup(false)?;
    }
    if !util::is_root() {
        bail!("the benchmarks load BPF programs and create network namespaces: run them as root");
    }
    let root = util::root();
    if what != "guards" {
        // The agent in release mode: compile times are part of what is measured.
        util::run(
            std::process::Command::new("cargo")
                .current_dir(&root)
                .args([
                    "build",
                    "--release",
                    "-p",
                    "enforcer-user",
                    "--bin",
                    "enforcer",
                ]),
        )?;
        util::run(
            std::process::Command::new("cargo")
                .current_dir(&root)
                .args([
                    "build",
                    "-q",
                    "-p",
                    "enforcer-tests",
                    "--bin",
                    "enforcer-bench",
                    "--bin",
                    "enforcer-probe",
                ]),
        )?;
        util::run(
            std::process::Command::new(root.join("target/debug/enforcer-bench"))
                .env("ENFORCER_BIN", root.join("target/release/enforcer"))
                .env("ENFORCER_PROBE", root.join("target/debug/enforcer-probe"))
                .current_dir(&root),
        )?;
    }
    if what != "network" {
        // Runtime guards on vs off: the fallback tier on this host, the LSM tier in the VM.
        tiers::guard_benches(true)?;
    }
    Ok(())
}

fn test(args: &[String]) -> Result<()> {
    let mut tiers: Vec<String> = Vec::new();
    let mut filter = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--tier" => tiers.push(it.next().cloned().unwrap_or_else(|| usage())),
            f if !f.starts_with('-') => filter = Some(f.to_string()),
            _ => usage(),
        }
    }
    if tiers.is_empty() {
        tiers = tiers::ALL.iter().map(|s| s.to_string()).collect();
    }
    for t in &tiers {
        if !tiers::ALL.contains(&t.as_str()) {
            bail!("unknown tier {t} (tiers: {})", tiers::ALL.join(", "));
        }
    }
    // Every test run starts by making sure the machine has what it needs.
    if std::env::var_os("ENFORCER_NO_SETUP").is_none() {
        setup::setup(false)?;
    }
    let start = std::time::Instant::now();
    let mut tallies = Vec::new();
    for t in &tiers {
        eprintln!("\n======== tier {t} ========");
        let tally = match t.as_str() {
            "lint" => tiers::lint()?,
            "unit" => tiers::unit()?,
            "fuzz" => fuzz::tier()?,
            "kernel" => tiers::kernel(filter.as_deref())?,
            "vm" => tiers::vm(filter.as_deref())?,
            "cluster" => cluster::tier::run(filter.as_deref())?,
            _ => unreachable!(),
        };
        println!("==> {}", tally.line());
        tallies.push(tally);
    }
    println!(
        "\n======== summary ({:.0}s) ========",
        start.elapsed().as_secs_f64()
    );
    let mut ok = true;
    for t in &tallies {
        println!("{}", t.line());
        for f in &t.failed {
            println!("    FAILED  {f}");
        }
        for (n, r) in &t.skipped {
            println!("    SKIPPED {n}: {r}");
        }
        if t.ignored > 0 {
            println!("    {} test(s) marked #[ignore]: not allowed", t.ignored);
        }
        ok &= t.ok();
    }
    if !ok {
        bail!("some tests failed");
    }
    Ok(())
}
