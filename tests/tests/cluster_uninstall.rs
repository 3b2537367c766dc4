//! Cluster tier, run last: the documented uninstall (docs/gke.md, "Uninstall") leaves
//! nothing of ours attached or pinned on the node.

use std::{path::Path, process::Command};

use enforcer_tests::cluster::{ENFORCER_NS, cluster};

#[test]
fn the_documented_uninstall_leaves_nothing_behind() {
    let Some(k) = cluster("the_documented_uninstall_leaves_nothing_behind") else {
        return;
    };
    let root = format!("{}/..", env!("CARGO_MANIFEST_DIR"));
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
    // Single node: uninstall from the running agent pod, then delete everything.
    let out = k.ok(&[
        "-n",
        ENFORCER_NS,
        "exec",
        pod.trim(),
        "--",
        "enforcer",
        "uninstall",
    ]);
    assert!(out.contains("removed"), "enforcer uninstall said:\n{out}");
    k.ok(&[
        "delete",
        "-k",
        &format!("{root}/deploy"),
        "--wait=true",
        "--timeout=120s",
    ]);
    assert!(
        !Path::new("/sys/fs/bpf/enforcer").exists()
            || std::fs::read_dir("/sys/fs/bpf/enforcer")
                .map(|mut d| d.next().is_none())
                .unwrap_or(true),
        "pins remain under /sys/fs/bpf/enforcer"
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
}
