//! Cluster tier: the DaemonSet from deploy/ on the real single-node cluster. The tier
//! (`cargo xtask test cluster`) applies it before this runs.

use enforcer_tests::cluster::{ENFORCER_NS, cluster};

#[test]
fn the_daemonset_is_ready_and_enforcing() {
    let Some(k) = cluster("the_daemonset_is_ready_and_enforcing") else {
        return;
    };
    k.ok(&[
        "-n",
        ENFORCER_NS,
        "rollout",
        "status",
        "ds/enforcer",
        "--timeout=180s",
    ]);
    let logs = k.ok(&["-n", ENFORCER_NS, "logs", "ds/enforcer", "-c", "agent"]);
    assert!(logs.contains("enforcing:"), "agent log:\n{logs}");
    assert!(
        logs.contains("initial lists complete"),
        "Kubernetes mode through its service account:\n{logs}"
    );
    assert!(
        !logs.contains("Forbidden"),
        "a permission is missing:\n{logs}"
    );
}

#[test]
fn the_service_account_reads_what_it_needs_and_writes_nothing() {
    let Some(k) = cluster("the_service_account_reads_what_it_needs_and_writes_nothing") else {
        return;
    };
    let sa = format!("system:serviceaccount:{ENFORCER_NS}:enforcer");
    let can = |verb: &str, res: &str| {
        let out = k.run(&["auth", "can-i", verb, res, "--all-namespaces", "--as", &sa]);
        String::from_utf8_lossy(&out.stdout).trim() == "yes"
    };
    for res in [
        "pods",
        "namespaces",
        "services",
        "endpointslices.discovery.k8s.io",
        "networkpolicies.networking.k8s.io",
        "runtimepolicies.enforcer.dev",
    ] {
        for verb in ["get", "list", "watch"] {
            assert!(can(verb, res), "{sa} cannot {verb} {res}");
        }
    }
    for (verb, res) in [
        ("create", "pods"),
        ("delete", "pods"),
        ("get", "secrets"),
        ("update", "networkpolicies.networking.k8s.io"),
        ("create", "events"),
        ("get", "nodes"),
    ] {
        assert!(!can(verb, res), "{sa} can {verb} {res}: more than it needs");
    }
    // Its own DaemonSet (an uninstall is told from a restart by it), in its namespace only.
    let can_in = |verb: &str, res: &str, ns: &str| {
        let out = k.run(&["auth", "can-i", verb, res, "-n", ns, "--as", &sa]);
        String::from_utf8_lossy(&out.stdout).trim() == "yes"
    };
    for verb in ["get", "list", "watch"] {
        assert!(
            can_in(verb, "daemonsets.apps", ENFORCER_NS),
            "{sa} cannot {verb} its DaemonSet"
        );
        assert!(
            !can_in(verb, "daemonsets.apps", "kube-system"),
            "{sa} can {verb} DaemonSets outside its namespace"
        );
    }
    for verb in ["update", "delete", "patch"] {
        assert!(
            !can_in(verb, "daemonsets.apps", ENFORCER_NS),
            "{sa} can {verb} its DaemonSet"
        );
    }
}
