//! Hand-built clusters, one NetworkPolicy feature at a time. Every traffic question goes
//! through `Check`, which asks both the simulated datapath and the reference semantics and
//! fails on disagreement; the expected answers are then asserted explicitly.

use enforcer_common::{
    DIR_EGRESS, DIR_INGRESS, EP_EGRESS_ISOLATED, EP_INGRESS_ISOLATED, EP_NET_UNMANAGED,
    IDENTITY_ANY, IDENTITY_FIRST_DYNAMIC, IDENTITY_WORLD, IP_HOST, IpInfo, POLICY_PREFIX_ANY_PORT,
    POLICY_PREFIX_ANY_PROTO, PROTO_ICMP, PROTO_SCTP, PROTO_TCP, PROTO_UDP, PolicyValue,
};

use super::harness::*;
use crate::{
    model::{
        NamedPort, Operator,
        Protocol::{self, Sctp, Tcp, Udp},
    },
    policy::{Compiler, IpPrefix, port_range_prefixes},
};

fn np(name: &str, protocol: Protocol, port: u16) -> NamedPort {
    NamedPort {
        name: name.into(),
        protocol,
        port,
    }
}

/// Namespaces a (team=x), b (team=y), c (team=x); a server and a client in a, a client
/// and another pod in b.
fn base() -> World {
    let mut w = World::new();
    w.ns("a", &[("team", "x")])
        .ns("b", &[("team", "y")])
        .ns("c", &[("team", "x")]);
    w.pod("a/server", &[("app", "server")], &["10.0.0.1"]);
    w.pod("a/client", &[("app", "client")], &["10.0.0.2"]);
    w.pod("a/other", &[("app", "other")], &["10.0.0.3"]);
    w.remote_pod("b/client", &[("app", "client")], &["10.0.1.2"]);
    w.remote_pod("b/other", &[("app", "other")], &["10.0.1.3"]);
    w.remote_pod("c/client", &[("app", "client")], &["10.0.2.2"]);
    w
}

const SERVER: &str = "uid-a-server";

#[test]
fn no_policy_nothing_isolated() {
    let w = base();
    let d = w.compile();
    assert_eq!(d.endpoints.len(), 3, "only local pods are endpoints");
    assert!(d.endpoints.values().all(|e| e.endpoint.flags == 0));
    assert!(d.policy.is_empty());
    let c = w.check(&d);
    assert!(c.ingress("a/server", "8.8.8.8", Tcp, 22));
    assert!(c.egress("a/server", "8.8.8.8", Udp, 53));
}

#[test]
fn default_deny_ingress() {
    let mut w = base();
    w.policy("a/deny", sel(&[("app", "server")]), Some(vec![]), None);
    let d = w.compile();
    assert_eq!(d.endpoints[SERVER].endpoint.flags, EP_INGRESS_ISOLATED);
    assert_eq!(d.endpoints["uid-a-client"].endpoint.flags, 0);
    assert!(
        d.policy.is_empty(),
        "isolated without rules: no entries at all"
    );
    let c = w.check(&d);
    assert!(!c.ingress("a/server", "10.0.0.2", Tcp, 80));
    assert!(!c.ingress("a/server", "8.8.8.8", Udp, 53));
    assert!(!c.raw("a/server", DIR_INGRESS, "10.0.1.2", PROTO_ICMP, 0));
    assert!(
        c.egress("a/server", "8.8.8.8", Tcp, 443),
        "egress not isolated"
    );
    assert!(
        c.ingress("a/server", "192.168.0.1", Tcp, 80),
        "the node always passes"
    );
    assert!(c.ingress("a/client", "10.0.0.1", Tcp, 80), "not selected");
}

#[test]
fn default_deny_egress() {
    let mut w = base();
    w.policy("a/deny", sel(&[]), None, Some(vec![]));
    let d = w.compile();
    for e in d.endpoints.values() {
        assert_eq!(e.endpoint.flags, EP_EGRESS_ISOLATED);
    }
    assert!(d.policy.is_empty());
    let c = w.check(&d);
    assert!(!c.egress("a/client", "10.0.0.1", Tcp, 80));
    assert!(!c.egress("a/client", "8.8.8.8", Udp, 53));
    assert!(
        !c.egress("a/client", "fd00:ff::1", Udp, 53),
        "egress to the node is judged like any address"
    );
    assert!(c.ingress("a/server", "10.0.0.2", Tcp, 80));
}

#[test]
fn default_deny_both() {
    let mut w = base();
    w.policy("a/deny", sel(&[]), Some(vec![]), Some(vec![]));
    let d = w.compile();
    for e in d.endpoints.values() {
        assert_eq!(e.endpoint.flags, EP_INGRESS_ISOLATED | EP_EGRESS_ISOLATED);
    }
    let c = w.check(&d);
    assert!(!c.ingress("a/server", "10.0.0.2", Tcp, 80));
    assert!(!c.egress("a/client", "10.0.0.1", Tcp, 80));
}

#[test]
fn rules_of_a_direction_not_in_policy_types_are_ignored() {
    let mut w = base();
    // policyTypes: [Egress], yet an ingress rule is present.
    let p = w.policy(
        "a/egress-only",
        sel(&[("app", "server")]),
        None,
        Some(vec![]),
    );
    p.ingress = vec![rule(vec![], vec![])];
    let d = w.compile();
    assert_eq!(d.endpoints[SERVER].endpoint.flags, EP_EGRESS_ISOLATED);
    assert!(d.policy.is_empty());
    let c = w.check(&d);
    assert!(c.ingress("a/server", "8.8.8.8", Tcp, 80));
    assert!(!c.egress("a/server", "8.8.8.8", Tcp, 80));
}

#[test]
fn allow_from_pod_selector_same_namespace() {
    let mut w = base();
    w.policy(
        "a/allow",
        sel(&[("app", "server")]),
        Some(vec![rule(
            vec![pods_in("a", sel(&[("app", "client")]))],
            vec![],
        )]),
        None,
    );
    let d = w.compile();
    let c = w.check(&d);
    assert!(c.ingress("a/server", "10.0.0.2", Tcp, 80));
    assert!(c.ingress("a/server", "10.0.0.2", Udp, 5000));
    assert!(c.raw("a/server", DIR_INGRESS, "10.0.0.2", PROTO_ICMP, 0));
    assert!(
        !c.ingress("a/server", "10.0.1.2", Tcp, 80),
        "same labels, other namespace"
    );
    assert!(!c.ingress("a/server", "10.0.0.3", Tcp, 80), "other labels");
    assert!(!c.ingress("a/server", "8.8.8.8", Tcp, 80));
    // One identity for the client, one entry: any protocol.
    let client_id = c.identity("10.0.0.2");
    assert!(client_id >= IDENTITY_FIRST_DYNAMIC);
    assert_eq!(
        entries_of(&d, SERVER),
        [(client_id, DIR_INGRESS, POLICY_PREFIX_ANY_PROTO, 0, 0)].into()
    );
    assert_eq!(d.identities[&client_id], "pods{ns=a, app=client}");
}

#[test]
fn namespace_selector_only() {
    let mut w = base();
    w.remote_pod("nowhere/client", &[("app", "client")], &["10.0.9.2"]);
    w.policy(
        "a/allow",
        sel(&[("app", "server")]),
        Some(vec![rule(vec![namespaces(sel(&[("team", "x")]))], vec![])]),
        None,
    );
    let d = w.compile();
    let c = w.check(&d);
    assert!(
        c.ingress("a/server", "10.0.0.3", Tcp, 80),
        "own namespace has team=x"
    );
    assert!(
        c.ingress("a/server", "10.0.2.2", Tcp, 80),
        "namespace c has team=x"
    );
    assert!(
        !c.ingress("a/server", "10.0.1.2", Tcp, 80),
        "namespace b has team=y"
    );
    assert!(
        !c.ingress("a/server", "10.0.9.2", Tcp, 80),
        "unknown namespace: no labels"
    );
}

#[test]
fn namespace_and_pod_selector_in_one_peer_is_and() {
    let mut w = base();
    w.policy(
        "a/allow",
        sel(&[("app", "server")]),
        Some(vec![rule(
            vec![ns_and_pods(
                sel(&[("team", "y")]),
                sel(&[("app", "client")]),
            )],
            vec![],
        )]),
        None,
    );
    let d = w.compile();
    let c = w.check(&d);
    assert!(c.ingress("a/server", "10.0.1.2", Tcp, 80));
    assert!(
        !c.ingress("a/server", "10.0.1.3", Tcp, 80),
        "namespace ok, labels not"
    );
    assert!(
        !c.ingress("a/server", "10.0.0.2", Tcp, 80),
        "labels ok, namespace not"
    );
    assert!(!c.ingress("a/server", "10.0.2.2", Tcp, 80));
}

#[test]
fn namespace_and_pod_selector_in_two_peers_is_or() {
    let mut w = base();
    w.policy(
        "a/allow",
        sel(&[("app", "server")]),
        Some(vec![rule(
            vec![
                namespaces(sel(&[("team", "y")])),
                pods_in("a", sel(&[("app", "client")])),
            ],
            vec![],
        )]),
        None,
    );
    let d = w.compile();
    let c = w.check(&d);
    assert!(c.ingress("a/server", "10.0.1.2", Tcp, 80));
    assert!(
        c.ingress("a/server", "10.0.1.3", Tcp, 80),
        "any pod of namespace b"
    );
    assert!(
        c.ingress("a/server", "10.0.0.2", Tcp, 80),
        "client of own namespace"
    );
    assert!(!c.ingress("a/server", "10.0.0.3", Tcp, 80));
    assert!(!c.ingress("a/server", "10.0.2.2", Tcp, 80));
}

#[test]
fn empty_pod_selector_peer_is_whole_own_namespace() {
    let mut w = base();
    w.policy(
        "a/allow",
        sel(&[("app", "server")]),
        Some(vec![rule(vec![pods_in("a", sel(&[]))], vec![])]),
        None,
    );
    let d = w.compile();
    let c = w.check(&d);
    assert!(c.ingress("a/server", "10.0.0.2", Tcp, 80));
    assert!(c.ingress("a/server", "10.0.0.3", Tcp, 80));
    assert!(!c.ingress("a/server", "10.0.1.2", Tcp, 80));
    assert!(!c.ingress("a/server", "8.8.8.8", Tcp, 80));
}

#[test]
fn empty_namespace_selector_is_every_pod_but_not_the_world() {
    let mut w = base();
    w.remote_pod("nowhere/x", &[], &["10.0.9.2"]);
    w.remote_pod("b/gone", &[], &["10.0.9.3"]).terminal = true;
    w.remote_pod("b/hostnet", &[], &["10.0.9.4"]).host_network = true;
    w.policy(
        "a/allow",
        sel(&[("app", "server")]),
        Some(vec![rule(vec![namespaces(sel(&[]))], vec![tcp(80)])]),
        None,
    );
    let d = w.compile();
    let c = w.check(&d);
    for peer in ["10.0.0.2", "10.0.1.3", "10.0.2.2", "10.0.9.2"] {
        assert!(c.ingress("a/server", peer, Tcp, 80), "{peer}");
        assert!(!c.ingress("a/server", peer, Tcp, 81), "{peer}");
    }
    assert!(
        !c.ingress("a/server", "10.0.9.3", Tcp, 80),
        "terminal pod is no peer"
    );
    assert!(
        !c.ingress("a/server", "10.0.9.4", Tcp, 80),
        "host-network pod is no peer"
    );
    assert!(!c.ingress("a/server", "8.8.8.8", Tcp, 80));
}

#[test]
fn match_expressions_in_selection_and_peers() {
    let mut w = World::new();
    w.ns("a", &[("env", "prod")]).ns("b", &[("env", "dev")]);
    w.pod("a/fe", &[("tier", "fe")], &["10.0.0.1"]);
    w.pod("a/be", &[("tier", "be"), ("env", "prod")], &["10.0.0.2"]);
    w.pod("a/db", &[("tier", "db")], &["10.0.0.3"]);
    w.pod("a/bare", &[], &["10.0.0.4"]);
    w.remote_pod("b/canary", &[("tier", "fe"), ("canary", "")], &["10.0.1.1"]);
    w.remote_pod("b/plain", &[("tier", "fe")], &["10.0.1.2"]);
    // Selects tier in (fe, be) without env=prod: only a/fe.
    w.policy(
        "a/p",
        exprs(&[
            ("tier", Operator::In, &["fe", "be"]),
            ("env", Operator::NotIn, &["prod"]),
        ]),
        Some(vec![rule(
            vec![
                // Pods of namespaces not labelled env=prod that have a canary label.
                ns_and_pods(
                    exprs(&[("env", Operator::NotIn, &["prod"])]),
                    exprs(&[("canary", Operator::Exists, &[])]),
                ),
                // Pods of the own namespace without a tier label.
                pods_in("a", exprs(&[("tier", Operator::DoesNotExist, &[])])),
            ],
            vec![],
        )]),
        None,
    );
    let d = w.compile();
    assert_eq!(d.endpoints["uid-a-fe"].endpoint.flags, EP_INGRESS_ISOLATED);
    for uid in ["uid-a-be", "uid-a-db", "uid-a-bare"] {
        assert_eq!(d.endpoints[uid].endpoint.flags, 0, "{uid}");
    }
    let c = w.check(&d);
    assert!(
        c.ingress("a/fe", "10.0.1.1", Tcp, 80),
        "canary Exists (empty value)"
    );
    assert!(!c.ingress("a/fe", "10.0.1.2", Tcp, 80), "no canary label");
    assert!(c.ingress("a/fe", "10.0.0.4", Tcp, 80), "tier DoesNotExist");
    assert!(!c.ingress("a/fe", "10.0.0.3", Tcp, 80), "has a tier");
}

#[test]
fn rule_without_peers_allows_any_address() {
    let mut w = base();
    w.policy(
        "a/web",
        sel(&[("app", "server")]),
        Some(vec![rule(vec![], vec![tcp(80)])]),
        None,
    );
    let d = w.compile();
    let id = d.endpoints[SERVER].endpoint.id;
    assert_eq!(
        d.policy.keys().copied().collect::<Vec<_>>(),
        vec![exact(id, IDENTITY_ANY, DIR_INGRESS, Tcp, 80)]
    );
    let c = w.check(&d);
    for peer in ["8.8.8.8", "10.0.1.2", "2001:db8::1", "10.0.0.2"] {
        assert!(c.ingress("a/server", peer, Tcp, 80), "{peer}");
        assert!(!c.ingress("a/server", peer, Tcp, 81), "{peer}");
        assert!(!c.ingress("a/server", peer, Udp, 80), "{peer}");
    }
}

#[test]
fn rule_without_ports_allows_every_protocol() {
    let mut w = base();
    w.policy(
        "a/any",
        sel(&[("app", "server")]),
        Some(vec![rule(vec![block("8.8.8.0/24", &[])], vec![])]),
        None,
    );
    let d = w.compile();
    let c = w.check(&d);
    assert!(c.raw("a/server", DIR_INGRESS, "8.8.8.8", PROTO_ICMP, 0));
    assert!(c.raw("a/server", DIR_INGRESS, "8.8.8.8", 47, 0), "GRE");
    assert!(c.ingress("a/server", "8.8.8.8", Udp, 1));
    assert!(c.ingress("a/server", "8.8.8.8", Sctp, 65535));
    assert!(!c.ingress("a/server", "8.8.4.4", Tcp, 80));
}

#[test]
fn protocols_never_leak_into_each_other() {
    let mut w = base();
    w.policy(
        "a/p",
        sel(&[("app", "server")]),
        Some(vec![rule(
            vec![],
            vec![tcp(80), udp(53), port(Sctp, 9000), all_ports(Udp)],
        )]),
        None,
    );
    // The UDP-wide spec covers udp(53): only the 80-bit UDP entry remains.
    let d = w.compile();
    assert_eq!(
        entries_of(&d, SERVER),
        [
            (IDENTITY_ANY, DIR_INGRESS, 96, PROTO_TCP, 80),
            (IDENTITY_ANY, DIR_INGRESS, 96, PROTO_SCTP, 9000),
            (
                IDENTITY_ANY,
                DIR_INGRESS,
                POLICY_PREFIX_ANY_PORT,
                PROTO_UDP,
                0
            ),
        ]
        .into()
    );
    let c = w.check(&d);
    assert!(c.ingress("a/server", "8.8.8.8", Tcp, 80));
    assert!(
        !c.ingress("a/server", "8.8.8.8", Tcp, 53),
        "UDP rule opens no TCP"
    );
    assert!(!c.ingress("a/server", "8.8.8.8", Tcp, 9000));
    assert!(c.ingress("a/server", "8.8.8.8", Sctp, 9000));
    assert!(
        !c.ingress("a/server", "8.8.8.8", Sctp, 80),
        "port without protocol is TCP"
    );
    assert!(c.ingress("a/server", "8.8.8.8", Udp, 80));
    assert!(c.ingress("a/server", "8.8.8.8", Udp, 12345));
    assert!(!c.raw("a/server", DIR_INGRESS, "8.8.8.8", PROTO_ICMP, 0));
}

#[test]
fn end_port_ranges() {
    let mut w = base();
    w.policy(
        "a/p",
        sel(&[("app", "server")]),
        None,
        Some(vec![rule(
            vec![block("0.0.0.0/0", &[])],
            vec![
                range(Tcp, 80, 90),
                range(Udp, 1000, 2047),
                range(Sctp, 1, 65535),
            ],
        )]),
    );
    let d = w.compile();
    // Pods in the block have no other clause: they share the region's identity.
    let all = d.ipcache[&cidr("0.0.0.0/0")].identity;
    assert_eq!(w.check(&d).identity("10.0.1.2"), all);
    let expected: std::collections::BTreeSet<_> = port_range_prefixes(80, 90)
        .into_iter()
        .map(|(len, p)| (all, DIR_EGRESS, len, PROTO_TCP, p))
        .chain(
            port_range_prefixes(1000, 2047)
                .into_iter()
                .map(|(len, p)| (all, DIR_EGRESS, len, PROTO_UDP, p)),
        )
        .chain(
            port_range_prefixes(1, 65535)
                .into_iter()
                .map(|(len, p)| (all, DIR_EGRESS, len, PROTO_SCTP, p)),
        )
        .collect();
    assert_eq!(entries_of(&d, SERVER), expected);
    let c = w.check(&d);
    for p in [
        0u16, 1, 79, 80, 81, 87, 88, 89, 90, 91, 999, 1000, 1024, 2047, 2048, 65535,
    ] {
        c.egress("a/server", "1.1.1.1", Tcp, p);
        c.egress("a/server", "1.1.1.1", Udp, p);
        c.egress("a/server", "1.1.1.1", Sctp, p);
    }
    assert!(c.egress("a/server", "1.1.1.1", Tcp, 90));
    assert!(!c.egress("a/server", "1.1.1.1", Tcp, 91));
    assert!(!c.egress("a/server", "1.1.1.1", Udp, 90));
    assert!(!c.egress("a/server", "1.1.1.1", Sctp, 0));
    assert!(c.egress("a/server", "1.1.1.1", Sctp, 65535));
    assert!(!c.egress("a/server", "2001:db8::1", Tcp, 80), "IPv4 block");
}

#[test]
fn named_ports_ingress_resolve_on_the_local_pod() {
    let mut w = base();
    w.pod("a/server", &[("app", "server")], &["10.0.0.1"])
        .named_ports = vec![
        np("http", Tcp, 8080),
        np("dns", Udp, 5353),
        np("m", Tcp, 9090),
    ];
    w.pod("a/server2", &[("app", "server")], &["10.0.0.5"])
        .named_ports = vec![np("http", Tcp, 80), np("dns", Tcp, 53)];
    w.policy(
        "a/p",
        sel(&[("app", "server")]),
        Some(vec![rule(
            vec![pods_in("a", sel(&[("app", "client")]))],
            vec![named(Tcp, "http"), named(Tcp, "dns"), named(Tcp, "missing")],
        )]),
        None,
    );
    let d = w.compile();
    let client = w.check(&d).identity("10.0.0.2");
    assert_eq!(
        entries_of(&d, SERVER),
        [(client, DIR_INGRESS, 96, PROTO_TCP, 8080)].into(),
        "dns is UDP on this pod, missing is missing: nothing else opens"
    );
    assert_eq!(
        entries_of(&d, "uid-a-server2"),
        [
            (client, DIR_INGRESS, 96, PROTO_TCP, 53),
            (client, DIR_INGRESS, 96, PROTO_TCP, 80),
        ]
        .into()
    );
    let c = w.check(&d);
    assert!(c.ingress("a/server", "10.0.0.2", Tcp, 8080));
    assert!(!c.ingress("a/server", "10.0.0.2", Tcp, 80));
    assert!(!c.ingress("a/server", "10.0.0.2", Udp, 5353));
    assert!(!c.ingress("a/server", "10.0.0.2", Tcp, 5353));
    assert!(c.ingress("a/server2", "10.0.0.2", Tcp, 80));
    assert!(!c.ingress("a/server2", "10.0.0.2", Tcp, 8080));
    assert!(!c.ingress("a/server2", "10.0.0.3", Tcp, 80));
}

#[test]
fn named_ports_egress_resolve_on_each_peer() {
    let mut w = base();
    w.remote_pod("b/web1", &[("app", "web")], &["10.0.1.11"])
        .named_ports = vec![np("http", Tcp, 8080)];
    w.remote_pod("b/web2", &[("app", "web")], &["10.0.1.12"])
        .named_ports = vec![np("http", Tcp, 8081)];
    w.remote_pod("b/web3", &[("app", "web")], &["10.0.1.13"]);
    w.remote_pod("b/web4", &[("app", "web")], &["10.0.1.14"])
        .named_ports = vec![np("http", Udp, 8082)];
    w.remote_pod("b/db", &[("app", "db")], &["10.0.1.20"])
        .named_ports = vec![np("http", Tcp, 9999)];
    w.remote_pod("b/inblock", &[("app", "x")], &["10.0.5.5"])
        .named_ports = vec![np("http", Tcp, 7070)];
    w.policy(
        "a/p",
        sel(&[("app", "client")]),
        None,
        Some(vec![
            rule(
                vec![ns_and_pods(sel(&[("team", "y")]), sel(&[("app", "web")]))],
                vec![named(Tcp, "http")],
            ),
            rule(
                vec![block("8.8.8.0/24", &[]), block("10.0.5.0/24", &[])],
                vec![named(Tcp, "http")],
            ),
        ]),
    );
    let d = w.compile();
    let c = w.check(&d);
    assert!(c.egress("a/client", "10.0.1.11", Tcp, 8080));
    assert!(!c.egress("a/client", "10.0.1.11", Tcp, 8081));
    assert!(c.egress("a/client", "10.0.1.12", Tcp, 8081));
    assert!(!c.egress("a/client", "10.0.1.12", Tcp, 8080));
    assert!(
        !c.egress("a/client", "10.0.1.13", Tcp, 8080),
        "peer lacks the name"
    );
    assert!(
        !c.egress("a/client", "10.0.1.14", Tcp, 8082),
        "name is UDP there"
    );
    assert!(!c.egress("a/client", "10.0.1.14", Udp, 8082), "rule is TCP");
    assert!(!c.egress("a/client", "10.0.1.20", Tcp, 9999), "not a peer");
    for p in [80, 7070, 8080, 8081, 9999] {
        assert!(
            !c.egress("a/client", "8.8.8.8", Tcp, p),
            "ipBlock peer: no name"
        );
    }
    assert!(
        c.egress("a/client", "10.0.5.5", Tcp, 7070),
        "a pod inside an ipBlock resolves"
    );
    assert_ne!(c.identity("10.0.1.11"), c.identity("10.0.1.12"));

    // A rule without peers reaches every pod that resolves the name, nothing else.
    w.policy(
        "a/q",
        sel(&[("app", "client")]),
        None,
        Some(vec![rule(vec![], vec![named(Tcp, "http")])]),
    );
    let d = w.compile();
    assert!(d.policy.keys().all(|p| p.key.identity != IDENTITY_ANY));
    let c = w.check(&d);
    assert!(c.egress("a/client", "10.0.1.20", Tcp, 9999));
    assert!(!c.egress("a/client", "10.0.1.20", Tcp, 8080));
    assert!(c.egress("a/client", "10.0.1.11", Tcp, 8080));
    assert!(!c.egress("a/client", "8.8.8.8", Tcp, 9999));
    assert!(!c.egress("a/client", "10.0.1.13", Tcp, 8080));
}

#[test]
fn ip_block_except_and_nested_blocks() {
    let mut w = base();
    w.policy(
        "a/p1",
        sel(&[("app", "server")]),
        None,
        Some(vec![rule(
            vec![block("10.0.0.0/8", &["10.1.0.0/16"])],
            vec![tcp(443)],
        )]),
    );
    let d = w.compile();
    let outer = d.ipcache[&cidr("10.0.0.0/8")].identity;
    assert!(outer >= IDENTITY_FIRST_DYNAMIC);
    assert_eq!(d.ipcache[&cidr("10.1.0.0/16")].identity, IDENTITY_WORLD);
    // Shared with the pods inside the block, which satisfy nothing else.
    assert!(
        d.identities[&outer].starts_with("cidr 10.0.0.0/8, pods{"),
        "{}",
        d.identities[&outer]
    );
    assert_eq!(w.check(&d).identity("10.0.0.2"), outer);
    let c = w.check(&d);
    assert!(c.egress("a/server", "10.2.3.4", Tcp, 443));
    assert!(!c.egress("a/server", "10.1.2.3", Tcp, 443));
    assert!(!c.egress("a/server", "11.0.0.1", Tcp, 443));
    assert!(
        c.egress("a/server", "10.0.1.2", Tcp, 443),
        "pod in the block"
    );

    // Overlapping blocks of two more policies.
    w.policy(
        "a/p2",
        sel(&[("app", "server")]),
        None,
        Some(vec![rule(
            vec![block("10.1.0.0/16", &["10.1.2.0/24"])],
            vec![udp(53)],
        )]),
    );
    w.policy(
        "a/p3",
        sel(&[]),
        None,
        Some(vec![rule(
            vec![block("0.0.0.0/0", &["10.0.0.0/8"])],
            vec![udp(123)],
        )]),
    );
    let d = w.compile();
    let c = w.check(&d);
    let cases = [
        ("10.1.3.3", [false, true, false]),
        ("10.1.2.3", [false, false, false]),
        ("10.2.3.4", [true, false, false]),
        ("8.8.8.8", [false, false, true]),
        ("2001:db8::1", [false, false, false]),
    ];
    for (peer, [https, dns, ntp]) in cases {
        assert_eq!(c.egress("a/server", peer, Tcp, 443), https, "{peer} 443");
        assert_eq!(c.egress("a/server", peer, Udp, 53), dns, "{peer} 53");
        assert_eq!(c.egress("a/server", peer, Udp, 123), ntp, "{peer} 123");
    }
    assert!(c.egress("a/client", "8.8.8.8", Udp, 123));
    assert!(!c.egress("a/client", "10.2.3.4", Tcp, 443));
    // Every prefix of every block is in the trie.
    for p in ["10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "0.0.0.0/0"] {
        assert!(d.ipcache.contains_key(&cidr(p)), "{p}");
    }
    assert_eq!(d.ipcache[&cidr("10.1.2.0/24")].identity, IDENTITY_WORLD);
}

#[test]
fn ip_block_matches_pod_addresses() {
    let mut w = base();
    w.remote_pod("b/in", &[("app", "q")], &["10.0.7.5"]);
    w.remote_pod("b/out", &[("app", "q")], &["10.0.8.5"]);
    w.remote_pod("b/excepted", &[("app", "q")], &["10.0.7.9"]);
    w.policy(
        "a/p",
        sel(&[("app", "server")]),
        Some(vec![
            rule(vec![block("10.0.7.0/24", &["10.0.7.8/29"])], vec![tcp(80)]),
            rule(vec![pods_in("a", sel(&[("app", "client")]))], vec![tcp(81)]),
            // A /32 block that is exactly a pod address.
            rule(vec![block("10.0.0.2/32", &[])], vec![tcp(82)]),
        ]),
        None,
    );
    let d = w.compile();
    let c = w.check(&d);
    assert!(c.ingress("a/server", "10.0.7.5", Tcp, 80));
    assert!(!c.ingress("a/server", "10.0.8.5", Tcp, 80));
    assert!(!c.ingress("a/server", "10.0.7.9", Tcp, 80));
    assert_ne!(c.identity("10.0.7.5"), c.identity("10.0.8.5"));
    // The client's exact entry carries both its pod clause and the /32 block.
    assert!(c.ingress("a/server", "10.0.0.2", Tcp, 81));
    assert!(c.ingress("a/server", "10.0.0.2", Tcp, 82));
    assert!(!c.ingress("a/server", "10.0.0.2", Tcp, 80));
    assert_eq!(
        d.ipcache[&IpPrefix::host(ip("10.0.0.2"))].identity,
        c.identity("10.0.0.2")
    );
}

#[test]
fn ipv6_blocks_and_pods_and_family_separation() {
    let mut w = base();
    w.remote_pod("b/v6", &[("app", "client")], &["fd00:1::2"]);
    w.remote_pod("b/dual", &[("app", "dual")], &["10.0.1.50", "fd00:1::50"]);
    w.policy(
        "a/v6",
        sel(&[("app", "server")]),
        Some(vec![
            rule(vec![block("fd00:1::/64", &["fd00:1::/120"])], vec![tcp(80)]),
            rule(vec![block("::/0", &[])], vec![tcp(81)]),
            rule(vec![block("0.0.0.0/0", &[])], vec![tcp(82)]),
            rule(vec![namespaces(sel(&[("team", "y")]))], vec![tcp(83)]),
        ]),
        None,
    );
    let d = w.compile();
    let c = w.check(&d);
    assert!(c.ingress("a/server", "fd00:1::1:5", Tcp, 80));
    assert!(
        !c.ingress("a/server", "fd00:1::50", Tcp, 80),
        "in the except"
    );
    assert!(c.ingress("a/server", "2001:db8::1", Tcp, 81));
    assert!(
        !c.ingress("a/server", "8.8.8.8", Tcp, 81),
        "::/0 holds no IPv4 address"
    );
    assert!(!c.ingress("a/server", "10.0.0.2", Tcp, 81));
    assert!(c.ingress("a/server", "8.8.8.8", Tcp, 82));
    assert!(
        !c.ingress("a/server", "2001:db8::1", Tcp, 82),
        "0.0.0.0/0 holds no IPv6"
    );
    assert!(!c.ingress("a/server", "fd00:1::2", Tcp, 82));
    assert!(
        c.ingress("a/server", "fd00:1::2", Tcp, 83),
        "IPv6 pod address"
    );
    assert!(c.ingress("a/server", "fd00:1::50", Tcp, 83));
    assert!(c.ingress("a/server", "10.0.1.50", Tcp, 83));
    assert!(
        c.ingress("a/server", "::ffff:8.8.8.8", Tcp, 82),
        "mapped form is IPv4"
    );
    // The IPv4-mapped range shadows ::/0 for IPv4.
    assert!(d.ipcache.contains_key(&cidr("0.0.0.0/0")));
    assert_eq!(
        d.ipcache[&IpPrefix::host(ip("fd00:1::2"))].identity,
        c.identity("fd00:1::2")
    );
}

#[test]
fn ipv6_block_alone_shadows_ipv4() {
    let mut w = base();
    w.policy(
        "a/v6",
        sel(&[("app", "server")]),
        Some(vec![rule(vec![block("::/0", &[])], vec![])]),
        None,
    );
    let d = w.compile();
    assert_eq!(
        d.ipcache[&cidr("0.0.0.0/0")],
        IpInfo {
            identity: IDENTITY_WORLD,
            ..IpInfo::default()
        }
    );
    let c = w.check(&d);
    assert!(c.ingress("a/server", "2001:db8::1", Udp, 1));
    assert!(!c.ingress("a/server", "1.2.3.4", Udp, 1));
    assert!(!c.ingress("a/server", "10.0.1.2", Udp, 1));
}

#[test]
fn ipv4_mapped_ipv6_block_matches_nothing() {
    let mut w = base();
    w.policy(
        "a/odd",
        sel(&[("app", "server")]),
        Some(vec![rule(vec![block("::ffff:10.0.0.0/104", &[])], vec![])]),
        None,
    );
    let d = w.compile();
    let c = w.check(&d);
    assert!(!c.ingress("a/server", "10.0.0.2", Tcp, 80));
    assert!(!c.ingress("a/server", "10.9.9.9", Tcp, 80));
    assert!(d.policy.is_empty());
}

#[test]
fn node_addresses_pass_ingress_and_are_judged_on_egress() {
    let mut w = base();
    w.policy(
        "a/p",
        sel(&[]),
        Some(vec![rule(
            vec![block("192.168.0.0/16", &["192.168.0.0/24"])],
            vec![tcp(1)],
        )]),
        Some(vec![]),
    );
    let d = w.compile();
    for n in &w.node_ips {
        assert_eq!(d.ipcache[&IpPrefix::host(*n)].flags, IP_HOST);
    }
    let c = w.check(&d);
    // Ingress from the node (kubelet probes) always passes.
    assert!(c.ingress("a/server", "192.168.0.1", Tcp, 22));
    // Egress to the node is judged like any address: the policy allows no egress.
    assert!(!c.egress("a/server", "192.168.0.1", Udp, 53));
    assert!(!c.egress("a/server", "fd00:ff::1", Tcp, 10250));
    assert!(!c.ingress("a/server", "192.168.0.2", Tcp, 1));
    assert!(c.ingress("a/server", "192.168.1.2", Tcp, 1));
}

#[test]
fn host_network_local_pod_is_unmanaged() {
    let mut w = base();
    w.pod("a/agent", &[("app", "server")], &["192.168.0.1"])
        .host_network = true;
    w.remote_pod("b/hostclient", &[("app", "client")], &["10.0.1.99"])
        .host_network = true;
    w.policy("a/deny", sel(&[]), Some(vec![]), Some(vec![]));
    w.policy(
        "a/allow",
        sel(&[("app", "server")]),
        Some(vec![rule(vec![namespaces(sel(&[]))], vec![])]),
        None,
    );
    let d = w.compile();
    let agent = d.endpoints["uid-a-agent"].endpoint;
    assert_eq!(agent.flags, EP_NET_UNMANAGED);
    assert!(d.policy.keys().all(|p| p.key.endpoint != agent.id));
    let c = w.check(&d);
    assert!(c.ingress("a/agent", "8.8.8.8", Tcp, 80));
    assert!(c.egress("a/agent", "8.8.8.8", Tcp, 80));
    assert!(
        !c.ingress("a/server", "10.0.1.99", Tcp, 80),
        "host-network pods are not pods"
    );
    assert!(!d.ipcache.contains_key(&IpPrefix::host(ip("10.0.1.99"))));
}

#[test]
fn remote_pods_get_identities_but_no_endpoints() {
    let mut w = base();
    w.policy(
        "a/p",
        sel(&[("app", "server")]),
        Some(vec![rule(vec![namespaces(sel(&[]))], vec![])]),
        None,
    );
    let d = w.compile();
    assert_eq!(
        d.endpoints.keys().cloned().collect::<Vec<_>>(),
        ["uid-a-client", "uid-a-other", "uid-a-server"]
    );
    assert_eq!(d.endpoints[SERVER].pod.to_string(), "a/server");
    for remote in ["10.0.1.2", "10.0.1.3", "10.0.2.2"] {
        let info = d.ipcache[&IpPrefix::host(ip(remote))];
        assert!(info.identity >= IDENTITY_FIRST_DYNAMIC, "{remote}");
    }
}

#[test]
fn terminal_pods_are_ignored() {
    let mut w = base();
    w.pod("a/done", &[("app", "server")], &["10.0.0.9"])
        .terminal = true;
    w.remote_pod("b/old", &[("app", "client")], &["10.0.1.77"])
        .terminal = true;
    w.policy(
        "a/p",
        sel(&[("app", "server")]),
        Some(vec![rule(vec![namespaces(sel(&[]))], vec![])]),
        None,
    );
    let d = w.compile();
    assert!(!d.endpoints.contains_key("uid-a-done"));
    assert!(!d.ipcache.contains_key(&IpPrefix::host(ip("10.0.1.77"))));
    let c = w.check(&d);
    assert!(!c.ingress("a/server", "10.0.1.77", Tcp, 80));

    // A new pod takes over the address of the terminal one.
    w.remote_pod("b/new", &[("app", "client")], &["10.0.1.77"]);
    let d = w.compile();
    assert!(w.check(&d).ingress("a/server", "10.0.1.77", Tcp, 80));
}

#[test]
fn pods_without_addresses() {
    let mut w = base();
    w.pod("a/pending", &[("app", "server")], &[]);
    w.remote_pod("b/pending", &[("app", "client")], &[]);
    w.policy(
        "a/p",
        sel(&[("app", "server")]),
        Some(vec![rule(vec![namespaces(sel(&[]))], vec![])]),
        None,
    );
    let d = w.compile();
    assert_eq!(
        d.endpoints["uid-a-pending"].endpoint.flags,
        EP_INGRESS_ISOLATED
    );
    let c = w.check(&d);
    assert!(c.ingress("a/pending", "10.0.1.2", Tcp, 80));
}

#[test]
fn duplicate_pod_address_first_pod_by_name_wins() {
    let mut w = base();
    w.remote_pod("b/aaa", &[("app", "client")], &["10.0.1.88"]);
    w.remote_pod("b/zzz", &[("app", "other")], &["10.0.1.88"]);
    w.policy(
        "a/p",
        sel(&[("app", "server")]),
        Some(vec![rule(vec![namespaces(sel(&[]))], vec![tcp(80)])]),
        None,
    );
    w.policy(
        "a/q",
        sel(&[("app", "server")]),
        Some(vec![rule(
            vec![ns_and_pods(sel(&[]), sel(&[("app", "client")]))],
            vec![tcp(81)],
        )]),
        None,
    );
    let d = w.compile();
    let c = w.check(&d);
    assert_eq!(
        c.identity("10.0.1.88"),
        c.identity("10.0.1.2"),
        "b/aaa's class"
    );
}

#[test]
fn policy_in_another_namespace_does_not_select() {
    let mut w = base();
    w.policy("b/deny", sel(&[]), Some(vec![]), Some(vec![]));
    let d = w.compile();
    assert!(d.endpoints.values().all(|e| e.endpoint.flags == 0));
    assert!(w.check(&d).ingress("a/server", "8.8.8.8", Tcp, 80));
    assert_eq!(d.policy_names.len(), 1);
}

#[test]
fn policies_are_a_union_and_the_lower_index_reports() {
    let mut w = base();
    let r = || {
        Some(vec![rule(
            vec![pods_in("a", sel(&[("app", "client")]))],
            vec![tcp(80)],
        )])
    };
    w.policy("a/first", sel(&[("app", "server")]), r(), None);
    w.policy("a/second", sel(&[("app", "server")]), r(), None);
    w.policy(
        "a/third",
        sel(&[("app", "server")]),
        Some(vec![rule(
            vec![pods_in("a", sel(&[("app", "other")]))],
            vec![udp(53)],
        )]),
        None,
    );
    let d = w.compile();
    let idx = |name: &str| {
        *d.policy_names
            .iter()
            .find(|(_, r)| r.name == name)
            .unwrap()
            .0
    };
    assert_eq!(d.policy.len(), 2);
    let client = w.check(&d).identity("10.0.0.2");
    let ep = d.endpoints[SERVER].endpoint.id;
    assert_eq!(
        d.policy[&exact(ep, client, DIR_INGRESS, Tcp, 80)],
        PolicyValue {
            policy: idx("first").min(idx("second")),
            flags: 0
        }
    );
    let c = w.check(&d);
    assert!(c.ingress("a/server", "10.0.0.3", Udp, 53));
    assert!(!c.ingress("a/server", "10.0.0.3", Tcp, 80));
    assert!(!c.ingress("a/server", "10.0.0.2", Udp, 53));
}

#[test]
fn covered_entries_are_dropped() {
    let mut w = base();
    w.policy(
        "a/wide",
        sel(&[("app", "server")]),
        Some(vec![
            rule(vec![pods_in("a", sel(&[("app", "client")]))], vec![]),
            rule(vec![], vec![all_ports(Udp)]),
            rule(vec![], vec![tcp(443)]),
        ]),
        None,
    );
    w.policy(
        "a/narrow",
        sel(&[("app", "server")]),
        Some(vec![
            rule(
                vec![pods_in("a", sel(&[("app", "client")]))],
                vec![tcp(80), range(Tcp, 1, 9)],
            ),
            rule(
                vec![pods_in("a", sel(&[("app", "other")]))],
                vec![udp(53), tcp(443)],
            ),
            rule(
                vec![pods_in("a", sel(&[("app", "other")]))],
                vec![range(Udp, 100, 200)],
            ),
        ]),
        None,
    );
    let d = w.compile();
    let c = w.check(&d);
    let client = c.identity("10.0.0.2");
    assert_eq!(
        entries_of(&d, SERVER),
        [
            (client, DIR_INGRESS, POLICY_PREFIX_ANY_PROTO, 0, 0),
            (
                IDENTITY_ANY,
                DIR_INGRESS,
                POLICY_PREFIX_ANY_PORT,
                PROTO_UDP,
                0
            ),
            (IDENTITY_ANY, DIR_INGRESS, 96, PROTO_TCP, 443),
        ]
        .into()
    );
    assert!(c.ingress("a/server", "10.0.0.3", Udp, 150));
    assert!(c.ingress("a/server", "10.0.0.3", Tcp, 443));
    assert!(!c.ingress("a/server", "10.0.0.3", Tcp, 80));
    assert!(c.ingress("a/server", "10.0.0.2", Tcp, 5));
}

#[test]
fn descriptions_and_policy_names() {
    let mut w = base();
    w.policy(
        "a/p",
        sel(&[("app", "server")]),
        Some(vec![rule(
            vec![
                pods_in("a", sel(&[("app", "client")])),
                block("172.16.0.0/12", &[]),
            ],
            vec![],
        )]),
        None,
    );
    let d = w.compile();
    let c = w.check(&d);
    assert_eq!(
        d.identities[&c.identity("10.0.0.2")],
        "pods{ns=a, app=client}"
    );
    assert_eq!(
        d.identities[&c.identity("172.16.1.1")],
        "cidr 172.16.0.0/12"
    );
    assert_eq!(c.identity("8.8.8.8"), IDENTITY_WORLD);
    assert_eq!(
        d.policy_names
            .values()
            .map(|r| r.to_string())
            .collect::<Vec<_>>(),
        ["a/p"]
    );
}

#[test]
fn ids_are_stable_across_compiles_and_never_reused() {
    let mut w = base();
    w.policy(
        "a/p",
        sel(&[("app", "server")]),
        Some(vec![rule(
            vec![pods_in("a", sel(&[("app", "client")]))],
            vec![tcp(80)],
        )]),
        None,
    );
    let mut compiler = Compiler::new();
    let d1 = w.compile_with(&mut compiler);
    assert_eq!(w.compile_with(&mut compiler), d1, "same input, same output");

    // Unrelated changes: a new pod, a new policy (sorting before the old one) with a new
    // clause the existing classes do not satisfy.
    w.pod("a/new", &[("app", "new")], &["10.0.0.50"]);
    w.policy(
        "a/aaa",
        sel(&[("app", "new")]),
        Some(vec![rule(
            vec![pods_in("a", sel(&[("app", "other")]))],
            vec![],
        )]),
        None,
    );
    let d2 = w.compile_with(&mut compiler);
    for (uid, e) in &d1.endpoints {
        assert_eq!(d2.endpoints[uid].endpoint.id, e.endpoint.id, "{uid}");
    }
    let p_index = |d: &crate::policy::Desired, n: &str| {
        *d.policy_names.iter().find(|(_, r)| r.name == n).unwrap().0
    };
    assert_eq!(p_index(&d1, "p"), p_index(&d2, "p"));
    assert!(p_index(&d2, "aaa") > p_index(&d1, "p"));
    let sim1 = Sim::new(&d1);
    let sim2 = Sim::new(&d2);
    assert_eq!(sim1.identity(ip("10.0.0.2")), sim2.identity(ip("10.0.0.2")));
    // The old entry is untouched.
    let ep = d1.endpoints[SERVER].endpoint.id;
    let key = exact(ep, sim1.identity(ip("10.0.0.2")), DIR_INGRESS, Tcp, 80);
    assert_eq!(d1.policy[&key], d2.policy[&key]);

    // Delete a pod, add another: the new one gets a fresh number.
    let max_before = d2.endpoints.values().map(|e| e.endpoint.id).max().unwrap();
    let client_id = d2.endpoints["uid-a-client"].endpoint.id;
    w.remove_pod("a/client");
    let d3 = w.compile_with(&mut compiler);
    assert!(!d3.endpoints.contains_key("uid-a-client"));
    w.pod("a/client", &[("app", "client")], &["10.0.0.2"]).uid = "uid-a-client-2".into();
    w.pod("a/late", &[], &["10.0.0.60"]);
    let d4 = w.compile_with(&mut compiler);
    let new_id = d4.endpoints["uid-a-client-2"].endpoint.id;
    assert!(new_id > max_before && new_id != client_id);
    assert!(d4.endpoints["uid-a-late"].endpoint.id > new_id);
    // Identities: the client class disappeared with its only pod and got a new number.
    let old_class = sim2.identity(ip("10.0.0.2"));
    let new_class = Sim::new(&d4).identity(ip("10.0.0.2"));
    assert_ne!(old_class, new_class);
    assert!(!d3.identities.contains_key(&old_class));
    assert!(!d4.identities.contains_key(&old_class));
    // A fresh compiler gives the same behaviour (numbers may differ).
    let fresh = w.compile();
    assert_eq!(fresh.policy.len(), d4.policy.len());
    assert_eq!(fresh.ipcache.len(), d4.ipcache.len());
}

#[test]
fn diff_reports_upserts_and_deletes() {
    use crate::policy::{Diff, diff};
    let old = map([(1, "a"), (2, "b"), (3, "c")]);
    let new = map([(2, "b"), (3, "C"), (4, "d")]);
    assert_eq!(
        diff(&old, &new),
        Diff {
            upserts: vec![(3, "C"), (4, "d")],
            deletes: vec![1],
        }
    );
    assert_eq!(diff(&new, &new), Diff::default());
    let empty = map::<u32, u32>([]);
    assert_eq!(diff(&empty, &map([(7, 7)])).upserts, vec![(7, 7)]);
    assert_eq!(diff(&map([(7, 7)]), &empty).deletes, vec![7]);

    // On real output: applying the diff to the old state gives the new state.
    let mut w = base();
    let mut compiler = Compiler::new();
    w.policy(
        "a/p",
        sel(&[("app", "server")]),
        Some(vec![rule(
            vec![pods_in("a", sel(&[("app", "client")]))],
            vec![tcp(80)],
        )]),
        None,
    );
    let d1 = w.compile_with(&mut compiler);
    w.policy(
        "a/p",
        sel(&[("app", "server")]),
        Some(vec![rule(
            vec![pods_in("a", sel(&[("app", "client")]))],
            vec![tcp(81)],
        )]),
        None,
    );
    w.remote_pod("b/x", &[("app", "client")], &["10.0.1.100"]);
    let d2 = w.compile_with(&mut compiler);
    let dd = diff(&d1.policy, &d2.policy);
    assert!(!dd.upserts.is_empty() && !dd.deletes.is_empty());
    let mut applied = d1.policy.clone();
    applied.extend(dd.upserts);
    for k in dd.deletes {
        applied.remove(&k);
    }
    assert_eq!(applied, d2.policy);
    let dd = diff(&d1.ipcache, &d2.ipcache);
    let mut applied = d1.ipcache.clone();
    applied.extend(dd.upserts);
    for k in dd.deletes {
        applied.remove(&k);
    }
    assert_eq!(applied, d2.ipcache);
}

#[test]
fn egress_to_the_node_follows_ip_blocks_that_contain_it() {
    let mut w = base();
    w.policy(
        "a/p",
        sel(&[]),
        None,
        Some(vec![rule(
            vec![block("192.168.0.0/24", &[])],
            vec![tcp(10250)],
        )]),
    );
    let d = w.compile();
    let c = w.check(&d);
    assert!(c.egress("a/server", "192.168.0.1", Tcp, 10250));
    assert!(!c.egress("a/server", "192.168.0.1", Tcp, 22));
    assert!(!c.egress("a/server", "fd00:ff::1", Tcp, 10250));
}
