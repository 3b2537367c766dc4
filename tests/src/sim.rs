//! A simulated Kubernetes node: the real agent binary in standalone mode, pods as network
//! namespaces and kubelet-layout cgroups, real servers and real connections.
//!
//! ```text
//!   node netns (the agent runs here; bridge address = the node's IP)
//!     └─ bridge ── veth ── pod netns x-a (servers in the pod's container cgroup)
//!               ── veth ── pod netns x-b ...
//!   <cgroup2>/<test>/kubepods.slice/kubepods-burstable.slice/
//!        kubepods-burstable-pod<uid>.slice/cri-containerd-<id>.scope
//! ```
//!
//! Pods "on another node" get a network namespace on the same bridge but no cgroup below
//! kubepods: they are peers the agent knows from the manifests, not endpoints it enforces.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    net::{IpAddr, SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{Bg, Cgroup, Netns, Place, place_command, sh, unique};

/// Ports every simulated pod serves, with the container port names upstream's e2e uses.
pub const PORTS: &[(&str, u16)] = &[("tcp", 80), ("tcp", 81), ("udp", 80), ("udp", 81)];

/// The agent binary (built by `cargo build -p enforcer-user`; xtask does it before tests).
pub fn agent_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("ENFORCER_BIN") {
        return PathBuf::from(p);
    }
    let probe = crate::built_probe();
    let dir = probe.parent().expect("bin dir");
    let p = dir.join("enforcer");
    assert!(
        p.exists(),
        "{} not found: build it with `cargo build -p enforcer-user` (xtask does)",
        p.display()
    );
    p
}

#[derive(Clone, Debug)]
pub struct PodSpec {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// On the simulated node (enforced) or on another node (peer only).
    pub local: bool,
    /// A static pod: the kubelet's config hash names its cgroup, and its mirror pod in
    /// the manifests carries it in `kubernetes.io/config.mirror` (metadata.uid differs).
    pub config_hash: Option<String>,
}

impl PodSpec {
    pub fn new(namespace: &str, name: &str, local: bool) -> Self {
        let mut labels = BTreeMap::new();
        labels.insert("pod".to_string(), name.to_string());
        Self {
            namespace: namespace.into(),
            name: name.into(),
            labels,
            local,
            config_hash: None,
        }
    }

    /// A static pod (see [`PodSpec::config_hash`]) with this config hash.
    pub fn static_pod(mut self, hash: &str) -> Self {
        self.config_hash = Some(hash.to_string());
        self
    }

    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

pub struct SimPod {
    pub spec: PodSpec,
    pub uid: String,
    pub v4: IpAddr,
    pub v6: IpAddr,
    pub netns: Netns,
    /// The container cgroup processes of the pod run in (local pods only).
    pub cgroup: Option<PathBuf>,
    _server: Option<Bg>,
}

impl SimPod {
    pub fn place(&self) -> Place<'_> {
        Place {
            netns: Some(&self.netns),
            cgroup: self.cgroup.as_deref(),
        }
    }
}

/// The simulated node.
pub struct SimNode {
    pub node_name: String,
    pub node_ns: Netns,
    pub bridge: String,
    pub node_v4: IpAddr,
    pub node_v6: IpAddr,
    /// `--cgroup-root` of the agent (a test-owned directory below the cgroup2 mount).
    pub cgroup_root: Cgroup,
    pub kubepods: PathBuf,
    pub pods: BTreeMap<String, SimPod>,
    /// Namespace labels, by namespace.
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    pub manifests: tempfile_dir::TempDir,
    /// Ports every pod serves (and the matrix probes); default [`PORTS`].
    pub ports: Vec<(&'static str, u16)>,
    /// Third octet of the IPv4 subnet (10.77.<n>.0/24) and IPv6 (fd77:<n>::/64).
    subnet: u8,
    next_host: u8,
}

/// A tiny owned temporary directory (removed on drop).
pub mod tempfile_dir {
    use std::path::{Path, PathBuf};

    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new(prefix: &str) -> Self {
            let p = std::env::temp_dir().join(crate::unique(prefix));
            std::fs::create_dir_all(&p).expect("mkdir temp");
            Self(p)
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn uid_for(ns: &str, name: &str, salt: u32) -> String {
    // Deterministic, well-formed UUIDs.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in format!("{ns}/{name}/{salt}").bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    let h2 = h.rotate_left(29) ^ 0x9e3779b97f4a7c15;
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        (h >> 32) as u32,
        (h >> 16) as u16,
        (h & 0xfff) as u16,
        (h2 >> 52) as u16 & 0xfff,
        h2 & 0xffff_ffff_ffff
    )
}

impl SimNode {
    pub fn new(subnet: u8) -> Self {
        let node_ns = Netns::new("node");
        let bridge = "br0".to_string();
        node_ns.ip(&["link", "add", "name", &bridge, "type", "bridge"]);
        let node_v4: IpAddr = format!("10.77.{subnet}.1").parse().unwrap();
        let node_v6: IpAddr = format!("fd77:{subnet}::1").parse().unwrap();
        node_ns.ip(&["addr", "add", &format!("{node_v4}/24"), "dev", &bridge]);
        node_ns.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{node_v6}/64"),
            "dev",
            &bridge,
            "nodad",
        ]);
        node_ns.ip(&["link", "set", &bridge, "up"]);
        let cgroup_root = Cgroup::new_root("enf-sim");
        let kubepods = cgroup_root
            .path
            .join("kubepods.slice/kubepods-burstable.slice");
        fs::create_dir_all(&kubepods).expect("mkdir kubepods");
        let kubepods = cgroup_root.path.join("kubepods.slice");
        Self {
            node_name: "node-1".into(),
            node_ns,
            bridge,
            node_v4,
            node_v6,
            cgroup_root,
            kubepods,
            pods: BTreeMap::new(),
            namespaces: BTreeMap::new(),
            manifests: tempfile_dir::TempDir::new("enf-manifests"),
            ports: PORTS.to_vec(),
            subnet,
            next_host: 10,
        }
    }

    pub fn add_namespace(&mut self, name: &str, labels: &[(&str, &str)]) {
        let mut l: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        l.insert("ns".into(), name.into());
        self.namespaces.insert(name.into(), l);
    }

    /// Create the pod's network namespace, its cgroup (local pods) and its servers, with
    /// generated addresses and uid.
    pub fn add_pod(&mut self, spec: PodSpec) {
        let host = self.next_host;
        self.next_host += 1;
        let v4: IpAddr = format!("10.77.{}.{host}", self.subnet).parse().unwrap();
        let v6: IpAddr = format!("fd77:{}::{host:x}", self.subnet).parse().unwrap();
        let uid = uid_for(&spec.namespace, &spec.name, host as u32);
        self.add_pod_at(spec, &uid, v4, v6);
    }

    /// Same, with the pod's uid and addresses given (e.g. read from example manifests).
    pub fn add_pod_at(&mut self, spec: PodSpec, uid: &str, v4: IpAddr, v6: IpAddr) {
        let uid = uid.to_string();
        let host = self.pods.len() as u128 + 1;
        let netns = Netns::new("pod");
        let outer = unique("vp");
        sh(
            "ip",
            &[
                "link",
                "add",
                "name",
                &outer,
                "netns",
                &self.node_ns.name,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &netns.name,
            ],
        );
        self.node_ns
            .ip(&["link", "set", &outer, "master", &self.bridge]);
        self.node_ns.ip(&["link", "set", &outer, "up"]);
        netns.ip(&["addr", "add", &format!("{v4}/24"), "dev", "eth0"]);
        netns.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{v6}/64"),
            "dev",
            "eth0",
            "nodad",
        ]);
        netns.ip(&["link", "set", "eth0", "up"]);
        let cgroup_uid = spec.config_hash.clone().unwrap_or_else(|| uid.clone());
        let cgroup = spec.local.then(|| {
            let pod_dir = self.kubepods.join(format!(
                "kubepods-burstable.slice/kubepods-burstable-pod{}.slice",
                cgroup_uid.replace('-', "_")
            ));
            let ctr = pod_dir.join(format!("cri-containerd-{:064x}", host * 7919) + ".scope");
            fs::create_dir_all(&ctr).expect("mkdir pod cgroup");
            ctr
        });
        let mut args = vec!["serve".to_string(), format!("id={}", spec.name)];
        for (proto, port) in &self.ports {
            args.push(format!("{proto}:{port}"));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let server = Bg::spawn(
            Place {
                netns: Some(&netns),
                cgroup: cgroup.as_deref(),
            },
            &args,
        );
        self.pods.insert(
            spec.key(),
            SimPod {
                spec,
                uid,
                v4,
                v6,
                netns,
                cgroup,
                _server: Some(server),
            },
        );
    }

    /// The Namespace and Pod manifests of the simulation (policies are written separately).
    pub fn cluster_yaml(&self) -> String {
        let mut y = String::new();
        for (ns, labels) in &self.namespaces {
            let _ = writeln!(
                y,
                "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels:"
            );
            for (k, v) in labels {
                let _ = writeln!(y, "    {k}: \"{v}\"");
            }
        }
        for p in self.pods.values() {
            let node = if p.spec.local {
                self.node_name.as_str()
            } else {
                "node-2"
            };
            let _ = writeln!(
                y,
                "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {}\n  namespace: {}\n  uid: {}\n  labels:",
                p.spec.name, p.spec.namespace, p.uid
            );
            for (k, v) in &p.spec.labels {
                let _ = writeln!(y, "    {k}: \"{v}\"");
            }
            if let Some(hash) = &p.spec.config_hash {
                let _ = writeln!(
                    y,
                    "  annotations:\n    kubernetes.io/config.mirror: \"{hash}\""
                );
            }
            let _ = writeln!(
                y,
                "spec:\n  nodeName: {node}\n  containers:\n  - name: c\n    image: busybox\n    ports:"
            );
            for (proto, port) in &self.ports {
                // The probe's "dns" server is a UDP port.
                let protocol = if *proto == "dns" { "UDP" } else { proto };
                let _ = writeln!(
                    y,
                    "    - name: serve-{port}-{proto}\n      containerPort: {port}\n      protocol: {}",
                    protocol.to_uppercase()
                );
            }
            let _ = writeln!(
                y,
                "status:\n  phase: Running\n  podIP: {}\n  podIPs:\n  - ip: {}\n  - ip: {}",
                p.v4, p.v4, p.v6
            );
        }
        y
    }

    /// Route between the pods through the node (as a ptp/bridge CNI's gateway does): the
    /// node forwards, and every pod's default route points at the node's address. Needed
    /// for traffic to addresses outside the pod subnet (Service addresses the node NATs).
    pub fn enable_routing(&self) {
        for key in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"] {
            sh(
                "ip",
                &["netns", "exec", &self.node_ns.name, "sysctl", "-qw", key],
            );
        }
        for p in self.pods.values() {
            p.netns
                .ip(&["route", "add", "default", "via", &self.node_v4.to_string()]);
            p.netns.ip(&[
                "-6",
                "route",
                "add",
                "default",
                "via",
                &self.node_v6.to_string(),
            ]);
        }
    }

    /// Write a manifest file atomically (rename into place), as editors and ConfigMap
    /// updates do.
    pub fn write_manifest(&self, file: &str, content: &str) {
        let tmp = self.manifests.path().join(format!(".{file}.tmp"));
        fs::write(&tmp, content).expect("write manifest");
        fs::rename(&tmp, self.manifests.path().join(file)).expect("rename manifest");
    }

    pub fn remove_manifest(&self, file: &str) {
        let _ = fs::remove_file(self.manifests.path().join(file));
    }

    pub fn write_cluster(&self) {
        self.write_manifest("00-cluster.yaml", &self.cluster_yaml());
    }

    /// Start the agent (inside the node's network namespace) and wait until it is ready.
    pub fn start_agent(&self, extra: &[&str]) -> Agent {
        let mut agent = self.spawn_agent(extra);
        agent.wait_ready(Duration::from_secs(20));
        agent
    }

    /// Start the agent without waiting for readiness.
    pub fn spawn_agent(&self, extra: &[&str]) -> Agent {
        let bpffs = PathBuf::from("/sys/fs/bpf").join(unique("enforcer-test-"));
        self.spawn_agent_at(&bpffs, extra)
    }

    /// Start an agent on a given bpffs instance directory without waiting for readiness.
    pub fn spawn_agent_at_dir(&self, bpffs: &Path, extra: &[&str]) -> Agent {
        self.spawn_agent_at(bpffs, extra)
    }

    /// Start an agent on a given bpffs instance directory (e.g. a previous agent's, to test
    /// restarts) and wait until it is ready.
    pub fn start_agent_at(&self, bpffs: &Path, extra: &[&str]) -> Agent {
        let mut agent = self.spawn_agent_at(bpffs, extra);
        agent.wait_ready(Duration::from_secs(20));
        agent
    }

    /// Start the agent as on a node that is itself a container (kind, minikube's docker
    /// driver): in its own cgroup namespace rooted at this node's cgroup root, with
    /// cgroupfs mounted from inside it, so that the agent sees the root as `/` and cannot
    /// tell from user space how deep the node's cgroups are in the kernel's hierarchy.
    /// Waits until it is ready.
    pub fn start_agent_nested(&self, extra: &[&str]) -> Agent {
        let bpffs = PathBuf::from("/sys/fs/bpf").join(unique("enforcer-test-"));
        let mut agent = self.spawn_agent_inner(&bpffs, extra, true, None);
        agent.wait_ready(Duration::from_secs(20));
        agent
    }

    /// Start an agent on `bpffs` as the process of a pod would run: in `cgroup` (a
    /// directory below kubepods that no manifest describes, as a new agent pod's is), and
    /// wait until it is ready.
    pub fn start_agent_in(&self, bpffs: &Path, cgroup: &Path, extra: &[&str]) -> Agent {
        let mut agent = self.spawn_agent_inner(bpffs, extra, false, Some(cgroup));
        agent.wait_ready(Duration::from_secs(20));
        agent
    }

    fn spawn_agent_at(&self, bpffs: &Path, extra: &[&str]) -> Agent {
        self.spawn_agent_inner(bpffs, extra, false, None)
    }

    fn spawn_agent_inner(
        &self,
        bpffs: &Path,
        extra: &[&str],
        nested: bool,
        in_cgroup: Option<&Path>,
    ) -> Agent {
        let bpffs = bpffs.to_path_buf();
        let port = {
            // A free port number (the agent binds it inside the node netns, where nothing
            // else listens; picking it here just avoids hard-coding).
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let health = SocketAddr::new(self.node_v4, port);
        crate::ensure_bpffs();
        let log = self.manifests.path().with_extension(unique("agent.log"));
        let logf = fs::File::create(&log).expect("agent log");
        let observe = std::env::temp_dir()
            .join(unique("enf-obs-"))
            .join("observe.sock");
        let mount = crate::Cgroup2Mount::detect().expect("cgroup2 mount").path;
        let (mut cmd, cgroup_root, cgroup) = if nested {
            // unshare(1) makes the cgroup namespace of the cgroup it runs in (the node's
            // root, joined before exec by `place_command`), then the shell replaces the
            // host's cgroupfs by one mounted from inside that namespace and execs the agent
            // (same pid: the test signals it).
            let mut cmd = Command::new("unshare");
            cmd.args([
                "--cgroup",
                "--mount",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
            ])
            .arg(r#"umount -l "$0" && mount -t cgroup2 cgroup2 "$0" && shift && exec "$@""#)
            .arg(&mount)
            .arg("-")
            .arg(agent_bin());
            (cmd, mount.clone(), Some(self.cgroup_root.path.as_path()))
        } else {
            (
                Command::new(agent_bin()),
                self.cgroup_root.path.clone(),
                in_cgroup,
            )
        };
        cmd.args(["run", "--manifests"])
            .arg(self.manifests.path())
            .args(["--node", &self.node_name, "--cgroup-root"])
            .arg(&cgroup_root)
            .args(["--health-addr", &health.to_string(), "--bpffs"])
            .arg(&bpffs)
            .arg("--observe-socket")
            .arg(&observe)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf);
        place_command(
            &mut cmd,
            Place {
                netns: Some(&self.node_ns),
                cgroup,
            },
        );
        let child = cmd.spawn().expect("start agent");
        Agent {
            child: Some(child),
            health,
            bpffs,
            log,
            observe,
            node_ns: self.node_ns.name.clone(),
        }
    }

    /// Probe every (from, to, proto, port) combination in parallel; returns what happened.
    pub fn matrix(
        &self,
        from: &[&str],
        to: &[&str],
        v6: bool,
        timeout_ms: u64,
    ) -> BTreeMap<(String, String, String, u16), String> {
        let mut results = BTreeMap::new();
        std::thread::scope(|s| {
            let mut handles = Vec::new();
            for f in from {
                let src = &self.pods[*f];
                let mut args = vec!["matrix".to_string(), timeout_ms.to_string()];
                let mut keys = Vec::new();
                for t in to {
                    let dst = &self.pods[*t];
                    let ip = if v6 { dst.v6 } else { dst.v4 };
                    for (proto, port) in &self.ports {
                        args.push(format!("{proto},{ip},{port}"));
                        keys.push((f.to_string(), t.to_string(), proto.to_string(), *port));
                    }
                }
                handles.push(s.spawn(move || {
                    let a: Vec<&str> = args.iter().map(String::as_str).collect();
                    let (_, out) = crate::probe(src.place(), &a);
                    let words: Vec<String> = out
                        .lines()
                        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_owned))
                        .collect();
                    (keys, words, out)
                }));
            }
            for h in handles {
                let (keys, words, out) = h.join().expect("probe thread");
                assert_eq!(keys.len(), words.len(), "probe output: {out}");
                for (k, w) in keys.into_iter().zip(words) {
                    results.insert(k, w);
                }
            }
        });
        results
    }

    /// One probe.
    pub fn probe(
        &self,
        from: &str,
        to: &str,
        proto: &str,
        port: u16,
        v6: bool,
        timeout_ms: u64,
    ) -> String {
        let dst = &self.pods[to];
        let ip = if v6 { dst.v6 } else { dst.v4 };
        crate::probe(
            self.pods[from].place(),
            &[
                "connect",
                proto,
                &ip.to_string(),
                &port.to_string(),
                &timeout_ms.to_string(),
            ],
        )
        .1
    }

    /// A probe from the node itself (kubelet-style) to a pod.
    pub fn probe_from_node(&self, to: &str, proto: &str, port: u16) -> String {
        let dst = &self.pods[to];
        crate::probe(
            Place {
                netns: Some(&self.node_ns),
                cgroup: None,
            },
            &[
                "connect",
                proto,
                &dst.v4.to_string(),
                &port.to_string(),
                "800",
            ],
        )
        .1
    }
}

/// A running `enforcer run`; on drop: SIGTERM, then `enforcer uninstall`.
pub struct Agent {
    child: Option<Child>,
    pub health: SocketAddr,
    pub bpffs: PathBuf,
    pub log: PathBuf,
    /// The agent's event socket (`enforcer observe --socket`).
    pub observe: PathBuf,
    node_ns: String,
}

impl Agent {
    /// GET a path on the health endpoint: (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        let ns = Netns::borrowed(&self.node_ns);
        let (_, out) = crate::probe(
            Place {
                netns: Some(&ns),
                cgroup: None,
            },
            &["http", &self.health.to_string(), path],
        );
        let (status, body) = out.split_once('\n').unwrap_or((&out, ""));
        (status.trim().parse().unwrap_or(0), body.to_string())
    }

    /// `enforcer status` of this agent's instance.
    pub fn status(&self) -> String {
        let out = Command::new(agent_bin())
            .args(["status", "--bpffs"])
            .arg(&self.bpffs)
            .output()
            .expect("run enforcer status");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn metric(&self, name: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics");
        body.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    }

    pub fn wait_ready(&mut self, limit: Duration) {
        let start = Instant::now();
        loop {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("agent exited ({status}) before ready:\n{}", self.log_text());
            }
            if self.get("/readyz").0 == 200 {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "agent not ready after {limit:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait until the agent has applied a change made after `before` reconciles.
    pub fn wait_reconciled(&self, before: f64, limit: Duration) -> Duration {
        let start = Instant::now();
        loop {
            if self.metric("enforcer_reconciles_total").unwrap_or(0.0) > before {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < limit,
                "agent did not reconcile within {limit:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn reconciles(&self) -> f64 {
        self.metric("enforcer_reconciles_total").unwrap_or(0.0)
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the agent process is still running.
    pub fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGTERM and wait; returns how long the exit took.
    pub fn stop(&mut self) -> Duration {
        let start = Instant::now();
        if let Some(mut c) = self.child.take() {
            // SAFETY: plain kill(2) of our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
        start.elapsed()
    }

    pub fn uninstall(&self) {
        let _ = Command::new(agent_bin())
            .args(["uninstall", "--bpffs"])
            .arg(&self.bpffs)
            .stdout(Stdio::null())
            .status();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.uninstall();
        let _ = fs::remove_file(&self.log);
        let _ = fs::remove_file(&self.observe);
        if let Some(dir) = self.observe.parent() {
            let _ = fs::remove_dir(dir);
        }
    }
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}
