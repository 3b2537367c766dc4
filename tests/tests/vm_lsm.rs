//! VM tier: BPF-LSM programs in a kernel where the BPF LSM is active (Debian 6.1 under
//! QEMU, see xtask/src/vm.rs). On a host without it every test here skips loudly; inside
//! the VM (ENFORCER_VM=1) a missing BPF LSM is a failure, not a skip.

use enforcer::bpf::Datapath;
use enforcer_common::*;
use enforcer_tests::{guard_pods::lsm_ready, *};

fn at(cg: &Cgroup) -> Place<'_> {
    Place {
        netns: None,
        cgroup: Some(&cg.path),
    }
}

#[test]
fn raw_socket_denied_in_guarded_pod_only() {
    if !lsm_ready("raw_socket_denied_in_guarded_pod_only") {
        return;
    }
    let root = Cgroup::new_root("enf-vm");
    let pod = root.child("pod-guarded");
    let free = root.child("pod-free");
    let outside = Cgroup::new_root("enf-vo");

    let mut dp = Datapath::load(None).expect("load");
    dp.set_config(&Config {
        root_cgroup_id: root.id(),
        root_level: root.level(),
        ..Default::default()
    })
    .unwrap();
    let mut eps = dp.endpoints().unwrap();
    eps.insert(
        pod.id(),
        Endpoint {
            id: 1,
            guards_enforce: GUARD_RAW_SOCKETS,
            ..Default::default()
        },
        0,
    )
    .unwrap();
    eps.insert(
        free.id(),
        Endpoint {
            id: 2,
            ..Default::default()
        },
        0,
    )
    .unwrap();
    dp.attach_lsm(&[]).expect("attach LSM programs");

    for kind in ["packet", "raw4", "raw6"] {
        assert_eq!(
            probe(at(&pod), &["socket", kind]).1,
            "eperm",
            "{kind} in guarded pod"
        );
        assert_eq!(
            probe(at(&free), &["socket", kind]).1,
            "ok",
            "{kind} in unguarded pod"
        );
        assert_eq!(
            probe(at(&outside), &["socket", kind]).1,
            "ok",
            "{kind} outside"
        );
    }
    // Ordinary sockets are untouched.
    assert_eq!(probe(at(&pod), &["socket", "tcp"]).1, "ok");

    // A container cgroup below the pod inherits the pod's guards.
    let ctr = pod.child("cri-containerd-1.scope");
    assert_eq!(probe(at(&ctr), &["socket", "packet"]).1, "eperm");

    // Detaching restores the operation.
    drop(dp);
    assert_eq!(probe(at(&pod), &["socket", "packet"]).1, "ok");
}
