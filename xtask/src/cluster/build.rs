//! The cluster's binaries, built from pinned upstream sources and cached.
//!
//! - `tests/cluster/k8s`: a Go module that requires `k8s.io/kubernetes` at
//!   [`K8S_VERSION`](super::K8S_VERSION) (its staging modules replaced by the same release's
//!   tags) and builds kube-apiserver, kube-controller-manager, kube-scheduler, kubelet,
//!   kube-proxy, kubectl, etcd (the server module the release requires), agnhost, ginkgo and
//!   the e2e test binary.
//! - `tests/cluster/coredns`: CoreDNS at the version kubeadm of that release deploys.
//! - pause: `build/pause/linux/pause.c` of the same release, compiled statically with gcc.
//!
//! The cache key is a hash of both modules' go.mod/go.sum/sources, the Go version and
//! [`BUILD_REV`]: a second `up` finds everything built. A cold build takes about 10
//! minutes on 2 cores (most of it kube-apiserver's dependency tree).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use super::{K8S_VERSION, PAUSE_VERSION};
use crate::util::{cache_dir, output, root, run};

/// Bump when the way binaries are built changes (flags, list).
const BUILD_REV: &str = "1";

/// Programs built from tests/cluster/k8s with `go build`.
const K8S_PROGRAMS: &[(&str, &str)] = &[
    ("kube-apiserver", "k8s.io/kubernetes/cmd/kube-apiserver"),
    (
        "kube-controller-manager",
        "k8s.io/kubernetes/cmd/kube-controller-manager",
    ),
    ("kube-scheduler", "k8s.io/kubernetes/cmd/kube-scheduler"),
    ("kubelet", "k8s.io/kubernetes/cmd/kubelet"),
    ("kube-proxy", "k8s.io/kubernetes/cmd/kube-proxy"),
    ("kubectl", "k8s.io/kubernetes/cmd/kubectl"),
    ("etcd", "go.etcd.io/etcd/server/v3"),
    ("agnhost", "k8s.io/kubernetes/test/images/agnhost"),
    ("ginkgo", "github.com/onsi/ginkgo/v2/ginkgo"),
];

/// The built programs of one cache key.
#[derive(Clone, Debug)]
pub struct Bins {
    pub dir: PathBuf,
}

impl Bins {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

fn k8s_module() -> PathBuf {
    root().join("tests/cluster/k8s")
}

fn coredns_module() -> PathBuf {
    root().join("tests/cluster/coredns")
}

fn go() -> Command {
    let mut c = Command::new("go");
    // The modules say `go 1.24.0`; never let the go command fetch another toolchain.
    c.env("GOTOOLCHAIN", "local")
        .env("CGO_ENABLED", "0")
        .env("GOFLAGS", "-mod=readonly -trimpath -buildvcs=false");
    c
}

fn cache_key() -> Result<String> {
    let mut h = Sha256::new();
    h.update(BUILD_REV);
    h.update(output(go().arg("version"))?);
    for dir in [k8s_module(), coredns_module()] {
        let mut names: Vec<PathBuf> = fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        names.sort();
        for p in names {
            h.update(p.file_name().unwrap().as_encoded_bytes());
            h.update(fs::read(&p)?);
        }
    }
    Ok(hex(&h.finalize())[..16].to_string())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn version_ldflags() -> String {
    let minor = K8S_VERSION.split('.').nth(1).unwrap_or("0");
    let mut ld = String::from("-s -w");
    for pkg in [
        "k8s.io/component-base/version",
        "k8s.io/client-go/pkg/version",
    ] {
        ld.push_str(&format!(
            " -X {pkg}.gitVersion={K8S_VERSION} -X {pkg}.gitMajor=1 -X {pkg}.gitMinor={minor} \
             -X {pkg}.gitTreeState=clean -X {pkg}.buildDate=1970-01-01T00:00:00Z"
        ));
    }
    ld
}

/// Build (or find in the cache) every binary the cluster needs.
pub fn build() -> Result<Bins> {
    if Command::new("go").arg("version").output().is_err() {
        bail!(
            "the real-cluster tier builds Kubernetes from source and needs Go (>= 1.24) on PATH; \
             none was found"
        );
    }
    let key = cache_key()?;
    let dir = cache_dir().join("cluster").join(format!("bin-{key}"));
    let bins = Bins { dir: dir.clone() };
    if dir.join(".complete").exists() {
        return Ok(bins);
    }
    let tmp = dir.with_extension("partial");
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    let start = std::time::Instant::now();
    eprintln!(
        "cluster: building Kubernetes {K8S_VERSION} and friends into {} (cold: ~10 min on 2 cores)",
        dir.display()
    );

    let ld = version_ldflags();
    // One invocation for all programs: the go command schedules the shared packages once.
    let mut cmd = go();
    cmd.current_dir(k8s_module())
        .args(["build", "-ldflags", &ld, "-o"])
        .arg(format!("{}/", tmp.display()))
        .args(K8S_PROGRAMS.iter().map(|(_, pkg)| *pkg));
    run(&mut cmd)?;
    // The go command names the etcd server binary after its module path ("server" for
    // go.etcd.io/etcd/server/v3).
    let etcd = ["server", "v3"]
        .into_iter()
        .map(|n| tmp.join(n))
        .find(|p| p.is_file())
        .context("the etcd server binary was not built")?;
    fs::rename(etcd, tmp.join("etcd"))?;
    run(go()
        .current_dir(k8s_module())
        .args(["test", "-c", "-ldflags", &ld, "-o"])
        .arg(tmp.join("e2e.test"))
        .arg("k8s.io/kubernetes/test/e2e"))?;
    run(go()
        .current_dir(coredns_module())
        .args(["build", "-ldflags", "-s -w", "-o"])
        .arg(tmp.join("coredns"))
        .arg("."))?;
    build_pause(&tmp)?;
    for (name, _) in K8S_PROGRAMS {
        if !tmp.join(name).is_file() {
            bail!("{name} was not built into {}", tmp.display());
        }
    }
    fs::write(tmp.join(".complete"), "")?;
    let _ = fs::remove_dir_all(&dir);
    fs::rename(&tmp, &dir)?;
    eprintln!("cluster: built in {:.0}s", start.elapsed().as_secs_f64());
    Ok(bins)
}

/// The release's pause binary, static, as build/pause/Makefile compiles it.
fn build_pause(out: &Path) -> Result<()> {
    let module = output(go().current_dir(k8s_module()).args([
        "list",
        "-m",
        "-f",
        "{{.Dir}}",
        "k8s.io/kubernetes",
    ]))?;
    let src = PathBuf::from(module.trim()).join("build/pause/linux/pause.c");
    run(Command::new("gcc")
        .args(["-Os", "-Wall", "-Werror", "-static"])
        .arg(format!("-DVERSION=v{PAUSE_VERSION}-enforcer"))
        .arg("-o")
        .arg(out.join("pause"))
        .arg(&src))
}
