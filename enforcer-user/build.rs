//! Builds `enforcer-ebpf` for `bpfel-unknown-none` and places the object in OUT_DIR, where
//! `src/bpf.rs` embeds it (`OBJECT`). The BPF crate is compiled by Debian's `rustc-web` toolchain (it
//! ships a prebuilt `core` for the BPF targets; rustup's toolchains here lack rust-src) and
//! linked by `bpf-linker`. `cargo xtask setup` installs both.
//!
//! Environment switches:
//! - `ENFORCER_EBPF_OBJECT=path`: embed this prebuilt object instead of building.
//! - `ENFORCER_SKIP_EBPF=1`: embed an empty object (fast `cargo check`/clippy; loading
//!   programs then fails with a clear error).
//! - `ENFORCER_BPF_CARGO`, `ENFORCER_BPF_RUSTC`: the toolchain (default /usr/bin/cargo,
//!   /usr/bin/rustc).

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

fn main() {
    for var in [
        "ENFORCER_EBPF_OBJECT",
        "ENFORCER_SKIP_EBPF",
        "ENFORCER_BPF_CARGO",
        "ENFORCER_BPF_RUSTC",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let dst = out_dir.join("enforcer.bpf.o");

    if let Some(obj) = env::var_os("ENFORCER_EBPF_OBJECT") {
        println!("cargo:rerun-if-changed={}", Path::new(&obj).display());
        fs::copy(&obj, &dst)
            .unwrap_or_else(|e| panic!("ENFORCER_EBPF_OBJECT={}: {e}", Path::new(&obj).display()));
        return;
    }
    if env::var_os("ENFORCER_SKIP_EBPF").is_some_and(|v| v != "0") {
        fs::write(&dst, b"").expect("write empty object");
        return;
    }

    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("manifest dir"));
    let root = manifest_dir.parent().expect("workspace root");
    let ebpf_dir = root.join("enforcer-ebpf");
    for p in [
        ebpf_dir.join("src"),
        ebpf_dir.join("Cargo.toml"),
        ebpf_dir.join("Cargo.lock"),
        ebpf_dir.join(".cargo/config.toml"),
        root.join("enforcer-common/src"),
        root.join("enforcer-common/Cargo.toml"),
    ] {
        println!("cargo:rerun-if-changed={}", p.display());
    }

    let cargo = env::var("ENFORCER_BPF_CARGO").unwrap_or_else(|_| "/usr/bin/cargo".into());
    let rustc = env::var("ENFORCER_BPF_RUSTC").unwrap_or_else(|_| "/usr/bin/rustc".into());
    for tool in [&cargo, &rustc] {
        if !Path::new(tool).exists() {
            panic!(
                "\n\nenforcer-ebpf needs Debian's rustc-web toolchain ({tool} is missing).\n\
                 Run `cargo xtask setup` once (as root), or set ENFORCER_SKIP_EBPF=1 to build \
                 without the kernel programs.\n\n"
            );
        }
    }

    let target_dir = out_dir.join("ebpf-target");
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&ebpf_dir)
        .args(["build", "--release", "--locked", "--target-dir"])
        .arg(&target_dir);
    // The outer cargo's environment describes the host build; none of it may leak into
    // the BPF build (RUSTFLAGS, RUSTC_WRAPPER, target cfgs, rustup's toolchain pin...).
    for (k, _) in env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        let leaks = (k.starts_with("CARGO") && k != "CARGO_HOME" && !k.starts_with("CARGO_NET"))
            || k.starts_with("RUST")
            || matches!(
                k.as_str(),
                "TARGET" | "HOST" | "OUT_DIR" | "OPT_LEVEL" | "DEBUG" | "PROFILE" | "NUM_JOBS"
            );
        if leaks {
            cmd.env_remove(&k);
        }
    }
    // bpf-linker is installed by `cargo install`, under CARGO_HOME/bin.
    let cargo_home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"));
    let path = env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![cargo_home.join("bin")];
    paths.extend(env::split_paths(&path));
    cmd.env("PATH", env::join_paths(paths).expect("PATH"))
        .env("RUSTC", &rustc)
        // aya-ebpf uses #![feature(asm_experimental_arch)]; Debian's compiler is stable.
        .env("RUSTC_BOOTSTRAP", "1");

    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("running {cargo} for enforcer-ebpf: {e}"));
    if !status.success() {
        panic!("building enforcer-ebpf failed ({status}); see the output above");
    }
    let built = target_dir.join("bpfel-unknown-none/release/enforcer");
    fs::copy(&built, &dst).unwrap_or_else(|e| panic!("copy {}: {e}", built.display()));
}
