//! One compile: local endpoints, the policies that apply to them, then identities
//! ([`super::peers`]) and policy entries ([`super::rules`]).

use std::collections::HashMap;

use enforcer_common::{
    DIR_EGRESS, DIR_INGRESS, EP_EGRESS_ISOLATED, EP_INGRESS_ISOLATED, EP_NET_UNMANAGED, Endpoint,
};

use super::{CompileInput, Compiler, Desired, LocalEndpoint, peers::Peers, rules};
use crate::model::{NetworkPolicy, Pod, Port, Rule};

/// A pod of this node that policy applies to (not host network).
pub(super) struct LocalPod<'a> {
    pub pod: &'a Pod,
    /// Endpoint id.
    pub id: u32,
}

/// A policy selecting at least one local pod.
pub(super) struct ActivePolicy<'a> {
    pub policy: &'a NetworkPolicy,
    /// Policy index (`PolicyValue::policy`).
    pub index: u32,
    /// The local pods it selects (indexes into the `LocalPod` list).
    pub selected: Vec<usize>,
}

impl<'a> ActivePolicy<'a> {
    /// The rules that take effect, with their direction: those of the directions the
    /// policy isolates (upstream ignores e.g. ingress rules of an Egress-only policy).
    pub fn rules(&self) -> impl Iterator<Item = (u8, &'a Rule)> + use<'a> {
        let p = self.policy;
        let ingress = p.ingress.iter().filter(move |_| p.ingress_isolation);
        let egress = p.egress.iter().filter(move |_| p.egress_isolation);
        ingress
            .map(|r| (DIR_INGRESS, r))
            .chain(egress.map(|r| (DIR_EGRESS, r)))
    }
}

pub(super) fn compile(c: &mut Compiler, input: &CompileInput) -> Desired {
    let cluster = input.cluster;
    let mut out = Desired::default();

    // Policy indexes, and the policies of each namespace.
    let mut policies: Vec<(&NetworkPolicy, u32)> =
        Vec::with_capacity(cluster.network_policies.len());
    let mut by_namespace: HashMap<&str, Vec<usize>> = HashMap::new();
    for (key, policy) in &cluster.network_policies {
        let index = c.policy_ids.id(key);
        out.policy_names.insert(index, key.clone());
        by_namespace
            .entry(policy.namespace.as_str())
            .or_default()
            .push(policies.len());
        policies.push((policy, index));
    }

    // Local endpoints, their isolation, and which policies select them.
    let mut selected: Vec<Vec<usize>> = vec![Vec::new(); policies.len()];
    let mut locals: Vec<LocalPod> = Vec::new();
    for (key, pod) in &cluster.pods {
        if pod.terminal || pod.node_name.as_deref() != Some(input.node_name) {
            continue;
        }
        let id = c.endpoint_ids.id(&pod.uid);
        let mut flags = 0;
        if pod.host_network {
            flags = EP_NET_UNMANAGED;
        } else {
            let candidates = by_namespace.get(pod.namespace.as_str());
            for &pi in candidates.into_iter().flatten() {
                let policy = policies[pi].0;
                if policy.pod_selector.matches(&pod.labels) {
                    if policy.ingress_isolation {
                        flags |= EP_INGRESS_ISOLATED;
                    }
                    if policy.egress_isolation {
                        flags |= EP_EGRESS_ISOLATED;
                    }
                    selected[pi].push(locals.len());
                }
            }
            locals.push(LocalPod { pod, id });
            let (key, value) = crate::model::NETWORK_AUDIT_LABEL;
            if cluster
                .namespaces
                .get(&pod.namespace)
                .and_then(|ns| ns.labels.get(key))
                .is_some_and(|v| v == value)
            {
                flags |= enforcer_common::EP_NET_AUDIT;
            }
        }
        out.endpoints.insert(
            pod.uid.clone(),
            LocalEndpoint {
                pod: key.clone(),
                endpoint: Endpoint {
                    id,
                    flags,
                    ..Endpoint::default()
                },
            },
        );
    }
    let active: Vec<ActivePolicy> = policies
        .iter()
        .zip(selected)
        .filter(|(_, sel)| !sel.is_empty())
        .map(|(&(policy, index), selected)| ActivePolicy {
            policy,
            index,
            selected,
        })
        .collect();

    // The clauses and egress port names that matter on this node, then identities.
    let mut peers = Peers::default();
    for ap in &active {
        for (direction, rule) in ap.rules() {
            for peer in &rule.peers {
                peers.add_clause(peer, &mut c.clause_ids);
            }
            if direction == DIR_EGRESS {
                for spec in &rule.ports {
                    if let Some(Port::Name(name)) = &spec.port {
                        peers.add_egress_name(name, spec.protocol);
                    }
                }
            }
        }
    }
    peers.classify(&mut c.identity_ids, cluster, input.node_ips);

    out.policy = rules::policy_entries(&active, &locals, &peers);
    out.identities = peers
        .classes
        .iter()
        .map(|class| (class.id, class.describe()))
        .collect();
    out.ipcache = peers.ipcache;
    // Mark the addresses of local pods with their endpoint: socket hooks, which do not know
    // the source address yet, recognise a pod connecting to itself by it.
    for lp in &locals {
        for ip in &lp.pod.ips {
            if let Some(info) = out.ipcache.get_mut(&super::IpPrefix::host(*ip))
                && info.flags & enforcer_common::IP_HOST == 0
            {
                info.endpoint = lp.id;
            }
        }
    }
    out
}
