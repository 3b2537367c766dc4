//! Conversion of Kubernetes objects (k8s-openapi types) into the agent's model.
//!
//! Every function validates the fields the agent depends on with the upstream rules and
//! returns either the model object or *all* the errors found in the object, each naming
//! its field by a JSON path such as `spec.ingress[0].from[1].ipBlock.except[0]`. Map
//! entries are addressed as `metadata.labels["app"]`.
//!
//! The functions do not care where the objects come from: standalone manifests and (later)
//! the API server share them.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::IpAddr,
};

use k8s_openapi::{
    api::{core::v1 as core, networking::v1 as net},
    apimachinery::pkg::{apis::meta::v1 as meta, util::intstr::IntOrString},
};

use super::names;
use crate::model::{
    self, IpNet, LabelSelector, Labels, NamedPort, NamespaceMatch, Operator, Peer, Port, PortSpec,
    Protocol, Requirement, Rule,
};

/// The label Kubernetes sets on every namespace, holding the namespace's name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The namespace of namespaced objects whose `metadata.namespace` is not set (as `kubectl
/// apply` does without `--namespace`).
pub const DEFAULT_NAMESPACE: &str = "default";

/// One invalid field of an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// JSON path of the field, relative to the object, like `spec.ingress[0].ports[0].port`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for FieldError {}

/// The errors found so far in one object.
#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    /// `value` if no error was recorded, else every error.
    fn finish<T>(self, value: T) -> Result<T, Vec<FieldError>> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self.0)
        }
    }
}

/// `unsupported value "x": supported values are "A", "B"`.
fn unsupported(value: &str, supported: &[&str]) -> String {
    let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
    format!(
        "unsupported value {value:?}: supported values are {}",
        list.join(", ")
    )
}

/// metadata.name, checked with `rule`; empty when missing (an error is recorded).
fn object_name(
    meta: &meta::ObjectMeta,
    rule: fn(&str) -> Result<(), String>,
    errs: &mut Errors,
) -> String {
    match meta.name.as_deref() {
        None | Some("") => {
            errs.push("metadata.name", "required");
            String::new()
        }
        Some(name) => {
            if let Err(why) = rule(name) {
                errs.push("metadata.name", format!("invalid value {name:?}: {why}"));
            }
            name.to_string()
        }
    }
}

/// metadata.namespace of a namespaced object, [`DEFAULT_NAMESPACE`] when missing.
fn object_namespace(meta: &meta::ObjectMeta, errs: &mut Errors) -> String {
    match meta.namespace.as_deref() {
        None | Some("") => DEFAULT_NAMESPACE.to_string(),
        Some(ns) => {
            if let Err(why) = names::dns1123_label(ns) {
                errs.push("metadata.namespace", format!("invalid value {ns:?}: {why}"));
            }
            ns.to_string()
        }
    }
}

/// A label map (metadata.labels or a selector's matchLabels) with every key and value
/// checked; `path` is the map's own path.
fn labels(map: Option<&BTreeMap<String, String>>, path: &str, errs: &mut Errors) -> Labels {
    let Some(map) = map else {
        return Labels::new();
    };
    for (key, value) in map {
        let field = format!("{path}[{key:?}]");
        if let Err(why) = names::qualified_name(key) {
            errs.push(&field, format!("invalid key {key:?}: {why}"));
        }
        if let Err(why) = names::label_value(value) {
            errs.push(&field, format!("invalid value {value:?}: {why}"));
        }
    }
    map.clone()
}

/// A label selector; a missing selector is the empty one (which matches everything).
/// Convert a label selector found at `path` of some other object (e.g. a RuntimePolicy),
/// appending its errors to `errs`.
pub fn label_selector_from(
    sel: Option<&meta::LabelSelector>,
    path: &str,
    errs: &mut Vec<FieldError>,
) -> LabelSelector {
    let mut e = Errors::default();
    let s = selector(sel, path, &mut e);
    errs.extend(e.0);
    s
}

fn selector(sel: Option<&meta::LabelSelector>, path: &str, errs: &mut Errors) -> LabelSelector {
    let Some(sel) = sel else {
        return LabelSelector::default();
    };
    let match_labels = labels(
        sel.match_labels.as_ref(),
        &format!("{path}.matchLabels"),
        errs,
    );
    let mut match_expressions = Vec::new();
    for (i, req) in sel.match_expressions.iter().flatten().enumerate() {
        let base = format!("{path}.matchExpressions[{i}]");
        if let Err(why) = names::qualified_name(&req.key) {
            errs.push(
                format!("{base}.key"),
                format!("invalid value {:?}: {why}", req.key),
            );
        }
        let operator = match req.operator.as_str() {
            "In" => Some(Operator::In),
            "NotIn" => Some(Operator::NotIn),
            "Exists" => Some(Operator::Exists),
            "DoesNotExist" => Some(Operator::DoesNotExist),
            other => {
                errs.push(
                    format!("{base}.operator"),
                    unsupported(other, &["In", "NotIn", "Exists", "DoesNotExist"]),
                );
                None
            }
        };
        let values = req.values.as_deref().unwrap_or_default();
        match operator {
            Some(Operator::In | Operator::NotIn) if values.is_empty() => errs.push(
                format!("{base}.values"),
                "must be specified when operator is In or NotIn",
            ),
            Some(Operator::Exists | Operator::DoesNotExist) if !values.is_empty() => errs.push(
                format!("{base}.values"),
                "may not be specified when operator is Exists or DoesNotExist",
            ),
            _ => {}
        }
        for (k, value) in values.iter().enumerate() {
            if let Err(why) = names::label_value(value) {
                errs.push(
                    format!("{base}.values[{k}]"),
                    format!("invalid value {value:?}: {why}"),
                );
            }
        }
        if let Some(operator) = operator {
            match_expressions.push(Requirement {
                key: req.key.clone(),
                operator,
                values: values.iter().cloned().collect(),
            });
        }
    }
    LabelSelector {
        match_labels,
        match_expressions,
    }
}

/// A protocol field: TCP (the default), UDP or SCTP, case-sensitive as upstream.
fn protocol(value: Option<&str>, path: &str, errs: &mut Errors) -> Option<Protocol> {
    match value {
        None | Some("TCP") => Some(Protocol::Tcp),
        Some("UDP") => Some(Protocol::Udp),
        Some("SCTP") => Some(Protocol::Sctp),
        Some(other) => {
            errs.push(path, unsupported(other, &["TCP", "UDP", "SCTP"]));
            None
        }
    }
}

/// A port number field: 1 to 65535.
fn port_number(value: i32, path: &str, errs: &mut Errors) -> Option<u16> {
    match u16::try_from(value) {
        Ok(port) if port != 0 => Some(port),
        _ => {
            errs.push(path, format!("must be between 1 and 65535, got {value}"));
            None
        }
    }
}

/// A CIDR field. Host bits are cleared ("10.0.0.1/24" becomes 10.0.0.0/24), as the
/// datapath keys on networks; anything that is not an address and a prefix length is an
/// error.
fn cidr(value: &str, path: &str, errs: &mut Errors) -> Option<IpNet> {
    if value.is_empty() {
        errs.push(path, "required");
        return None;
    }
    match parse_cidr(value) {
        Some(net) => Some(net.trunc()),
        None => {
            errs.push(
                path,
                format!(
                    "invalid CIDR {value:?}: expected an IP address and a prefix length, \
                     like \"10.0.0.0/16\" or \"fd00::/64\""
                ),
            );
            None
        }
    }
}

/// `address/prefix-length`, with the address in its strict standard form (no leading
/// zeros in IPv4 octets, which some tools read as octal) and a decimal prefix length
/// within the family's bounds.
fn parse_cidr(value: &str) -> Option<IpNet> {
    let (address, prefix_len) = value.split_once('/')?;
    if prefix_len.is_empty() || !prefix_len.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let address: IpAddr = address.parse().ok()?;
    IpNet::new(address, prefix_len.parse().ok()?).ok()
}

/// An IP address field of a pod's status.
fn ip_address(value: &str, path: &str, errs: &mut Errors) -> Option<IpAddr> {
    match value.parse() {
        Ok(ip) => Some(ip),
        Err(_) => {
            errs.push(path, format!("invalid IP address {value:?}"));
            None
        }
    }
}

/// Converts a Namespace. Its `kubernetes.io/metadata.name` label is set to its name, as
/// the API server does (policies select namespaces by it).
pub fn namespace(ns: &core::Namespace) -> Result<model::Namespace, Vec<FieldError>> {
    let mut errs = Errors::default();
    let name = object_name(&ns.metadata, names::dns1123_label, &mut errs);
    let mut labels = labels(ns.metadata.labels.as_ref(), "metadata.labels", &mut errs);
    if !name.is_empty() {
        labels.insert(NAMESPACE_NAME_LABEL.to_string(), name.clone());
    }
    errs.finish(model::Namespace { name, labels })
}

/// The annotation the kubelet puts on a static pod's mirror pod: the config hash by which
/// it names the pod (and the pod's cgroup) on the node.
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

fn is_uid_like(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

/// Converts a Pod: identity, labels, placement, addresses and named ports.
///
/// `metadata.uid` is required: it is how the kubelet names the pod's cgroup, except for a
/// static pod, whose mirror pod names the kubelet's config hash in the annotation
/// [`MIRROR_ANNOTATION`]: the model's `uid` is then that hash. Named ports
/// are collected from every container and from sidecars (init containers with
/// `restartPolicy: Always`); unnamed ports are irrelevant to policy and not checked.
pub fn pod(pod: &core::Pod) -> Result<model::Pod, Vec<FieldError>> {
    let mut errs = Errors::default();
    let meta = &pod.metadata;
    let name = object_name(meta, names::dns1123_subdomain, &mut errs);
    let namespace = object_namespace(meta, &mut errs);
    let uid = match meta.uid.as_deref() {
        None | Some("") => {
            errs.push(
                "metadata.uid",
                "required: the kubelet names the pod's cgroup after it",
            );
            String::new()
        }
        Some(uid) => {
            if !is_uid_like(uid) {
                errs.push(
                    "metadata.uid",
                    format!(
                        "invalid value {uid:?}: must be a UUID (at most 128 characters of \
                         letters, digits, '-' and '_')"
                    ),
                );
            }
            uid.to_string()
        }
    };
    // A static pod's cgroup is named by the kubelet's config hash, which its mirror pod in
    // the API carries in this annotation (its own metadata.uid is another).
    let uid = match meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(MIRROR_ANNOTATION))
    {
        Some(hash) if is_uid_like(hash) => hash.clone(),
        Some(hash) => {
            errs.push(
                format!("metadata.annotations[{MIRROR_ANNOTATION}]"),
                format!(
                    "invalid value {hash:?}: a static pod's config hash (at most 128 letters, \
                     digits, '-' and '_')"
                ),
            );
            uid
        }
        None => uid,
    };
    let labels = labels(meta.labels.as_ref(), "metadata.labels", &mut errs);

    let spec = pod.spec.as_ref();
    let node_name = spec
        .and_then(|s| s.node_name.clone())
        .filter(|n| !n.is_empty());
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let mut named_ports = Vec::new();
    if let Some(spec) = spec {
        for (i, c) in spec.containers.iter().enumerate() {
            container_ports(
                c,
                &format!("spec.containers[{i}]"),
                &mut named_ports,
                &mut errs,
            );
        }
        for (i, c) in spec.init_containers.iter().flatten().enumerate() {
            if c.restart_policy.as_deref() == Some("Always") {
                container_ports(
                    c,
                    &format!("spec.initContainers[{i}]"),
                    &mut named_ports,
                    &mut errs,
                );
            }
        }
    }
    named_ports.sort();
    named_ports.dedup();

    let status = pod.status.as_ref();
    let mut ips: Vec<IpAddr> = Vec::new();
    let pod_ips = status
        .and_then(|s| s.pod_ips.as_deref())
        .filter(|l| !l.is_empty());
    if let Some(list) = pod_ips {
        for (i, entry) in list.iter().enumerate() {
            let path = format!("status.podIPs[{i}].ip");
            if let Some(ip) = ip_address(&entry.ip, &path, &mut errs)
                && !ips.contains(&ip)
            {
                ips.push(ip);
            }
        }
    } else if let Some(ip) = status
        .and_then(|s| s.pod_ip.as_deref())
        .filter(|s| !s.is_empty())
    {
        ips.extend(ip_address(ip, "status.podIP", &mut errs));
    }
    let terminal = matches!(
        status.and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    );

    errs.finish(model::Pod {
        namespace,
        name,
        uid,
        labels,
        node_name,
        host_network,
        ips,
        named_ports,
        terminal,
    })
}

/// The named ports of one container; `base` is the container's path.
fn container_ports(c: &core::Container, base: &str, out: &mut Vec<NamedPort>, errs: &mut Errors) {
    for (j, p) in c.ports.iter().flatten().enumerate() {
        let Some(name) = p.name.as_deref().filter(|n| !n.is_empty()) else {
            continue;
        };
        let path = format!("{base}.ports[{j}]");
        let name_ok = match names::port_name(name) {
            Ok(()) => true,
            Err(why) => {
                errs.push(
                    format!("{path}.name"),
                    format!("invalid value {name:?}: {why}"),
                );
                false
            }
        };
        let port = port_number(p.container_port, &format!("{path}.containerPort"), errs);
        let protocol = protocol(p.protocol.as_deref(), &format!("{path}.protocol"), errs);
        if let (true, Some(port), Some(protocol)) = (name_ok, port, protocol) {
            out.push(NamedPort {
                name: name.to_string(),
                protocol,
                port,
            });
        }
    }
}

/// Converts a NetworkPolicy with the upstream validation rules.
///
/// Isolation follows upstream defaulting: when `spec.policyTypes` is set (non-empty) it is
/// used exactly; otherwise the policy isolates ingress, and egress too when `spec.egress`
/// holds at least one rule. A missing `spec` is the empty spec (deny all ingress to every
/// pod of the namespace), which is what the API server would store.
pub fn network_policy(np: &net::NetworkPolicy) -> Result<model::NetworkPolicy, Vec<FieldError>> {
    let (policy, errors) = network_policy_fail_closed(np);
    if errors.is_empty() {
        Ok(policy)
    } else {
        Err(errors)
    }
}

/// Converts a NetworkPolicy whatever its errors: the policy as far as it is valid, enforced
/// fail-closed (see `model::NetworkPolicy::errors`), and every error. The API server may
/// accept what the agent cannot enforce exactly; dropping such a policy would open what it
/// was meant to close, so the agent isolates instead.
///
/// - an invalid `podSelector` selects every pod of the namespace;
/// - an invalid `policyTypes` isolates both directions;
/// - a rule with any invalid field (peer or port) is left out: it allows nothing.
pub fn network_policy_fail_closed(
    np: &net::NetworkPolicy,
) -> (model::NetworkPolicy, Vec<FieldError>) {
    network_policy_with_unknown_fields(np, &[])
}

/// [`network_policy_fail_closed`] for a policy whose manifest had fields its schema does
/// not know (`unknown`: their paths, like `spec.ingress[0].fromm`). Each is an error, and
/// fails closed where it is: a rule with one allows nothing (a misspelt `from` would
/// otherwise leave a rule that allows every peer), one in `spec.podSelector` selects every
/// pod of the namespace, one elsewhere in `spec` (a misspelt `ingress` or `policyTypes`)
/// isolates both directions. Elsewhere (metadata) it is only reported.
pub fn network_policy_with_unknown_fields(
    np: &net::NetworkPolicy,
    unknown: &[String],
) -> (model::NetworkPolicy, Vec<FieldError>) {
    let mut errs = Errors::default();
    let rule_of = |dir: &str| -> BTreeSet<usize> {
        unknown
            .iter()
            .filter_map(|f| f.strip_prefix(&format!("spec.{dir}[")))
            .filter_map(|r| r.split_once(']')?.0.parse().ok())
            .collect()
    };
    let (bad_ingress, bad_egress) = (rule_of("ingress"), rule_of("egress"));
    let bad_selector = unknown.iter().any(|f| f.starts_with("spec.podSelector."));
    let bad_spec = unknown.iter().any(|f| {
        f.starts_with("spec.")
            && !f.starts_with("spec.podSelector.")
            && !f.starts_with("spec.ingress[")
            && !f.starts_with("spec.egress[")
    });
    for f in unknown {
        errs.push(f.clone(), "unknown field");
    }
    let meta = &np.metadata;
    let mut name = object_name(meta, names::dns1123_subdomain, &mut errs);
    if name.is_empty() {
        name = meta.name.clone().unwrap_or_default();
    }
    let namespace = object_namespace(meta, &mut errs);
    let empty = net::NetworkPolicySpec::default();
    let spec = np.spec.as_ref().unwrap_or(&empty);

    let before = errs.0.len();
    let mut pod_selector = selector(spec.pod_selector.as_ref(), "spec.podSelector", &mut errs);
    if errs.0.len() > before || bad_selector {
        pod_selector = LabelSelector::default();
    }

    let before = errs.0.len();
    let (mut ingress_isolation, mut egress_isolation) = match spec.policy_types.as_deref() {
        Some(types) if !types.is_empty() => {
            if types.len() > 2 {
                errs.push(
                    "spec.policyTypes",
                    "may not specify more than two policyTypes",
                );
            }
            let (mut ingress, mut egress) = (false, false);
            for (i, t) in types.iter().enumerate() {
                match t.as_str() {
                    "Ingress" => ingress = true,
                    "Egress" => egress = true,
                    other => errs.push(
                        format!("spec.policyTypes[{i}]"),
                        unsupported(other, &["Ingress", "Egress"]),
                    ),
                }
            }
            (ingress, egress)
        }
        _ => (true, spec.egress.as_ref().is_some_and(|e| !e.is_empty())),
    };
    if errs.0.len() > before || bad_spec {
        (ingress_isolation, egress_isolation) = (true, true);
    }

    let mut ingress = Vec::new();
    for (i, r) in spec.ingress.iter().flatten().enumerate() {
        let before = errs.0.len();
        let base = format!("spec.ingress[{i}]");
        let rule = rule(
            r.from.as_deref(),
            "from",
            r.ports.as_deref(),
            &base,
            &namespace,
            &mut errs,
        );
        if errs.0.len() == before && !bad_ingress.contains(&i) {
            ingress.push(rule);
        }
    }
    let mut egress = Vec::new();
    for (i, r) in spec.egress.iter().flatten().enumerate() {
        let before = errs.0.len();
        let base = format!("spec.egress[{i}]");
        let rule = rule(
            r.to.as_deref(),
            "to",
            r.ports.as_deref(),
            &base,
            &namespace,
            &mut errs,
        );
        if errs.0.len() == before && !bad_egress.contains(&i) {
            egress.push(rule);
        }
    }
    let errors = errs.0;
    (
        model::NetworkPolicy {
            namespace,
            name,
            pod_selector,
            ingress_isolation,
            egress_isolation,
            ingress,
            egress,
            errors: errors.iter().map(|e| e.to_string()).collect(),
        },
        errors,
    )
}

/// One ingress or egress rule; `peers_field` is "from" or "to", `namespace` the policy's.
fn rule(
    peers: Option<&[net::NetworkPolicyPeer]>,
    peers_field: &str,
    ports: Option<&[net::NetworkPolicyPort]>,
    base: &str,
    namespace: &str,
    errs: &mut Errors,
) -> Rule {
    let peers = peers
        .unwrap_or_default()
        .iter()
        .enumerate()
        .filter_map(|(k, p)| peer(p, &format!("{base}.{peers_field}[{k}]"), namespace, errs))
        .collect();
    let ports = ports
        .unwrap_or_default()
        .iter()
        .enumerate()
        .filter_map(|(j, p)| port_spec(p, &format!("{base}.ports[{j}]"), errs))
        .collect();
    Rule { peers, ports }
}

/// One peer: exactly an ipBlock, or a podSelector and/or a namespaceSelector.
fn peer(
    p: &net::NetworkPolicyPeer,
    path: &str,
    namespace: &str,
    errs: &mut Errors,
) -> Option<Peer> {
    let selects = p.pod_selector.is_some() || p.namespace_selector.is_some();
    match &p.ip_block {
        Some(_) if selects => {
            errs.push(
                path,
                "may not specify both ipBlock and podSelector or namespaceSelector",
            );
            None
        }
        Some(block) => ip_block(block, &format!("{path}.ipBlock"), errs),
        None if !selects => {
            errs.push(
                path,
                "must specify a peer: ipBlock, podSelector or namespaceSelector",
            );
            None
        }
        None => {
            let pods = selector(
                p.pod_selector.as_ref(),
                &format!("{path}.podSelector"),
                errs,
            );
            let namespaces = match &p.namespace_selector {
                None => NamespaceMatch::Same(namespace.to_string()),
                Some(sel) => NamespaceMatch::Selector(selector(
                    Some(sel),
                    &format!("{path}.namespaceSelector"),
                    errs,
                )),
            };
            Some(Peer::Pods { namespaces, pods })
        }
    }
}

/// An ipBlock: a CIDR and exceptions of the same family strictly inside it.
fn ip_block(b: &net::IPBlock, path: &str, errs: &mut Errors) -> Option<Peer> {
    let block = cidr(&b.cidr, &format!("{path}.cidr"), errs);
    let mut except = Vec::new();
    for (k, e) in b.except.iter().flatten().enumerate() {
        let field = format!("{path}.except[{k}]");
        let (Some(block), Some(e)) = (block, cidr(e, &field, errs)) else {
            continue;
        };
        let same_family = matches!(
            (block, e),
            (IpNet::V4(_), IpNet::V4(_)) | (IpNet::V6(_), IpNet::V6(_))
        );
        if !same_family {
            errs.push(
                field,
                format!("{e} must be of the same IP family as cidr {block}"),
            );
        } else if e.prefix_len() <= block.prefix_len() || !block.contains(&e) {
            errs.push(field, format!("{e} must be strictly within cidr {block}"));
        } else {
            except.push(e);
        }
    }
    block.map(|cidr| Peer::IpBlock { cidr, except })
}

/// One entry of a rule's ports. Every field is checked even when an earlier one failed, so
/// that all errors are reported.
fn port_spec(p: &net::NetworkPolicyPort, path: &str, errs: &mut Errors) -> Option<PortSpec> {
    let errors_before = errs.0.len();
    let protocol = protocol(p.protocol.as_deref(), &format!("{path}.protocol"), errs);
    let port_path = format!("{path}.port");
    let port = match &p.port {
        None => None,
        Some(IntOrString::Int(n)) => port_number(*n, &port_path, errs).map(Port::Number),
        Some(IntOrString::String(name)) => match names::port_name(name) {
            Ok(()) => Some(Port::Name(name.clone())),
            Err(why) => {
                errs.push(&port_path, format!("invalid port name {name:?}: {why}"));
                None
            }
        },
    };
    let end_path = format!("{path}.endPort");
    let end_port = match (p.end_port, &p.port) {
        (None, _) => None,
        (Some(_), None) => {
            errs.push(&end_path, "may not be specified when port is not specified");
            None
        }
        (Some(_), Some(IntOrString::String(_))) => {
            errs.push(&end_path, "may not be specified when port is a named port");
            None
        }
        (Some(end), Some(IntOrString::Int(start))) => match port_number(end, &end_path, errs) {
            Some(end) if i32::from(end) < *start => {
                errs.push(
                    &end_path,
                    format!("must be greater than or equal to port ({start}), got {end}"),
                );
                None
            }
            end => end,
        },
    };
    if errs.0.len() != errors_before {
        return None;
    }
    Some(PortSpec {
        protocol: protocol?,
        port,
        end_port,
    })
}

#[cfg(test)]
mod tests;

/// An IP address field; `None` (and an error) when it does not parse.
fn ip_field(value: &str, path: &str, errs: &mut Errors) -> Option<IpAddr> {
    match value.parse::<IpAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            errs.push(path, format!("invalid IP address {value:?}"));
            None
        }
    }
}

/// Default sessionAffinityConfig.clientIP.timeoutSeconds (3 hours), as upstream.
pub const DEFAULT_AFFINITY_TIMEOUT_S: u32 = 10_800;

/// Converts a Service: its frontends (cluster IPs, external IPs, load balancer IPs, node
/// ports), ports and traffic settings. Headless (`clusterIP: None`) and ExternalName
/// Services convert to a Service without cluster IPs: nothing to translate.
pub fn service(svc: &core::Service) -> Result<model::Service, Vec<FieldError>> {
    let mut errs = Errors::default();
    let meta = &svc.metadata;
    let name = object_name(meta, names::dns1123_label, &mut errs);
    let namespace = object_namespace(meta, &mut errs);
    let default = core::ServiceSpec::default();
    let spec = svc.spec.as_ref().unwrap_or(&default);
    let external_name = spec.type_.as_deref() == Some("ExternalName");
    let mut cluster_ips = Vec::new();
    if !external_name {
        let (list, path): (Vec<&str>, &str) = match &spec.cluster_ips {
            Some(ips) if !ips.is_empty() => {
                (ips.iter().map(String::as_str).collect(), "spec.clusterIPs")
            }
            _ => (
                spec.cluster_ip.as_deref().into_iter().collect(),
                "spec.clusterIP",
            ),
        };
        for (i, ip) in list.iter().enumerate() {
            if ip.is_empty() || *ip == "None" {
                continue;
            }
            let p = if path == "spec.clusterIPs" {
                format!("{path}[{i}]")
            } else {
                path.to_string()
            };
            cluster_ips.extend(ip_field(ip, &p, &mut errs));
        }
    }
    let mut external_ips = Vec::new();
    for (i, ip) in spec.external_ips.iter().flatten().enumerate() {
        external_ips.extend(ip_field(ip, &format!("spec.externalIPs[{i}]"), &mut errs));
    }
    let mut load_balancer_ips = Vec::new();
    let ingress = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref());
    for (i, ing) in ingress.into_iter().flatten().enumerate() {
        if let Some(ip) = ing.ip.as_deref().filter(|s| !s.is_empty()) {
            load_balancer_ips.extend(ip_field(
                ip,
                &format!("status.loadBalancer.ingress[{i}].ip"),
                &mut errs,
            ));
        }
    }
    let mut ports = Vec::new();
    for (i, p) in spec.ports.iter().flatten().enumerate() {
        let path = format!("spec.ports[{i}]");
        let protocol = protocol(
            p.protocol.as_deref(),
            &format!("{path}.protocol"),
            &mut errs,
        );
        let port = port_number(p.port, &format!("{path}.port"), &mut errs);
        let node_port = p
            .node_port
            .filter(|n| *n != 0)
            .and_then(|n| port_number(n, &format!("{path}.nodePort"), &mut errs));
        if let (Some(protocol), Some(port)) = (protocol, port) {
            ports.push(model::ServicePort {
                name: p.name.clone().unwrap_or_default(),
                protocol,
                port,
                node_port,
            });
        }
    }
    let affinity_timeout_s = match spec.session_affinity.as_deref() {
        None | Some("None") => None,
        Some("ClientIP") => {
            let t = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds);
            match t {
                None => Some(DEFAULT_AFFINITY_TIMEOUT_S),
                Some(t) if (1..=86_400).contains(&t) => Some(t as u32),
                Some(t) => {
                    errs.push(
                        "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                        format!("must be between 1 and 86400, got {t}"),
                    );
                    None
                }
            }
        }
        Some(other) => {
            errs.push(
                "spec.sessionAffinity",
                unsupported(other, &["None", "ClientIP"]),
            );
            None
        }
    };
    let policy = |v: Option<&str>, path: &str, errs: &mut Errors| match v {
        None | Some("Cluster") => false,
        Some("Local") => true,
        Some(other) => {
            errs.push(path, unsupported(other, &["Cluster", "Local"]));
            false
        }
    };
    let internal_local = policy(
        spec.internal_traffic_policy.as_deref(),
        "spec.internalTrafficPolicy",
        &mut errs,
    );
    let external_local = policy(
        spec.external_traffic_policy.as_deref(),
        "spec.externalTrafficPolicy",
        &mut errs,
    );
    errs.finish(model::Service {
        namespace,
        name,
        cluster_ips,
        external_ips,
        load_balancer_ips,
        ports,
        affinity_timeout_s,
        internal_local,
        external_local,
    })
}

/// The label that names an EndpointSlice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Converts an EndpointSlice. A slice without the [`SERVICE_NAME_LABEL`] (not a Service's)
/// or of the FQDN address type converts to a slice with no endpoints: nothing leads there.
pub fn endpoint_slice(
    slice: &k8s_openapi::api::discovery::v1::EndpointSlice,
) -> Result<model::EndpointSlice, Vec<FieldError>> {
    let mut errs = Errors::default();
    let meta = &slice.metadata;
    let name = object_name(meta, names::dns1123_subdomain, &mut errs);
    let namespace = object_namespace(meta, &mut errs);
    let service = meta
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_NAME_LABEL))
        .cloned()
        .unwrap_or_default();
    let family_ok = |a: &IpAddr| match slice.address_type.as_str() {
        "IPv4" => a.is_ipv4(),
        "IPv6" => a.is_ipv6(),
        _ => false,
    };
    let mut ports = Vec::new();
    let mut endpoints = Vec::new();
    match slice.address_type.as_str() {
        "IPv4" | "IPv6" => {}
        "FQDN" => {
            return errs.finish(model::EndpointSlice {
                namespace,
                name,
                service,
                ports,
                endpoints,
            });
        }
        other => errs.push("addressType", unsupported(other, &["IPv4", "IPv6", "FQDN"])),
    }
    for (i, p) in slice.ports.iter().flatten().enumerate() {
        let path = format!("ports[{i}]");
        let protocol = protocol(
            p.protocol.as_deref(),
            &format!("{path}.protocol"),
            &mut errs,
        );
        // A port without a number: every port of the endpoint (no translation target).
        let Some(n) = p.port else { continue };
        let port = port_number(n, &format!("{path}.port"), &mut errs);
        if let (Some(protocol), Some(port)) = (protocol, port) {
            ports.push(model::SlicePort {
                name: p.name.clone().unwrap_or_default(),
                protocol,
                port,
            });
        }
    }
    for (i, ep) in slice.endpoints.iter().enumerate() {
        let mut addresses = Vec::new();
        for (j, a) in ep.addresses.iter().enumerate() {
            let path = format!("endpoints[{i}].addresses[{j}]");
            if let Some(ip) = ip_field(a, &path, &mut errs) {
                if family_ok(&ip) {
                    addresses.push(ip);
                } else {
                    errs.push(
                        path,
                        format!(
                            "{a} is not of the slice's addressType {}",
                            slice.address_type
                        ),
                    );
                }
            }
        }
        let c = ep.conditions.as_ref();
        // Upstream: a missing ready condition means ready; serving defaults to ready.
        let ready = c.and_then(|c| c.ready).unwrap_or(true);
        let serving = c.and_then(|c| c.serving).unwrap_or(ready);
        let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
        endpoints.push(model::SliceEndpoint {
            addresses,
            ready,
            serving,
            terminating,
            node_name: ep.node_name.clone(),
        });
    }
    errs.finish(model::EndpointSlice {
        namespace,
        name,
        service,
        ports,
        endpoints,
    })
}
