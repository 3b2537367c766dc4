//! VM tier: the ways around the guards an attacker in a pod would try, against the LSM
//! tier (the BPF LSM active: Debian's 6.1 and 6.12 under QEMU). The LSM hooks see the
//! kernel's own view of a call, so the fallback tier's blind spots (unreadable arguments,
//! the i386 ABI, io_uring) are no way around here; these tests prove it, and cover the
//! setgid family and file capabilities, which the LSM tier judges itself.

use std::{fs, os::unix::fs::PermissionsExt};

use enforcer::guards;
use enforcer_common::*;
use enforcer_tests::{
    guard_pods::{at, has_ia32, lsm_pods as pods},
    *,
};

#[test]
fn lsm_escape_setgid_family_and_16bit_ids_denied() {
    let test = "lsm_escape_setgid_family_and_16bit_ids_denied";
    let Some(mut p) = pods(test, GUARD_ROOT_ESCALATION) else {
        return;
    };
    let e = p.check(
        GUARD_ROOT_ESCALATION,
        &["as-user", "1000:0", "setgid", "0"],
        "eperm",
        "ok",
    );
    assert_eq!(guards::detail_text(&e.detail), "setgid");
    let r = probe_run(at(&p.guarded), &["as-user", "1000:0", "setgid", "1000"]);
    assert_eq!(r.word(), "ok", "{r:?}");
    assert_eq!(probe_run(at(&p.guarded), &["setgid", "0"]).word(), "ok");
    if !has_ia32(test, &p.free) {
        return;
    }
    p.check(
        GUARD_ROOT_ESCALATION,
        &["as-user", "1000:0", "compat-setuid16", "65536"],
        "eperm",
        "ok",
    );
    p.check(
        GUARD_ROOT_ESCALATION,
        &["as-user", "1000:0", "compat-setgid16", "65536"],
        "eperm",
        "ok",
    );
}

#[test]
fn lsm_escape_file_capabilities_and_setgid_binaries() {
    let Some(mut p) = pods(
        "lsm_escape_file_capabilities_and_setgid_binaries",
        GUARD_ROOT_ESCALATION,
    ) else {
        return;
    };
    let dir = TmpMount::new("enf-fcap");
    let copy = |name: &str, mode: u32| {
        let f = dir.path.join(name);
        fs::copy(probe_bin(), &f).expect("copy probe");
        fs::set_permissions(&f, fs::Permissions::from_mode(mode)).unwrap();
        f.to_str().unwrap().to_string()
    };
    let bind = copy("probe-bind", 0o755);
    set_file_caps(std::path::Path::new(&bind), 1 << 10); // cap_net_bind_service
    let sgid = copy("probe-sgid", 0o2755);
    let r = probe_run(
        at(&p.guarded),
        &["as-user", "1000", "exec", &bind, "whoami"],
    );
    assert!(
        r.out.contains("capprm=0000000000000400"),
        "cap_net_bind_service binary in the guarded pod: {r:?}"
    );
    p.assert_no_event(p.guarded.id(), "harmless file capability");
    p.check(
        GUARD_ROOT_ESCALATION,
        &["as-user", "1000", "exec", &sgid, "whoami"],
        "eperm",
        "uid=1000",
    );
}

#[test]
fn lsm_escape_packet_sockets_other_ways_denied() {
    let test = "lsm_escape_packet_sockets_other_ways_denied";
    let Some(mut p) = pods(test, GUARD_PACKET_SOCKETS) else {
        return;
    };
    // io_uring's socket op runs the socket_create hook: a precise EPERM, rings stay usable.
    p.check(
        GUARD_PACKET_SOCKETS,
        &["uring-socket", "packet"],
        "eperm",
        "ok",
    );
    let r = probe_run(at(&p.guarded), &["uring-socket", "tcp"]);
    assert_eq!(r.word(), "ok", "an ordinary socket through io_uring: {r:?}");
    if has_ia32(test, &p.free) {
        p.check(
            GUARD_PACKET_SOCKETS,
            &["compat-socket", "packet-inet", "--paged-out"],
            "eperm",
            "ok",
        );
    }
    // Nothing is created, so nothing can be passed on.
    for cmd in ["files-sibling-packet", "pidfd-getfd-packet"] {
        let r = probe_run(at(&p.guarded), &[cmd]);
        assert!(
            !r.killed() && !r.out.contains("leaked") && r.out.contains("eperm"),
            "{cmd} in the guarded pod: {r:?}"
        );
    }
}
