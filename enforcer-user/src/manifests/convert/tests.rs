//! Tests of the conversion rules, one or more per validation rule, each checking the
//! field path the error names.

use std::net::IpAddr;

use serde_json::{Value, json};

use super::*;
use crate::model::{Namespace, Pod};

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn labels_of(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

// ---- NetworkPolicy helpers ----

/// A NetworkPolicy `x/p` with `spec`.
fn policy(spec: Value) -> net::NetworkPolicy {
    serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "p", "namespace": "x"},
        "spec": spec,
    }))
    .expect("decodes as a NetworkPolicy")
}

fn valid(spec: Value) -> model::NetworkPolicy {
    network_policy(&policy(spec)).expect("valid policy")
}

fn invalid(spec: Value) -> Vec<FieldError> {
    network_policy(&policy(spec)).expect_err("invalid policy")
}

/// The single error of an invalid policy; checks its field and that its message contains
/// `message`.
#[track_caller]
fn single_error(spec: Value, field: &str, message: &str) {
    let errors = invalid(spec);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].field, field, "{errors:#?}");
    assert!(
        errors[0].message.contains(message),
        "{:?} does not contain {message:?}",
        errors[0].message
    );
}

/// The only peer of the only ingress rule.
fn ingress_peer(peer: Value) -> Peer {
    let np = valid(json!({"ingress": [{"from": [peer]}]}));
    assert_eq!(np.ingress.len(), 1);
    assert_eq!(np.ingress[0].peers.len(), 1);
    np.ingress[0].peers[0].clone()
}

/// The only port of the only ingress rule.
fn ingress_port(port: Value) -> PortSpec {
    let np = valid(json!({"ingress": [{"ports": [port]}]}));
    np.ingress[0].ports[0].clone()
}

fn selector_of(labels: &[(&str, &str)]) -> LabelSelector {
    LabelSelector {
        match_labels: labels_of(labels),
        match_expressions: vec![],
    }
}

// ---- Namespace ----

fn ns(value: Value) -> Result<Namespace, Vec<FieldError>> {
    namespace(&serde_json::from_value(value).unwrap())
}

#[test]
fn namespace_gets_its_name_label() {
    let n = ns(json!({"metadata": {"name": "demo", "labels": {"team": "shop"}}})).unwrap();
    assert_eq!(n.name, "demo");
    assert_eq!(
        n.labels,
        labels_of(&[("team", "shop"), (NAMESPACE_NAME_LABEL, "demo")])
    );
    // The API server owns that label: a wrong value is corrected.
    let n =
        ns(json!({"metadata": {"name": "demo", "labels": {NAMESPACE_NAME_LABEL: "x"}}})).unwrap();
    assert_eq!(n.labels[NAMESPACE_NAME_LABEL], "demo");
}

#[test]
fn namespace_errors() {
    let errors =
        ns(json!({"metadata": {"name": "Demo_1", "labels": {"bad key": "v"}}})).unwrap_err();
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert_eq!(errors[0].field, "metadata.name");
    assert!(errors[0].message.contains("RFC 1123 label"));
    assert_eq!(errors[1].field, r#"metadata.labels["bad key"]"#);
    assert!(errors[1].message.starts_with("invalid key"));

    let errors = ns(json!({"metadata": {"labels": {"a": "b"}}})).unwrap_err();
    assert_eq!(
        errors,
        vec![FieldError {
            field: "metadata.name".into(),
            message: "required".into()
        }]
    );
}

// ---- Pod ----

fn pod_of(value: Value) -> Result<Pod, Vec<FieldError>> {
    pod(&serde_json::from_value(value).unwrap())
}

#[test]
fn pod_full() {
    let p = pod_of(json!({
        "metadata": {
            "name": "web-0", "namespace": "shop", "uid": "6f1c2a3b-0000-4000-8000-000000000001",
            "labels": {"app": "web", "app.kubernetes.io/part-of": "shop"},
        },
        "spec": {
            "nodeName": "node-1",
            "containers": [
                {"name": "web", "ports": [
                    {"name": "http", "containerPort": 80},
                    {"containerPort": 8080},
                    {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                ]},
                {"name": "metrics", "ports": [{"name": "metrics", "containerPort": 9090}]},
            ],
            "initContainers": [
                // A sidecar: its ports count.
                {"name": "proxy", "restartPolicy": "Always",
                 "ports": [{"name": "proxy", "containerPort": 15001, "protocol": "SCTP"}]},
                // A plain init container: its ports do not.
                {"name": "setup", "ports": [{"name": "setup", "containerPort": 7}]},
            ],
        },
        "status": {
            "phase": "Running",
            "podIP": "10.0.0.9",
            "podIPs": [{"ip": "10.0.0.7"}, {"ip": "fd00::7"}, {"ip": "10.0.0.7"}],
        },
    }))
    .unwrap();
    assert_eq!(p.namespace, "shop");
    assert_eq!(p.name, "web-0");
    assert_eq!(p.uid, "6f1c2a3b-0000-4000-8000-000000000001");
    assert_eq!(
        p.labels,
        labels_of(&[("app", "web"), ("app.kubernetes.io/part-of", "shop")])
    );
    assert_eq!(p.node_name.as_deref(), Some("node-1"));
    assert!(!p.host_network);
    // podIPs win over podIP; duplicates are dropped.
    assert_eq!(p.ips, vec![ip("10.0.0.7"), ip("fd00::7")]);
    let named = |name: &str, protocol, port| NamedPort {
        name: name.into(),
        protocol,
        port,
    };
    assert_eq!(
        p.named_ports,
        vec![
            named("dns", Protocol::Udp, 53),
            named("http", Protocol::Tcp, 80),
            named("metrics", Protocol::Tcp, 9090),
            named("proxy", Protocol::Sctp, 15001),
        ]
    );
    assert!(!p.terminal);
}

#[test]
fn pod_defaults_and_fallbacks() {
    let p = pod_of(json!({
        "metadata": {"name": "a", "uid": "u-1"},
        "spec": {"hostNetwork": true, "nodeName": "", "containers": []},
        "status": {"phase": "Succeeded", "podIP": "192.168.1.2"},
    }))
    .unwrap();
    assert_eq!(p.namespace, DEFAULT_NAMESPACE);
    assert!(p.host_network);
    assert_eq!(p.node_name, None);
    assert_eq!(p.ips, vec![ip("192.168.1.2")]);
    assert!(p.terminal);

    let p = pod_of(json!({"metadata": {"name": "a", "uid": "u-1"}, "status": {"phase": "Failed"}}))
        .unwrap();
    assert!(p.terminal);
    assert!(p.ips.is_empty());
    assert!(p.named_ports.is_empty());
    let p =
        pod_of(json!({"metadata": {"name": "a", "uid": "u-1"}, "status": {"phase": "Pending"}}))
            .unwrap();
    assert!(!p.terminal);
}

#[test]
fn pod_errors_are_all_reported() {
    let errors = pod_of(json!({
        "metadata": {"name": "a", "namespace": "Bad_NS", "labels": {"app": "-x"}},
        "spec": {
            "containers": [{"name": "c", "ports": [
                {"name": "http", "containerPort": 80},
                {"name": "HTTP_2", "containerPort": 0, "protocol": "tcp"},
            ]}],
            "initContainers": [{"name": "s", "restartPolicy": "Always",
                "ports": [{"name": "x", "containerPort": 70000}]}],
        },
        "status": {"podIPs": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.256"}]},
    }))
    .unwrap_err();
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "metadata.namespace",
            "metadata.uid",
            r#"metadata.labels["app"]"#,
            "spec.containers[0].ports[1].name",
            "spec.containers[0].ports[1].containerPort",
            "spec.containers[0].ports[1].protocol",
            "spec.initContainers[0].ports[0].containerPort",
            "status.podIPs[1].ip",
        ],
        "{errors:#?}"
    );
    assert!(errors[1].message.starts_with("required"));
    assert_eq!(errors[4].message, "must be between 1 and 65535, got 0");
    assert_eq!(errors[7].message, r#"invalid IP address "10.0.0.256""#);
}

#[test]
fn pod_ip_fallback_is_checked() {
    let errors = pod_of(json!({
        "metadata": {"name": "a", "uid": "u"},
        "status": {"podIP": "not-an-ip"},
    }))
    .unwrap_err();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].field, "status.podIP");
}

#[test]
fn static_pod_mirror_is_keyed_by_the_config_hash() {
    let hash = "2f1c44285aa441ea22ffa411d99649c1";
    let pod = pod_of(
        json!({"metadata": {"name": "etcd-n1", "namespace": "kube-system",
        "uid": "6f2d1c8e-0a4b-4c55-9a1e-1f3b5c7d9e0f",
        "annotations": {"kubernetes.io/config.mirror": hash}}}),
    )
    .unwrap();
    assert_eq!(pod.uid, hash);
    let errors = pod_of(json!({"metadata": {"name": "e", "uid": "u",
        "annotations": {"kubernetes.io/config.mirror": "../x"}}}))
    .unwrap_err();
    assert_eq!(
        errors[0].field,
        "metadata.annotations[kubernetes.io/config.mirror]"
    );
}

#[test]
fn pod_uid_syntax() {
    let errors = pod_of(json!({"metadata": {"name": "a", "uid": "../../etc"}})).unwrap_err();
    assert_eq!(errors[0].field, "metadata.uid");
}

// ---- NetworkPolicy: metadata and isolation ----

#[test]
fn policy_metadata() {
    let errors = network_policy(
        &serde_json::from_value(json!({"metadata": {"name": "Allow_Foo", "namespace": "x.y"}}))
            .unwrap(),
    )
    .unwrap_err();
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["metadata.name", "metadata.namespace"]);

    let np = network_policy(&serde_json::from_value(json!({"metadata": {"name": "a"}})).unwrap())
        .unwrap();
    assert_eq!(np.namespace, "default");
}

#[test]
fn missing_spec_denies_all_ingress() {
    let np = network_policy(
        &serde_json::from_value(json!({"metadata": {"name": "deny", "namespace": "x"}})).unwrap(),
    )
    .unwrap();
    assert!(np.pod_selector.is_empty());
    assert!(np.ingress_isolation);
    assert!(!np.egress_isolation);
    assert!(np.ingress.is_empty() && np.egress.is_empty());
}

#[test]
fn policy_types_defaults() {
    let isolation = |spec: Value| {
        let np = valid(spec);
        (np.ingress_isolation, np.egress_isolation)
    };
    assert_eq!(isolation(json!({})), (true, false));
    assert_eq!(isolation(json!({"ingress": [{}]})), (true, false));
    assert_eq!(isolation(json!({"egress": [{}]})), (true, true));
    assert_eq!(isolation(json!({"egress": []})), (true, false));
    assert_eq!(isolation(json!({"policyTypes": []})), (true, false));
    // Given policyTypes are used exactly.
    assert_eq!(
        isolation(json!({"policyTypes": ["Egress"], "ingress": [{}]})),
        (false, true)
    );
    assert_eq!(
        isolation(json!({"policyTypes": ["Ingress"], "egress": [{}]})),
        (true, false)
    );
    assert_eq!(
        isolation(json!({"policyTypes": ["Ingress", "Egress"]})),
        (true, true)
    );
}

#[test]
fn policy_types_errors() {
    single_error(
        json!({"policyTypes": ["Ingress", "ingress"]}),
        "spec.policyTypes[1]",
        r#"unsupported value "ingress": supported values are "Ingress", "Egress""#,
    );
    single_error(
        json!({"policyTypes": ["Ingress", "Egress", "Ingress"]}),
        "spec.policyTypes",
        "more than two",
    );
}

#[test]
fn rules_without_peers_or_ports_allow_everything() {
    let np = valid(json!({"ingress": [{}], "egress": [{"to": [], "ports": []}]}));
    assert_eq!(np.ingress, vec![Rule::default()]);
    assert_eq!(np.egress, vec![Rule::default()]);
}

// ---- Peers ----

#[test]
fn pod_selector_only_means_same_namespace() {
    assert_eq!(
        ingress_peer(json!({"podSelector": {"matchLabels": {"app": "foo"}}})),
        Peer::Pods {
            namespaces: NamespaceMatch::Same("x".into()),
            pods: selector_of(&[("app", "foo")]),
        }
    );
}

#[test]
fn namespace_selector_only_means_every_pod_of_those_namespaces() {
    assert_eq!(
        ingress_peer(json!({"namespaceSelector": {"matchLabels": {"team": "a"}}})),
        Peer::Pods {
            namespaces: NamespaceMatch::Selector(selector_of(&[("team", "a")])),
            pods: LabelSelector::default(),
        }
    );
    // The empty namespaceSelector: every namespace.
    assert_eq!(
        ingress_peer(json!({"namespaceSelector": {}})),
        Peer::Pods {
            namespaces: NamespaceMatch::Selector(LabelSelector::default()),
            pods: LabelSelector::default(),
        }
    );
}

#[test]
fn both_selectors_combine() {
    assert_eq!(
        ingress_peer(json!({
            "namespaceSelector": {"matchLabels": {"team": "a"}},
            "podSelector": {"matchLabels": {"app": "foo"}},
        })),
        Peer::Pods {
            namespaces: NamespaceMatch::Selector(selector_of(&[("team", "a")])),
            pods: selector_of(&[("app", "foo")]),
        }
    );
}

#[test]
fn egress_peers_use_to() {
    let np = valid(json!({"egress": [{"to": [{"podSelector": {}}]}]}));
    assert_eq!(
        np.egress[0].peers,
        vec![Peer::Pods {
            namespaces: NamespaceMatch::Same("x".into()),
            pods: LabelSelector::default(),
        }]
    );
}

#[test]
fn peer_must_be_exactly_one_kind() {
    single_error(
        json!({"ingress": [{"from": [{"podSelector": {}}, {}]}]}),
        "spec.ingress[0].from[1]",
        "must specify a peer",
    );
    single_error(
        json!({"egress": [{}, {"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "namespaceSelector": {}}]}]}),
        "spec.egress[1].to[0]",
        "may not specify both",
    );
    single_error(
        json!({"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}]}),
        "spec.ingress[0].from[0]",
        "may not specify both",
    );
}

// ---- ipBlock ----

#[test]
fn ip_block_ipv4_is_normalized() {
    assert_eq!(
        ingress_peer(
            json!({"ipBlock": {"cidr": "10.0.0.1/24", "except": ["10.0.0.129/25", "10.0.0.5/32"]}})
        ),
        Peer::IpBlock {
            cidr: net("10.0.0.0/24"),
            except: vec![net("10.0.0.128/25"), net("10.0.0.5/32")],
        }
    );
    assert_eq!(
        ingress_peer(json!({"ipBlock": {"cidr": "0.0.0.0/0"}})),
        Peer::IpBlock {
            cidr: net("0.0.0.0/0"),
            except: vec![],
        }
    );
}

#[test]
fn ip_block_ipv6_is_normalized() {
    assert_eq!(
        ingress_peer(json!({"ipBlock": {"cidr": "fd00::1/64", "except": ["fd00::1:abcd/112"]}})),
        Peer::IpBlock {
            cidr: net("fd00::/64"),
            except: vec![net("fd00::1:0/112")],
        }
    );
}

#[test]
fn ip_block_cidr_errors() {
    for cidr in [
        "10.0.0.0",
        "10.0.0.0/33",
        "10.0.0/8",
        "fd00::/129",
        "bogus",
        "010.0.0.0/8",
        "10.0.0.0/+8",
        "10.0.0.0/",
        "10.0.0.0/8/8",
        "fe80::1%eth0/64",
    ] {
        single_error(
            json!({"ingress": [{"from": [{"ipBlock": {"cidr": cidr}}]}]}),
            "spec.ingress[0].from[0].ipBlock.cidr",
            &format!("invalid CIDR {cidr:?}"),
        );
    }
    single_error(
        json!({"egress": [{"to": [{"podSelector": {}}, {"ipBlock": {"cidr": ""}}]}]}),
        "spec.egress[0].to[1].ipBlock.cidr",
        "required",
    );
}

#[test]
fn ip_block_except_errors() {
    let path = "spec.ingress[0].from[1].ipBlock.except";
    let block = |cidr: &str, except: Value| json!({"ingress": [{"from": [{"podSelector": {}}, {"ipBlock": {"cidr": cidr, "except": except}}]}]});
    single_error(
        block("10.0.0.0/8", json!(["10.1.0.0/16", "nope"])),
        &format!("{path}[1]"),
        "invalid CIDR",
    );
    single_error(
        block("10.0.0.0/8", json!(["fd00::/64"])),
        &format!("{path}[0]"),
        "same IP family",
    );
    single_error(
        block("fd00::/64", json!(["10.0.0.0/16"])),
        &format!("{path}[0]"),
        "same IP family",
    );
    // Equal to the cidr: not strictly inside.
    single_error(
        block("10.0.0.0/8", json!(["10.0.0.0/8"])),
        &format!("{path}[0]"),
        "strictly within",
    );
    // Equal once normalized.
    single_error(
        block("10.0.0.0/8", json!(["10.9.9.9/8"])),
        &format!("{path}[0]"),
        "strictly within",
    );
    // Outside, or wider.
    single_error(
        block("10.0.0.0/8", json!(["10.0.0.0/16", "11.0.0.0/16"])),
        &format!("{path}[1]"),
        "strictly within",
    );
    single_error(
        block("10.0.0.0/16", json!(["10.0.0.0/8"])),
        &format!("{path}[0]"),
        "strictly within",
    );
    single_error(
        block("fd00::/64", json!(["fd01::/80"])),
        &format!("{path}[0]"),
        "strictly within",
    );
}

// ---- Ports ----

#[test]
fn port_protocols() {
    assert_eq!(
        ingress_port(json!({"port": 80})),
        PortSpec {
            protocol: Protocol::Tcp,
            port: Some(Port::Number(80)),
            end_port: None
        }
    );
    assert_eq!(
        ingress_port(json!({"protocol": "UDP"})).protocol,
        Protocol::Udp
    );
    assert_eq!(
        ingress_port(json!({"protocol": "SCTP"})).protocol,
        Protocol::Sctp
    );
    assert_eq!(ingress_port(json!({"protocol": "TCP"})).port, None);
    for bad in ["tcp", "ICMP", ""] {
        single_error(
            json!({"ingress": [{"ports": [{"port": 80}, {"protocol": bad}]}]}),
            "spec.ingress[0].ports[1].protocol",
            &format!("unsupported value {bad:?}"),
        );
    }
}

#[test]
fn port_numbers() {
    assert_eq!(
        ingress_port(json!({"port": 65535})).port,
        Some(Port::Number(65535))
    );
    assert_eq!(ingress_port(json!({"port": 1})).port, Some(Port::Number(1)));
    for (bad, message) in [
        (json!(0), "must be between 1 and 65535, got 0"),
        (json!(-1), "must be between 1 and 65535, got -1"),
        (json!(70000), "must be between 1 and 65535, got 70000"),
    ] {
        let errors = invalid(json!({"egress": [{"ports": [{"port": bad}]}]}));
        assert_eq!(
            errors,
            vec![FieldError {
                field: "spec.egress[0].ports[0].port".into(),
                message: message.into()
            }]
        );
    }
}

#[test]
fn named_ports() {
    assert_eq!(
        ingress_port(json!({"port": "http", "protocol": "UDP"})),
        PortSpec {
            protocol: Protocol::Udp,
            port: Some(Port::Name("http".into())),
            end_port: None
        }
    );
    assert_eq!(
        ingress_port(json!({"port": "serve-80-sctp"})).port,
        Some(Port::Name("serve-80-sctp".into()))
    );
    for (bad, why) in [
        ("HTTP", "lowercase"),
        ("80", "at least one letter"),
        ("my--port", "consecutive hyphens"),
        ("-http", "begin or end"),
        ("abcdefghijklmnop", "no more than 15"),
        ("", "non-empty"),
    ] {
        single_error(
            json!({"ingress": [{"ports": [{"port": bad}]}]}),
            "spec.ingress[0].ports[0].port",
            why,
        );
    }
}

#[test]
fn end_ports() {
    assert_eq!(
        ingress_port(json!({"port": 8000, "endPort": 9000})),
        PortSpec {
            protocol: Protocol::Tcp,
            port: Some(Port::Number(8000)),
            end_port: Some(9000)
        }
    );
    assert_eq!(
        ingress_port(json!({"port": 53, "endPort": 53, "protocol": "UDP"})).end_port,
        Some(53)
    );
    let end = "spec.ingress[0].ports[0].endPort";
    single_error(
        json!({"ingress": [{"ports": [{"endPort": 90}]}]}),
        end,
        "may not be specified when port is not specified",
    );
    single_error(
        json!({"ingress": [{"ports": [{"port": "http", "endPort": 90}]}]}),
        end,
        "may not be specified when port is a named port",
    );
    single_error(
        json!({"ingress": [{"ports": [{"port": 90, "endPort": 80}]}]}),
        end,
        "must be greater than or equal to port (90), got 80",
    );
    single_error(
        json!({"ingress": [{"ports": [{"port": 90, "endPort": 65536}]}]}),
        end,
        "must be between 1 and 65535, got 65536",
    );
}

// ---- Selectors ----

#[test]
fn selector_conversion() {
    let np = valid(json!({"podSelector": {
        "matchLabels": {"app": "web", "example.com/tier": ""},
        "matchExpressions": [
            {"key": "env", "operator": "In", "values": ["prod", "staging", "prod"]},
            {"key": "canary", "operator": "DoesNotExist"},
            {"key": "zone", "operator": "NotIn", "values": ["a"]},
            {"key": "team", "operator": "Exists", "values": []},
        ],
    }}));
    let requirement = |key: &str, operator, values: &[&str]| Requirement {
        key: key.into(),
        operator,
        values: values.iter().map(|v| v.to_string()).collect(),
    };
    assert_eq!(
        np.pod_selector,
        LabelSelector {
            match_labels: labels_of(&[("app", "web"), ("example.com/tier", "")]),
            match_expressions: vec![
                requirement("env", Operator::In, &["prod", "staging"]),
                requirement("canary", Operator::DoesNotExist, &[]),
                requirement("zone", Operator::NotIn, &["a"]),
                requirement("team", Operator::Exists, &[]),
            ],
        }
    );
}

#[test]
fn selector_errors() {
    let expr = "spec.podSelector.matchExpressions[0]";
    let with = |req: Value| json!({"podSelector": {"matchExpressions": [req]}});
    single_error(
        with(json!({"key": "a", "operator": "In"})),
        &format!("{expr}.values"),
        "must be specified when operator is In or NotIn",
    );
    single_error(
        with(json!({"key": "a", "operator": "NotIn", "values": []})),
        &format!("{expr}.values"),
        "must be specified when operator is In or NotIn",
    );
    single_error(
        with(json!({"key": "a", "operator": "Exists", "values": ["x"]})),
        &format!("{expr}.values"),
        "may not be specified when operator is Exists or DoesNotExist",
    );
    single_error(
        with(json!({"key": "a", "operator": "DoesNotExist", "values": ["x"]})),
        &format!("{expr}.values"),
        "may not be specified",
    );
    single_error(
        with(json!({"key": "a", "operator": "Equals", "values": ["x"]})),
        &format!("{expr}.operator"),
        r#"unsupported value "Equals": supported values are "In", "NotIn", "Exists", "DoesNotExist""#,
    );
    single_error(
        with(json!({"key": "a/b/c", "operator": "Exists"})),
        &format!("{expr}.key"),
        "invalid value \"a/b/c\"",
    );
    single_error(
        with(json!({"key": "a", "operator": "In", "values": ["ok", "not ok"]})),
        &format!("{expr}.values[1]"),
        "invalid value \"not ok\"",
    );
    single_error(
        json!({"podSelector": {"matchLabels": {"bad key": "v"}}}),
        r#"spec.podSelector.matchLabels["bad key"]"#,
        "invalid key \"bad key\"",
    );
    single_error(
        json!({"podSelector": {"matchLabels": {"app": "x".repeat(64)}}}),
        r#"spec.podSelector.matchLabels["app"]"#,
        "no more than 63 characters",
    );
}

#[test]
fn selector_errors_in_peers_name_the_peer() {
    single_error(
        json!({"ingress": [{"from": [{"podSelector": {"matchExpressions": [{"key": "a", "operator": "in", "values": ["x"]}]}}]}]}),
        "spec.ingress[0].from[0].podSelector.matchExpressions[0].operator",
        "unsupported value",
    );
    single_error(
        json!({"egress": [{"to": [{"namespaceSelector": {"matchLabels": {"team": "-a"}}}]}]}),
        r#"spec.egress[0].to[0].namespaceSelector.matchLabels["team"]"#,
        "invalid value \"-a\"",
    );
}

#[test]
fn every_error_of_a_policy_is_reported() {
    let errors = invalid(json!({
        "podSelector": {"matchLabels": {"-": "x"}},
        "policyTypes": ["Sideways"],
        "ingress": [{
            "from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["192.168.0.0/16"]}}],
            "ports": [{"port": 70000, "protocol": "ICMP", "endPort": 10}],
        }],
        "egress": [{"to": [{}]}],
    }));
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            r#"spec.podSelector.matchLabels["-"]"#,
            "spec.policyTypes[0]",
            "spec.ingress[0].from[0].ipBlock.except[0]",
            "spec.ingress[0].ports[0].protocol",
            "spec.ingress[0].ports[0].port",
            "spec.ingress[0].ports[0].endPort",
            "spec.egress[0].to[0]",
        ],
        "{errors:#?}"
    );
}

#[test]
fn field_error_display() {
    let e = FieldError {
        field: "spec.ingress[0].ports[0].port".into(),
        message: "must be between 1 and 65535, got 70000".into(),
    };
    assert_eq!(
        e.to_string(),
        "spec.ingress[0].ports[0].port: must be between 1 and 65535, got 70000"
    );
}
