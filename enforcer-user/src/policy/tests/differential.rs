//! Differential test: random clusters, compiled, then every combination of (local pod,
//! direction, remote address, protocol, port) from a probe set is answered by the
//! simulated datapath over the compiled maps and by the reference semantics over the
//! model. Any disagreement fails with the seed and the flow.
//!
//! Each seed also mutates its cluster and recompiles with the same compiler, so the
//! incremental path (stable numbers, forgotten keys) is held to the same standard.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
};

use enforcer_common::{DIR_EGRESS, DIR_INGRESS, PROTO_ICMP};

use super::harness::*;
use crate::{
    model::*,
    policy::{Compiler, Desired, explain},
};

/// xorshift64*: small, deterministic, good enough to pick test cases.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// 0..n
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// true with probability `percent`%.
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const VALUES: &[&str] = &["a", "b", "c"];
const NAMESPACES: &[&str] = &["n1", "n2", "n3", "unknown"];
const PORT_NAMES: &[&str] = &["http", "dns", "sctp", "missing"];
const PROTOCOLS: &[Protocol] = &[Protocol::Tcp, Protocol::Tcp, Protocol::Udp, Protocol::Sctp];

/// (cidr, possible excepts) the generator draws ipBlocks from: nested, overlapping,
/// covering pod addresses, the node, both families, /0s and a /32 on a pod address.
const BLOCKS: &[(&str, &[&str])] = &[
    ("10.0.0.0/8", &["10.0.1.0/24", "10.0.2.0/25", "10.0.0.4/30"]),
    ("10.0.1.0/24", &["10.0.1.128/25", "10.0.1.7/32"]),
    ("10.0.0.0/16", &["10.0.0.0/24"]),
    ("0.0.0.0/0", &["10.0.0.0/8", "192.168.0.0/16"]),
    ("192.168.0.0/24", &["192.168.0.1/32"]),
    ("1.2.3.0/24", &[]),
    ("10.0.2.5/32", &[]),
    ("fd00::/64", &["fd00::100/120", "fd00::1/128"]),
    ("::/0", &["fd00::/16", "::ffff:0:0/96"]),
    ("2001:db8::/32", &["2001:db8::/48"]),
];

fn random_labels(r: &mut Rng, keys: &[&str]) -> Labels {
    let mut l = Labels::new();
    for k in keys {
        if r.chance(50) {
            l.insert(k.to_string(), r.pick(VALUES).to_string());
        }
    }
    l
}

fn random_selector(r: &mut Rng, keys: &[&str]) -> LabelSelector {
    let mut s = LabelSelector::default();
    if r.chance(30) {
        return s;
    }
    for _ in 0..r.below(2) {
        s.match_labels
            .insert(r.pick(keys).to_string(), r.pick(VALUES).to_string());
    }
    for _ in 0..r.below(3) {
        let operator = *r.pick(&[
            Operator::In,
            Operator::NotIn,
            Operator::Exists,
            Operator::DoesNotExist,
        ]);
        let values = match operator {
            Operator::In | Operator::NotIn => (0..1 + r.below(2))
                .map(|_| r.pick(VALUES).to_string())
                .collect(),
            _ => Default::default(),
        };
        s.match_expressions.push(Requirement {
            key: r.pick(keys).to_string(),
            operator,
            values,
        });
    }
    s
}

fn random_peer(r: &mut Rng, ns: &str) -> Peer {
    if r.chance(35) {
        let (cidr, excepts) = r.pick(BLOCKS);
        let except = excepts
            .iter()
            .filter(|_| r.chance(50))
            .map(|e| e.parse().unwrap())
            .collect();
        return Peer::IpBlock {
            cidr: cidr.parse().unwrap(),
            except,
        };
    }
    let namespaces = if r.chance(50) {
        NamespaceMatch::Same(ns.to_string())
    } else {
        NamespaceMatch::Selector(random_selector(r, &["team", "env"]))
    };
    Peer::Pods {
        namespaces,
        pods: random_selector(r, &["app", "tier", "role"]),
    }
}

fn random_port(r: &mut Rng) -> PortSpec {
    let protocol = *r.pick(PROTOCOLS);
    let (port, end_port) = match r.below(20) {
        0..=2 => (None, None),
        3..=11 => (
            Some(Port::Number(*r.pick(&[53, 80, 81, 443, 8080, 9000]))),
            None,
        ),
        12..=14 => {
            let start = *r.pick(&[50u16, 80, 1000, 65000]);
            let end = start.saturating_add(r.below(600) as u16);
            (Some(Port::Number(start)), Some(end))
        }
        _ => (Some(Port::Name(r.pick(PORT_NAMES).to_string())), None),
    };
    PortSpec {
        protocol,
        port,
        end_port,
    }
}

fn random_rules(r: &mut Rng, ns: &str) -> Vec<Rule> {
    (0..r.below(4))
        .map(|_| Rule {
            peers: (0..r.below(4)).map(|_| random_peer(r, ns)).collect(),
            ports: (0..r.below(4)).map(|_| random_port(r)).collect(),
        })
        .collect()
}

/// Unique pod addresses: `serial` numbers them.
fn pod_ips(r: &mut Rng, serial: usize) -> Vec<IpAddr> {
    let mut ips = Vec::new();
    if r.chance(5) {
        return ips;
    }
    if r.chance(85) {
        // Spread over 10.0.0.x, 10.0.1.x and 10.0.2.x so blocks and excepts bite
        // (unique while serial < 750).
        let third = serial % 3;
        let fourth = 2 + serial / 3;
        ips.push(format!("10.0.{third}.{fourth}").parse().unwrap());
    }
    if r.chance(40) {
        let v6 = if serial.is_multiple_of(2) {
            format!("fd00::{:x}", 0xf0 + serial)
        } else {
            format!("2001:db8:1::{serial:x}")
        };
        ips.push(v6.parse().unwrap());
    }
    ips
}

fn random_pod(r: &mut Rng, serial: usize) -> Pod {
    let namespace = r.pick(NAMESPACES).to_string();
    let name = format!("p{serial}");
    let mut named_ports = Vec::new();
    for name in PORT_NAMES.iter().take(3) {
        if r.chance(40) {
            named_ports.push(NamedPort {
                name: name.to_string(),
                protocol: *r.pick(PROTOCOLS),
                port: *r.pick(&[53, 80, 81, 8080, 9000]),
            });
        }
    }
    Pod {
        uid: format!("uid-{namespace}-{name}"),
        namespace,
        name,
        labels: random_labels(r, &["app", "tier", "role"]),
        node_name: if r.chance(50) {
            Some(NODE.to_string())
        } else if r.chance(90) {
            Some(OTHER_NODE.to_string())
        } else {
            None
        },
        host_network: r.chance(8),
        ips: pod_ips(r, serial),
        named_ports,
        terminal: r.chance(8),
    }
}

fn random_policy(r: &mut Rng, serial: usize) -> NetworkPolicy {
    let namespace = r.pick(&NAMESPACES[..3]).to_string();
    let (ingress_isolation, egress_isolation) = match r.below(4) {
        0 => (true, false),
        1 => (false, true),
        _ => (true, true),
    };
    NetworkPolicy {
        pod_selector: random_selector(r, &["app", "tier", "role"]),
        ingress_isolation,
        egress_isolation,
        // Rules of a direction the policy does not isolate are generated too: they must
        // be ignored.
        ingress: random_rules(r, &namespace),
        egress: random_rules(r, &namespace),
        namespace,
        name: format!("np{serial}"),
        errors: Vec::new(),
    }
}

fn random_world(r: &mut Rng) -> World {
    let mut w = World::new();
    for ns in &NAMESPACES[..3] {
        let l = random_labels(r, &["team", "env"]);
        let pairs: Vec<(&str, &str)> = l.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        w.ns(ns, &pairs);
    }
    for serial in 0..8 + r.below(16) {
        let pod = random_pod(r, serial);
        w.cluster.pods.insert(pod.key(), pod);
    }
    for serial in 0..1 + r.below(5) {
        let p = random_policy(r, serial);
        w.cluster.network_policies.insert(p.key(), p);
    }
    w
}

/// Mutate a world: drop and add pods, relabel one, replace or drop a policy.
fn mutate(r: &mut Rng, w: &mut World, serial_base: usize) {
    let keys: Vec<ObjectRef> = w.cluster.pods.keys().cloned().collect();
    for k in &keys {
        if r.chance(20) {
            w.cluster.pods.remove(k);
        }
    }
    for i in 0..r.below(5) {
        let pod = random_pod(r, serial_base + i);
        w.cluster.pods.insert(pod.key(), pod);
    }
    if let Some(p) = keys
        .get(r.below(keys.len().max(1)))
        .and_then(|k| w.cluster.pods.get_mut(k))
    {
        p.labels = random_labels(r, &["app", "tier", "role"]);
    }
    let pkeys: Vec<ObjectRef> = w.cluster.network_policies.keys().cloned().collect();
    if let Some(k) = pkeys.get(r.below(pkeys.len().max(1))) {
        w.cluster.network_policies.remove(k);
    }
    if r.chance(70) {
        let p = random_policy(r, serial_base);
        w.cluster.network_policies.insert(p.key(), p);
    }
}

/// Remote addresses probed: every pod address, the node, and addresses in and around
/// every block and except.
fn probe_addresses(w: &World) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = w
        .cluster
        .pods
        .values()
        .flat_map(|p| p.ips.iter().copied())
        .chain(w.node_ips.iter().copied())
        .collect();
    for s in [
        "10.0.0.5",
        "10.0.0.200",
        "10.0.1.7",
        "10.0.1.130",
        "10.0.1.200",
        "10.0.2.5",
        "10.0.2.200",
        "10.0.3.1",
        "10.9.9.9",
        "1.2.3.4",
        "8.8.8.8",
        "192.168.0.7",
        "192.168.5.5",
        "fd00::1",
        "fd00::150",
        "fd00::1:0",
        "fd00:1::1",
        "2001:db8::1",
        "2001:db8:1::99",
        "2001:db9::1",
    ] {
        v.push(ip(s));
    }
    v.sort();
    v.dedup();
    v
}

const PROBE_PORTS: &[u16] = &[
    53, 80, 81, 443, 8080, 9000, 50, 200, 649, 650, 1000, 1300, 1599, 1600, 65000, 65535,
];

/// Compare the simulated datapath with the reference on every probe; returns how many
/// flows were checked.
fn compare(seed: u64, round: u32, w: &World, d: &Desired) -> usize {
    let sim = Sim::new(d);
    let addrs = probe_addresses(w);
    let mut checked = 0;
    for pod in w.cluster.pods.values() {
        if pod.terminal || pod.node_name.as_deref() != Some(NODE) {
            assert!(
                !d.endpoints.contains_key(&pod.uid),
                "seed {seed}: {}",
                pod.key()
            );
            continue;
        }
        for &remote in &addrs {
            // The datapath passes a pod's traffic with itself before any lookup.
            if pod.ips.contains(&remote) {
                continue;
            }
            for direction in [DIR_INGRESS, DIR_EGRESS] {
                let mut probes: Vec<(u8, u16)> = vec![(PROTO_ICMP, 0)];
                for proto in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
                    probes.extend(PROBE_PORTS.iter().map(|&p| (proto.number(), p)));
                }
                for (proto, port) in probes {
                    let got = sim.allows(&pod.uid, direction, remote, proto, port);
                    let want = reference_allows(
                        &w.cluster,
                        &w.node_ips,
                        pod,
                        direction,
                        remote,
                        proto,
                        port,
                    );
                    assert_eq!(
                        got,
                        want,
                        "seed {seed} round {round}: pod {} dir {direction} remote {remote} \
                         proto {proto} port {port}: datapath {got}, reference {want}\n\
                         cluster: {:#?}",
                        pod.key(),
                        w.cluster
                    );
                    // `enforcer explain` gives the same verdict, with its reasons.
                    let dir = if direction == DIR_INGRESS {
                        explain::Direction::Ingress
                    } else {
                        explain::Direction::Egress
                    };
                    let why =
                        explain::direction(&w.cluster, &w.node_ips, pod, dir, remote, proto, port);
                    assert_eq!(
                        why.allows(),
                        want,
                        "seed {seed} round {round}: explain says {why:?} for pod {} dir \
                         {direction} remote {remote} proto {proto} port {port}",
                        pod.key()
                    );
                    checked += 1;
                }
            }
        }
    }
    checked
}

#[test]
fn random_clusters_match_reference_semantics() {
    let mut flows = 0;
    let mut entries = 0;
    let seeds = 120;
    for seed in 0..seeds {
        let mut r = Rng::new(seed);
        let mut w = random_world(&mut r);
        let mut compiler = Compiler::new();
        let mut previous: Option<Desired> = None;
        // Numbers handed out so far: endpoint id -> uid, and identities / policy indexes
        // that were live once but not in the last round (they must never come back).
        let mut endpoint_owner: HashMap<u32, String> = HashMap::new();
        let mut retired: HashSet<u32> = HashSet::new();
        let mut retired_policies: HashSet<u32> = HashSet::new();
        for round in 0..3 {
            let d = w.compile_with(&mut compiler);
            flows += compare(seed, round, &w, &d);
            for (uid, e) in &d.endpoints {
                let owner = endpoint_owner.entry(e.endpoint.id).or_insert(uid.clone());
                assert_eq!(
                    owner, uid,
                    "seed {seed}: endpoint id {} reused",
                    e.endpoint.id
                );
            }
            for id in d.identities.keys() {
                assert!(!retired.contains(id), "seed {seed}: identity {id} reused");
            }
            for index in d.policy_names.keys() {
                assert!(
                    !retired_policies.contains(index),
                    "seed {seed}: policy {index} reused"
                );
            }
            entries += d.policy.len();
            // Same model, fresh compiler: same map shapes (numbers may differ).
            let fresh = w.compile();
            assert_eq!(fresh.policy.len(), d.policy.len(), "seed {seed}");
            assert_eq!(fresh.ipcache.len(), d.ipcache.len(), "seed {seed}");
            if let Some(prev) = &previous {
                // Pods present in both rounds keep their endpoint ids.
                for (uid, e) in &d.endpoints {
                    if let Some(old) = prev.endpoints.get(uid) {
                        assert_eq!(old.endpoint.id, e.endpoint.id, "seed {seed}: {uid}");
                    }
                }
                // So do policies.
                for (index, name) in &d.policy_names {
                    if let Some(old) = prev.policy_names.iter().find(|(_, n)| *n == name) {
                        assert_eq!(old.0, index, "seed {seed}: {name}");
                    }
                }
                retired.extend(
                    prev.identities
                        .keys()
                        .filter(|id| !d.identities.contains_key(id)),
                );
                retired_policies.extend(
                    prev.policy_names
                        .keys()
                        .filter(|i| !d.policy_names.contains_key(i)),
                );
            }
            previous = Some(d);
            mutate(&mut r, &mut w, 100 * (round as usize + 1));
        }
    }
    println!("differential: {seeds} seeds x 3 rounds, {flows} flows, {entries} policy entries");
    assert!(flows > 100_000, "the probe set shrank: {flows}");
}
