//! Store tests: snapshots built incrementally equal the state (whoever holds old ones),
//! the two pod watches never lose each other's pods, relists remove exactly what is gone,
//! and invalid objects never replace a valid version.

use std::collections::BTreeMap;

use super::*;
use crate::manifests::FieldError;

const NODE: &str = "node-a";

fn key(ns: &str, name: &str) -> ObjectRef {
    ObjectRef {
        namespace: ns.into(),
        name: name.into(),
    }
}

fn pod(name: &str, node: Option<&str>, app: &str) -> model::Pod {
    model::Pod {
        namespace: "n".into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        labels: [("app".to_string(), app.to_string())].into(),
        node_name: node.map(str::to_string),
        host_network: false,
        ips: vec![],
        named_ports: vec![],
        terminal: false,
    }
}

fn ns(name: &str, v: &str) -> model::Namespace {
    model::Namespace {
        name: name.into(),
        labels: [("v".to_string(), v.to_string())].into(),
    }
}

fn ok<T: Slot>(key: T::Key, value: T) -> Ev<T> {
    Ev::Apply(Converted {
        key,
        version: "1".into(),
        result: Ok(value),
    })
}

fn bad<T: Slot>(key: T::Key, version: &str) -> Ev<T> {
    Ev::Apply(Converted {
        key,
        version: version.into(),
        result: Err(vec![FieldError {
            field: "spec".into(),
            message: "broken".into(),
        }]),
    })
}

fn rp(name: &str, enforce: u32) -> RuntimePolicy {
    RuntimePolicy {
        namespace: "n".into(),
        name: name.into(),
        pod_selector: Default::default(),
        enforce,
        audit: 0,
    }
}

/// Every watch synced with nothing.
fn synced_store() -> Store {
    let mut s = Store::new(NODE);
    for res in Res::ALL {
        match res {
            Res::LocalPods | Res::Pods => {
                s.handle::<model::Pod>(res, Ev::Init);
                s.handle::<model::Pod>(res, Ev::InitDone);
            }
            Res::Namespaces => {
                s.handle::<model::Namespace>(res, Ev::Init);
                s.handle::<model::Namespace>(res, Ev::InitDone);
            }
            Res::NetworkPolicies => {
                s.handle::<model::NetworkPolicy>(res, Ev::Init);
                s.handle::<model::NetworkPolicy>(res, Ev::InitDone);
            }
            Res::RuntimePolicies => {
                s.handle::<RuntimePolicy>(res, Ev::Init);
                s.handle::<RuntimePolicy>(res, Ev::InitDone);
            }
            Res::Services => {
                s.handle::<model::Service>(res, Ev::Init);
                s.handle::<model::Service>(res, Ev::InitDone);
            }
            Res::EndpointSlices => {
                s.handle::<model::EndpointSlice>(res, Ev::Init);
                s.handle::<model::EndpointSlice>(res, Ev::InitDone);
            }
        }
    }
    assert!(s.synced());
    s
}

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn incremental_snapshots_equal_the_state_whoever_holds_old_ones() {
    for seed in 1..=20u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut store = synced_store();
        let mut pods: BTreeMap<ObjectRef, model::Pod> = BTreeMap::new();
        let mut namespaces: BTreeMap<String, model::Namespace> = BTreeMap::new();
        // Snapshots a slow consumer still holds.
        let mut held: Vec<Arc<Snapshot>> = Vec::new();
        let (mut incremental, mut full) = (0, 0);
        for round in 0..300 {
            for _ in 0..rng.below(8) {
                let name = format!("p{}", rng.below(40));
                let k = key("n", &name);
                match rng.below(4) {
                    0 => {
                        store.handle::<model::Pod>(Res::Pods, Ev::Delete(k.clone()));
                        pods.remove(&k);
                    }
                    _ => {
                        let p = pod(&name, Some("node-b"), &format!("v{}", rng.below(3)));
                        store.handle(Res::Pods, ok(k.clone(), p.clone()));
                        pods.insert(k, p);
                    }
                }
                let n = format!("ns{}", rng.below(5));
                if rng.below(3) == 0 {
                    store.handle::<model::Namespace>(Res::Namespaces, Ev::Delete(n.clone()));
                    namespaces.remove(&n);
                } else {
                    let v = ns(&n, &format!("{}", rng.below(2)));
                    store.handle(Res::Namespaces, ok(n.clone(), v.clone()));
                    namespaces.insert(n, v);
                }
            }
            let (snap, build) = store.publish();
            match build {
                Build::Incremental => incremental += 1,
                Build::Full => full += 1,
            }
            assert_eq!(snap.cluster.pods, pods, "seed {seed} round {round}");
            assert_eq!(
                snap.cluster.namespaces, namespaces,
                "seed {seed} round {round}"
            );
            assert!(!store.dirty());
            assert_eq!(store.objects(Res::Pods), pods.len());
            // Sometimes the consumer keeps a snapshot for a while, sometimes forever.
            match rng.below(10) {
                0..=5 => held.clear(),
                6..=8 => held.push(snap),
                _ => {
                    held.clear();
                    held.push(snap)
                }
            }
        }
        assert!(
            incremental > full,
            "seed {seed}: {incremental} incremental, {full} full"
        );
    }
}

#[test]
fn snapshots_are_incremental_when_the_consumer_keeps_up() {
    let mut store = synced_store();
    for i in 0..100 {
        store.handle(
            Res::Pods,
            ok(key("n", &format!("p{i}")), pod(&format!("p{i}"), None, "a")),
        );
    }
    let mut builds = Vec::new();
    for round in 0..10 {
        store.handle(
            Res::Pods,
            ok(key("n", "p1"), pod("p1", None, &format!("r{round}"))),
        );
        let (snap, build) = store.publish();
        builds.push(build);
        assert_eq!(
            snap.cluster.pods[&key("n", "p1")].labels["app"],
            format!("r{round}")
        );
        assert_eq!(snap.cluster.pods.len(), 100);
        drop(snap);
    }
    // The first has no spare; the second's spare is the empty initial state (a full
    // catch-up, still through the spare); then each publish touches one key.
    assert_eq!(builds[0], Build::Full);
    assert!(
        builds[1..].iter().all(|b| *b == Build::Incremental),
        "{builds:?}"
    );
}

#[test]
fn a_change_and_its_reversal_publish_nothing() {
    let mut store = synced_store();
    store.handle(Res::Namespaces, ok("a".into(), ns("a", "1")));
    store.publish();
    store.handle(Res::Namespaces, ok("a".into(), ns("a", "2")));
    assert!(store.dirty());
    store.handle(Res::Namespaces, ok("a".into(), ns("a", "1")));
    assert!(!store.dirty(), "back to the published state");
    store.handle(Res::Namespaces, ok("a".into(), ns("a", "1")));
    assert!(!store.dirty(), "an identical version is no change");
}

#[test]
fn local_pods_win_and_remote_ones_return_when_they_go() {
    let mut store = synced_store();
    let k = key("n", "web-0");
    // Pending (no node) in the cluster-wide watch.
    store.handle(Res::Pods, ok(k.clone(), pod("web-0", None, "v1")));
    // Scheduled here: the local watch reports it before the cluster-wide one drops it.
    let local = pod("web-0", Some(NODE), "v1");
    store.handle(Res::LocalPods, ok(k.clone(), local.clone()));
    assert_eq!(store.get::<model::Pod>(&k), Some(&local));
    store.handle::<model::Pod>(Res::Pods, Ev::Delete(k.clone()));
    assert_eq!(
        store.get::<model::Pod>(&k),
        Some(&local),
        "not the remote watch's to delete"
    );
    assert_eq!(
        (store.objects(Res::LocalPods), store.objects(Res::Pods)),
        (1, 0)
    );

    // Re-created on another node (StatefulSet) before the local deletion arrives.
    let remote = pod("web-0", Some("node-b"), "v2");
    store.handle(Res::Pods, ok(k.clone(), remote.clone()));
    assert_eq!(
        store.get::<model::Pod>(&k),
        Some(&local),
        "the local pod is shown"
    );
    store.handle::<model::Pod>(Res::LocalPods, Ev::Delete(k.clone()));
    assert_eq!(
        store.get::<model::Pod>(&k),
        Some(&remote),
        "the hidden one comes back"
    );
    assert_eq!(
        (store.objects(Res::LocalPods), store.objects(Res::Pods)),
        (0, 1)
    );

    // A relist of the local watch does not touch remote pods; one of the cluster-wide
    // watch does not touch local pods.
    store.handle(Res::LocalPods, ok(key("n", "l"), pod("l", Some(NODE), "x")));
    store.handle::<model::Pod>(Res::LocalPods, Ev::Init);
    store.handle::<model::Pod>(Res::LocalPods, Ev::InitDone);
    assert_eq!(store.get::<model::Pod>(&k), Some(&remote));
    assert_eq!(store.get::<model::Pod>(&key("n", "l")), None);
    store.handle(Res::LocalPods, ok(key("n", "l"), pod("l", Some(NODE), "x")));
    store.handle::<model::Pod>(Res::Pods, Ev::Init);
    store.handle::<model::Pod>(Res::Pods, Ev::InitDone);
    assert!(store.get::<model::Pod>(&key("n", "l")).is_some());
    assert_eq!(store.get::<model::Pod>(&k), None);
    assert_eq!(
        (store.objects(Res::LocalPods), store.objects(Res::Pods)),
        (1, 0)
    );
}

#[test]
fn relists_remove_exactly_what_the_list_lacks() {
    let mut store = synced_store();
    for name in ["a", "b", "c"] {
        store.handle(Res::Namespaces, ok(name.into(), ns(name, "1")));
    }
    store.publish();
    store.handle::<model::Namespace>(Res::Namespaces, Ev::Init);
    store.handle(Res::Namespaces, ok("b".into(), ns("b", "2")));
    store.handle(Res::Namespaces, ok("d".into(), ns("d", "1")));
    // A relist that fails half-way starts again; "a" seen in the failed one only.
    store.handle::<model::Namespace>(Res::Namespaces, Ev::Init);
    store.handle(Res::Namespaces, ok("c".into(), ns("c", "1")));
    store.handle(Res::Namespaces, ok("d".into(), ns("d", "1")));
    assert!(store.stats(Res::Namespaces).relisting);
    store.handle::<model::Namespace>(Res::Namespaces, Ev::InitDone);
    let (snap, _) = store.publish();
    let names: Vec<&str> = snap.cluster.namespaces.keys().map(String::as_str).collect();
    assert_eq!(names, ["c", "d"]);
    assert_eq!(store.stats(Res::Namespaces).restarts, 1);
    assert_eq!(store.objects(Res::Namespaces), 2);
}

#[test]
fn invalid_versions_never_replace_valid_ones() {
    let mut store = synced_store();
    let k = key("n", "p");
    store.handle(Res::RuntimePolicies, ok(k.clone(), rp("p", 1)));
    store.handle(Res::RuntimePolicies, bad::<RuntimePolicy>(k.clone(), "2"));
    assert_eq!(store.get::<RuntimePolicy>(&k), Some(&rp("p", 1)), "kept");
    assert_eq!(store.invalid(Res::RuntimePolicies), 1);
    // Still invalid in a relist: still kept.
    store.handle::<RuntimePolicy>(Res::RuntimePolicies, Ev::Init);
    store.handle(Res::RuntimePolicies, bad::<RuntimePolicy>(k.clone(), "2"));
    store.handle::<RuntimePolicy>(Res::RuntimePolicies, Ev::InitDone);
    assert_eq!(store.get::<RuntimePolicy>(&k), Some(&rp("p", 1)));
    // Fixed: replaced; deleted: gone, and nothing is invalid any more.
    store.handle(Res::RuntimePolicies, ok(k.clone(), rp("p", 2)));
    assert_eq!(store.get::<RuntimePolicy>(&k), Some(&rp("p", 2)));
    assert_eq!(store.invalid(Res::RuntimePolicies), 0);
    store.handle(Res::RuntimePolicies, bad::<RuntimePolicy>(k.clone(), "4"));
    store.handle::<RuntimePolicy>(Res::RuntimePolicies, Ev::Delete(k.clone()));
    assert_eq!(store.get::<RuntimePolicy>(&k), None);
    assert_eq!(store.invalid(Res::RuntimePolicies), 0);
    // Invalid from the start: left out.
    let k2 = key("n", "q");
    store.handle(Res::RuntimePolicies, bad::<RuntimePolicy>(k2.clone(), "5"));
    assert_eq!(store.get::<RuntimePolicy>(&k2), None);
    assert_eq!(store.invalid(Res::RuntimePolicies), 1);
}

#[test]
fn a_missing_resource_counts_as_synced_and_empty() {
    let mut store = Store::new(NODE);
    for res in [Res::LocalPods, Res::Pods] {
        store.handle::<model::Pod>(res, Ev::Init);
        store.handle::<model::Pod>(res, Ev::InitDone);
    }
    store.handle::<model::Namespace>(Res::Namespaces, Ev::Init);
    store.handle::<model::Namespace>(Res::Namespaces, Ev::InitDone);
    store.handle::<model::NetworkPolicy>(Res::NetworkPolicies, Ev::Init);
    store.handle::<model::NetworkPolicy>(Res::NetworkPolicies, Ev::InitDone);
    store.handle::<model::Service>(Res::Services, Ev::Init);
    store.handle::<model::Service>(Res::Services, Ev::InitDone);
    store.handle::<model::EndpointSlice>(Res::EndpointSlices, Ev::Init);
    store.handle::<model::EndpointSlice>(Res::EndpointSlices, Ev::InitDone);
    assert!(!store.synced(), "runtime policies not listed yet");
    store.handle::<RuntimePolicy>(Res::RuntimePolicies, Ev::Init);
    store.handle::<RuntimePolicy>(Res::RuntimePolicies, Ev::Missing);
    assert!(store.synced());
    assert!(store.stats(Res::RuntimePolicies).missing);
    // Installed later, then removed again: its objects go with it.
    store.handle::<RuntimePolicy>(Res::RuntimePolicies, Ev::Init);
    store.handle(Res::RuntimePolicies, ok(key("n", "p"), rp("p", 1)));
    store.handle::<RuntimePolicy>(Res::RuntimePolicies, Ev::InitDone);
    assert!(!store.stats(Res::RuntimePolicies).missing);
    assert_eq!(store.objects(Res::RuntimePolicies), 1);
    store.handle::<RuntimePolicy>(Res::RuntimePolicies, Ev::Missing);
    assert_eq!(store.objects(Res::RuntimePolicies), 0);
}

/// Scale check: snapshots stay incremental with tens of thousands of pods (timings are
/// printed with --nocapture, nothing is asserted about them; `cargo xtask bench` is where
/// performance is measured).
#[test]
fn incremental_publish_at_scale() {
    const N: usize = 20_000;
    use std::time::Instant;
    let mut store = synced_store();
    let make = |i: usize, v: &str| model::Pod {
        namespace: format!("ns-{}", i % 300),
        name: format!("app-{}-{i}", i % 1000),
        uid: format!("6f1c2d4e-0000-4000-8000-{i:012}"),
        labels: [
            ("app".to_string(), format!("app-{}", i % 1000)),
            ("pod-template-hash".to_string(), format!("7d9f{}", i % 50)),
            ("tier".to_string(), "backend".to_string()),
            ("version".to_string(), v.to_string()),
        ]
        .into(),
        node_name: Some(format!("node-{}", i % 5000)),
        host_network: false,
        ips: vec![std::net::IpAddr::from([
            10,
            (i >> 16) as u8,
            (i >> 8) as u8,
            i as u8,
        ])],
        named_ports: vec![],
        terminal: false,
    };
    let t = Instant::now();
    for i in 0..N {
        let p = make(i, "v1");
        store.handle(Res::Pods, ok(p.key(), p));
    }
    let applied = t.elapsed();
    let t = Instant::now();
    let (first, b1) = store.publish();
    let first_publish = t.elapsed();
    drop(first);
    // The spare is the initial empty state: a full catch-up.
    store.handle(Res::Pods, ok(make(1, "v2").key(), make(1, "v2")));
    let t = Instant::now();
    let (_, b2) = store.publish();
    let second_publish = t.elapsed();
    // Steady state: 100 pods change between snapshots.
    let mut steady = Vec::new();
    for round in 0..5 {
        for i in 0..100 {
            let p = make(i * 100 + round, &format!("r{round}"));
            store.handle(Res::Pods, ok(p.key(), p));
        }
        let t = Instant::now();
        let (snap, b) = store.publish();
        steady.push((t.elapsed(), b));
        assert_eq!(snap.cluster.pods.len(), N);
        // The consumer let go of older snapshots: only the changed keys are copied.
        if round > 0 {
            assert_eq!(b, Build::Incremental, "round {round}");
        }
    }
    // What building every snapshot from scratch would cost instead.
    let (snap, _) = store.publish();
    let t = Instant::now();
    let copy = (*snap).clone();
    let clone = t.elapsed();
    assert_eq!(copy.cluster.pods.len(), N);
    println!(
        "{N} pods: applied in {applied:?}; first publish {first_publish:?} ({b1:?}); \
         second {second_publish:?} ({b2:?}); 100 changes: {steady:?}; a full clone: {clone:?}"
    );
}
