//! Verdict and guard events from the kernel's ring buffer: decoded (and validated: they are
//! bytes from kernel memory), counted in metrics, logged with rate limiting, and offered to
//! subscribers (the demo and tests print them).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv6Addr},
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use enforcer_common::*;
use tokio::{io::unix::AsyncFd, sync::broadcast};

use super::metrics::Metrics;
use crate::model::ObjectRef;

/// Names the agent knows, to make events readable.
#[derive(Default, Clone)]
pub struct Names {
    pub endpoints: BTreeMap<u32, ObjectRef>,
    pub identities: BTreeMap<u32, String>,
    pub policies: BTreeMap<u32, ObjectRef>,
    /// cgroup id -> pod, for events of processes whose cgroup resolved to no endpoint.
    pub cgroups: BTreeMap<u64, ObjectRef>,
    /// Addresses of this node's pods: a peer on the node is named as its pod, not as its
    /// identity (which stands for every pod with the same policy-relevant labels).
    pub local_ips: BTreeMap<IpAddr, ObjectRef>,
    /// This node's own addresses (named "node").
    pub node_ips: BTreeSet<IpAddr>,
}

/// A decoded event.
#[derive(Clone, Debug)]
pub enum Event {
    Net(NetEvent),
    Guard(GuardEvent),
}

pub fn decode(bytes: &[u8]) -> Option<Event> {
    if bytes.len() < 4 {
        return None;
    }
    let kind = u32::from_ne_bytes(bytes[0..4].try_into().ok()?);
    match kind {
        EVENT_NET if bytes.len() >= size_of::<NetEvent>() => {
            // SAFETY: length checked; NetEvent is plain data valid for any bit pattern.
            let e: NetEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
            Some(Event::Net(e))
        }
        EVENT_GUARD if bytes.len() >= size_of::<GuardEvent>() => {
            // SAFETY: as above.
            let e: GuardEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
            Some(Event::Guard(e))
        }
        _ => None,
    }
}

pub fn addr(a: &[u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(*a);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

fn sock(a: IpAddr, port: u16) -> String {
    match a {
        IpAddr::V4(v4) if port != 0 => format!("{v4}:{port}"),
        IpAddr::V6(v6) if port != 0 => format!("[{v6}]:{port}"),
        other => other.to_string(),
    }
}

pub fn proto_name(p: u8) -> String {
    match p {
        PROTO_TCP => "tcp".into(),
        PROTO_UDP => "udp".into(),
        PROTO_SCTP => "sctp".into(),
        PROTO_ICMP => "icmp".into(),
        PROTO_ICMPV6 => "icmpv6".into(),
        n => format!("proto-{n}"),
    }
}

pub fn verdict_name(v: u8) -> &'static str {
    match v {
        VERDICT_ALLOW => "allow",
        VERDICT_DENY => "deny",
        VERDICT_AUDIT => "audit",
        _ => "unknown",
    }
}

pub fn reason_name(r: u8) -> &'static str {
    match r {
        REASON_POLICY => "policy",
        REASON_DEFAULT_DENY => "default-deny",
        REASON_UNCLASSIFIED => "unclassified-cgroup",
        REASON_NOT_ISOLATED => "not-isolated",
        REASON_REPLY => "reply",
        REASON_HOST => "node",
        REASON_LOOPBACK => "loopback",
        REASON_NO_BACKEND => "service-without-backend",
        _ => "unknown",
    }
}

pub fn direction_name(d: u8) -> &'static str {
    if d == DIR_INGRESS {
        "ingress"
    } else {
        "egress"
    }
}

pub use crate::guards::{GUARD_NAMES, guard_name};

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// A network event with its names resolved.
struct NetView {
    /// The pod whose program saw it.
    pod: String,
    src: String,
    dst: String,
    /// The peer's name (a pod of this node, "node", "world" or its identity), if known.
    peer: Option<String>,
    /// The policy that decided, when a policy entry did.
    policy: Option<String>,
}

fn net_view(e: &NetEvent, names: &Names) -> NetView {
    let pod = names
        .endpoints
        .get(&e.endpoint)
        .map(|p| p.to_string())
        .or_else(|| names.cgroups.get(&e.cgroup_id).map(|p| p.to_string()))
        .unwrap_or_else(|| format!("cgroup:{}", e.cgroup_id));
    let remote_ip = addr(&e.remote);
    // The kernel resolves the peer's identity only when policy needs it: for a direction
    // the pod is not isolated in, "world" would be a guess.
    let resolved = !matches!(e.reason, REASON_NOT_ISOLATED | REASON_LOOPBACK);
    let peer = match names.local_ips.get(&remote_ip) {
        Some(p) => Some(p.to_string()),
        None if names.node_ips.contains(&remote_ip) => Some("node".to_string()),
        None => match e.peer_identity {
            IDENTITY_WORLD if !resolved => None,
            IDENTITY_WORLD => Some("world".to_string()),
            i => Some(
                names
                    .identities
                    .get(&i)
                    .cloned()
                    .unwrap_or_else(|| format!("identity:{i}")),
            ),
        },
    };
    let local = sock(addr(&e.local), e.local_port);
    let remote = sock(remote_ip, e.remote_port);
    let (src, dst) = if e.direction == DIR_INGRESS {
        (remote, local)
    } else {
        (local, remote)
    };
    let policy = match (e.reason, names.policies.get(&e.policy)) {
        (REASON_POLICY, Some(p)) => Some(p.to_string()),
        _ => None,
    };
    NetView {
        pod,
        src,
        dst,
        peer,
        policy,
    }
}

fn guard_pod(e: &GuardEvent, names: &Names) -> Option<String> {
    names
        .endpoints
        .get(&e.endpoint)
        .map(|p| p.to_string())
        .or_else(|| names.cgroups.get(&e.cgroup_id).map(|p| p.to_string()))
}

fn tier_name(t: u8) -> &'static str {
    if t == TIER_LSM { "lsm" } else { "fallback" }
}

impl Event {
    /// One human-readable line.
    pub fn render(&self, names: &Names) -> String {
        match self {
            Event::Net(e) => {
                let v = net_view(e, names);
                let remote = match &v.peer {
                    Some(p) => format!(" ({p})"),
                    None => String::new(),
                };
                let (src, dst) = if e.direction == DIR_INGRESS {
                    (
                        format!("{}{remote}", v.src),
                        format!("{} ({})", v.dst, v.pod),
                    )
                } else {
                    (
                        format!("{} ({})", v.src, v.pod),
                        format!("{}{remote}", v.dst),
                    )
                };
                let by = match &v.policy {
                    Some(p) => format!("policy {p}"),
                    None => reason_name(e.reason).to_string(),
                };
                format!(
                    "{} {} {} {src} -> {dst} by {by}",
                    verdict_name(e.verdict),
                    direction_name(e.direction),
                    proto_name(e.protocol),
                )
            }
            Event::Guard(e) => {
                let who = guard_pod(e, names).unwrap_or_else(|| "unclassified pod".to_string());
                let detail = cstr(&e.detail);
                format!(
                    "{} guard {} in {who} (cgroup {}): pid {} comm {:?} uid {} arg {}{}{} [tier {}]",
                    verdict_name(e.verdict),
                    guard_name(e.guard),
                    e.cgroup_id,
                    e.pid,
                    cstr(&e.comm),
                    e.uid,
                    e.arg,
                    if detail.is_empty() { "" } else { " " },
                    detail,
                    tier_name(e.tier),
                )
            }
        }
    }

    /// The same as one JSON object (`enforcer observe --json`); `line` is [`Event::render`].
    pub fn to_json(&self, names: &Names, line: &str) -> serde_json::Value {
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        match self {
            Event::Net(e) => {
                let v = net_view(e, names);
                serde_json::json!({
                    "time": time,
                    "type": "network",
                    "verdict": verdict_name(e.verdict),
                    "direction": direction_name(e.direction),
                    "protocol": proto_name(e.protocol),
                    "pod": v.pod,
                    "source": v.src,
                    "destination": v.dst,
                    "peer": v.peer,
                    "policy": v.policy,
                    "reason": reason_name(e.reason),
                    "line": line,
                })
            }
            Event::Guard(e) => serde_json::json!({
                "time": time,
                "type": "guard",
                "verdict": verdict_name(e.verdict),
                "guard": guard_name(e.guard),
                "pod": guard_pod(e, names),
                "cgroup": e.cgroup_id,
                "pid": e.pid,
                "comm": cstr(&e.comm),
                "uid": e.uid,
                "arg": e.arg,
                "detail": cstr(&e.detail),
                "tier": tier_name(e.tier),
                "line": line,
            }),
        }
    }
}

/// Token bucket for log lines.
struct RateLimit {
    per_sec: f64,
    tokens: f64,
    last: Instant,
    suppressed: u64,
}

impl RateLimit {
    fn new(per_sec: f64) -> Self {
        Self {
            per_sec,
            tokens: per_sec,
            last: Instant::now(),
            suppressed: 0,
        }
    }

    /// Whether to log now; returns how many were suppressed before this one.
    fn admit(&mut self) -> Option<u64> {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.per_sec)
            .min(self.per_sec);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

/// Count one event in metrics.
fn count(metrics: &Metrics, ev: &Event) {
    match ev {
        Event::Net(e) => metrics.inc(
            "enforcer_network_verdicts_total",
            "Network verdict events by direction, verdict and reason.",
            &[
                ("direction", direction_name(e.direction)),
                ("verdict", verdict_name(e.verdict)),
                ("reason", reason_name(e.reason)),
            ],
            1.0,
        ),
        Event::Guard(e) => metrics.inc(
            "enforcer_guard_events_total",
            "Runtime guard hits by guard, verdict and tier.",
            &[
                ("guard", guard_name(e.guard)),
                ("verdict", verdict_name(e.verdict)),
                ("tier", tier_name(e.tier)),
            ],
            1.0,
        ),
    }
}

/// Drain the ring buffer forever.
pub async fn run(
    ring: RingBuf<MapData>,
    names: Arc<RwLock<Names>>,
    metrics: Arc<Metrics>,
    tx: broadcast::Sender<(Event, String)>,
    log_per_sec: f64,
) -> std::io::Result<()> {
    // SAFETY: the ring buffer owns its map fd for its whole life, and the AsyncFd owns the
    // ring buffer, so the registered descriptor stays open and unchanged.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)?;
    let mut limit = RateLimit::new(log_per_sec);
    loop {
        let mut guard = fd.readable_mut().await?;
        let ring = guard.get_inner_mut();
        while let Some(item) = ring.next() {
            let Some(ev) = decode(&item) else {
                metrics.inc(
                    "enforcer_events_malformed_total",
                    "Ring buffer records that did not decode.",
                    &[],
                    1.0,
                );
                continue;
            };
            drop(item);
            count(&metrics, &ev);
            let line = {
                let n = names.read().unwrap_or_else(|e| e.into_inner());
                ev.render(&n)
            };
            // Allow events only exist when the operator asked for them (CFG_EVENTS_ALLOW):
            // info; denials and audits: warn. Both share the rate limit.
            let allowed = matches!(&ev, Event::Net(e) if e.verdict == VERDICT_ALLOW);
            if let Some(suppressed) = limit.admit() {
                if suppressed > 0 {
                    tracing::warn!("{suppressed} events not logged (rate limit)");
                }
                if allowed {
                    tracing::info!("{line}");
                } else {
                    tracing::warn!("{line}");
                }
            }
            let _ = tx.send((ev, line));
        }
        guard.clear_ready();
        // Yield between bursts so a flood cannot starve the reconciler.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_and_renders_a_net_event() {
        let e = NetEvent {
            kind: EVENT_NET,
            endpoint: 3,
            cgroup_id: 99,
            peer_identity: 17,
            policy: 2,
            verdict: VERDICT_ALLOW,
            reason: REASON_POLICY,
            direction: DIR_INGRESS,
            protocol: PROTO_TCP,
            local_port: 80,
            remote_port: 40000,
            local: v4_mapped([10, 0, 0, 2]),
            remote: v4_mapped([10, 0, 0, 1]),
        };
        // SAFETY: reading the bytes of a plain-data struct.
        let bytes = unsafe {
            std::slice::from_raw_parts((&e as *const NetEvent).cast::<u8>(), size_of::<NetEvent>())
        };
        let Some(Event::Net(d)) = decode(bytes) else {
            panic!("not decoded")
        };
        assert_eq!(d, e);
        let mut names = Names::default();
        names.endpoints.insert(
            3,
            ObjectRef {
                namespace: "x".into(),
                name: "b".into(),
            },
        );
        names.identities.insert(17, "pods{app=foo}".into());
        names.policies.insert(
            2,
            ObjectRef {
                namespace: "x".into(),
                name: "allow-foo".into(),
            },
        );
        assert_eq!(
            Event::Net(d).render(&names),
            "allow ingress tcp 10.0.0.1:40000 (pods{app=foo}) -> 10.0.0.2:80 (x/b) by policy x/allow-foo"
        );
        assert!(decode(&bytes[..10]).is_none());
        assert!(decode(&[9, 0, 0, 0]).is_none());

        // A peer on this node is named as its pod rather than as its identity.
        names.local_ips.insert(
            "10.0.0.1".parse().unwrap(),
            ObjectRef {
                namespace: "x".into(),
                name: "a".into(),
            },
        );
        assert_eq!(
            Event::Net(d).render(&names),
            "allow ingress tcp 10.0.0.1:40000 (x/a) -> 10.0.0.2:80 (x/b) by policy x/allow-foo"
        );
        // Not isolated: the kernel did not resolve the peer, so it is not called "world".
        let open = NetEvent {
            reason: REASON_NOT_ISOLATED,
            peer_identity: IDENTITY_WORLD,
            direction: DIR_EGRESS,
            remote: v4_mapped([192, 0, 2, 7]),
            ..d
        };
        assert_eq!(
            Event::Net(open).render(&names),
            "allow egress tcp 10.0.0.2:80 (x/b) -> 192.0.2.7:40000 by not-isolated"
        );
        let denied = NetEvent {
            verdict: VERDICT_DENY,
            reason: REASON_DEFAULT_DENY,
            ..open
        };
        assert_eq!(
            Event::Net(denied).render(&names),
            "deny egress tcp 10.0.0.2:80 (x/b) -> 192.0.2.7:40000 (world) by default-deny"
        );
    }

    #[test]
    fn rate_limit_suppresses_and_reports() {
        let mut r = RateLimit::new(2.0);
        assert_eq!(r.admit(), Some(0));
        assert_eq!(r.admit(), Some(0));
        assert_eq!(r.admit(), None);
        assert_eq!(r.admit(), None);
        r.last -= Duration::from_secs(1);
        assert_eq!(r.admit(), Some(2));
    }
}
