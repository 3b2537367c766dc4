//! The agent: sources of truth (manifests now, the API server later) -> compilers -> maps,
//! plus pod cgroup discovery, events, health and metrics.
//!
//! Start-up order is chosen so that enforcement never has a hole: maps are filled before the
//! programs attach, and readiness is reported only after that. On SIGTERM the agent exits
//! and leaves its pinned programs and maps in place: enforcement continues with the last
//! state until the next agent starts (which reuses the maps) or `enforcer uninstall` runs.

pub mod apply;
pub mod events;
pub mod http;
pub mod metrics;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    sync::{Arc, RwLock, atomic::Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use enforcer_common::*;
use tokio::sync::{broadcast, mpsc};

use crate::{
    bpf::Datapath,
    cgroup::{Cgroup2Mount, cgroup_id},
    kubelet, manifests,
    policy::{CompileInput, Compiler, Desired},
};
use apply::MapState;
use events::Names;
use metrics::Metrics;

/// What to do with traffic of pod cgroups the agent has not classified yet.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::IpPrefix;

    #[test]
    fn service_cidrs_keep_longest_prefix_answers() {
        let mut m = BTreeMap::new();
        let p = |s: &str| IpPrefix::from_net(&s.parse().unwrap());
        m.insert(
            p("10.0.0.0/8"),
            IpInfo {
                identity: 20,
                ..Default::default()
            },
        );
        m.insert(
            p("10.96.0.5/32"),
            IpInfo {
                identity: 21,
                ..Default::default()
            },
        );
        m.insert(
            p("192.168.0.0/16"),
            IpInfo {
                identity: 22,
                ..Default::default()
            },
        );
        defer_service_cidrs(
            &mut m,
            &[
                "10.96.0.0/12".parse().unwrap(),
                "192.168.0.0/16".parse().unwrap(),
                "fd00:96::/108".parse().unwrap(),
            ],
        );
        assert_eq!(
            m[&p("10.96.0.0/12")],
            IpInfo {
                identity: 20,
                flags: IP_DEFER_TO_PACKET,
                ..Default::default()
            }
        );
        assert_eq!(m[&p("10.96.0.5/32")].flags, 0);
        assert_eq!(
            m[&p("192.168.0.0/16")],
            IpInfo {
                identity: 22,
                flags: IP_DEFER_TO_PACKET,
                ..Default::default()
            }
        );
        assert_eq!(m[&p("fd00:96::/108")].identity, IDENTITY_WORLD);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unclassified {
    Deny,
    Allow,
}

#[derive(Clone, Debug)]
pub struct Options {
    pub manifests: PathBuf,
    pub node: String,
    /// cgroup2 directory below which the kubelet layouts are looked up (default: the mount).
    pub cgroup_root: Option<PathBuf>,
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
    /// Service CIDRs: socket hooks leave these destinations to the packet path, which
    /// sees them after kube-proxy's NAT.
    pub service_cidrs: Vec<crate::model::IpNet>,
}

/// Mark Service CIDRs in the IPCACHE so that socket hooks defer them to the packet path.
/// A prefix that is not there yet gets the identity that its addresses have without it (the
/// longest enclosing prefix's, or WORLD), so longest-prefix answers do not change.
pub fn defer_service_cidrs(
    ipcache: &mut BTreeMap<crate::policy::IpPrefix, IpInfo>,
    cidrs: &[crate::model::IpNet],
) {
    for net in cidrs {
        let p = crate::policy::IpPrefix::from_net(net);
        if let Some(info) = ipcache.get_mut(&p) {
            info.flags |= IP_DEFER_TO_PACKET;
            continue;
        }
        let enclosing = ipcache
            .iter()
            .filter(|(k, _)| k.len < p.len && k.contains(&p))
            .max_by_key(|(k, _)| k.len)
            .map(|(_, v)| v.identity)
            .unwrap_or(IDENTITY_WORLD);
        ipcache.insert(
            p,
            IpInfo {
                identity: enclosing,
                flags: IP_DEFER_TO_PACKET,
                ..IpInfo::default()
            },
        );
    }
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

/// Pod cgroups discovered so far: pod uid -> cgroup ids (pod cgroup and containers).
#[derive(Default)]
struct CgroupIndex {
    by_uid: BTreeMap<String, BTreeSet<u64>>,
}

impl CgroupIndex {
    fn add(&mut self, uid: &str, id: u64) {
        self.by_uid.entry(uid.to_string()).or_default().insert(id);
    }
    fn remove_pod(&mut self, uid: &str) {
        self.by_uid.remove(uid);
    }
    fn remove_id(&mut self, uid: &str, id: u64) {
        if let Some(s) = self.by_uid.get_mut(uid) {
            s.remove(&id);
        }
    }
}

/// Everything the reconcile step needs.
struct Reconciler {
    dp: Datapath,
    compiler: Compiler,
    node: String,
    node_ips: Vec<IpAddr>,
    desired: Desired,
    current: MapState,
    cgroups: CgroupIndex,
    config: Config,
    names: Arc<RwLock<Names>>,
    metrics: Arc<Metrics>,
    service_cidrs: Vec<crate::model::IpNet>,
}

impl Reconciler {
    /// Recompile from the cluster model and apply the difference.
    fn recompile(&mut self, cluster: &crate::model::Cluster) -> Result<()> {
        let input = CompileInput {
            cluster,
            node_name: &self.node,
            node_ips: &self.node_ips,
        };
        self.desired = self.compiler.compile(&input);
        defer_service_cidrs(&mut self.desired.ipcache, &self.service_cidrs);
        self.sync()
    }

    /// Apply `desired` joined with the discovered cgroups.
    fn sync(&mut self) -> Result<()> {
        let start = Instant::now();
        let mut want = MapState {
            ipcache: self.desired.ipcache.clone(),
            policy: self.desired.policy.clone(),
            endpoints: BTreeMap::new(),
        };
        let mut cg_names = BTreeMap::new();
        for (uid, le) in &self.desired.endpoints {
            if let Some(ids) = self.cgroups.by_uid.get(uid) {
                for id in ids {
                    want.endpoints.insert(*id, le.endpoint);
                    cg_names.insert(*id, le.pod.clone());
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
        }
        let m = &self.metrics;
        m.set(
            "enforcer_endpoints",
            "Local pods known to the datapath.",
            &[],
            self.desired.endpoints.len() as f64,
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
}

/// Run the agent in standalone mode until SIGTERM/SIGINT.
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
    });
    if let Some(addr) = opts.health_addr {
        let local = http::spawn(addr, health.clone())
            .await
            .with_context(|| format!("binding --health-addr {addr}"))?;
        tracing::info!("health and metrics on http://{local}/ (readyz, metrics)");
    }
    metrics.set(
        "enforcer_ready",
        "1 once the desired state is enforced in the kernel.",
        &[],
        0.0,
    );

    let kubepods = match kubelet::find_kubepods(&cgroup_root) {
        Some(r) => r,
        None => {
            tracing::warn!(
                "no kubepods cgroup (kubepods.slice or kubepods) below {} yet; waiting for the kubelet",
                cgroup_root.display()
            );
            kubelet::wait_for_kubepods(&cgroup_root, None).await?
        }
    };
    tracing::info!(
        "pods' cgroup root: {} ({:?} driver)",
        kubepods.path.display(),
        kubepods.driver
    );
    ensure_bpffs(&opts.bpffs)?;
    let mut dp = Datapath::load(Some(&opts.bpffs)).context("loading the eBPF object")?;
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
        unclassified_guards: 0,
    };
    dp.set_config(&config)?;
    let ring = dp.take_events()?;
    tokio::spawn(events::run(
        ring,
        names.clone(),
        metrics.clone(),
        ev_tx.clone(),
        opts.log_rate,
    ));

    let mut node_ips = local_addresses();
    node_ips.extend(opts.node_ips.iter().copied());
    node_ips.sort();
    node_ips.dedup();
    tracing::info!("node {} addresses: {:?}", opts.node, node_ips);

    let current = apply::read_kernel_state(&mut dp)?;
    let mut rec = Reconciler {
        dp,
        compiler: Compiler::new(),
        node: opts.node.clone(),
        node_ips,
        desired: Desired::default(),
        current,
        cgroups: CgroupIndex::default(),
        config,
        names: names.clone(),
        metrics: metrics.clone(),
        service_cidrs: opts.service_cidrs.clone(),
    };

    // Sources.
    let mut store = manifests::Store::new();
    let report = store.reload(&opts.manifests);
    for e in &report.errors {
        tracing::error!("{e}");
    }
    metrics.set(
        "enforcer_manifest_errors",
        "Errors in the last manifests load.",
        &[],
        report.errors.len() as f64,
    );
    let (mf_tx, mut mf_rx) = mpsc::channel(4);
    tokio::spawn(manifests::watch(opts.manifests.clone(), mf_tx));

    let (mut watcher, initial) = kubelet::Watcher::new(kubepods.clone())?;
    for pod in &initial {
        rec.cgroups.add(&pod.uid, pod.id);
        for c in &pod.containers {
            rec.cgroups.add(&pod.uid, c.cgroup_id);
        }
    }

    rec.recompile(store.cluster())?;
    rec.dp
        .attach_network(&kubepods.path)
        .context("attaching network programs")?;
    health.ready.store(true, Ordering::Release);
    metrics.set(
        "enforcer_ready",
        "1 once the desired state is enforced in the kernel.",
        &[],
        1.0,
    );
    tracing::info!(
        "enforcing: {} local pods, {} policy entries, {} identities",
        rec.desired.endpoints.len(),
        rec.current.policy.len(),
        rec.desired.identities.len()
    );

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: exiting; pinned programs keep enforcing"); break; }
            _ = tokio::signal::ctrl_c() => { tracing::info!("interrupted: exiting; pinned programs keep enforcing"); break; }
            Some(()) = mf_rx.recv() => {
                let t = Instant::now();
                let report = store.reload(&opts.manifests);
                for e in &report.errors {
                    tracing::error!("{e}");
                }
                metrics.set("enforcer_manifest_errors", "Errors in the last manifests load.", &[], report.errors.len() as f64);
                if report.changed {
                    if let Err(e) = rec.recompile(store.cluster()) {
                        tracing::error!("applying manifests: {e:#}");
                    }
                    tracing::info!("manifests changed: enforced in {:?}", t.elapsed());
                }
            }
            ev = watcher.next() => {
                match ev {
                    Ok(ev) => {
                        match ev {
                            kubelet::CgroupEvent::PodAdded(p) => {
                                rec.cgroups.add(&p.uid, p.id);
                                for c in &p.containers { rec.cgroups.add(&p.uid, c.cgroup_id); }
                            }
                            kubelet::CgroupEvent::PodRemoved { uid, .. } => rec.cgroups.remove_pod(&uid),
                            kubelet::CgroupEvent::ContainerAdded { pod_uid, container } => rec.cgroups.add(&pod_uid, container.cgroup_id),
                            kubelet::CgroupEvent::ContainerRemoved { pod_uid, path } => {
                                if let Ok(id) = cgroup_id(&path) { rec.cgroups.remove_id(&pod_uid, id); }
                            }
                        }
                        if let Err(e) = rec.sync() {
                            tracing::error!("applying cgroup change: {e:#}");
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
