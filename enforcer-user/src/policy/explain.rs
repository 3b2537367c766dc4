//! Why a flow is allowed or denied (`enforcer explain`): the NetworkPolicy semantics
//! evaluated from the cluster model, policy by policy and rule by rule, in each direction:
//! egress at the source pod, ingress at the destination pod.
//!
//! The compiler answers the same question with map entries, for the kernel; this answers
//! it with names, for people. The differential test (`tests/differential.rs`) holds both to
//! the same verdicts on random clusters. Service addresses are translated to their ready
//! backends first, as the agent's socket hooks translate them.

use std::{fmt, net::IpAddr};

use crate::model::{Cluster, Labels, NamespaceMatch, Peer, Pod, Port, PortSpec, Protocol};

/// One end of a flow.
#[derive(Clone, Copy, Debug)]
pub enum End<'a> {
    Pod(&'a Pod),
    /// An address that is no pod's (outside the cluster, a node, a Service frontend).
    Address(IpAddr),
}

impl End<'_> {
    fn address(&self) -> Option<IpAddr> {
        match self {
            End::Pod(p) => p.ips.first().copied(),
            End::Address(a) => Some(*a),
        }
    }
}

impl fmt::Display for End<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::Pod(p) => {
                write!(f, "{}/{}", p.namespace, p.name)?;
                match p.ips.first() {
                    Some(ip) => write!(f, " ({ip})"),
                    None => write!(f, " (no IP yet)"),
                }
            }
            End::Address(a) => write!(f, "{a}"),
        }
    }
}

/// Egress (at the source) or ingress (at the destination).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Ingress,
    Egress,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        })
    }
}

/// A rule that allows the flow: `spec.<direction>[rule]` of `policy`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleRef {
    pub policy: String,
    pub rule: usize,
}

/// The verdict in one direction, with its reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// hostNetwork pod: NetworkPolicy does not apply.
    HostNetwork,
    /// No NetworkPolicy isolates the pod in this direction.
    NotIsolated,
    /// Ingress from the pod's node (kubelet probes) always passes.
    FromNode,
    /// Allowed by these rules (every one that matches).
    AllowedBy(Vec<RuleRef>),
    /// Isolated by these policies, and no rule of theirs allows the flow.
    DefaultDeny(Vec<String>),
}

impl Verdict {
    pub fn allows(&self) -> bool {
        !matches!(self, Verdict::DefaultDeny(_))
    }
}

/// The verdict for `pod` (this end of the flow) in `direction`, the other end being
/// `remote`, protocol number `proto` (TCP 6, UDP 17, SCTP 132; others match only rules
/// without ports) and destination port `port`. `node_ips`: the pod's node's addresses.
pub fn direction(
    cluster: &Cluster,
    node_ips: &[IpAddr],
    pod: &Pod,
    direction: Direction,
    remote: IpAddr,
    proto: u8,
    port: u16,
) -> Verdict {
    if pod.host_network {
        return Verdict::HostNetwork;
    }
    let remote = remote.to_canonical();
    let isolating: Vec<_> = cluster
        .network_policies
        .values()
        .filter(|p| p.namespace == pod.namespace && p.pod_selector.matches(&pod.labels))
        .filter(|p| match direction {
            Direction::Ingress => p.ingress_isolation,
            Direction::Egress => p.egress_isolation,
        })
        .collect();
    if isolating.is_empty() {
        return Verdict::NotIsolated;
    }
    if direction == Direction::Ingress && node_ips.iter().any(|n| n.to_canonical() == remote) {
        return Verdict::FromNode;
    }
    let peer_pod = pod_at(cluster, remote);
    let destination = match direction {
        Direction::Ingress => Some(pod),
        Direction::Egress => peer_pod,
    };
    let no_labels = Labels::new();
    let peer_matches = |peer: &Peer| match peer {
        Peer::Pods { namespaces, pods } => peer_pod.is_some_and(|q| {
            let in_namespace = match namespaces {
                NamespaceMatch::Same(ns) => *ns == q.namespace,
                NamespaceMatch::Selector(s) => s.matches(
                    cluster
                        .namespaces
                        .get(&q.namespace)
                        .map_or(&no_labels, |n| &n.labels),
                ),
            };
            in_namespace && pods.matches(&q.labels)
        }),
        Peer::IpBlock { cidr, except } => {
            cidr.contains(&remote) && !except.iter().any(|e| e.contains(&remote))
        }
    };
    let port_matches = |spec: &PortSpec| {
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
    let mut allowed_by = Vec::new();
    for p in &isolating {
        let rules = match direction {
            Direction::Ingress => &p.ingress,
            Direction::Egress => &p.egress,
        };
        for (i, r) in rules.iter().enumerate() {
            if (r.peers.is_empty() || r.peers.iter().any(peer_matches))
                && (r.ports.is_empty() || r.ports.iter().any(port_matches))
            {
                allowed_by.push(RuleRef {
                    policy: format!("{}/{}", p.namespace, p.name),
                    rule: i,
                });
            }
        }
    }
    if allowed_by.is_empty() {
        Verdict::DefaultDeny(
            isolating
                .iter()
                .map(|p| format!("{}/{}", p.namespace, p.name))
                .collect(),
        )
    } else {
        Verdict::AllowedBy(allowed_by)
    }
}

/// The pod holding `addr` that policy can name as a peer (not terminal, not hostNetwork).
fn pod_at(cluster: &Cluster, addr: IpAddr) -> Option<&Pod> {
    let addr = addr.to_canonical();
    cluster
        .pods
        .values()
        .find(|q| !q.terminal && !q.host_network && q.ips.iter().any(|a| a.to_canonical() == addr))
}

/// One flow explained.
#[derive(Clone, Debug)]
pub struct Explanation<'a> {
    pub from: End<'a>,
    pub to: End<'a>,
    /// The Service the destination address was a frontend of (`ns/name`), when it was.
    pub service: Option<String>,
    pub protocol: Protocol,
    pub port: u16,
    /// At the source, when it is a pod.
    pub egress: Option<Verdict>,
    /// At the destination, when it is a pod.
    pub ingress: Option<Verdict>,
    /// Namespaces of the ends whose NetworkPolicy is audited, not enforced
    /// ([`crate::model::NETWORK_AUDIT_LABEL`]): their denials are reported and pass.
    pub audited: Vec<String>,
}

impl Explanation<'_> {
    pub fn allowed(&self) -> bool {
        self.egress.as_ref().is_none_or(Verdict::allows)
            && self.ingress.as_ref().is_none_or(Verdict::allows)
    }
}

/// Explains `from` -> `to` on `protocol`/`port`. A destination address that is a Service
/// frontend (cluster IP, external or load balancer IP, and a port of the Service) is
/// explained once per ready backend, on the backend's port, as the socket hooks translate
/// it; a frontend without a ready backend gives no explanation (the connection is refused).
pub fn explain<'a>(
    cluster: &'a Cluster,
    node_ips: &[IpAddr],
    from: End<'a>,
    to: End<'a>,
    protocol: Protocol,
    port: u16,
) -> Result<Vec<Explanation<'a>>, String> {
    let audited = |end: &End<'_>| match end {
        End::Pod(p) => {
            let (k, v) = crate::model::NETWORK_AUDIT_LABEL;
            cluster
                .namespaces
                .get(&p.namespace)
                .and_then(|n| n.labels.get(k))
                .is_some_and(|x| x == v)
                .then(|| p.namespace.clone())
        }
        End::Address(_) => None,
    };
    let one = |to: End<'a>, port: u16, service: Option<String>| {
        let to_addr = to.address().ok_or_else(|| format!("{to} has no IP yet"))?;
        let from_addr = from
            .address()
            .ok_or_else(|| format!("{from} has no IP yet"))?;
        let p = protocol.number();
        let mut audits: Vec<String> = [audited(&from), audited(&to)]
            .into_iter()
            .flatten()
            .collect();
        audits.dedup();
        Ok::<_, String>(Explanation {
            audited: audits,
            from,
            to,
            service,
            protocol,
            port,
            egress: match from {
                End::Pod(pod) => Some(direction(
                    cluster,
                    node_ips,
                    pod,
                    Direction::Egress,
                    to_addr,
                    p,
                    port,
                )),
                End::Address(_) => None,
            },
            ingress: match to {
                End::Pod(pod) => Some(direction(
                    cluster,
                    node_ips,
                    pod,
                    Direction::Ingress,
                    from_addr,
                    p,
                    port,
                )),
                End::Address(_) => None,
            },
        })
    };
    let End::Address(addr) = to else {
        return Ok(vec![one(to, port, None)?]);
    };
    let addr = addr.to_canonical();
    let frontend = cluster.services.values().find_map(|s| {
        let ips = s
            .cluster_ips
            .iter()
            .chain(&s.external_ips)
            .chain(&s.load_balancer_ips);
        if !ips.into_iter().any(|ip| ip.to_canonical() == addr) {
            return None;
        }
        let sp = s
            .ports
            .iter()
            .find(|p| p.protocol == protocol && p.port == port)?;
        Some((s, sp))
    });
    let Some((svc, sp)) = frontend else {
        return Ok(vec![one(
            pod_at(cluster, addr).map_or(to, End::Pod),
            port,
            None,
        )?]);
    };
    let name = format!("{}/{}", svc.namespace, svc.name);
    let mut out = Vec::new();
    for slice in cluster
        .endpoint_slices
        .values()
        .filter(|e| e.namespace == svc.namespace && e.service == svc.name)
    {
        let Some(target) = slice
            .ports
            .iter()
            .find(|p| p.name == sp.name && p.protocol == protocol)
        else {
            continue;
        };
        for ep in slice.endpoints.iter().filter(|e| e.ready) {
            for a in &ep.addresses {
                let backend = cluster
                    .pods
                    .values()
                    .find(|q| !q.terminal && q.ips.iter().any(|ip| ip == a))
                    .map_or(End::Address(*a), End::Pod);
                out.push(one(backend, target.port, Some(name.clone()))?);
            }
        }
    }
    Ok(out)
}

/// The readable form `enforcer explain` prints.
pub fn render(e: &Explanation<'_>) -> String {
    let proto = format!("{:?}", e.protocol).to_uppercase();
    let mut s = format!(
        "{} -> {}{} {proto}/{}: {}\n",
        e.from,
        e.to,
        e.service
            .as_ref()
            .map(|n| format!(" (backend of Service {n})"))
            .unwrap_or_default(),
        e.port,
        if e.allowed() { "ALLOWED" } else { "DENIED" }
    );
    let line = |v: &Option<Verdict>, dir: Direction, at: &End<'_>| match v {
        None => format!("  {dir}: not enforced here ({at} is not a pod of the cluster)\n"),
        Some(v) => format!("  {dir} at {at}: {}\n", describe(v, dir)),
    };
    s.push_str(&line(&e.egress, Direction::Egress, &e.from));
    s.push_str(&line(&e.ingress, Direction::Ingress, &e.to));
    for ns in &e.audited {
        let (k, v) = crate::model::NETWORK_AUDIT_LABEL;
        s.push_str(&format!(
            "  note: namespace {ns} is labelled {k}={v}: its pods' denials are reported (audit) \
             and pass\n"
        ));
    }
    s
}

fn describe(v: &Verdict, dir: Direction) -> String {
    match v {
        Verdict::HostNetwork => "allowed: a hostNetwork pod (NetworkPolicy does not apply)".into(),
        Verdict::NotIsolated => {
            format!("allowed: no NetworkPolicy selects this pod for {dir}")
        }
        Verdict::FromNode => "allowed: from the pod's own node (kubelet probes)".into(),
        Verdict::AllowedBy(rules) => format!(
            "allowed by {}",
            rules
                .iter()
                .map(|r| format!("NetworkPolicy {} rule spec.{dir}[{}]", r.policy, r.rule))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Verdict::DefaultDeny(policies) => format!(
            "denied: isolated for {dir} by NetworkPolicy {}, and no rule of theirs allows \
             this peer and port",
            policies.join(", ")
        ),
    }
}

/// The JSON form (`--output json`).
pub fn to_json(e: &Explanation<'_>) -> serde_json::Value {
    let verdict = |v: &Option<Verdict>, dir: Direction| match v {
        None => serde_json::Value::Null,
        Some(v) => serde_json::json!({
            "allowed": v.allows(),
            "reason": match v {
                Verdict::HostNetwork => "host-network",
                Verdict::NotIsolated => "not-isolated",
                Verdict::FromNode => "from-node",
                Verdict::AllowedBy(_) => "allowed-by-rule",
                Verdict::DefaultDeny(_) => "default-deny",
            },
            "rules": match v {
                Verdict::AllowedBy(r) => r
                    .iter()
                    .map(|r| serde_json::json!({"policy": r.policy, "rule": format!("spec.{dir}[{}]", r.rule)}))
                    .collect(),
                _ => Vec::new(),
            },
            "isolatedBy": match v {
                Verdict::DefaultDeny(p) => p.clone(),
                _ => Vec::new(),
            },
        }),
    };
    serde_json::json!({
        "from": e.from.to_string(),
        "to": e.to.to_string(),
        "service": e.service,
        "protocol": format!("{:?}", e.protocol).to_uppercase(),
        "port": e.port,
        "allowed": e.allowed(),
        "auditedNamespaces": e.audited,
        "egress": verdict(&e.egress, Direction::Egress),
        "ingress": verdict(&e.ingress, Direction::Ingress),
    })
}

/// What `--from`/`--to` name: a pod (`NS/NAME`) or an address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Pod(crate::model::ObjectRef),
    Address(IpAddr),
}

/// Parses `NS/POD`, `IP`, `[IPv6]`, each optionally followed by `:PORT` and then
/// `/TCP`, `/UDP` or `/SCTP`.
pub fn parse_target(s: &str) -> Result<(Target, Option<u16>, Option<Protocol>), String> {
    let mut rest = s.trim();
    let mut protocol = None;
    if let Some((head, tail)) = rest.rsplit_once('/') {
        let p = match tail.to_ascii_uppercase().as_str() {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        };
        if p.is_some() {
            protocol = p;
            rest = head;
        }
    }
    let bad_port = |p: &str| format!("{s:?}: invalid port {p:?} (1-65535)");
    let port_of = |p: &str| match p.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(bad_port(p)),
    };
    if let Some(inner) = rest.strip_prefix('[') {
        let (addr, after) = inner
            .split_once(']')
            .ok_or_else(|| format!("{s:?}: missing ']'"))?;
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?}: {addr:?} is not an IP address"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(port_of(p)?),
            None if after.is_empty() => None,
            None => return Err(format!("{s:?}: unexpected {after:?} after the address")),
        };
        return Ok((Target::Address(ip), port, protocol));
    }
    if let Ok(ip) = rest.parse::<IpAddr>() {
        return Ok((Target::Address(ip), None, protocol));
    }
    let (target, port) = match rest.rsplit_once(':') {
        Some((t, p)) => (t, Some(port_of(p)?)),
        None => (rest, None),
    };
    if let Ok(ip) = target.parse::<IpAddr>() {
        if ip.is_ipv6() {
            return Err(format!(
                "{s:?}: write an IPv6 address with a port as [ADDR]:PORT"
            ));
        }
        return Ok((Target::Address(ip), port, protocol));
    }
    match target.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => Ok((
            Target::Pod(crate::model::ObjectRef {
                namespace: ns.to_string(),
                name: name.to_string(),
            }),
            port,
            protocol,
        )),
        _ => Err(format!(
            "{s:?}: expected NAMESPACE/POD or an IP address, optionally with :PORT and \
             /TCP, /UDP or /SCTP"
        )),
    }
}

/// Resolves a target in `cluster`: a pod by name, an address to the pod holding it.
pub fn resolve<'a>(cluster: &'a Cluster, t: &Target) -> Result<End<'a>, String> {
    match t {
        Target::Pod(r) => cluster
            .pods
            .get(r)
            .map(End::Pod)
            .ok_or_else(|| format!("pod {r} is not in the manifests")),
        Target::Address(a) => Ok(pod_at(cluster, *a).map_or(End::Address(*a), End::Pod)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ObjectRef;

    #[test]
    fn targets_parse() {
        let pod = |ns: &str, n: &str| {
            Target::Pod(ObjectRef {
                namespace: ns.into(),
                name: n.into(),
            })
        };
        let ip = |s: &str| Target::Address(s.parse().unwrap());
        for (s, want) in [
            ("x/a", (pod("x", "a"), None, None)),
            ("x/a:80", (pod("x", "a"), Some(80), None)),
            ("x/a:53/udp", (pod("x", "a"), Some(53), Some(Protocol::Udp))),
            ("10.0.0.1", (ip("10.0.0.1"), None, None)),
            (
                "10.0.0.1:443/TCP",
                (ip("10.0.0.1"), Some(443), Some(Protocol::Tcp)),
            ),
            ("fd00::1", (ip("fd00::1"), None, None)),
            (
                "[fd00::1]:8080/SCTP",
                (ip("fd00::1"), Some(8080), Some(Protocol::Sctp)),
            ),
        ] {
            assert_eq!(parse_target(s), Ok(want), "{s}");
        }
        for bad in [
            "x",
            "x/a:0",
            "x/a:70000",
            "a/b/c",
            "[fd00::1",
            "fd00::1:80:x",
        ] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
    }

    const WORLD: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: x}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, uid: ua, labels: {app: a}}
spec: {nodeName: n1, containers: [{name: c}]}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: x, uid: ub, labels: {app: b}}
spec: {nodeName: n1, containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}
status: {podIP: 10.0.0.2}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b-from-a, namespace: x}
spec:
  podSelector: {matchLabels: {app: b}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: a}}}]
    ports: [{port: http}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-egress, namespace: x}
spec:
  podSelector: {matchLabels: {app: a}}
  policyTypes: [Egress]
---
apiVersion: v1
kind: Service
metadata: {name: svc-b, namespace: x}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: web, port: 80, targetPort: http}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: svc-b-1, namespace: x, labels: {kubernetes.io/service-name: svc-b}}
addressType: IPv4
ports: [{name: web, port: 8080, protocol: TCP}]
endpoints:
- addresses: [10.0.0.2]
  conditions: {ready: true}
";

    #[test]
    fn a_service_address_is_explained_per_backend_with_both_directions() {
        let mut store = crate::manifests::Store::new();
        let report = store.apply(crate::manifests::load_bytes("w.yaml", WORLD.into()));
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        let c = store.cluster();
        let a = resolve(c, &parse_target("x/a").unwrap().0).unwrap();
        let svc = resolve(c, &parse_target("10.96.0.10").unwrap().0).unwrap();
        let all = explain(c, &[], a, svc, Protocol::Tcp, 80).unwrap();
        assert_eq!(all.len(), 1);
        let e = &all[0];
        assert_eq!(e.service.as_deref(), Some("x/svc-b"));
        assert_eq!(e.port, 8080, "the backend's port");
        // Ingress at b is allowed by its rule, but a is isolated for egress with no rule.
        assert_eq!(
            e.ingress,
            Some(Verdict::AllowedBy(vec![RuleRef {
                policy: "x/b-from-a".into(),
                rule: 0
            }]))
        );
        assert_eq!(
            e.egress,
            Some(Verdict::DefaultDeny(vec!["x/a-egress".into()]))
        );
        assert!(!e.allowed());
        let text = render(e);
        assert!(
            text.starts_with(
                "x/a (10.0.0.1) -> x/b (10.0.0.2) (backend of Service x/svc-b) TCP/8080: DENIED"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "egress at x/a (10.0.0.1): denied: isolated for egress by NetworkPolicy x/a-egress"
            ),
            "{text}"
        );
        assert!(
            text.contains("allowed by NetworkPolicy x/b-from-a rule spec.ingress[0]"),
            "{text}"
        );
        let j = to_json(e);
        assert_eq!(j["allowed"], false);
        assert_eq!(j["ingress"]["rules"][0]["rule"], "spec.ingress[0]");
        // A port the Service does not have: the address itself, nobody's pod.
        let direct = explain(c, &[], a, svc, Protocol::Tcp, 81).unwrap();
        assert_eq!(direct.len(), 1);
        assert!(direct[0].ingress.is_none());
        // From the node: ingress always passes.
        let b = resolve(c, &parse_target("x/b").unwrap().0).unwrap();
        let node_ip: IpAddr = "192.0.2.1".parse().unwrap();
        let from_node = explain(c, &[node_ip], End::Address(node_ip), b, Protocol::Tcp, 9).unwrap();
        assert_eq!(from_node[0].ingress, Some(Verdict::FromNode));
    }
}
