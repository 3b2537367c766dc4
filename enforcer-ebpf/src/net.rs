//! NetworkPolicy datapath.
//!
//! Per packet, in constant work whatever the number of policies:
//! 1. parse L3/L4 (IPv4, IPv6 with extension headers; TCP, UDP, SCTP ports);
//! 2. resolve the socket's cgroup to its pod (`endpoint`);
//! 3. traffic through the loopback device (the pod talking to itself) passes;
//! 4. conntrack: replies of flows this endpoint accepted or opened pass;
//! 5. peer identity from `IPCACHE` (longest prefix: pod /128s, ipBlock regions);
//! 6. the node's own addresses pass;
//! 7. two `POLICY` lookups: (endpoint, identity, dir, proto, port) and the same with the
//!    wildcard identity. Longest-prefix match covers "any protocol", "any port", exact
//!    ports and `endPort` ranges.
//!
//! Socket hooks (connect/sendmsg) run steps 2-7 before a packet exists so that a denied
//! `connect()` fails at once with EPERM instead of timing out. Before that they translate
//! a Service frontend to one of its backends (socket-level load balancing): every later
//! stage, our packet hooks, conntrack, kube-proxy and any CNI, sees the backend pod, and
//! policy judges the backend. recvmsg and getpeername translate back, so the application
//! sees the address it asked for.

use aya_ebpf::{
    bindings::{__sk_buff, bpf_sock_addr},
    helpers::generated::{
        bpf_get_netns_cookie, bpf_get_prandom_u32, bpf_get_socket_cookie, bpf_ktime_get_ns,
        bpf_skb_load_bytes,
    },
    macros::{cgroup_skb, cgroup_sock_addr},
    maps::lpm_trie::Key,
    programs::{SkBuffContext, SockAddrContext},
};
use enforcer_common::*;

use crate::{
    endpoint,
    maps::{
        config, count, AFFINITY, BACKENDS, CONNTRACK, EVENTS, IPCACHE, POLICY, REVNAT, SERVICES,
    },
};

const ALLOW: i32 = 1;
const DROP: i32 = 0;

const ETH_P_IP: u16 = 0x0800;
/// The loopback device's index, the same in every network namespace.
const LOOPBACK_IFINDEX: u32 = 1;
const ETH_P_IPV6: u16 = 0x86DD;

const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

#[inline(always)]
fn has_ports(proto: u8) -> bool {
    proto == PROTO_TCP || proto == PROTO_UDP || proto == PROTO_SCTP
}

/// A packet (or a socket call) seen from its endpoint: the pod's side is `local`.
#[derive(Clone, Copy)]
pub struct Flow {
    remote: [u8; 16],
    local: [u8; 16],
    local_port: u16,
    remote_port: u16,
    /// Destination port of the packet (the port a policy names).
    dport: u16,
    protocol: u8,
    direction: u8,
    tcp_flags: u8,
    _pad: [u8; 7],
}

impl Flow {
    /// An empty flow in `direction` (socket hooks). Flows live on the program's stack: a
    /// shared per-CPU buffer could be overwritten by a softirq (packet hooks) interrupting a
    /// program on the same CPU.
    #[inline(always)]
    fn new(direction: u8) -> Flow {
        Flow {
            remote: [0; 16],
            local: [0; 16],
            local_port: 0,
            remote_port: 0,
            dport: 0,
            protocol: 0,
            direction,
            tcp_flags: 0,
            _pad: [0; 7],
        }
    }
}

/// Copy 16 bytes at `off` of the packet into `dst` (constant size, as the verifier wants).
#[inline(always)]
fn load16(ctx: &SkBuffContext, off: u32, dst: &mut [u8; 16]) -> Option<()> {
    // SAFETY: the helper bounds-checks the packet and writes exactly 16 bytes into `dst`.
    let r =
        unsafe { bpf_skb_load_bytes(ctx.skb.skb as *const _, off, dst.as_mut_ptr() as *mut _, 16) };
    if r == 0 {
        Some(())
    } else {
        None
    }
}

/// Parse L3/L4 headers into `f`, oriented by `f.direction`.
#[inline(always)]
fn parse(ctx: &SkBuffContext, f: &mut Flow) -> Option<()> {
    // SAFETY: reading a field of the program's own context.
    let ethertype = u16::from_be(unsafe { (*ctx.skb.skb).protocol } as u16);
    let egress = f.direction == DIR_EGRESS;
    let l4: usize;
    let mut first_fragment = true;
    f.tcp_flags = 0;
    f.local_port = 0;
    f.remote_port = 0;
    f.dport = 0;
    if ethertype == ETH_P_IP {
        let vihl: u8 = ctx.load(0).ok()?;
        let ihl = ((vihl & 0x0f) as usize) * 4;
        if ihl < 20 {
            return None;
        }
        let frag: u16 = ctx.load(6).ok()?;
        if (u16::from_be(frag) & 0x1fff) != 0 {
            first_fragment = false;
        }
        f.protocol = ctx.load(9).ok()?;
        let s: u32 = ctx.load(12).ok()?;
        let d: u32 = ctx.load(16).ok()?;
        let (l, r) = if egress { (s, d) } else { (d, s) };
        f.local = v4_mapped(l.to_ne_bytes());
        f.remote = v4_mapped(r.to_ne_bytes());
        l4 = ihl;
    } else if ethertype == ETH_P_IPV6 {
        let mut next: u8 = ctx.load(6).ok()?;
        let (lo, ro) = if egress { (8, 24) } else { (24, 8) };
        load16(ctx, lo, &mut f.local)?;
        load16(ctx, ro, &mut f.remote)?;
        let mut off: usize = 40;
        // Skip up to 6 extension headers.
        let mut i = 0;
        while i < 6 {
            match next {
                0 | 43 | 60 => {
                    // hop-by-hop, routing, destination options: (len + 1) * 8 bytes
                    let h = ctx.load::<u16>(off).ok()?.to_ne_bytes();
                    next = h[0];
                    off += (h[1] as usize + 1) * 8;
                }
                44 => {
                    // fragment header: 8 bytes
                    let h = ctx.load::<u32>(off).ok()?.to_ne_bytes();
                    next = h[0];
                    if (u16::from_be_bytes([h[2], h[3]]) & 0xfff8) != 0 {
                        first_fragment = false;
                    }
                    off += 8;
                }
                51 => {
                    // authentication header: (len + 2) * 4 bytes
                    let h = ctx.load::<u16>(off).ok()?.to_ne_bytes();
                    next = h[0];
                    off += (h[1] as usize + 2) * 4;
                }
                _ => break,
            }
            i += 1;
        }
        if off > 512 {
            return None;
        }
        f.protocol = next;
        l4 = off;
    } else {
        return None;
    }
    if first_fragment && has_ports(f.protocol) {
        let ports = ctx.load::<u32>(l4).ok()?.to_ne_bytes();
        let sport = u16::from_be_bytes([ports[0], ports[1]]);
        let dport = u16::from_be_bytes([ports[2], ports[3]]);
        f.dport = dport;
        if egress {
            f.local_port = sport;
            f.remote_port = dport;
        } else {
            f.local_port = dport;
            f.remote_port = sport;
        }
        if f.protocol == PROTO_TCP {
            f.tcp_flags = ctx.load(l4 + 13).ok()?;
        }
    }
    Some(())
}

/// A destination of a socket call that can only reach the pod's own network namespace:
/// loopback (127.0.0.0/8, ::1) and the unspecified address (0.0.0.0, ::), which the kernel
/// routes to the local host as a connect or send destination; with their IPv4-mapped forms.
/// Only for socket hooks: the socket chose it, so it goes through the loopback device
/// (the packet hooks see ifindex 1).
#[inline(always)]
fn is_loopback(a: &[u8; 16]) -> bool {
    // ::1 and ::
    let v6 = a[..15].iter().all(|b| *b == 0) && (a[15] == 1 || a[15] == 0);
    let mapped = a[..10].iter().all(|b| *b == 0) && a[10] == 0xff && a[11] == 0xff;
    // ::ffff:127.0.0.0/8 and ::ffff:0.0.0.0
    let v4 = mapped && (a[12] == 127 || a[12..].iter().all(|b| *b == 0));
    v6 || v4
}

#[inline(always)]
fn identity_of(addr: &[u8; 16]) -> IpInfo {
    let key = Key::new(128, IpKey { addr: *addr });
    match IPCACHE.get(&key) {
        Some(v) => *v,
        None => IpInfo::default(),
    }
}

#[inline(always)]
fn policy_lookup(ep: u32, identity: u32, f: &Flow) -> Option<PolicyValue> {
    let data = PolicyKey {
        endpoint: ep,
        identity,
        direction: f.direction,
        protocol: f.protocol,
        port: f.dport.to_be_bytes(),
    };
    if let Some(v) = POLICY.get(Key::new(POLICY_PREFIX_FULL, data)) {
        return Some(*v);
    }
    let any = PolicyKey {
        identity: IDENTITY_ANY,
        ..data
    };
    POLICY.get(Key::new(POLICY_PREFIX_FULL, any)).copied()
}

#[inline(always)]
fn emit(cgid: u64, ep: u32, f: &Flow, identity: u32, policy: u32, verdict: u8, reason: u8) {
    let Some(mut slot) = EVENTS.reserve::<NetEvent>(0) else {
        count(CNT_RINGBUF_DROPS);
        return;
    };
    let e = slot.as_mut_ptr();
    // SAFETY: `e` points to a reserved, exclusively owned record of the right size; every
    // field is written before submit.
    unsafe {
        (*e).kind = EVENT_NET;
        (*e).endpoint = ep;
        (*e).cgroup_id = cgid;
        (*e).peer_identity = identity;
        (*e).policy = policy;
        (*e).verdict = verdict;
        (*e).reason = reason;
        (*e).direction = f.direction;
        (*e).protocol = f.protocol;
        (*e).local_port = f.local_port;
        (*e).remote_port = f.remote_port;
        (*e).local = f.local;
        (*e).remote = f.remote;
    }
    slot.submit(0);
}

#[inline(always)]
fn ct_key(ep: u32, f: &Flow) -> CtKey {
    CtKey {
        remote: f.remote,
        endpoint: ep,
        local_port: f.local_port,
        remote_port: f.remote_port,
        protocol: f.protocol,
        _pad: [0; 3],
    }
}

#[inline(always)]
fn ct_timeout_ns(cfg: &Config, proto: u8) -> u64 {
    let s = if proto == PROTO_TCP {
        cfg.ct_timeout_tcp_s
    } else {
        cfg.ct_timeout_other_s
    };
    (s as u64) * 1_000_000_000
}

/// Outcome of a policy decision.
struct Decision {
    allow: bool,
    reason: u8,
    policy: u32,
    identity: u32,
    /// Create or refresh a conntrack entry in this direction.
    track: bool,
    /// Emit an event.
    report: bool,
}

/// The verdict for a packet of a cgroup no endpoint classifies (or a pending one): denied
/// with `CFG_DENY_UNCLASSIFIED` unless it goes through the loopback device.
#[inline(always)]
fn unclassified_packet(cfg: &Config, cgid: u64, f: &Flow, loopback: bool) -> i32 {
    if cfg.flags & CFG_DENY_UNCLASSIFIED != 0 && !loopback {
        count(CNT_NET_DENY);
        emit(
            cgid,
            0,
            f,
            IDENTITY_WORLD,
            0,
            VERDICT_DENY,
            REASON_UNCLASSIFIED,
        );
        return DROP;
    }
    ALLOW
}

/// Steps 3-7 for a flow of a classified endpoint. `packet` is false for socket hooks,
/// which do not refresh state.
#[inline(always)]
fn decide(cfg: &Config, ep: &Endpoint, f: &Flow, packet: bool, loopback: bool) -> Decision {
    let mut d = Decision {
        allow: true,
        reason: REASON_NOT_ISOLATED,
        policy: 0,
        identity: IDENTITY_WORLD,
        track: false,
        report: false,
    };
    if ep.flags & EP_NET_UNMANAGED != 0 {
        return d;
    }
    if loopback {
        d.reason = REASON_LOOPBACK;
        return d;
    }
    let (mine, other) = if f.direction == DIR_INGRESS {
        (EP_INGRESS_ISOLATED, EP_EGRESS_ISOLATED)
    } else {
        (EP_EGRESS_ISOLATED, EP_INGRESS_ISOLATED)
    };
    let isolated = ep.flags & mine != 0;
    if !isolated && ep.flags & other == 0 {
        return d;
    }

    // Conntrack.
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let key = ct_key(ep.id, f);
    let mut known = false;
    if let Some(ct) = CONNTRACK.get_ptr_mut(key) {
        // SAFETY: LRU entry of plain data; a concurrent update can at worst make us
        // re-evaluate policy.
        let ct = unsafe { &mut *ct };
        if now.wrapping_sub(ct.last_seen_ns) < ct_timeout_ns(cfg, f.protocol) {
            // A TCP SYN without ACK opens a new connection, never a reply.
            let new_syn = f.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
            if ct.origin != f.direction && !new_syn {
                if packet {
                    ct.last_seen_ns = now;
                }
                d.reason = REASON_REPLY;
                return d;
            }
            if ct.origin == f.direction && (!isolated || ct.revision == cfg.policy_revision) {
                if packet {
                    ct.last_seen_ns = now;
                }
                d.reason = if isolated {
                    REASON_POLICY
                } else {
                    REASON_NOT_ISOLATED
                };
                return d;
            }
            known = ct.origin == f.direction;
        }
    }

    d.track = true;
    d.report = !known;
    if !isolated {
        return d;
    }
    let info = identity_of(&f.remote);
    let identity = info.identity;
    d.identity = identity;
    // Ingress from this node (kubelet probes) is always allowed, as upstream documents;
    // egress to the node's addresses is judged like any address.
    if f.direction == DIR_INGRESS && info.flags & IP_HOST != 0 {
        d.reason = REASON_HOST;
        return d;
    }
    // The pod's own address: socket hooks cannot compare with a source address yet. Only
    // there: a packet claiming the pod's address as its peer proves nothing (forgeable);
    // real traffic to itself went through the loopback device.
    if !packet && info.endpoint == ep.id {
        d.reason = REASON_LOOPBACK;
        return d;
    }
    if let Some(v) = policy_lookup(ep.id, identity, f) {
        d.reason = REASON_POLICY;
        d.policy = v.policy;
        return d;
    }
    d.allow = false;
    d.track = false;
    d.report = true;
    d.reason = REASON_DEFAULT_DENY;
    d
}

#[inline(always)]
fn track(cfg: &Config, ep: u32, f: &Flow) {
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let v = CtValue {
        last_seen_ns: now,
        revision: cfg.policy_revision,
        origin: f.direction,
        _pad: [0; 3],
    };
    if CONNTRACK.insert(ct_key(ep, f), v, 0).is_err() {
        count(CNT_CT_INSERT_ERRORS);
    }
}

#[inline(always)]
fn skb_verdict(ctx: &SkBuffContext, direction: u8) -> i32 {
    let Some(cfg) = config() else {
        return ALLOW;
    };
    // Not zeroed first: zeroing compiles to a byte-wise memset call (about 250
    // instructions per packet). `parse` writes every field that is read afterwards (all but
    // `_pad`), before any of them is read.
    let mut slot = core::mem::MaybeUninit::<Flow>::uninit();
    // SAFETY: every field is plain data valid for any bit pattern; see above for why no
    // field is read before it is written.
    let f = unsafe { &mut *slot.as_mut_ptr() };
    f.direction = direction;
    let skb: *mut __sk_buff = ctx.skb.skb;
    // Loopback is the device the packet went through, never what its (forgeable) header
    // fields say: ifindex 1 is the loopback device of every network namespace.
    // SAFETY: reading a field of the program's own context.
    let loopback = unsafe { (*skb).ifindex } == LOOPBACK_IFINDEX;
    let (cgid, ep) = endpoint::of_skb(skb, cfg.root_cgroup_id, cfg.root_level);
    if parse(ctx, f).is_none() {
        count(CNT_PARSE_ERRORS);
        // Not IP, or unparsable: an isolated pod gets nothing that policy cannot describe.
        // The flags go through memory: without it the compiler computes on the register
        // that holds the payload of a `Some`, which on the `None` path is a pointer, and
        // the verifier rejects the program.
        let flags = match ep {
            Some(e) => e.flags,
            None => 0,
        };
        // SAFETY: a read of a local.
        let flags = unsafe { core::ptr::read_volatile(&flags) };
        return if flags & (EP_INGRESS_ISOLATED | EP_EGRESS_ISOLATED) != 0 {
            DROP
        } else {
            ALLOW
        };
    }
    let Some(ep) = ep else {
        return unclassified_packet(cfg, cgid, f, loopback);
    };
    // A pending entry carries guards only: the network sees an unclassified cgroup.
    if ep.flags & EP_PENDING != 0 {
        return unclassified_packet(cfg, cgid, f, loopback);
    }
    let d = decide(cfg, &ep, f, true, loopback);
    if d.allow {
        if d.track {
            track(cfg, ep.id, f);
        }
        if d.report && cfg.flags & CFG_EVENTS_ALLOW != 0 {
            emit(
                cgid,
                ep.id,
                f,
                d.identity,
                d.policy,
                VERDICT_ALLOW,
                d.reason,
            );
        }
        count(CNT_NET_ALLOW);
        return ALLOW;
    }
    count(CNT_NET_DENY);
    if cfg.flags & CFG_NET_AUDIT != 0 || ep.flags & EP_NET_AUDIT != 0 {
        emit(cgid, ep.id, f, d.identity, 0, VERDICT_AUDIT, d.reason);
        track(cfg, ep.id, f);
        return ALLOW;
    }
    emit(cgid, ep.id, f, d.identity, 0, VERDICT_DENY, d.reason);
    DROP
}

#[cgroup_skb]
pub fn net_ingress(ctx: SkBuffContext) -> i32 {
    skb_verdict(&ctx, DIR_INGRESS)
}

#[cgroup_skb]
pub fn net_egress(ctx: SkBuffContext) -> i32 {
    skb_verdict(&ctx, DIR_EGRESS)
}

/// Read the destination of a socket call (`user_ip4`/`user_ip6`, `user_port`).
#[inline(always)]
fn sock_dest(sa: *mut bpf_sock_addr, v6: bool) -> ([u8; 16], u16) {
    // SAFETY: reads of the program's own context fields.
    unsafe {
        let mut a = [0u8; 16];
        if v6 {
            let w = (*sa).user_ip6;
            a[0..4].copy_from_slice(&w[0].to_ne_bytes());
            a[4..8].copy_from_slice(&w[1].to_ne_bytes());
            a[8..12].copy_from_slice(&w[2].to_ne_bytes());
            a[12..16].copy_from_slice(&w[3].to_ne_bytes());
        } else {
            a = v4_mapped((*sa).user_ip4.to_ne_bytes());
        }
        (a, u16::from_be((*sa).user_port as u16))
    }
}

/// Rewrite the destination of a socket call. An IPv4 socket only ever gets IPv4 addresses
/// (frontends and backends of one set share the family; the agent guarantees it).
#[inline(always)]
fn set_sock_dest(sa: *mut bpf_sock_addr, v6: bool, addr: &[u8; 16], port: [u8; 2]) {
    // SAFETY: writes of context fields the verifier allows these program types to write.
    unsafe {
        if v6 {
            (*sa).user_ip6[0] = u32::from_ne_bytes([addr[0], addr[1], addr[2], addr[3]]);
            (*sa).user_ip6[1] = u32::from_ne_bytes([addr[4], addr[5], addr[6], addr[7]]);
            (*sa).user_ip6[2] = u32::from_ne_bytes([addr[8], addr[9], addr[10], addr[11]]);
            (*sa).user_ip6[3] = u32::from_ne_bytes([addr[12], addr[13], addr[14], addr[15]]);
        } else {
            (*sa).user_ip4 = u32::from_ne_bytes([addr[12], addr[13], addr[14], addr[15]]);
        }
        (*sa).user_port = u16::from_ne_bytes(port) as u32;
    }
}

/// Outcome of looking a destination up among the Service frontends.
enum Translation {
    /// Not a frontend.
    None,
    /// A frontend with no ready backend.
    NoBackend,
    /// A frontend, and the backend chosen for this call.
    To(Backend),
}

/// Choose a backend of `svc`: the client's affine backend (sessionAffinity ClientIP), the
/// socket's own for unconnected datagrams, else a random one.
#[inline(always)]
fn pick_backend(sa: *mut bpf_sock_addr, svc: &SvcValue, sticky_socket: bool) -> Option<Backend> {
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let (kind, cookie, timeout_ns) = if svc.flags & SVC_AFFINITY != 0 {
        // SAFETY: helper on the program's own context.
        let c = unsafe { bpf_get_netns_cookie(sa as *mut _) };
        (
            AFFINITY_CLIENT,
            c,
            svc.affinity_timeout_s as u64 * 1_000_000_000,
        )
    } else if sticky_socket {
        // SAFETY: as above.
        let c = unsafe { bpf_get_socket_cookie(sa as *mut _) };
        (AFFINITY_SOCKET, c, u64::MAX)
    } else {
        (0, 0, 0)
    };
    let akey = AffinityKey {
        cookie,
        set: svc.set,
        kind,
    };
    if kind != 0 {
        if let Some(v) = AFFINITY.get_ptr_mut(akey) {
            // SAFETY: LRU entry of plain data; a racing update at worst picks anew.
            let v = unsafe { &mut *v };
            if now.wrapping_sub(v.last_seen_ns) < timeout_ns {
                v.last_seen_ns = now;
                return Some(v.backend);
            }
        }
    }
    // SAFETY: helper without arguments.
    let r = unsafe { bpf_get_prandom_u32() };
    let slot = r % svc.count;
    // SAFETY: values are copied out at once.
    let b = match unsafe { BACKENDS.get(BackendKey { set: svc.set, slot }) } {
        Some(b) => *b,
        // The agent is shrinking the set right now: slot 0 stays valid longest.
        None => *unsafe {
            BACKENDS.get(BackendKey {
                set: svc.set,
                slot: 0,
            })
        }?,
    };
    if kind != 0 {
        let v = AffinityValue {
            last_seen_ns: now,
            backend: b,
        };
        let _ = AFFINITY.insert(akey, v, 0);
    }
    Some(b)
}

#[inline(always)]
fn translate(sa: *mut bpf_sock_addr, f: &Flow, sticky_socket: bool) -> Translation {
    let key = SvcKey {
        addr: f.remote,
        port: f.dport.to_be_bytes(),
        protocol: f.protocol,
        _pad: 0,
    };
    // SAFETY: the value is copied out at once.
    let Some(svc) = (unsafe { SERVICES.get(key).copied() }) else {
        return Translation::None;
    };
    if svc.count == 0 {
        return Translation::NoBackend;
    }
    match pick_backend(sa, &svc, sticky_socket) {
        Some(b) => Translation::To(b),
        None => Translation::NoBackend,
    }
}

/// connect()/sendmsg(): translate a Service frontend, then judge the destination. Return 1
/// to let the call proceed, 0 to fail it with EPERM.
#[inline(always)]
fn sock_verdict(ctx: &SockAddrContext, v6: bool, sendmsg: bool) -> i32 {
    let Some(cfg) = config() else {
        return ALLOW;
    };
    let sa = ctx.sock_addr;
    let mut f = Flow::new(DIR_EGRESS);
    // SAFETY: reads of the program's own context fields.
    unsafe {
        f.protocol = (*sa).protocol as u8;
        let sk = (*sa).__bindgen_anon_1.sk;
        if !sk.is_null() {
            f.local_port = (*sk).src_port as u16;
        }
    }
    if !has_ports(f.protocol) {
        return ALLOW;
    }
    let (remote, dport) = sock_dest(sa, v6);
    f.remote = remote;
    f.dport = dport;
    f.remote_port = dport;
    f.tcp_flags = if f.protocol == PROTO_TCP { TCP_SYN } else { 0 };
    let (cgid, ep) = endpoint::of_current(cfg.root_cgroup_id, cfg.root_level);
    // hostNetwork pods (and the agent itself) are untouched: no translation, no policy.
    if let Some(e) = ep {
        if e.flags & EP_NET_UNMANAGED != 0 {
            return ALLOW;
        }
    }
    match translate(sa, &f, sendmsg) {
        Translation::None => {}
        Translation::NoBackend => {
            count(CNT_SVC_NO_BACKEND);
            let id = ep.map(|e| e.id).unwrap_or(0);
            emit(
                cgid,
                id,
                &f,
                IDENTITY_WORLD,
                0,
                VERDICT_DENY,
                REASON_NO_BACKEND,
            );
            return DROP;
        }
        Translation::To(b) => {
            count(CNT_SVC_TRANSLATED);
            // SAFETY: helper on the program's own context.
            let cookie = unsafe { bpf_get_socket_cookie(sa as *mut _) };
            let rk = RevKey { cookie, backend: b };
            let rv = RevValue {
                addr: f.remote,
                port: f.dport.to_be_bytes(),
                _pad: [0; 2],
            };
            let _ = REVNAT.insert(rk, rv, 0);
            set_sock_dest(sa, v6, &b.addr, b.port);
            f.remote = b.addr;
            f.dport = u16::from_be_bytes(b.port);
            f.remote_port = f.dport;
        }
    }
    let pending = match ep {
        Some(e) => e.flags & EP_PENDING != 0,
        None => true,
    };
    // SAFETY: a read of a local (through memory, see the packet path).
    let pending = unsafe { core::ptr::read_volatile(&pending) };
    let Some(ep) = ep.filter(|_| !pending) else {
        if cfg.flags & CFG_DENY_UNCLASSIFIED != 0 && !is_loopback(&f.remote) {
            emit(
                cgid,
                0,
                &f,
                IDENTITY_WORLD,
                0,
                VERDICT_DENY,
                REASON_UNCLASSIFIED,
            );
            return DROP;
        }
        return ALLOW;
    };
    let d = decide(cfg, &ep, &f, false, is_loopback(&f.remote));
    if d.allow || cfg.flags & CFG_NET_AUDIT != 0 || ep.flags & EP_NET_AUDIT != 0 {
        // The packet path reports and tracks the flow.
        return ALLOW;
    }
    emit(cgid, ep.id, &f, d.identity, 0, VERDICT_DENY, d.reason);
    DROP
}

/// recvmsg()/getpeername(): show the Service frontend instead of the backend this socket
/// was translated to. These hooks cannot deny; they always return 1.
#[inline(always)]
fn sock_reverse(ctx: &SockAddrContext, v6: bool) -> i32 {
    let sa = ctx.sock_addr;
    let (addr, port) = sock_dest(sa, v6);
    // SAFETY: helper on the program's own context.
    let cookie = unsafe { bpf_get_socket_cookie(sa as *mut _) };
    let key = RevKey {
        cookie,
        backend: Backend {
            addr,
            port: port.to_be_bytes(),
            _pad: [0; 2],
            _pad2: 0,
        },
    };
    // SAFETY: the value is copied out at once.
    if let Some(v) = unsafe { REVNAT.get(key).copied() } {
        set_sock_dest(sa, v6, &v.addr, v.port);
        count(CNT_SVC_REVERSED);
    }
    ALLOW
}

#[cgroup_sock_addr(connect4)]
pub fn net_connect4(ctx: SockAddrContext) -> i32 {
    sock_verdict(&ctx, false, false)
}

#[cgroup_sock_addr(connect6)]
pub fn net_connect6(ctx: SockAddrContext) -> i32 {
    sock_verdict(&ctx, true, false)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn net_sendmsg4(ctx: SockAddrContext) -> i32 {
    sock_verdict(&ctx, false, true)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn net_sendmsg6(ctx: SockAddrContext) -> i32 {
    sock_verdict(&ctx, true, true)
}

#[cgroup_sock_addr(recvmsg4)]
pub fn net_recvmsg4(ctx: SockAddrContext) -> i32 {
    sock_reverse(&ctx, false)
}

#[cgroup_sock_addr(recvmsg6)]
pub fn net_recvmsg6(ctx: SockAddrContext) -> i32 {
    sock_reverse(&ctx, true)
}

#[cgroup_sock_addr(getpeername4)]
pub fn net_getpeername4(ctx: SockAddrContext) -> i32 {
    sock_reverse(&ctx, false)
}

#[cgroup_sock_addr(getpeername6)]
pub fn net_getpeername6(ctx: SockAddrContext) -> i32 {
    sock_reverse(&ctx, true)
}
