//! `cargo xtask setup`: install everything building and testing needs on a fresh Debian 12
//! machine. Idempotent: a second run checks and does nothing.
//!
//! - Debian packages: `rustc-web`/`cargo-web` (rustc 1.96 on LLVM 22 with a prebuilt
//!   `core` for the BPF targets from `libstd-rust-web-dev-bpf`), `llvm-22-dev` to build
//!   bpf-linker, QEMU and busybox for the VM tier, iproute2 for test namespaces.
//! - bpf-linker, built against LLVM 22 with `cargo install`.
//! - The Debian kernels the VM tier boots (bookworm's 6.1, and the newest 6.12 of the
//!   security suite: GKE's COS images run 6.1, 6.6 and 6.12), downloaded as packages and
//!   unpacked (not installed), each with an uncompressed vmlinux (booting it saves ~5 s per
//!   VM run).
//! - For the deploy check (lint tier): a Python virtualenv with kubernetes-validate, and
//!   shellcheck for the e2e scripts.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::{
    deploy_check,
    util::{cache_dir, is_root, output, run},
};

/// Debian packages, and the minimum version where it matters.
const PACKAGES: &[(&str, Option<&str>)] = &[
    ("rustc-web", Some("1.96")),
    ("cargo-web", Some("1.96")),
    ("libstd-rust-web-dev-bpf", Some("1.96")),
    ("llvm-22-dev", None),
    ("qemu-system-x86", None),
    ("busybox-static", None),
    ("cpio", None),
    ("xz-utils", None),
    ("zstd", None),
    ("iproute2", None),
    ("kmod", None),
    ("procps", None),
    ("bpftool", None),
    ("python3-venv", None),
    ("shellcheck", None),
    // The real-cluster tier (cargo xtask cluster): container runtime, CNI plugins, what
    // kube-proxy drives, certificates, the static pause binary, the enforcer image.
    ("containerd", None),
    ("runc", None),
    ("containernetworking-plugins", None),
    ("iptables", None),
    ("nftables", None),
    ("conntrack", None),
    ("openssl", None),
    ("gcc", None),
    ("libc6-dev", None),
    ("buildah", None),
    // The fuzz tier: libfuzzer-sys compiles libFuzzer (C++).
    ("g++", None),
];

pub const BPF_LINKER_VERSION: &str = "0.13.0";

/// What `setup` needs to do, so that `--check` and the test tiers can report it.
pub fn missing_packages() -> Vec<&'static str> {
    PACKAGES
        .iter()
        .filter(|(name, min)| {
            let v = Command::new("dpkg-query")
                .args(["-W", "-f=${Status}|${Version}", name])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
            match v {
                Some(s) if s.starts_with("install ok installed|") => match min {
                    Some(min) => !version_at_least(s.split('|').nth(1).unwrap_or(""), min),
                    None => false,
                },
                _ => true,
            }
        })
        .map(|(n, _)| *n)
        .collect()
}

/// Compare the leading `major.minor` of a Debian version with `min`.
fn version_at_least(version: &str, min: &str) -> bool {
    let nums = |s: &str| -> Vec<u32> {
        s.split(|c: char| !c.is_ascii_digit())
            .filter(|p| !p.is_empty())
            .take(2)
            .map(|p| p.parse().unwrap_or(0))
            .collect()
    };
    let v = version.split_once(':').map(|(_, r)| r).unwrap_or(version);
    nums(v) >= nums(min)
}

pub fn bpf_linker_path() -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| "/root/.cargo".into());
    home.join("bin/bpf-linker")
}

fn bpf_linker_ok() -> bool {
    Command::new(bpf_linker_path())
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION))
        .unwrap_or(false)
}

pub fn setup(check_only: bool) -> Result<()> {
    let start = std::time::Instant::now();
    let mut todo = Vec::new();

    let missing = missing_packages();
    if !missing.is_empty() {
        todo.push(format!("apt packages: {}", missing.join(" ")));
    }
    if !bpf_linker_ok() {
        todo.push(format!("bpf-linker {BPF_LINKER_VERSION}"));
    }
    for k in VmKernel::ALL {
        let ready = k
            .dir()
            .as_ref()
            .map(|d| d.join("ready").exists())
            .unwrap_or(false);
        if !ready {
            todo.push(format!(
                "VM kernel {} (Debian linux-image, unpacked)",
                k.label
            ));
        }
    }
    if !validate_venv_ok() {
        todo.push("Python virtualenv for the deploy check (kubernetes-validate)".into());
    }
    if todo.is_empty() {
        eprintln!("setup: everything is in place ({:.1?})", start.elapsed());
        return Ok(());
    }
    if check_only {
        bail!("setup needed: {}", todo.join("; "));
    }
    if !is_root() {
        bail!(
            "setup must install: {}.\nThat needs root (apt-get, mounts): run `sudo -E cargo xtask setup`.",
            todo.join("; ")
        );
    }

    if !missing.is_empty() {
        let apt_env = [("DEBIAN_FRONTEND", "noninteractive")];
        run(Command::new("apt-get").args(["update", "-q"]).envs(apt_env))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .envs(apt_env))?;
        let still = missing_packages();
        if !still.is_empty() {
            bail!(
                "after apt-get install these are still missing or too old: {} \
                 (rustc-web 1.96 comes from the bookworm-security suite; is it in apt sources?)",
                still.join(" ")
            );
        }
    }

    if !bpf_linker_ok() {
        let path = format!(
            "/usr/lib/llvm-22/bin:{}",
            std::env::var("PATH").unwrap_or_default()
        );
        // The rustup cargo builds bpf-linker; LLVM_PREFIX/PATH point it at Debian's LLVM 22.
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        run(Command::new(cargo)
            .args([
                "install",
                "bpf-linker",
                "--locked",
                "--version",
                BPF_LINKER_VERSION,
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            .env("PATH", path)
            .env("LLVM_PREFIX", "/usr/lib/llvm-22")
            .env_remove("RUSTUP_TOOLCHAIN"))?;
    }

    for k in VmKernel::ALL {
        ensure_vm_kernel(k)?;
    }
    ensure_validate_venv()?;
    eprintln!("setup: done in {:.1?}", start.elapsed());
    Ok(())
}

/// The deploy check's virtualenv is ready when its marker lists today's requirements.
fn validate_venv_ok() -> bool {
    let marker = deploy_check::venv_dir().join("enforcer-requirements.txt");
    deploy_check::venv_python().exists()
        && fs::read_to_string(marker).is_ok_and(|s| s == deploy_check::REQUIREMENTS.join("\n"))
}

/// Create the virtualenv with Debian's Python (python3-venv) and install the pinned
/// requirements from PyPI; the schemas ship inside kubernetes-validate.
fn ensure_validate_venv() -> Result<()> {
    if validate_venv_ok() {
        return Ok(());
    }
    let dir = deploy_check::venv_dir();
    let _ = fs::remove_dir_all(&dir);
    run(Command::new("/usr/bin/python3")
        .args(["-m", "venv"])
        .arg(&dir))?;
    run(Command::new(deploy_check::venv_python())
        .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
        .args(deploy_check::REQUIREMENTS))?;
    fs::write(
        dir.join("enforcer-requirements.txt"),
        deploy_check::REQUIREMENTS.join("\n"),
    )?;
    Ok(())
}

/// A kernel the VM tier boots.
#[derive(Clone, Copy, Debug)]
pub struct VmKernel {
    /// Short name in test labels ("6.1").
    pub label: &'static str,
    /// Overrides the package name (`ENFORCER_VM_KERNEL_PACKAGE` for the first).
    env: &'static str,
    /// How to find today's package.
    find: fn() -> Result<String>,
}

impl VmKernel {
    /// Debian 12's own kernel (6.1: also COS 109 and Ubuntu 22.04 HWE-less nodes), and the
    /// 6.12 of bookworm's security suite (COS 121+, and the LSM hook signatures and return
    /// checks that changed in 6.12).
    pub const ALL: [VmKernel; 2] = [
        VmKernel {
            label: "6.1",
            env: "ENFORCER_VM_KERNEL_PACKAGE",
            find: default_kernel_package,
        },
        VmKernel {
            label: "6.12",
            env: "ENFORCER_VM_KERNEL_612_PACKAGE",
            find: newest_612_package,
        },
    ];

    fn package(&self) -> Result<String> {
        match std::env::var(self.env) {
            Ok(p) => Ok(p),
            Err(_) => (self.find)(),
        }
    }

    /// The unpacked kernel directory for today's package (if known without network: the
    /// ready one already unpacked for this label).
    pub fn dir(&self) -> Option<PathBuf> {
        let base = cache_dir().join("vm");
        if let Ok(p) = self.package() {
            return Some(base.join(p));
        }
        fs::read_dir(&base)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.join("ready").exists())
            .find(|p| fs::read_to_string(p.join("label")).is_ok_and(|l| l.trim() == self.label))
    }
}

/// Name of the Debian kernel package `linux-image-amd64` depends on today.
fn default_kernel_package() -> Result<String> {
    let deps = output(Command::new("apt-cache").args(["depends", "linux-image-amd64"]))?;
    deps.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-") && p.ends_with("-amd64"))
        .map(str::to_owned)
        .context("apt-cache depends linux-image-amd64 names no linux-image-*-amd64 package")
}

/// The newest `linux-image-6.12.*+deb12-amd64-unsigned` apt knows (bookworm-security
/// carries 6.12 for bookworm; the archive keeps only recent builds, so no exact pin).
fn newest_612_package() -> Result<String> {
    let list = output(Command::new("apt-cache").args([
        "search",
        "--names-only",
        r"^linux-image-6\.12\.[0-9]+\+deb12-amd64-unsigned$",
    ]))?;
    let mut names: Vec<(Vec<u32>, String)> = list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|n| {
            let v = n.strip_prefix("linux-image-")?.split('+').next()?;
            let nums = v.split('.').map(|x| x.parse().unwrap_or(0)).collect();
            Some((nums, n.to_string()))
        })
        .collect();
    names.sort();
    names.pop().map(|(_, n)| n).context(
        "apt knows no linux-image-6.12.*+deb12-amd64-unsigned (bookworm-security in apt sources?)",
    )
}

fn ensure_vm_kernel(k: VmKernel) -> Result<PathBuf> {
    let pkg = k.package()?;
    let dir = cache_dir().join("vm").join(&pkg);
    if dir.join("ready").exists() {
        return Ok(dir);
    }
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    // apt-get download writes into the current directory.
    run(Command::new("apt-get")
        .args(["download", "-q", &pkg])
        .current_dir(&dir))?;
    let deb = fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download produced no .deb")?;
    let root = dir.join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    fs::remove_file(&deb)?;

    let kver = fs::read_dir(root.join("lib/modules"))?
        .flatten()
        .next()
        .context("kernel package has no lib/modules")?
        .file_name()
        .to_string_lossy()
        .into_owned();
    let vmlinuz = root.join(format!("boot/vmlinuz-{kver}"));
    extract_vmlinux(&vmlinuz, &dir.join("vmlinux"))?;
    // Packages do not ship modules.dep: generate it so modprobe works inside the VM.
    run(Command::new("depmod").arg("-b").arg(&root).arg(&kver))?;
    fs::write(dir.join("kver"), &kver)?;
    fs::write(dir.join("label"), k.label)?;
    fs::write(dir.join("ready"), "")?;
    Ok(dir)
}

/// Decompress the payload of a bzImage (xz for 6.1, zstd for 6.12) into an ELF vmlinux
/// (PVH-bootable by QEMU).
fn extract_vmlinux(bzimage: &Path, out: &Path) -> Result<()> {
    let data = fs::read(bzimage).with_context(|| bzimage.display().to_string())?;
    const XZ_MAGIC: &[u8] = &[0xFD, b'7', b'z', b'X', b'Z', 0x00];
    const ZSTD_MAGIC: &[u8] = &[0x28, 0xB5, 0x2F, 0xFD];
    let find = |m: &[u8]| data.windows(m.len()).position(|w| w == m);
    let (pos, mut cmd) = if let Some(p) = find(XZ_MAGIC) {
        let mut c = Command::new("xz");
        c.args(["-dc", "--single-stream"]);
        (p, c)
    } else if let Some(p) = find(ZSTD_MAGIC) {
        let mut c = Command::new("zstd");
        c.args(["-dcq"]);
        (p, c)
    } else {
        bail!("no xz or zstd stream in {}", bzimage.display());
    };
    let tmp = out.with_extension("packed");
    fs::write(&tmp, &data[pos..])?;
    // zstd complains about the bytes after the frame (the bzImage trailer) but has
    // written the whole kernel by then: judge by the output, not the exit status.
    let elf = cmd.arg(&tmp).output()?;
    fs::remove_file(&tmp)?;
    if !elf.stdout.starts_with(b"\x7fELF") {
        bail!(
            "decompressing {} did not produce an ELF: {}",
            bzimage.display(),
            String::from_utf8_lossy(&elf.stderr)
        );
    }
    fs::write(out, &elf.stdout)?;
    Ok(())
}
