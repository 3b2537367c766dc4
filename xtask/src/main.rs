//! Developer tasks: `cargo xtask <command>`.
//!
//! ```text
//! setup [--check]                 install build/test prerequisites (idempotent; root)
//! test [--tier T]... [FILTER]     run test tiers: lint, unit, kernel, vm (default: all)
//! demo [DIR]                      standalone enforcement on a simulated node (root)
//! bench                           network datapath benchmarks, ratios vs a baseline (root)
//! image                           static `enforcer` in an OCI image FROM scratch (buildah)
//! ```

mod deploy_check;
mod image;
mod setup;
mod tiers;
mod util;
mod vm;

use anyhow::{Result, bail};

fn usage() -> ! {
    eprintln!(
        "usage: cargo xtask setup [--check]\n       cargo xtask test [--tier lint|unit|kernel|vm]... [FILTER]\n       cargo xtask demo [DIR]\n       cargo xtask image"
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
        "bench" => bench(),
        "image" => image::image(&args[1..]),
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

fn bench() -> Result<()> {
    if std::env::var_os("ENFORCER_NO_SETUP").is_none() {
        setup::setup(false)?;
    }
    if !util::is_root() {
        bail!("the benchmark loads BPF programs and creates network namespaces: run it as root");
    }
    let root = util::root();
    // The agent in release mode: compile times are part of what is measured.
    util::run(
        std::process::Command::new("cargo")
            .args([
                "build",
                "--release",
                "-p",
                "enforcer-user",
                "--bin",
                "enforcer",
            ])
            .current_dir(&root),
    )?;
    util::run(
        std::process::Command::new("cargo")
            .args([
                "build",
                "-q",
                "-p",
                "enforcer-tests",
                "--bin",
                "enforcer-bench",
                "--bin",
                "enforcer-probe",
            ])
            .current_dir(&root),
    )?;
    util::run(
        std::process::Command::new(root.join("target/debug/enforcer-bench"))
            .env("ENFORCER_BIN", root.join("target/release/enforcer"))
            .env("ENFORCER_PROBE", root.join("target/debug/enforcer-probe"))
            .current_dir(&root),
    )
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
            "kernel" => tiers::kernel(filter.as_deref())?,
            "vm" => tiers::vm(filter.as_deref())?,
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
