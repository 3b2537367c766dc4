//! Test support: cluster builders, a simulation of the datapath's lookups over a
//! [`Desired`], and a naive reference evaluation of upstream NetworkPolicy semantics
//! straight from the model.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
};

use enforcer_common::{
    DIR_EGRESS, DIR_INGRESS, EP_EGRESS_ISOLATED, EP_INGRESS_ISOLATED, EP_NET_UNMANAGED,
    IDENTITY_ANY, IDENTITY_WORLD, IP_HOST, POLICY_PREFIX_FULL, PolicyKey, PolicyValue,
};

use super::super::{
    CompileInput, Compiler, Desired, IpPrefix, PolicyPrefix, prefix::policy_key_bytes,
};
use crate::model::*;

pub const NODE: &str = "node1";
pub const OTHER_NODE: &str = "node2";

// ---------------------------------------------------------------------------------------
// Builders
// ---------------------------------------------------------------------------------------

pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A selector with only matchLabels.
pub fn sel(pairs: &[(&str, &str)]) -> LabelSelector {
    LabelSelector {
        match_labels: labels(pairs),
        match_expressions: Vec::new(),
    }
}

/// A selector with only matchExpressions.
pub fn exprs(reqs: &[(&str, Operator, &[&str])]) -> LabelSelector {
    LabelSelector {
        match_labels: Labels::new(),
        match_expressions: reqs
            .iter()
            .map(|(key, operator, values)| Requirement {
                key: key.to_string(),
                operator: *operator,
                values: values.iter().map(|v| v.to_string()).collect(),
            })
            .collect(),
    }
}

/// `podSelector` alone: pods of the policy's namespace `ns`.
pub fn pods_in(ns: &str, pods: LabelSelector) -> Peer {
    Peer::Pods {
        namespaces: NamespaceMatch::Same(ns.to_string()),
        pods,
    }
}

/// `namespaceSelector` alone.
pub fn namespaces(ns: LabelSelector) -> Peer {
    Peer::Pods {
        namespaces: NamespaceMatch::Selector(ns),
        pods: LabelSelector::default(),
    }
}

/// `namespaceSelector` and `podSelector` in one peer.
pub fn ns_and_pods(ns: LabelSelector, pods: LabelSelector) -> Peer {
    Peer::Pods {
        namespaces: NamespaceMatch::Selector(ns),
        pods,
    }
}

pub fn block(cidr: &str, except: &[&str]) -> Peer {
    Peer::IpBlock {
        cidr: cidr.parse().unwrap(),
        except: except.iter().map(|e| e.parse().unwrap()).collect(),
    }
}

pub fn port(protocol: Protocol, port: u16) -> PortSpec {
    PortSpec {
        protocol,
        port: Some(Port::Number(port)),
        end_port: None,
    }
}

pub fn tcp(p: u16) -> PortSpec {
    port(Protocol::Tcp, p)
}

pub fn udp(p: u16) -> PortSpec {
    port(Protocol::Udp, p)
}

pub fn range(protocol: Protocol, from: u16, to: u16) -> PortSpec {
    PortSpec {
        protocol,
        port: Some(Port::Number(from)),
        end_port: Some(to),
    }
}

/// Every port of one protocol.
pub fn all_ports(protocol: Protocol) -> PortSpec {
    PortSpec {
        protocol,
        port: None,
        end_port: None,
    }
}

pub fn named(protocol: Protocol, name: &str) -> PortSpec {
    PortSpec {
        protocol,
        port: Some(Port::Name(name.to_string())),
        end_port: None,
    }
}

pub fn rule(peers: Vec<Peer>, ports: Vec<PortSpec>) -> Rule {
    Rule { peers, ports }
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A cluster under construction plus this node's addresses.
#[derive(Clone, Debug)]
pub struct World {
    pub cluster: Cluster,
    pub node_ips: Vec<IpAddr>,
}

impl World {
    pub fn new() -> Self {
        Self {
            cluster: Cluster::default(),
            node_ips: vec![ip("192.168.0.1"), ip("fd00:ff::1")],
        }
    }

    pub fn ns(&mut self, name: &str, l: &[(&str, &str)]) -> &mut Self {
        self.cluster.namespaces.insert(
            name.to_string(),
            Namespace {
                name: name.to_string(),
                labels: labels(l),
            },
        );
        self
    }

    /// Add a pod on this node ("ns/name"); returns it for further tweaks.
    pub fn pod(&mut self, key: &str, l: &[(&str, &str)], ips: &[&str]) -> &mut Pod {
        let (namespace, name) = key.split_once('/').unwrap();
        let pod = Pod {
            namespace: namespace.to_string(),
            name: name.to_string(),
            uid: format!("uid-{namespace}-{name}"),
            labels: labels(l),
            node_name: Some(NODE.to_string()),
            host_network: false,
            ips: ips.iter().map(|s| ip(s)).collect(),
            named_ports: Vec::new(),
            terminal: false,
        };
        let k = pod.key();
        self.cluster.pods.insert(k.clone(), pod);
        self.cluster.pods.get_mut(&k).unwrap()
    }

    /// Add a pod on another node.
    pub fn remote_pod(&mut self, key: &str, l: &[(&str, &str)], ips: &[&str]) -> &mut Pod {
        let p = self.pod(key, l, ips);
        p.node_name = Some(OTHER_NODE.to_string());
        p
    }

    pub fn remove_pod(&mut self, key: &str) {
        let (namespace, name) = key.split_once('/').unwrap();
        self.cluster.pods.remove(&ObjectRef {
            namespace: namespace.into(),
            name: name.into(),
        });
    }

    /// Add a policy. `ingress`/`egress`: None = the policy does not isolate that direction
    /// (not in policyTypes), Some(rules) = it does, with these rules.
    pub fn policy(
        &mut self,
        key: &str,
        pod_selector: LabelSelector,
        ingress: Option<Vec<Rule>>,
        egress: Option<Vec<Rule>>,
    ) -> &mut NetworkPolicy {
        let (namespace, name) = key.split_once('/').unwrap();
        let p = NetworkPolicy {
            namespace: namespace.to_string(),
            name: name.to_string(),
            pod_selector,
            ingress_isolation: ingress.is_some(),
            egress_isolation: egress.is_some(),
            ingress: ingress.unwrap_or_default(),
            egress: egress.unwrap_or_default(),
            errors: Vec::new(),
        };
        let k = p.key();
        self.cluster.network_policies.insert(k.clone(), p);
        self.cluster.network_policies.get_mut(&k).unwrap()
    }

    pub fn input(&self) -> CompileInput<'_> {
        CompileInput {
            cluster: &self.cluster,
            node_name: NODE,
            node_ips: &self.node_ips,
        }
    }

    /// Compile with a fresh compiler and check the output's invariants.
    pub fn compile(&self) -> Desired {
        self.compile_with(&mut Compiler::new())
    }

    pub fn compile_with(&self, c: &mut Compiler) -> Desired {
        let d = c.compile(&self.input());
        check_invariants(&d);
        d
    }

    pub fn get_pod(&self, key: &str) -> &Pod {
        let (namespace, name) = key.split_once('/').unwrap();
        &self.cluster.pods[&ObjectRef {
            namespace: namespace.into(),
            name: name.into(),
        }]
    }

    /// A view answering traffic questions both through the compiled maps and through the
    /// reference semantics, asserting that they agree.
    pub fn check<'a>(&'a self, d: &'a Desired) -> Check<'a> {
        Check {
            world: self,
            sim: Sim::new(d),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Invariants of any compiler output
// ---------------------------------------------------------------------------------------

/// Structural properties every `Desired` must have, whatever the input.
pub fn check_invariants(d: &Desired) {
    for (p, info) in &d.ipcache {
        assert!(p.len <= 128, "{p:?}");
        assert_eq!(IpPrefix::new(p.len, p.addr), *p, "host bits set in {p:?}");
        assert_ne!(info.identity, IDENTITY_ANY, "{p}");
        assert_eq!(info.flags & !IP_HOST, 0, "{p}");
        assert!(
            info.identity == IDENTITY_WORLD || d.identities.contains_key(&info.identity),
            "{p}: identity {} has no description",
            info.identity
        );
    }
    let endpoint_ids: BTreeSet<u32> = d.endpoints.values().map(|e| e.endpoint.id).collect();
    assert_eq!(
        endpoint_ids.len(),
        d.endpoints.len(),
        "endpoint ids not unique"
    );
    assert!(!endpoint_ids.contains(&0));
    for (p, v) in &d.policy {
        // Only the lengths the datapath's design uses.
        assert!(p.len == 72 || (80..=96).contains(&p.len), "{p:?}");
        // Bits beyond len are zero, checked on the kernel's byte layout.
        let bytes = policy_key_bytes(&p.key);
        for bit in p.len..96 {
            let set = bytes[(bit / 8) as usize] & (0x80 >> (bit % 8)) != 0;
            assert!(!set, "{p:?}: bit {bit} set");
        }
        assert!(
            endpoint_ids.contains(&p.key.endpoint),
            "{p:?}: unknown endpoint"
        );
        assert!(
            p.key.identity == IDENTITY_ANY || d.identities.contains_key(&p.key.identity),
            "{p:?}: unknown identity"
        );
        assert!(p.key.direction == DIR_INGRESS || p.key.direction == DIR_EGRESS);
        assert!(
            d.policy_names.contains_key(&v.policy),
            "{p:?}: unknown policy"
        );
        assert_eq!(v.flags, 0);
    }
    for id in d.identities.keys() {
        assert!(*id >= enforcer_common::IDENTITY_FIRST_DYNAMIC && *id != IDENTITY_ANY);
    }
    for e in d.endpoints.values() {
        assert_eq!(e.endpoint.guards_enforce, 0);
        assert_eq!(e.endpoint.guards_audit, 0);
        if e.endpoint.flags & EP_NET_UNMANAGED != 0 {
            assert_eq!(e.endpoint.flags, EP_NET_UNMANAGED);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Datapath simulation
// ---------------------------------------------------------------------------------------

/// The datapath's view of a `Desired`: longest-prefix lookups as the kernel's LPM tries do
/// them, over whatever prefix lengths the maps contain.
pub struct Sim<'a> {
    pub d: &'a Desired,
    ip_lens: Vec<u32>,
    policy_lens: Vec<u32>,
    policy_bytes: HashMap<(u32, [u8; 12]), PolicyValue>,
}

impl<'a> Sim<'a> {
    pub fn new(d: &'a Desired) -> Self {
        let mut ip_lens: Vec<u32> = d.ipcache.keys().map(|p| p.len).collect();
        ip_lens.sort_unstable_by(|a, b| b.cmp(a));
        ip_lens.dedup();
        let mut policy_lens: Vec<u32> = d.policy.keys().map(|p| p.len).collect();
        policy_lens.sort_unstable_by(|a, b| b.cmp(a));
        policy_lens.dedup();
        let policy_bytes = d
            .policy
            .iter()
            .map(|(p, v)| ((p.len, policy_key_bytes(&p.key)), *v))
            .collect();
        Self {
            d,
            ip_lens,
            policy_lens,
            policy_bytes,
        }
    }

    /// The identity of a remote address (`IPCACHE` longest match, WORLD if none).
    pub fn identity(&self, addr: IpAddr) -> u32 {
        self.lookup(addr).0
    }

    /// Identity and `IP_*` flags of a remote address.
    pub fn lookup(&self, addr: IpAddr) -> (u32, u32) {
        let host = IpPrefix::host(addr);
        self.ip_lens
            .iter()
            .find_map(|&len| self.d.ipcache.get(&IpPrefix::new(len, host.addr)))
            .map_or((IDENTITY_WORLD, 0), |info| (info.identity, info.flags))
    }

    /// `POLICY` longest match for a full key, masking its kernel byte layout bit by bit.
    pub fn policy(&self, key: PolicyKey) -> Option<PolicyValue> {
        let full = policy_key_bytes(&key);
        self.policy_lens.iter().find_map(|&len| {
            let mut b = full;
            for bit in len..96 {
                b[(bit / 8) as usize] &= !(0x80u8 >> (bit % 8));
            }
            self.policy_bytes.get(&(len, b)).copied()
        })
    }

    /// The datapath's verdict for the first packet of a flow of the pod with uid `uid`
    /// in `direction`, with the peer at `remote`, protocol `proto`, destination `port`.
    pub fn allows(&self, uid: &str, direction: u8, remote: IpAddr, proto: u8, port: u16) -> bool {
        let ep = self.d.endpoints[uid].endpoint;
        if ep.flags & EP_NET_UNMANAGED != 0 {
            return true;
        }
        let isolated = if direction == DIR_INGRESS {
            EP_INGRESS_ISOLATED
        } else {
            EP_EGRESS_ISOLATED
        };
        if ep.flags & isolated == 0 {
            return true;
        }
        let (identity, flags) = self.lookup(remote);
        if direction == DIR_INGRESS && flags & IP_HOST != 0 {
            return true;
        }
        let key = PolicyKey {
            endpoint: ep.id,
            identity,
            direction,
            protocol: proto,
            port: port.to_be_bytes(),
        };
        self.policy(key).is_some()
            || self
                .policy(PolicyKey {
                    identity: IDENTITY_ANY,
                    ..key
                })
                .is_some()
    }
}

// ---------------------------------------------------------------------------------------
// Reference semantics
// ---------------------------------------------------------------------------------------

/// Upstream NetworkPolicy semantics, evaluated naively from the model: may the first
/// packet of a flow of `pod` (on this node, not terminal) in `direction`, peer `remote`,
/// protocol number `proto`, destination port `port` pass?
pub fn reference_allows(
    cluster: &Cluster,
    node_ips: &[IpAddr],
    pod: &Pod,
    direction: u8,
    remote: IpAddr,
    proto: u8,
    port: u16,
) -> bool {
    if pod.host_network {
        return true;
    }
    let remote = remote.to_canonical();
    let applicable: Vec<&NetworkPolicy> = cluster
        .network_policies
        .values()
        .filter(|p| p.namespace == pod.namespace && p.pod_selector.matches(&pod.labels))
        .filter(|p| {
            if direction == DIR_INGRESS {
                p.ingress_isolation
            } else {
                p.egress_isolation
            }
        })
        .collect();
    if applicable.is_empty() {
        return true;
    }
    // Upstream: traffic from the pod's node is allowed (kubelet probes); traffic to the
    // node is not special, it is judged as the address it is.
    if direction == DIR_INGRESS && node_ips.iter().any(|n| n.to_canonical() == remote) {
        return true;
    }
    // The pod the remote address belongs to, if any (pods that can be peers only).
    let peer_pod = cluster.pods.values().find(|q| {
        !q.terminal && !q.host_network && q.ips.iter().any(|a| a.to_canonical() == remote)
    });
    let empty = Labels::new();
    let peer_ok = |peer: &Peer| match peer {
        Peer::Pods { namespaces, pods } => peer_pod.is_some_and(|q| {
            let ns_ok = match namespaces {
                NamespaceMatch::Same(ns) => *ns == q.namespace,
                NamespaceMatch::Selector(s) => s.matches(
                    cluster
                        .namespaces
                        .get(&q.namespace)
                        .map_or(&empty, |n| &n.labels),
                ),
            };
            ns_ok && pods.matches(&q.labels)
        }),
        Peer::IpBlock { cidr, except } => {
            cidr.contains(&remote) && !except.iter().any(|e| e.contains(&remote))
        }
    };
    // The destination pod resolves named ports.
    let destination = if direction == DIR_INGRESS {
        Some(pod)
    } else {
        peer_pod
    };
    let port_ok = |spec: &PortSpec| {
        spec.protocol.number() == proto
            && match (&spec.port, spec.end_port) {
                (None, _) => true,
                (Some(Port::Number(p)), None) => *p == port,
                (Some(Port::Number(p)), Some(end)) => (*p..=end).contains(&port),
                (Some(Port::Name(name)), _) => destination.is_some_and(|d| {
                    d.named_ports.iter().any(|np| {
                        np.name == *name && np.protocol == spec.protocol && np.port == port
                    })
                }),
            }
    };
    applicable.iter().any(|p| {
        let rules = if direction == DIR_INGRESS {
            &p.ingress
        } else {
            &p.egress
        };
        rules.iter().any(|r| {
            (r.peers.is_empty() || r.peers.iter().any(peer_ok))
                && (r.ports.is_empty() || r.ports.iter().any(port_ok))
        })
    })
}

/// Traffic questions about one compiled world, answered by the simulated datapath and
/// cross-checked against the reference.
pub struct Check<'a> {
    pub world: &'a World,
    pub sim: Sim<'a>,
}

impl Check<'_> {
    fn both(&self, pod: &str, direction: u8, remote: &str, proto: u8, port: u16) -> bool {
        let p = self.world.get_pod(pod);
        let remote = ip(remote);
        let got = self.sim.allows(&p.uid, direction, remote, proto, port);
        let want = reference_allows(
            &self.world.cluster,
            &self.world.node_ips,
            p,
            direction,
            remote,
            proto,
            port,
        );
        assert_eq!(
            got, want,
            "{pod} dir {direction} remote {remote} proto {proto} port {port}: datapath {got}, reference {want}"
        );
        got
    }

    /// May `remote` open a flow to local pod `pod` on `proto`/`port`?
    pub fn ingress(&self, pod: &str, remote: &str, proto: Protocol, port: u16) -> bool {
        self.both(pod, DIR_INGRESS, remote, proto.number(), port)
    }

    /// May local pod `pod` open a flow to `remote` on `proto`/`port`?
    pub fn egress(&self, pod: &str, remote: &str, proto: Protocol, port: u16) -> bool {
        self.both(pod, DIR_EGRESS, remote, proto.number(), port)
    }

    /// Same as `ingress`/`egress` with a raw protocol number (ICMP has port 0).
    pub fn raw(&self, pod: &str, direction: u8, remote: &str, proto: u8, port: u16) -> bool {
        self.both(pod, direction, remote, proto, port)
    }

    /// The identity the datapath gives `remote`.
    pub fn identity(&self, remote: &str) -> u32 {
        self.sim.identity(ip(remote))
    }
}

/// The exact `POLICY` key of one port (test shorthand).
pub fn exact(
    endpoint: u32,
    identity: u32,
    direction: u8,
    proto: Protocol,
    port: u16,
) -> PolicyPrefix {
    PolicyPrefix::new(
        POLICY_PREFIX_FULL,
        PolicyKey {
            endpoint,
            identity,
            direction,
            protocol: proto.number(),
            port: port.to_be_bytes(),
        },
    )
}

/// The `IPCACHE` prefix of a CIDR.
pub fn cidr(s: &str) -> IpPrefix {
    IpPrefix::from_net(&s.parse().unwrap())
}

/// All policy entries of one endpoint, as (identity, direction, len, protocol, port).
pub fn entries_of(d: &Desired, uid: &str) -> BTreeSet<(u32, u8, u32, u8, u16)> {
    let id = d.endpoints[uid].endpoint.id;
    d.policy
        .keys()
        .filter(|p| p.key.endpoint == id)
        .map(|p| {
            (
                p.key.identity,
                p.key.direction,
                p.len,
                p.key.protocol,
                u16::from_be_bytes(p.key.port),
            )
        })
        .collect()
}

/// `BTreeMap` from pairs (test shorthand).
pub fn map<K: Ord, V>(pairs: impl IntoIterator<Item = (K, V)>) -> BTreeMap<K, V> {
    pairs.into_iter().collect()
}
