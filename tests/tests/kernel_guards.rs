//! Kernel tier: the runtime guards' fallback tier (no BPF LSM) in this host's kernel.
//!
//! Each test builds a pod tree (`enforcer_tests::guard_pods`): `pod-guarded` (guards
//! enforced), `pod-audit` (the same guards audited), `pod-free` (no guards), and a cgroup
//! outside the root, and runs the operation from each with the probe. Enforced: the
//! cgroup programs deny with EPERM, the syscall tracepoint kills the process (SIGKILL);
//! audited: the operation succeeds and a `GuardEvent` (tier fallback, verdict audit)
//! arrives; elsewhere nothing happens.

use std::{fs, os::unix::fs::PermissionsExt, path::Path};

use enforcer::{
    bpf::Datapath,
    guards::{self, Tier},
};
use enforcer_common::*;
use enforcer_tests::{
    exemption,
    guard_pods::{UID, at, fallback_pods as pods},
    *,
};

#[test]
fn fallback_tier_probe_and_offsets() {
    if !is_root() {
        skip("fallback_tier_probe_and_offsets", "needs root");
        return;
    }
    let mut dp = Datapath::load(None).expect("load");
    let missing = &dp.guard_offsets().missing;
    assert!(
        missing.is_empty(),
        "offsets missing on this kernel: {missing:?}"
    );
    let probe = dp.probe_guard_tier();
    eprintln!("tier probe: {} ({})", probe.tier.name(), probe.reason);
    let lsm_active = fs::read_to_string("/sys/kernel/security/lsm")
        .map(|s| s.split(',').any(|l| l.trim() == "bpf"))
        .unwrap_or(false);
    if !lsm_active {
        assert_eq!(probe.tier, Tier::Fallback);
        assert!(
            probe
                .reason
                .contains("BPF_PROG_LOAD for lsm/syslog returned"),
            "the reason names the failed load: {}",
            probe.reason
        );
    }
    for s in guards::support(Tier::Fallback, dp.guard_offsets()) {
        eprintln!("fallback {:<24} {:?}: {}", s.name, s.enforcement, s.note);
        assert_ne!(
            s.enforcement,
            guards::Enforcement::Unavailable,
            "{}",
            s.name
        );
    }
}

pub fn mknod_char(path: &Path, major: u32, minor: u32) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: valid C string.
    let r = unsafe {
        libc::mknod(
            c.as_ptr(),
            libc::S_IFCHR | 0o666,
            libc::makedev(major, minor),
        )
    };
    assert_eq!(
        r,
        0,
        "mknod {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

#[test]
fn fallback_host_devices_denied() {
    let Some(mut p) = pods("fallback_host_devices_denied", GUARD_HOST_DEVICES) else {
        return;
    };
    let dir = TmpMount::new("enf-dev");
    let kmsg = dir.path.join("kmsg");
    let null = dir.path.join("null");
    mknod_char(&kmsg, 1, 11);
    mknod_char(&null, 1, 3);
    let e = p.check(
        GUARD_HOST_DEVICES,
        &["open", kmsg.to_str().unwrap(), "r"],
        "eperm",
        "ok",
    );
    assert_eq!(e.arg, (1 << 32) | 11, "device number in the event");
    assert_eq!(guards::detail_text(&e.detail), "c r");
    // The harmless set stays usable in the guarded pod.
    for path in [
        null.to_str().unwrap(),
        "/dev/null",
        "/dev/urandom",
        "/dev/zero",
    ] {
        assert_eq!(
            probe_run(at(&p.guarded), &["open", path, "w"]).word(),
            "ok",
            "{path} in the guarded pod"
        );
    }
}

#[test]
fn fallback_sysctl_write_denied() {
    let Some(mut p) = pods("fallback_sysctl_write_denied", GUARD_SYSCTL_WRITE) else {
        return;
    };
    // Only a sysctl of a network namespace this test owns is ever written.
    let ns = Netns::new("kgs");
    let key = "/proc/sys/net/ipv4/ip_unprivileged_port_start";
    for (cg, want, name) in [
        (&p.guarded, "eperm", "guarded"),
        (&p.free, "ok", "unguarded"),
        (&p.outside, "ok", "outside"),
        (&p.audit, "ok", "audited"),
    ] {
        let place = Place {
            netns: Some(&ns),
            cgroup: Some(&cg.path),
        };
        let r = probe_run(place, &["write-file", key, "1000"]);
        assert_eq!(r.word(), want, "sysctl write from the {name} pod: {r:?}");
        let r = probe_run(place, &["open", key, "r"]);
        assert_eq!(r.word(), "ok", "reading stays allowed ({name}): {r:?}");
    }
    let e = p.assert_event(p.guarded.id(), GUARD_SYSCTL_WRITE, VERDICT_DENY, "write");
    assert_eq!(
        guards::detail_text(&e.detail),
        "net/ipv4/ip_unprivileged_port_start"
    );
    p.assert_event(p.audit.id(), GUARD_SYSCTL_WRITE, VERDICT_AUDIT, "audit");
    let free = p.free.id();
    p.assert_no_event(free, "unguarded");
}

#[test]
fn fallback_raw_sockets() {
    let Some(mut p) = pods("fallback_raw_sockets", GUARD_RAW_SOCKETS) else {
        return;
    };
    // IP raw sockets: a precise EPERM from cgroup/sock_create.
    p.check(GUARD_RAW_SOCKETS, &["socket", "raw4"], "eperm", "ok");
    p.check(GUARD_RAW_SOCKETS, &["socket", "raw6"], "eperm", "ok");
    // AF_PACKET runs no cgroup hook: the process is killed.
    p.check(GUARD_RAW_SOCKETS, &["socket", "packet"], "killed", "ok");
    // Ordinary sockets are untouched.
    assert_eq!(probe_run(at(&p.guarded), &["socket", "tcp"]).word(), "ok");
}

#[test]
fn fallback_setuid_to_root_killed() {
    let Some(mut p) = pods("fallback_setuid_to_root_killed", GUARD_ROOT_ESCALATION) else {
        return;
    };
    // uid 1000 with saved uid 0 (a setuid program after dropping privileges) asks for 0.
    let uid = format!("{UID}:0");
    p.check(
        GUARD_ROOT_ESCALATION,
        &["as-user", &uid, "setuid", "0"],
        "killed",
        "ok",
    );
    // No false positives: root calling setuid(0), a user setting its own uid.
    assert_eq!(probe_run(at(&p.guarded), &["setuid", "0"]).word(), "ok");
    let r = probe_run(at(&p.guarded), &["as-user", &uid, "setuid", "1000"]);
    assert_eq!(r.word(), "ok", "{r:?}");
}

/// A root-owned setuid copy of the probe, and a plain copy, in a tmpfs that allows setuid.
fn binaries(dir: &TmpMount) -> (String, String) {
    let suid = dir.path.join("probe-suid");
    fs::copy(probe_bin(), &suid).expect("copy probe");
    fs::set_permissions(&suid, fs::Permissions::from_mode(0o4755)).unwrap();
    let plain = dir.path.join("probe-plain");
    fs::copy(probe_bin(), &plain).unwrap();
    (
        suid.to_str().unwrap().to_string(),
        plain.to_str().unwrap().to_string(),
    )
}

#[test]
fn fallback_setuid_binary_exec_killed() {
    let Some(mut p) = pods("fallback_setuid_binary_exec_killed", GUARD_ROOT_ESCALATION) else {
        return;
    };
    let dir = TmpMount::new("enf-suid");
    let (suid, plain) = binaries(&dir);
    let r = probe_run(at(&p.free), &["as-user", "1000", "exec", &suid, "whoami"]);
    assert!(
        r.out.contains("euid=0"),
        "the setuid copy works unguarded: {r:?}"
    );
    p.check(
        GUARD_ROOT_ESCALATION,
        &["as-user", "1000", "exec", &suid, "whoami"],
        "killed",
        "uid=1000",
    );
    // Exec of an ordinary binary by the same user is fine.
    let r = probe_run(
        at(&p.guarded),
        &["as-user", "1000", "exec", &plain, "whoami"],
    );
    assert_eq!(r.word(), "uid=1000", "plain exec in the guarded pod: {r:?}");
}

#[test]
fn fallback_root_exec_killed() {
    let Some(mut p) = pods(
        "fallback_root_exec_killed",
        GUARD_ROOT_ESCALATION | GUARD_ROOT_EXEC,
    ) else {
        return;
    };
    let dir = TmpMount::new("enf-rx");
    let (_, plain) = binaries(&dir);
    // The probe's own exec (as root) arms the cgroup; its exec of another binary as root
    // is then a root exec.
    p.check(
        GUARD_ROOT_EXEC,
        &["exec", &plain, "whoami"],
        "killed",
        "uid=0",
    );
    // In the armed cgroup even the probe's own exec by root is killed; non-root execs
    // are fine.
    assert!(probe_run(at(&p.guarded), &["whoami"]).killed());
    let r = probe_run_as(at(&p.guarded), UID, &["exec", &plain, "whoami"]);
    assert_eq!(r.word(), "uid=1000", "{r:?}");
}

#[test]
fn fallback_mount_killed() {
    let Some(mut p) = pods("fallback_mount_killed", GUARD_MOUNT) else {
        return;
    };
    let dir = TmpMount::new("enf-mnt");
    let target = dir.path.join("m");
    fs::create_dir(&target).unwrap();
    p.check(
        GUARD_MOUNT,
        &["mount-tmpfs", target.to_str().unwrap()],
        "killed",
        "ok",
    );
    // (The killed probe's mount itself went through, as documented; the TmpMount's lazy
    // unmount removes it.)
}

#[test]
fn fallback_kernel_modules_killed() {
    let Some(mut p) = pods("fallback_kernel_modules_killed", GUARD_KERNEL_MODULES) else {
        return;
    };
    // The bogus image never loads; unguarded, the kernel rejects it with its own error.
    let r = probe_run(at(&p.free), &["init-module"]);
    assert_ne!(r.word(), "ok", "{r:?}");
    let allowed = r.word().to_string();
    p.check(GUARD_KERNEL_MODULES, &["init-module"], "killed", &allowed);
}

#[test]
fn fallback_bpf_killed() {
    let Some(mut p) = pods("fallback_bpf_killed", GUARD_BPF) else {
        return;
    };
    p.check(GUARD_BPF, &["bpf-map"], "killed", "ok");
    p.check(GUARD_BPF, &["perf-open"], "killed", "ok");
}

#[test]
fn fallback_dangerous_capabilities_killed() {
    let Some(mut p) = pods(
        "fallback_dangerous_capabilities_killed",
        GUARD_DANGEROUS_CAPABILITIES,
    ) else {
        return;
    };
    let dir = TmpMount::new("enf-cap");
    let file = dir.path.join("f");
    fs::write(&file, "x").unwrap();
    p.check(
        GUARD_DANGEROUS_CAPABILITIES,
        &["unshare", "mnt"],
        "killed",
        "ok",
    );
    p.check(
        GUARD_DANGEROUS_CAPABILITIES,
        &["open-by-handle", file.to_str().unwrap()],
        "killed",
        "ok",
    );
    // Ordinary work of a root process is not affected (forks included).
    assert_eq!(
        probe_run(at(&p.guarded), &["open", "/etc/hostname", "r"]).word(),
        "ok"
    );
    assert_eq!(probe_run(at(&p.guarded), &["ptrace-child"]).word(), "ok");
}

#[test]
fn fallback_ptrace_from_host_pid_namespace_killed() {
    let Some(mut p) = pods(
        "fallback_ptrace_from_host_pid_namespace_killed",
        GUARD_PTRACE,
    ) else {
        return;
    };
    // These probes run in the initial PID namespace (like a hostPID pod), where baseline
    // ptrace cannot tell a target's pod: every attach is killed.
    p.check(GUARD_PTRACE, &["ptrace-child"], "killed", "ok");
    // In a PID namespace of its own (every container without hostPID) a task can only name
    // processes of its pod: allowed.
    let r = probe_run(at(&p.guarded), &["ptrace-in-pidns"]);
    assert_eq!(
        r.word(),
        "ok",
        "ptrace inside the pod's PID namespace: {r:?}"
    );
}

#[test]
fn fallback_ptrace_any_killed_everywhere() {
    let Some(mut p) = pods(
        "fallback_ptrace_any_killed_everywhere",
        GUARD_PTRACE | GUARD_PTRACE_ANY,
    ) else {
        return;
    };
    p.check(GUARD_PTRACE_ANY, &["ptrace-child"], "killed", "ok");
    let r = probe_run(at(&p.guarded), &["ptrace-in-pidns"]);
    assert_eq!(
        r.word(),
        "signal:9",
        "ptrace-any inside a PID namespace: {r:?}"
    );
}

#[test]
fn fallback_unclassified_cgroups_get_the_configured_guards() {
    let Some(mut p) = pods(
        "fallback_unclassified_cgroups_get_the_configured_guards",
        GUARD_SYSCTL_WRITE,
    ) else {
        return;
    };
    // A pod cgroup the agent has not classified yet (no ENDPOINTS entry).
    let new_pod = p.root.child("pod-unknown");
    let ns = Netns::new("kgu");
    let key = "/proc/sys/net/ipv4/ip_unprivileged_port_start";
    let place = Place {
        netns: Some(&ns),
        cgroup: Some(&new_pod.path),
    };
    assert_eq!(probe_run(place, &["write-file", key, "1000"]).word(), "ok");
    let mut cfg = p.dp.config().unwrap();
    cfg.unclassified_guards = GUARD_SYSCTL_WRITE;
    p.dp.set_config(&cfg).unwrap();
    assert_eq!(
        probe_run(place, &["write-file", key, "1000"]).word(),
        "eperm"
    );
    let e = p.assert_event(
        new_pod.id(),
        GUARD_SYSCTL_WRITE,
        VERDICT_DENY,
        "unclassified",
    );
    assert_eq!(e.endpoint, 0, "no endpoint");
    // Outside the root, unclassified_guards never apply.
    let place = Place {
        netns: Some(&ns),
        cgroup: Some(&p.outside.path),
    };
    assert_eq!(probe_run(place, &["write-file", key, "1000"]).word(), "ok");
}

#[test]
fn fallback_pinned_guards_outlive_the_agent_and_arm_running_containers() {
    let test = "fallback_pinned_guards_outlive_the_agent_and_arm_running_containers";
    if !is_root() {
        skip(test, "needs root");
        return;
    }
    ensure_bpffs();
    let bpffs = std::path::PathBuf::from("/sys/fs/bpf").join(unique("enf-gpin"));
    let root = Cgroup::new_root("enf-gp");
    let pod = root.child("pod");
    // A container that started (exec'd) before the agent attached anything.
    let running = pod.child("ctr-running");
    let _sleeper = Bg::spawn(at(&running), &["sleep", "60000"]);
    let mut dp = Datapath::load(Some(&bpffs)).expect("load with pins");
    if dp.probe_guard_tier().tier == Tier::Lsm {
        skip(test, "this kernel has the BPF LSM");
        let _ = enforcer::bpf::uninstall(&bpffs);
        return;
    }
    dp.set_config(&Config {
        root_cgroup_id: root.id(),
        root_level: root.level(),
        ..Default::default()
    })
    .unwrap();
    dp.endpoints()
        .unwrap()
        .insert(
            pod.id(),
            Endpoint {
                id: 7,
                guards_enforce: GUARD_SYSCTL_WRITE,
                ..Default::default()
            },
            0,
        )
        .unwrap();
    let attached = dp.attach_guards(&root.path, Tier::Fallback).unwrap();
    assert!(attached.programs.contains(&"guard_sysctl"));
    // The running container's cgroup never saw an exec since: not armed until the agent
    // arms what is running.
    assert_eq!(
        run_forked_in(&running.path, write_sysctl_same_value),
        0,
        "not armed yet"
    );
    let armed = dp
        .arm_running_below(&root.path, guards::arming::SETUP_GRACE)
        .unwrap()
        .armed;
    assert_eq!(
        armed,
        vec![running.path.clone()],
        "only the populated cgroup"
    );
    assert_eq!(
        run_forked_in(&running.path, write_sysctl_same_value),
        1,
        "armed by the agent"
    );
    // Every guard link is pinned; the agent exits; enforcement stays.
    let links = enforcer::bpf::PinLayout::new(&bpffs).links();
    for name in [
        "guard_exec",
        "guard_sysctl",
        "guard_device",
        "guard_sys_enter",
    ] {
        assert!(links.join(name).exists(), "{name} pinned");
    }
    drop(dp);
    assert_eq!(
        run_forked_in(&running.path, write_sysctl_same_value),
        1,
        "after the agent exited"
    );
    // Uninstall detaches.
    enforcer::bpf::uninstall(&bpffs).unwrap();
    assert_eq!(
        run_forked_in(&running.path, write_sysctl_same_value),
        0,
        "after uninstall"
    );
}

#[test]
fn fallback_arming_waits_for_exec() {
    let Some(mut p) = pods("fallback_arming_waits_for_exec", GUARD_SYSCTL_WRITE) else {
        return;
    };
    // A cgroup nobody exec'd in: a forked (not exec'd) process in it is not guarded, like
    // a container runtime applying the pod's sysctls before it execs the entrypoint.
    let fresh = p.guarded.child("ctr-fresh");
    assert!(!p.is_armed(fresh.id()), "a new cgroup is not armed");
    assert_eq!(
        run_forked_in(&fresh.path, write_sysctl_same_value),
        0,
        "before any exec"
    );
    assert!(!p.is_armed(fresh.id()), "no exec, still not armed");
    // The first exec arms it; from then on even forked processes are guarded.
    assert_eq!(probe_run(at(&fresh), &["whoami"]).code, Some(0));
    assert!(p.is_armed(fresh.id()), "armed by the exec");
    assert_eq!(
        run_forked_in(&fresh.path, write_sysctl_same_value),
        1,
        "after the exec: EPERM"
    );
    let armed = p.dp.armed_cgroups().unwrap();
    assert!(armed.contains(&(fresh.id(), ARM_EXEC)), "{armed:?}");
    // The agent can arm and disarm explicitly.
    let other = p.guarded.child("ctr-agent");
    p.dp.arm_cgroup(other.id()).unwrap();
    assert_eq!(
        run_forked_in(&other.path, write_sysctl_same_value),
        1,
        "armed by the agent"
    );
    assert!(p.dp.disarm_cgroup(other.id()).unwrap());
    assert_eq!(
        run_forked_in(&other.path, write_sysctl_same_value),
        0,
        "disarmed"
    );
    // Nothing outside the root is ever armed, exec or not.
    assert_eq!(probe_run(at(&p.outside), &["whoami"]).code, Some(0));
    assert!(!p.is_armed(p.outside.id()));
}

/// Benchmark, not a test (it asserts nothing about speed): `cargo xtask bench` runs the
/// `bench_*` functions and prints their ratios; the test tiers skip them.
#[test]
fn bench_fallback_guards_on_vs_off() {
    let Some(mut p) = pods("bench_fallback_guards_on_vs_off", GUARD_ALL) else {
        return;
    };
    let report = p.overhead(5, 500_000, 300);
    println!("{report}");
}

// ---------------------------------------------------------------------------------------
// Runtime exemption (enforcer-ebpf/src/guards/exempt.rs): the scenarios live in
// `enforcer_tests::exemption`, shared with the LSM tier.
// ---------------------------------------------------------------------------------------

#[test]
fn fallback_exempt_clone_into_cgroup_until_second_exec() {
    let Some(mut p) = pods(
        "fallback_exempt_clone_into_cgroup_until_second_exec",
        GUARD_DANGEROUS_CAPABILITIES | GUARD_MOUNT,
    ) else {
        return;
    };
    let dir = TmpMount::new("enf-xm");
    let target = dir.path.join("m");
    fs::create_dir(&target).unwrap();
    exemption::clone_path(&mut p, target.to_str().unwrap());
}

#[test]
fn fallback_exempt_clone_then_other_mount_namespace_exec_is_the_workload() {
    let Some(mut p) = pods(
        "fallback_exempt_clone_then_other_mount_namespace_exec_is_the_workload",
        GUARD_DANGEROUS_CAPABILITIES,
    ) else {
        return;
    };
    exemption::clone_path_direct_exec(&mut p);
}

#[test]
fn fallback_exempt_migration_until_exec() {
    let Some(mut p) = pods(
        "fallback_exempt_migration_until_exec",
        GUARD_DANGEROUS_CAPABILITIES,
    ) else {
        return;
    };
    exemption::migration_path(&mut p);
}

#[test]
fn fallback_exempt_migration_survives_the_runtime_reexec() {
    let Some(mut p) = pods(
        "fallback_exempt_migration_survives_the_runtime_reexec",
        GUARD_DANGEROUS_CAPABILITIES,
    ) else {
        return;
    };
    exemption::migration_then_runtime_reexec(&mut p);
}

#[test]
fn fallback_exempt_nothing_for_the_workload() {
    let Some(mut p) = pods(
        "fallback_exempt_nothing_for_the_workload",
        GUARD_DANGEROUS_CAPABILITIES,
    ) else {
        return;
    };
    exemption::workload_gets_nothing(&mut p);
}

#[test]
fn fallback_exempt_inherited_by_forks() {
    let Some(mut p) = pods(
        "fallback_exempt_inherited_by_forks",
        GUARD_DANGEROUS_CAPABILITIES,
    ) else {
        return;
    };
    exemption::inheritance(&mut p);
}

#[test]
fn fallback_exempt_restricted_workload_exec_as_root_killed() {
    let Some(mut p) = pods(
        "fallback_exempt_restricted_workload_exec_as_root_killed",
        GUARD_ROOT_ESCALATION | GUARD_ROOT_EXEC | GUARD_DANGEROUS_CAPABILITIES,
    ) else {
        return;
    };
    let dir = TmpMount::new("enf-xr");
    let (_, plain) = binaries(&dir);
    exemption::restricted(&mut p, &plain);
}

#[test]
fn fallback_exempt_execs_do_not_arm() {
    let Some(mut p) = pods(
        "fallback_exempt_execs_do_not_arm",
        GUARD_ROOT_ESCALATION | GUARD_ROOT_EXEC,
    ) else {
        return;
    };
    exemption::arming(&mut p);
}

#[test]
fn fallback_exempt_cgroup_programs_rely_on_arming() {
    let Some(mut p) = pods(
        "fallback_exempt_cgroup_programs_rely_on_arming",
        GUARD_SYSCTL_WRITE | GUARD_HOST_DEVICES | GUARD_RAW_SOCKETS,
    ) else {
        return;
    };
    let ns = Netns::new("kgx");
    let dir = TmpMount::new("enf-xd");
    let kmsg = dir.path.join("kmsg");
    mknod_char(&kmsg, 1, 11);
    exemption::cgroup_programs(&mut p, &ns, kmsg.to_str().unwrap());
}

#[test]
fn fallback_agent_arming_skips_only_containers_in_set_up() {
    let test = "fallback_agent_arming_skips_only_containers_in_set_up";
    let Some(mut p) = pods(test, GUARD_SYSCTL_WRITE) else {
        return;
    };
    // Started before the agent: a container still being set up (only the runtime's
    // process is in it), and a running one with an exec session in progress.
    let creating = p.guarded.child("ctr-creating");
    let running = p.guarded.child("ctr-running");
    let _init = Bg::spawn(at(&creating), &["comm", "runc:[2:INIT]", "sleep", "60000"]);
    let _workload = Bg::spawn(at(&running), &["sleep", "60000"]);
    let _session = Bg::spawn(at(&running), &["comm", "runc:[2:INIT]", "sleep", "60000"]);
    for c in [&creating, &running] {
        p.dp.disarm_cgroup(c.id()).unwrap();
    }
    let scan =
        p.dp.arm_running_below(&p.root.path, guards::arming::SETUP_GRACE)
            .unwrap();
    assert!(
        !scan.armed.contains(&creating.path) && scan.deferred.contains(&creating.path),
        "a container in set-up stays unarmed, deferred: {scan:?}"
    );
    assert!(
        scan.armed.contains(&running.path),
        "a running container with an exec session is armed: {scan:?}"
    );
}

#[test]
fn fallback_agent_arming_not_fooled_by_a_runtime_name() {
    let test = "fallback_agent_arming_not_fooled_by_a_runtime_name";
    let Some(mut p) = pods(test, GUARD_SYSCTL_WRITE) else {
        return;
    };
    // A workload that was running before the agent and calls itself what runc's init
    // calls itself (prctl(PR_SET_NAME) needs no privilege).
    let fake = p.guarded.child("ctr-renamed");
    let _w = Bg::spawn(at(&fake), &["comm", "runc:[2:INIT]", "sleep", "60000"]);
    p.dp.disarm_cgroup(fake.id()).unwrap();
    // Within the set-up grace it is given the benefit of the doubt...
    let grace = std::time::Duration::from_secs(2);
    let scan = p.dp.arm_running_below(&p.root.path, grace).unwrap();
    assert!(scan.deferred.contains(&fake.path), "{scan:?}");
    assert_eq!(
        run_forked_in(&fake.path, write_sysctl_same_value),
        0,
        "not armed yet"
    );
    // ...and the scan the agent makes once the grace has passed arms it: a runtime would
    // long have exec'd the workload.
    std::thread::sleep(grace + std::time::Duration::from_millis(300));
    let scan = p.dp.arm_running_below(&p.root.path, grace).unwrap();
    assert!(
        scan.armed.contains(&fake.path),
        "a renamed workload older than the grace is armed: {scan:?}"
    );
    assert_eq!(
        run_forked_in(&fake.path, write_sysctl_same_value),
        1,
        "the renamed workload's cgroup is guarded"
    );
}

/// Benchmark, not a test (it asserts nothing about speed): `cargo xtask bench` runs the
/// `bench_*` functions and prints their ratios; the test tiers skip them.
#[test]
fn bench_fallback_exemption_on_vs_off() {
    let Some(mut p) = pods("bench_fallback_exemption_on_vs_off", GUARD_ALL) else {
        return;
    };
    let report = p.exemption_overhead(7, 5000, 300);
    println!("{report}");
}
