//! Kernel tier: the `enforcer run` standalone-mode contract, with the real binary on a
//! simulated node (see tests/src/sim.rs): readiness, bad input, new pods, exit and
//! uninstall, metrics.

use std::time::{Duration, Instant};

use enforcer_tests::{
    Place, is_root, probe,
    sim::{PodSpec, SimNode},
    skip,
};

const DENY_ALL_X: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
"#;

/// Program ids of the programs named `prog` attached at `cgroup` (`bpftool cgroup show`).
fn attached_ids(cgroup: &std::path::Path, prog: &str) -> Vec<String> {
    let out = std::process::Command::new("bpftool")
        .args(["cgroup", "show"])
        .arg(cgroup)
        .output()
        .expect("bpftool");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.split_whitespace().any(|w| w == prog))
        .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
        .collect()
}

fn node(test: &str, subnet: u8, pods: &[&str]) -> Option<SimNode> {
    if !is_root() {
        skip(
            test,
            "needs root (BPF programs, cgroups, network namespaces)",
        );
        return None;
    }
    let mut node = SimNode::new(subnet);
    node.add_namespace("x", &[]);
    for p in pods {
        node.add_pod(PodSpec::new("x", p, true));
    }
    node.write_cluster();
    Some(node)
}

#[test]
fn not_ready_until_the_kubelet_cgroups_exist() {
    let Some(node) = node("not_ready_until_the_kubelet_cgroups_exist", 60, &[]) else {
        return;
    };
    // Remove the (empty) kubelet tree: the agent must wait for it, unready.
    let kubepods = node.kubepods.clone();
    std::fs::remove_dir(kubepods.join("kubepods-burstable.slice")).unwrap();
    std::fs::remove_dir(&kubepods).unwrap();
    let mut agent = node.spawn_agent(&[]);
    let start = Instant::now();
    while agent.get("/readyz").0 != 503 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no 503 from /readyz:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        agent.get("/readyz").0,
        503,
        "ready without a kubelet cgroup tree"
    );
    assert_eq!(agent.get("/healthz").0, 200);
    assert_eq!(agent.metric("enforcer_ready"), Some(0.0));
    std::fs::create_dir_all(kubepods.join("kubepods-burstable.slice")).unwrap();
    agent.wait_ready(Duration::from_secs(10));
    assert_eq!(agent.metric("enforcer_ready"), Some(1.0));
    assert!(
        agent.log_text().contains("waiting for the kubelet"),
        "{}",
        agent.log_text()
    );
}

#[test]
fn malformed_manifests_are_reported_and_the_rest_stays_enforced() {
    let Some(node) = node(
        "malformed_manifests_are_reported_and_the_rest_stays_enforced",
        61,
        &["a", "b"],
    ) else {
        return;
    };
    node.write_manifest("10-deny.yaml", DENY_ALL_X);
    let agent = node.start_agent(&[]);
    assert_eq!(node.probe("x/a", "x/b", "tcp", 80, false, 500), "eperm");

    // A broken file and a policy with a bad field, next to the valid policy.
    let before = agent.reconciles();
    node.write_manifest(
        "20-broken.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: [oops\n",
    );
    node.write_manifest(
        "30-bad-port.yaml",
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bad-port, namespace: x}
spec:
  podSelector: {}
  ingress:
  - ports:
    - port: 70000
"#,
    );
    let start = Instant::now();
    loop {
        let log = agent.log_text();
        if log.contains("30-bad-port.yaml") && log.contains("20-broken.yaml") {
            assert!(
                log.contains("NetworkPolicy x/bad-port")
                    && log.contains("spec.ingress[0].ports[0].port"),
                "error does not name object and field:\n{log}"
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "errors not reported:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = before;
    assert!(agent.metric("enforcer_manifest_errors").unwrap_or(0.0) >= 2.0);
    // Everything else is still enforced.
    assert_eq!(node.probe("x/a", "x/b", "tcp", 80, false, 500), "eperm");
    assert_eq!(agent.get("/readyz").0, 200);

    // An invalid edit of the valid policy keeps its last good version.
    node.write_manifest(
        "10-deny.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny-all, namespace: x}\nspec:\n  podSelector: {}\n  policyTypes: [Sideways]\n",
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        node.probe("x/a", "x/b", "tcp", 80, false, 500),
        "eperm",
        "last good version dropped"
    );
    assert!(
        agent.log_text().contains("spec.policyTypes"),
        "{}",
        agent.log_text()
    );
}

/// The hostile corpus (tests/corpus/manifests) dropped next to a valid policy: the real
/// agent reports every case, naming its file, and enforces the valid policy as before, with
/// real traffic.
#[test]
fn the_hostile_corpus_is_reported_and_the_valid_policy_stays_enforced() {
    let Some(node) = node(
        "the_hostile_corpus_is_reported_and_the_valid_policy_stays_enforced",
        69,
        &["a", "b"],
    ) else {
        return;
    };
    node.write_manifest(
        "10-allow.yaml",
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-to-b-80, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress:
  - to: [{podSelector: {}}]
    ports: [{port: 80}]
"#,
    );
    let agent = node.start_agent(&[]);
    let check = |when: &str| {
        assert_eq!(
            node.probe("x/a", "x/b", "tcp", 80, false, 1000),
            "ok",
            "{when}: the allowed flow"
        );
        assert_eq!(
            node.probe("x/a", "x/b", "tcp", 81, false, 500),
            "eperm",
            "{when}: the denied flow"
        );
    };
    check("before the corpus");
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/manifests");
    let mut cases = Vec::new();
    for e in std::fs::read_dir(&corpus).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".yaml") || name.ends_with(".json") {
            std::fs::copy(e.path(), node.manifests.path().join(format!("50-{name}"))).unwrap();
            cases.push(format!("50-{name}"));
        }
    }
    let start = Instant::now();
    loop {
        let log = agent.log_text();
        let missing: Vec<&String> = cases.iter().filter(|c| !log.contains(c.as_str())).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "not reported: {missing:?}\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let errors = agent.metric("enforcer_manifest_errors").unwrap_or(0.0);
    assert!(
        errors >= cases.len() as f64,
        "{errors} errors for {} cases",
        cases.len()
    );
    check("with the corpus loaded");
    assert_eq!(agent.get("/readyz").0, 200);
    assert_eq!(agent.get("/healthz").0, 200);
}

#[test]
fn pods_are_enforced_when_their_cgroup_and_manifest_appear() {
    let Some(mut node) = node(
        "pods_are_enforced_when_their_cgroup_and_manifest_appear",
        62,
        &["a"],
    ) else {
        return;
    };
    // Runtime guards off: an unclassified pod also gets the restricted guards, under which
    // the root probe's exec would be killed (agent_guards tests that); this test is about
    // its traffic.
    let agent = node.start_agent(&["--runtime-guards", "off"]);
    // A pod the agent has not classified (its cgroup exists, no manifest yet): denied by
    // default, both ways.
    node.add_pod(PodSpec::new("x", "late", true));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(node.probe("x/late", "x/a", "tcp", 80, false, 500), "eperm");
    assert_eq!(
        node.probe("x/a", "x/late", "tcp", 80, false, 500),
        "timeout"
    );
    // Its manifest arrives: classified, and open (no policy).
    let before = agent.reconciles();
    node.write_cluster();
    agent.wait_reconciled(before, Duration::from_secs(5));
    assert_eq!(node.probe("x/late", "x/a", "tcp", 80, false, 1000), "ok");
    assert_eq!(node.probe("x/a", "x/late", "tcp", 80, false, 1000), "ok");
    // And a policy written now applies to it.
    let before = agent.reconciles();
    node.write_manifest("10-deny.yaml", DENY_ALL_X);
    agent.wait_reconciled(before, Duration::from_secs(5));
    assert_eq!(node.probe("x/late", "x/a", "tcp", 80, false, 500), "eperm");
}

#[test]
fn unclassified_allow_setting_leaves_unknown_pods_open() {
    let Some(mut node) = node(
        "unclassified_allow_setting_leaves_unknown_pods_open",
        63,
        &["a"],
    ) else {
        return;
    };
    let _agent = node.start_agent(&["--unclassified", "allow"]);
    node.add_pod(PodSpec::new("x", "late", true));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(node.probe("x/late", "x/a", "tcp", 80, false, 1000), "ok");
}

#[test]
fn sigterm_exits_fast_enforcement_stays_until_uninstall() {
    let Some(node) = node(
        "sigterm_exits_fast_enforcement_stays_until_uninstall",
        64,
        &["a", "b"],
    ) else {
        return;
    };
    node.write_manifest("10-deny.yaml", DENY_ALL_X);
    let mut agent = node.start_agent(&[]);
    assert_eq!(node.probe("x/a", "x/b", "tcp", 80, false, 500), "eperm");
    let took = agent.stop();
    assert!(took < Duration::from_secs(2), "SIGTERM took {took:?}");
    assert!(!agent.running());
    // The pinned programs and maps keep enforcing without the agent.
    assert_eq!(node.probe("x/a", "x/b", "tcp", 80, false, 500), "eperm");
    assert!(agent.bpffs.exists());
    agent.uninstall();
    assert!(!agent.bpffs.exists(), "pins left behind");
    assert_eq!(node.probe("x/a", "x/b", "tcp", 80, false, 1000), "ok");
}

#[test]
fn metrics_are_served_in_prometheus_format() {
    let Some(node) = node("metrics_are_served_in_prometheus_format", 65, &["a", "b"]) else {
        return;
    };
    node.write_manifest("10-deny.yaml", DENY_ALL_X);
    let agent = node.start_agent(&[]);
    assert_eq!(node.probe("x/b", "x/a", "udp", 81, false, 300), "eperm");
    std::thread::sleep(Duration::from_millis(200));
    let (status, body) = agent.get("/metrics");
    assert_eq!(status, 200);
    for family in [
        "# TYPE enforcer_ready gauge",
        "# TYPE enforcer_reconciles_total counter",
        "# TYPE enforcer_network_verdicts_total counter",
        "enforcer_endpoints 2",
        "# TYPE enforcer_events_dropped_total counter",
        "# TYPE enforcer_datapath_denied_total counter",
    ] {
        assert!(body.contains(family), "missing {family:?} in:\n{body}");
    }
    assert!(
        body.contains("enforcer_network_verdicts_total{direction=\"egress\",verdict=\"deny\",reason=\"default-deny\"}"),
        "{body}"
    );
    assert_eq!(agent.get("/nope").0, 404);
}

#[test]
fn restart_reuses_pinned_state_without_a_gap() {
    let Some(node) = node("restart_reuses_pinned_state_without_a_gap", 66, &["a", "b"]) else {
        return;
    };
    node.write_manifest("10-deny.yaml", DENY_ALL_X);
    let mut first = node.start_agent(&[]);
    assert_eq!(node.probe("x/a", "x/b", "tcp", 80, false, 500), "eperm");
    first.stop();
    // No agent: the pinned programs and maps keep enforcing.
    assert_eq!(node.probe("x/a", "x/b", "tcp", 80, false, 500), "eperm");
    let second = node.start_agent_at(&first.bpffs, &[]);
    assert!(
        second
            .log_text()
            .contains("restart: keeping the endpoint ids of 2 pods"),
        "{}",
        second.log_text()
    );
    assert_eq!(node.probe("x/a", "x/b", "tcp", 80, false, 500), "eperm");
    // The restarted agent still follows changes.
    let before = second.reconciles();
    node.remove_manifest("10-deny.yaml");
    second.wait_reconciled(before, Duration::from_secs(5));
    assert_eq!(node.probe("x/a", "x/b", "tcp", 80, false, 1000), "ok");
    drop(second);
    // Both agents shared one instance directory: the first one's drop uninstalls it (again).
    drop(first);
}

/// An upgrade to a binary of another ABI version (another map layout): the previous
/// version's pins (here: the first agent's, moved to the previous version's directory, as
/// an older binary leaves them) keep enforcing until the new agent has attached and
/// programmed its own, and are then detached and removed. Before that, they stayed
/// attached beside the new programs with frozen maps: a policy removed after the upgrade
/// still denied.
#[test]
fn an_upgrade_removes_what_the_previous_version_left_attached() {
    let Some(node) = node(
        "an_upgrade_removes_what_the_previous_version_left_attached",
        74,
        &["a", "b"],
    ) else {
        return;
    };
    let attached = |prog: &str| attached_ids(&node.kubepods, prog).len();
    node.write_manifest("10-deny.yaml", DENY_ALL_X);
    let mut old = node.start_agent(&[]);
    assert_eq!(node.probe("x/a", "x/b", "tcp", 80, false, 500), "eperm");
    old.stop();
    let ours = old.bpffs.join(format!("v{}", enforcer_common::ABI_VERSION));
    let previous = old
        .bpffs
        .join(format!("v{}", enforcer_common::ABI_VERSION - 1));
    std::fs::rename(&ours, &previous).expect("moving the pins to the previous version");
    assert_eq!(attached("net_egress"), 1, "the previous version's program");
    // No agent: the previous version keeps enforcing.
    assert_eq!(node.probe("x/a", "x/b", "tcp", 80, false, 500), "eperm");

    let new = node.start_agent_at(&old.bpffs, &[]);
    assert!(
        new.log_text().contains("upgrade: removed the"),
        "{}",
        new.log_text()
    );
    assert!(!previous.exists(), "the previous version's pins remain");
    for prog in ["net_ingress", "net_egress", "net_connect4", "net_sendmsg6"] {
        assert_eq!(attached(prog), 1, "{prog}: ours only");
    }
    assert_eq!(node.probe("x/a", "x/b", "tcp", 80, false, 500), "eperm");
    let before = new.reconciles();
    node.remove_manifest("10-deny.yaml");
    new.wait_reconciled(before, Duration::from_secs(5));
    assert_eq!(
        node.probe("x/a", "x/b", "tcp", 80, false, 1000),
        "ok",
        "a stale program of the previous version still denies"
    );
    drop(new);
    drop(old);
}

/// Attaching is all or nothing. A tool attached a program without multi-attach flags to a
/// cgroup above kubepods, which forbids attaching programs of that type below it: the
/// restarted agent cannot attach its egress program. It must leave none of its new
/// programs attached (its ingress program attached first), leave the previous agent's
/// pinned programs enforcing, and say why.
#[test]
fn a_refused_attachment_leaves_nothing_half_attached_and_says_why() {
    let Some(node) = node(
        "a_refused_attachment_leaves_nothing_half_attached_and_says_why",
        75,
        &["a", "b"],
    ) else {
        return;
    };
    let attached = |prog: &str| attached_ids(&node.kubepods, prog).len();
    node.write_manifest("10-deny.yaml", DENY_ALL_X);
    let mut first = node.start_agent(&["--runtime-guards", "off"]);
    first.stop();
    let ids = |prog: &str| attached_ids(&node.kubepods, prog);
    let before = (ids("net_ingress"), ids("net_egress"));
    let _blocker = enforcer_tests::ExclusiveCgroupProgram::attach(
        &node.cgroup_root.path,
        enforcer_tests::BPF_CGROUP_INET_EGRESS,
    )
    .expect("attaching the exclusive program above kubepods");

    let mut second = node.spawn_agent_at_dir(&first.bpffs, &["--runtime-guards", "off"]);
    let start = Instant::now();
    while second.running() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the agent runs although it could not attach"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = second.log_text();
    for says in [
        "net_egress",
        "BPF_F_ALLOW_MULTI",
        "none of this start's stays attached",
    ] {
        assert!(log.contains(says), "{says:?} not in:\n{log}");
    }
    // Nothing of the second agent: the same program ids as before it started.
    assert_eq!(
        (ids("net_ingress"), ids("net_egress")),
        before,
        "the failed start changed what is attached"
    );
    assert_eq!(attached("net_connect4"), 1);
    // The previous agent's programs still enforce.
    assert_eq!(node.probe("x/a", "x/b", "tcp", 80, false, 500), "eperm");
    drop(second);
    drop(first);
}

/// `enforcer observe` follows the real agent's verdicts live, named by pod and policy, and
/// filters them.
#[test]
fn observe_streams_the_verdicts_named_and_filtered() {
    let Some(node) = node(
        "observe_streams_the_verdicts_named_and_filtered",
        76,
        &["a", "b"],
    ) else {
        return;
    };
    node.write_manifest("10-deny.yaml", DENY_ALL_X);
    let agent = node.start_agent(&[]);
    let follow = |args: &[&str]| {
        let mut child = std::process::Command::new(enforcer_tests::sim::agent_bin())
            .arg("observe")
            .arg("--socket")
            .arg(&agent.observe)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("enforcer observe");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        (child, rx)
    };
    let (mut json, json_rx) = follow(&["--json", "--pod", "x/a", "--verdict", "deny"]);
    let (mut text, text_rx) = follow(&["--direction", "egress"]);
    let (mut other, other_rx) = follow(&["--namespace", "elsewhere"]);
    // The clients are connected once the agent has them: give them a moment.
    std::thread::sleep(Duration::from_millis(300));
    let b = node.pods["x/b"].v4.to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = None;
    while seen.is_none() && Instant::now() < deadline {
        assert_eq!(node.probe("x/a", "x/b", "tcp", 80, false, 300), "eperm");
        while let Ok(line) = json_rx.recv_timeout(Duration::from_millis(200)) {
            let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
            assert_eq!(v["pod"], "x/a", "{line}");
            assert_eq!(v["verdict"], "deny", "{line}");
            if v["direction"] == "egress" && v["destination"] == format!("{b}:80") {
                seen = Some(v);
                break;
            }
        }
    }
    let v = seen.expect("no denial of x/a -> x/b:80 on the stream");
    assert_eq!(v["type"], "network");
    assert_eq!(v["protocol"], "tcp");
    assert_eq!(v["reason"], "default-deny", "{v}");
    assert_eq!(v["peer"], "x/b", "{v}");
    let line = text_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("a text line");
    assert!(line.contains("deny egress tcp"), "{line}");
    assert!(
        other_rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "an event of another namespace passed the filter"
    );
    for c in [&mut json, &mut text, &mut other] {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// A staged roll-out: the pods of a namespace labelled `enforcer.dev/network-policy=audit`
/// have their would-be denials reported and passed; another namespace's policy is enforced
/// at the same time.
#[test]
fn a_namespace_in_audit_mode_reports_its_denials_and_lets_them_pass() {
    let test = "a_namespace_in_audit_mode_reports_its_denials_and_lets_them_pass";
    if !is_root() {
        skip(
            test,
            "needs root (BPF programs, cgroups, network namespaces)",
        );
        return;
    }
    let mut node = SimNode::new(77);
    node.add_namespace("x", &[("enforcer.dev/network-policy", "audit")]);
    node.add_namespace("y", &[]);
    for (ns, p) in [("x", "a"), ("x", "b"), ("y", "c"), ("y", "d")] {
        node.add_pod(PodSpec::new(ns, p, true));
    }
    node.write_cluster();
    node.write_manifest("10-deny.yaml", DENY_ALL_X);
    node.write_manifest(
        "11-deny-y.yaml",
        &DENY_ALL_X.replace("namespace: x", "namespace: y"),
    );
    let agent = node.start_agent(&[]);
    assert_eq!(node.probe("x/a", "x/b", "tcp", 80, false, 1000), "ok");
    assert_eq!(node.probe("y/c", "y/d", "tcp", 80, false, 500), "eperm");
    // Both events reach the log asynchronously.
    let has =
        |log: &str, what: &str, pod: &str| log.lines().any(|l| l.contains(what) && l.contains(pod));
    let start = Instant::now();
    let log = loop {
        let log = agent.log_text();
        if has(&log, "audit egress tcp", "(x/a)") && has(&log, "deny egress tcp", "(y/c)") {
            break log;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no audit event for x/a or no denial for y/c:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        !log.lines()
            .any(|l| l.contains("deny egress tcp") && l.contains("(x/a)")),
        "{log}"
    );
}

/// `--log-format json`: every line the agent logs is one JSON object, for log collectors.
#[test]
fn json_logs_are_one_object_per_line() {
    let Some(node) = node("json_logs_are_one_object_per_line", 78, &["a", "b"]) else {
        return;
    };
    node.write_manifest("10-deny.yaml", DENY_ALL_X);
    let agent = node.start_agent(&["--log-format", "json"]);
    assert_eq!(node.probe("x/a", "x/b", "tcp", 80, false, 500), "eperm");
    let start = Instant::now();
    loop {
        let log = agent.log_text();
        let lines: Vec<serde_json::Value> = log
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
            .collect();
        let message =
            |v: &serde_json::Value| v["fields"]["message"].as_str().unwrap_or("").to_string();
        if lines
            .iter()
            .any(|v| message(v).starts_with("deny egress tcp"))
        {
            assert!(lines.iter().any(|v| message(v).starts_with("enforcing:")));
            assert!(
                lines
                    .iter()
                    .all(|v| v["level"].is_string() && v["timestamp"].is_string())
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no denial logged:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn network_audit_mode_reports_without_dropping() {
    let Some(node) = node(
        "network_audit_mode_reports_without_dropping",
        67,
        &["a", "b"],
    ) else {
        return;
    };
    node.write_manifest("10-deny.yaml", DENY_ALL_X);
    let agent = node.start_agent(&["--network-audit"]);
    assert_eq!(node.probe("x/a", "x/b", "tcp", 80, false, 1000), "ok");
    assert_eq!(node.probe("x/a", "x/b", "udp", 81, false, 1000), "ok");
    std::thread::sleep(Duration::from_millis(300));
    let log = agent.log_text();
    assert!(log.contains("audit egress tcp"), "{log}");
    assert!(log.contains("by default-deny"), "{log}");
    let m = agent.get("/metrics").1;
    assert!(m.contains("verdict=\"audit\""), "{m}");
}

/// On a node that is itself a container (kind), the agent's cgroupfs is a nested cgroup
/// namespace: it sees the pods' root one or more levels higher than the kernel numbers it.
/// Enforcement must not depend on that view.
#[test]
fn nested_cgroup_namespace_node_is_enforced() {
    let Some(node) = node("nested_cgroup_namespace_node_is_enforced", 68, &["a", "b"]) else {
        return;
    };
    let agent = node.start_agent_nested(&[]);
    // Open before any policy; then a default deny on x applies to its pods' containers.
    assert_eq!(node.probe("x/a", "x/b", "tcp", 80, false, 1000), "ok");
    // A cgroup the workload made below its container is not in the agent's maps: only the
    // datapath's ancestor walk, which starts at the root's level, finds its pod.
    let pod = &node.pods["x/a"];
    let sub = pod.cgroup.as_ref().expect("local pod").join("workload-sub");
    std::fs::create_dir(&sub).expect("mkdir sub-cgroup");
    let place = Place {
        netns: Some(&pod.netns),
        cgroup: Some(&sub),
    };
    let dst = node.pods["x/b"].v4.to_string();
    // Unclassified cgroups are denied (the default): "ok" means it was resolved to x/a.
    assert_eq!(
        probe(place, &["connect", "tcp", &dst, "80", "1000"]).1,
        "ok",
        "a workload's own sub-cgroup must get its pod's (open) policy"
    );
    let before = agent.reconciles();
    node.write_manifest("10-deny.yaml", DENY_ALL_X);
    agent.wait_reconciled(before, Duration::from_secs(5));
    assert_eq!(node.probe("x/a", "x/b", "tcp", 80, false, 500), "eperm");
    assert_eq!(node.probe("x/b", "x/a", "tcp", 80, false, 500), "eperm");
    assert_eq!(
        probe(place, &["connect", "tcp", &dst, "80", "500"]).1,
        "eperm"
    );
    // The agent exports counters every second.
    let real = node.cgroup_root.level() + 1;
    let start = Instant::now();
    let mut seen = None;
    while start.elapsed() < Duration::from_secs(5) {
        seen = agent.metric("enforcer_cgroup_root_level");
        if seen.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        seen,
        Some(real as f64),
        "the datapath should report the kernel's level of kubepods.slice"
    );
    assert!(
        agent.log_text().contains("nested node"),
        "the agent should log the nested cgroup namespace:\n{}",
        agent.log_text()
    );
}

/// A static pod (kube-apiserver and etcd on kubeadm, kind and minikube nodes; kube-proxy on
/// GKE's legacy dataplane): the kubelet names its cgroup by its config hash, and only the
/// mirror pod's `kubernetes.io/config.mirror` annotation joins it to the pod in the API,
/// whose metadata.uid is another. It must be classified, not dropped as unclassified.
#[test]
fn static_pods_are_classified_by_their_mirror_annotation() {
    let test = "static_pods_are_classified_by_their_mirror_annotation";
    if !is_root() {
        skip(
            test,
            "needs root (BPF programs, cgroups, network namespaces)",
        );
        return;
    }
    let mut node = SimNode::new(73);
    node.add_namespace("x", &[]);
    node.add_pod(PodSpec::new("x", "a", true));
    node.add_pod(
        PodSpec::new("x", "apiserver", true).static_pod("0f1e2d3c4b5a69788796a5b4c3d2e1f0"),
    );
    node.write_cluster();
    let _agent = node.start_agent(&[]);
    // Both directions: the static pod serving and connecting.
    assert_eq!(
        node.probe("x/a", "x/apiserver", "tcp", 80, false, 1000),
        "ok"
    );
    assert_eq!(
        node.probe("x/apiserver", "x/a", "tcp", 80, false, 1000),
        "ok"
    );
    // And policy applies to it like to any pod.
    node.write_manifest("10-deny.yaml", DENY_ALL_X);
    let start = Instant::now();
    while node.probe("x/apiserver", "x/a", "tcp", 80, false, 300) != "eperm" {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "deny-all not applied to the static pod"
        );
    }
}

/// An agent replaced while its predecessor's programs stay attached (a DaemonSet rollout,
/// a crash) starts in a new pod cgroup below kubepods that nothing has classified yet. With
/// `--unclassified deny` it must not cut itself off (in Kubernetes mode it could never reach
/// the API server to classify anything): its own cgroup is exempt from pod policy, and only
/// its own.
#[test]
fn restarted_agent_in_a_fresh_pod_cgroup_is_not_locked_out() {
    let Some(mut node) = node(
        "restarted_agent_in_a_fresh_pod_cgroup_is_not_locked_out",
        74,
        &["a"],
    ) else {
        return;
    };
    // Runtime guards off: see pods_are_enforced_when_their_cgroup_and_manifest_appear.
    let mut first = node.start_agent(&["--runtime-guards", "off"]);
    first.stop();
    let own = node.kubepods.join(
        "kubepods-burstable.slice/kubepods-burstable-pod5f0c3a2e_1d4b_4e8f_9a6c_2b7d8e9f0a1b.slice/\
         cri-containerd-7a1f3c5e9b2d4f6a8c0e1b3d5f7a9c2e4b6d8f0a1c3e5b7d9f1a3c5e7b9d1f3a.scope",
    );
    std::fs::create_dir_all(&own).unwrap();
    // Ready means its health port answered through the attached programs.
    let second = node.start_agent_in(&first.bpffs, &own, &["--runtime-guards", "off"]);
    assert!(
        second.log_text().contains("is exempt from pod policy"),
        "{}",
        second.log_text()
    );
    // Any other unclassified cgroup is still denied.
    node.add_pod(PodSpec::new("x", "late", true));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(node.probe("x/late", "x/a", "tcp", 80, false, 500), "eperm");
    drop(second);
    drop(first);
}

#[test]
fn a_pod_cgroup_nobody_classifies_is_reported_with_its_path() {
    let Some(node) = node(
        "a_pod_cgroup_nobody_classifies_is_reported_with_its_path",
        75,
        &["a"],
    ) else {
        return;
    };
    let agent = node.start_agent(&[]);
    assert_eq!(agent.metric("enforcer_unclassified_cgroups"), Some(0.0));
    // A pod cgroup of a pod that no manifest describes (as after a missed API event).
    let stray = node.kubepods.join(
        "kubepods-burstable.slice/kubepods-burstable-pod5a5a5a5a_0000_4000_8000_000000000075.slice",
    );
    std::fs::create_dir_all(&stray).unwrap();
    let start = Instant::now();
    loop {
        if agent.metric("enforcer_unclassified_cgroups") == Some(1.0) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "not reported:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        start.elapsed() >= Duration::from_secs(3),
        "reported before the grace period"
    );
    let log = agent.log_text();
    assert!(
        log.contains("unclassified") && log.contains("kubepods-burstable-pod5a5a5a5a"),
        "the log names the cgroup:\n{log}"
    );
    std::fs::remove_dir(&stray).unwrap();
}

#[test]
fn a_policy_the_agent_cannot_convert_isolates_instead_of_vanishing() {
    let Some(node) = node(
        "a_policy_the_agent_cannot_convert_isolates_instead_of_vanishing",
        76,
        &["a", "b"],
    ) else {
        return;
    };
    let agent = node.start_agent(&[]);
    assert_eq!(node.probe("x/a", "x/b", "tcp", 80, false, 500), "ok");
    // The API server would accept this (any int port), the agent cannot enforce it: its
    // selector must still isolate b, and the broken rule must open nothing.
    let before = agent.reconciles();
    node.write_manifest(
        "10-bad.yaml",
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b-ingress, namespace: x}
spec:
  podSelector: {matchLabels: {pod: b}}
  ingress:
  - from:
    - podSelector: {}
    ports:
    - port: 70000
"#,
    );
    agent.wait_reconciled(before, Duration::from_secs(5));
    assert_eq!(
        node.probe("x/a", "x/b", "tcp", 80, false, 500),
        "timeout",
        "the unconvertible policy was dropped: b is open"
    );
    assert_eq!(node.probe("x/b", "x/a", "tcp", 80, false, 500), "ok");
    assert_eq!(
        agent.metric("enforcer_network_policies_fail_closed"),
        Some(1.0)
    );
    let log = agent.log_text();
    assert!(
        log.contains("x/b-ingress") && log.contains("fail-closed"),
        "not reported:\n{log}"
    );
}

/// Special destinations and what a denied peer can learn.
/// - `connect()`/`sendmsg()` to 0.0.0.0 or `::` reaches the local host, i.e. the pod's own
///   network namespace (the kernel routes it through the loopback device): like 127.0.0.1,
///   it is the pod talking to itself, never another pod, and policy does not apply.
/// - A SYN that ingress policy denies is dropped at the pod's socket: no SYN-ACK, no RST,
///   the client times out and learns nothing about the port.
/// - A SYN to a port where nothing listens never reaches a socket (so no cgroup program
///   runs): the pod's kernel answers RST. A denied peer can tell a closed port from an
///   open one this way; no data reaches the pod. Documented in docs/network-policy.md.
#[test]
fn special_destinations_and_what_a_denied_peer_learns() {
    let Some(node) = node(
        "special_destinations_and_what_a_denied_peer_learns",
        76,
        &["a", "b"],
    ) else {
        return;
    };
    node.write_manifest("10-deny.yaml", DENY_ALL_X);
    let _agent = node.start_agent(&["--runtime-guards", "off"]);
    let probe = |to: &str, port: &str| {
        enforcer_tests::probe(
            node.pods["x/a"].place(),
            &["connect", "tcp", to, port, "500"],
        )
        .1
    };
    // Egress deny-all: other pods are refused at connect(), the pod itself is not.
    let b = node.pods["x/b"].v4.to_string();
    assert_eq!(probe(&b, "80"), "eperm");
    for own in ["127.0.0.1", "0.0.0.0", "::1", "::"] {
        assert_eq!(probe(own, "80"), "ok", "{own} is the pod's own namespace");
    }
    // Ingress: b's policy denies everything; a's egress is opened to b for this part.
    node.write_manifest(
        "20-a-egress.yaml",
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-out, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress: [{}]
"#,
    );
    let start = Instant::now();
    while probe(&b, "80") == "eperm" {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "egress not opened"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(probe(&b, "80"), "timeout", "an open, denied port: silence");
    assert_eq!(
        probe(&b, "1"),
        "refused",
        "a closed port answers RST from the pod's kernel (documented)"
    );
}
