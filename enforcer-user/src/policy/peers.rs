//! Peer clauses, peer classes (identities) and the `IPCACHE` contents.
//!
//! A *clause* is one `Peer` of a rule that can apply on this node. Rules only ever ask
//! "does the remote address satisfy clause C?", so addresses satisfying the same clauses
//! are interchangeable and share an identity. Egress named ports add one more thing rules
//! ask about the remote side: which number a port name resolves to on the destination pod.
//! A *peer class* is therefore (set of satisfied clauses, named-port resolutions).
//!
//! Classes come from two places:
//! - pod addresses: each address of each pod that can be a peer (not terminal, not host
//!   network) gets an exact entry. Its class is the pod clauses its pod satisfies (by
//!   namespace and labels) plus the ipBlock clauses containing the address. Pods are
//!   grouped by (namespace, labels, named-port resolution) first, so label selectors are
//!   evaluated once per distinct group, not once per pod.
//! - CIDR regions: every ipBlock `cidr` and `except` prefix is a trie entry. An address
//!   outside pods whose longest matching prefix is P is in `cidr` of a clause exactly when
//!   that `cidr` contains P (the `cidr` is in the trie too, so it would otherwise be the
//!   longer match), and likewise for each `except`. So the clauses P satisfies, computed
//!   from P alone, are exactly those of every address it is the longest match for. A
//!   region satisfying no clause is `IDENTITY_WORLD`, still inserted so that it shadows
//!   the enclosing `cidr`.
//!
//! IPv4 and IPv6 share one trie (IPv4 as `::ffff:a.b.c.d`). An IPv6 block that contains
//! that IPv4-mapped range (`::/0`, say) must not match IPv4 addresses, so the range
//! itself (the trie form of `0.0.0.0/0`) is then added as a region and classified with
//! IPv4 clauses only.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use enforcer_common::{IDENTITY_WORLD, IP_HOST, IpInfo};

use super::{IpPrefix, ids::IdTable};
use crate::model::{Cluster, Labels, NamespaceMatch, Peer, Pod, Protocol};

/// Named ports as a peer class resolves them: (name, protocol, port), sorted.
type NamedPorts = Vec<(String, Protocol, u16)>;

/// The key identities are allocated for. Clauses are named by their stable ids, so a class
/// keeps its identity when unrelated clauses come and go.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct PeerClass {
    /// Stable ids of the satisfied clauses, ascending.
    clauses: Vec<u32>,
    /// (name, protocol, port) of the named ports egress rules use, as the class's pods
    /// resolve them; sorted. Empty for CIDR regions.
    named_ports: NamedPorts,
}

/// One identity of the current compile.
pub(super) struct Class {
    pub id: u32,
    /// Satisfied clauses (indexes into [`Peers::clauses`]), ascending.
    pub clauses: Vec<usize>,
    /// As in [`PeerClass`].
    pub named_ports: NamedPorts,
    /// What the class is made of, for its description.
    members: Members,
}

impl Class {
    /// The port the class's pods give `name` for `protocol`, if they have it.
    pub fn resolve(&self, name: &str, protocol: Protocol) -> Option<u16> {
        self.named_ports
            .iter()
            .find(|(n, p, _)| n == name && *p == protocol)
            .map(|&(_, _, port)| port)
    }

    /// A short description for logs: the first CIDR region and the first pod group of the
    /// class, with how many more there are, and its resolved named ports.
    pub fn describe(&self) -> String {
        let m = &self.members;
        let mut parts = Vec::new();
        if let Some(prefix) = &m.first_cidr {
            let mut s = format!("cidr {prefix}");
            if m.cidrs > 1 {
                s.push_str(&format!(" +{} prefixes", m.cidrs - 1));
            }
            parts.push(s);
        }
        if let Some((ns, labels)) = &m.first_pods {
            let mut s = format!("pods{{ns={ns}");
            for (k, v) in labels {
                s.push_str(&format!(", {k}={v}"));
            }
            s.push('}');
            if m.pod_groups > 1 {
                s.push_str(&format!(" +{} label sets", m.pod_groups - 1));
            }
            parts.push(s);
        }
        if !self.named_ports.is_empty() {
            let ports: Vec<String> = self
                .named_ports
                .iter()
                .map(|(n, p, port)| format!("{n}={}/{port}", p.name()))
                .collect();
            parts.push(format!("ports[{}]", ports.join(", ")));
        }
        parts.join(", ")
    }
}

#[derive(Default)]
struct Members {
    first_pods: Option<(String, Labels)>,
    pod_groups: usize,
    first_cidr: Option<IpPrefix>,
    cidrs: usize,
}

/// An ipBlock clause in trie form.
struct Block {
    clause: usize,
    v4: bool,
    cidr: IpPrefix,
    except: Vec<IpPrefix>,
}

impl Block {
    /// Whether every address of `p` (a region of the trie) satisfies the clause.
    fn covers(&self, p: &IpPrefix) -> bool {
        self.v4 == p.is_v4() && self.cidr.contains(p) && !self.except.iter().any(|e| e.contains(p))
    }
}

/// Longest-prefix match over the CIDR regions, as the trie will do it.
struct RegionIndex {
    /// Distinct prefix lengths, longest first.
    lens: Vec<u32>,
    /// prefix -> index of the region.
    regions: HashMap<IpPrefix, usize>,
}

impl RegionIndex {
    fn longest_match(&self, host: &IpPrefix) -> Option<usize> {
        self.lens
            .iter()
            .find_map(|&len| self.regions.get(&IpPrefix::new(len, host.addr)).copied())
    }
}

/// Pods that are indistinguishable by labels: same namespace, same labels, same named-port
/// resolution.
struct PodGroup<'a> {
    namespace: &'a str,
    labels: &'a Labels,
    named_ports: NamedPorts,
}

/// Clauses, classes and `IPCACHE` contents of one compile.
#[derive(Default)]
pub(super) struct Peers<'a> {
    /// The relevant clauses, in the order they were first seen.
    clauses: Vec<&'a Peer>,
    /// Stable id of each clause.
    stable: Vec<u32>,
    index: HashMap<&'a Peer, usize>,
    /// (name, protocol) pairs that egress rules use as ports.
    named: BTreeSet<(&'a str, Protocol)>,
    pub classes: Vec<Class>,
    class_index: HashMap<PeerClass, usize>,
    /// For each clause, the classes that satisfy it, ascending.
    pub by_clause: Vec<Vec<usize>>,
    pub ipcache: BTreeMap<IpPrefix, IpInfo>,
}

impl<'a> Peers<'a> {
    /// Register a clause (idempotent).
    pub fn add_clause(&mut self, peer: &'a Peer, ids: &mut IdTable<Peer>) {
        if !self.index.contains_key(peer) {
            self.index.insert(peer, self.clauses.len());
            self.clauses.push(peer);
            self.stable.push(ids.id(peer));
        }
    }

    /// Register a port name an egress rule uses with `protocol`.
    pub fn add_egress_name(&mut self, name: &'a str, protocol: Protocol) {
        self.named.insert((name, protocol));
    }

    /// Index of a registered clause.
    pub fn clause(&self, peer: &Peer) -> usize {
        self.index[peer]
    }

    /// Compute classes, their identities and the `IPCACHE` contents, once every clause and
    /// name is registered.
    pub fn classify(
        &mut self,
        ids: &mut IdTable<PeerClass>,
        cluster: &'a Cluster,
        node_ips: &[std::net::IpAddr],
    ) {
        let regions = self.classify_regions(ids);
        self.classify_pods(ids, cluster, &regions);
        // The node's addresses: ingress from them is always allowed (`IP_HOST`); egress to
        // them is judged like any address outside pods, so they get the identity of the
        // region they lie in (a /128 of their own keeps the flag from shadowing anything).
        for ip in node_ips {
            let host = IpPrefix::host(*ip);
            let identity = match self.ipcache.get(&host) {
                Some(info) => info.identity,
                None => self
                    .ipcache
                    .iter()
                    .filter(|(k, _)| k.contains(&host))
                    .max_by_key(|(k, _)| k.len)
                    .map_or(IDENTITY_WORLD, |(_, v)| v.identity),
            };
            self.ipcache.insert(
                host,
                IpInfo {
                    identity,
                    flags: IP_HOST,
                    ..IpInfo::default()
                },
            );
        }
        self.by_clause = vec![Vec::new(); self.clauses.len()];
        for (ci, class) in self.classes.iter().enumerate() {
            for &clause in &class.clauses {
                self.by_clause[clause].push(ci);
            }
        }
    }

    /// The ipBlock regions: their `IPCACHE` entries and, for the pod addresses, an index
    /// giving each address's ipBlock clauses.
    fn classify_regions(&mut self, ids: &mut IdTable<PeerClass>) -> (RegionIndex, Vec<Vec<usize>>) {
        let blocks: Vec<Block> = self
            .clauses
            .iter()
            .enumerate()
            .filter_map(|(clause, peer)| match peer {
                Peer::IpBlock { cidr, except } => Some(Block {
                    clause,
                    v4: matches!(cidr, ipnet::IpNet::V4(_)),
                    cidr: IpPrefix::from_net(cidr),
                    except: except.iter().map(IpPrefix::from_net).collect(),
                }),
                Peer::Pods { .. } => None,
            })
            .collect();
        let mut prefixes: BTreeSet<IpPrefix> = blocks
            .iter()
            .flat_map(|b| std::iter::once(b.cidr).chain(b.except.iter().copied()))
            .collect();
        let v4_all = IpPrefix::v4_all();
        if prefixes.iter().any(|p| p.contains(&v4_all)) {
            prefixes.insert(v4_all);
        }

        let mut index = RegionIndex {
            lens: Vec::new(),
            regions: HashMap::new(),
        };
        let mut region_clauses = Vec::with_capacity(prefixes.len());
        for p in prefixes {
            let clauses: Vec<usize> = blocks
                .iter()
                .filter(|b| b.covers(&p))
                .map(|b| b.clause)
                .collect();
            let identity = if clauses.is_empty() {
                IDENTITY_WORLD
            } else {
                let ci = self.class(ids, clauses.clone(), Vec::new());
                let m = &mut self.classes[ci].members;
                m.first_cidr.get_or_insert(p);
                m.cidrs += 1;
                self.classes[ci].id
            };
            self.ipcache.insert(
                p,
                IpInfo {
                    identity,
                    ..IpInfo::default()
                },
            );
            index.regions.insert(p, region_clauses.len());
            region_clauses.push(clauses);
            index.lens.push(p.len);
        }
        index.lens.sort_unstable_by(|a, b| b.cmp(a));
        index.lens.dedup();
        (index, region_clauses)
    }

    /// Exact entries for the addresses of every pod that can be a peer.
    fn classify_pods(
        &mut self,
        ids: &mut IdTable<PeerClass>,
        cluster: &'a Cluster,
        (regions, region_clauses): &(RegionIndex, Vec<Vec<usize>>),
    ) {
        // Group the pods; remember each pod's group, in name order.
        let mut groups: Vec<PodGroup<'a>> = Vec::new();
        let mut group_index: HashMap<(&str, &Labels, NamedPorts), usize> = HashMap::new();
        let mut pods: Vec<(&Pod, usize)> = Vec::new();
        for pod in cluster.pods.values() {
            if pod.terminal || pod.host_network || pod.ips.is_empty() {
                continue;
            }
            let key = (pod.namespace.as_str(), &pod.labels, self.resolve_names(pod));
            let gi =
                *group_index
                    .entry(key)
                    .or_insert_with_key(|(namespace, labels, named_ports)| {
                        groups.push(PodGroup {
                            namespace,
                            labels,
                            named_ports: named_ports.clone(),
                        });
                        groups.len() - 1
                    });
            pods.push((pod, gi));
        }

        // The pod clauses each group satisfies. The namespace part is evaluated once per
        // namespace, the label part once per group.
        let mut by_namespace: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut group_clauses: Vec<Vec<usize>> = Vec::with_capacity(groups.len());
        for group in &groups {
            let in_namespace = by_namespace.entry(group.namespace).or_insert_with(|| {
                // A namespace without an object (manifests that omit it) still has the
                // label Kubernetes puts on every namespace.
                let implicit: Labels = [(
                    crate::manifests::convert::NAMESPACE_NAME_LABEL.to_string(),
                    group.namespace.to_string(),
                )]
                .into();
                let ns_labels = cluster
                    .namespaces
                    .get(group.namespace)
                    .map_or(&implicit, |n| &n.labels);
                (0..self.clauses.len())
                    .filter(|&i| match self.clauses[i] {
                        Peer::Pods {
                            namespaces: NamespaceMatch::Same(ns),
                            ..
                        } => ns == group.namespace,
                        Peer::Pods {
                            namespaces: NamespaceMatch::Selector(sel),
                            ..
                        } => sel.matches(ns_labels),
                        Peer::IpBlock { .. } => false,
                    })
                    .collect()
            });
            group_clauses.push(
                in_namespace
                    .iter()
                    .copied()
                    .filter(|&i| match self.clauses[i] {
                        Peer::Pods { pods, .. } => pods.matches(group.labels),
                        Peer::IpBlock { .. } => false,
                    })
                    .collect(),
            );
        }

        // Exact entries override regions; when two pods report the same address, the
        // first in name order keeps it.
        let mut claimed: HashSet<IpPrefix> = HashSet::new();
        // (group, region) -> class: the class depends on nothing else.
        let mut cache: HashMap<(usize, Option<usize>), usize> = HashMap::new();
        // (group, class) pairs already counted in the class's members.
        let mut counted: HashSet<(usize, usize)> = HashSet::new();
        for (pod, gi) in pods {
            for ip in &pod.ips {
                let host = IpPrefix::host(*ip);
                if !claimed.insert(host) {
                    continue;
                }
                let region = regions.longest_match(&host);
                let ci = match cache.get(&(gi, region)) {
                    Some(&ci) => ci,
                    None => {
                        let mut clauses = group_clauses[gi].clone();
                        if let Some(r) = region {
                            clauses.extend(&region_clauses[r]);
                            clauses.sort_unstable();
                            clauses.dedup();
                        }
                        let group = &groups[gi];
                        let ci = self.class(ids, clauses, group.named_ports.clone());
                        // A group reaching a class through several regions counts once.
                        if counted.insert((gi, ci)) {
                            let m = &mut self.classes[ci].members;
                            m.pod_groups += 1;
                            m.first_pods.get_or_insert_with(|| {
                                (group.namespace.to_string(), group.labels.clone())
                            });
                        }
                        cache.insert((gi, region), ci);
                        ci
                    }
                };
                self.ipcache.insert(
                    host,
                    IpInfo {
                        identity: self.classes[ci].id,
                        ..IpInfo::default()
                    },
                );
            }
        }
    }

    /// How `pod` resolves the port names egress rules use.
    fn resolve_names(&self, pod: &Pod) -> NamedPorts {
        self.named
            .iter()
            .filter_map(|&(name, protocol)| {
                pod.named_ports
                    .iter()
                    .find(|np| np.name == name && np.protocol == protocol)
                    .map(|np| (name.to_string(), protocol, np.port))
            })
            .collect()
    }

    /// The class of (`clauses`, `named_ports`), created (with its identity) if new.
    /// `clauses` must be ascending.
    fn class(
        &mut self,
        ids: &mut IdTable<PeerClass>,
        clauses: Vec<usize>,
        named_ports: NamedPorts,
    ) -> usize {
        let mut stable: Vec<u32> = clauses.iter().map(|&c| self.stable[c]).collect();
        stable.sort_unstable();
        let key = PeerClass {
            clauses: stable,
            named_ports,
        };
        if let Some(&ci) = self.class_index.get(&key) {
            return ci;
        }
        let id = ids.id(&key);
        let ci = self.classes.len();
        self.classes.push(Class {
            id,
            clauses,
            named_ports: key.named_ports.clone(),
            members: Members::default(),
        });
        self.class_index.insert(key, ci);
        ci
    }
}
