//! VM tier: the runtime guards' LSM tier, in a kernel where the BPF LSM is active
//! (Debian's 6.1 under QEMU, see xtask/src/vm.rs). On a host without it every test skips
//! loudly; inside the VM (ENFORCER_VM=1) a missing BPF LSM is a failure.
//!
//! Each test builds a pod tree (`enforcer_tests::guard_pods`): `pod-guarded` (guards
//! enforced), `pod-audit` (the same guards audited), `pod-free` (no guards), and a cgroup
//! outside the root. The probe makes the real syscall from each: enforced, it fails with
//! EPERM and a deny event (tier lsm) arrives; audited, it succeeds and an audit event
//! arrives; elsewhere it succeeds without events.

use std::{fs, os::unix::fs::PermissionsExt, path::Path};

use enforcer::{
    bpf::Datapath,
    guards::{self, Tier},
};
use enforcer_common::*;
use enforcer_tests::{
    exemption,
    guard_pods::{GuardPods, UID, at, lsm_pods as pods, lsm_ready},
    *,
};

fn mknod(path: &Path, kind: libc::mode_t, major: u32, minor: u32) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: valid C string.
    let r = unsafe { libc::mknod(c.as_ptr(), kind | 0o666, libc::makedev(major, minor)) };
    assert_eq!(
        r,
        0,
        "mknod {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// Copies of the probe in a tmpfs that allows setuid: (setuid-root, file capability
/// CAP_NET_RAW, plain).
fn binaries(dir: &TmpMount) -> (String, String, String) {
    let suid = dir.path.join("probe-suid");
    let fcap = dir.path.join("probe-fcap");
    let plain = dir.path.join("probe-plain");
    for p in [&suid, &fcap, &plain] {
        fs::copy(probe_bin(), p).expect("copy probe");
    }
    fs::set_permissions(&suid, fs::Permissions::from_mode(0o4755)).unwrap();
    set_file_caps(&fcap, 1 << 13); // CAP_NET_RAW
    let s = |p: &Path| p.to_str().unwrap().to_string();
    (s(&suid), s(&fcap), s(&plain))
}

#[test]
fn lsm_tier_probe_and_offsets() {
    if !lsm_ready("lsm_tier_probe_and_offsets") {
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
    assert_eq!(probe.tier, Tier::Lsm, "{}", probe.reason);
    // Probing leaves nothing attached; probing twice works.
    assert_eq!(dp.probe_guard_tier().tier, Tier::Lsm);
    for s in guards::support(Tier::Lsm, dp.guard_offsets()) {
        eprintln!("lsm {:<24} {:?}: {}", s.name, s.enforcement, s.note);
        assert_eq!(s.enforcement, guards::Enforcement::Deny, "{}", s.name);
    }
    // Every hook's program loads on this kernel: the variant written for its signature
    // (perf_event_open lost `attr` in 6.12, bpf gained `kernel` in 6.15), none refused.
    assert!(
        dp.check_lsm_programs().is_empty(),
        "LSM programs refused: {:?}",
        dp.check_lsm_programs()
    );
    let root = Cgroup::new_root("enf-gp");
    let attached = dp.attach_guards(&root.path, Tier::Lsm).expect("attach");
    assert_eq!(attached.available, GUARD_ALL);
    assert!(
        attached.fell_back.is_empty(),
        "guards fell back: {:?}",
        attached.fell_back
    );
    assert_eq!(attached.fallback_guards, 0);
    for g in guards::GUARD_NAMES.iter().map(|(b, _)| *b) {
        assert_eq!(
            attached.tier_of(g),
            Some(Tier::Lsm),
            "{}",
            guards::guard_name(g)
        );
    }
    eprintln!("attached: {:?}", attached.programs);
}

/// A hook the kernel refuses costs only the guards it serves: bpf falls back to the
/// fallback programs (the bpf(2) call kills, reported by tier fallback) while mount, on
/// an LSM hook that loaded, keeps its precise EPERM in the same pod.
#[test]
fn lsm_refused_hook_falls_back_alone() {
    if !lsm_ready("lsm_refused_hook_falls_back_alone") {
        return;
    }
    let mut p = GuardPods::refusing(GUARD_BPF | GUARD_MOUNT, Tier::Lsm, &["bpf"]);
    assert_eq!(p.attached.tier, Tier::Lsm);
    assert_eq!(p.attached.tier_of(GUARD_BPF), Some(Tier::Fallback));
    assert_eq!(p.attached.tier_of(GUARD_MOUNT), Some(Tier::Lsm));
    assert_eq!(p.attached.fallback_guards, GUARD_BPF);
    assert_eq!(p.attached.fell_back.len(), 1, "{:?}", p.attached.fell_back);
    assert!(p.attached.programs.contains(&"guard_sys_enter"));
    assert!(!p.attached.programs.contains(&"guard_bpf"));
    assert!(!p.attached.programs.contains(&"guard_bpf_kernel_flag"));
    p.check(GUARD_BPF, &["bpf-map"], "killed", "ok");
    // The guard falls back as a whole: perf_event_open is killed at syscall entry too
    // (its own LSM program, which loaded, also still denies it).
    let r = probe_run(at(&p.guarded), &["perf-open"]);
    assert!(r.killed(), "perf-open in the guarded pod: {r:?}");
    let dir = TmpMount::new("enf-fb");
    let target = dir.path.join("m");
    fs::create_dir(&target).unwrap();
    p.check(
        GUARD_MOUNT,
        &["mount-tmpfs", target.to_str().unwrap()],
        "eperm",
        "ok",
    );
}

#[test]
fn lsm_root_escalation_setuid() {
    let Some(mut p) = pods("lsm_root_escalation_setuid", GUARD_ROOT_ESCALATION) else {
        return;
    };
    // uid 1000 keeping saved uid 0 (a setuid program after dropping privileges) asks for 0.
    let uid = format!("{UID}:0");
    let e = p.check(
        GUARD_ROOT_ESCALATION,
        &["as-user", &uid, "setuid", "0"],
        "eperm",
        "ok",
    );
    assert_eq!(guards::detail_text(&e.detail), "setuid");
    assert_eq!(e.uid, UID, "the offender's uid");
    // No false positives: root calling setuid(0), a user setting its own uid.
    assert_eq!(probe_run(at(&p.guarded), &["setuid", "0"]).word(), "ok");
    let r = probe_run(at(&p.guarded), &["as-user", &uid, "setuid", "1000"]);
    assert_eq!(r.word(), "ok", "{r:?}");
}

#[test]
fn lsm_root_escalation_exec() {
    let Some(mut p) = pods("lsm_root_escalation_exec", GUARD_ROOT_ESCALATION) else {
        return;
    };
    let dir = TmpMount::new("enf-suid");
    let (suid, fcap, plain) = binaries(&dir);
    let r = probe_run(at(&p.free), &["as-user", "1000", "exec", &suid, "whoami"]);
    assert!(
        r.out.contains("euid=0"),
        "the setuid copy works unguarded: {r:?}"
    );
    let r = probe_run(at(&p.free), &["as-user", "1000", "exec", &fcap, "whoami"]);
    assert!(
        r.out.contains("capprm=0000000000002000"),
        "the file-capability copy works unguarded: {r:?}"
    );
    let e = p.check(
        GUARD_ROOT_ESCALATION,
        &["as-user", "1000", "exec", &suid, "whoami"],
        "eperm",
        "uid=1000",
    );
    assert_eq!(
        guards::detail_text(&e.detail),
        suid,
        "the binary in the event"
    );
    let e = p.check(
        GUARD_ROOT_ESCALATION,
        &["as-user", "1000", "exec", &fcap, "whoami"],
        "eperm",
        "uid=1000",
    );
    assert_eq!(e.arg, 1 << 13, "the permitted capabilities gained");
    // The same user may exec ordinary binaries, and root may exec the setuid one.
    let r = probe_run(
        at(&p.guarded),
        &["as-user", "1000", "exec", &plain, "whoami"],
    );
    assert_eq!(r.word(), "uid=1000", "{r:?}");
    let r = probe_run(at(&p.guarded), &["exec", &suid, "whoami"]);
    assert_eq!(r.word(), "uid=0", "{r:?}");
}

#[test]
fn lsm_root_exec() {
    let Some(mut p) = pods("lsm_root_exec", GUARD_ROOT_ESCALATION | GUARD_ROOT_EXEC) else {
        return;
    };
    let dir = TmpMount::new("enf-rx");
    let (_, _, plain) = binaries(&dir);
    // The probe's own exec (as root) arms the cgroup (that exec is not checked); its exec
    // of another binary as root is then denied.
    let e = p.check(
        GUARD_ROOT_EXEC,
        &["exec", &plain, "whoami"],
        "eperm",
        "uid=0",
    );
    assert_eq!(guards::detail_text(&e.detail), plain);
    // Now even the probe's own exec by root fails, and exec by a non-root user works.
    let r = probe_run(at(&p.guarded), &["whoami"]);
    assert_eq!(
        r.spawn_errno,
        Some(libc::EPERM),
        "root exec in the armed pod: {r:?}"
    );
    let r = probe_run_as(at(&p.guarded), UID, &["exec", &plain, "whoami"]);
    assert_eq!(r.word(), "uid=1000", "{r:?}");
}

#[test]
fn lsm_dangerous_capabilities() {
    let Some(mut p) = pods("lsm_dangerous_capabilities", GUARD_DANGEROUS_CAPABILITIES) else {
        return;
    };
    let dir = TmpMount::new("enf-cap");
    let file = dir.path.join("f");
    fs::write(&file, "x").unwrap();
    let g = GUARD_DANGEROUS_CAPABILITIES;
    // CAP_SYS_ADMIN (21)
    let e = p.check(g, &["unshare", "mnt"], "eperm", "ok");
    assert_eq!(e.arg, 21);
    p.check(g, &["sethostname-same"], "eperm", "ok");
    // CAP_DAC_READ_SEARCH (2)
    let e = p.check(
        g,
        &["open-by-handle", file.to_str().unwrap()],
        "eperm",
        "ok",
    );
    assert_eq!(e.arg, 2);
    // CAP_NET_ADMIN (12)
    let e = p.check(g, &["rcvbuf-force"], "eperm", "ok");
    assert_eq!(e.arg, 12);
    // Ordinary work of a root process is not affected.
    for args in [
        &["open", "/etc/hostname", "r"][..],
        &["ptrace-child"],
        &["socket", "tcp"],
        &["setuid", "0"],
    ] {
        assert_eq!(probe_run(at(&p.guarded), args).word(), "ok", "{args:?}");
    }
}

#[test]
fn lsm_mount() {
    let Some(mut p) = pods("lsm_mount", GUARD_MOUNT) else {
        return;
    };
    let dir = TmpMount::new("enf-mnt");
    let target = dir.path.join("m");
    fs::create_dir(&target).unwrap();
    let e = p.check(
        GUARD_MOUNT,
        &["mount-tmpfs", target.to_str().unwrap()],
        "eperm",
        "ok",
    );
    assert_eq!(guards::detail_text(&e.detail), "tmpfs");
    // Creating a mount namespace is not a mount.
    assert_eq!(probe_run(at(&p.guarded), &["unshare", "mnt"]).word(), "ok");
}

#[test]
fn lsm_kernel_modules() {
    let Some(mut p) = pods("lsm_kernel_modules", GUARD_KERNEL_MODULES) else {
        return;
    };
    // init_module with a bogus image: unguarded the kernel parses it and refuses it
    // (ENOEXEC); guarded the LSM denies before it is parsed.
    let r = probe_run(at(&p.free), &["init-module"]);
    assert_ne!(r.word(), "eperm", "unguarded: {r:?}");
    assert_ne!(r.word(), "ok", "unguarded: {r:?}");
    let allowed = r.word().to_string();
    let e = p.check(GUARD_KERNEL_MODULES, &["init-module"], "eperm", &allowed);
    assert_eq!(guards::detail_text(&e.detail), "init_module");

    // Autoloading on behalf of the pod: socket(AF_APPLETALK) asks for net-pf-5.
    let loaded = || {
        fs::read_to_string("/proc/modules")
            .unwrap()
            .lines()
            .any(|l| l.starts_with("appletalk "))
    };
    if loaded() {
        skip(
            "lsm_kernel_modules",
            "appletalk is already loaded: the autoload half cannot run",
        );
        return;
    }
    let _modprobe = VmModprobe::install();
    let r = probe_run(at(&p.guarded), &["request-module", "5"]);
    assert_eq!(
        r.word(),
        "errno:97",
        "EAFNOSUPPORT: the module was not loaded: {r:?}"
    );
    assert!(!loaded());
    let e = p.assert_event(
        p.guarded.id(),
        GUARD_KERNEL_MODULES,
        VERDICT_DENY,
        "autoload",
    );
    assert_eq!(guards::detail_text(&e.detail), "net-pf-5");
    let r = probe_run(at(&p.audit), &["request-module", "5"]);
    assert_eq!(r.word(), "ok", "audited: the module loads: {r:?}");
    assert!(loaded());
    let e = p.assert_event(
        p.audit.id(),
        GUARD_KERNEL_MODULES,
        VERDICT_AUDIT,
        "autoload",
    );
    assert_eq!(guards::detail_text(&e.detail), "net-pf-5");
}

/// In the test VM the kernel's usermode helpers run in the initramfs root (PID 1 only
/// chroots its children into the shared host filesystem), where /sbin/modprobe does not
/// exist: point kernel.modprobe at a script that runs the real one in that filesystem,
/// for the duration of a test. Outside the VM nothing changes.
struct VmModprobe {
    previous: Option<String>,
}

impl VmModprobe {
    const SYSCTL: &str = "/proc/sys/kernel/modprobe";

    fn install() -> VmModprobe {
        if std::env::var_os("ENFORCER_VM").is_none() {
            return VmModprobe { previous: None };
        }
        let script = "/tmp/enforcer-modprobe";
        fs::write(
            script,
            "#!/bin/sh\nexec /bin/chroot /newroot /sbin/modprobe \"$@\"\n",
        )
        .unwrap();
        fs::set_permissions(script, fs::Permissions::from_mode(0o755)).unwrap();
        let previous = fs::read_to_string(Self::SYSCTL).unwrap();
        // The initramfs sees this VM's root filesystem at /newroot.
        fs::write(Self::SYSCTL, format!("/newroot{script}")).unwrap();
        VmModprobe {
            previous: Some(previous),
        }
    }
}

impl Drop for VmModprobe {
    fn drop(&mut self) {
        if let Some(p) = &self.previous {
            let _ = fs::write(Self::SYSCTL, p.trim());
        }
    }
}

#[test]
fn lsm_ptrace_outside_the_pod() {
    let Some(mut p) = pods("lsm_ptrace_outside_the_pod", GUARD_PTRACE) else {
        return;
    };
    // A target outside the pods, and one in another container of the guarded pod.
    let target = Bg::spawn(at(&p.outside), &["sleep", "60000"]);
    let pid = target.child.id().to_string();
    let e = p.check(GUARD_PTRACE, &["ptrace", &pid], "eperm", "ok");
    assert_eq!(e.arg, target.child.id() as u64, "the target in the event");
    let ctr_a = p.guarded.child("ctr-a");
    let ctr_b = p.guarded.child("ctr-b");
    let sibling = Bg::spawn(at(&ctr_b), &["sleep", "60000"]);
    let r = probe_run(at(&ctr_a), &["ptrace", &sibling.child.id().to_string()]);
    assert_eq!(r.word(), "ok", "same pod, other container: {r:?}");
    // Its own child, and PTRACE_TRACEME under its parent (same pod).
    assert_eq!(probe_run(at(&p.guarded), &["ptrace-child"]).word(), "ok");
    assert_eq!(probe_run(at(&p.guarded), &["ptrace-traceme"]).word(), "ok");
    assert_eq!(probe_run(at(&p.guarded), &["ptrace-in-pidns"]).word(), "ok");
    // A pod process traced from outside is not this pod's doing.
    let inside = Bg::spawn(at(&ctr_b), &["sleep", "60000"]);
    let r = probe_run(at(&p.outside), &["ptrace", &inside.child.id().to_string()]);
    assert_eq!(r.word(), "ok", "{r:?}");
}

#[test]
fn lsm_ptrace_any() {
    let Some(mut p) = pods("lsm_ptrace_any", GUARD_PTRACE | GUARD_PTRACE_ANY) else {
        return;
    };
    p.check(GUARD_PTRACE_ANY, &["ptrace-child"], "eperm", "ok");
    p.check(GUARD_PTRACE_ANY, &["ptrace-traceme"], "eperm", "ok");
    assert_eq!(
        probe_run(at(&p.guarded), &["ptrace-in-pidns"]).word(),
        "eperm"
    );
}

#[test]
fn lsm_bpf_and_perf() {
    let Some(mut p) = pods("lsm_bpf_and_perf", GUARD_BPF) else {
        return;
    };
    let e = p.check(GUARD_BPF, &["bpf-map"], "eperm", "ok");
    assert_eq!(e.arg, 0, "BPF_MAP_CREATE");
    p.check(GUARD_BPF, &["perf-open"], "eperm", "ok");
}

#[test]
fn lsm_raw_sockets() {
    let Some(mut p) = pods("lsm_raw_sockets", GUARD_RAW_SOCKETS) else {
        return;
    };
    for kind in ["packet", "raw4", "raw6"] {
        p.check(GUARD_RAW_SOCKETS, &["socket", kind], "eperm", "ok");
    }
    assert_eq!(probe_run(at(&p.guarded), &["socket", "tcp"]).word(), "ok");
}

#[test]
fn lsm_host_devices() {
    let Some(mut p) = pods("lsm_host_devices", GUARD_HOST_DEVICES) else {
        return;
    };
    let dir = TmpMount::new("enf-dev");
    let (kmsg, mem, null, blk) = (
        dir.path.join("kmsg"),
        dir.path.join("mem"),
        dir.path.join("null"),
        dir.path.join("loop0"),
    );
    mknod(&kmsg, libc::S_IFCHR, 1, 11);
    mknod(&mem, libc::S_IFCHR, 1, 1);
    mknod(&null, libc::S_IFCHR, 1, 3);
    mknod(&blk, libc::S_IFBLK, 7, 0);
    let e = p.check(
        GUARD_HOST_DEVICES,
        &["open", kmsg.to_str().unwrap(), "r"],
        "eperm",
        "ok",
    );
    assert_eq!(e.arg, (1 << 32) | 11);
    assert_eq!(e.tier, TIER_LSM, "cgroup programs report the attached tier");
    p.check(
        GUARD_HOST_DEVICES,
        &["open", mem.to_str().unwrap(), "r"],
        "eperm",
        "ok",
    );
    // A block device: denied before the driver is asked (unguarded it may not exist).
    let blk = blk.to_str().unwrap();
    let r = probe_run(at(&p.free), &["open", blk, "r"]);
    assert_ne!(r.word(), "eperm", "{r:?}");
    let r = probe_run(at(&p.guarded), &["open", blk, "r"]);
    assert_eq!(r.word(), "eperm", "{r:?}");
    let e = p.assert_event(p.guarded.id(), GUARD_HOST_DEVICES, VERDICT_DENY, "block");
    assert_eq!(guards::detail_text(&e.detail), "b r");
    for path in [
        null.to_str().unwrap(),
        "/dev/null",
        "/dev/urandom",
        "/dev/zero",
        "/dev/full",
    ] {
        assert_eq!(
            probe_run(at(&p.guarded), &["open", path, "w"]).word(),
            "ok",
            "{path} in the guarded pod"
        );
    }
}

#[test]
fn lsm_sysctl_write() {
    let Some(mut p) = pods("lsm_sysctl_write", GUARD_SYSCTL_WRITE) else {
        return;
    };
    // Only a sysctl of a network namespace this test owns is ever written.
    let ns = Netns::new("vgs");
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

/// Forked-child operation: a new mount namespace for itself (CAP_SYS_ADMIN). 0 ok,
/// 1 EPERM, 2 other.
fn unshare_mnt() -> i32 {
    // SAFETY: plain syscall; affects only this child.
    match unsafe { libc::unshare(libc::CLONE_NEWNS) } {
        0 => 0,
        _ if std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM) => 1,
        _ => 2,
    }
}

#[test]
fn lsm_arming_waits_for_exec() {
    let Some(mut p) = pods("lsm_arming_waits_for_exec", GUARD_DANGEROUS_CAPABILITIES) else {
        return;
    };
    // A cgroup nobody exec'd in: a forked (not exec'd) process in it is not guarded, like
    // a container runtime setting up namespaces before it execs the entrypoint.
    let fresh = p.guarded.child("ctr-fresh");
    assert!(!p.is_armed(fresh.id()), "a new cgroup is not armed");
    assert_eq!(
        run_forked_in(&fresh.path, unshare_mnt),
        0,
        "before any exec"
    );
    assert!(!p.is_armed(fresh.id()), "no exec, still not armed");
    // The first exec arms it; from then on even forked processes are guarded.
    assert_eq!(probe_run(at(&fresh), &["whoami"]).code, Some(0));
    assert!(p.is_armed(fresh.id()), "armed by the exec");
    assert_eq!(
        run_forked_in(&fresh.path, unshare_mnt),
        1,
        "after the exec: EPERM"
    );
    let armed = p.dp.armed_cgroups().unwrap();
    assert!(armed.contains(&(fresh.id(), ARM_EXEC)), "{armed:?}");
    // The agent can arm and disarm explicitly (containers started before the agent).
    let other = p.guarded.child("ctr-agent");
    p.dp.arm_cgroup(other.id()).unwrap();
    assert_eq!(
        run_forked_in(&other.path, unshare_mnt),
        1,
        "armed by the agent"
    );
    assert!(p.dp.disarm_cgroup(other.id()).unwrap());
    assert_eq!(run_forked_in(&other.path, unshare_mnt), 0, "disarmed");
    // Nothing outside the root is ever armed.
    assert_eq!(probe_run(at(&p.outside), &["whoami"]).code, Some(0));
    assert!(!p.is_armed(p.outside.id()));
}

/// Benchmark, not a test (it asserts nothing about speed): `cargo xtask bench` runs the
/// `bench_*` functions and prints their ratios; the test tiers skip them.
#[test]
fn bench_lsm_guards_on_vs_off() {
    let Some(mut p) = pods("bench_lsm_guards_on_vs_off", GUARD_ALL) else {
        return;
    };
    let report = p.overhead(5, 50_000, 40);
    println!("{report}");
}

// ---------------------------------------------------------------------------------------
// Runtime exemption (enforcer-ebpf/src/guards/exempt.rs): the scenarios live in
// `enforcer_tests::exemption`, shared with the fallback tier.
// ---------------------------------------------------------------------------------------

#[test]
fn lsm_exempt_clone_into_cgroup_until_second_exec() {
    let Some(mut p) = pods(
        "lsm_exempt_clone_into_cgroup_until_second_exec",
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
fn lsm_exempt_clone_then_other_mount_namespace_exec_is_the_workload() {
    let Some(mut p) = pods(
        "lsm_exempt_clone_then_other_mount_namespace_exec_is_the_workload",
        GUARD_DANGEROUS_CAPABILITIES,
    ) else {
        return;
    };
    exemption::clone_path_direct_exec(&mut p);
}

#[test]
fn lsm_exempt_migration_until_exec() {
    let Some(mut p) = pods(
        "lsm_exempt_migration_until_exec",
        GUARD_DANGEROUS_CAPABILITIES,
    ) else {
        return;
    };
    exemption::migration_path(&mut p);
}

#[test]
fn lsm_exempt_migration_survives_the_runtime_reexec() {
    let Some(mut p) = pods(
        "lsm_exempt_migration_survives_the_runtime_reexec",
        GUARD_DANGEROUS_CAPABILITIES,
    ) else {
        return;
    };
    exemption::migration_then_runtime_reexec(&mut p);
}

#[test]
fn lsm_exempt_nothing_for_the_workload() {
    let Some(mut p) = pods(
        "lsm_exempt_nothing_for_the_workload",
        GUARD_DANGEROUS_CAPABILITIES,
    ) else {
        return;
    };
    exemption::workload_gets_nothing(&mut p);
}

#[test]
fn lsm_exempt_inherited_by_forks() {
    let Some(mut p) = pods(
        "lsm_exempt_inherited_by_forks",
        GUARD_DANGEROUS_CAPABILITIES,
    ) else {
        return;
    };
    exemption::inheritance(&mut p);
}

#[test]
fn lsm_exempt_restricted_workload_exec_as_root_denied() {
    let Some(mut p) = pods(
        "lsm_exempt_restricted_workload_exec_as_root_denied",
        GUARD_ROOT_ESCALATION | GUARD_ROOT_EXEC | GUARD_DANGEROUS_CAPABILITIES,
    ) else {
        return;
    };
    let dir = TmpMount::new("enf-xr");
    let (_, _, plain) = binaries(&dir);
    exemption::restricted(&mut p, &plain);
}

#[test]
fn lsm_exempt_execs_do_not_arm() {
    let Some(mut p) = pods(
        "lsm_exempt_execs_do_not_arm",
        GUARD_ROOT_ESCALATION | GUARD_ROOT_EXEC,
    ) else {
        return;
    };
    exemption::arming(&mut p);
}

#[test]
fn lsm_exempt_cgroup_programs_rely_on_arming() {
    let Some(mut p) = pods(
        "lsm_exempt_cgroup_programs_rely_on_arming",
        GUARD_SYSCTL_WRITE | GUARD_HOST_DEVICES | GUARD_RAW_SOCKETS,
    ) else {
        return;
    };
    let ns = Netns::new("vgx");
    let dir = TmpMount::new("enf-xd");
    let kmsg = dir.path.join("kmsg");
    mknod(&kmsg, libc::S_IFCHR, 1, 11);
    exemption::cgroup_programs(&mut p, &ns, kmsg.to_str().unwrap());
}

/// Benchmark, not a test (it asserts nothing about speed): `cargo xtask bench` runs the
/// `bench_*` functions and prints their ratios; the test tiers skip them.
#[test]
fn bench_lsm_exemption_on_vs_off() {
    let Some(mut p) = pods("bench_lsm_exemption_on_vs_off", GUARD_ALL) else {
        return;
    };
    let report = p.exemption_overhead(3, 300, 30);
    println!("{report}");
}
