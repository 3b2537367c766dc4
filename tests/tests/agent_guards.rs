//! Kernel tier: runtime guards driven end to end through `enforcer run --manifests` on a
//! simulated node, with namespaces carrying the Pod Security Admission labels and a
//! RuntimePolicy. On this host the agent picks the fallback tier (no BPF LSM); the VM tier
//! proves the LSM programs themselves (vm_guards.rs).

use std::{path::PathBuf, time::Duration};

use enforcer_tests::{
    Place, TmpMount, is_root, probe_run, probe_run_as,
    sim::{PodSpec, SimNode},
    skip,
};

const KEY: &str = "/proc/sys/net/ipv4/ip_unprivileged_port_start";

fn node(test: &str, subnet: u8) -> Option<SimNode> {
    if !is_root() {
        skip(
            test,
            "needs root (BPF programs, cgroups, network namespaces)",
        );
        return None;
    }
    let mut node = SimNode::new(subnet);
    node.add_namespace(
        "base",
        &[("pod-security.kubernetes.io/enforce", "baseline")],
    );
    node.add_namespace(
        "strict",
        &[("pod-security.kubernetes.io/enforce", "restricted")],
    );
    node.add_namespace("aud", &[("pod-security.kubernetes.io/audit", "baseline")]);
    node.add_namespace("open", &[]);
    for ns in ["base", "strict", "aud", "open"] {
        node.add_pod(PodSpec::new(ns, "p", true));
    }
    let mut locked = PodSpec::new("open", "locked", true);
    locked.labels.insert("app".into(), "locked".into());
    node.add_pod(locked);
    node.write_cluster();
    Some(node)
}

fn place<'a>(node: &'a SimNode, pod: &str) -> Place<'a> {
    node.pods[pod].place()
}

fn mknod_char(path: &std::path::Path, major: u32, minor: u32) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: valid path; test-owned tmpfs.
    let r = unsafe {
        libc::mknod(
            c.as_ptr(),
            libc::S_IFCHR | 0o666,
            libc::makedev(major, minor),
        )
    };
    assert_eq!(r, 0, "mknod {}", path.display());
}

#[test]
fn pod_security_labels_select_guard_sets() {
    let Some(node) = node("pod_security_labels_select_guard_sets", 70) else {
        return;
    };
    let agent = node.start_agent(&[]);
    let log = agent.log_text();
    assert!(log.contains("runtime guards: tier fallback"), "{log}");
    assert_eq!(
        agent.metric("enforcer_guarded_pods"),
        Some(3.0),
        "base, strict, aud"
    );

    // sysctl-write (precise EPERM). Each pod writes its own network namespace's sysctl.
    // (strict/p cannot be probed as root at all: restricted kills any exec by uid 0, checked
    // below.)
    for (pod, want) in [("base/p", "eperm"), ("aud/p", "ok"), ("open/p", "ok")] {
        let r = probe_run(place(&node, pod), &["write-file", KEY, "1000"]);
        assert_eq!(r.word(), want, "sysctl write from {pod}: {r:?}");
    }

    // host-devices (precise EPERM).
    let dir = TmpMount::new("enf-agdev");
    let kmsg: PathBuf = dir.path.join("kmsg");
    mknod_char(&kmsg, 1, 11);
    let k = kmsg.to_str().unwrap();
    for (pod, want) in [("base/p", "eperm"), ("aud/p", "ok"), ("open/p", "ok")] {
        let r = probe_run(place(&node, pod), &["open", k, "r"]);
        assert_eq!(r.word(), want, "open 1:11 from {pod}: {r:?}");
    }
    assert_eq!(
        probe_run(place(&node, "base/p"), &["open", "/dev/null", "w"]).word(),
        "ok"
    );

    // raw-sockets: not part of baseline (the Baseline standard keeps CAP_NET_RAW).
    assert_eq!(
        probe_run(place(&node, "base/p"), &["socket", "raw4"]).word(),
        "ok"
    );

    // root-escalation: a non-root process asking for uid 0 is killed in the fallback tier.
    let uid = "1000:0";
    let r = probe_run(place(&node, "base/p"), &["as-user", uid, "setuid", "0"]);
    assert!(r.killed(), "setuid(0) in base: {r:?}");
    let r = probe_run(place(&node, "open/p"), &["as-user", uid, "setuid", "0"]);
    assert_eq!(r.word(), "ok", "setuid(0) in open: {r:?}");

    // restricted: any exec by root is killed; a non-root exec passes.
    let r = probe_run(place(&node, "strict/p"), &["whoami"]);
    assert!(r.killed(), "exec as root in strict: {r:?}");
    let r = probe_run_as(place(&node, "strict/p"), 1000, &["whoami"]);
    assert!(
        !r.killed() && r.code == Some(0),
        "exec as 1000 in strict: {r:?}"
    );

    // mount: killed (the fallback tier cannot stop the syscall itself; TmpMount keeps any
    // mount private to a test directory).
    let target = TmpMount::new("enf-agmnt");
    let t = target.path.to_str().unwrap();
    let r = probe_run(place(&node, "base/p"), &["mount-tmpfs", t]);
    assert!(r.killed(), "mount in base: {r:?}");
    assert_eq!(
        probe_run(place(&node, "open/p"), &["mount-tmpfs", t]).word(),
        "ok"
    );

    // Every denial and audit hit is an event the agent logs with the guard's name.
    std::thread::sleep(Duration::from_millis(300));
    let log = agent.log_text();
    for needle in [
        "deny guard sysctl-write in base/p",
        "deny guard host-devices in base/p",
        "deny guard root-exec in strict/p",
        "audit guard sysctl-write in aud/p",
        "deny guard root-escalation in base/p",
        "[tier fallback]",
    ] {
        assert!(
            log.contains(needle),
            "missing {needle:?} in the agent log:\n{log}"
        );
    }
    let m = agent.get("/metrics").1;
    assert!(
        m.contains("enforcer_guard_tier{tier=\"fallback\"} 1"),
        "{m}"
    );
    assert!(
        m.contains(
            "enforcer_guard_events_total{guard=\"sysctl-write\",verdict=\"deny\",tier=\"fallback\"}"
        ),
        "{m}"
    );
}

#[test]
fn runtime_policy_adds_guards_and_updates_apply_live() {
    let Some(node) = node("runtime_policy_adds_guards_and_updates_apply_live", 71) else {
        return;
    };
    let agent = node.start_agent(&[]);
    let write = |pod: &str| {
        probe_run(place(&node, pod), &["write-file", KEY, "1000"])
            .word()
            .to_string()
    };
    assert_eq!(write("open/locked"), "ok");
    let before = agent.reconciles();
    node.write_manifest(
        "30-runtime.yaml",
        r#"
apiVersion: enforcer.dev/v1alpha1
kind: RuntimePolicy
metadata: {name: lock, namespace: open}
spec:
  podSelector: {matchLabels: {app: locked}}
  guards:
  - {name: sysctl-write, mode: Enforce}
  - {name: host-devices, mode: Audit}
"#,
    );
    agent.wait_reconciled(before, Duration::from_secs(5));
    assert_eq!(write("open/locked"), "eperm");
    assert_eq!(write("open/p"), "ok", "not selected");
    // Audit mode: allowed and reported.
    let dir = TmpMount::new("enf-agdev2");
    let kmsg = dir.path.join("kmsg");
    mknod_char(&kmsg, 1, 11);
    let r = probe_run(
        place(&node, "open/locked"),
        &["open", kmsg.to_str().unwrap(), "r"],
    );
    assert_eq!(r.word(), "ok", "{r:?}");
    // Deleting the policy lifts the guard.
    let before = agent.reconciles();
    node.remove_manifest("30-runtime.yaml");
    agent.wait_reconciled(before, Duration::from_secs(5));
    assert_eq!(write("open/locked"), "ok");
    std::thread::sleep(Duration::from_millis(300));
    let log = agent.log_text();
    assert!(
        log.contains("deny guard sysctl-write in open/locked"),
        "{log}"
    );
    assert!(
        log.contains("audit guard host-devices in open/locked"),
        "{log}"
    );
    // An invalid RuntimePolicy is reported with its field.
    node.write_manifest(
        "31-bad.yaml",
        "apiVersion: enforcer.dev/v1alpha1\nkind: RuntimePolicy\nmetadata: {name: bad, namespace: open}\nspec:\n  guards: [{name: teleport}]\n",
    );
    std::thread::sleep(Duration::from_millis(800));
    let log = agent.log_text();
    assert!(
        log.contains("RuntimePolicy open/bad") && log.contains("spec.guards[0].name"),
        "{log}"
    );
}

#[test]
fn runtime_guards_can_be_turned_off_and_status_reports_the_tier() {
    let Some(node) = node(
        "runtime_guards_can_be_turned_off_and_status_reports_the_tier",
        72,
    ) else {
        return;
    };
    {
        let agent = node.start_agent(&[]);
        let text = agent.status();
        assert!(text.contains("guard tier:  fallback"), "{text}");
        assert!(text.contains("guard_sysctl"), "{text}");
        assert!(text.contains("net_ingress"), "{text}");
        // Map fill levels: entries/capacity; the node's pods are in ENDPOINTS.
        let line = |name: &str| {
            text.lines()
                .find(|l| l.trim_start().starts_with(name))
                .unwrap_or_else(|| panic!("no {name} fill line:\n{text}"))
                .to_string()
        };
        assert!(text.contains("map fill:"), "{text}");
        assert!(line("CONNTRACK").contains("/262144 ("), "{text}");
        let endpoints = line("ENDPOINTS");
        let entries: usize = endpoints
            .split_whitespace()
            .nth(1)
            .and_then(|f| f.split('/').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{endpoints}"));
        assert!(entries >= 1, "{text}");
    }
    let agent = node.start_agent(&["--runtime-guards", "off"]);
    assert!(agent.log_text().contains("runtime guards: off"));
    let r = probe_run(place(&node, "base/p"), &["write-file", KEY, "1000"]);
    assert_eq!(r.word(), "ok", "{r:?}");
}

#[test]
fn pods_under_network_policy_get_no_packet_sockets() {
    let Some(node) = node("pods_under_network_policy_get_no_packet_sockets", 72) else {
        return;
    };
    // open/locked is isolated by a NetworkPolicy (ingress only); open/p by none. Neither
    // namespace has Pod Security labels, so no raw-sockets guard applies.
    node.write_manifest(
        "10-locked.yaml",
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: locked, namespace: open}
spec:
  podSelector: {matchLabels: {app: locked}}
  policyTypes: [Ingress]
"#,
    );
    let agent = node.start_agent(&[]);
    assert_eq!(
        probe_run(place(&node, "open/p"), &["socket", "packet"]).word(),
        "ok",
        "a pod no policy isolates keeps CAP_NET_RAW's packet sockets"
    );
    for kind in ["packet", "packet-inet"] {
        let r = probe_run(place(&node, "open/locked"), &["socket", kind]);
        assert!(
            r.killed() || r.word() == "eperm",
            "socket {kind} in a pod isolated by NetworkPolicy: {r:?}"
        );
    }
    // IP sockets are untouched (they go through the packet hooks).
    assert_eq!(
        probe_run(place(&node, "open/locked"), &["socket", "raw4"]).word(),
        "ok"
    );
    assert_eq!(
        agent.metric("enforcer_packet_socket_guarded_pods"),
        Some(1.0)
    );
}

/// A pod cgroup that exists before the agent knows its pod (a missed or late API event)
/// gets the strictest guards from its first exec on, and the runtime's set-up before that
/// exec still works: container start is not broken.
#[test]
fn unclassified_pod_cgroups_get_the_strictest_guards_from_their_first_exec() {
    let Some(node) = node(
        "unclassified_pod_cgroups_get_the_strictest_guards_from_their_first_exec",
        73,
    ) else {
        return;
    };
    let agent = node.start_agent(&[]);
    let stray = node.kubepods.join(
        "kubepods-burstable.slice/kubepods-burstable-pod6b6b6b6b_0000_4000_8000_000000000073.slice/\
         cri-containerd-6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b.scope",
    );
    std::fs::create_dir_all(&stray).unwrap();
    let cg = enforcer_tests::Cgroup::borrowed(&stray);
    // The runtime's set-up (no exec yet in the cgroup): a sysctl write passes. The value
    // written back is the one the host has (the stray cgroup has no network namespace).
    let current = std::fs::read_to_string(KEY).unwrap().trim().to_string();
    assert_eq!(
        enforcer_tests::run_forked_in(&stray, enforcer_tests::write_sysctl_same_value),
        0,
        "container set-up before the first exec must not be guarded"
    );
    // From the workload's exec on: restricted, whatever its pod turns out to be.
    let at = enforcer_tests::guard_pods::at(&cg);
    let r = probe_run(at, &["write-file", KEY, &current]);
    assert_eq!(
        r.word(),
        "eperm",
        "sysctl-write in an unclassified pod: {r:?}"
    );
    let r = probe_run(at, &["as-user", "1000:0", "setuid", "0"]);
    assert!(r.killed(), "root-escalation in an unclassified pod: {r:?}");
    let text = agent.status();
    assert!(
        text.contains("cgroups of pods not classified yet, guards root-escalation")
            && text.contains("packet-sockets"),
        "{text}"
    );
    // Classified pods keep their own level: open/p (no labels) is not guarded.
    let r = probe_run(
        place(&node, "open/p"),
        &["as-user", "1000:0", "setuid", "0"],
    );
    assert!(!r.killed(), "{r:?}");
    std::fs::remove_dir(&stray).unwrap();
}

/// Before it reports a tier, the agent proves each guard denies (a throwaway cgroup, one
/// operation per guard, the guard's own deny event), and a guard that does not deny keeps
/// the agent from reporting ready instead of being claimed on paper.
#[test]
fn guard_self_test_verifies_each_guard_and_catches_a_broken_one() {
    let Some(node) = node(
        "guard_self_test_verifies_each_guard_and_catches_a_broken_one",
        74,
    ) else {
        return;
    };
    {
        let agent = node.start_agent(&[]);
        let log = agent.log_text();
        assert!(log.contains("runtime guard self-test:"), "{log}");
        // Everything the fallback tier serves on this host is exercised here (the test
        // runs as root with every capability, and /dev/kmsg exists).
        for g in [
            "host-devices",
            "root-escalation",
            "dangerous-capabilities",
            "mount",
            "kernel-modules",
            "ptrace",
            "bpf",
            "raw-sockets",
            "packet-sockets",
            "sysctl-write",
            "root-exec",
        ] {
            let m = format!("enforcer_guard_self_test{{guard=\"{g}\",result=\"verified\"}}");
            assert_eq!(agent.metric(&m), Some(1.0), "{m}\n{log}");
        }
        assert!(!log.contains("FAILED its self-test"), "{log}");
    }
    // The same agent on a kernel where the mount guard silently does nothing.
    let mut agent = node.spawn_agent(&["--break-fallback-guard", "mount"]);
    let start = std::time::Instant::now();
    loop {
        let log = agent.log_text();
        if log.contains("runtime guard self-test:") {
            assert!(
                log.contains("runtime guard mount FAILED its self-test"),
                "{log}"
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no self-test result:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(agent.get("/readyz").0, 503, "{}", agent.log_text());
    assert_eq!(
        agent.metric("enforcer_guard_self_test{guard=\"mount\",result=\"failed\"}"),
        Some(1.0)
    );
    assert!(agent.running(), "network enforcement goes on");
}
