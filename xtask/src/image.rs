//! `cargo xtask image [--tag NAME:TAG]`: the agent's container image, built without a
//! container engine.
//!
//! 1. `enforcer` is built statically (`-C target-feature=+crt-static`, glibc, static-pie) for
//!    `x86_64-unknown-linux-gnu`, in its own target directory (`target/image/cargo`) so that
//!    it neither waits for nor invalidates the debug builds of the test tiers.
//! 2. The binary is checked: an ELF without an interpreter and without DT_NEEDED entries,
//!    and it runs (`enforcer --version`).
//! 3. buildah (Debian package, installed on first use) assembles an image FROM scratch that
//!    holds only `/usr/local/bin/enforcer`, with OCI labels, in a private storage directory
//!    (vfs driver: no overlay mounts; nothing is run inside the image, so no isolation is
//!    needed), and writes two archives of the same image:
//!    - `target/image/enforcer.oci.tar`: OCI layout (`skopeo`, `crane`, registries),
//!    - `target/image/enforcer.docker.tar`: docker-archive (`docker load`,
//!      `kind load image-archive`, `minikube image load`).
//!
//! The image runs as root (uid 0): the agent needs capabilities in the initial user
//! namespace (CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN) and root-owned host paths (bpffs), which
//! a non-root user cannot hold under Kubernetes without ambient capabilities.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::util::{is_root, output, root, run};

const TARGET: &str = "x86_64-unknown-linux-gnu";

fn usage() -> ! {
    eprintln!("usage: cargo xtask image [--tag NAME:TAG]   (default localhost/enforcer:<version>)");
    std::process::exit(2)
}

fn workspace_version() -> String {
    // The xtask crate shares the workspace version.
    env!("CARGO_PKG_VERSION").to_string()
}

/// The name `cargo xtask image` gives the image (what deploy/ asks for).
pub fn default_tag() -> String {
    format!("localhost/enforcer:{}", workspace_version())
}

pub fn image(args: &[String]) -> Result<()> {
    let mut tag = default_tag();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--tag" => tag = it.next().cloned().unwrap_or_else(|| usage()),
            _ => usage(),
        }
    }
    if std::env::var_os("ENFORCER_NO_SETUP").is_none() {
        // The BPF object inside the binary needs the set-up toolchain.
        crate::setup::setup(false)?;
    }
    ensure_buildah()?;

    let root = root();
    let out = root.join("target/image");
    fs::create_dir_all(&out)?;
    let bin = build_static(&root, &out)?;
    check_static(&bin)?;

    let storage = out.join("storage");
    let _ = fs::remove_dir_all(&storage);
    let result = assemble(&root, &out, &storage, &bin, &tag);
    // The private storage is a build scratch area: the archives are the product.
    let _ = Command::new("buildah")
        .args(storage_args(&storage))
        .args(["rm", "--all"])
        .output();
    let _ = fs::remove_dir_all(&storage);
    result
}

/// buildah from Debian, installed on first use (not by `setup`: only this command needs it).
fn ensure_buildah() -> Result<()> {
    let ok = |c: &mut Command| c.output().map(|o| o.status.success()).unwrap_or(false);
    if ok(Command::new("buildah").arg("--version")) {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "buildah is not installed and installing it needs root: `sudo apt-get install buildah`"
        );
    }
    let apt_env = [("DEBIAN_FRONTEND", "noninteractive")];
    run(Command::new("apt-get").args(["update", "-q"]).envs(apt_env))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends", "buildah"])
        .envs(apt_env))?;
    if !ok(Command::new("buildah").arg("--version")) {
        bail!("buildah still does not run after apt-get install buildah");
    }
    Ok(())
}

fn build_static(root: &Path, out: &Path) -> Result<PathBuf> {
    let target_dir = out.join("cargo");
    run(Command::new("cargo")
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            TARGET,
            "-p",
            "enforcer-user",
            "--bin",
            "enforcer",
        ])
        // With --target, RUSTFLAGS applies to the target only, not to build scripts and
        // proc macros (which cannot be static); enforcer-user/build.rs strips it from the
        // BPF build.
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env("CARGO_TARGET_DIR", &target_dir)
        .current_dir(root))?;
    Ok(target_dir.join(TARGET).join("release/enforcer"))
}

/// An ELF64 little-endian executable with no PT_INTERP and no DT_NEEDED: it needs nothing
/// from the image but itself.
fn check_static(bin: &Path) -> Result<()> {
    let data = fs::read(bin).with_context(|| bin.display().to_string())?;
    let (interp, needed) = elf_dependencies(&data).context("parsing the binary as ELF64")?;
    if interp || needed > 0 {
        bail!(
            "{} is not static: interpreter {interp}, {needed} DT_NEEDED libraries",
            bin.display()
        );
    }
    for (tool, args) in [("file", vec!["-b"]), ("ldd", vec![])] {
        if let Ok(o) = Command::new(tool).args(&args).arg(bin).output() {
            let text = String::from_utf8_lossy(if o.stdout.is_empty() {
                &o.stderr
            } else {
                &o.stdout
            })
            .trim()
            .to_string();
            eprintln!("image: {tool}: {text}");
        }
    }
    let v = output(Command::new(bin).arg("--version"))?;
    eprintln!(
        "image: {} runs: {} ({:.1} MiB)",
        bin.display(),
        v.trim(),
        data.len() as f64 / 1048576.0
    );
    Ok(())
}

/// (has an interpreter, number of DT_NEEDED entries).
fn elf_dependencies(d: &[u8]) -> Option<(bool, usize)> {
    let u16_at = |o: usize| Some(u16::from_le_bytes(d.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(d.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(d.get(o..o + 8)?.try_into().ok()?));
    if d.get(0..4)? != b"\x7fELF" || d[4] != 2 || d[5] != 1 {
        return None;
    }
    let phoff = u64_at(0x20)? as usize;
    let phentsize = u16_at(0x36)? as usize;
    let phnum = u16_at(0x38)? as usize;
    let mut interp = false;
    let mut needed = 0;
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        match u32_at(ph)? {
            3 => interp = true, // PT_INTERP
            2 => {
                // PT_DYNAMIC: (d_tag, d_val) pairs up to DT_NULL.
                let off = u64_at(ph + 8)? as usize;
                let size = u64_at(ph + 32)? as usize;
                let mut p = off;
                while p + 16 <= off + size {
                    match u64_at(p)? {
                        0 => break,
                        1 => needed += 1, // DT_NEEDED
                        _ => {}
                    }
                    p += 16;
                }
            }
            _ => {}
        }
    }
    Some((interp, needed))
}

fn storage_args(storage: &Path) -> Vec<String> {
    vec![
        "--root".into(),
        storage.join("root").display().to_string(),
        "--runroot".into(),
        storage.join("run").display().to_string(),
        "--storage-driver".into(),
        "vfs".into(),
    ]
}

fn buildah(storage: &Path, args: &[&str]) -> Result<String> {
    Ok(output(
        Command::new("buildah")
            .args(storage_args(storage))
            .args(args),
    )?
    .trim()
    .to_string())
}

fn assemble(root: &Path, out: &Path, storage: &Path, bin: &Path, tag: &str) -> Result<()> {
    let version = workspace_version();
    let revision = output(
        Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(root),
    )
    .map(|s| s.trim().to_string())
    .unwrap_or_else(|_| "unknown".into());
    let created = output(Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"]))?;

    let ctr = buildah(storage, &["from", "--quiet", "scratch"])?;
    let staged = out.join("enforcer");
    fs::copy(bin, &staged)?;
    buildah(
        storage,
        &[
            "copy",
            "--quiet",
            "--chmod",
            "0755",
            &ctr,
            &staged.display().to_string(),
            "/usr/local/bin/enforcer",
        ],
    )?;
    let labels = [
        ("org.opencontainers.image.title", "enforcer"),
        (
            "org.opencontainers.image.description",
            "Node agent enforcing Kubernetes NetworkPolicy and runtime guards with eBPF",
        ),
        ("org.opencontainers.image.version", version.as_str()),
        ("org.opencontainers.image.revision", revision.as_str()),
        ("org.opencontainers.image.created", created.trim()),
        (
            "org.opencontainers.image.licenses",
            "Apache-2.0 AND GPL-2.0",
        ),
    ];
    let mut config: Vec<String> = vec![
        "config".into(),
        "--os".into(),
        "linux".into(),
        "--arch".into(),
        "amd64".into(),
        // Root is required (see the module documentation).
        "--user".into(),
        "0:0".into(),
        "--workingdir".into(),
        "/".into(),
        "--env".into(),
        "PATH=/usr/local/bin".into(),
        "--entrypoint".into(),
        r#"["/usr/local/bin/enforcer"]"#.into(),
        "--cmd".into(),
        "--help".into(),
    ];
    for (k, v) in labels {
        config.push("--label".into());
        config.push(format!("{k}={v}"));
    }
    config.push(ctr.clone());
    let config: Vec<&str> = config.iter().map(String::as_str).collect();
    buildah(storage, &config)?;
    buildah(
        storage,
        &["commit", "--quiet", "--format", "oci", &ctr, tag],
    )?;

    let oci = out.join("enforcer.oci.tar");
    let docker = out.join("enforcer.docker.tar");
    for p in [&oci, &docker] {
        let _ = fs::remove_file(p);
    }
    buildah(
        storage,
        &[
            "push",
            "--quiet",
            tag,
            &format!("oci-archive:{}:{tag}", oci.display()),
        ],
    )?;
    buildah(
        storage,
        &[
            "push",
            "--quiet",
            "--format",
            "v2s2",
            tag,
            &format!("docker-archive:{}:{tag}", docker.display()),
        ],
    )?;
    let size = buildah(storage, &["images", "--format", "{{.Size}}", tag])?;
    fs::remove_file(&staged)?;
    let mib = |p: &Path| {
        fs::metadata(p)
            .map(|m| m.len() as f64 / 1048576.0)
            .unwrap_or(0.0)
    };
    println!("image {tag}: {size} (one layer: /usr/local/bin/enforcer)");
    println!("  {} ({:.1} MiB)", oci.display(), mib(&oci));
    println!("  {} ({:.1} MiB)", docker.display(), mib(&docker));
    println!(
        "load it: docker load -i {}   |   kind load image-archive {}",
        docker.display(),
        docker.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::elf_dependencies;

    #[test]
    fn elf_check_sees_a_dynamic_executable() {
        // This test binary is linked dynamically against glibc.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let (interp, needed) = elf_dependencies(&me).expect("an ELF64 file");
        assert!(interp && needed > 0, "interp {interp}, needed {needed}");
        assert_eq!(elf_dependencies(b"#!/bin/sh\n"), None);
    }
}
