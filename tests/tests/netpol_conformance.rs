//! NetworkPolicy conformance, modeled on the upstream Kubernetes e2e suite
//! (test/e2e/network/netpol): namespaces x, y, z with pods a, b, c, each serving TCP and UDP
//! on ports 80 and 81 (container ports named serve-80-tcp, serve-81-udp, ...). z/c runs "on
//! another node": it is a peer the agent knows from the manifests, not an endpoint it
//! enforces. For every case the full matrix of real connections (from every pod to every pod
//! on every port) is compared with a truth table written by hand for that case.
//!
//! The agent is the real `enforcer` binary in standalone mode, in its own node network
//! namespace, fed through a manifests directory that the test rewrites.

use std::time::Duration;

use enforcer_tests::{
    is_root,
    sim::{Agent, PodSpec, SimNode},
    skip,
};

const ALL: &[&str] = &[
    "x/a", "x/b", "x/c", "y/a", "y/b", "y/c", "z/a", "z/b", "z/c",
];
const REMOTE: &str = "z/c";
const TIMEOUT_MS: u64 = 800;

struct World {
    node: SimNode,
    agent: Agent,
}

fn world(test: &str, subnet: u8) -> Option<World> {
    if !is_root() {
        skip(
            test,
            "needs root (BPF programs, cgroups, network namespaces)",
        );
        return None;
    }
    let mut node = SimNode::new(subnet);
    for ns in ["x", "y", "z"] {
        node.add_namespace(ns, &[]);
    }
    for p in ALL {
        let (ns, name) = p.split_once('/').unwrap();
        node.add_pod(PodSpec::new(ns, name, *p != REMOTE));
    }
    node.write_cluster();
    let agent = node.start_agent(&[]);
    Some(World { node, agent })
}

impl World {
    /// Replace the policy file (empty: remove it) and wait until the agent applied it.
    fn policies(&self, yaml: &str) -> Duration {
        let before = self.agent.reconciles();
        if yaml.trim().is_empty() {
            self.node.remove_manifest("10-policies.yaml");
        } else {
            self.node.write_manifest("10-policies.yaml", yaml);
        }
        self.agent.wait_reconciled(before, Duration::from_secs(5))
    }

    fn recluster(&self) {
        let before = self.agent.reconciles();
        self.node.write_cluster();
        self.agent.wait_reconciled(before, Duration::from_secs(5));
    }

    /// Probe the full matrix and compare with `expect(from, to, proto, port)`.
    fn check(&self, case: &str, v6: bool, expect: impl Fn(&str, &str, &str, u16) -> bool) {
        let mut got = self.node.matrix(ALL, ALL, v6, TIMEOUT_MS);
        // Re-probe mismatches once, slowly: a loaded machine can delay an allowed reply.
        for ((f, t, proto, port), outcome) in got.iter_mut() {
            let want = f == t || expect(f, t, proto, *port);
            if (outcome == "ok") != want {
                *outcome = self.node.probe(f, t, proto, *port, v6, 3000);
            }
        }
        let mut wrong = Vec::new();
        let mut table = String::new();
        for f in ALL {
            table.push_str(&format!("\n  {f:>4} |"));
            for t in ALL {
                let mut cell = String::new();
                for (proto, port) in &self.node.ports {
                    let outcome = &got[&(f.to_string(), t.to_string(), proto.to_string(), *port)];
                    let want = *f == *t || expect(f, t, proto, *port);
                    let ok = outcome == "ok";
                    cell.push(match (ok, want) {
                        (true, true) => '.',
                        (false, false) => 'x',
                        (true, false) => '!',
                        (false, true) => '?',
                    });
                    if ok != want {
                        wrong.push(format!(
                            "{f} -> {t} {proto}/{port}: got {outcome}, expected {}",
                            if want { "allowed" } else { "denied" }
                        ));
                    }
                }
                table.push_str(&format!(" {cell}"));
            }
        }
        if !wrong.is_empty() {
            panic!(
                "case {case}{}: {} of {} connections wrong\n  columns: {} (each: tcp80 tcp81 udp80 udp81; . allowed, x denied, ! allowed but should be denied, ? denied but should be allowed){table}\n{}\n--- agent log ---\n{}",
                if v6 { " (IPv6)" } else { "" },
                wrong.len(),
                got.len(),
                ALL.join(" "),
                wrong.join("\n"),
                self.agent.log_text()
            );
        }
    }
}

fn ns(p: &str) -> &str {
    p.split_once('/').unwrap().0
}
fn pod(p: &str) -> &str {
    p.split_once('/').unwrap().1
}

/// Generate one `#[test]` per case: `case!(name, subnet, |w| { ... })`.
macro_rules! case {
    ($name:ident, $subnet:expr, $body:expr) => {
        #[test]
        fn $name() {
            let Some(mut w) = world(stringify!($name), $subnet) else {
                return;
            };
            let f: &dyn Fn(&mut World) = &$body;
            f(&mut w);
        }
    };
}

case!(no_policies_everything_allowed, 1, |w| {
    w.check("no policies", false, |_, _, _, _| true);
});

case!(default_deny_ingress, 2, |w| {
    w.policies(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-ingress, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Ingress]
"#,
    );
    w.check("deny ingress to x", false, |_, t, _, _| ns(t) != "x");
});

case!(default_deny_egress, 3, |w| {
    w.policies(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-egress, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Egress]
"#,
    );
    w.check("deny egress from x", false, |f, _, _, _| ns(f) != "x");
});

case!(default_deny_both_directions, 4, |w| {
    w.policies(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
"#,
    );
    w.check("deny both in x", false, |f, t, _, _| {
        ns(f) != "x" && ns(t) != "x"
    });
});

case!(allow_ingress_from_same_namespace, 5, |w| {
    w.policies(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: same-ns, namespace: x}
spec:
  podSelector: {}
  ingress:
  - from:
    - podSelector: {}
"#,
    );
    w.check("ingress within x only", false, |f, t, _, _| {
        ns(t) != "x" || ns(f) == "x"
    });
});

case!(allow_ingress_from_pod_selector, 6, |w| {
    w.policies(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-from-b, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - podSelector: {matchLabels: {pod: b}}
"#,
    );
    w.check("x/a only from x/b", false, |f, t, _, _| {
        t != "x/a" || f == "x/b"
    });
});

case!(allow_ingress_from_namespace_selector, 7, |w| {
    w.policies(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-from-y, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {ns: y}}
"#,
    );
    w.check("x/a only from y", false, |f, t, _, _| {
        t != "x/a" || ns(f) == "y"
    });
});

case!(namespace_and_pod_selector_in_one_peer, 8, |w| {
    w.policies(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-from-y-b, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {ns: y}}
      podSelector: {matchLabels: {pod: b}}
"#,
    );
    w.check("x/a only from y/b", false, |f, t, _, _| {
        t != "x/a" || f == "y/b"
    });
});

case!(namespace_or_pod_selector_in_two_peers, 9, |w| {
    w.policies(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-from-y-or-b, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {ns: y}}
    - podSelector: {matchLabels: {pod: b}}
"#,
    );
    w.check("x/a from y/* or x/b", false, |f, t, _, _| {
        t != "x/a" || ns(f) == "y" || f == "x/b"
    });
});

case!(namespace_selector_match_expressions_in, 10, |w| {
    w.policies(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-from-y-z, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector:
        matchExpressions:
        - {key: ns, operator: In, values: [y, z]}
"#,
    );
    w.check("x/a from y, z", false, |f, t, _, _| {
        t != "x/a" || ns(f) != "x"
    });
});

case!(pod_selector_match_expressions_not_in, 11, |w| {
    w.policies(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-not-from-b, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - podSelector:
        matchExpressions:
        - {key: pod, operator: NotIn, values: [b]}
"#,
    );
    w.check("x/a from x/* except x/b", false, |f, t, _, _| {
        t != "x/a" || (ns(f) == "x" && pod(f) != "b")
    });
});

case!(match_expressions_exists_and_does_not_exist, 12, |w| {
    w.policies(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-from-nobody, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - podSelector:
        matchExpressions:
        - {key: pod, operator: DoesNotExist}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b-from-every-namespace, namespace: x}
spec:
  podSelector: {matchLabels: {pod: b}}
  ingress:
  - from:
    - namespaceSelector:
        matchExpressions:
        - {key: ns, operator: Exists}
"#,
    );
    w.check("x/a closed, x/b open to all", false, |_, t, _, _| {
        t != "x/a"
    });
});

case!(ingress_port_80_tcp_only, 13, |w| {
    w.policies(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-port-80, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - ports:
    - port: 80
"#,
    );
    w.check("x/a tcp/80 only", false, |_, t, proto, port| {
        t != "x/a" || (proto == "tcp" && port == 80)
    });
});

case!(ingress_named_port, 14, |w| {
    w.policies(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-named-port, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - ports:
    - port: serve-81-udp
      protocol: UDP
"#,
    );
    w.check("x/a udp/81 by name", false, |_, t, proto, port| {
        t != "x/a" || (proto == "udp" && port == 81)
    });
});

case!(named_port_with_wrong_protocol_opens_nothing, 15, |w| {
    w.policies(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-named-port-tcp, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - ports:
    - port: serve-81-udp
      protocol: TCP
"#,
    );
    w.check("x/a closed", false, |_, t, _, _| t != "x/a");
});

case!(protocol_udp_never_opens_tcp, 16, |w| {
    w.policies(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-udp, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - ports:
    - protocol: UDP
"#,
    );
    w.check("x/a udp only", false, |_, t, proto, _| {
        t != "x/a" || proto == "udp"
    });
});

case!(end_port_range, 17, |w| {
    w.policies(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-range, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - ports:
    - protocol: TCP
      port: 79
      endPort: 81
"#,
    );
    w.check("x/a tcp 79-81", false, |_, t, proto, _| {
        t != "x/a" || proto == "tcp"
    });
});

case!(egress_to_namespace_only, 18, |w| {
    w.policies(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: egress-to-y, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector: {matchLabels: {ns: y}}
"#,
    );
    w.check("x egress to y only", false, |f, t, _, _| {
        ns(f) != "x" || ns(t) == "y"
    });
});

case!(egress_by_port_to_anyone, 19, |w| {
    w.policies(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: egress-80, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress:
  - ports:
    - {protocol: TCP, port: 80}
"#,
    );
    w.check("x egress tcp/80 only", false, |f, _, proto, port| {
        ns(f) != "x" || (proto == "tcp" && port == 80)
    });
});

case!(egress_named_port_resolved_on_destination, 20, |w| {
    w.policies(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: egress-named, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector: {}
    ports:
    - {protocol: UDP, port: serve-80-udp}
"#,
    );
    w.check("x egress udp/80 by name", false, |f, _, proto, port| {
        ns(f) != "x" || (proto == "udp" && port == 80)
    });
});

case!(ip_block_ingress_with_except, 21, |w| {
    let except = w.node.pods["y/b"].v4;
    w.policies(&format!(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: a-from-cidr, namespace: x}}
spec:
  podSelector: {{matchLabels: {{pod: a}}}}
  ingress:
  - from:
    - ipBlock:
        cidr: 10.77.21.0/24
        except: [{except}/32]
"#
    ));
    w.check("x/a from the pod CIDR except y/b", false, |f, t, _, _| {
        t != "x/a" || f != "y/b"
    });
});

case!(ip_block_egress_to_one_pod_ip, 22, |w| {
    let ip = w.node.pods["y/a"].v4;
    w.policies(&format!(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: x-to-ya, namespace: x}}
spec:
  podSelector: {{}}
  policyTypes: [Egress]
  egress:
  - to:
    - ipBlock: {{cidr: {ip}/32}}
"#
    ));
    w.check("x egress only to y/a's IP", false, |f, t, _, _| {
        ns(f) != "x" || t == "y/a"
    });
});

case!(policies_are_a_union, 23, |w| {
    w.policies(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-from-b, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - podSelector: {matchLabels: {pod: b}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-from-z-udp, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {ns: z}}
    ports:
    - protocol: UDP
"#,
    );
    w.check("x/a from x/b, or udp from z", false, |f, t, proto, _| {
        t != "x/a" || f == "x/b" || (ns(f) == "z" && proto == "udp")
    });
});

case!(explicit_allow_all_ingress, 24, |w| {
    w.policies(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Ingress]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-all, namespace: x}
spec:
  podSelector: {}
  ingress:
  - {}
"#,
    );
    w.check("everything allowed", false, |_, _, _, _| true);
});

case!(egress_only_policy_leaves_ingress_open, 25, |w| {
    w.policies(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: egress-y, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector: {matchLabels: {ns: y}}
      podSelector: {matchLabels: {pod: a}}
"#,
    );
    w.check(
        "x egress to y/a only; ingress untouched",
        false,
        |f, t, _, _| ns(f) != "x" || t == "y/a",
    );
});

case!(stateful_replies_pass_both_ways, 26, |w| {
    // x/a: egress closed, ingress open. y/a: ingress closed, egress open.
    // Connections *to* x/a work (its replies pass its closed egress); connections *from*
    // y/a work (their replies pass its closed ingress).
    w.policies(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: no-egress, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: no-ingress, namespace: y}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress]
"#,
    );
    w.check("stateful", false, |f, t, _, _| f != "x/a" && t != "y/a");
});

case!(ingress_from_pod_on_another_node, 27, |w| {
    w.policies(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-from-zc, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {ns: z}}
      podSelector: {matchLabels: {pod: c}}
"#,
    );
    w.check("x/a only from z/c (remote)", false, |f, t, _, _| {
        t != "x/a" || f == "z/c"
    });
});

case!(egress_to_pod_on_another_node, 28, |w| {
    w.policies(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: x-to-zc, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector: {matchLabels: {ns: z}}
      podSelector: {matchLabels: {pod: c}}
"#,
    );
    w.check("x egress to z/c only", false, |f, t, _, _| {
        ns(f) != "x" || t == "z/c"
    });
});

case!(target_selected_by_match_expressions, 29, |w| {
    w.policies(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-a-b, namespace: y}
spec:
  podSelector:
    matchExpressions:
    - {key: pod, operator: In, values: [a, b]}
  policyTypes: [Ingress]
"#,
    );
    w.check("y/a, y/b closed", false, |_, t, _, _| {
        t != "y/a" && t != "y/b"
    });
});

case!(update_policy_changed, 30, |w| {
    let p = |from: &str| {
        format!(
            r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: a-from, namespace: x}}
spec:
  podSelector: {{matchLabels: {{pod: a}}}}
  ingress:
  - from:
    - podSelector: {{matchLabels: {{pod: {from}}}}}
"#
        )
    };
    w.policies(&p("b"));
    w.check("x/a from x/b", false, |f, t, _, _| t != "x/a" || f == "x/b");
    w.policies(&p("c"));
    w.check("x/a from x/c after update", false, |f, t, _, _| {
        t != "x/a" || f == "x/c"
    });
});

case!(update_pod_label_changed, 31, |w| {
    w.policies(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-from-clients, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - podSelector: {matchLabels: {role: client}}
"#,
    );
    w.check("x/a closed", false, |_, t, _, _| t != "x/a");
    // Relabel x/c as a client: it gets in, nobody else does.
    w.node
        .pods
        .get_mut("x/c")
        .unwrap()
        .spec
        .labels
        .insert("role".into(), "client".into());
    w.recluster();
    w.check("x/a from relabelled x/c", false, |f, t, _, _| {
        t != "x/a" || f == "x/c"
    });
});

case!(update_namespace_label_changed, 32, |w| {
    w.policies(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-from-blue, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {team: blue}}
"#,
    );
    w.check("x/a closed", false, |_, t, _, _| t != "x/a");
    w.node
        .namespaces
        .get_mut("y")
        .unwrap()
        .insert("team".into(), "blue".into());
    w.recluster();
    w.check("x/a from relabelled namespace y", false, |f, t, _, _| {
        t != "x/a" || ns(f) == "y"
    });
});

case!(update_policy_deleted, 33, |w| {
    w.policies(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
"#,
    );
    w.check("x closed", false, |f, t, _, _| ns(f) != "x" && ns(t) != "x");
    w.policies("");
    w.check("x open again", false, |_, _, _, _| true);
});

case!(node_to_pod_always_allowed, 34, |w| {
    w.policies(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Ingress]
"#,
    );
    for (proto, port) in [("tcp", 80), ("udp", 81)] {
        assert_eq!(
            w.node.probe_from_node("x/a", proto, port),
            "ok",
            "node -> x/a {proto}/{port}"
        );
    }
    assert_eq!(
        w.node.probe("y/a", "x/a", "tcp", 80, false, TIMEOUT_MS),
        "timeout"
    );
});

case!(ipv6_default_deny_and_pod_selector, 35, |w| {
    w.policies(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-from-b, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - podSelector: {matchLabels: {pod: b}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-egress, namespace: y}
spec:
  podSelector: {}
  policyTypes: [Egress]
"#,
    );
    w.check("IPv6", true, |f, t, _, _| {
        (t != "x/a" || f == "x/b") && (ns(f) != "y")
    });
});

case!(ipv6_ip_block_with_except, 36, |w| {
    let except = w.node.pods["y/b"].v6;
    w.policies(&format!(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: a-from-v6-cidr, namespace: x}}
spec:
  podSelector: {{matchLabels: {{pod: a}}}}
  ingress:
  - from:
    - ipBlock:
        cidr: "fd77:36::/64"
        except: ["{except}/128"]
"#
    ));
    w.check("x/a from the v6 pod CIDR except y/b", true, |f, t, _, _| {
        t != "x/a" || f != "y/b"
    });
});
