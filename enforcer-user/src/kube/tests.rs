//! The Kubernetes source against an in-process fake API server ([`fake`]), through the real
//! kube client and watcher: what is requested, initial-sync gating, changes, relists,
//! bookmarks, broken streams, HTTP errors, the optional CRD, invalid objects, debouncing,
//! and the node split of pods.

mod fake;

use std::{future::Future, time::Duration};

use ::kube::runtime::utils::Backoff;
use serde_json::{Value, json};
use tokio::{
    task::JoinHandle,
    time::{Instant, sleep, timeout},
};

use super::*;
use crate::{
    agent::source::{self, Snapshot, SnapshotRx},
    model::ObjectRef,
};
use fake::{FakeApi, Fault, R, Verb};

const NODE: &str = "node-a";
/// Generous: everything here happens within milliseconds, except where a test waits for a
/// Retry-After.
const WAIT: Duration = Duration::from_secs(10);

/// Errors are retried after 20 ms in tests (kube's default backoff starts at 800 ms).
struct FastBackoff;

impl Iterator for FastBackoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        Some(Duration::from_millis(20))
    }
}

impl Backoff for FastBackoff {
    fn reset(&mut self) {}
}

fn tuning() -> Tuning {
    Tuning {
        debounce: Duration::from_millis(50),
        // Small pages, so that every list is paginated.
        page_size: 2,
        backoff: Arc::new(|| Box::new(FastBackoff) as Box<dyn Backoff>),
        restart_delay: Duration::from_millis(20),
        metrics_interval: Duration::from_millis(20),
        quiet_after_errors: Duration::from_millis(500),
    }
}

fn labels(pairs: &[(&str, &str)]) -> Value {
    Value::Object(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect(),
    )
}

fn pod(ns: &str, name: &str, node: Option<&str>, app: &str, ip: Option<&str>) -> Value {
    let mut status = json!({"phase": if ip.is_some() { "Running" } else { "Pending" }});
    if let Some(ip) = ip {
        status["podIP"] = json!(ip);
        status["podIPs"] = json!([{"ip": ip}]);
    }
    json!({
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{ns}-{name}"),
                     "labels": labels(&[("app", app)])},
        "spec": {"nodeName": node, "containers": [
            {"name": "c", "image": "img", "ports": [{"name": "http", "containerPort": 8080}]}]},
        "status": status,
    })
}

fn namespace(name: &str, pairs: &[(&str, &str)]) -> Value {
    json!({"metadata": {"name": name, "uid": format!("uid-{name}"), "labels": labels(pairs)}})
}

fn netpol(ns: &str, name: &str, app: &str) -> Value {
    json!({
        "metadata": {"name": name, "namespace": ns},
        "spec": {"podSelector": {"matchLabels": {"app": app}},
                 "ingress": [{"from": [{"podSelector": {}}], "ports": [{"port": "http"}]}]},
    })
}

fn runtime_policy(ns: &str, name: &str, guard: &str) -> Value {
    json!({
        "metadata": {"name": name, "namespace": ns},
        "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "guards": [{"name": guard}]},
    })
}

fn service(ns: &str, name: &str, ip: &str) -> Value {
    json!({"metadata": {"name": name, "namespace": ns},
           "spec": {"clusterIP": ip, "clusterIPs": [ip],
                    "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})
}

fn endpoint_slice(ns: &str, name: &str, service: &str, ip: &str) -> Value {
    json!({"metadata": {"name": name, "namespace": ns,
                        "labels": {"kubernetes.io/service-name": service}},
           "addressType": "IPv4",
           "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
           "endpoints": [{"addresses": [ip], "conditions": {"ready": true}}]})
}

fn key(ns: &str, name: &str) -> ObjectRef {
    ObjectRef {
        namespace: ns.into(),
        name: name.into(),
    }
}

/// A small cluster: 2 pods on this node, 2 on others, 1 pending; 3 namespaces; a policy
/// of each kind.
fn seed(api: &FakeApi) {
    for ns in ["default", "shop", "kube-system"] {
        api.put(R::Namespaces, namespace(ns, &[("team", "a")]));
    }
    api.put(
        R::Pods,
        pod("shop", "web-1", Some(NODE), "web", Some("10.0.1.1")),
    );
    api.put(
        R::Pods,
        pod("shop", "web-2", Some(NODE), "web", Some("10.0.1.2")),
    );
    api.put(
        R::Pods,
        pod("shop", "db-1", Some("node-b"), "db", Some("10.0.2.1")),
    );
    api.put(
        R::Pods,
        pod(
            "kube-system",
            "dns",
            Some("node-c"),
            "dns",
            Some("10.0.3.1"),
        ),
    );
    api.put(R::Pods, pod("shop", "pending", None, "web", None));
    api.put(R::NetworkPolicies, netpol("shop", "web", "web"));
    api.put(R::RuntimePolicies, runtime_policy("shop", "lock", "mount"));
}

/// The source under test, fed by `api`.
struct Source {
    rx: SnapshotRx,
    metrics: Arc<Metrics>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Drop for Source {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `ENFORCER_TEST_LOG=kube=debug,enforcer=debug` shows what the client and the source do.
fn init_logs() {
    if let Ok(filter) = std::env::var("ENFORCER_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

fn start(api: &FakeApi) -> Source {
    start_with(api, tuning())
}

fn start_with(api: &FakeApi, tuning: Tuning) -> Source {
    init_logs();
    let (tx, rx) = source::channel();
    let metrics = Arc::new(Metrics::new());
    let task = tokio::spawn(run_with_client(
        api.client(),
        NODE.into(),
        tx,
        metrics.clone(),
        tuning,
    ));
    Source { rx, metrics, task }
}

impl Source {
    /// The first snapshot that satisfies `pred`.
    async fn until(&mut self, what: &str, pred: impl Fn(&Snapshot) -> bool) -> Arc<Snapshot> {
        let rx = &mut self.rx;
        let found = timeout(WAIT, async {
            loop {
                if let Some(s) = rx.borrow_and_update().clone()
                    && pred(&s)
                {
                    return s;
                }
                rx.changed().await.expect("the source stopped");
            }
        })
        .await;
        found.unwrap_or_else(|_| {
            panic!(
                "no snapshot with {what} within {WAIT:?}; last: {:#?}",
                self.rx.borrow()
            )
        })
    }

    fn metric(&self, name: &str, l: &[(&str, &str)]) -> f64 {
        self.metrics.get(name, l).unwrap_or(0.0)
    }

    fn res_metric(&self, name: &str, res: &str) -> f64 {
        self.metric(name, &[("resource", res)])
    }

    fn snapshots(&self) -> f64 {
        self.metric("enforcer_kube_snapshots_total", &[("build", "incremental")])
            + self.metric("enforcer_kube_snapshots_total", &[("build", "full")])
    }

    async fn metric_until(&self, what: &str, cond: impl Fn(&Self) -> bool) {
        eventually(what, || cond(self)).await
    }
}

/// Polls `cond` until it holds (panics after [`WAIT`]).
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(5)).await;
    }
}

/// Runs `f` and asserts it publishes nothing new for a while (longer than the debounce).
async fn publishes_nothing<F: Future>(src: &Source, f: F) {
    let before = src.snapshots();
    f.await;
    sleep(Duration::from_millis(250)).await;
    assert_eq!(src.snapshots(), before, "unexpected snapshot");
}

fn pod_names(s: &Snapshot) -> Vec<String> {
    s.cluster.pods.keys().map(|k| k.to_string()).collect()
}

#[tokio::test]
async fn lists_then_watches_as_kube_does() {
    let api = FakeApi::start().await;
    seed(&api);
    let list_rv = api.rv();
    let mut src = start(&api);
    let s = src.until("the initial state", |_| true).await;

    // The content: every object converted.
    assert_eq!(
        pod_names(&s),
        [
            "kube-system/dns",
            "shop/db-1",
            "shop/pending",
            "shop/web-1",
            "shop/web-2"
        ]
    );
    let web1 = &s.cluster.pods[&key("shop", "web-1")];
    assert_eq!(web1.node_name.as_deref(), Some(NODE));
    assert_eq!(web1.uid, "uid-shop-web-1");
    assert_eq!(web1.ips, ["10.0.1.1".parse::<std::net::IpAddr>().unwrap()]);
    assert_eq!(web1.named_ports[0].port, 8080);
    assert_eq!(
        s.cluster.pods[&key("kube-system", "dns")]
            .node_name
            .as_deref(),
        Some("node-c")
    );
    assert_eq!(s.cluster.pods[&key("shop", "pending")].node_name, None);
    assert_eq!(
        s.cluster.namespaces["shop"].labels["kubernetes.io/metadata.name"],
        "shop"
    );
    assert_eq!(s.cluster.namespaces.len(), 3);
    let np = &s.cluster.network_policies[&key("shop", "web")];
    assert!(np.ingress_isolation && !np.egress_isolation);
    assert_eq!(
        s.runtime_policies[&key("shop", "lock")].enforce,
        enforcer_common::GUARD_MOUNT
    );

    // What kube's watcher asked for: a paginated LIST (no resourceVersion: a consistent
    // read), then a WATCH from the list's resourceVersion with bookmarks.
    for r in [
        R::Pods,
        R::Namespaces,
        R::NetworkPolicies,
        R::RuntimePolicies,
    ] {
        let lists = api.requests_for(r, Verb::List);
        let first = &lists[0];
        assert_eq!(first.path, r.path());
        assert_eq!(first.param("limit"), Some("2"), "{first:?}");
        assert_eq!(first.param("resourceVersion"), None, "{first:?}");
        assert_eq!(first.param("continue"), None);
        let watches = api.requests_for(r, Verb::Watch);
        assert!(!watches.is_empty(), "{r:?} is watched");
        for w in &watches {
            assert_eq!(w.param("watch"), Some("true"));
            assert_eq!(
                w.param("resourceVersion"),
                Some(list_rv.to_string().as_str())
            );
            assert_eq!(w.param("allowWatchBookmarks"), Some("true"));
            assert_eq!(w.param("timeoutSeconds"), Some("290"));
        }
    }
    for q in api.requests() {
        assert!(q.resource.is_some(), "only the four collections: {q:?}");
        assert_eq!(
            q.param("sendInitialEvents"),
            None,
            "no streaming list: {q:?}"
        );
        assert_eq!(q.param("resourceVersionMatch"), None, "{q:?}");
    }
    // Pods: the node's pods by field selector, and all pods (3 pages of 2).
    let pod_lists = api.requests_for(R::Pods, Verb::List);
    let local: Vec<_> = pod_lists
        .iter()
        .filter(|q| q.param("fieldSelector") == Some("spec.nodeName=node-a"))
        .collect();
    let all: Vec<_> = pod_lists
        .iter()
        .filter(|q| q.param("fieldSelector").is_none())
        .collect();
    assert_eq!(local.len(), 1, "2 local pods fit one page of 2");
    assert_eq!(all.len(), 3, "5 pods in pages of 2: {all:?}");
    assert!(all[1].param("continue").is_some() && all[2].param("continue").is_some());
    assert!(
        api.requests_for(R::Pods, Verb::Watch)
            .iter()
            .any(|q| q.param("fieldSelector") == Some("spec.nodeName=node-a"))
    );

    // Metrics.
    src.metric_until("object counts", |s| {
        s.res_metric("enforcer_kube_objects", "local_pods") == 2.0
            && s.res_metric("enforcer_kube_objects", "pods") == 3.0
    })
    .await;
    for r in Res::ALL {
        assert_eq!(src.res_metric("enforcer_kube_synced", r.name()), 1.0, "{r}");
        assert_eq!(
            src.res_metric("enforcer_kube_watch_restarts_total", r.name()),
            0.0
        );
    }
    assert_eq!(src.res_metric("enforcer_kube_objects", "namespaces"), 3.0);
    assert_eq!(
        src.res_metric("enforcer_kube_objects", "runtimepolicies"),
        1.0
    );
    assert_eq!(
        src.res_metric("enforcer_kube_resource_installed", "runtimepolicies"),
        1.0
    );
    assert_eq!(
        src.metric(
            "enforcer_kube_events_total",
            &[("resource", "local_pods"), ("type", "applied")]
        ),
        2.0,
        "the node watch only carries the node's pods"
    );
    assert!(src.res_metric("enforcer_kube_last_event_timestamp_seconds", "pods") > 1e9);
    assert_eq!(src.snapshots(), 1.0);
}

#[tokio::test]
async fn nothing_is_published_before_every_initial_list() {
    let api = FakeApi::start().await;
    seed(&api);
    api.fault(Fault::new(R::NetworkPolicies, Verb::List, 500));
    let mut src = start(&api);
    // The other lists complete and their watches start; network policies keep failing.
    eventually("the other watches and 3 failed lists", || {
        api.requests_for(R::NetworkPolicies, Verb::List).len() >= 3
            && [R::Pods, R::Namespaces, R::RuntimePolicies]
                .iter()
                .all(|r| !api.requests_for(*r, Verb::Watch).is_empty())
    })
    .await;
    src.metric_until("errors counted", |s| {
        s.metric(
            "enforcer_kube_watch_errors_total",
            &[("resource", "networkpolicies"), ("error", "list")],
        ) >= 2.0
            && s.res_metric("enforcer_kube_synced", "namespaces") == 1.0
    })
    .await;
    assert!(
        src.rx.borrow().is_none(),
        "published before every list completed"
    );
    assert_eq!(
        src.res_metric("enforcer_kube_synced", "networkpolicies"),
        0.0
    );
    assert_eq!(src.snapshots(), 0.0);

    api.clear_faults();
    let s = src.until("the network policy", |_| true).await;
    assert_eq!(s.cluster.network_policies.len(), 1);
    assert_eq!(s.cluster.pods.len(), 5);
}

#[tokio::test]
async fn changes_are_reflected() {
    let api = FakeApi::start().await;
    seed(&api);
    let mut src = start(&api);
    src.until("the initial state", |_| true).await;

    // Adds.
    api.put(
        R::Pods,
        pod("shop", "web-3", Some(NODE), "web", Some("10.0.1.3")),
    );
    api.put(
        R::Pods,
        pod("shop", "db-2", Some("node-b"), "db", Some("10.0.2.2")),
    );
    api.put(R::Namespaces, namespace("payments", &[("pci", "true")]));
    api.put(R::NetworkPolicies, netpol("shop", "db", "db"));
    api.put(R::RuntimePolicies, runtime_policy("shop", "no-bpf", "bpf"));
    let s = src
        .until("the additions", |s| {
            s.cluster.pods.len() == 7
                && s.cluster.namespaces.contains_key("payments")
                && s.cluster.network_policies.len() == 2
                && s.runtime_policies.len() == 2
        })
        .await;
    assert_eq!(s.cluster.namespaces["payments"].labels["pci"], "true");
    assert_eq!(
        s.runtime_policies[&key("shop", "no-bpf")].enforce,
        enforcer_common::GUARD_BPF
    );

    // Label changes and modifications.
    api.put(
        R::Pods,
        pod("shop", "db-1", Some("node-b"), "db-v2", Some("10.0.2.1")),
    );
    api.put(
        R::Pods,
        pod("shop", "web-1", Some(NODE), "web-v2", Some("10.0.1.1")),
    );
    api.put(R::Namespaces, namespace("shop", &[("team", "b")]));
    api.put(R::NetworkPolicies, netpol("shop", "web", "web-v2"));
    api.put(R::RuntimePolicies, runtime_policy("shop", "lock", "ptrace"));
    let s = src
        .until("the modifications", |s| {
            s.cluster.pods[&key("shop", "db-1")].labels["app"] == "db-v2"
                && s.cluster.pods[&key("shop", "web-1")].labels["app"] == "web-v2"
                && s.cluster.namespaces["shop"].labels["team"] == "b"
                && s.cluster.network_policies[&key("shop", "web")]
                    .pod_selector
                    .match_labels["app"]
                    == "web-v2"
                && s.runtime_policies[&key("shop", "lock")].enforce == enforcer_common::GUARD_PTRACE
        })
        .await;
    assert_eq!(s.cluster.pods.len(), 7);

    // Deletes.
    api.delete(R::Pods, "shop", "web-1");
    api.delete(R::Pods, "shop", "db-1");
    api.delete(R::Namespaces, "", "payments");
    api.delete(R::NetworkPolicies, "shop", "web");
    api.delete(R::RuntimePolicies, "shop", "lock");
    let s = src
        .until("the deletions", |s| {
            s.cluster.pods.len() == 5
                && !s.cluster.namespaces.contains_key("payments")
                && s.cluster.network_policies.len() == 1
                && s.runtime_policies.len() == 1
        })
        .await;
    assert!(!s.cluster.pods.contains_key(&key("shop", "web-1")));
    assert!(!s.cluster.pods.contains_key(&key("shop", "db-1")));
    src.metric_until("counts", |s| {
        s.res_metric("enforcer_kube_objects", "local_pods") == 2.0
            && s.res_metric("enforcer_kube_objects", "pods") == 3.0
    })
    .await;
}

#[tokio::test]
async fn pods_of_this_node_come_from_the_node_watch() {
    let api = FakeApi::start().await;
    seed(&api);
    let mut src = start(&api);
    src.until("the initial state", |_| true).await;

    // The pending pod is scheduled here: the node watch now sees it (ADDED, as the API
    // server's field-selector filtering reports it) and the cluster-wide one lets it go.
    api.put(
        R::Pods,
        pod("shop", "pending", Some(NODE), "web", Some("10.0.1.9")),
    );
    let s = src
        .until("the scheduled pod", |s| {
            s.cluster.pods[&key("shop", "pending")].node_name.as_deref() == Some(NODE)
        })
        .await;
    assert_eq!(s.cluster.pods.len(), 5);
    src.metric_until("the pod counted as local", |s| {
        s.res_metric("enforcer_kube_objects", "local_pods") == 3.0
            && s.res_metric("enforcer_kube_objects", "pods") == 2.0
    })
    .await;

    // Pods of other nodes are peers only: present, with their node.
    api.put(
        R::Pods,
        pod("shop", "far", Some("node-z"), "web", Some("10.9.9.9")),
    );
    let s = src
        .until("the remote pod", |s| {
            s.cluster.pods.contains_key(&key("shop", "far"))
        })
        .await;
    assert_eq!(
        s.cluster.pods[&key("shop", "far")].node_name.as_deref(),
        Some("node-z")
    );
    src.metric_until("counts", |s| {
        s.res_metric("enforcer_kube_objects", "local_pods") == 3.0
            && s.res_metric("enforcer_kube_objects", "pods") == 3.0
            && s.metric(
                "enforcer_kube_events_total",
                &[("resource", "local_pods"), ("type", "applied")],
            ) == 3.0
    })
    .await;

    // A StatefulSet pod re-created on another node: whichever watch reports first, the
    // snapshot ends with the remote pod.
    api.delete(R::Pods, "shop", "web-2");
    api.put(
        R::Pods,
        pod("shop", "web-2", Some("node-b"), "web", Some("10.0.2.9")),
    );
    let s = src
        .until("web-2 on node-b", |s| {
            s.cluster
                .pods
                .get(&key("shop", "web-2"))
                .map(|p| p.node_name.as_deref())
                == Some(Some("node-b"))
        })
        .await;
    assert_eq!(s.cluster.pods.len(), 6);

    // A local pod that finishes stays known (terminal) until deleted, then goes.
    let mut done = pod("shop", "web-1", Some(NODE), "web", Some("10.0.1.1"));
    done["status"]["phase"] = json!("Succeeded");
    api.put(R::Pods, done);
    src.until("web-1 terminal", |s| {
        s.cluster.pods[&key("shop", "web-1")].terminal
    })
    .await;
    api.delete(R::Pods, "shop", "web-1");
    src.until("web-1 gone", |s| {
        !s.cluster.pods.contains_key(&key("shop", "web-1"))
    })
    .await;
}

#[tokio::test]
async fn updates_that_do_not_change_the_model_publish_nothing() {
    let api = FakeApi::start().await;
    seed(&api);
    let mut src = start(&api);
    src.until("the initial state", |_| true).await;
    let applied = |s: &Source| {
        s.metric(
            "enforcer_kube_events_total",
            &[("resource", "pods"), ("type", "applied")],
        )
    };
    let before = applied(&src);
    publishes_nothing(&src, async {
        // Status churn (conditions, restarts) and annotations: the model is the same.
        let mut p = pod("shop", "db-1", Some("node-b"), "db", Some("10.0.2.1"));
        p["status"]["conditions"] = json!([{"type": "Ready", "status": "False"}]);
        p["metadata"]["annotations"] = json!({"x": "y"});
        api.put(R::Pods, p);
        let mut p = pod("shop", "db-1", Some("node-b"), "db", Some("10.0.2.1"));
        p["status"]["containerStatuses"] =
            json!([{"name": "c", "ready": true, "restartCount": 3, "image": "i", "imageID": "i"}]);
        api.put(R::Pods, p);
    })
    .await;
    assert_eq!(applied(&src), before + 2.0, "the updates were received");
}

#[tokio::test]
async fn expired_watches_relist_without_losing_or_duplicating() {
    let api = FakeApi::start().await;
    seed(&api);
    let mut src = start(&api);
    src.until("the initial state", |_| true).await;
    let pod_lists = api.requests_for(R::Pods, Verb::List).len();

    // Changes the watches never deliver, then the watches expire (410): only a relist can
    // find what happened.
    api.hold(R::Pods);
    api.delete(R::Pods, "shop", "db-1");
    api.delete(R::Pods, "shop", "web-2");
    api.put(
        R::Pods,
        pod("shop", "web-1", Some(NODE), "web-v2", Some("10.0.1.1")),
    );
    api.put(
        R::Pods,
        pod("shop", "new", Some("node-b"), "new", Some("10.0.2.7")),
    );
    api.put(
        R::Pods,
        pod("shop", "new-local", Some(NODE), "new", Some("10.0.1.7")),
    );
    sleep(Duration::from_millis(100)).await;
    assert_eq!(
        src.rx.borrow().as_ref().unwrap().cluster.pods.len(),
        5,
        "held back"
    );
    api.expire(R::Pods);

    let s = src
        .until("the relisted state", |s| {
            pod_names(s)
                == [
                    "kube-system/dns",
                    "shop/new",
                    "shop/new-local",
                    "shop/pending",
                    "shop/web-1",
                ]
                && s.cluster.pods[&key("shop", "web-1")].labels["app"] == "web-v2"
        })
        .await;
    assert_eq!(
        s.cluster.pods[&key("shop", "new-local")]
            .node_name
            .as_deref(),
        Some(NODE)
    );
    assert!(api.requests_for(R::Pods, Verb::List).len() > pod_lists);
    src.metric_until("relist metrics", |s| {
        ["pods", "local_pods"].iter().all(|r| {
            s.res_metric("enforcer_kube_watch_restarts_total", r) == 1.0
                && s.metric(
                    "enforcer_kube_watch_errors_total",
                    &[("resource", r), ("error", "expired")],
                ) == 1.0
        }) && s.res_metric("enforcer_kube_objects", "local_pods") == 2.0
            && s.res_metric("enforcer_kube_objects", "pods") == 3.0
    })
    .await;

    // And the new watches work.
    api.put(
        R::Pods,
        pod("shop", "after", Some("node-c"), "x", Some("10.0.3.3")),
    );
    src.until("a pod after the relist", |s| s.cluster.pods.len() == 6)
        .await;
}

#[tokio::test]
async fn bookmarks_move_the_resume_point() {
    let api = FakeApi::start().await;
    seed(&api);
    let mut src = start(&api);
    src.until("the initial state", |_| true).await;
    eventually("watches running", || {
        api.watchers(R::Pods) == 2 && api.watchers(R::NetworkPolicies) == 1
    })
    .await;

    // Other resources move the shared resourceVersion on.
    for i in 0..20 {
        api.put(R::Namespaces, namespace(&format!("ns-{i}"), &[]));
    }
    let bookmark_rv = api.rv();
    api.bookmark(R::Pods);
    sleep(Duration::from_millis(100)).await;
    // History older than now is gone; the streams end (as at timeoutSeconds).
    api.compact(R::Pods);
    api.compact(R::NetworkPolicies);
    let lists = |r| api.requests_for(r, Verb::List).len();
    let (pod_lists, np_lists) = (lists(R::Pods), lists(R::NetworkPolicies));
    api.end_watches(R::Pods);
    api.end_watches(R::NetworkPolicies);

    // Pods resume from the bookmark: no relist.
    eventually("pods watched again", || {
        api.requests_for(R::Pods, Verb::Watch)
            .iter()
            .filter(|q| q.param("resourceVersion") == Some(bookmark_rv.to_string().as_str()))
            .count()
            == 2
    })
    .await;
    // Network policies had no bookmark: their resume point is too old, so they relist.
    eventually("network policies relisted", || {
        lists(R::NetworkPolicies) > np_lists
    })
    .await;
    api.put(
        R::Pods,
        pod("shop", "after", Some(NODE), "x", Some("10.0.1.8")),
    );
    api.put(R::NetworkPolicies, netpol("shop", "after", "x"));
    src.until("both changes", |s| {
        s.cluster.pods.contains_key(&key("shop", "after"))
            && s.cluster
                .network_policies
                .contains_key(&key("shop", "after"))
    })
    .await;
    assert_eq!(lists(R::Pods), pod_lists, "pods did not relist");
    assert_eq!(
        src.res_metric("enforcer_kube_watch_restarts_total", "pods"),
        0.0
    );
    src.metric_until("the network policy relist counted", |s| {
        s.res_metric("enforcer_kube_watch_restarts_total", "networkpolicies") == 1.0
    })
    .await;
}

#[tokio::test]
async fn ended_and_broken_streams_resume_from_the_last_version() {
    let api = FakeApi::start().await;
    seed(&api);
    let mut src = start(&api);
    src.until("the initial state", |_| true).await;
    let watch_versions = || -> Vec<u64> {
        api.requests_for(R::Namespaces, Verb::Watch)
            .iter()
            .map(|q| q.param("resourceVersion").unwrap().parse().unwrap())
            .collect()
    };

    // A clean end (timeoutSeconds), with a change right after.
    api.end_watches(R::Namespaces);
    api.put(R::Namespaces, namespace("one", &[]));
    src.until("namespace one", |s| {
        s.cluster.namespaces.contains_key("one")
    })
    .await;

    // A connection cut in the middle of an event line, with changes right after.
    eventually("a namespace watch", || api.watchers(R::Namespaces) == 1).await;
    api.break_watches(R::Namespaces);
    api.put(R::Namespaces, namespace("two", &[]));
    api.delete(R::Namespaces, "", "one");
    let s = src
        .until("namespace two, one gone", |s| {
            s.cluster.namespaces.contains_key("two") && !s.cluster.namespaces.contains_key("one")
        })
        .await;
    assert_eq!(s.cluster.namespaces.len(), 4);

    let versions = watch_versions();
    assert!(versions.len() >= 3, "{versions:?}");
    assert!(versions.windows(2).all(|w| w[0] <= w[1]), "{versions:?}");
    let lists = api.requests_for(R::Namespaces, Verb::List);
    assert_eq!(
        lists
            .iter()
            .filter(|q| q.param("continue").is_none())
            .count(),
        1,
        "resumed, never relisted: {lists:?}"
    );
    assert_eq!(
        src.res_metric("enforcer_kube_watch_restarts_total", "namespaces"),
        0.0
    );
    assert_eq!(src.res_metric("enforcer_kube_objects", "namespaces"), 4.0);
}

#[tokio::test]
async fn http_errors_back_off_and_recover() {
    let api = FakeApi::start().await;
    seed(&api);
    // 429 with Retry-After: kube's client retries it by itself, after the given delay.
    api.fault(Fault {
        retry_after: Some(1),
        ..Fault::new(R::Namespaces, Verb::List, 429).times(1)
    });
    // 500 on starting the pod watches: the watcher backs off and tries again.
    api.fault(Fault::new(R::Pods, Verb::Watch, 500).times(3));
    let started = Instant::now();
    let mut src = start(&api);
    src.until("the initial state", |_| true).await;
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was honoured"
    );
    let ns_lists: Vec<_> = api
        .requests_for(R::Namespaces, Verb::List)
        .into_iter()
        .filter(|q| q.param("continue").is_none())
        .collect();
    assert_eq!(ns_lists.len(), 2, "one 429, one retry: {ns_lists:?}");
    eventually("the pod watches", || api.watchers(R::Pods) == 2).await;
    api.put(
        R::Pods,
        pod("shop", "later", Some(NODE), "x", Some("10.0.1.5")),
    );
    src.until("a pod added after the errors", |s| {
        s.cluster.pods.contains_key(&key("shop", "later"))
    })
    .await;
    src.metric_until("the errors counted", |s| {
        let e = |r| {
            s.metric(
                "enforcer_kube_watch_errors_total",
                &[("resource", r), ("error", "watch_start")],
            )
        };
        e("pods") + e("local_pods") == 3.0
    })
    .await;
    assert_eq!(
        src.metric(
            "enforcer_kube_watch_errors_total",
            &[("resource", "namespaces"), ("error", "list")]
        ),
        0.0,
        "the 429 never reached the watcher"
    );
}

#[tokio::test]
async fn a_missing_runtime_policy_crd_means_no_runtime_policies() {
    let api = FakeApi::start().await;
    seed(&api);
    api.set_installed(R::RuntimePolicies, false);
    let mut src = start(&api);
    // Readiness does not wait for the CRD.
    let s = src.until("the initial state", |_| true).await;
    assert!(s.runtime_policies.is_empty());
    assert_eq!(s.cluster.pods.len(), 5);
    src.metric_until("the CRD reported missing", |s| {
        s.res_metric("enforcer_kube_resource_installed", "runtimepolicies") == 0.0
            && s.res_metric("enforcer_kube_synced", "runtimepolicies") == 1.0
            && s.metric(
                "enforcer_kube_watch_errors_total",
                &[("resource", "runtimepolicies"), ("error", "not_found")],
            ) >= 1.0
    })
    .await;

    // Installed later: found by the background retries.
    api.set_installed(R::RuntimePolicies, true);
    api.put(R::RuntimePolicies, runtime_policy("shop", "lock", "mount"));
    src.until("the runtime policy", |s| s.runtime_policies.len() == 1)
        .await;
    src.metric_until("the CRD reported installed", |s| {
        s.res_metric("enforcer_kube_resource_installed", "runtimepolicies") == 1.0
    })
    .await;
    api.put(R::RuntimePolicies, runtime_policy("shop", "other", "bpf"));
    src.until("a watched runtime policy", |s| {
        s.runtime_policies.len() == 2
    })
    .await;

    // Removed again: its objects go (DELETED events), the watch cannot resume (404), and
    // the source goes back to "no runtime policies".
    api.set_installed(R::RuntimePolicies, false);
    src.until("no runtime policies", |s| s.runtime_policies.is_empty())
        .await;
    src.metric_until("the CRD reported missing again", |s| {
        s.res_metric("enforcer_kube_resource_installed", "runtimepolicies") == 0.0
    })
    .await;
    // Pods and the rest are unaffected.
    assert_eq!(src.rx.borrow().as_ref().unwrap().cluster.pods.len(), 5);
}

#[tokio::test]
async fn an_invalid_runtime_policy_keeps_its_last_valid_version() {
    let api = FakeApi::start().await;
    seed(&api);
    // Invalid from the start: left out.
    api.put(
        R::RuntimePolicies,
        runtime_policy("shop", "typo", "teleport"),
    );
    let mut src = start(&api);
    let s = src.until("the initial state", |_| true).await;
    assert_eq!(s.runtime_policies.len(), 1, "{:?}", s.runtime_policies);
    let lock = s.runtime_policies[&key("shop", "lock")].clone();
    src.metric_until("one invalid object", |s| {
        s.res_metric("enforcer_kube_invalid_objects", "runtimepolicies") == 1.0
    })
    .await;

    // A valid policy edited into an invalid one keeps its valid version.
    publishes_nothing(&src, async {
        api.put(
            R::RuntimePolicies,
            runtime_policy("shop", "lock", "teleport"),
        );
        let mut bad_mode = runtime_policy("shop", "lock", "mount");
        bad_mode["spec"]["guards"][0]["mode"] = json!("Sometimes");
        api.put(R::RuntimePolicies, bad_mode);
    })
    .await;
    assert_eq!(
        src.rx.borrow().as_ref().unwrap().runtime_policies[&key("shop", "lock")],
        lock
    );
    assert_eq!(
        src.res_metric("enforcer_kube_invalid_objects", "runtimepolicies"),
        2.0
    );

    // Still invalid after a relist: still kept.
    api.expire(R::RuntimePolicies);
    src.metric_until("the relist", |s| {
        s.res_metric("enforcer_kube_watch_restarts_total", "runtimepolicies") == 1.0
    })
    .await;
    let s = src.rx.borrow().clone().unwrap();
    assert_eq!(s.runtime_policies[&key("shop", "lock")], lock);

    // Fixed: the new version replaces it.
    api.put(R::RuntimePolicies, runtime_policy("shop", "lock", "bpf"));
    api.put(R::RuntimePolicies, runtime_policy("shop", "typo", "ptrace"));
    let s = src
        .until("the fixed versions", |s| {
            s.runtime_policies.len() == 2
                && s.runtime_policies[&key("shop", "lock")].enforce == enforcer_common::GUARD_BPF
        })
        .await;
    assert_eq!(
        s.runtime_policies[&key("shop", "typo")].enforce,
        enforcer_common::GUARD_PTRACE
    );
    src.metric_until("nothing invalid", |s| {
        s.res_metric("enforcer_kube_invalid_objects", "runtimepolicies") == 0.0
    })
    .await;
}

#[tokio::test]
async fn a_burst_becomes_one_snapshot() {
    let api = FakeApi::start().await;
    seed(&api);
    // A debounce longer than the burst takes to arrive even on a loaded machine.
    let debounce = Duration::from_millis(300);
    let mut src = start_with(
        &api,
        Tuning {
            debounce,
            ..tuning()
        },
    );
    src.until("the initial state", |_| true).await;
    let before = src.snapshots();
    for i in 0..300 {
        let node = if i % 10 == 0 { NODE } else { "node-b" };
        api.put(
            R::Pods,
            pod(
                "shop",
                &format!("burst-{i}"),
                Some(node),
                "b",
                Some(&format!("10.1.{}.{}", i / 200, i % 200 + 1)),
            ),
        );
    }
    api.put(R::Namespaces, namespace("burst", &[]));
    src.until("the whole burst", |s| {
        s.cluster.pods.len() == 305 && s.cluster.namespaces.contains_key("burst")
    })
    .await;
    sleep(debounce + Duration::from_millis(100)).await;
    let published = src.snapshots() - before;
    assert!(
        (1.0..=2.0).contains(&published),
        "{published} snapshots for a burst of 301 changes"
    );
    assert_eq!(
        src.metric("enforcer_kube_snapshots_total", &[("build", "full")]),
        1.0,
        "only the first snapshot is a copy; the others reuse the spare buffer"
    );
}

#[tokio::test]
async fn a_refused_watch_request_restarts_the_watcher() {
    let api = FakeApi::start().await;
    seed(&api);
    // A 410 on the watch request itself (not as an event): kube's watcher alone would retry
    // the same resourceVersion forever.
    api.fault(Fault::new(R::NetworkPolicies, Verb::Watch, 410).times(1));
    let mut src = start(&api);
    src.until("the initial state", |_| true).await;
    eventually("a network policy watch", || {
        api.watchers(R::NetworkPolicies) == 1
    })
    .await;
    assert_eq!(
        api.requests_for(R::NetworkPolicies, Verb::List).len(),
        2,
        "relisted"
    );
    api.put(R::NetworkPolicies, netpol("shop", "after", "x"));
    src.until("a watched policy", |s| {
        s.cluster.network_policies.len() == 2
    })
    .await;
    src.metric_until("the restart counted", |s| {
        s.metric(
            "enforcer_kube_watch_errors_total",
            &[("resource", "networkpolicies"), ("error", "watch_start")],
        ) == 1.0
            && s.res_metric("enforcer_kube_watch_restarts_total", "networkpolicies") == 1.0
    })
    .await;
}

#[tokio::test]
async fn an_expired_continue_token_starts_the_list_again() {
    let api = FakeApi::start().await;
    seed(&api);
    api.fault(Fault {
        only_continue: true,
        ..Fault::new(R::Pods, Verb::List, 410).times(1)
    });
    let mut src = start(&api);
    let s = src.until("the initial state", |_| true).await;
    assert_eq!(s.cluster.pods.len(), 5);
    let first_pages = api
        .requests_for(R::Pods, Verb::List)
        .iter()
        .filter(|q| q.param("continue").is_none() && q.param("fieldSelector").is_none())
        .count();
    assert_eq!(first_pages, 2, "the list started over");
}

#[tokio::test]
async fn stops_when_nobody_listens() {
    let api = FakeApi::start().await;
    seed(&api);
    // Before the initial lists complete.
    let (tx, rx) = source::channel();
    drop(rx);
    let stopped = timeout(
        WAIT,
        run_with_client(
            api.client(),
            NODE.into(),
            tx,
            Arc::new(Metrics::new()),
            tuning(),
        ),
    )
    .await
    .expect("run returns");
    assert!(stopped.is_ok(), "{stopped:?}");
    // While running.
    let (tx, mut rx) = source::channel();
    let task = tokio::spawn(run_with_client(
        api.client(),
        NODE.into(),
        tx,
        Arc::new(Metrics::new()),
        tuning(),
    ));
    timeout(WAIT, rx.wait_for(Option::is_some))
        .await
        .expect("a snapshot")
        .expect("running");
    drop(rx);
    let stopped = timeout(WAIT, task)
        .await
        .expect("the source stops")
        .unwrap();
    assert!(stopped.is_ok(), "{stopped:?}");
    eventually("the watches closed", || api.watchers(R::Pods) == 0).await;
}

#[tokio::test]
async fn run_reads_a_kubeconfig() {
    let api = FakeApi::start().await;
    seed(&api);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: test\n\
             clusters:\n- name: fake\n  cluster:\n    server: http://{}\n\
             users:\n- name: agent\n  user:\n    token: secret\n\
             contexts:\n- name: test\n  context:\n    cluster: fake\n    user: agent\n",
            api.addr
        ),
    )
    .unwrap();
    let (tx, mut rx) = source::channel();
    let c = client(Some(&path)).await.expect("a client");
    let task = tokio::spawn(run(c, NODE.into(), tx, Arc::new(Metrics::new())));
    timeout(WAIT, rx.wait_for(Option::is_some))
        .await
        .expect("a snapshot")
        .expect("running");
    assert_eq!(rx.borrow().as_ref().unwrap().cluster.pods.len(), 5);
    // Default timing: kube's page size.
    assert_eq!(
        api.requests_for(R::Pods, Verb::List)[0].param("limit"),
        Some("500")
    );
    task.abort();

    let missing = dir.path().join("nope");
    let Err(e) = client(Some(&missing)).await else {
        panic!("a missing kubeconfig is an error")
    };
    assert!(format!("{e:#}").contains("nope"), "{e:#}");
    let (tx, _rx) = source::channel();
    let c = client(Some(&path)).await.expect("a client");
    let e = run(c, "".into(), tx, Arc::new(Metrics::new()))
        .await
        .unwrap_err();
    assert!(format!("{e:#}").contains("node name"), "{e:#}");
}

#[test]
fn the_tls_backend_needs_no_system_openssl() {
    // Building an HTTPS client needs a rustls crypto provider: ring, from crate features.
    let config = ::kube::Config::new("https://127.0.0.1:6443".parse().unwrap());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    ::kube::Client::try_from(config).expect("an HTTPS client");
}

#[tokio::test]
async fn services_and_their_slices_come_and_go() {
    let api = FakeApi::start().await;
    seed(&api);
    api.put(R::Services, service("shop", "web", "10.96.0.20"));
    api.put(
        R::EndpointSlices,
        endpoint_slice("shop", "web-abc", "web", "10.0.1.1"),
    );
    let mut src = start(&api);
    let s = src
        .until("the Service and its slice", |s| {
            s.cluster.services.contains_key(&key("shop", "web"))
                && s.cluster
                    .endpoint_slices
                    .contains_key(&key("shop", "web-abc"))
        })
        .await;
    let svc = &s.cluster.services[&key("shop", "web")];
    assert_eq!(
        svc.cluster_ips,
        vec!["10.96.0.20".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(svc.ports[0].port, 80);
    let slice = &s.cluster.endpoint_slices[&key("shop", "web-abc")];
    assert_eq!(slice.service, "web");
    assert_eq!(slice.ports[0].port, 8080);
    assert!(slice.endpoints[0].ready);
    // An invalid Service is reported and left out; deletions remove.
    api.put(R::Services, service("shop", "bad", "10.96.0.999"));
    src.metric_until("the invalid Service counted", |s| {
        s.res_metric("enforcer_kube_invalid_objects", "services") == 1.0
    })
    .await;
    api.delete(R::EndpointSlices, "shop", "web-abc");
    api.delete(R::Services, "shop", "web");
    src.until("both gone", |s| {
        s.cluster.services.is_empty() && s.cluster.endpoint_slices.is_empty()
    })
    .await;
}

/// The API server stops answering: the source says so (`enforcer_kube_degraded`, which the
/// agent's /readyz turns into "degraded"), keeps the last state (nothing is published), and
/// converges as soon as the API server is back, including what changed meanwhile.
#[tokio::test]
async fn an_api_outage_is_reported_and_recovered_from() {
    let api = FakeApi::start().await;
    seed(&api);
    let mut src = start(&api);
    src.until("the initial state", |_| true).await;
    src.metric_until("not degraded", |s| {
        s.metric("enforcer_kube_degraded", &[]) == 0.0
    })
    .await;
    // Every request fails from now on, and the open watches are cut.
    for r in R::ALL {
        api.fault(Fault::new(r, Verb::List, 500));
        api.fault(Fault::new(r, Verb::Watch, 500));
        api.break_watches(r);
    }
    src.metric_until("degraded", |s| {
        s.metric("enforcer_kube_degraded", &[]) == 1.0
            && s.metric("enforcer_kube_degraded_since_timestamp_seconds", &[]) > 0.0
    })
    .await;
    // Changed while unreachable: not seen yet.
    api.put(
        R::Pods,
        pod("shop", "during", Some(NODE), "x", Some("10.0.1.9")),
    );
    api.clear_faults();
    let back = Instant::now();
    src.until("the change made during the outage", |s| {
        s.cluster.pods.contains_key(&key("shop", "during"))
    })
    .await;
    src.metric_until("no longer degraded", |s| {
        s.metric("enforcer_kube_degraded", &[]) == 0.0
    })
    .await;
    assert!(
        back.elapsed() < Duration::from_secs(5),
        "converged {:?} after the API server came back",
        back.elapsed()
    );
}

#[test]
fn the_default_backoff_retries_within_seconds() {
    let mut b = crate::kube::QuickBackoff::default();
    let delays: Vec<Duration> = (0..8).map(|_| b.next().unwrap()).collect();
    assert!(delays[0] >= Duration::from_millis(500) && delays[0] <= Duration::from_millis(600));
    assert!(
        delays.iter().all(|d| *d <= Duration::from_secs(6)),
        "{delays:?}"
    );
    assert!(delays[7] >= Duration::from_secs(5), "{delays:?}");
    b.reset();
    assert!(b.next().unwrap() <= Duration::from_millis(600));
}

/// The agent's pod, owned by its DaemonSet, in its namespace.
fn seed_agent(api: &FakeApi) {
    api.put(R::Namespaces, namespace("enforcer-system", &[]));
    api.put(
        R::DaemonSets,
        json!({"metadata": {"name": "enforcer", "namespace": "enforcer-system", "uid": "ds-1"}}),
    );
    api.put(
        R::Pods,
        json!({"metadata": {"name": "enforcer-x7k2p", "namespace": "enforcer-system",
                            "uid": "pod-1",
                            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet",
                                                 "name": "enforcer", "uid": "ds-1",
                                                 "controller": true}]},
               "spec": {"nodeName": NODE, "containers": []}}),
    );
}

fn removal(api: &FakeApi) -> removal::Removal {
    removal::Removal::spawn(
        api.client(),
        "enforcer-system".into(),
        "enforcer-x7k2p".into(),
    )
}

/// [`removal`], once both of its watches are open.
async fn following(api: &FakeApi) -> removal::Removal {
    let r = removal(api);
    eventually("both watches", || {
        api.watchers(R::DaemonSets) == 1 && api.watchers(R::Namespaces) == 1
    })
    .await;
    r
}

/// What `kubectl delete -k deploy/` does to the agent's access: every new request is
/// refused (its ClusterRoleBinding and ServiceAccount go in the same sweep).
fn revoke_access(api: &FakeApi) {
    for r in R::ALL {
        api.fault(Fault::new(r, Verb::List, 403));
        api.fault(Fault::new(r, Verb::Watch, 403));
    }
}

#[tokio::test]
async fn a_restart_keeps_the_programs_and_a_deleted_daemonset_removes_them() {
    use removal::Decision;
    let api = FakeApi::start().await;
    seed_agent(&api);
    let r = following(&api).await;
    // The DaemonSet is read by name in the agent's namespace, never listed cluster-wide.
    let ds = api.requests_for(R::DaemonSets, Verb::List);
    assert!(
        ds.iter()
            .all(|q| q.path.contains("/namespaces/enforcer-system/")
                && q.param("fieldSelector") == Some("metadata.name=enforcer")),
        "{ds:?}"
    );
    let d = r.decide(WAIT).await;
    assert!(
        matches!(&d, Decision::Keep(why) if why.contains("in place")),
        "{d:?}"
    );

    // Deleted while the agent can no longer read anything: the open watch saw it.
    revoke_access(&api);
    api.delete(R::DaemonSets, "enforcer-system", "enforcer");
    let d = timeout(WAIT, async {
        loop {
            match r.decide(Duration::from_millis(200)).await {
                Decision::Keep(_) => sleep(Duration::from_millis(10)).await,
                d => break d,
            }
        }
    })
    .await
    .expect("the deletion is seen");
    assert!(
        matches!(&d, Decision::Uninstall(why) if why.contains("DaemonSet enforcer-system/enforcer is deleted (seen by the watch)")),
        "{d:?}"
    );
}

#[tokio::test]
async fn a_terminating_namespace_removes_them_too() {
    use removal::Decision;
    let api = FakeApi::start().await;
    seed_agent(&api);
    let r = following(&api).await;
    let mut ns = namespace("enforcer-system", &[]);
    ns["metadata"]["deletionTimestamp"] = json!("2026-12-07T10:00:00Z");
    api.put(R::Namespaces, ns);
    // Read fresh at SIGTERM, or seen by the watch: either says so.
    let d = r.decide(WAIT).await;
    assert!(
        matches!(&d, Decision::Uninstall(why) if why.contains("namespace enforcer-system is being deleted")),
        "{d:?}"
    );
}

#[tokio::test]
async fn an_api_server_that_does_not_answer_keeps_the_programs() {
    use removal::Decision;
    let api = FakeApi::start().await;
    seed_agent(&api);
    for r in R::ALL {
        api.fault(Fault::new(r, Verb::List, 500));
        api.fault(Fault::new(r, Verb::Watch, 500));
    }
    let r = removal(&api);
    let d = r.decide(Duration::from_millis(500)).await;
    assert!(
        matches!(&d, Decision::Keep(why) if why.contains("failing closed")),
        "{d:?}"
    );
    // Known owner, but neither object can be read and nothing was seen: the same.
    api.clear_faults();
    eventually("both watches", || api.watchers(R::DaemonSets) == 1).await;
    revoke_access(&api);
    let d = r.decide(Duration::from_millis(500)).await;
    assert!(
        matches!(&d, Decision::Keep(why) if why.contains("failing closed")),
        "{d:?}"
    );
}
