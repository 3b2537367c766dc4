//! Cluster tier, run last: the documented uninstall (docs/gke.md, "Uninstall") is one
//! step, `kubectl delete -k deploy/`, and leaves nothing of ours attached or pinned on the
//! node; pods started afterwards work.
//!
//! Before the agents followed their DaemonSet, the same step left the programs attached
//! with `--unclassified deny`: every pod started afterwards was cut off.

use std::{path::Path, process::Command};

use enforcer_tests::cluster::{ENFORCER_NS, TestNamespace, agnhost_pod, cluster};

/// Program names of ours that `bpftool prog show` lists (kernel names are cut at 15
/// characters).
fn our_programs() -> Vec<String> {
    let out = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .expect("bpftool");
    let progs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    progs
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["name"].as_str())
        .filter(|n| ["net_", "guard_", "lsm_"].iter().any(|p| n.starts_with(p)))
        .map(str::to_string)
        .collect()
}

#[test]
fn deleting_the_install_removes_everything_and_new_pods_work() {
    let Some(k) = cluster("deleting_the_install_removes_everything_and_new_pods_work") else {
        return;
    };
    let deploy = format!("{}/../deploy", env!("CARGO_MANIFEST_DIR"));
    let pod = k.ok(&[
        "-n",
        ENFORCER_NS,
        "get",
        "pods",
        "-l",
        "app.kubernetes.io/name=enforcer",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]);
    assert!(!pod.trim().is_empty(), "no agent pod to uninstall");
    assert!(
        !our_programs().is_empty(),
        "the agent has loaded nothing: this test would prove nothing"
    );
    // The one step: namespace, RBAC, DaemonSet and CRD in one sweep (the agent loses its
    // access while it stops; its watches have seen the deletion).
    k.ok(&["delete", "-k", &deploy, "--wait=true", "--timeout=180s"]);
    let pins = Path::new("/sys/fs/bpf/enforcer");
    let left: Vec<_> = std::fs::read_dir(pins)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "pins remain under {}: {left:?}",
        pins.display()
    );
    let cg = "/sys/fs/cgroup/unified/kubepods";
    let show = Command::new("bpftool")
        .args(["cgroup", "show", cg])
        .output()
        .expect("bpftool");
    let text = String::from_utf8_lossy(&show.stdout);
    for prog in ["net_ingress", "net_egress", "net_connect4", "net_sendmsg4"] {
        assert!(
            !text.contains(prog),
            "{prog} still attached at {cg}:\n{text}"
        );
    }
    let progs = our_programs();
    assert!(progs.is_empty(), "programs of ours still loaded: {progs:?}");

    // Pods started afterwards are nobody's unclassified cgroups: they talk.
    let ns = TestNamespace::new(k, "after-uninstall", &[]);
    ns.apply(&format!(
        "{}{}",
        agnhost_pod("server", &[("app", "server")], ""),
        agnhost_pod("client", &[("app", "client")], ""),
    ));
    for p in ["server", "client"] {
        k.wait(&ns.name, &format!("pod/{p}"), "condition=Ready", 180);
    }
    let server = k.pod_ip(&ns.name, "server");
    for (port, proto) in [("80", "tcp"), ("81", "udp")] {
        let got = k.connect(&ns.name, "client", &format!("{server}:{port}"), proto);
        assert_eq!(
            got, "ok",
            "a new pod after the uninstall: {proto} to {server}"
        );
    }
}
