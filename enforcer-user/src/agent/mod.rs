//! The agent: a source of truth (a manifests directory, or the Kubernetes API) -> the
//! compilers (NetworkPolicy, runtime guards) -> the kernel maps, plus pod cgroup discovery,
//! events, health and metrics.
//!
//! Start-up order is chosen so that enforcement never has a hole: maps are filled before the
//! network programs attach, and readiness is reported only after that. On SIGTERM the agent
//! exits and leaves its pinned programs and maps in place: enforcement continues with the
//! last state until the next agent starts (which reuses the maps) or `enforcer uninstall`
//! runs.

pub mod apply;
pub mod events;
pub mod http;
pub mod metrics;
pub mod observe;
mod selftest;
pub mod source;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    sync::{Arc, RwLock, atomic::Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use enforcer_common::*;
use tokio::sync::broadcast;

use crate::{
    bpf::{self, Datapath},
    cgroup::{Cgroup2Mount, cgroup_id},
    guards::{self, Tier},
    kube::removal::{Decision, Removal},
    kubelet,
    policy::{
        CompileInput, Compiler, Desired,
        services::{ServiceCompiler, ServiceInput, ServiceState},
    },
    runtime_policy,
};
use apply::MapState;
use events::Names;
use metrics::Metrics;
use source::Snapshot;

/// What to do with traffic of pod cgroups the agent has not classified yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unclassified {
    Deny,
    Allow,
}

/// Which runtime guard tier to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuardsMode {
    /// Probe the kernel: BPF LSM if it is active, the fallback tier otherwise.
    Auto,
    /// Only the BPF LSM tier; fail to start without it.
    Lsm,
    /// The fallback tier even where the BPF LSM is active.
    Fallback,
    /// No runtime guards.
    Off,
}

/// Where the cluster state comes from.
#[derive(Clone, Debug)]
pub enum SourceKind {
    /// Standalone: a directory of manifests.
    Manifests(PathBuf),
    /// The Kubernetes API (in-cluster configuration, or `kubeconfig`).
    Kubernetes {
        kubeconfig: Option<PathBuf>,
        /// The agent's own pod (namespace, name), from the downward API: when the
        /// DaemonSet owning it or its namespace is deleted, stopping uninstalls
        /// (`kube::removal`).
        own_pod: Option<(String, String)>,
    },
}

#[derive(Clone, Debug)]
pub struct Options {
    pub source: SourceKind,
    pub node: String,
    /// cgroup2 directory below which the kubelet layouts are looked up (default: the mount).
    pub cgroup_root: Option<PathBuf>,
    /// The kubelet's pod cgroup root relative to `cgroup_root`, when not directly below it.
    pub kubepods: Option<PathBuf>,
    pub health_addr: Option<SocketAddr>,
    /// This instance's bpffs directory.
    pub bpffs: PathBuf,
    pub unclassified: Unclassified,
    /// Extra addresses of this node (added to the ones found on its interfaces).
    pub node_ips: Vec<IpAddr>,
    /// Report network denials without dropping.
    pub network_audit: bool,
    /// Emit an event for every new allowed flow too.
    pub allow_events: bool,
    /// Denial log lines per second before rate limiting.
    pub log_rate: f64,
    /// Serve the live event stream (`enforcer observe`) on this Unix socket.
    pub observe_socket: Option<PathBuf>,
    pub guards: GuardsMode,
    /// Tests only (`--break-fallback-guard`): guards whose fallback rules are dropped after
    /// attaching, to prove that the self-test notices.
    pub break_fallback_guards: u32,
}

/// Addresses configured on this network namespace's interfaces (loopback excluded).
pub fn local_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a linked list we free below; we only read it.
    unsafe {
        if libc::getifaddrs(&mut ifap) != 0 {
            return out;
        }
        let mut p = ifap;
        while !p.is_null() {
            let sa = (*p).ifa_addr;
            if !sa.is_null() {
                match (*sa).sa_family as i32 {
                    libc::AF_INET => {
                        let sin = &*(sa as *const libc::sockaddr_in);
                        out.push(IpAddr::from(
                            u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                        ));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(sa as *const libc::sockaddr_in6);
                        out.push(IpAddr::from(sin6.sin6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
            p = (*p).ifa_next;
        }
        libc::freeifaddrs(ifap);
    }
    out.retain(|a| !a.is_loopback());
    out.sort();
    out.dedup();
    out
}

/// This node's addresses: its interfaces' and the `--node-ip`s, sorted and unique.
fn host_addresses(extra: &[IpAddr]) -> Vec<IpAddr> {
    // IPv6 link-local addresses are per link (every pod's host-side veth has one, and
    // they come and go with pods): they name no node a policy could mean, and following
    // them would recompile on every pod start.
    let mut a: Vec<IpAddr> = local_addresses()
        .into_iter()
        .filter(|ip| !matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80))
        .collect();
    a.extend(extra.iter().copied());
    a.sort();
    a.dedup();
    a
}

/// Mount bpffs at /sys/fs/bpf when the instance directory lives there and nothing is
/// mounted yet (fresh hosts and VMs).
fn ensure_bpffs(dir: &Path) -> Result<()> {
    let bpf_root = Path::new("/sys/fs/bpf");
    if !dir.starts_with(bpf_root) {
        return Ok(());
    }
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mounted = mounts.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 2 && f[1] == "/sys/fs/bpf" && f[2] == "bpf"
    });
    if mounted {
        return Ok(());
    }
    let src = std::ffi::CString::new("bpf").unwrap();
    let target = std::ffi::CString::new("/sys/fs/bpf").unwrap();
    // SAFETY: plain mount(2) with valid NUL-terminated strings.
    let r = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            src.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if r != 0 {
        bail!(
            "bpffs is not mounted at /sys/fs/bpf and mounting it failed: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// The endpoint of the agent's own cgroup until its pod is classified: no pod policy, no
/// guards (its pod is hostNetwork and privileged in the ways its job needs).
const OWN_ENDPOINT: Endpoint = Endpoint {
    id: 0,
    flags: EP_NET_UNMANAGED,
    guards_enforce: 0,
    guards_audit: 0,
};

/// When the agent's own cgroup (`own`) is below the pods' root, mark it unmanaged in
/// the (possibly pinned, already attached) ENDPOINTS map at once.
fn own_cgroup_below(own: Option<&Path>, kubepods: &Path, dp: &mut Datapath) -> Option<u64> {
    let path = own?;
    if !path.starts_with(kubepods) {
        return None;
    }
    let id = match cgroup_id(path) {
        Ok(id) => id,
        Err(e) => {
            tracing::warn!("the agent's own cgroup {}: {e}", path.display());
            return None;
        }
    };
    let result = dp.endpoints().and_then(|mut m| {
        if m.get(&id, 0).is_err() {
            m.insert(id, OWN_ENDPOINT, 0)
                .map_err(|e| crate::bpf::BpfError::Map {
                    map: "ENDPOINTS".into(),
                    source: Box::new(e),
                })?;
        }
        Ok(())
    });
    match result {
        Ok(()) => tracing::info!(
            "the agent's own cgroup {} (id {id}) is exempt from pod policy",
            path.display()
        ),
        Err(e) => tracing::error!(
            "could not mark the agent's own cgroup {} as exempt: {e}",
            path.display()
        ),
    }
    Some(id)
}

/// Pod cgroups discovered so far: pod uid -> cgroup ids (pod cgroup and containers).
#[derive(Default)]
struct CgroupIndex {
    by_uid: BTreeMap<String, BTreeSet<u64>>,
    /// cgroup path -> (pod uid, id): removal events only carry the path.
    by_path: BTreeMap<PathBuf, (String, u64)>,
}

impl CgroupIndex {
    fn add(&mut self, uid: &str, path: &Path, id: u64) {
        self.by_uid.entry(uid.to_string()).or_default().insert(id);
        self.by_path
            .insert(path.to_path_buf(), (uid.to_string(), id));
    }

    fn add_pod(&mut self, p: &kubelet::PodCgroup) {
        self.add(&p.uid, &p.path, p.id);
        for c in &p.containers {
            self.add(&p.uid, &c.path, c.cgroup_id);
        }
    }

    /// Forget a cgroup; returns its id.
    fn remove_path(&mut self, path: &Path) -> Option<u64> {
        let (uid, id) = self.by_path.remove(path)?;
        if let Some(s) = self.by_uid.get_mut(&uid) {
            s.remove(&id);
            if s.is_empty() {
                self.by_uid.remove(&uid);
            }
        }
        Some(id)
    }
}

/// Everything the reconcile step needs.
struct Reconciler {
    dp: Datapath,
    compiler: Compiler,
    services: ServiceCompiler,
    node: String,
    /// Addresses of this node's interfaces (refreshed every second) and `--node-ip`s.
    host_addrs: Vec<IpAddr>,
    /// `--node-ip` addresses.
    extra_node_ips: Vec<IpAddr>,
    desired: Desired,
    desired_services: ServiceState,
    /// Guard bits per local pod uid: (enforce, audit).
    guards: BTreeMap<String, (u32, u32)>,
    current: MapState,
    cgroups: CgroupIndex,
    config: Config,
    names: Arc<RwLock<Names>>,
    metrics: Arc<Metrics>,
    guards_on: bool,
    /// The attach root's level last reported from `ROOT_LEVEL`.
    root_level_reported: Option<u32>,
    /// Addresses of the local pods, for naming event peers.
    local_ips: BTreeMap<IpAddr, crate::model::ObjectRef>,
    /// Guards of pending entries (0 until the first snapshot is programmed).
    pending_guards: u32,
    /// The agent's own cgroup below kubepods: always present, unmanaged.
    own_cgroup: Option<u64>,
    /// Pod cgroups (by pod uid) that no pod of the cluster state classifies yet: when they
    /// were first seen so, and whether that was reported.
    unclassified: BTreeMap<String, (Instant, bool)>,
    /// NetworkPolicies enforced fail-closed, with the errors last reported for them.
    fail_closed: BTreeMap<crate::model::ObjectRef, Vec<String>>,
}

/// How long a pod cgroup may stay unclassified before it is reported.
const UNCLASSIFIED_REPORT_AFTER: Duration = Duration::from_secs(5);

impl Reconciler {
    /// Recompile from a snapshot and apply the difference.
    fn recompile(&mut self, snap: &Snapshot) -> Result<()> {
        self.report_fail_closed(snap);
        self.desired_services = self.services.compile(&ServiceInput {
            cluster: &snap.cluster,
            node_name: &self.node,
            node_ips: &self.host_addrs,
        });
        for w in &self.desired_services.warnings {
            tracing::warn!("{w}");
        }
        // A Service frontend configured on a node interface (IPVS's kube-ipvs0, a
        // NodeLocal DNSCache address) is not "this node".
        let node_ips: Vec<IpAddr> = self
            .host_addrs
            .iter()
            .filter(|a| !self.desired_services.frontend_ips.contains(a))
            .copied()
            .collect();
        let input = CompileInput {
            cluster: &snap.cluster,
            node_name: &self.node,
            node_ips: &node_ips,
        };
        self.desired = self.compiler.compile(&input);
        // Host-network pods share the node's addresses: those name the node, not a pod.
        self.local_ips = self
            .desired
            .endpoints
            .values()
            .filter_map(|le| snap.cluster.pods.get(&le.pod).map(|p| (le, p)))
            .filter(|(_, p)| !p.host_network)
            .flat_map(|(le, p)| p.ips.iter().map(|ip| (*ip, le.pod.clone())))
            .collect();
        {
            let mut n = self.names.write().unwrap_or_else(|e| e.into_inner());
            n.node_ips = node_ips.into_iter().collect();
        }
        if self.guards_on {
            let (g, warnings) =
                runtime_policy::compile(&snap.cluster, &snap.runtime_policies, &self.node);
            for w in warnings {
                tracing::warn!("{w}");
            }
            self.guards = g;
        }
        self.sync()
    }

    /// Apply `desired` joined with the discovered cgroups.
    fn sync(&mut self) -> Result<()> {
        let start = Instant::now();
        let mut want = MapState {
            ipcache: self.desired.ipcache.clone(),
            policy: self.desired.policy.clone(),
            endpoints: BTreeMap::new(),
            services: self.desired_services.services.clone(),
            backends: self.desired_services.backends.clone(),
        };
        let mut cg_names = BTreeMap::new();
        for (uid, le) in &self.desired.endpoints {
            let mut ep = le.endpoint;
            if let Some((enforce, audit)) = self.guards.get(uid) {
                ep.guards_enforce = *enforce;
                ep.guards_audit = *audit;
            }
            // Packet sockets send and receive below the cgroup packet hooks: a pod that a
            // NetworkPolicy isolates (either direction) may not open one, whatever its Pod
            // Security level (audited only in network audit mode).
            if ep.flags & (EP_INGRESS_ISOLATED | EP_EGRESS_ISOLATED) != 0 {
                if self.config.flags & CFG_NET_AUDIT != 0 {
                    ep.guards_audit |= GUARD_PACKET_SOCKETS;
                } else {
                    ep.guards_enforce |= GUARD_PACKET_SOCKETS;
                }
            }
            if let Some(ids) = self.cgroups.by_uid.get(uid) {
                for id in ids {
                    want.endpoints.insert(*id, ep);
                    cg_names.insert(*id, le.pod.clone());
                }
            }
        }
        if let Some(id) = self.own_cgroup {
            want.endpoints.entry(id).or_insert(OWN_ENDPOINT);
        }
        // Pod cgroups no known pod classifies: pending entries with the strict guards (the
        // network treats them as unclassified). Their containers resolve to them.
        if self.pending_guards != 0 {
            let pending = Endpoint {
                id: PENDING_ENDPOINT,
                flags: EP_PENDING,
                guards_enforce: self.pending_guards,
                guards_audit: 0,
            };
            for (uid, ids) in &self.cgroups.by_uid {
                if self.desired.endpoints.contains_key(uid) {
                    continue;
                }
                for id in ids {
                    want.endpoints.entry(*id).or_insert(pending);
                }
            }
        }
        let policy_changed =
            want.policy != self.current.policy || want.ipcache != self.current.ipcache;
        let stats = apply::apply(&mut self.dp, &mut self.current, &want)?;
        for (map, key, err) in &stats.failures {
            tracing::error!("map {map}: could not write {key}: {err}");
            self.metrics.inc(
                "enforcer_map_write_errors_total",
                "Map entries the kernel refused (map full, ...).",
                &[("map", map)],
                1.0,
            );
        }
        if policy_changed {
            // Flows opened under the previous policy are re-checked in their original
            // direction.
            self.config.policy_revision = self.config.policy_revision.wrapping_add(1);
            self.dp.set_config(&self.config)?;
        }
        {
            let mut n = self.names.write().unwrap_or_else(|e| e.into_inner());
            n.endpoints = self
                .desired
                .endpoints
                .values()
                .map(|le| (le.endpoint.id, le.pod.clone()))
                .collect();
            n.identities = self.desired.identities.clone();
            n.policies = self.desired.policy_names.clone();
            n.cgroups = cg_names;
            n.local_ips = self.local_ips.clone();
        }
        let m = &self.metrics;
        let guarded = self.guards.values().filter(|(e, a)| e | a != 0).count();
        let packet_guarded = self
            .desired
            .endpoints
            .values()
            .filter(|le| le.endpoint.flags & (EP_INGRESS_ISOLATED | EP_EGRESS_ISOLATED) != 0)
            .count();
        m.set(
            "enforcer_endpoints",
            "Local pods known to the datapath.",
            &[],
            self.desired.endpoints.len() as f64,
        );
        m.set(
            "enforcer_guarded_pods",
            "Local pods with at least one runtime guard (enforced or audited).",
            &[],
            guarded as f64,
        );
        m.set(
            "enforcer_packet_socket_guarded_pods",
            "Local pods denied packet sockets because a NetworkPolicy isolates them.",
            &[],
            if self.guards_on {
                packet_guarded as f64
            } else {
                0.0
            },
        );
        m.set(
            "enforcer_endpoint_cgroups",
            "cgroups in the ENDPOINTS map.",
            &[],
            self.current.endpoints.len() as f64,
        );
        m.set(
            "enforcer_identities",
            "Peer identities allocated.",
            &[],
            self.desired.identities.len() as f64,
        );
        m.set(
            "enforcer_policy_entries",
            "Entries in the POLICY map.",
            &[],
            self.current.policy.len() as f64,
        );
        m.set(
            "enforcer_ipcache_entries",
            "Entries in the IPCACHE map.",
            &[],
            self.current.ipcache.len() as f64,
        );
        m.set(
            "enforcer_service_frontends",
            "Service frontends (address, port, protocol) translated at the socket.",
            &[],
            self.current.services.len() as f64,
        );
        m.set(
            "enforcer_service_backends",
            "Backend slots of all Service frontends' backend sets.",
            &[],
            self.current.backends.len() as f64,
        );
        m.inc(
            "enforcer_reconciles_total",
            "Map synchronisations.",
            &[],
            1.0,
        );
        m.set(
            "enforcer_last_reconcile_seconds",
            "Duration of the last map synchronisation.",
            &[],
            start.elapsed().as_secs_f64(),
        );
        tracing::debug!(
            upserts = stats.upserts,
            deletes = stats.deletes,
            "maps synchronised in {:?}",
            start.elapsed()
        );
        Ok(())
    }

    /// Copy the kernel's per-CPU counters into metrics.
    fn export_counters(&mut self) {
        const COUNTERS: &[(u32, &str, &str)] = &[
            (
                CNT_RINGBUF_DROPS,
                "enforcer_events_dropped_total",
                "Events the kernel could not queue (ring buffer full).",
            ),
            (
                CNT_PARSE_ERRORS,
                "enforcer_datapath_parse_errors_total",
                "Packets whose headers could not be parsed.",
            ),
            (
                CNT_CT_INSERT_ERRORS,
                "enforcer_conntrack_insert_errors_total",
                "Conntrack entries the kernel could not insert.",
            ),
            (
                CNT_NET_ALLOW,
                "enforcer_datapath_allowed_total",
                "Packets of classified pods allowed (socket calls are not counted; denied ones \
                 are events).",
            ),
            (
                CNT_NET_DENY,
                "enforcer_datapath_denied_total",
                "Packets denied (socket calls are not counted; denied ones are events).",
            ),
            (
                CNT_GUARD_DENY,
                "enforcer_guard_denied_total",
                "Operations denied by runtime guards.",
            ),
            (
                CNT_GUARD_AUDIT,
                "enforcer_guard_audited_total",
                "Operations reported by runtime guards in audit mode.",
            ),
            (
                CNT_ARM_ERRORS,
                "enforcer_arm_errors_total",
                "cgroups that could not be armed (ARMED map full).",
            ),
            (
                CNT_EXEMPT_GRANTED,
                "enforcer_runtime_exemptions_granted_total",
                "Container runtime tasks made exempt on entering a pod cgroup from outside.",
            ),
            (
                CNT_EXEMPT_PASSED,
                "enforcer_runtime_exemptions_used_total",
                "Guard checks and execs passed because the task was an exempt runtime task.",
            ),
            (
                CNT_EXEMPT_ERRORS,
                "enforcer_runtime_exemption_errors_total",
                "Task storage operations on runtime exemptions that failed (fail closed).",
            ),
            (
                CNT_SVC_TRANSLATED,
                "enforcer_service_translations_total",
                "Socket calls to a Service frontend translated to a backend.",
            ),
            (
                CNT_SVC_NO_BACKEND,
                "enforcer_service_no_backend_total",
                "Socket calls to a Service frontend refused: no ready backend.",
            ),
            (
                CNT_SVC_REVERSED,
                "enforcer_service_reverse_translations_total",
                "recvmsg/getpeername calls shown the Service frontend instead of the backend.",
            ),
        ];
        for (idx, name, help) in COUNTERS {
            if let Ok(v) = self.dp.counter(*idx) {
                self.metrics.set_counter(name, help, &[], v as f64);
            }
        }
        if let Ok(Some(level)) = self.dp.verified_root_level(self.config.root_cgroup_id) {
            if level != self.config.root_level && self.root_level_reported != Some(level) {
                tracing::info!(
                    "the pods' cgroup root is at level {level} of the kernel's cgroup \
                     hierarchy, not {} as seen from this cgroup namespace (nested node, \
                     e.g. kind); the datapath uses the kernel's level",
                    self.config.root_level
                );
            }
            self.root_level_reported = Some(level);
            self.metrics.set(
                "enforcer_cgroup_root_level",
                "Level of the pods' cgroup root in the kernel's cgroup hierarchy, as the datapath verified it.",
                &[],
                level as f64,
            );
        }
    }

    /// Report NetworkPolicies that could only be enforced fail-closed (once per change of
    /// their errors), and count them.
    fn report_fail_closed(&mut self, snap: &Snapshot) {
        let now: BTreeMap<_, _> = snap
            .cluster
            .network_policies
            .values()
            .filter(|p| !p.errors.is_empty())
            .map(|p| (p.key(), p.errors.clone()))
            .collect();
        for (key, errors) in &now {
            if self.fail_closed.get(key) != Some(errors) {
                tracing::error!(
                    "NetworkPolicy {key} is enforced fail-closed (it isolates the pods it \
                     selects; the rules below allow nothing): {}",
                    errors.join("; ")
                );
            }
        }
        self.metrics.set(
            "enforcer_network_policies_fail_closed",
            "NetworkPolicies with fields the agent cannot enforce exactly, enforced fail-closed.",
            &[],
            now.len() as f64,
        );
        self.fail_closed = now;
    }

    /// Report pod cgroups that no pod of the cluster state has classified for a while
    /// (their traffic is denied with `--unclassified deny`): a log line with the path,
    /// once per cgroup, and the gauge `enforcer_unclassified_cgroups`.
    fn report_unclassified(&mut self) {
        let now = Instant::now();
        let mut still = BTreeMap::new();
        for (uid, ids) in &self.cgroups.by_uid {
            let own = self.own_cgroup.is_some_and(|o| ids.contains(&o));
            if own || self.desired.endpoints.contains_key(uid) {
                continue;
            }
            let (since, reported) = self.unclassified.get(uid).copied().unwrap_or((now, false));
            still.insert(uid.clone(), (since, reported));
        }
        let mut overdue = 0;
        for (uid, (since, reported)) in still.iter_mut() {
            if now.duration_since(*since) < UNCLASSIFIED_REPORT_AFTER {
                continue;
            }
            overdue += 1;
            if !*reported {
                *reported = true;
                let paths: Vec<String> = self
                    .cgroups
                    .by_path
                    .iter()
                    .filter(|(_, (u, _))| u == uid)
                    .map(|(p, _)| p.display().to_string())
                    .collect();
                tracing::warn!(
                    "pod cgroup of uid {uid} has been unclassified for {:?} (no pod with this \
                     uid or static pod config hash on node {}); its traffic is treated as \
                     unclassified: {}",
                    now.duration_since(*since),
                    self.node,
                    paths.join(", ")
                );
            }
        }
        self.unclassified = still;
        self.metrics.set(
            "enforcer_unclassified_cgroups",
            "Pod cgroups below kubepods that no known pod has classified for more than 5 s.",
            &[],
            overdue as f64,
        );
    }

    /// Apply a cgroup change from the kubelet watcher.
    fn cgroup_event(&mut self, ev: kubelet::CgroupEvent) -> Result<()> {
        match ev {
            kubelet::CgroupEvent::PodAdded(p) => self.cgroups.add_pod(&p),
            kubelet::CgroupEvent::ContainerAdded { pod_uid, container } => {
                self.cgroups
                    .add(&pod_uid, &container.path, container.cgroup_id)
            }
            kubelet::CgroupEvent::PodRemoved { path, .. }
            | kubelet::CgroupEvent::ContainerRemoved { path, .. } => {
                // Containers are reported removed before their pod.
                if let Some(id) = self.cgroups.remove_path(&path)
                    && self.guards_on
                {
                    let _ = self.dp.disarm_cgroup(id);
                }
            }
        }
        self.sync()
    }
}

/// Probe and attach the runtime guards; never fatal except in `GuardsMode::Lsm`.
async fn start_guards(
    dp: &mut Datapath,
    opts: &Options,
    root: &Path,
    own: Option<&Path>,
    metrics: &Metrics,
    events: &mut broadcast::Receiver<(events::Event, String)>,
) -> Result<GuardsStarted> {
    let mode = opts.guards;
    if mode == GuardsMode::Off {
        tracing::info!("runtime guards: off");
        return Ok(GuardsStarted::Off);
    }
    let probe = dp.probe_guard_tier();
    let tier = match (mode, probe.tier) {
        (GuardsMode::Lsm, Tier::Fallback) => {
            bail!(
                "--runtime-guards lsm: the BPF LSM tier is not available: {}",
                probe.reason
            )
        }
        (GuardsMode::Fallback, _) => Tier::Fallback,
        (_, t) => t,
    };
    tracing::info!("runtime guards: tier {} ({})", tier.name(), probe.reason);
    let attached = match dp.attach_guards(root, tier) {
        Ok(a) => a,
        Err(e) => {
            // Not silent and not ready: the DaemonSet rollout stops here, and the reason is
            // in the log, in /metrics and in `enforcer status`.
            tracing::error!(
                "runtime guards could not be attached ({e:#}); network enforcement continues \
                 without them, and this agent reports not ready"
            );
            metrics.set(
                "enforcer_guard_tier",
                "Runtime guard tier in use (1 for the active one).",
                &[("tier", "none")],
                1.0,
            );
            return Ok(GuardsStarted::Failed(format!("{e:#}")));
        }
    };
    metrics.set(
        "enforcer_guard_tier",
        "Runtime guard tier in use (1 for the active one).",
        &[("tier", tier.name())],
        1.0,
    );
    for (bits, why) in &attached.fell_back {
        let names: Vec<&str> = crate::guards::names_of(*bits);
        if attached.fallback_guards & bits != 0 {
            tracing::warn!(
                "runtime guard(s) {}: this kernel refused the LSM program ({why}); enforced \
                 by the fallback tier instead",
                names.join(", ")
            );
        } else {
            tracing::error!(
                "runtime guard(s) {}: this kernel refused the LSM program ({why}) and the \
                 fallback tier has nothing for them here: not enforced",
                names.join(", ")
            );
        }
    }
    for s in &attached.support {
        let by = attached.tier_of(s.guard).map_or("none", Tier::name);
        metrics.set(
            "enforcer_guard_available",
            "1 if the runtime guard is enforced on this kernel in the active tier.",
            &[("guard", s.name)],
            if by == "none" { 0.0 } else { 1.0 },
        );
        metrics.set(
            "enforcer_guard_enforced_by",
            "Tier that enforces each runtime guard on this kernel (lsm, fallback, or none).",
            &[("guard", s.name), ("tier", by)],
            1.0,
        );
        if by == "none" && s.refused.is_none() {
            let missing: Vec<String> = s.missing.iter().map(|m| m.to_string()).collect();
            tracing::warn!(
                "runtime guard {} unavailable in tier {}: missing {}",
                s.name,
                tier.name(),
                missing.join(", ")
            );
        }
    }
    metrics.set(
        "enforcer_guard_runtime_exemption",
        "1 if container runtime exec sessions entering pod cgroups are exempt until their workload exec.",
        &[],
        if attached.exemption { 1.0 } else { 0.0 },
    );
    if !attached.exemption {
        tracing::warn!(
            "runtime exemption unavailable (kernel BTF offsets missing): exec sessions \
             (kubectl exec, exec probes) into guarded pods are guarded like the workload"
        );
    }
    if opts.break_fallback_guards != 0 {
        tracing::warn!(
            "--break-fallback-guard: the fallback tier stops enforcing {} (a test)",
            guards::names_of(opts.break_fallback_guards).join(", ")
        );
        dp.break_fallback_guards(opts.break_fallback_guards)?;
    }
    if let Some(why) = self_test(dp, tier, attached.available, root, own, metrics, events).await? {
        return Ok(GuardsStarted::Failed(why));
    }
    arm_running(dp, root, "");
    Ok(GuardsStarted::On)
}

/// Prove that each guard of `available` denies (`selftest`), before the agent reports the
/// tier. A guard of the LSM tier that fails is handed to the fallback programs and tested
/// again; a guard that fails there is an error: the agent does not report ready (returns
/// why). Guards that cannot be exercised here are reported, not counted as failures.
async fn self_test(
    dp: &mut Datapath,
    tier: Tier,
    available: u32,
    root: &Path,
    own: Option<&Path>,
    metrics: &Metrics,
    events: &mut broadcast::Receiver<(events::Event, String)>,
) -> Result<Option<String>> {
    let parent = selftest::parent_dir(root, own);
    let mut results = selftest::run(dp, &parent, available, events).await;
    let failed_lsm: u32 = results
        .iter()
        .filter(|(_, v)| matches!(v, selftest::Verdict::Failed(_)))
        .fold(0, |a, (g, _)| a | g);
    if tier == Tier::Lsm && failed_lsm != 0 {
        for (g, v) in results.iter().filter(|(g, _)| failed_lsm & g != 0) {
            tracing::error!(
                "runtime guard {} failed its self-test in the lsm tier ({}): handing it to \
                 the fallback tier",
                guards::name_of(*g),
                match v {
                    selftest::Verdict::Failed(w) => w.as_str(),
                    _ => "",
                }
            );
        }
        let took = dp.demote_to_fallback(root, failed_lsm)?;
        let again = selftest::run(dp, &parent, took, events).await;
        for (g, v) in results.iter_mut() {
            if let Some((_, v2)) = again.iter().find(|(g2, _)| g2 == g) {
                *v = v2.clone();
            } else if failed_lsm & *g != 0 {
                *v = selftest::Verdict::Failed(
                    "failed in the lsm tier; the fallback tier has nothing for it on this kernel"
                        .into(),
                );
            }
        }
    }
    let mut failures = Vec::new();
    let mut verified = Vec::new();
    for (g, v) in &results {
        let name = guards::name_of(*g);
        metrics.set(
            "enforcer_guard_self_test",
            "Start-up self-test of each runtime guard (1 for its result: verified, failed, \
             not-exercised).",
            &[("guard", name), ("result", v.label())],
            1.0,
        );
        match v {
            selftest::Verdict::Verified => verified.push(name),
            selftest::Verdict::Failed(why) => {
                tracing::error!("runtime guard {name} FAILED its self-test: {why}");
                failures.push(format!("{name}: {why}"));
            }
            selftest::Verdict::NotExercised(why) => {
                tracing::warn!("runtime guard {name}: self-test not exercised: {why}")
            }
        }
    }
    tracing::info!(
        "runtime guard self-test: {} of {} verified ({})",
        verified.len(),
        results.len(),
        verified.join(", ")
    );
    Ok((!failures.is_empty()).then(|| format!("guards that do not deny: {}", failures.join("; "))))
}

/// Guards of cgroups below the root that have no ENDPOINTS entry at all
/// (`Config::unclassified_guards`): with `--unclassified deny`, packet sockets, since such
/// pods are cut off from the network and must not go around that (unless NetworkPolicy is
/// only audited). Nothing more: a cgroup with no entry may be a new agent's own, started
/// while the pinned programs of the previous one enforce, which must be able to load
/// programs before it can mark itself. Pod cgroups the running agent sees and cannot
/// classify get the strict set through a pending entry instead ([`pending_guards`]).
fn unclassified_guards(opts: &Options) -> u32 {
    if opts.unclassified == Unclassified::Deny && !opts.network_audit {
        GUARD_PACKET_SOCKETS
    } else {
        0
    }
}

/// Guards of the pending entries the agent writes for pod cgroups it sees but cannot
/// classify yet (`EP_PENDING`), once its first snapshot is programmed: with
/// `--unclassified deny` and runtime guards on, the strictest Pod Security set
/// (restricted) plus packet sockets. A pod whose cgroup appears before the agent knows it
/// is guarded at least as strictly as any level that could apply to it, from its first
/// exec (the runtime's set-up before that exec is not guarded, see
/// `enforcer-ebpf/src/guards.rs`).
fn pending_guards(opts: &Options) -> u32 {
    if opts.unclassified == Unclassified::Deny && opts.guards != GuardsMode::Off {
        crate::runtime_policy::RESTRICTED | unclassified_guards(opts)
    } else {
        0
    }
}

/// Endpoint id of pending entries (never allocated to a pod).
const PENDING_ENDPOINT: u32 = u32::MAX - 2;

/// Arm the containers that run below `root` (`guards::arming`), and say what was done.
fn arm_running(dp: &mut Datapath, root: &Path, when: &str) {
    match dp.arm_running_below(root, guards::arming::SETUP_GRACE) {
        Ok(scan) => {
            if !scan.armed.is_empty() {
                tracing::info!("armed {} running container cgroups{when}", scan.armed.len());
            }
            for d in &scan.deferred {
                tracing::info!(
                    "container in set-up, left to its workload's exec (checked again in {:?}): {}",
                    guards::arming::SETUP_GRACE,
                    d.display()
                );
            }
        }
        Err(e) => tracing::warn!("arming running containers{when}: {e:#}"),
    }
}

/// What [`start_guards`] achieved.
#[derive(Debug, PartialEq, Eq)]
enum GuardsStarted {
    Off,
    On,
    /// Requested but not attached (why): the agent does not report ready.
    Failed(String),
}

/// SIGTERM in Kubernetes mode: uninstall when the agent's DaemonSet or namespace is being
/// deleted, else leave the pinned programs enforcing for the next agent.
async fn stop_for_removal(removal: &Removal, rec: Reconciler, bpffs: &Path) {
    match removal.decide(Duration::from_secs(3)).await {
        Decision::Keep(why) => {
            tracing::info!("SIGTERM: exiting; pinned programs keep enforcing ({why})");
            if why.contains("failing closed") {
                tracing::warn!(
                    "if this node is being uninstalled, remove the programs with `enforcer \
                     uninstall` (deploy/cleanup does it on every node)"
                );
            }
        }
        Decision::Uninstall(why) => {
            tracing::warn!("SIGTERM: uninstalling this node's programs: {why}");
            // Our own handles go first, so that nothing of ours stays attached once the
            // pins are gone.
            drop(rec);
            match bpf::uninstall(bpffs) {
                Ok(n) => tracing::warn!(
                    "uninstalled: removed {n} pinned objects under {}",
                    bpffs.display()
                ),
                Err(e) => tracing::error!(
                    "uninstall incomplete under {}: {e}; run `enforcer uninstall`",
                    bpffs.display()
                ),
            }
        }
    }
}

/// Run the agent until SIGTERM/SIGINT.
pub async fn run(opts: Options) -> Result<()> {
    let mount = Cgroup2Mount::detect().context("finding the cgroup2 mount")?;
    let cgroup_root = opts
        .cgroup_root
        .clone()
        .unwrap_or_else(|| mount.path.clone());
    let metrics = Arc::new(Metrics::new());
    let (ev_tx, _) = broadcast::channel(1024);
    let names = Arc::new(RwLock::new(Names::default()));

    let health = Arc::new(http::Health {
        ready: Default::default(),
        metrics: metrics.clone(),
        refresh: Box::new(|| {}),
        last_turn_ms: Default::default(),
        started: Instant::now(),
    });
    if let Some(addr) = opts.health_addr {
        let local = http::spawn(addr, health.clone())
            .await
            .with_context(|| format!("binding --health-addr {addr}"))?;
        tracing::info!("health and metrics on http://{local}/ (readyz, metrics)");
    }
    let ready_metric = |v: f64| {
        metrics.set(
            "enforcer_ready",
            "1 once the desired state is enforced in the kernel.",
            &[],
            v,
        )
    };
    ready_metric(0.0);

    let rel = opts.kubepods.as_deref();
    let kubepods = match kubelet::locate(&cgroup_root, rel) {
        Some(r) => r,
        None => {
            tracing::warn!(
                "no kubepods cgroup ({}) below {} yet; waiting for the kubelet",
                rel.map_or("kubepods.slice or kubepods".to_string(), |r| r
                    .display()
                    .to_string()),
                cgroup_root.display()
            );
            kubelet::wait_for_kubepods(&cgroup_root, rel).await?
        }
    };
    tracing::info!(
        "pods' cgroup root: {} ({:?} driver)",
        kubepods.path.display(),
        kubepods.driver
    );
    ensure_bpffs(&opts.bpffs)?;
    let mut dp = Datapath::load(Some(&opts.bpffs)).context("loading the eBPF object")?;
    // The agent's own cgroup (its pod, when it runs in one below kubepods) is never subject
    // to pod policy: after a restart the previous instance's programs are attached and would
    // treat a new agent pod as an unclassified cgroup, cutting it off from the API server
    // it needs to classify anything. Marked before the source starts talking.
    let own_path = crate::cgroup::own_cgroup(&mount, &kubepods.path);
    let own_cgroup = own_cgroup_below(own_path.as_deref(), &kubepods.path, &mut dp);
    // The source starts now: the API server's initial lists take time.
    let (snap_tx, mut snap_rx) = source::channel();
    // Kubernetes mode: tells an uninstall from a restart when SIGTERM comes.
    let mut removal = None;
    match &opts.source {
        SourceKind::Manifests(dir) => {
            tokio::spawn(source::manifests(dir.clone(), snap_tx, metrics.clone()));
        }
        SourceKind::Kubernetes {
            kubeconfig,
            own_pod,
        } => {
            let client = crate::kube::client(kubeconfig.as_deref()).await?;
            removal = own_pod
                .clone()
                .map(|(ns, pod)| crate::kube::removal::Removal::spawn(client.clone(), ns, pod));
            let node = opts.node.clone();
            let m = metrics.clone();
            tokio::spawn(async move {
                if let Err(e) = crate::kube::run(client, node, snap_tx, m).await {
                    tracing::error!("Kubernetes source stopped: {e:#}");
                }
            });
        }
    }

    let root_id = cgroup_id(&kubepods.path)?;
    let root_level = mount.level_of(&kubepods.path)?;
    let previous = dp.config().unwrap_or_default();
    let mut flags = 0;
    if opts.unclassified == Unclassified::Deny {
        flags |= CFG_DENY_UNCLASSIFIED;
    }
    if opts.network_audit {
        flags |= CFG_NET_AUDIT;
    }
    if opts.allow_events {
        flags |= CFG_EVENTS_ALLOW;
    }
    let config = Config {
        root_cgroup_id: root_id,
        flags,
        root_level,
        policy_revision: previous.policy_revision.wrapping_add(1),
        ct_timeout_tcp_s: 6 * 3600,
        ct_timeout_other_s: 120,
        unclassified_guards: unclassified_guards(&opts),
    };
    dp.set_config(&config)?;
    if let Some(path) = &opts.observe_socket {
        match observe::bind(path) {
            Ok(listener) => {
                tokio::spawn(observe::serve(listener, ev_tx.clone(), names.clone()));
                tracing::info!("event stream (enforcer observe) on {}", path.display());
            }
            Err(e) => tracing::warn!(
                "no event stream: binding {}: {e} (enforcer observe will not connect)",
                path.display()
            ),
        }
    }
    let ring = dp.take_events()?;
    tokio::spawn(events::run(
        ring,
        names.clone(),
        metrics.clone(),
        ev_tx.clone(),
        opts.log_rate,
    ));
    let mut ev_rx = ev_tx.subscribe();
    let guards_started = start_guards(
        &mut dp,
        &opts,
        &kubepods.path,
        own_path.as_deref(),
        &metrics,
        &mut ev_rx,
    )
    .await?;
    drop(ev_rx);
    let guards_on = guards_started == GuardsStarted::On;

    let host_addrs = host_addresses(&opts.node_ips);
    tracing::info!("node {} addresses: {:?}", opts.node, host_addrs);

    let current = apply::read_kernel_state(&mut dp)?;
    let mut services = ServiceCompiler::new();
    // After a restart, Service frontends keep their backend set numbers.
    services.seed(current.services.iter().map(|(k, v)| (*k, v.set)));
    let mut rec = Reconciler {
        dp,
        compiler: Compiler::new(),
        services,
        node: opts.node.clone(),
        host_addrs,
        extra_node_ips: opts.node_ips.clone(),
        desired: Desired::default(),
        desired_services: ServiceState::default(),
        guards: BTreeMap::new(),
        current,
        cgroups: CgroupIndex::default(),
        config,
        names: names.clone(),
        metrics: metrics.clone(),
        guards_on,
        root_level_reported: None,
        local_ips: BTreeMap::new(),
        own_cgroup,
        unclassified: BTreeMap::new(),
        fail_closed: BTreeMap::new(),
        pending_guards: 0,
    };

    let (mut watcher, initial) = kubelet::Watcher::new(kubepods.clone())?;
    for pod in &initial {
        rec.cgroups.add_pod(pod);
    }
    // After a restart the pinned ENDPOINTS map tells which endpoint id each pod had.
    let previous_ids: Vec<(String, u32)> = rec
        .cgroups
        .by_uid
        .iter()
        .filter_map(|(uid, ids)| {
            ids.iter()
                .find_map(|id| rec.current.endpoints.get(id))
                .map(|ep| (uid.clone(), ep.id))
        })
        .collect();
    if !previous_ids.is_empty() {
        tracing::info!(
            "restart: keeping the endpoint ids of {} pods",
            previous_ids.len()
        );
    }
    rec.compiler.seed_endpoint_ids(previous_ids);

    // The first complete state from the source.
    let first = loop {
        if let Some(s) = snap_rx.borrow_and_update().clone() {
            break s;
        }
        if snap_rx.changed().await.is_err() {
            bail!("the cluster state source stopped before its initial state was known");
        }
    };
    rec.recompile(&first)?;
    // Holding on to it would keep a second copy of the cluster model alive.
    drop(first);
    rec.dp.attach_network(&kubepods.path).context(
        "attaching the network programs (none of this start's stays attached; what a \
             previous agent pinned keeps enforcing)",
    )?;
    if guards_on {
        // From now on (every pod of the first snapshot is classified) a pod cgroup nobody
        // knows gets the strict set.
        rec.pending_guards = pending_guards(&opts);
        rec.sync().context("guarding unclassified pod cgroups")?;
        tracing::info!(
            "pod cgroups not classified yet get the runtime guards: {}",
            guards::names_of(rec.pending_guards).join(", ")
        );
    }
    // Everything of this version is attached and programmed: what an agent of another
    // ABI version left attached (an upgrade, or a downgrade) goes now, not before.
    match bpf::remove_other_versions(&opts.bpffs) {
        Ok(removed) => {
            for (version, n) in removed {
                tracing::warn!(
                    "upgrade: removed the {n} pinned objects of ABI version {version} under {} \
                     (its programs were still attached)",
                    opts.bpffs.display()
                );
            }
        }
        Err(e) => tracing::error!(
            "could not remove the pins of other ABI versions under {}: {e}; their programs \
             stay attached beside ours until `enforcer uninstall`",
            opts.bpffs.display()
        ),
    }
    if let GuardsStarted::Failed(why) = &guards_started {
        tracing::error!("not ready: the runtime guards requested are not attached: {why}");
    } else {
        health.ready.store(true, Ordering::Release);
        ready_metric(1.0);
    }
    tracing::info!(
        "enforcing: {} local pods ({} with runtime guards), {} policy entries, {} identities",
        rec.desired.endpoints.len(),
        rec.guards.values().filter(|(e, a)| e | a != 0).count(),
        rec.current.policy.len(),
        rec.desired.identities.len()
    );

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    // Kernel counters reach /metrics once a second (a handful of per-CPU array reads).
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // Containers that looked like a runtime's set-up at start are checked once more when
    // the grace has passed (`guards::arming`).
    let mut rearm_at = guards_on.then(|| Instant::now() + guards::arming::SETUP_GRACE);
    loop {
        health.turned();
        tokio::select! {
            _ = tick.tick() => {
                if rearm_at.is_some_and(|t| Instant::now() >= t) {
                    rearm_at = None;
                    arm_running(&mut rec.dp, &kubepods.path, " after the set-up grace");
                }
                rec.export_counters();
                rec.report_unclassified();
                // Node addresses come and go (DHCP, IPVS ClusterIPs, NodeLocal DNSCache):
                // re-read them and recompile when they changed.
                let addrs = host_addresses(&rec.extra_node_ips);
                if addrs != rec.host_addrs {
                    tracing::info!("node addresses changed: {:?}", addrs);
                    rec.host_addrs = addrs;
                    let snap = snap_rx.borrow().clone();
                    if let Some(snap) = snap
                        && let Err(e) = rec.recompile(&snap)
                    {
                        tracing::error!("applying a node address change: {e:#}");
                    }
                }
            }
            _ = term.recv() => {
                if let Some(removal) = &removal {
                    stop_for_removal(removal, rec, &opts.bpffs).await;
                    return Ok(());
                }
                tracing::info!("SIGTERM: exiting; pinned programs keep enforcing");
                break;
            }
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("interrupted: exiting; pinned programs keep enforcing");
                break;
            }
            changed = snap_rx.changed() => {
                if changed.is_err() {
                    // The pinned programs keep enforcing the last state while the
                    // DaemonSet (or whoever runs us) restarts the agent.
                    health.ready.store(false, Ordering::Release);
                    bail!("the cluster state source stopped; exiting so that the agent is restarted");
                }
                let snap = snap_rx.borrow_and_update().clone();
                if let Some(snap) = snap {
                    let t = Instant::now();
                    match rec.recompile(&snap) {
                        Ok(()) => tracing::info!("state change enforced in {:?}", t.elapsed()),
                        Err(e) => tracing::error!("applying a state change: {e:#}"),
                    }
                }
            }
            ev = watcher.next() => {
                match ev {
                    Ok(ev) => {
                        if let Err(e) = rec.cgroup_event(ev) {
                            tracing::error!("applying a cgroup change: {e:#}");
                        }
                    }
                    Err(e) => {
                        tracing::error!("cgroup watcher: {e}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        }
    }
    Ok(())
}
