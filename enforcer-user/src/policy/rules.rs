//! `POLICY` entries: what each rule allows, per local endpoint.
//!
//! A rule allows (peer identity, port prefix) pairs. Everything except an ingress named
//! port is the same for every endpoint the policy selects, so each rule is turned into a
//! list of [`Grant`]s once; then each endpoint collects the grants of the rules that apply
//! to it, and its entries are deduplicated and pruned on their own.
//!
//! Port specs map to prefixes of the (protocol, port) part of the key:
//! - no ports: 72 bits, any protocol and port;
//! - a protocol without port: 80 bits, any port of it;
//! - a port: 96 bits; a port range: the aligned blocks of [`port_range_prefixes`];
//! - a named port: 96 bits with the number it resolves to, for the protocol of the spec
//!   only. Ingress resolves it on the local pod (the destination); egress on each peer
//!   class (the destination), so peers without the name, such as CIDR regions, get
//!   nothing. Nothing is emitted for a name that does not resolve.
//!
//! The union of all rules is what the datapath must allow. Entries another entry already
//! covers (a shorter prefix of the same identity, or an `IDENTITY_ANY` prefix of the same
//! endpoint and direction) are dropped: the datapath's two lookups still find the cover.

use std::collections::BTreeMap;

use enforcer_common::{
    DIR_INGRESS, IDENTITY_ANY, POLICY_PREFIX_ANY_PORT, POLICY_PREFIX_ANY_PROTO, POLICY_PREFIX_FULL,
    PolicyKey, PolicyValue,
};

use super::{
    PolicyPrefix,
    compile::{ActivePolicy, LocalPod},
    peers::Peers,
    port_range_prefixes,
};
use crate::model::{Port, Protocol, Rule};

/// What a rule allows for one peer identity, independent of the endpoint.
#[derive(Clone, Copy)]
struct Grant {
    identity: u32,
    len: u32,
    protocol: u8,
    port: u16,
}

/// A rule of an active policy, compiled once for all the endpoints it applies to.
struct CompiledRule<'r> {
    /// Policy index.
    policy: u32,
    direction: u8,
    /// The peer identities (`IDENTITY_ANY` for a rule without peers).
    identities: Vec<u32>,
    grants: Vec<Grant>,
    /// Ingress named ports, which each endpoint resolves for itself.
    ingress_names: Vec<(&'r str, Protocol)>,
}

/// One entry of one endpoint. The derived order (direction, identity, prefix, policy)
/// puts duplicates next to each other with the lowest policy index first, and the entries
/// of one (direction, identity) together, shortest prefixes first.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    direction: u8,
    identity: u32,
    len: u32,
    /// Protocol and port as the 24 bits after the first 72 of the key, bits beyond `len`
    /// cleared.
    proto_port: u32,
    policy: u32,
}

impl Entry {
    fn new(direction: u8, identity: u32, len: u32, protocol: u8, port: u16, policy: u32) -> Self {
        let bits = u32::from(protocol) << 16 | u32::from(port);
        Self {
            direction,
            identity,
            len,
            proto_port: bits & proto_port_mask(len),
            policy,
        }
    }

    /// Whether every key this entry matches is matched by `cover` too, as far as the
    /// (protocol, port) part goes.
    fn covered_by(&self, cover: &Entry) -> bool {
        cover.len <= self.len && self.proto_port & proto_port_mask(cover.len) == cover.proto_port
    }

    fn same_key(&self, other: &Entry) -> bool {
        (self.direction, self.identity, self.len, self.proto_port)
            == (other.direction, other.identity, other.len, other.proto_port)
    }
}

/// The significant bits of the (protocol, port) part for a prefix of `len` bits.
fn proto_port_mask(len: u32) -> u32 {
    let significant =
        len.clamp(POLICY_PREFIX_ANY_PROTO, POLICY_PREFIX_FULL) - POLICY_PREFIX_ANY_PROTO;
    (0x00ff_ffffu32 >> (24 - significant)) << (24 - significant)
}

/// Every entry of every active policy, with duplicates merged and covered entries removed.
pub(super) fn policy_entries(
    active: &[ActivePolicy],
    locals: &[LocalPod],
    peers: &Peers,
) -> BTreeMap<PolicyPrefix, PolicyValue> {
    // Compile each rule once; note which rules apply to which endpoint.
    let mut rules: Vec<CompiledRule> = Vec::new();
    let mut rules_of: Vec<Vec<usize>> = vec![Vec::new(); locals.len()];
    for ap in active {
        for (direction, rule) in ap.rules() {
            let identities = rule_identities(rule, peers);
            let (grants, ingress_names) = grants(direction, rule, &identities, peers);
            for &li in &ap.selected {
                rules_of[li].push(rules.len());
            }
            rules.push(CompiledRule {
                policy: ap.index,
                direction,
                identities,
                grants,
                ingress_names,
            });
        }
    }

    let mut out: Vec<(PolicyPrefix, PolicyValue)> = Vec::new();
    let mut entries: Vec<Entry> = Vec::new();
    for (local, rule_ids) in locals.iter().zip(&rules_of) {
        entries.clear();
        for r in rule_ids.iter().map(|&ri| &rules[ri]) {
            entries.extend(
                r.grants.iter().map(|g| {
                    Entry::new(r.direction, g.identity, g.len, g.protocol, g.port, r.policy)
                }),
            );
            // Ingress named ports: the local pod is the destination.
            for &(name, protocol) in &r.ingress_names {
                let resolved = local
                    .pod
                    .named_ports
                    .iter()
                    .find(|np| np.name == name && np.protocol == protocol);
                if let Some(np) = resolved {
                    entries.extend(r.identities.iter().map(|&identity| {
                        let (proto, len) = (protocol.number(), POLICY_PREFIX_FULL);
                        Entry::new(r.direction, identity, len, proto, np.port, r.policy)
                    }));
                }
            }
        }
        entries.sort_unstable();
        // Equal keys: keep the first, which has the lowest policy index.
        entries.dedup_by(|later, first| later.same_key(first));
        prune(&mut entries);
        out.extend(entries.iter().map(|e| {
            let key = PolicyKey {
                endpoint: local.id,
                identity: e.identity,
                direction: e.direction,
                protocol: (e.proto_port >> 16) as u8,
                port: (e.proto_port as u16).to_be_bytes(),
            };
            let value = PolicyValue {
                policy: e.policy,
                flags: 0,
            };
            (PolicyPrefix::new(e.len, key), value)
        }));
    }
    out.into_iter().collect()
}

/// The identities a rule's peers match: `IDENTITY_ANY` for a rule without peers, else the
/// identity of every class satisfying one of its clauses (ascending, each once).
fn rule_identities(rule: &Rule, peers: &Peers) -> Vec<u32> {
    if rule.peers.is_empty() {
        return vec![IDENTITY_ANY];
    }
    let mut classes: Vec<usize> = rule
        .peers
        .iter()
        .flat_map(|peer| peers.by_clause[peers.clause(peer)].iter().copied())
        .collect();
    classes.sort_unstable();
    classes.dedup();
    let mut ids: Vec<u32> = classes.iter().map(|&c| peers.classes[c].id).collect();
    ids.sort_unstable();
    ids
}

/// The endpoint-independent grants of a rule, and the (name, protocol) of its ingress
/// named ports, which each endpoint resolves for itself.
fn grants<'r>(
    direction: u8,
    rule: &'r Rule,
    identities: &[u32],
    peers: &Peers,
) -> (Vec<Grant>, Vec<(&'r str, Protocol)>) {
    let mut grants = Vec::new();
    let mut ingress_names = Vec::new();
    let for_all = |len: u32, protocol: u8, port: u16, grants: &mut Vec<Grant>| {
        grants.extend(identities.iter().map(|&identity| Grant {
            identity,
            len,
            protocol,
            port,
        }));
    };
    if rule.ports.is_empty() {
        for_all(POLICY_PREFIX_ANY_PROTO, 0, 0, &mut grants);
    }
    for spec in &rule.ports {
        let protocol = spec.protocol.number();
        match (&spec.port, spec.end_port) {
            (None, _) => for_all(POLICY_PREFIX_ANY_PORT, protocol, 0, &mut grants),
            (Some(Port::Number(port)), None) => {
                for_all(POLICY_PREFIX_FULL, protocol, *port, &mut grants)
            }
            (Some(Port::Number(port)), Some(end)) => {
                for (len, first) in port_range_prefixes(*port, end) {
                    for_all(len, protocol, first, &mut grants);
                }
            }
            (Some(Port::Name(name)), _) if direction == DIR_INGRESS => {
                ingress_names.push((name.as_str(), spec.protocol));
            }
            (Some(Port::Name(name)), _) => {
                // Egress: the peer is the destination. A rule without peers reaches
                // every class that resolves the name (pods only: regions resolve none).
                let is_peer =
                    |id: u32| rule.peers.is_empty() || identities.binary_search(&id).is_ok();
                for class in peers.classes.iter().filter(|c| is_peer(c.id)) {
                    if let Some(port) = class.resolve(name, spec.protocol) {
                        grants.push(Grant {
                            identity: class.id,
                            len: POLICY_PREFIX_FULL,
                            protocol,
                            port,
                        });
                    }
                }
            }
        }
    }
    (grants, ingress_names)
}

/// Remove every entry of one endpoint that another of its entries covers: a strictly
/// shorter prefix of the same (direction, identity), or an `IDENTITY_ANY` prefix of the
/// same direction no longer than it. `entries` must be sorted and free of duplicates.
///
/// Covering is transitive and each chain ends at an entry nothing covers, which stays, so
/// removing all covered entries at once keeps what the datapath allows unchanged.
fn prune(entries: &mut Vec<Entry>) {
    let any: Vec<Entry> = entries
        .iter()
        .filter(|e| e.identity == IDENTITY_ANY)
        .copied()
        .collect();
    let mut kept = Vec::with_capacity(entries.len());
    for group in entries.chunk_by(|a, b| (a.direction, a.identity) == (b.direction, b.identity)) {
        // Only entries shorter than a full key can cover one of their own group; the group
        // is sorted by length, so these come first.
        let short = group.partition_point(|e| e.len < POLICY_PREFIX_FULL);
        for e in group {
            let by_own = group[..short]
                .iter()
                .take_while(|c| c.len < e.len)
                .any(|c| e.covered_by(c));
            let by_any = e.identity != IDENTITY_ANY
                && any
                    .iter()
                    .any(|c| c.direction == e.direction && e.covered_by(c));
            if !by_own && !by_any {
                kept.push(*e);
            }
        }
    }
    *entries = kept;
}
