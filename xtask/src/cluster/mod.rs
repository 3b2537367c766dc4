//! `cargo xtask cluster`: a real single-node Kubernetes cluster on this machine, built from
//! upstream sources, for the real-cluster test tier and for trying the DaemonSet by hand.
//!
//! ```text
//! cargo xtask cluster up [--proxy-mode iptables|nftables]   build (cached), start, wait until ready
//! cargo xtask cluster down                                   stop everything, remove all state
//! cargo xtask cluster status                                 what runs, what is ready
//! cargo xtask cluster kubectl ARGS...                        kubectl against the cluster
//! cargo xtask cluster netpol-suite [--no-enforcer]           the upstream NetworkPolicy e2e
//!                                                            suite, with or without enforcer
//! ```
//!
//! The node is laid out the way kubeadm and kind lay out theirs:
//!
//! - containerd (Debian's 1.6) with runc, and the kubelet, run on the host as processes
//!   started here (pid files under `/run/enforcer-cluster`);
//! - etcd, kube-apiserver, kube-controller-manager and kube-scheduler are **static pods**
//!   from the kubelet's manifest directory (their cgroups carry the config hash, as on kubeadm,
//!   kind and minikube nodes);
//! - kube-proxy runs on the host (iptables or nftables mode), CoreDNS as a Deployment;
//! - pods are wired with the CNI `ptp` plugin (one routed veth per pod, no bridge);
//! - everything network-facing lives in one network namespace, `enforcer-node`, that this
//!   command creates: the node's address, the pods' host-side veths, kube-proxy's rules and
//!   all test traffic stay inside it and leave the machine's own network untouched.
//!
//! No image is ever pulled: the pause, control-plane, CoreDNS, agnhost and busybox images are
//! assembled here from the binaries built by [`build`] and imported into containerd under
//! the names the manifests ask for, and so is the enforcer image (`cargo xtask image`).
//!
//! This host's cgroups are hybrid (cgroup v1 controllers, a cgroup2 mount without
//! controllers at /sys/fs/cgroup/unified). Kubernetes 1.34 still runs on cgroup v1 (1.35
//! refuses it by default), and runc's cgroup v1 driver also creates and joins every
//! container's cgroup in the cgroup2 hierarchy when it finds one in hybrid mode, so pods'
//! processes land in `/sys/fs/cgroup/unified/kubepods/...`, where the enforcer attaches.

mod build;
mod images;
mod node;
mod pki;
mod specs;
pub mod tier;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Result, bail};

use crate::util::is_root;

/// The Kubernetes release everything is built from (tests/cluster/k8s/go.mod pins it).
pub const K8S_VERSION: &str = "v1.34.4";
/// etcd as k8s.io/kubernetes v1.34.4 requires it (and as kubeadm 1.34 deploys it).
pub const ETCD_VERSION: &str = "3.6.4";
/// CoreDNS as kubeadm 1.34 deploys it (tests/cluster/coredns/go.mod pins it).
pub const COREDNS_VERSION: &str = "v1.12.1";
/// agnhost of the same release (test/images/agnhost/VERSION).
pub const AGNHOST_VERSION: &str = "2.56";
/// The sandbox image of the release (build/pause/Makefile).
pub const PAUSE_VERSION: &str = "3.10.1";

pub const NETNS: &str = "enforcer-node";
pub const NODE_NAME: &str = "enforcer-node";
pub const NODE_IP: &str = "10.250.0.2";
pub const NODE_PREFIX_LEN: u8 = 24;
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";
pub const POD_CIDR: &str = "10.244.0.0/24";
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
pub const API_SERVICE_IP: &str = "10.96.0.1";
pub const DNS_SERVICE_IP: &str = "10.96.0.10";
pub const API_PORT: u16 = 6443;

/// kube-proxy's data plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyMode {
    Iptables,
    Nftables,
}

impl ProxyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyMode::Iptables => "iptables",
            ProxyMode::Nftables => "nftables",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "iptables" => Ok(ProxyMode::Iptables),
            "nftables" => Ok(ProxyMode::Nftables),
            _ => bail!("unknown kube-proxy mode {s:?} (iptables or nftables)"),
        }
    }
}

/// Where the cluster keeps its state. One node per machine: the paths are fixed so that
/// `down` finds what an earlier `up` (of any checkout) left.
#[derive(Clone, Debug)]
pub struct Layout {
    /// Persistent state: certificates, configs, etcd data, kubelet and containerd roots, logs.
    pub state: PathBuf,
    /// Runtime state: sockets, pid files, containerd's state directory.
    pub run: PathBuf,
}

impl Default for Layout {
    fn default() -> Self {
        Self {
            state: PathBuf::from("/var/lib/enforcer-cluster"),
            run: PathBuf::from("/run/enforcer-cluster"),
        }
    }
}

impl Layout {
    pub fn pki(&self) -> PathBuf {
        self.state.join("pki")
    }
    pub fn logs(&self) -> PathBuf {
        self.state.join("logs")
    }
    pub fn manifests(&self) -> PathBuf {
        self.state.join("manifests")
    }
    pub fn kubelet_root(&self) -> PathBuf {
        self.state.join("kubelet")
    }
    pub fn containerd_root(&self) -> PathBuf {
        self.state.join("containerd")
    }
    pub fn containerd_sock(&self) -> PathBuf {
        self.run.join("containerd.sock")
    }
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.state.join("admin.kubeconfig")
    }
    /// A `kubectl` wrapper that enters the node's network namespace and uses the admin
    /// kubeconfig: what the tests and users run.
    pub fn kubectl(&self) -> PathBuf {
        self.state.join("bin/kubectl")
    }
    /// Where the built binaries of this `up` are (a link into the build cache).
    pub fn bin(&self) -> PathBuf {
        self.state.join("bin/k8s")
    }
    pub fn proxy_mode_file(&self) -> PathBuf {
        self.state.join("proxy-mode")
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: cargo xtask cluster up [--proxy-mode iptables|nftables]\n       cargo xtask cluster down\n       cargo xtask cluster status\n       cargo xtask cluster kubectl ARGS...\n       cargo xtask cluster netpol-suite [--no-enforcer]"
    );
    std::process::exit(2)
}

pub fn cluster(args: &[String]) -> Result<()> {
    let Some(cmd) = args.first() else { usage() };
    if !is_root() {
        bail!("the cluster runs containerd, a kubelet and network namespaces: run it as root");
    }
    let layout = Layout::default();
    match cmd.as_str() {
        "up" => {
            let mut mode = ProxyMode::Iptables;
            let mut it = args[1..].iter();
            while let Some(a) = it.next() {
                match a.as_str() {
                    "--proxy-mode" => {
                        mode = ProxyMode::parse(it.next().map(String::as_str).unwrap_or(""))?
                    }
                    _ => usage(),
                }
            }
            up(&layout, mode)
        }
        "down" => down(&layout),
        "status" => {
            let st = node::status(&layout);
            print!("{}", st.report());
            if !st.healthy() {
                std::process::exit(1);
            }
            Ok(())
        }
        "netpol-suite" => {
            let no_enforcer = match args.get(1).map(String::as_str) {
                None => false,
                Some("--no-enforcer") => true,
                Some(_) => usage(),
            };
            tier::netpol_suite_cmd(&layout, no_enforcer)
        }
        "kubectl" => {
            let status = Command::new(layout.kubectl()).args(&args[1..]).status()?;
            std::process::exit(status.code().unwrap_or(1))
        }
        _ => usage(),
    }
}

/// Bring the cluster up (or reconcile a running one to `mode`) and wait until the node,
/// the control plane and CoreDNS are ready. Idempotent.
pub fn up(layout: &Layout, mode: ProxyMode) -> Result<()> {
    let start = std::time::Instant::now();
    node::ensure_packages()?;
    let bins = build::build()?;
    eprintln!(
        "cluster: binaries ready ({:.0}s)",
        start.elapsed().as_secs_f64()
    );
    let archives = images::build_all(&bins)?;
    eprintln!(
        "cluster: images ready ({:.0}s)",
        start.elapsed().as_secs_f64()
    );
    node::up(layout, &bins, &archives, mode)?;
    eprintln!(
        "cluster: up in {:.0}s (kube-proxy {}); kubectl: {} (or cargo xtask cluster kubectl)",
        start.elapsed().as_secs_f64(),
        mode.as_str(),
        layout.kubectl().display()
    );
    Ok(())
}

/// Stop everything `up` started and remove all state. Safe to run at any time.
pub fn down(layout: &Layout) -> Result<()> {
    node::down(layout)
}

pub(crate) fn write(path: &Path, contents: impl AsRef<[u8]>) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(path, contents).map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
}
