//! Kernel tier: NetworkPolicy through Services. The real agent on a simulated node (see
//! tests/src/sim.rs) translates Service frontends in its socket hooks; real connections
//! between pod network namespaces show who answered, what the socket API reports, and what
//! policy allowed. Two topologies: the node netns doing kube-proxy-style nftables DNAT
//! (translation must happen before it, so that policy judges the backend), and no NAT at
//! all (our translation alone must deliver).

use std::{
    fs,
    net::IpAddr,
    time::{Duration, Instant},
};

use enforcer_tests::{
    Bg, Place, is_root, probe,
    sim::{PodSpec, SimNode},
    skip, unique,
};

fn node(test: &str, subnet: u8, ports: &[(&'static str, u16)]) -> Option<SimNode> {
    if !is_root() {
        skip(
            test,
            "needs root (BPF programs, cgroups, network namespaces)",
        );
        return None;
    }
    let mut node = SimNode::new(subnet);
    node.ports = ports.to_vec();
    Some(node)
}

fn pod(ns: &str, name: &str, labels: &[(&str, &str)]) -> PodSpec {
    let mut p = PodSpec::new(ns, name, true);
    for (k, v) in labels {
        p.labels.insert(k.to_string(), v.to_string());
    }
    p
}

/// A Service with one port per (name, protocol, port, targetPort) and its EndpointSlices
/// (one per family) listing `backends` as ready, or as `ready: false` when `ready` is off.
struct Svc<'a> {
    ns: &'a str,
    name: &'a str,
    cluster_ips: Vec<IpAddr>,
    ports: Vec<(&'a str, &'a str, u16, u16)>,
    backends: Vec<&'a str>,
    ready: bool,
    extra_spec: &'a str,
}

impl Svc<'_> {
    fn yaml(&self, node: &SimNode) -> String {
        let mut y = format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {}, namespace: {}}}\nspec:\n  clusterIP: {}\n  clusterIPs: [{}]\n  ports:\n",
            self.name,
            self.ns,
            self.cluster_ips[0],
            self.cluster_ips
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        for (name, proto, port, _) in &self.ports {
            y.push_str(&format!(
                "  - {{name: \"{name}\", protocol: {proto}, port: {port}}}\n"
            ));
        }
        y.push_str(self.extra_spec);
        for v6 in [false, true] {
            y.push_str(&format!(
                "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {}-{}\n  namespace: {}\n  labels: {{kubernetes.io/service-name: {}}}\naddressType: {}\nports:\n",
                self.name,
                if v6 { "v6" } else { "v4" },
                self.ns,
                self.name,
                if v6 { "IPv6" } else { "IPv4" }
            ));
            for (name, proto, _, target) in &self.ports {
                y.push_str(&format!(
                    "- {{name: \"{name}\", protocol: {proto}, port: {target}}}\n"
                ));
            }
            y.push_str("endpoints:\n");
            if self.backends.is_empty() {
                y.push_str("[]\n");
            }
            for b in &self.backends {
                let p = &node.pods[*b];
                let a = if v6 { p.v6 } else { p.v4 };
                y.push_str(&format!(
                    "- addresses: [\"{a}\"]\n  conditions: {{ready: {}}}\n  nodeName: {}\n",
                    self.ready, node.node_name
                ));
            }
        }
        y
    }
}

/// Kernel counters reach /metrics once a second: wait until `name` is at least `min`.
fn wait_metric(agent: &enforcer_tests::sim::Agent, name: &str, min: f64) {
    let start = Instant::now();
    loop {
        let v = agent.metric(name).unwrap_or(0.0);
        if v >= min {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{name} = {v}, want at least {min}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn v4(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// `whoserves` from a pod: "NAME peer=ADDR:PORT", or the failure word.
fn who(node: &SimNode, from: &str, proto: &str, addr: IpAddr, port: u16) -> String {
    probe(
        node.pods[from].place(),
        &[
            "whoserves",
            proto,
            &addr.to_string(),
            &port.to_string(),
            "1500",
        ],
    )
    .1
    .trim()
    .to_string()
}

fn connect(node: &SimNode, from: &str, proto: &str, addr: IpAddr, port: u16) -> String {
    probe(
        node.pods[from].place(),
        &[
            "connect",
            proto,
            &addr.to_string(),
            &port.to_string(),
            "800",
        ],
    )
    .1
    .trim()
    .to_string()
}

fn peer(addr: IpAddr, port: u16) -> String {
    std::net::SocketAddr::new(addr, port).to_string()
}

/// kube-proxy-style DNAT in the node's network namespace (nftables, like kube-proxy's
/// nftables mode): each (frontend, port) -> backend address and port.
fn node_dnat(node: &SimNode, rules: &[(IpAddr, u16, IpAddr, u16)]) {
    let mut r = String::from(
        "table inet enforcer_test_kp {\n chain pre {\n  type nat hook prerouting priority dstnat; policy accept;\n",
    );
    for (fa, fp, ba, bp) in rules {
        let fam = if fa.is_ipv4() { "ip" } else { "ip6" };
        let target = if ba.is_ipv4() {
            format!("{ba}:{bp}")
        } else {
            format!("[{ba}]:{bp}")
        };
        r.push_str(&format!(
            "  {fam} daddr {fa} tcp dport {fp} dnat {fam} to {target}\n  {fam} daddr {fa} udp dport {fp} dnat {fam} to {target}\n"
        ));
    }
    r.push_str(" }\n}\n");
    let file = std::env::temp_dir().join(unique("enf-nft-"));
    fs::write(&file, r).unwrap();
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &node.node_ns.name, "nft", "-f"])
        .arg(&file)
        .output()
        .expect("nft");
    let _ = fs::remove_file(&file);
    assert!(
        out.status.success(),
        "nft: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const EGRESS_TO_B: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: client-to-b, namespace: x}
spec:
  podSelector: {matchLabels: {app: client}}
  policyTypes: [Egress]
  egress:
  - to:
    - podSelector: {matchLabels: {app: b}}
    ports:
    - {protocol: TCP, port: 80}
    - {protocol: UDP, port: 81}
"#;

/// client, b (app=b), c (app=c) in namespace x; Services svc-b and svc-c.
fn three_pods(node: &mut SimNode, s: u8) -> (Svc<'static>, Svc<'static>) {
    node.add_namespace("x", &[("kubernetes.io/metadata.name", "x")]);
    node.add_pod(pod("x", "client", &[("app", "client")]));
    node.add_pod(pod("x", "b", &[("app", "b")]));
    node.add_pod(pod("x", "c", &[("app", "c")]));
    node.write_cluster();
    node.enable_routing();
    let ports = vec![("http", "TCP", 80, 80), ("udp", "UDP", 81, 81)];
    let b = Svc {
        ns: "x",
        name: "svc-b",
        cluster_ips: vec![v4(&format!("10.96.{s}.10")), v4(&format!("fd96:{s}::10"))],
        ports: ports.clone(),
        backends: vec!["x/b"],
        ready: true,
        extra_spec: "",
    };
    let c = Svc {
        ns: "x",
        name: "svc-c",
        cluster_ips: vec![v4(&format!("10.96.{s}.11")), v4(&format!("fd96:{s}::11"))],
        ports,
        backends: vec!["x/c"],
        ready: true,
        extra_spec: "",
    };
    (b, c)
}

#[test]
fn egress_policy_holds_through_cluster_ips_beside_kube_proxy_dnat() {
    let test = "egress_policy_holds_through_cluster_ips_beside_kube_proxy_dnat";
    let Some(mut node) = node(test, 80, &[("tcp", 80), ("udp", 81)]) else {
        return;
    };
    let (b, c) = three_pods(&mut node, 80);
    // The node translates Service addresses itself, as kube-proxy does.
    let mut dnat = Vec::new();
    for (svc, backend) in [(&b, "x/b"), (&c, "x/c")] {
        let p = &node.pods[backend];
        dnat.push((svc.cluster_ips[0], 80, p.v4, 80));
        dnat.push((svc.cluster_ips[1], 80, p.v6, 80));
        dnat.push((svc.cluster_ips[0], 81, p.v4, 81));
    }
    node_dnat(&node, &dnat);
    node.write_manifest("10-svc-b.yaml", &b.yaml(&node));
    node.write_manifest("10-svc-c.yaml", &c.yaml(&node));
    node.write_manifest("20-policy.yaml", EGRESS_TO_B);
    let agent = node.start_agent(&[]);

    for (i, fam) in ["IPv4", "IPv6"].iter().enumerate() {
        let (bip, cip) = (b.cluster_ips[i], c.cluster_ips[i]);
        assert_eq!(
            who(&node, "x/client", "tcp", bip, 80),
            format!("b peer={}", peer(bip, 80)),
            "{fam}: the policy allows app=b, reached through its Service"
        );
        assert_eq!(
            connect(&node, "x/client", "tcp", cip, 80),
            "eperm",
            "{fam}: app=c is not allowed, also not through its Service"
        );
    }
    assert_eq!(
        who(&node, "x/client", "udp", b.cluster_ips[0], 81),
        format!("b peer={}", peer(b.cluster_ips[0], 81)),
        "unconnected UDP through the Service, the reply shown from the Service address"
    );
    assert_eq!(
        connect(&node, "x/client", "udp", c.cluster_ips[0], 81),
        "eperm"
    );
    // Pods not under the policy reach both.
    assert_eq!(
        who(&node, "x/b", "tcp", c.cluster_ips[0], 80),
        format!("c peer={}", peer(c.cluster_ips[0], 80))
    );
    wait_metric(&agent, "enforcer_service_translations_total", 5.0);
}

#[test]
fn services_are_translated_without_any_nat_and_host_network_is_untouched() {
    let test = "services_are_translated_without_any_nat_and_host_network_is_untouched";
    let Some(mut node) = node(test, 81, &[("tcp", 80), ("udp", 81)]) else {
        return;
    };
    let (b, _) = three_pods(&mut node, 81);
    // A hostNetwork pod: its process runs in the node's network namespace, in a pod cgroup.
    let host_uid = "0b0b0b0b-0000-4000-8000-000000004242";
    let host_cg = node.kubepods.join(format!(
        "kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{:064x}.scope",
        host_uid.replace('-', "_"),
        4242
    ));
    fs::create_dir_all(&host_cg).unwrap();
    node.write_manifest(
        "05-hostnet.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: hostnet, namespace: x, uid: {host_uid}}}\nspec:\n  nodeName: {}\n  hostNetwork: true\n  containers: [{{name: c, image: busybox}}]\nstatus:\n  phase: Running\n  podIP: {}\n  podIPs: [{{ip: {}}}]\n",
            node.node_name, node.node_v4, node.node_v4
        ),
    );
    node.write_manifest("10-svc-b.yaml", &b.yaml(&node));
    let _agent = node.start_agent(&[]);

    for ip in &b.cluster_ips {
        assert_eq!(
            who(&node, "x/client", "tcp", *ip, 80),
            format!("b peer={}", peer(*ip, 80)),
            "TCP to {ip}: translated, getpeername shows the Service"
        );
        assert_eq!(
            who(&node, "x/client", "udp", *ip, 81),
            format!("b peer={}", peer(*ip, 81)),
            "unconnected UDP to {ip}: recvfrom shows the Service"
        );
        let o = probe(
            node.pods["x/client"].place(),
            &["udp-connected", &ip.to_string(), "81", "1500"],
        )
        .1;
        assert_eq!(o.trim(), "ok", "connected UDP to {ip}");
    }
    // The hostNetwork pod's process is not translated: nothing answers the Service
    // address in the node's namespace (no route, no NAT).
    let o = probe(
        Place {
            netns: Some(&node.node_ns),
            cgroup: Some(&host_cg),
        },
        &["connect", "tcp", &b.cluster_ips[0].to_string(), "80", "800"],
    )
    .1;
    assert_ne!(o.trim(), "ok", "a hostNetwork process was translated");
    assert_ne!(
        o.trim(),
        "eperm",
        "a hostNetwork process was judged by pod policy"
    );
}

#[test]
fn dns_through_the_cluster_ip_under_the_example_policy() {
    let test = "dns_through_the_cluster_ip_under_the_example_policy";
    let Some(mut node) = node(test, 82, &[("dns", 53), ("tcp", 80)]) else {
        return;
    };
    node.add_namespace("shop", &[("kubernetes.io/metadata.name", "shop")]);
    node.add_namespace(
        "kube-system",
        &[("kubernetes.io/metadata.name", "kube-system")],
    );
    node.add_pod(pod("shop", "client", &[("app", "client")]));
    node.add_pod(pod("shop", "other", &[("app", "other")]));
    node.add_pod(pod("kube-system", "coredns", &[("k8s-app", "kube-dns")]));
    node.write_cluster();
    node.enable_routing();
    let dns = Svc {
        ns: "kube-system",
        name: "kube-dns",
        cluster_ips: vec![v4("10.96.82.10")],
        ports: vec![("dns", "UDP", 53, 53), ("dns-tcp", "TCP", 53, 53)],
        backends: vec!["kube-system/coredns"],
        ready: true,
        extra_spec: "",
    };
    node.write_manifest("10-kube-dns.yaml", &dns.yaml(&node));
    let root = env!("CARGO_MANIFEST_DIR");
    let example = fs::read_to_string(format!(
        "{root}/../deploy/examples/policies/20-allow-dns.yaml"
    ))
    .unwrap();
    node.write_manifest("20-allow-dns.yaml", &example);
    node.write_manifest(
        "30-deny.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: default-deny, namespace: shop}\nspec:\n  podSelector: {}\n  policyTypes: [Egress]\n",
    );
    let _agent = node.start_agent(&[]);
    let o = probe(
        node.pods["shop/client"].place(),
        &["dns", "10.96.82.10", "api.shop.svc.cluster.local", "1500"],
    )
    .1;
    assert_eq!(
        o.trim(),
        "192.0.2.53",
        "a name resolved through the kube-dns ClusterIP"
    );
    assert_eq!(
        connect(&node, "shop/client", "tcp", node.pods["shop/other"].v4, 80),
        "eperm",
        "everything else stays denied"
    );
}

#[test]
fn endpoint_changes_apply_live_and_a_service_without_backends_refuses() {
    let test = "endpoint_changes_apply_live_and_a_service_without_backends_refuses";
    let Some(mut node) = node(test, 83, &[("tcp", 80), ("udp", 81)]) else {
        return;
    };
    let (mut b, _) = three_pods(&mut node, 83);
    node.write_manifest("10-svc.yaml", &b.yaml(&node));
    let agent = node.start_agent(&[]);
    let ip = b.cluster_ips[0];
    assert!(who(&node, "x/client", "tcp", ip, 80).starts_with("b "));

    let wait = |want: &str| {
        let start = Instant::now();
        loop {
            let got = who(&node, "x/client", "tcp", ip, 80);
            if got.starts_with(want) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "still {got:?}, want {want:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    b.backends = vec!["x/c"];
    node.write_manifest("10-svc.yaml", &b.yaml(&node));
    wait("c ");
    b.ready = false;
    node.write_manifest("10-svc.yaml", &b.yaml(&node));
    wait("eperm");
    wait_metric(&agent, "enforcer_service_no_backend_total", 1.0);
    b.ready = true;
    b.backends = vec!["x/b", "x/c"];
    node.write_manifest("10-svc.yaml", &b.yaml(&node));
    let start = Instant::now();
    let mut seen = std::collections::BTreeSet::new();
    // Until the change is in force the Service still refuses ("eperm").
    while seen.len() < 2 {
        let got = who(&node, "x/client", "tcp", ip, 80);
        if got.ends_with(&format!("peer={}", peer(ip, 80))) {
            seen.insert(got.split(' ').next().unwrap_or("").to_string());
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "not both backends: {seen:?}"
        );
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["b", "c"],
        "both backends answer"
    );
}

#[test]
fn session_affinity_client_ip_keeps_one_backend() {
    let test = "session_affinity_client_ip_keeps_one_backend";
    let Some(mut node) = node(test, 84, &[("tcp", 80), ("udp", 81)]) else {
        return;
    };
    let (mut b, _) = three_pods(&mut node, 84);
    b.backends = vec!["x/b", "x/c"];
    b.extra_spec =
        "  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}\n";
    node.write_manifest("10-svc.yaml", &b.yaml(&node));
    let _agent = node.start_agent(&[]);
    let ip = b.cluster_ips[0];
    let first = who(&node, "x/client", "tcp", ip, 80);
    assert!(
        first.ends_with(&format!("peer={}", peer(ip, 80))),
        "{first}"
    );
    for _ in 0..12 {
        assert_eq!(who(&node, "x/client", "tcp", ip, 80), first);
    }
}

#[test]
fn node_port_reaches_the_backend_and_the_kubelet_port_is_judged_by_policy() {
    let test = "node_port_reaches_the_backend_and_the_kubelet_port_is_judged_by_policy";
    let Some(mut node) = node(test, 85, &[("tcp", 80), ("udp", 81)]) else {
        return;
    };
    let (mut b, _) = three_pods(&mut node, 85);
    b.ports = vec![("http", "TCP", 80, 80)];
    b.extra_spec = "  type: NodePort\n";
    let yaml = b
        .yaml(&node)
        .replace("port: 80}\n", "port: 80, nodePort: 30080}\n");
    node.write_manifest("10-svc.yaml", &yaml);
    node.write_manifest("20-policy.yaml", EGRESS_TO_B);
    // A kubelet-like server on the node's own address.
    let _kubelet = Bg::spawn(
        Place {
            netns: Some(&node.node_ns),
            cgroup: None,
        },
        &["serve", "id=kubelet", "tcp:10250"],
    );
    std::thread::sleep(Duration::from_millis(200));
    let _agent = node.start_agent(&[]);
    assert_eq!(
        who(&node, "x/client", "tcp", node.node_v4, 30080),
        format!("b peer={}", peer(node.node_v4, 30080)),
        "the NodePort on the node's address leads to the allowed backend"
    );
    assert_eq!(
        connect(&node, "x/client", "tcp", node.node_v4, 10250),
        "eperm",
        "egress to the node's kubelet port is not allowed by the policy"
    );
    // Pods without an egress policy reach it, and the node reaches pods (probes).
    assert_eq!(
        who(&node, "x/b", "tcp", node.node_v4, 10250),
        format!("kubelet peer={}", peer(node.node_v4, 10250))
    );
    assert_eq!(node.probe_from_node("x/client", "tcp", 80).trim(), "ok");
}
