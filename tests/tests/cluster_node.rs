//! Cluster tier: our own checks on the real node (real API server, kubelet, containerd and
//! runc, kube-proxy, CoreDNS) with the enforcer DaemonSet deployed by the tier.

use std::{
    thread,
    time::{Duration, Instant},
};

use enforcer_tests::cluster::{
    ENFORCER_NS, Kube, TestNamespace, agnhost_pod, busybox_pod, cluster,
};

/// Two backends (app=b, app=c) with Services, and clients.
fn backends(ns: &TestNamespace) {
    ns.apply(&format!(
        "{}{}{}{}",
        agnhost_pod("b", &[("app", "b")], ""),
        agnhost_pod("c", &[("app", "c")], ""),
        agnhost_pod("client", &[("app", "client")], ""),
        agnhost_pod("other", &[("app", "other")], ""),
    ));
    for svc in ["b", "c"] {
        ns.apply(&format!(
            "apiVersion: v1
kind: Service
metadata: {{name: svc-{svc}, namespace: NAMESPACE}}
spec:
  selector: {{app: {svc}}}
  ports:
  - {{name: http, port: 8080, targetPort: 80, protocol: TCP}}
  - {{name: udp, port: 8081, targetPort: 81, protocol: UDP}}
"
        ));
    }
    for pod in ["b", "c", "client", "other"] {
        ns.kube
            .wait(&ns.name, &format!("pod/{pod}"), "condition=Ready", 180);
    }
}

/// Wait until `f` returns true (policy and endpoint changes propagate asynchronously).
fn eventually(what: &str, secs: u64, f: impl Fn() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "not within {secs}s: {what}"
        );
        thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn pods_are_allowed_and_denied_by_network_policy() {
    let Some(k) = cluster("pods_are_allowed_and_denied_by_network_policy") else {
        return;
    };
    let ns = TestNamespace::new(k, "np", &[]);
    backends(&ns);
    let b = k.pod_ip(&ns.name, "b");
    assert_eq!(
        k.connect(&ns.name, "other", &format!("{b}:80"), "tcp"),
        "ok"
    );
    ns.apply(
        "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b-from-client, namespace: NAMESPACE}
spec:
  podSelector: {matchLabels: {app: b}}
  ingress:
  - from:
    - podSelector: {matchLabels: {app: client}}
    ports:
    - {port: 80, protocol: TCP}
",
    );
    eventually("other denied", 20, || {
        k.connect(&ns.name, "other", &format!("{b}:80"), "tcp") != "ok"
    });
    assert_eq!(
        k.connect(&ns.name, "client", &format!("{b}:80"), "tcp"),
        "ok"
    );
    assert_ne!(
        k.connect(&ns.name, "client", &format!("{b}:81"), "udp"),
        "ok"
    );
}

#[test]
fn services_and_dns_hold_under_an_egress_policy() {
    let Some(k) = cluster("services_and_dns_hold_under_an_egress_policy") else {
        return;
    };
    let ns = TestNamespace::new(k, "svc", &[]);
    backends(&ns);
    let (b, c) = (
        k.service_ip(&ns.name, "svc-b"),
        k.service_ip(&ns.name, "svc-c"),
    );
    let fqdn = |s: &str| format!("{s}.{}.svc.cluster.local", ns.name);
    // Before any policy: both Services answer, by address and by name (CoreDNS).
    eventually("Services reachable", 60, || {
        k.connect(&ns.name, "client", &format!("{b}:8080"), "tcp") == "ok"
            && k.connect(
                &ns.name,
                "client",
                &format!("{}:8080", fqdn("svc-c")),
                "tcp",
            ) == "ok"
    });
    // The docs' DNS example policy, unchanged but for its namespace, plus egress to app=b.
    let root = env!("CARGO_MANIFEST_DIR");
    let dns = std::fs::read_to_string(format!(
        "{root}/../deploy/examples/policies/20-allow-dns.yaml"
    ))
    .unwrap()
    .replace("namespace: shop", "namespace: NAMESPACE");
    ns.apply(&dns);
    ns.apply(
        "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: client-to-b, namespace: NAMESPACE}
spec:
  podSelector: {matchLabels: {app: client}}
  policyTypes: [Egress]
  egress:
  - to:
    - podSelector: {matchLabels: {app: b}}
    ports:
    - {port: 80, protocol: TCP}
    - {port: 81, protocol: UDP}
",
    );
    eventually("c's Service denied", 20, || {
        k.connect(&ns.name, "client", &format!("{c}:8080"), "tcp") != "ok"
    });
    assert_eq!(
        k.connect(&ns.name, "client", &format!("{b}:8080"), "tcp"),
        "ok",
        "b's ClusterIP through kube-proxy's Service, allowed by the pod selector"
    );
    assert_eq!(
        k.connect(&ns.name, "client", &format!("{b}:8081"), "udp"),
        "ok",
        "UDP through b's ClusterIP"
    );
    assert_eq!(
        k.connect(
            &ns.name,
            "client",
            &format!("{}:8080", fqdn("svc-b")),
            "tcp"
        ),
        "ok",
        "resolving through CoreDNS under the DNS example policy, then b"
    );
    assert_ne!(
        k.connect(
            &ns.name,
            "client",
            &format!("{}:8080", fqdn("svc-c")),
            "tcp"
        ),
        "ok"
    );
}

#[test]
fn runtime_guards_deny_in_a_baseline_namespace_and_exec_stays_under_policy() {
    let Some(k) =
        cluster("runtime_guards_deny_in_a_baseline_namespace_and_exec_stays_under_policy")
    else {
        return;
    };
    let guarded = TestNamespace::new(
        k,
        "guard",
        &[("pod-security.kubernetes.io/enforce", "baseline")],
    );
    let plain = TestNamespace::new(k, "plain", &[]);
    for ns in [&guarded, &plain] {
        ns.apply(&busybox_pod("shell", &[]));
        k.wait(&ns.name, "pod/shell", "condition=Ready", 180);
    }
    // kubectl exec works in the guarded pod (the runtime's exec path is exempt until it
    // runs the workload's command) ...
    let (code, out) = k.exec(&guarded.name, "shell", &["/bin/busybox", "true"]);
    assert_eq!(code, 0, "kubectl exec into a guarded pod: {out}");
    // ... and what it runs is guarded: a new user namespace (dangerous-capabilities,
    // baseline) is denied there and allowed in the unlabelled namespace.
    let (code, out) = k.exec(
        &guarded.name,
        "shell",
        &["/bin/busybox", "unshare", "-U", "/bin/busybox", "true"],
    );
    assert_ne!(code, 0, "unshare -U allowed in a baseline namespace: {out}");
    let (code, out) = k.exec(
        &plain.name,
        "shell",
        &["/bin/busybox", "unshare", "-U", "/bin/busybox", "true"],
    );
    assert_eq!(code, 0, "unshare -U must work without guards: {out}");

    // The exec'd shell stays under NetworkPolicy.
    guarded.apply(&agnhost_pod("server", &[("app", "server")], ""));
    k.wait(&guarded.name, "pod/server", "condition=Ready", 180);
    let server = k.pod_ip(&guarded.name, "server");
    // busybox nc, not wget: Debian's static busybox 1.35 wget segfaults (exit 139).
    let get =
        format!("printf 'GET /hostname HTTP/1.0\\r\\n\\r\\n' | /bin/busybox nc -w 2 {server} 80");
    let fetch = || {
        k.exec(&guarded.name, "shell", &["/bin/busybox", "sh", "-c", &get])
            .0
    };
    assert_eq!(fetch(), 0, "before any policy");
    guarded.apply(
        "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: shell-no-egress, namespace: NAMESPACE}
spec:
  podSelector: {matchLabels: {shell: \"yes\"}}
  policyTypes: [Egress]
",
    );
    eventually("the exec'd shell denied", 20, || fetch() != 0);
}

/// One line per round from a loop inside the client pod: A1/A0 for the allowed peer,
/// D1/D0 for the denied one.
fn probe_loop(k: Kube, ns: String, allowed: String, denied: String, rounds: u32) -> String {
    // busybox nc, not wget: Debian's static busybox 1.35 wget segfaults.
    let get = "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | /bin/busybox nc -w 1";
    let script = format!(
        "i=0; while [ $i -lt {rounds} ]; do \
           if {get} {allowed} 80 >/dev/null 2>&1; then echo A1; else echo A0; fi; \
           if {get} {denied} 80 >/dev/null 2>&1; then echo D1; else echo D0; fi; \
           i=$((i+1)); /bin/busybox sleep 0.2; done"
    );
    k.exec(&ns, "shell", &["/bin/busybox", "sh", "-c", &script])
        .1
}

#[test]
fn restarting_the_agent_leaks_nothing_and_cuts_nothing() {
    let Some(k) = cluster("restarting_the_agent_leaks_nothing_and_cuts_nothing") else {
        return;
    };
    let ns = TestNamespace::new(k, "restart", &[]);
    ns.apply(&format!(
        "{}{}{}",
        busybox_pod("shell", &[("app", "client")]),
        agnhost_pod("good", &[("app", "good")], ""),
        agnhost_pod("bad", &[("app", "bad")], ""),
    ));
    for p in ["shell", "good", "bad"] {
        k.wait(&ns.name, &format!("pod/{p}"), "condition=Ready", 180);
    }
    ns.apply(
        "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: client-to-good, namespace: NAMESPACE}
spec:
  podSelector: {matchLabels: {app: client}}
  policyTypes: [Egress]
  egress:
  - to:
    - podSelector: {matchLabels: {app: good}}
",
    );
    let good = k.pod_ip(&ns.name, "good");
    let bad = k.pod_ip(&ns.name, "bad");
    eventually("policy in force", 20, || {
        probe_loop(k, ns.name.clone(), good.clone(), bad.clone(), 1).trim() == "A1\nD0"
    });
    let (n, g, b) = (ns.name.clone(), good.clone(), bad.clone());
    let looper = thread::spawn(move || probe_loop(k, n, g, b, 40));
    thread::sleep(Duration::from_secs(2));
    let old = k.ok(&[
        "-n",
        ENFORCER_NS,
        "get",
        "pods",
        "-l",
        "app.kubernetes.io/name=enforcer",
        "-o",
        "name",
    ]);
    k.ok(&["-n", ENFORCER_NS, "delete", old.trim(), "--wait=false"]);
    k.ok(&[
        "-n",
        ENFORCER_NS,
        "rollout",
        "status",
        "ds/enforcer",
        "--timeout=180s",
    ]);
    let out = looper.join().unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 80, "probe loop output:\n{out}");
    assert!(
        !lines.contains(&"D1"),
        "a denied flow passed during the restart:\n{out}"
    );
    assert!(
        !lines.contains(&"A0"),
        "an allowed flow was cut during the restart:\n{out}"
    );
}
