//! VM tier: NetworkPolicy where this host cannot go. The VM kernel (Debian 6.1) has SCTP,
//! which this host's kernel lacks, and the BPF LSM, so the agent runs with both its network
//! programs and its LSM-tier guards attached. Same simulated node and real agent as the
//! kernel-tier conformance suite; fewer pods, as emulation is slow.

use std::time::Duration;

use enforcer_tests::{
    is_root,
    sim::{Agent, PodSpec, SimNode},
    skip,
};

const PODS: &[&str] = &["x/a", "x/b", "y/a"];
const PORTS: &[(&str, u16)] = &[("tcp", 80), ("sctp", 80), ("sctp", 81), ("udp", 80)];

fn sctp_available() -> bool {
    // SAFETY: plain syscalls; the socket is closed at once.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, libc::IPPROTO_SCTP);
        if fd >= 0 {
            libc::close(fd);
        }
        fd >= 0
    }
}

fn world(test: &str, subnet: u8) -> Option<(SimNode, Agent)> {
    let in_vm = std::env::var_os("ENFORCER_VM").is_some();
    if !is_root() {
        skip(test, "needs root");
        return None;
    }
    if !sctp_available() {
        assert!(!in_vm, "SCTP must be available in the VM kernel");
        skip(
            test,
            "this kernel has no SCTP; run `cargo xtask test --tier vm`",
        );
        return None;
    }
    let mut node = SimNode::new(subnet);
    node.ports = PORTS.to_vec();
    for ns in ["x", "y"] {
        node.add_namespace(ns, &[]);
    }
    for p in PODS {
        let (ns, name) = p.split_once('/').unwrap();
        node.add_pod(PodSpec::new(ns, name, true));
    }
    node.write_cluster();
    let agent = node.start_agent(&[]);
    Some((node, agent))
}

fn policies(node: &SimNode, agent: &Agent, yaml: &str) {
    let before = agent.reconciles();
    node.write_manifest("10-policies.yaml", yaml);
    agent.wait_reconciled(before, Duration::from_secs(20));
}

fn check(node: &SimNode, v6: bool, expect: impl Fn(&str, &str, &str, u16) -> bool) {
    let got = node.matrix(PODS, PODS, v6, 1500);
    let mut wrong = Vec::new();
    for ((f, t, proto, port), outcome) in &got {
        let want = f == t || expect(f, t, proto, *port);
        let mut outcome = outcome.clone();
        if (outcome == "ok") != want {
            outcome = node.probe(f, t, proto, *port, v6, 4000);
        }
        if (outcome == "ok") != want {
            wrong.push(format!(
                "{f} -> {t} {proto}/{port}{}: got {outcome}, expected {}",
                if v6 { " (IPv6)" } else { "" },
                if want { "allowed" } else { "denied" }
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn sctp_ports_and_protocol_isolation() {
    let Some((node, agent)) = world("sctp_ports_and_protocol_isolation", 40) else {
        return;
    };
    check(&node, false, |_, _, _, _| true);
    policies(
        &node,
        &agent,
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-sctp-80, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - ports:
    - {protocol: SCTP, port: 80}
"#,
    );
    check(&node, false, |_, t, proto, port| {
        t != "x/a" || (proto == "sctp" && port == 80)
    });
    check(&node, true, |_, t, proto, port| {
        t != "x/a" || (proto == "sctp" && port == 80)
    });
}

#[test]
fn sctp_egress_and_stateful_replies() {
    let Some((node, agent)) = world("sctp_egress_and_stateful_replies", 41) else {
        return;
    };
    // x/b may only send SCTP to y; x/a accepts nothing but answers (replies pass).
    policies(
        &node,
        &agent,
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b-egress-sctp-to-y, namespace: x}
spec:
  podSelector: {matchLabels: {pod: b}}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector: {matchLabels: {ns: y}}
    ports:
    - {protocol: SCTP}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-egress-none, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
"#,
    );
    check(&node, false, |f, t, proto, _| match f {
        "x/b" => t == "y/a" && proto == "sctp",
        "x/a" => false,
        _ => true,
    });
}
