//! A cluster of realistic shape and size (5,000 pods, 200 policies), compiled twice: from
//! scratch and after a small change. Prints the timings; asserts only on results, never on
//! time (machines differ, and this runs unoptimised).

use std::time::Instant;

use super::harness::*;
use crate::{
    model::{NamedPort, Operator, Protocol},
    policy::{Compiler, diff},
};

const PODS: usize = 5_000;
const POLICIES: usize = 200;
const NAMESPACES: usize = 20;
const APPS: usize = 50;

fn big_world() -> World {
    let mut w = World::new();
    for n in 0..NAMESPACES {
        let team = format!("t{}", n % 4);
        w.ns(&format!("ns{n}"), &[("team", &team)]);
    }
    for i in 0..PODS {
        let ns = format!("ns{}", i % NAMESPACES);
        let app = format!("a{}", i % APPS);
        // One deployment per (namespace, app): its pods share a template hash.
        let hash = format!("h{}", (i % NAMESPACES) * APPS + i % APPS);
        let version = format!("v{}", i % 3);
        let ip4 = format!("10.{}.{}.{}", 1 + i / 65536, (i / 256) % 256, i % 256);
        let ip6 = format!("fd00:10::{i:x}");
        let key = format!("{ns}/pod{i}");
        let labels = [
            ("app", app.as_str()),
            ("pod-template-hash", hash.as_str()),
            ("version", version.as_str()),
        ];
        // About 100 local pods, of many apps and namespaces.
        let pod = if i % 49 == 0 {
            w.pod(&key, &labels, &[&ip4, &ip6])
        } else {
            w.remote_pod(&key, &labels, &[&ip4, &ip6])
        };
        pod.named_ports.push(NamedPort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 8000 + (i % 4) as u16,
        });
        if i % 2 == 0 {
            pod.named_ports.push(NamedPort {
                name: "metrics".into(),
                protocol: Protocol::Tcp,
                port: 9090,
            });
        }
    }
    for j in 0..POLICIES {
        let ns = format!("ns{}", j % NAMESPACES);
        let key = format!("{ns}/np{j}");
        if j < NAMESPACES {
            // A default deny per namespace.
            w.policy(&key, sel(&[]), Some(vec![]), Some(vec![]));
            continue;
        }
        let app = format!("a{}", j % APPS);
        let client = format!("a{}", (j + 1) % APPS);
        let team = format!("t{}", j % 4);
        let except = format!("10.1.{}.0/24", j % 20);
        w.policy(
            &key,
            sel(&[("app", &app)]),
            Some(vec![
                rule(
                    vec![
                        pods_in(&ns, sel(&[("app", &client)])),
                        ns_and_pods(
                            sel(&[("team", &team)]),
                            exprs(&[("version", Operator::In, &["v0", "v1"])]),
                        ),
                    ],
                    vec![tcp(8080), named(Protocol::Tcp, "http")],
                ),
                rule(
                    vec![block("10.0.0.0/8", &[&except])],
                    vec![range(Protocol::Tcp, 9000, 9100)],
                ),
            ]),
            Some(vec![
                rule(
                    vec![pods_in(&ns, sel(&[("app", &client)]))],
                    vec![named(Protocol::Tcp, "http")],
                ),
                rule(vec![block("0.0.0.0/0", &["10.0.0.0/8"])], vec![tcp(443)]),
                rule(
                    vec![namespaces(sel(&[("team", "t0")]))],
                    vec![udp(53), tcp(53)],
                ),
            ]),
        );
    }
    w
}

#[test]
fn compile_5000_pods_200_policies() {
    let mut w = big_world();
    let mut compiler = Compiler::new();

    let start = Instant::now();
    let d1 = compiler.compile(&w.input());
    let first = start.elapsed();

    // A small change: one pod goes, one comes, one policy (selecting local pod 245, of
    // ns5 and app a45) changes.
    w.remove_pod("ns3/pod3");
    w.remote_pod("ns3/newpod", &[("app", "a3")], &["10.200.0.1"]);
    w.policy(
        "ns5/np145",
        sel(&[("app", "a45")]),
        Some(vec![rule(
            vec![pods_in("ns5", sel(&[("app", "a46")]))],
            vec![tcp(8081)],
        )]),
        None,
    );
    let start = Instant::now();
    let d2 = compiler.compile(&w.input());
    let second = start.elapsed();
    let pdiff = diff(&d1.policy, &d2.policy);
    let idiff = diff(&d1.ipcache, &d2.ipcache);

    println!(
        "compile {PODS} pods / {POLICIES} policies: first {first:?}, after a small change \
         {second:?}; {} endpoints, {} identities, {} ipcache entries, {} policy entries; \
         change: policy +{} -{}, ipcache +{} -{}",
        d2.endpoints.len(),
        d2.identities.len(),
        d2.ipcache.len(),
        d2.policy.len(),
        pdiff.upserts.len(),
        pdiff.deletes.len(),
        idiff.upserts.len(),
        idiff.deletes.len(),
    );
    check_invariants(&d1);
    check_invariants(&d2);
    assert_eq!(d1.endpoints.len(), PODS.div_ceil(49));
    // Every pod address has an exact entry (two per pod), plus node and regions.
    assert!(d1.ipcache.len() >= 2 * PODS);
    // The small change stays small.
    assert!(pdiff.upserts.len() + pdiff.deletes.len() < d1.policy.len() / 4);
    assert!(idiff.upserts.len() + idiff.deletes.len() < 20);

    // Spot-check semantics on the big cluster against the reference (which `Check`
    // asserts): a few local pods, a range of peers and ports.
    let c = w.check(&d2);
    let (mut allowed, mut denied) = (0, 0);
    for i in (0..245).step_by(49) {
        let pod = format!("ns{}/pod{i}", i % NAMESPACES);
        let peers = (0..40)
            .map(|k| format!("10.1.0.{k}"))
            .chain(["8.8.8.8".to_string(), "10.1.5.1".to_string()]);
        for peer in peers {
            for port in [53, 443, 8000, 8001, 8080, 9050, 9090] {
                for ok in [
                    c.ingress(&pod, &peer, Protocol::Tcp, port),
                    c.egress(&pod, &peer, Protocol::Tcp, port),
                ] {
                    if ok {
                        allowed += 1;
                    } else {
                        denied += 1;
                    }
                }
            }
        }
    }
    assert!(
        allowed > 0 && denied > 0,
        "allowed {allowed}, denied {denied}"
    );
}
