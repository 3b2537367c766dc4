//! Kernel tier: the real network programs loaded into this machine's kernel, attached to
//! cgroups the test creates, judged by real connections between network namespaces the test
//! creates.

use enforcer::bpf::{Datapath, lpm_key};
use enforcer_common::*;
use enforcer_tests::*;

/// A client namespace and a server namespace on one veth link, a server listening on
/// tcp:80, tcp:81 and udp:81, and a test cgroup tree `root/pod-a`.
struct World {
    srv: Netns,
    cli: Netns,
    root: Cgroup,
    pod: Cgroup,
    outside: Cgroup,
    server: Option<Bg>,
}

const SRV: &str = "10.201.0.2";

fn world(test: &str) -> Option<World> {
    if !is_root() {
        skip(
            test,
            "needs root (BPF programs, cgroups, network namespaces)",
        );
        return None;
    }
    let srv = Netns::new("ks");
    let cli = Netns::new("kc");
    veth(&cli, "10.201.0.1/24", &srv, "10.201.0.2/24");
    let root = Cgroup::new_root("enf-kt");
    let pod = root.child("pod-a");
    let outside = Cgroup::new_root("enf-ko");
    Some(World {
        srv,
        cli,
        root,
        pod,
        outside,
        server: None,
    })
}

impl World {
    fn serve(&mut self, cgroup: Option<&std::path::Path>) {
        let place = Place {
            netns: Some(&self.srv),
            cgroup,
        };
        self.server = Some(Bg::spawn(place, &["serve", "tcp:80", "tcp:81", "udp:81"]));
    }

    fn datapath(&self, flags: u32) -> Datapath {
        let mut dp = Datapath::load(None).expect("load eBPF object");
        dp.set_config(&Config {
            root_cgroup_id: self.root.id(),
            root_level: self.root.level(),
            flags,
            policy_revision: 1,
            ct_timeout_tcp_s: 3600,
            ct_timeout_other_s: 60,
            unclassified_guards: 0,
        })
        .expect("config");
        dp
    }

    fn from(&self, cg: &Cgroup, proto: &str, port: u16) -> String {
        let place = Place {
            netns: Some(&self.cli),
            cgroup: Some(&cg.path),
        };
        probe(place, &["connect", proto, SRV, &port.to_string(), "400"]).1
    }
}

fn allow(dp: &mut Datapath, ep: u32, dir: u8, proto: u8, port: u16, policy: u32) {
    dp.policy()
        .unwrap()
        .insert(
            &lpm_key(
                POLICY_PREFIX_FULL,
                PolicyKey {
                    endpoint: ep,
                    identity: IDENTITY_ANY,
                    direction: dir,
                    protocol: proto,
                    port: port.to_be_bytes(),
                },
            ),
            PolicyValue { policy, flags: 0 },
            0,
        )
        .unwrap();
}

#[test]
fn egress_isolated_pod_is_denied_and_outside_passes() {
    let Some(mut w) = world("egress_isolated_pod_is_denied_and_outside_passes") else {
        return;
    };
    w.serve(None);
    // Before anything is loaded both directions work.
    assert_eq!(w.from(&w.pod, "tcp", 80), "ok");

    let mut dp = w.datapath(0);
    dp.endpoints()
        .unwrap()
        .insert(
            w.pod.id(),
            Endpoint {
                id: 7,
                flags: EP_EGRESS_ISOLATED,
                ..Default::default()
            },
            0,
        )
        .unwrap();
    dp.attach_network(&w.root.path).expect("attach");

    // Isolated for egress with no policy: connect() and sendto() fail at once.
    assert_eq!(w.from(&w.pod, "tcp", 80), "eperm");
    assert_eq!(w.from(&w.pod, "udp", 81), "eperm");
    // The same traffic from a cgroup outside the attach root passes.
    assert_eq!(w.from(&w.outside, "tcp", 80), "ok");
    assert_eq!(w.from(&w.outside, "udp", 81), "ok");
    // A process in the root itself is not a pod: it is unclassified and passes unless the
    // deny-unclassified setting is on.
    assert_eq!(w.from(&w.root, "tcp", 80), "ok");

    // Allow tcp/80 only: tcp/80 passes (and its reply, via conntrack); tcp/81 and udp stay
    // denied.
    allow(&mut dp, 7, DIR_EGRESS, PROTO_TCP, 80, 3);
    assert_eq!(w.from(&w.pod, "tcp", 80), "ok");
    assert_eq!(w.from(&w.pod, "tcp", 81), "eperm");
    assert_eq!(w.from(&w.pod, "udp", 81), "eperm");
    drop(dp);
    // Detached on drop.
    assert_eq!(w.from(&w.pod, "tcp", 81), "ok");
}

#[test]
fn ingress_isolated_server_drops_packets_and_allows_replies_of_its_own_flows() {
    let Some(mut w) =
        world("ingress_isolated_server_drops_packets_and_allows_replies_of_its_own_flows")
    else {
        return;
    };
    // The server itself is the pod.
    let pod_path = w.pod.path.clone();
    let pod_id = w.pod.id();
    w.serve(Some(&pod_path));
    let mut dp = w.datapath(0);
    dp.endpoints()
        .unwrap()
        .insert(
            pod_id,
            Endpoint {
                id: 9,
                flags: EP_INGRESS_ISOLATED,
                ..Default::default()
            },
            0,
        )
        .unwrap();
    dp.attach_network(&w.root.path).expect("attach");

    // No socket hook on ingress: the SYN is dropped in the kernel and the client times out.
    assert_eq!(w.from(&w.outside, "tcp", 80), "timeout");
    assert_eq!(w.from(&w.outside, "udp", 81), "timeout");
    allow(&mut dp, 9, DIR_INGRESS, PROTO_UDP, 81, 4);
    assert_eq!(w.from(&w.outside, "udp", 81), "ok");
    assert_eq!(w.from(&w.outside, "tcp", 80), "timeout");
    // A port range (80-81 as the 15-bit prefix 80/15) opens both TCP ports.
    dp.policy()
        .unwrap()
        .insert(
            &lpm_key(
                POLICY_PREFIX_ANY_PORT + 15,
                PolicyKey {
                    endpoint: 9,
                    identity: IDENTITY_ANY,
                    direction: DIR_INGRESS,
                    protocol: PROTO_TCP,
                    port: 80u16.to_be_bytes(),
                },
            ),
            PolicyValue {
                policy: 5,
                flags: 0,
            },
            0,
        )
        .unwrap();
    assert_eq!(w.from(&w.outside, "tcp", 80), "ok");
    assert_eq!(w.from(&w.outside, "tcp", 81), "ok");
    // Egress of the server is not isolated, so its replies always went out; a client
    // *inside* the pod (egress free, ingress isolated) still gets its replies back through
    // conntrack although nothing allows ingress from the server.
    dp.policy()
        .unwrap()
        .remove(&lpm_key(
            POLICY_PREFIX_ANY_PORT + 15,
            PolicyKey {
                endpoint: 9,
                identity: IDENTITY_ANY,
                direction: DIR_INGRESS,
                protocol: PROTO_TCP,
                port: 80u16.to_be_bytes(),
            },
        ))
        .unwrap();
    drop(w.server.take());
    w.serve(None);
    let place = Place {
        netns: Some(&w.cli),
        cgroup: Some(&pod_path),
    };
    assert_eq!(probe(place, &["connect", "tcp", SRV, "80", "400"]).1, "ok");
    assert_eq!(probe(place, &["connect", "udp", SRV, "81", "400"]).1, "ok");
}

#[test]
fn unclassified_cgroups_are_denied_when_configured() {
    let Some(mut w) = world("unclassified_cgroups_are_denied_when_configured") else {
        return;
    };
    w.serve(None);
    let mut dp = w.datapath(CFG_DENY_UNCLASSIFIED);
    dp.attach_network(&w.root.path).expect("attach");
    // pod-a has no endpoint entry yet: the agent has not classified it.
    assert_eq!(w.from(&w.pod, "tcp", 80), "eperm");
    dp.endpoints()
        .unwrap()
        .insert(
            w.pod.id(),
            Endpoint {
                id: 1,
                ..Default::default()
            },
            0,
        )
        .unwrap();
    assert_eq!(w.from(&w.pod, "tcp", 80), "ok");
    // A container cgroup below a classified pod resolves to the pod.
    let ctr = w.pod.child("cri-containerd-abc.scope");
    assert_eq!(w.from(&ctr, "tcp", 80), "ok");
    assert_eq!(w.from(&w.outside, "tcp", 80), "ok");
}

/// The agent's level of the attach root is a hint (wrong when the node runs in a nested
/// cgroup namespace, as kind nodes do): the programs verify it against the kernel's cgroup
/// ancestry, find the real level, and resolve container cgroups to their pod with it.
#[test]
fn wrong_root_level_hint_is_corrected_from_the_kernel() {
    let Some(mut w) = world("wrong_root_level_hint_is_corrected_from_the_kernel") else {
        return;
    };
    let real = w.root.level();
    assert!(real >= 1, "test root at level {real}");
    // A container of the pod, without an ENDPOINTS entry of its own: only the ancestor walk,
    // which starts at the root's level, can give it the pod's policy.
    let ctr = w.pod.child("cri-containerd-abc.scope");
    w.serve(Some(&ctr.path.clone()));
    let mut dp = Datapath::load(None).expect("load eBPF object");
    dp.set_config(&Config {
        root_cgroup_id: w.root.id(),
        // What an agent in a cgroup namespace rooted one level below would compute.
        root_level: real - 1,
        flags: 0,
        policy_revision: 1,
        ct_timeout_tcp_s: 3600,
        ct_timeout_other_s: 60,
        unclassified_guards: 0,
    })
    .expect("config");
    dp.endpoints()
        .unwrap()
        .insert(
            w.pod.id(),
            Endpoint {
                id: 7,
                flags: EP_EGRESS_ISOLATED | EP_INGRESS_ISOLATED,
                ..Default::default()
            },
            0,
        )
        .unwrap();
    dp.attach_network(&w.root.path).expect("attach");
    assert_eq!(dp.verified_root_level(w.root.id()).unwrap(), None);

    // Egress from the container (connect hook: the current task's ancestry) is the pod's.
    assert_eq!(w.from(&ctr, "tcp", 80), "eperm");
    assert_eq!(
        dp.verified_root_level(w.root.id()).unwrap(),
        Some(real),
        "the programs should have verified the root's real level"
    );
    // Ingress to the container server (cgroup_skb: the socket's ancestry) is the pod's.
    assert_eq!(w.from(&w.outside, "tcp", 80), "timeout");
    allow(&mut dp, 7, DIR_INGRESS, PROTO_TCP, 80, 3);
    assert_eq!(w.from(&w.outside, "tcp", 80), "ok");
    assert_eq!(w.from(&w.outside, "tcp", 81), "timeout");
    // Pod to itself: egress allowed, but ingress of tcp/81 is not.
    allow(&mut dp, 7, DIR_EGRESS, PROTO_TCP, 81, 4);
    assert_eq!(
        w.from(&ctr, "tcp", 81),
        "timeout",
        "pod egress allowed, server ingress not"
    );
}

/// Send one forged datagram from the client namespace while the server (an
/// ingress-isolated pod allowing nothing) waits for it; what the server saw.
fn forged_arrives(srv: &Netns, cli: &Netns, pod: &Cgroup, src: &str, dst: &str) -> String {
    std::thread::scope(|s| {
        let h = s.spawn(|| {
            probe(
                Place {
                    netns: Some(srv),
                    cgroup: Some(&pod.path),
                },
                &["recv-once", "81", "1200"],
            )
            .1
        });
        std::thread::sleep(std::time::Duration::from_millis(300));
        let sent = probe(
            Place {
                netns: Some(cli),
                cgroup: None,
            },
            &["spoof-udp", src, dst, "81"],
        )
        .1;
        assert_eq!(sent.trim(), "ok", "sending the forged datagram");
        let out = h.join().unwrap();
        out.lines().last().unwrap_or("").to_string()
    })
}

#[test]
fn forged_loopback_looking_packets_are_judged_by_policy() {
    let test = "forged_loopback_looking_packets_are_judged_by_policy";
    if !is_root() {
        skip(
            test,
            "needs root (BPF programs, cgroups, network namespaces)",
        );
        return;
    }
    // An attacker next to the pod forges datagrams whose headers look like loopback
    // traffic: source == destination (the pod's own address), or an IPv4-mapped
    // 127.0.0.1 source. Only a packet that really went through the loopback device is
    // loopback.
    let srv = Netns::new("fs");
    let cli = Netns::new("fc");
    let (a, b) = (unique("fa"), unique("fb"));
    sh(
        "ip",
        &[
            "link", "add", "name", &a, "netns", &cli.name, "type", "veth", "peer", "name", &b,
            "netns", &srv.name,
        ],
    );
    cli.ip(&["addr", "add", "10.203.0.1/24", "dev", &a]);
    srv.ip(&["addr", "add", "10.203.0.2/24", "dev", &b]);
    cli.ip(&["-6", "addr", "add", "fd20:3::1/64", "dev", &a, "nodad"]);
    srv.ip(&["-6", "addr", "add", "fd20:3::2/64", "dev", &b, "nodad"]);
    cli.ip(&["link", "set", &a, "up"]);
    srv.ip(&["link", "set", &b, "up"]);
    srv.ip(&["link", "set", "lo", "up"]);
    let root = Cgroup::new_root("enf-kf");
    let pod = root.child("pod");

    // Without the programs the forged datagrams arrive (IPv6 has no local-source check):
    // the attack is real on this kernel.
    // The link and neighbour entries settle first (a datagram queued behind them would
    // arrive during a later check).
    let start = std::time::Instant::now();
    while !forged_arrives(&srv, &cli, &pod, "fd20:3::1", "fd20:3::2").starts_with("got") {
        assert!(
            start.elapsed().as_secs() < 10,
            "the link never carried IPv6"
        );
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    for (src, dst) in [
        ("fd20:3::2", "fd20:3::2"),
        ("::ffff:127.0.0.1", "fd20:3::2"),
    ] {
        assert_eq!(
            forged_arrives(&srv, &cli, &pod, src, dst),
            format!(
                "got {}",
                std::net::SocketAddr::new(src.parse().unwrap(), 40000)
            ),
            "without the programs, forged {src} -> {dst} arrives: the attack is real here"
        );
    }

    let mut dp = Datapath::load(None).expect("load eBPF object");
    dp.set_config(&Config {
        root_cgroup_id: root.id(),
        root_level: root.level(),
        flags: 0,
        policy_revision: 1,
        ct_timeout_tcp_s: 3600,
        ct_timeout_other_s: 60,
        unclassified_guards: 0,
    })
    .unwrap();
    dp.endpoints()
        .unwrap()
        .insert(
            pod.id(),
            Endpoint {
                id: 11,
                flags: EP_INGRESS_ISOLATED,
                ..Default::default()
            },
            0,
        )
        .unwrap();
    dp.attach_network(&root.path).expect("attach");

    for (src, dst) in [
        ("fd20:3::2", "fd20:3::2"),
        ("::ffff:127.0.0.1", "fd20:3::2"),
        ("::1", "fd20:3::2"),
        ("fd20:3::1", "fd20:3::2"),
    ] {
        assert_eq!(
            forged_arrives(&srv, &cli, &pod, src, dst),
            "timeout",
            "forged {src} -> {dst} reached an ingress-isolated pod"
        );
    }
    // Real loopback inside the pod still passes: the pod talking to itself.
    std::thread::scope(|s| {
        let h = s.spawn(|| {
            probe(
                Place {
                    netns: Some(&srv),
                    cgroup: Some(&pod.path),
                },
                &["recv-once", "81", "1500"],
            )
            .1
        });
        std::thread::sleep(std::time::Duration::from_millis(300));
        probe(
            Place {
                netns: Some(&srv),
                cgroup: Some(&pod.path),
            },
            &["connect", "udp", "fd20:3::2", "81", "300"],
        );
        let out = h.join().unwrap();
        assert!(out.contains("got"), "own address via loopback: {out}");
    });
}
