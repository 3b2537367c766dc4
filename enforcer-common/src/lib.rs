//! The kernel/user ABI of enforcer: every map key, map value and event record that crosses
//! the boundary between `enforcer-ebpf` and `enforcer-user` is defined here, once.
//!
//! Rules for this crate (checked by the const assertions at the bottom and by the
//! `abi` test in `enforcer-user`, which compares these sizes with the map definitions in
//! the compiled eBPF object):
//! - every type is `#[repr(C)]` with explicit padding fields, so there is no implicit
//!   padding and no uninitialised byte ever reaches the kernel;
//! - no `bool` and no Rust `enum` in anything the kernel writes: flags are `u32`/`u8`
//!   bit sets and discriminants are plain integers validated when read;
//! - addresses are stored as 16 bytes; IPv4 uses the IPv4-mapped IPv6 form
//!   (`::ffff:a.b.c.d`), so one LPM trie serves both families.
#![no_std]

/// Bumped whenever a layout below changes. Pinned maps of another version are not reused.
pub const ABI_VERSION: u32 = 1;

// ---------------------------------------------------------------------------------------
// Configuration (Array map `CONFIG`, one entry)
// ---------------------------------------------------------------------------------------

/// Deny traffic of cgroups below the attach root that no endpoint entry classifies
/// (a pod the agent has not programmed yet). Without it such traffic passes.
pub const CFG_DENY_UNCLASSIFIED: u32 = 1 << 0;
/// Network audit mode: policy denials are reported but the packet passes.
pub const CFG_NET_AUDIT: u32 = 1 << 1;
/// Emit an allow event for every new flow (not only denials).
pub const CFG_EVENTS_ALLOW: u32 = 1 << 2;

/// Global datapath settings.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// cgroup id of the cgroup the programs are attached to (the pods' subtree root).
    pub root_cgroup_id: u64,
    /// `CFG_*` bits.
    pub flags: u32,
    /// cgroup v2 level of that root. Ancestor lookups start one level below it.
    pub root_level: u32,
    /// Incremented by the agent on every policy change; conntrack entries created under an
    /// older revision are re-checked against policy in their original direction.
    pub policy_revision: u32,
    /// Conntrack idle timeout for TCP, seconds.
    pub ct_timeout_tcp_s: u32,
    /// Conntrack idle timeout for UDP, SCTP and others, seconds.
    pub ct_timeout_other_s: u32,
    /// Guards (`GUARD_*`) enforced on cgroups below the root that no endpoint classifies.
    pub unclassified_guards: u32,
}

/// How many levels below the attach root the datapath searches for a classified ancestor.
/// kubelet layouts put containers at most 3 levels below `kubepods`; the margin covers
/// nested cgroups that a workload creates itself.
pub const MAX_ANCESTOR_DEPTH: u32 = 8;

// ---------------------------------------------------------------------------------------
// Endpoints (HashMap `ENDPOINTS`, key: cgroup id u64)
// ---------------------------------------------------------------------------------------

/// The pod is isolated for ingress (a NetworkPolicy with policyType Ingress selects it).
pub const EP_INGRESS_ISOLATED: u32 = 1 << 0;
/// The pod is isolated for egress.
pub const EP_EGRESS_ISOLATED: u32 = 1 << 1;
/// Network policy does not apply to this cgroup (host-network pods): everything passes.
pub const EP_NET_UNMANAGED: u32 = 1 << 2;

/// What the datapath knows about one pod, keyed by the pod's cgroup id (and optionally its
/// containers' cgroup ids). Container cgroups that have no entry resolve to the nearest
/// classified ancestor.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Endpoint {
    /// Endpoint id assigned by the agent (never 0 for a real pod).
    pub id: u32,
    /// `EP_*` bits.
    pub flags: u32,
    /// Runtime guards enforced for this pod (`GUARD_*` bits).
    pub guards_enforce: u32,
    /// Runtime guards only audited for this pod (`GUARD_*` bits).
    pub guards_audit: u32,
}

// ---------------------------------------------------------------------------------------
// IP -> identity (LpmTrie `IPCACHE`)
// ---------------------------------------------------------------------------------------

/// Identity of an address no entry matches.
pub const IDENTITY_WORLD: u32 = 0;
/// Identity of this node's own addresses: always allowed, as upstream documents.
pub const IDENTITY_HOST: u32 = 1;
/// First identity the agent allocates for peer classes.
pub const IDENTITY_FIRST_DYNAMIC: u32 = 16;
/// Wildcard identity in policy keys: the rule applies to every peer.
pub const IDENTITY_ANY: u32 = u32::MAX;

/// Data part of an `IPCACHE` key (the LPM prefix length precedes it). 128 bits.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IpKey {
    pub addr: [u8; 16],
}

/// `IpInfo::flags`: socket-level hooks (connect/sendmsg) do not judge this destination;
/// the packet path does, after any NAT (used for Service CIDRs, whose addresses kube-proxy
/// translates after `connect()`).
pub const IP_DEFER_TO_PACKET: u32 = 1 << 0;

/// Value of an `IPCACHE` entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IpInfo {
    pub identity: u32,
    pub flags: u32,
}

// ---------------------------------------------------------------------------------------
// Policy (LpmTrie `POLICY`)
// ---------------------------------------------------------------------------------------

pub const DIR_INGRESS: u8 = 0;
pub const DIR_EGRESS: u8 = 1;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;
pub const PROTO_SCTP: u8 = 132;

/// Data part of a `POLICY` key. Matched by longest prefix over the fields in this order:
/// `endpoint` (32 bits), `identity` (32), `direction` (8), `protocol` (8), `port` (16,
/// network byte order). A prefix of 72 bits means "any protocol and port", 80 "any port of
/// this protocol", 96 an exact port, and 80+k a port range aligned on 2^(16-k).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyKey {
    pub endpoint: u32,
    pub identity: u32,
    pub direction: u8,
    pub protocol: u8,
    /// Port in network byte order.
    pub port: [u8; 2],
}

/// Prefix lengths of `PolicyKey` fields.
pub const POLICY_PREFIX_ANY_PROTO: u32 = 72;
pub const POLICY_PREFIX_ANY_PORT: u32 = 80;
pub const POLICY_PREFIX_FULL: u32 = 96;

/// Value of a `POLICY` entry: which policy allowed it (for verdict events).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyValue {
    /// Index of the NetworkPolicy in the agent's policy table (0 is reserved).
    pub policy: u32,
    pub flags: u32,
}

// ---------------------------------------------------------------------------------------
// Conntrack (LruHashMap `CONNTRACK`)
// ---------------------------------------------------------------------------------------

/// A flow seen from one endpoint. The endpoint (a pod, i.e. one network namespace) and the
/// local port identify the local side, so the local address is not part of the key: that
/// lets socket-level hooks, which often do not know the source address yet, find a flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtKey {
    pub remote: [u8; 16],
    pub endpoint: u32,
    pub local_port: u16,
    pub remote_port: u16,
    pub protocol: u8,
    pub _pad: [u8; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtValue {
    /// `bpf_ktime_get_ns()` of the last packet of the flow.
    pub last_seen_ns: u64,
    /// `Config::policy_revision` when the original direction was last checked.
    pub revision: u32,
    /// `DIR_*` of the packet that opened the flow.
    pub origin: u8,
    pub _pad: [u8; 3],
}

// ---------------------------------------------------------------------------------------
// Runtime guards
// ---------------------------------------------------------------------------------------

pub const GUARD_ROOT_ESCALATION: u32 = 1 << 0;
pub const GUARD_DANGEROUS_CAPABILITIES: u32 = 1 << 1;
pub const GUARD_MOUNT: u32 = 1 << 2;
pub const GUARD_KERNEL_MODULES: u32 = 1 << 3;
pub const GUARD_PTRACE: u32 = 1 << 4;
pub const GUARD_BPF: u32 = 1 << 5;
pub const GUARD_RAW_SOCKETS: u32 = 1 << 6;
pub const GUARD_HOST_DEVICES: u32 = 1 << 7;
pub const GUARD_SYSCTL_WRITE: u32 = 1 << 8;
/// Modifier of `GUARD_ROOT_ESCALATION`: also deny any exec by uid 0 (restricted).
pub const GUARD_ROOT_EXEC: u32 = 1 << 9;
/// Modifier of `GUARD_PTRACE`: deny tracing of any process, not only outside the pod.
pub const GUARD_PTRACE_ANY: u32 = 1 << 10;
/// Every defined guard bit.
pub const GUARD_ALL: u32 = (1 << 11) - 1;

// ---------------------------------------------------------------------------------------
// Events (RingBuf `EVENTS`)
// ---------------------------------------------------------------------------------------

pub const EVENT_NET: u32 = 1;
pub const EVENT_GUARD: u32 = 2;

pub const VERDICT_ALLOW: u8 = 1;
pub const VERDICT_DENY: u8 = 2;
/// Denied by policy but let through because of audit mode.
pub const VERDICT_AUDIT: u8 = 3;

/// Why the datapath decided as it did.
pub const REASON_POLICY: u8 = 1;
pub const REASON_DEFAULT_DENY: u8 = 2;
pub const REASON_UNCLASSIFIED: u8 = 3;
pub const REASON_NOT_ISOLATED: u8 = 4;
pub const REASON_REPLY: u8 = 5;
pub const REASON_HOST: u8 = 6;
pub const REASON_LOOPBACK: u8 = 7;

/// A network verdict.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetEvent {
    /// `EVENT_NET`.
    pub kind: u32,
    pub endpoint: u32,
    pub cgroup_id: u64,
    pub peer_identity: u32,
    /// `PolicyValue::policy` of the deciding entry, 0 if none.
    pub policy: u32,
    pub verdict: u8,
    pub reason: u8,
    pub direction: u8,
    pub protocol: u8,
    pub local_port: u16,
    pub remote_port: u16,
    pub local: [u8; 16],
    pub remote: [u8; 16],
}

/// A runtime guard hit.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuardEvent {
    /// `EVENT_GUARD`.
    pub kind: u32,
    /// One `GUARD_*` bit.
    pub guard: u32,
    pub cgroup_id: u64,
    pub endpoint: u32,
    /// `VERDICT_DENY` or `VERDICT_AUDIT`.
    pub verdict: u8,
    /// `TIER_*` of the program that saw it.
    pub tier: u8,
    pub _pad: [u8; 2],
    /// Thread group id of the offender, for the report only (never used for enforcement).
    pub pid: u32,
    pub uid: u32,
    /// Guard-specific argument (capability number, target uid, device number, ...).
    pub arg: u64,
    pub comm: [u8; 16],
    /// NUL-terminated guard-specific detail (path, sysctl name, ...).
    pub detail: [u8; 64],
}

pub const TIER_LSM: u8 = 1;
pub const TIER_FALLBACK: u8 = 2;

// ---------------------------------------------------------------------------------------
// Counters (PerCpuArray `COUNTERS`, u64 each)
// ---------------------------------------------------------------------------------------

pub const CNT_RINGBUF_DROPS: u32 = 0;
pub const CNT_PARSE_ERRORS: u32 = 1;
pub const CNT_CT_INSERT_ERRORS: u32 = 2;
pub const CNT_NET_ALLOW: u32 = 3;
pub const CNT_NET_DENY: u32 = 4;
pub const CNT_GUARD_DENY: u32 = 5;
pub const CNT_GUARD_AUDIT: u32 = 6;
pub const CNT_MAX: u32 = 8;

// ---------------------------------------------------------------------------------------
// Layout checks
// ---------------------------------------------------------------------------------------

macro_rules! assert_size {
    ($t:ty, $n:expr) => {
        const _: () = assert!(core::mem::size_of::<$t>() == $n);
    };
}
assert_size!(Config, 32);
assert_size!(Endpoint, 16);
assert_size!(IpKey, 16);
assert_size!(IpInfo, 8);
assert_size!(PolicyKey, 12);
assert_size!(PolicyValue, 8);
assert_size!(CtKey, 28);
assert_size!(CtValue, 16);
assert_size!(NetEvent, 64);
assert_size!(GuardEvent, 120);

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: every type below is repr(C), Copy, has no padding (sizes asserted above equal
    // the sum of the fields) and is valid for any bit pattern.
    unsafe impl aya::Pod for Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Endpoint {}
    // SAFETY: as above.
    unsafe impl aya::Pod for IpKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for IpInfo {}
    // SAFETY: as above.
    unsafe impl aya::Pod for PolicyKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for PolicyValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for CtKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for CtValue {}
}

/// Convert an IPv4 address (network order octets) to the IPv4-mapped form used in maps.
pub const fn v4_mapped(octets: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, octets[0], octets[1], octets[2], octets[3],
    ]
}
