//! Kernel tier: the ways around the fallback tier an attacker in a pod would try, each
//! against the real programs in this host's kernel (no BPF LSM: the fallback tier).
//!
//! - arguments in memory a program at syscall entry cannot read (shared memory whose page
//!   table entries were dropped): judged as the dangerous value, not waved through;
//! - the i386 ABI: 16-bit setuid/setgid (the kernel keeps the low 16 bits, so 65536 asks
//!   for root) and socketcall(2) with `AF_INET, SOCK_PACKET`;
//! - the setgid family and setgid-root binaries, and file capabilities: a harmless one
//!   (cap_net_bind_service) passes, others are an escalation;
//! - packet sockets through io_uring (no socket(2) to see);
//! - the descriptor a killed call created, kept by a process sharing the descriptor table
//!   (`CLONE_FILES`) or copied out with pidfd_getfd(2) before the process is gone.

use std::{fs, os::unix::fs::PermissionsExt};

use enforcer_common::*;
use enforcer_tests::{
    guard_pods::{at, fallback_pods as pods, has_ia32},
    *,
};

#[test]
fn fallback_escape_unreadable_clone3_arguments_killed() {
    let Some(mut p) = pods(
        "fallback_escape_unreadable_clone3_arguments_killed",
        GUARD_DANGEROUS_CAPABILITIES,
    ) else {
        return;
    };
    // The resident form was always caught; the paged-out one used to read as flags 0.
    p.check(
        GUARD_DANGEROUS_CAPABILITIES,
        &["clone3", "user", "--paged-out"],
        "killed",
        "ok",
    );
    p.check(
        GUARD_DANGEROUS_CAPABILITIES,
        &["clone3", "user"],
        "killed",
        "ok",
    );
}

#[test]
fn fallback_escape_16bit_setuid_and_setgid_family_killed() {
    let test = "fallback_escape_16bit_setuid_and_setgid_family_killed";
    let Some(mut p) = pods(test, GUARD_ROOT_ESCALATION) else {
        return;
    };
    // uid/gid 1000 with saved uid/gid 0 (a setuid-root program after dropping privileges).
    p.check(
        GUARD_ROOT_ESCALATION,
        &["as-user", "1000:0", "setgid", "0"],
        "killed",
        "ok",
    );
    // No false positives: a user keeping its own group, root changing groups.
    let r = probe_run(at(&p.guarded), &["as-user", "1000:0", "setgid", "1000"]);
    assert_eq!(r.word(), "ok", "{r:?}");
    assert_eq!(probe_run(at(&p.guarded), &["setgid", "0"]).word(), "ok");
    if !has_ia32(test, &p.free) {
        return;
    }
    // 65536 is 0 in the 16 bits the kernel keeps.
    p.check(
        GUARD_ROOT_ESCALATION,
        &["as-user", "1000:0", "compat-setuid16", "65536"],
        "killed",
        "ok",
    );
    p.check(
        GUARD_ROOT_ESCALATION,
        &["as-user", "1000:0", "compat-setgid16", "65536"],
        "killed",
        "ok",
    );
    // 65535 is -1 for the 16-bit calls (EINVAL), 1000 the caller's own uid: not root.
    for uid in ["65535", "1000"] {
        let r = probe_run(
            at(&p.guarded),
            &["as-user", "1000:0", "compat-setuid16", uid],
        );
        assert!(!r.killed(), "setuid16({uid}): {r:?}");
    }
}

#[test]
fn fallback_escape_file_capabilities_and_setgid_binaries() {
    let Some(mut p) = pods(
        "fallback_escape_file_capabilities_and_setgid_binaries",
        GUARD_ROOT_ESCALATION,
    ) else {
        return;
    };
    let dir = TmpMount::new("enf-fcap");
    let copy = |name: &str, mode: u32| {
        let f = dir.path.join(name);
        fs::copy(probe_bin(), &f).expect("copy probe");
        fs::set_permissions(&f, fs::Permissions::from_mode(mode)).unwrap();
        f
    };
    let bind = copy("probe-bind", 0o755);
    set_file_caps(&bind, 1 << 10); // cap_net_bind_service
    let raw = copy("probe-raw", 0o755);
    set_file_caps(&raw, 1 << 13); // cap_net_raw
    let sgid = copy("probe-sgid", 0o2755);
    let guarded = p.guarded.path.clone();
    let run = |f: &std::path::Path| {
        probe_run(
            at(&Cgroup::borrowed(&guarded)),
            &["as-user", "1000", "exec", f.to_str().unwrap(), "whoami"],
        )
    };
    // The harmless capability: a non-root web server binding port 80 keeps working.
    let r = run(&bind);
    assert!(
        !r.killed() && r.out.contains("capprm=0000000000000400"),
        "cap_net_bind_service binary in the guarded pod: {r:?}"
    );
    p.assert_no_event(p.guarded.id(), "harmless file capability");
    // Any other gained capability, and group 0 from a setgid-root binary, escalate.
    let r = run(&raw);
    assert!(r.killed(), "cap_net_raw binary: expected SIGKILL: {r:?}");
    p.assert_event(
        p.guarded.id(),
        GUARD_ROOT_ESCALATION,
        VERDICT_DENY,
        "cap_net_raw",
    );
    let r = run(&sgid);
    assert!(r.killed(), "setgid-root binary: expected SIGKILL: {r:?}");
    p.assert_event(
        p.guarded.id(),
        GUARD_ROOT_ESCALATION,
        VERDICT_DENY,
        "setgid-root",
    );
    // Unguarded, the same binaries run.
    let r = probe_run(
        at(&p.free),
        &["as-user", "1000", "exec", sgid.to_str().unwrap(), "whoami"],
    );
    assert!(!r.killed(), "setgid-root binary unguarded: {r:?}");
}

#[test]
fn fallback_escape_packet_sockets_other_ways_killed() {
    let test = "fallback_escape_packet_sockets_other_ways_killed";
    let Some(mut p) = pods(test, GUARD_PACKET_SOCKETS) else {
        return;
    };
    // io_uring's IORING_OP_SOCKET: no socket(2) for sys_enter to see, so no ring at all.
    p.check(
        GUARD_PACKET_SOCKETS,
        &["uring-socket", "packet"],
        "killed",
        "ok",
    );
    if has_ia32(test, &p.free) {
        // i386 socketcall: `AF_INET, SOCK_PACKET` is a packet socket; arguments the
        // program cannot read count as one.
        p.check(
            GUARD_PACKET_SOCKETS,
            &["compat-socket", "packet-inet"],
            "killed",
            "ok",
        );
        p.check(
            GUARD_PACKET_SOCKETS,
            &["compat-socket", "packet", "--paged-out"],
            "killed",
            "ok",
        );
        let r = probe_run(at(&p.guarded), &["compat-socket", "tcp"]);
        assert_eq!(
            r.word(),
            "ok",
            "an ordinary socket through socketcall: {r:?}"
        );
    }
}

#[test]
fn fallback_escape_descriptor_of_a_killed_call_does_not_survive() {
    let Some(p) = pods(
        "fallback_escape_descriptor_of_a_killed_call_does_not_survive",
        GUARD_PACKET_SOCKETS,
    ) else {
        return;
    };
    for cmd in ["files-sibling-packet", "pidfd-getfd-packet"] {
        // Unguarded, the second process gets the packet socket: the test can see a leak.
        let r = probe_run(at(&p.free), &[cmd]);
        assert!(
            r.out.contains("leaked"),
            "{cmd} unguarded must show the sibling using the socket: {r:?}"
        );
        let r = probe_run(at(&p.guarded), &[cmd]);
        assert!(
            r.killed(),
            "{cmd} in the guarded pod: expected SIGKILL: {r:?}"
        );
        assert!(
            !r.out.contains("leaked"),
            "{cmd}: the packet socket of the killed call was used by another process: {r:?}"
        );
    }
    // Threads (CLONE_THREAD shares the descriptor table too) and forks are fine.
    let r = probe_run(at(&p.guarded), &["threads"]);
    assert_eq!(r.word(), "ok", "{r:?}");
    let r = probe_run(at(&p.guarded), &["in-child", "whoami"]);
    assert!(!r.killed() && r.out.contains("child exit:0"), "{r:?}");
}
