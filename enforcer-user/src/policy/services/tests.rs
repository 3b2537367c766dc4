use std::net::IpAddr;

use enforcer_common::{Backend, BackendKey, SVC_AFFINITY, SvcKey};

use super::*;
use crate::model::{
    Cluster, EndpointSlice, Protocol, Service, ServicePort, SliceEndpoint, SlicePort,
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn svc(name: &str, cluster_ips: &[&str], ports: &[(&str, u16, Option<u16>)]) -> Service {
    Service {
        namespace: "ns".into(),
        name: name.into(),
        cluster_ips: cluster_ips.iter().map(|a| ip(a)).collect(),
        external_ips: vec![],
        load_balancer_ips: vec![],
        ports: ports
            .iter()
            .map(|(n, p, np)| ServicePort {
                name: n.to_string(),
                protocol: Protocol::Tcp,
                port: *p,
                node_port: *np,
            })
            .collect(),
        affinity_timeout_s: None,
        internal_local: false,
        external_local: false,
    }
}

fn ep(addrs: &[&str], ready: bool, terminating: bool, node: &str) -> SliceEndpoint {
    SliceEndpoint {
        addresses: addrs.iter().map(|a| ip(a)).collect(),
        ready,
        serving: ready || terminating,
        terminating,
        node_name: Some(node.into()),
    }
}

fn slice(name: &str, service: &str, port: (&str, u16), eps: Vec<SliceEndpoint>) -> EndpointSlice {
    EndpointSlice {
        namespace: "ns".into(),
        name: name.into(),
        service: service.into(),
        ports: vec![SlicePort {
            name: port.0.into(),
            protocol: Protocol::Tcp,
            port: port.1,
        }],
        endpoints: eps,
    }
}

fn cluster(svcs: Vec<Service>, slices: Vec<EndpointSlice>) -> Cluster {
    let mut c = Cluster::default();
    for s in svcs {
        c.services.insert(s.key(), s);
    }
    for s in slices {
        c.endpoint_slices.insert(s.key(), s);
    }
    c
}

const NODE_IPS: &[&str] = &["10.250.0.2", "fd00:250::2"];

fn compile(c: &mut ServiceCompiler, cl: &Cluster) -> ServiceState {
    let node_ips: Vec<IpAddr> = NODE_IPS.iter().map(|a| ip(a)).collect();
    c.compile(&ServiceInput {
        cluster: cl,
        node_name: "node-a",
        node_ips: &node_ips,
    })
}

fn key(addr: &str, port: u16) -> SvcKey {
    SvcKey {
        addr: IpPrefix::host(ip(addr)).addr,
        port: port.to_be_bytes(),
        protocol: 6,
        _pad: 0,
    }
}

/// The backends a frontend leads to, as "addr:port".
fn backends_of(st: &ServiceState, addr: &str, port: u16) -> Vec<String> {
    let v = st.services[&key(addr, port)];
    (0..v.count)
        .map(|slot| {
            let b: Backend = st.backends[&BackendKey { set: v.set, slot }];
            let a = std::net::Ipv6Addr::from(b.addr);
            let a: IpAddr = match a.to_ipv4_mapped() {
                Some(v4) => v4.into(),
                None => a.into(),
            };
            format!("{a}:{}", u16::from_be_bytes(b.port))
        })
        .collect()
}

#[test]
fn cluster_ip_leads_to_ready_endpoints_on_the_slice_port() {
    let cl = cluster(
        vec![svc("web", &["10.96.0.10"], &[("http", 80, None)])],
        vec![slice(
            "web-1",
            "web",
            ("http", 8080),
            vec![
                ep(&["10.244.0.5"], true, false, "node-a"),
                ep(&["10.244.1.7"], true, false, "node-b"),
                ep(&["10.244.0.9"], false, false, "node-a"),
            ],
        )],
    );
    let st = compile(&mut ServiceCompiler::new(), &cl);
    assert_eq!(
        backends_of(&st, "10.96.0.10", 80),
        ["10.244.0.5:8080", "10.244.1.7:8080"]
    );
    assert!(st.frontend_ips.contains(&ip("10.96.0.10")));
    assert!(st.warnings.is_empty());
}

#[test]
fn terminating_serving_endpoints_only_when_nothing_is_ready() {
    let mut cl = cluster(
        vec![svc("web", &["10.96.0.10"], &[("", 80, None)])],
        vec![slice(
            "web-1",
            "web",
            ("", 80),
            vec![
                ep(&["10.244.0.5"], false, true, "node-a"),
                ep(&["10.244.0.6"], true, false, "node-a"),
            ],
        )],
    );
    let mut c = ServiceCompiler::new();
    assert_eq!(
        backends_of(&compile(&mut c, &cl), "10.96.0.10", 80),
        ["10.244.0.6:80"]
    );
    let s = cl.endpoint_slices.values_mut().next().unwrap();
    s.endpoints.remove(1);
    assert_eq!(
        backends_of(&compile(&mut c, &cl), "10.96.0.10", 80),
        ["10.244.0.5:80"]
    );
    let s = cl.endpoint_slices.values_mut().next().unwrap();
    s.endpoints[0].serving = false;
    let st = compile(&mut c, &cl);
    assert_eq!(st.services[&key("10.96.0.10", 80)].count, 0);
}

#[test]
fn internal_traffic_policy_local_keeps_this_nodes_endpoints_for_cluster_ips_only() {
    let mut s = svc("web", &["10.96.0.10"], &[("", 80, Some(30080))]);
    s.internal_local = true;
    let cl = cluster(
        vec![s],
        vec![slice(
            "web-1",
            "web",
            ("", 80),
            vec![
                ep(&["10.244.0.5"], true, false, "node-a"),
                ep(&["10.244.1.7"], true, false, "node-b"),
            ],
        )],
    );
    let st = compile(&mut ServiceCompiler::new(), &cl);
    assert_eq!(backends_of(&st, "10.96.0.10", 80), ["10.244.0.5:80"]);
    assert_eq!(
        backends_of(&st, "10.250.0.2", 30080),
        ["10.244.0.5:80", "10.244.1.7:80"]
    );
}

#[test]
fn node_ports_external_and_load_balancer_ips_are_frontends_of_their_family() {
    let mut s = svc(
        "web",
        &["10.96.0.10", "fd00:96::10"],
        &[("", 80, Some(30080))],
    );
    s.external_ips = vec![ip("192.0.2.7")];
    s.load_balancer_ips = vec![ip("198.51.100.3")];
    let cl = cluster(
        vec![s],
        vec![
            slice(
                "web-4",
                "web",
                ("", 80),
                vec![ep(&["10.244.0.5"], true, false, "node-a")],
            ),
            slice(
                "web-6",
                "web",
                ("", 80),
                vec![ep(&["fd00:244::5"], true, false, "node-a")],
            ),
        ],
    );
    let st = compile(&mut ServiceCompiler::new(), &cl);
    assert_eq!(backends_of(&st, "10.96.0.10", 80), ["10.244.0.5:80"]);
    assert_eq!(backends_of(&st, "fd00:96::10", 80), ["fd00:244::5:80"]);
    assert_eq!(backends_of(&st, "10.250.0.2", 30080), ["10.244.0.5:80"]);
    assert_eq!(backends_of(&st, "fd00:250::2", 30080), ["fd00:244::5:80"]);
    assert_eq!(backends_of(&st, "192.0.2.7", 80), ["10.244.0.5:80"]);
    assert_eq!(backends_of(&st, "198.51.100.3", 80), ["10.244.0.5:80"]);
    assert_eq!(st.services.len(), 6);
    // ClusterIPs and load balancer IPs are never "this node"; node addresses stay so.
    assert!(st.frontend_ips.contains(&ip("fd00:96::10")));
    assert!(st.frontend_ips.contains(&ip("198.51.100.3")));
    assert!(!st.frontend_ips.contains(&ip("10.250.0.2")));
}

#[test]
fn headless_services_and_foreign_slices_program_nothing() {
    let cl = cluster(
        vec![svc("db", &[], &[("", 5432, None)])],
        vec![slice(
            "db-1",
            "db",
            ("", 5432),
            vec![ep(&["10.244.0.5"], true, false, "node-a")],
        )],
    );
    let st = compile(&mut ServiceCompiler::new(), &cl);
    assert!(st.services.is_empty());
    assert!(st.backends.is_empty());
}

#[test]
fn set_numbers_survive_endpoint_changes_and_affinity_is_carried() {
    let mut s = svc("web", &["10.96.0.10"], &[("", 80, None)]);
    s.affinity_timeout_s = Some(30);
    let mut cl = cluster(
        vec![s, svc("api", &["10.96.0.11"], &[("", 443, None)])],
        vec![slice(
            "web-1",
            "web",
            ("", 80),
            vec![ep(&["10.244.0.5"], true, false, "n")],
        )],
    );
    let mut c = ServiceCompiler::new();
    let a = compile(&mut c, &cl);
    let v = a.services[&key("10.96.0.10", 80)];
    assert_eq!((v.flags, v.affinity_timeout_s), (SVC_AFFINITY, 30));
    let s = cl.endpoint_slices.values_mut().next().unwrap();
    s.endpoints.push(ep(&["10.244.0.6"], true, false, "n"));
    let b = compile(&mut c, &cl);
    assert_eq!(b.services[&key("10.96.0.10", 80)].set, v.set);
    assert_eq!(b.services[&key("10.96.0.10", 80)].count, 2);
    assert_eq!(
        b.services[&key("10.96.0.11", 443)].set,
        a.services[&key("10.96.0.11", 443)].set
    );
}

#[test]
fn a_restarted_compiler_reuses_the_kernels_set_numbers() {
    let cl = cluster(
        vec![
            svc("a", &["10.96.0.1"], &[("", 80, None)]),
            svc("b", &["10.96.0.2"], &[("", 80, None)]),
        ],
        vec![],
    );
    let mut c = ServiceCompiler::new();
    c.seed([(key("10.96.0.1", 80), 7), (key("10.96.0.2", 80), 3)]);
    let st = compile(&mut c, &cl);
    assert_eq!(st.services[&key("10.96.0.1", 80)].set, 7);
    assert_eq!(st.services[&key("10.96.0.2", 80)].set, 3);
    // A new set never takes a live number.
    let mut cl2 = cl.clone();
    let s = svc("c", &["10.96.0.3"], &[("", 80, None)]);
    cl2.services.insert(s.key(), s);
    let st = compile(&mut c, &cl2);
    let c_set = st.services[&key("10.96.0.3", 80)].set;
    assert!(c_set != 7 && c_set != 3);
}

#[test]
fn a_frontend_claimed_twice_stays_with_the_first_service_and_is_reported() {
    let mut a = svc("a", &["10.96.0.1"], &[("", 80, None)]);
    a.external_ips = vec![ip("192.0.2.7")];
    let mut b = svc("b", &["10.96.0.2"], &[("", 80, None)]);
    b.external_ips = vec![ip("192.0.2.7")];
    let cl = cluster(
        vec![a, b],
        vec![slice(
            "a-1",
            "a",
            ("", 80),
            vec![ep(&["10.244.0.5"], true, false, "n")],
        )],
    );
    let st = compile(&mut ServiceCompiler::new(), &cl);
    assert_eq!(backends_of(&st, "192.0.2.7", 80), ["10.244.0.5:80"]);
    assert_eq!(st.warnings.len(), 1);
    assert!(st.warnings[0].contains("ns/b"), "{}", st.warnings[0]);
}
