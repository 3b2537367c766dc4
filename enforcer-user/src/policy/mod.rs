//! NetworkPolicy compiler (pure): cluster model -> desired BPF map state, and diffs.
//!
//! The datapath (`enforcer-ebpf/src/net.rs`) answers "may this packet pass?" with three
//! lookups and no loops: the peer address in the `IPCACHE` LPM trie gives a peer
//! *identity*, then the `POLICY` LPM trie is probed with
//! `(endpoint, identity, direction, protocol, port)` and with the same key carrying
//! `IDENTITY_ANY`. This module turns the Kubernetes NetworkPolicy semantics into entries
//! for those tries.
//!
//! # Identities
//!
//! Every `Peer` of every rule that can apply to a pod of this node is a *clause*. Two
//! addresses that satisfy exactly the same clauses (and, for egress named ports, resolve
//! the same port names to the same numbers) can never be told apart by any rule, so they
//! share an identity: an identity is an interned *peer class*. Pod addresses get exact
//! (/128) entries; addresses outside pods are classified by the ipBlock prefixes that
//! appear in the policies (see [`peers`]). The node's own addresses are flagged `IP_HOST`:
//! ingress from them always passes (kubelet probes); egress to them is judged by the
//! identity of the ipBlock region they lie in, like any other address.
//!
//! # Policy entries
//!
//! For each local pod, each policy selecting it and each rule of a direction the policy
//! isolates, the compiler emits one entry per (peer identity, port prefix): prefix 72 for
//! "any protocol", 80 for "any port of a protocol", 96 for one port and 80+k for an
//! aligned block of an `endPort` range (see [`rules`]). Entries that another entry
//! already covers are dropped, so the map holds no redundant keys.
//!
//! # Stability
//!
//! A [`Compiler`] remembers the numbers it handed out: endpoint ids (per pod uid),
//! identities (per peer class) and policy indexes (per policy) stay the same across
//! `compile()` calls for as long as their key keeps existing, so a small change in the
//! cluster produces a small [`diff`]. Numbers of keys that disappeared are not handed out
//! again (until the 32-bit space is exhausted, which does not happen in practice).

use std::{
    collections::BTreeMap,
    fmt,
    net::{IpAddr, Ipv6Addr},
};

use enforcer_common::{Endpoint, IpInfo, PolicyKey, PolicyValue};

use crate::model::{Cluster, ObjectRef, Peer};

mod compile;
pub mod explain;
mod ids;
mod peers;
mod prefix;
mod rules;
pub mod services;
#[cfg(test)]
mod tests;

use ids::IdTable;
use peers::PeerClass;
pub use prefix::port_range_prefixes;

/// What `compile()` works from.
pub struct CompileInput<'a> {
    pub cluster: &'a Cluster,
    /// Name of this node: pods with this `spec.nodeName` are the local endpoints.
    pub node_name: &'a str,
    /// This node's own addresses (flagged `IP_HOST`; never Service frontends).
    pub node_ips: &'a [IpAddr],
}

/// A pod of this node and its entry in the `ENDPOINTS` map.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalEndpoint {
    pub pod: ObjectRef,
    pub endpoint: Endpoint,
}

/// A key of the `IPCACHE` LPM trie: `len` significant bits of `addr`.
///
/// IPv4 uses the IPv4-mapped form, so an IPv4 `/n` has `len == 96 + n`. Bits beyond `len`
/// are always zero (constructors enforce it), so equal prefixes compare equal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpPrefix {
    /// 0..=128.
    pub len: u32,
    pub addr: [u8; 16],
}

/// A key of the `POLICY` LPM trie: `len` significant bits of `key` (72, 80, 80+k or 96,
/// see `enforcer_common::PolicyKey`). Bits beyond `len` are always zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyPrefix {
    pub len: u32,
    pub key: PolicyKey,
}

/// The map contents the cluster calls for, plus names for the numbers in them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Desired {
    /// pod uid -> endpoint (guards_* left 0; another compiler fills them)
    pub endpoints: BTreeMap<String, LocalEndpoint>,
    pub ipcache: BTreeMap<IpPrefix, IpInfo>,
    pub policy: BTreeMap<PolicyPrefix, PolicyValue>,
    /// PolicyValue::policy index -> the NetworkPolicy it came from
    pub policy_names: BTreeMap<u32, ObjectRef>,
    /// identity -> short human description for logs, e.g. "pods{ns=x, app=a}" or "cidr 10.0.0.0/8"
    pub identities: BTreeMap<u32, String>,
}

/// Compiles cluster models into [`Desired`] map states, keeping the numbers it allocates
/// stable from one call to the next.
pub struct Compiler {
    /// pod uid -> endpoint id (from 1).
    endpoint_ids: IdTable<String>,
    /// NetworkPolicy -> policy index (from 1).
    policy_ids: IdTable<ObjectRef>,
    /// Peer clause -> clause id. Clause ids are what peer classes are made of; keeping them
    /// stable keeps identities stable when unrelated policies come and go.
    clause_ids: IdTable<Peer>,
    /// Peer class -> identity (from `IDENTITY_FIRST_DYNAMIC`, never `IDENTITY_ANY`).
    identity_ids: IdTable<PeerClass>,
}

impl Default for Compiler {
    fn default() -> Self {
        Self::new()
    }
}

impl Compiler {
    pub fn new() -> Self {
        use enforcer_common::{IDENTITY_ANY, IDENTITY_FIRST_DYNAMIC};
        Self {
            endpoint_ids: IdTable::new(1, u32::MAX),
            policy_ids: IdTable::new(1, u32::MAX),
            clause_ids: IdTable::new(0, u32::MAX),
            identity_ids: IdTable::new(IDENTITY_FIRST_DYNAMIC, IDENTITY_ANY - 1),
        }
    }

    /// Reuse endpoint ids of an earlier run (pod uid -> id), e.g. read back from the pinned
    /// ENDPOINTS map after an agent restart: conntrack entries are keyed by endpoint id, so
    /// keeping them keeps established flows' replies flowing.
    pub fn seed_endpoint_ids(&mut self, ids: impl IntoIterator<Item = (String, u32)>) {
        for (uid, id) in ids {
            self.endpoint_ids.seed(uid, id);
        }
    }

    /// The complete desired map state for `input`. Numbers of objects that no longer exist
    /// are forgotten (and not reused).
    pub fn compile(&mut self, input: &CompileInput) -> Desired {
        let desired = compile::compile(self, input);
        self.endpoint_ids.finish_round();
        self.policy_ids.finish_round();
        self.clause_ids.finish_round();
        self.identity_ids.finish_round();
        desired
    }
}

/// The changes that turn one map state into another.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Diff<K, V> {
    /// Keys that are new or whose value changed, with the new value.
    pub upserts: Vec<(K, V)>,
    /// Keys that are gone.
    pub deletes: Vec<K>,
}

/// What to write and remove to go from `old` to `new` (both in key order).
pub fn diff<K: Ord + Clone, V: PartialEq + Clone>(
    old: &BTreeMap<K, V>,
    new: &BTreeMap<K, V>,
) -> Diff<K, V> {
    let upserts = new
        .iter()
        .filter(|(k, v)| old.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let deletes = old
        .keys()
        .filter(|k| !new.contains_key(*k))
        .cloned()
        .collect();
    Diff { upserts, deletes }
}

impl fmt::Display for IpPrefix {
    /// `10.0.0.0/8` for IPv4-mapped prefixes of length >= 96, `fd00::/64` otherwise.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v6 = Ipv6Addr::from(self.addr);
        match (self.is_v4(), v6.to_ipv4_mapped()) {
            (true, Some(v4)) => write!(f, "{v4}/{}", self.len - prefix::V4_MAPPED_LEN),
            _ => write!(f, "{v6}/{}", self.len),
        }
    }
}
