//! Service compiler (pure): Services and EndpointSlices -> the `SERVICES` and `BACKENDS`
//! maps that the socket hooks translate with (see `enforcer-ebpf/src/net.rs`).
//!
//! Every frontend (ClusterIPs, NodePorts on the node's addresses, externalIPs, load
//! balancer IPs) of every Service port becomes a `SERVICES` key pointing at a *backend
//! set*: the ready endpoints of that port in the frontend's address family, as
//! `BACKENDS` slots `(set, 0..count)`.
//!
//! Which endpoints, as kube-proxy chooses them for traffic from a pod on this node:
//! - ready endpoints; when there is none, serving and terminating ones (so that a rolling
//!   update's last pods still answer), else none, and the frontend refuses connections;
//! - `internalTrafficPolicy: Local`: ClusterIPs reach only endpoints on this node;
//! - `externalTrafficPolicy: Local` does not restrict pods: kube-proxy sends traffic from
//!   the cluster to every endpoint ("short-circuit"), so do we;
//! - topology hints are not used (every endpoint of the set is eligible).
//!
//! Set numbers are stable per (Service, port, family, locality) for as long as the set
//! exists, so an endpoint change rewrites slots in place and session affinity survives it.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
};

use enforcer_common::{Backend, BackendKey, SVC_AFFINITY, SvcKey, SvcValue};

use super::{IpPrefix, ids::IdTable};
use crate::model::{Cluster, EndpointSlice, ObjectRef, Protocol, Service, ServicePort};

/// What a backend set is the set of.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct SetKey {
    service: ObjectRef,
    port: String,
    protocol: Protocol,
    v6: bool,
    /// Only endpoints on this node (`internalTrafficPolicy: Local` for ClusterIPs).
    local: bool,
}

/// The map contents the Services call for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServiceState {
    pub services: BTreeMap<SvcKey, SvcValue>,
    pub backends: BTreeMap<BackendKey, Backend>,
    /// Addresses that are Service frontends of their own (ClusterIPs, load balancer IPs):
    /// never "this node", even when they are configured on a node interface (IPVS's
    /// kube-ipvs0, NodeLocal DNSCache).
    pub frontend_ips: BTreeSet<IpAddr>,
    /// set -> "namespace/name:port/PROTO", for logs.
    pub set_names: BTreeMap<u32, String>,
    /// Problems worth a warning (conflicting frontends), each naming the objects.
    pub warnings: Vec<String>,
}

/// What the Service compile works from.
pub struct ServiceInput<'a> {
    pub cluster: &'a Cluster,
    /// This node's name (`internalTrafficPolicy: Local`).
    pub node_name: &'a str,
    /// This node's own addresses (NodePort frontends).
    pub node_ips: &'a [IpAddr],
}

/// Compiles Services, keeping backend set numbers stable from one call to the next.
pub struct ServiceCompiler {
    set_ids: IdTable<SetKey>,
    /// Set numbers found in the kernel after a restart, by frontend: a set gets its old
    /// number back, so no frontend points at another Service's slots while maps converge.
    seeded: HashMap<SvcKey, u32>,
}

impl Default for ServiceCompiler {
    fn default() -> Self {
        Self::new()
    }
}

impl ServiceCompiler {
    pub fn new() -> Self {
        Self {
            set_ids: IdTable::new(1, u32::MAX),
            seeded: HashMap::new(),
        }
    }

    /// Remember the set numbers the kernel's `SERVICES` map holds (after a restart).
    pub fn seed(&mut self, services: impl IntoIterator<Item = (SvcKey, u32)>) {
        self.seeded = services.into_iter().collect();
    }

    pub fn compile(&mut self, input: &ServiceInput<'_>) -> ServiceState {
        let mut out = ServiceState::default();
        let slices = slices_by_service(input.cluster);
        // Every frontend in a deterministic order (Services by namespace/name).
        let mut entries: Vec<(SetKey, SvcKey, &Service, &ServicePort)> = Vec::new();
        let mut taken: BTreeSet<SvcKey> = BTreeSet::new();
        for svc in input.cluster.services.values() {
            out.frontend_ips.extend(svc.cluster_ips.iter().copied());
            out.frontend_ips
                .extend(svc.load_balancer_ips.iter().copied());
            for port in &svc.ports {
                for (addr, fport, cluster_ip) in frontends(svc, port, input.node_ips) {
                    let set = SetKey {
                        service: svc.key(),
                        port: port.name.clone(),
                        protocol: port.protocol,
                        v6: is_v6(addr),
                        local: cluster_ip && svc.internal_local,
                    };
                    let key = SvcKey {
                        addr: IpPrefix::host(addr).addr,
                        port: fport.to_be_bytes(),
                        protocol: port.protocol.number(),
                        _pad: 0,
                    };
                    if !taken.insert(key) {
                        out.warnings.push(format!(
                            "Service {}: frontend {addr} port {fport}/{} is already another \
                             Service's; the first one (by namespace/name) keeps it",
                            svc.key(),
                            port.protocol.name()
                        ));
                        continue;
                    }
                    entries.push((set, key, svc, port));
                }
            }
        }
        // After a restart: each set gets the number one of its frontends had in the kernel.
        if !self.seeded.is_empty() {
            let mut used = BTreeSet::new();
            let mut seeded_sets = BTreeSet::new();
            for (set, key, _, _) in &entries {
                if let Some(&id) = self.seeded.get(key)
                    && !seeded_sets.contains(set)
                    && used.insert(id)
                {
                    seeded_sets.insert(set.clone());
                    self.set_ids.seed(set.clone(), id);
                }
            }
            self.seeded.clear();
        }
        for (set, key, svc, port) in entries {
            let id = self.set_ids.id(&set);
            if !out.set_names.contains_key(&id) {
                let own_slices = slices.get(&svc.key()).map(Vec::as_slice).unwrap_or(&[]);
                for (slot, b) in backends(own_slices, &set, input.node_name)
                    .into_iter()
                    .enumerate()
                {
                    out.backends.insert(
                        BackendKey {
                            set: id,
                            slot: slot as u32,
                        },
                        b,
                    );
                }
                let port_name = if port.name.is_empty() {
                    port.port.to_string()
                } else {
                    port.name.clone()
                };
                let local = if set.local { " (node-local)" } else { "" };
                out.set_names.insert(
                    id,
                    format!("{}:{port_name}/{}{local}", svc.key(), port.protocol.name()),
                );
            }
            let count = out.backends.range(slot_range(id)).count() as u32;
            let (flags, timeout) = match svc.affinity_timeout_s {
                Some(t) => (SVC_AFFINITY, t),
                None => (0, 0),
            };
            out.services.insert(
                key,
                SvcValue {
                    set: id,
                    count,
                    flags,
                    affinity_timeout_s: timeout,
                },
            );
        }
        self.set_ids.finish_round();
        out
    }
}

/// The `BACKENDS` keys of one set.
pub fn slot_range(set: u32) -> std::ops::RangeInclusive<BackendKey> {
    BackendKey { set, slot: 0 }..=BackendKey {
        set,
        slot: u32::MAX,
    }
}

fn is_v6(a: IpAddr) -> bool {
    matches!(a, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none())
}

/// (address, port, is a cluster IP) of every frontend of one Service port.
fn frontends(svc: &Service, port: &ServicePort, node_ips: &[IpAddr]) -> Vec<(IpAddr, u16, bool)> {
    let mut out: Vec<(IpAddr, u16, bool)> = Vec::new();
    out.extend(svc.cluster_ips.iter().map(|a| (*a, port.port, true)));
    if !svc.cluster_ips.is_empty() {
        // externalIPs and load balancer IPs are only programmed by kube-proxy for Services
        // that have a cluster IP.
        out.extend(svc.external_ips.iter().map(|a| (*a, port.port, false)));
        out.extend(svc.load_balancer_ips.iter().map(|a| (*a, port.port, false)));
        if let Some(np) = port.node_port {
            out.extend(node_ips.iter().map(|a| (*a, np, false)));
        }
    }
    out
}

fn slices_by_service(cluster: &Cluster) -> BTreeMap<ObjectRef, Vec<&EndpointSlice>> {
    let mut m: BTreeMap<ObjectRef, Vec<&EndpointSlice>> = BTreeMap::new();
    for s in cluster.endpoint_slices.values() {
        m.entry(ObjectRef {
            namespace: s.namespace.clone(),
            name: s.service.clone(),
        })
        .or_default()
        .push(s);
    }
    m
}

/// The backends of one set, sorted and unique.
fn backends(slices: &[&EndpointSlice], set: &SetKey, node: &str) -> Vec<Backend> {
    let mut ready = BTreeSet::new();
    let mut terminating = BTreeSet::new();
    for slice in slices {
        let Some(sp) = slice
            .ports
            .iter()
            .find(|p| p.name == set.port && p.protocol == set.protocol)
        else {
            continue;
        };
        for ep in &slice.endpoints {
            if set.local && ep.node_name.as_deref() != Some(node) {
                continue;
            }
            let bucket = if ep.ready && !ep.terminating {
                &mut ready
            } else if ep.serving && ep.terminating {
                &mut terminating
            } else {
                continue;
            };
            for a in &ep.addresses {
                if is_v6(*a) != set.v6 {
                    continue;
                }
                bucket.insert(Backend {
                    addr: IpPrefix::host(*a).addr,
                    port: sp.port.to_be_bytes(),
                    _pad: [0; 2],
                    _pad2: 0,
                });
            }
        }
    }
    let chosen = if ready.is_empty() { terminating } else { ready };
    chosen.into_iter().collect()
}

#[cfg(test)]
mod tests;
