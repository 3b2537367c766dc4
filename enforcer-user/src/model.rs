//! The agent's own, validated picture of the cluster objects it cares about.
//!
//! Kubernetes objects (from manifests or the API server) are converted into these types by
//! `manifests::convert`, which validates every field the datapath depends on and reports
//! errors naming the object and the field. Everything downstream (the policy compiler, the
//! runtime guard compiler) works on these types only, so it never sees invalid input.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::IpAddr,
};

pub use ipnet::IpNet;

pub type Labels = BTreeMap<String, String>;

/// `namespace/name` of a namespaced object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A namespace with this label (key, value) has its pods' NetworkPolicy audited rather
/// than enforced (a staged roll-out): would-be denials are reported and pass.
pub const NETWORK_AUDIT_LABEL: (&str, &str) = ("enforcer.dev/network-policy", "audit");

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace {
    pub name: String,
    pub labels: Labels,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// IP protocol number, as the datapath keys on it.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => enforcer_common::PROTO_TCP,
            Protocol::Udp => enforcer_common::PROTO_UDP,
            Protocol::Sctp => enforcer_common::PROTO_SCTP,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }
}

/// A named `containerPort` of one of the pod's containers.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NamedPort {
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    /// How the kubelet names the pod's cgroup: metadata.uid, or for the mirror pod of a
    /// static pod the kubelet's config hash (annotation `kubernetes.io/config.mirror`).
    pub uid: String,
    pub labels: Labels,
    /// spec.nodeName; pods on this node are the local endpoints.
    pub node_name: Option<String>,
    /// spec.hostNetwork: NetworkPolicy does not apply to such pods.
    pub host_network: bool,
    /// status.podIPs (or status.podIP). Empty until the pod has a sandbox.
    pub ips: Vec<IpAddr>,
    /// Named container ports (unnamed ones are irrelevant to policy).
    pub named_ports: Vec<NamedPort>,
    /// Phase Succeeded or Failed: the pod no longer holds its IPs.
    pub terminal: bool,
}

impl Pod {
    pub fn key(&self) -> ObjectRef {
        ObjectRef {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    /// Non-empty for In/NotIn, empty for Exists/DoesNotExist (validated).
    pub values: BTreeSet<String>,
}

/// A label selector; the empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LabelSelector {
    pub match_labels: Labels,
    pub match_expressions: Vec<Requirement>,
}

impl LabelSelector {
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| {
                let v = labels.get(&r.key);
                match r.operator {
                    Operator::In => v.is_some_and(|v| r.values.contains(v)),
                    Operator::NotIn => v.is_none_or(|v| !r.values.contains(v)),
                    Operator::Exists => v.is_some(),
                    Operator::DoesNotExist => v.is_none(),
                }
            })
    }
}

/// Which namespaces a pod peer may be in.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NamespaceMatch {
    /// No namespaceSelector: the policy's own namespace.
    Same(String),
    /// namespaceSelector (empty: every namespace).
    Selector(LabelSelector),
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Peer {
    /// podSelector and/or namespaceSelector (both must match when both are given; a missing
    /// podSelector is the empty selector).
    Pods {
        namespaces: NamespaceMatch,
        pods: LabelSelector,
    },
    /// ipBlock: `cidr` minus every `except` (validated to lie strictly inside `cidr`).
    IpBlock { cidr: IpNet, except: Vec<IpNet> },
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Port {
    Number(u16),
    /// A named port, resolved against the destination pod's container ports.
    Name(String),
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortSpec {
    /// Defaults to TCP, as upstream.
    pub protocol: Protocol,
    /// None: every port of `protocol`.
    pub port: Option<Port>,
    /// Inclusive end of a range; only with a numeric `port` (validated, >= port).
    pub end_port: Option<u16>,
}

/// One ingress or egress rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rule {
    /// Empty: every peer (any address).
    pub peers: Vec<Peer>,
    /// Empty: every port of every protocol.
    pub ports: Vec<PortSpec>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkPolicy {
    pub namespace: String,
    pub name: String,
    pub pod_selector: LabelSelector,
    /// The policy isolates selected pods for ingress (policyTypes, with upstream defaults
    /// applied: Ingress always unless policyTypes says otherwise).
    pub ingress_isolation: bool,
    /// The policy isolates selected pods for egress (policyTypes, or egress rules present).
    pub egress_isolation: bool,
    pub ingress: Vec<Rule>,
    pub egress: Vec<Rule>,
    /// What could not be converted (`field: message`). Non-empty: the policy is enforced
    /// fail-closed: it isolates what it selects (every pod of its namespace when the
    /// selector itself is invalid, both directions when policyTypes is), and a rule with an
    /// error allows nothing.
    pub errors: Vec<String>,
}

impl NetworkPolicy {
    pub fn key(&self) -> ObjectRef {
        ObjectRef {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }
}

/// One port of a Service.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePort {
    /// spec.ports[].name ("" when the Service has a single unnamed port). EndpointSlice
    /// ports are matched to it by this name.
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
    /// spec.ports[].nodePort (NodePort and LoadBalancer Services).
    pub node_port: Option<u16>,
}

/// A Service, as far as translating its frontends goes. Headless and ExternalName Services
/// have no cluster IPs and need no translation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    /// spec.clusterIPs (or spec.clusterIP); empty for headless and ExternalName Services.
    pub cluster_ips: Vec<IpAddr>,
    /// spec.externalIPs.
    pub external_ips: Vec<IpAddr>,
    /// status.loadBalancer.ingress[].ip.
    pub load_balancer_ips: Vec<IpAddr>,
    pub ports: Vec<ServicePort>,
    /// sessionAffinity ClientIP: the affinity timeout in seconds (default 10800).
    pub affinity_timeout_s: Option<u32>,
    /// internalTrafficPolicy Local: cluster IPs only reach backends on the client's node.
    pub internal_local: bool,
    /// externalTrafficPolicy Local: node ports, external and load balancer IPs only reach
    /// backends on this node.
    pub external_local: bool,
}

impl Service {
    pub fn key(&self) -> ObjectRef {
        ObjectRef {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }
}

/// A port of an EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SlicePort {
    /// Matches `ServicePort::name`.
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
}

/// One endpoint of an EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SliceEndpoint {
    /// addresses (all of the slice's address family).
    pub addresses: Vec<IpAddr>,
    /// conditions.ready (absent: true).
    pub ready: bool,
    /// conditions.serving (absent: the value of ready).
    pub serving: bool,
    /// conditions.terminating (absent: false).
    pub terminating: bool,
    /// nodeName.
    pub node_name: Option<String>,
}

/// An EndpointSlice of a Service (label `kubernetes.io/service-name`). Slices of the FQDN
/// address type are not kept (nothing to translate to).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointSlice {
    pub namespace: String,
    pub name: String,
    /// The owning Service's name, in the same namespace.
    pub service: String,
    pub ports: Vec<SlicePort>,
    pub endpoints: Vec<SliceEndpoint>,
}

impl EndpointSlice {
    pub fn key(&self) -> ObjectRef {
        ObjectRef {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }
}

/// Everything the compilers need to know about the cluster, from any source.
#[derive(Clone, Debug, Default)]
pub struct Cluster {
    pub namespaces: BTreeMap<String, Namespace>,
    pub pods: BTreeMap<ObjectRef, Pod>,
    pub network_policies: BTreeMap<ObjectRef, NetworkPolicy>,
    pub services: BTreeMap<ObjectRef, Service>,
    pub endpoint_slices: BTreeMap<ObjectRef, EndpointSlice>,
}
