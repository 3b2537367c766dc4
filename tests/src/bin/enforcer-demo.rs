//! `cargo xtask demo`: enforcer in standalone mode on a simulated node.
//!
//! Reads the example manifests (default `deploy/examples/demo`), builds a node whose pods
//! match them (a network namespace and a kubelet-layout cgroup per pod, real servers), starts
//! the real agent on a copy of the directory, makes real connections and shows which pass
//! and which are blocked, with the agent's verdict events; then edits the policy live and
//! shows the change take effect. Everything is removed at the end. Exits non-zero if any
//! connection behaves differently from what the demo announces.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use enforcer::manifests::{Object, load_dir};
use enforcer_tests::{
    is_root,
    sim::{PodSpec, SimNode},
};

struct Check {
    from: &'static str,
    to: &'static str,
    port: u16,
    note: &'static str,
    allowed: bool,
}

const CHECKS: &[Check] = &[
    Check {
        from: "demo/foo",
        to: "demo/bar",
        port: 80,
        note: "foo-app -> bar-app on http",
        allowed: true,
    },
    Check {
        from: "demo/other",
        to: "demo/bar",
        port: 80,
        note: "other-app is not foo-app",
        allowed: false,
    },
    Check {
        from: "demo/foo",
        to: "demo/bar",
        port: 81,
        note: "port 81 (admin) is not allowed",
        allowed: false,
    },
    Check {
        from: "demo/bar",
        to: "demo/foo",
        port: 80,
        note: "foo is not isolated",
        allowed: true,
    },
    Check {
        from: "demo/other",
        to: "demo/foo",
        port: 80,
        note: "foo is not isolated",
        allowed: true,
    },
];

fn run_checks(node: &SimNode, checks: &[Check], failures: &mut u32) {
    println!(
        "  {:<34} {:<9} {:<9} why",
        "connection (tcp)", "expected", "observed"
    );
    for c in checks {
        let got = node.probe(c.from, c.to, "tcp", c.port, false, 700);
        let ok = (got == "ok") == c.allowed;
        if !ok {
            *failures += 1;
        }
        println!(
            "  {:<34} {:<9} {:<9} {}{}",
            format!("{} -> {}:{}", c.from, c.to, c.port),
            if c.allowed { "allowed" } else { "blocked" },
            if got == "ok" {
                "allowed".to_string()
            } else {
                format!("blocked ({got})")
            },
            c.note,
            if ok { "" } else { "   <-- UNEXPECTED" }
        );
    }
}

fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).expect("read examples").flatten() {
        if e.file_type().map(|t| t.is_file()).unwrap_or(false) {
            std::fs::copy(e.path(), to.join(e.file_name())).expect("copy example");
        }
    }
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("deploy/examples/demo"));
    if !is_root() {
        eprintln!("the demo loads BPF programs and creates namespaces and cgroups: run it as root");
        std::process::exit(1);
    }
    let loaded = load_dir(&dir);
    for e in &loaded.errors {
        eprintln!("{e}");
    }
    let pods: Vec<_> = loaded
        .objects
        .iter()
        .filter_map(|l| match &l.object {
            Some(Object::Pod(p)) => Some(p.clone()),
            _ => None,
        })
        .collect();
    println!(
        "== enforcer demo: {} pods from {}",
        pods.len(),
        dir.display()
    );

    let mut node = SimNode::new(0);
    for p in &pods {
        let v4 = p
            .ips
            .iter()
            .copied()
            .find(IpAddr::is_ipv4)
            .expect("pod has an IPv4 address");
        let v6 = p
            .ips
            .iter()
            .copied()
            .find(IpAddr::is_ipv6)
            .unwrap_or("fd77:0::ff".parse().unwrap());
        let mut spec = PodSpec::new(
            &p.namespace,
            &p.name,
            p.node_name.as_deref() == Some("node-1"),
        );
        spec.labels = p.labels.clone();
        println!(
            "   pod {}/{} {:?} at {v4} (cgroup + network namespace)",
            p.namespace, p.name, p.labels
        );
        node.add_pod_at(spec, &p.uid, v4, v6);
    }
    // The agent works on a copy, so that the live edit below leaves the repository alone.
    copy_dir(&dir, node.manifests.path());
    println!(
        "== starting: enforcer run --manifests {} --node node-1 ...",
        dir.display()
    );
    let agent = node.start_agent(&["--allow-events"]);
    println!("   agent ready (GET /readyz = 200); policy 20-bar-allow-foo.yaml is enforced");

    let mut failures = 0;
    println!("\n== connections");
    run_checks(&node, CHECKS, &mut failures);

    println!("\n== why? `enforcer explain` on the same manifests (offline)");
    for (from, to) in [("demo/other", "demo/bar:80"), ("demo/foo", "demo/bar:80")] {
        let out = std::process::Command::new(enforcer_tests::sim::agent_bin())
            .args(["explain", "--manifests"])
            .arg(node.manifests.path())
            .args(["--from", from, "--to", to])
            .output()
            .expect("running enforcer explain");
        if !out.status.success() {
            failures += 1;
        }
        for l in String::from_utf8_lossy(&out.stdout)
            .lines()
            .chain(String::from_utf8_lossy(&out.stderr).lines())
        {
            println!("   {l}");
        }
    }

    println!(
        "\n== live change: allow app=other-app to bar-app too (edit in the manifests directory)"
    );
    let before = agent.reconciles();
    let start = Instant::now();
    node.write_manifest(
        "30-bar-allow-other.yaml",
        r#"apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bar-allow-other, namespace: demo}
spec:
  podSelector: {matchLabels: {app: bar-app}}
  ingress:
  - from:
    - podSelector: {matchLabels: {app: other-app}}
    ports:
    - port: http
"#,
    );
    agent.wait_reconciled(before, Duration::from_secs(5));
    println!(
        "   enforced {:?} after the file was written",
        start.elapsed()
    );
    run_checks(
        &node,
        &[Check {
            from: "demo/other",
            to: "demo/bar",
            port: 80,
            note: "now allowed by bar-allow-other",
            allowed: true,
        }],
        &mut failures,
    );

    std::thread::sleep(Duration::from_millis(300));
    println!("\n== the agent's verdict events (its log)");
    for line in agent.log_text().lines() {
        if line.contains(" allow ") || line.contains(" deny ") || line.contains("enforcing") {
            println!("   {}", line.trim());
        }
    }
    let metrics = agent.get("/metrics").1;
    println!("\n== GET /metrics (excerpt)");
    for l in metrics.lines().filter(|l| !l.starts_with('#')).take(12) {
        println!("   {l}");
    }
    drop(agent);
    drop(node);
    println!("\n== cleaned up (agent stopped and uninstalled, namespaces and cgroups removed)");
    if failures > 0 {
        eprintln!("{failures} connection(s) behaved unexpectedly");
        std::process::exit(1);
    }
}
