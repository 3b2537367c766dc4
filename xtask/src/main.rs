//! Developer tasks: `cargo xtask <command>`.
//!
//! ```text
//! setup [--check]                 install build/test prerequisites (idempotent; root)
//! test [--tier T]... [FILTER]     run test tiers: lint, unit, kernel, vm (default: all)
//! ```

mod setup;
mod tiers;
mod util;
mod vm;

use anyhow::{Result, bail};

fn usage() -> ! {
    eprintln!(
        "usage: cargo xtask setup [--check]\n       cargo xtask test [--tier lint|unit|kernel|vm]... [FILTER]"
    );
    std::process::exit(2)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else { usage() };
    match cmd.as_str() {
        "setup" => setup::setup(args.iter().any(|a| a == "--check")),
        "test" => test(&args[1..]),
        _ => usage(),
    }
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
