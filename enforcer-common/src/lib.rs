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
pub const ABI_VERSION: u32 = 4;

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
/// A pod cgroup the agent has seen but not classified yet (no known pod): its network is
/// treated as unclassified (`CFG_DENY_UNCLASSIFIED`), its guards are the entry's (the
/// strictest set). Written by the agent, replaced once the pod is known.
pub const EP_PENDING: u32 = 1 << 3;
/// NetworkPolicy is audited for this pod, not enforced: what would be denied is reported
/// (`VERDICT_AUDIT`) and passes (its namespace is labelled
/// `enforcer.dev/network-policy=audit`: a staged roll-out). `CFG_NET_AUDIT` does the same for every pod.
pub const EP_NET_AUDIT: u32 = 1 << 4;

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
/// Reserved (formerly "this node"; node addresses now carry `IP_HOST` and a normal
/// identity, so egress to them is judged like any address).
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

/// `IpInfo::flags`: an address of this node (not a Service frontend). Ingress from it is
/// always allowed (kubelet probes, as upstream documents); egress to it is judged by policy
/// like any other address, under the identity of its class.
pub const IP_HOST: u32 = 1 << 0;

/// Value of an `IPCACHE` entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IpInfo {
    pub identity: u32,
    /// `IP_*` bits.
    pub flags: u32,
    /// Endpoint id of the local pod that owns this address (0: none). Lets the socket
    /// hooks, which run before the source address is chosen, see a pod talking to itself.
    pub endpoint: u32,
    pub _pad: u32,
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
// Services (socket-level translation)
// ---------------------------------------------------------------------------------------

/// A Service frontend (HashMap `SERVICES`): an address, port and protocol that the socket
/// hooks translate to a backend before anything else sees the connection. ClusterIPs,
/// NodePorts on the node's addresses, externalIPs and load balancer IPs are frontends.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SvcKey {
    pub addr: [u8; 16],
    /// Port in network byte order.
    pub port: [u8; 2],
    pub protocol: u8,
    pub _pad: u8,
}

/// `SvcValue::flags`: sessionAffinity ClientIP (the client is the pod: its netns cookie).
pub const SVC_AFFINITY: u32 = 1 << 0;

/// Where a frontend leads.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SvcValue {
    /// Backend set id: `BACKENDS` keys `(set, 0..count)`. Never 0.
    pub set: u32,
    /// Number of backends in the set; 0: no ready backend, the connection is refused.
    pub count: u32,
    /// `SVC_*` bits.
    pub flags: u32,
    /// Session affinity timeout, seconds (with `SVC_AFFINITY`).
    pub affinity_timeout_s: u32,
}

/// One slot of a backend set (HashMap `BACKENDS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendKey {
    pub set: u32,
    pub slot: u32,
}

/// A backend address: a ready endpoint of the Service.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Backend {
    pub addr: [u8; 16],
    /// Port in network byte order.
    pub port: [u8; 2],
    pub _pad: [u8; 2],
    pub _pad2: u32,
}

/// `AffinityKey::kind`: sessionAffinity ClientIP, `cookie` is the client's netns cookie.
pub const AFFINITY_CLIENT: u32 = 1;
/// Unconnected datagram sockets keep one backend per socket (`cookie` is the socket
/// cookie), so that replies of one conversation come from one backend.
pub const AFFINITY_SOCKET: u32 = 2;

/// Key of the LRU map `AFFINITY`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AffinityKey {
    pub cookie: u64,
    pub set: u32,
    /// `AFFINITY_*`.
    pub kind: u32,
}

/// The backend a client or socket was given, and when it last used it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AffinityValue {
    pub last_seen_ns: u64,
    pub backend: Backend,
}

/// Reverse translation (LRU map `REVNAT`): for one socket, a backend it was translated to
/// -> the frontend the application asked for. recvmsg and getpeername show the frontend.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RevKey {
    /// Socket cookie.
    pub cookie: u64,
    pub backend: Backend,
}

/// Value of `REVNAT`: the frontend address and port (network byte order).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RevValue {
    pub addr: [u8; 16],
    pub port: [u8; 2],
    pub _pad: [u8; 2],
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
/// Packet sockets (`AF_PACKET`, and `SOCK_PACKET` asked of `AF_INET`): frames sent and
/// received below the cgroup packet hooks, which would bypass NetworkPolicy. The agent
/// enforces it on every pod that any NetworkPolicy isolates, whatever its Pod Security
/// level.
pub const GUARD_PACKET_SOCKETS: u32 = 1 << 11;
/// Every defined guard bit.
pub const GUARD_ALL: u32 = (1 << 12) - 1;

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
/// A Service frontend with no ready backend: the connection is refused.
pub const REASON_NO_BACKEND: u8 = 8;

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
/// `ARMED` was full (or otherwise refused an insert): a cgroup stayed unarmed.
pub const CNT_ARM_ERRORS: u32 = 7;
/// A task entering a pod cgroup from outside the pods was made exempt (`EXEMPT`).
pub const CNT_EXEMPT_GRANTED: u32 = 8;
/// A guard check (or an exec) passed because the task was exempt.
pub const CNT_EXEMPT_PASSED: u32 = 9;
/// A task storage operation on `EXEMPT` failed (an exemption not granted, or a mark that
/// could not be removed and was zeroed instead).
pub const CNT_EXEMPT_ERRORS: u32 = 10;
/// A socket call to a Service frontend was translated to a backend.
pub const CNT_SVC_TRANSLATED: u32 = 11;
/// A socket call to a Service frontend with no ready backend was refused.
pub const CNT_SVC_NO_BACKEND: u32 = 12;
/// recvmsg/getpeername showed a Service frontend instead of its backend.
pub const CNT_SVC_REVERSED: u32 = 13;
pub const CNT_MAX: u32 = 14;

// ---------------------------------------------------------------------------------------
// Runtime guards: arming, settings, fallback syscall rules, kernel offsets
// ---------------------------------------------------------------------------------------

/// `ARMED` value bits (HashMap `ARMED`, key: cgroup id u64, value: u32). A guard only ever
/// applies to a task whose own cgroup has an entry (see `enforcer-ebpf/src/guards.rs`).
/// Armed by the exec tracepoint: a task exec'd while in this cgroup.
pub const ARM_EXEC: u32 = 1 << 0;
/// Armed by the agent (containers that were running before the programs were attached).
pub const ARM_AGENT: u32 = 1 << 1;

/// How a task became exempt (`ExemptTask::via`): its leader was written into a pod
/// cgroup's `cgroup.procs`/`cgroup.threads` by a task outside the pods (runc before 1.4,
/// or systemd on its behalf).
pub const EXEMPT_VIA_MIGRATION: u32 = 1;
/// It was created into a pod cgroup with `clone3(CLONE_INTO_CGROUP)` by a parent outside
/// the pods (runc 1.4+ `runc exec`).
pub const EXEMPT_VIA_CLONE: u32 = 2;
/// Bit of `ExemptTask::via`: the mark was inherited by fork from an exempt parent.
pub const EXEMPT_INHERITED: u32 = 1 << 8;
/// Execs an exemption lasts (`ExemptTask::remaining` when granted), per entry path. The
/// exec that brings `remaining` to 0 is the workload's: it is checked by the exec-time
/// guards and arms an unarmed cgroup, like the exec of a task that was never exempt.
pub const EXEMPT_EXECS_MIGRATION: u32 = 1;
/// Created into the cgroup: the first exec is the runtime's own binary (`runc init`),
/// the second the workload's.
pub const EXEMPT_EXECS_CLONE: u32 = 2;

/// A container runtime task doing its work inside a pod cgroup (task local storage map
/// `EXEMPT`, one value per task, key: the task; user space looks it up with a pidfd).
/// See `enforcer-ebpf/src/guards/exempt.rs` for who gets one and when it ends.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExemptTask {
    /// The cgroup the task entered. The mark only counts while the task is in it.
    pub cgroup_id: u64,
    /// Execs left. Non-exec guards skip the task while this is at least 1; an exec skips
    /// the exec-time guards (and does not arm the cgroup) only while it is at least 2.
    /// A stored mark is never 0 unless its removal failed (then it counts as absent).
    pub remaining: u32,
    /// `EXEMPT_VIA_*`, with `EXEMPT_INHERITED`.
    pub via: u32,
    /// Creation: the mount namespace (inode number) of the parent that created the task.
    /// An exec in it is the runtime's own (runc execs `runc init` before it joins the
    /// container); an exec in another one (the task joined the container's mount
    /// namespace first, as crun's exec sessions do) is the workload's and ends the mark.
    /// 0: not recorded (migration, or kernel offsets missing): counts alone decide.
    pub mnt_ns: u32,
    pub _pad: u32,
}

/// Guard settings (Array map `GUARD_CONFIG`, one entry), written when guards are attached.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuardConfig {
    /// `TIER_*` of the attached guard programs, 0 while none are attached. Programs that
    /// both tiers share (cgroup device, cgroup sysctl, the exec tracepoint) report it.
    pub tier: u32,
    /// `GUARD_*` bits served by the fallback programs: every available guard in
    /// `TIER_FALLBACK`; in `TIER_LSM`, the guards whose LSM programs this kernel refused
    /// (each such guard falls back alone). The exec tracepoint checks the new credentials
    /// only for root-exec and root-escalation in this set (the LSM tier checks them in
    /// `bprm_creds_from_file`, before they are committed).
    pub fallback_guards: u32,
}

/// Number of entries of `SYSCALL_RULES` and `SYSCALL_RULES_COMPAT` (syscall numbers at or
/// above it are never guarded).
pub const SYSCALL_RULES_MAX: u32 = 1024;

/// `SyscallRule::check`: how the fallback `sys_enter` program judges the arguments.
/// Any call.
pub const SC_ANY: u8 = 0;
/// The first `arg` arguments are uids; a non-root caller (uid and euid not 0) asking for
/// uid 0 in any of them (setuid, setreuid, setresuid, setfsuid). `value` is the mask of
/// the id's width: `0xffff` for the 16-bit calls of the i386 ABI (the kernel keeps only
/// the low 16 bits, so 0x10000 asks for root), 0 or `0xffff_ffff` for 32 bits.
pub const SC_UIDS_TO_ROOT: u8 = 1;
/// `args[arg] & value != 0` (namespace flags of unshare).
pub const SC_ARG_MASK: u8 = 2;
/// `args[arg] == value` (socket family).
pub const SC_ARG_EQ: u8 = 3;
/// `*(u32 *)args[arg]` is non-zero and not `ADJ_OFFSET_SS_READ`: a `struct timex` that
/// changes the clock (adjtimex, clock_adjtime); a pure read passes, memory that cannot
/// be read counts as a change.
pub const SC_TIMEX_WRITE: u8 = 5;
/// ptrace(2): `args[0]` is PTRACE_TRACEME, PTRACE_ATTACH or PTRACE_SEIZE. With
/// `GUARD_PTRACE_ANY` always; with `GUARD_PTRACE` only when the caller is in the initial
/// PID namespace (see the fallback module for why).
pub const SC_PTRACE: u8 = 6;
/// Other calls that need ptrace access to another process (process_vm_readv/writev):
/// same rule as `SC_PTRACE` without the request check.
pub const SC_PTRACE_LIKE: u8 = 7;
/// socket(2) of a packet socket: `args[0] == AF_PACKET`, or `(args[1] & 0xf) ==
/// SOCK_PACKET` (the kernel turns `socket(AF_INET, SOCK_PACKET, ...)` into a packet
/// socket).
pub const SC_SOCKET_PACKET: u8 = 9;
/// clone(2) and clone3(2). The flags are `args[arg & 0x7f]`, or, with `SC_ARG_USER` in
/// `arg`, the u64 that argument points to (`clone_args.flags`). Namespace flags (`value`)
/// fall under `GUARD_DANGEROUS_CAPABILITIES`; `CLONE_FILES` without `CLONE_THREAD` (a new
/// process sharing the caller's descriptor table, which would keep the descriptor of a
/// killed call alive) under every other guard of `guards`. Memory that cannot be read
/// counts as both.
pub const SC_CLONE: u8 = 10;
/// i386 socketcall(2): `args[0] == SYS_SOCKET` and the socket(2) arguments at
/// `*(u32 [3])args[1]` ask for a packet socket (as `SC_SOCKET_PACKET`); memory that
/// cannot be read counts as a packet socket.
pub const SC_SOCKETCALL_PACKET: u8 = 11;
/// The first `arg` arguments are gids (setgid, setregid, setresgid, setfsgid); a caller
/// that is neither root (uid, euid) nor in group 0 (gid, egid) asking for gid 0 in any of
/// them. `value`: the id mask, as for `SC_UIDS_TO_ROOT`.
pub const SC_GIDS_TO_ROOT: u8 = 12;
/// `SyscallRule::arg` flag: the argument is a pointer to the value (user memory).
pub const SC_ARG_USER: u8 = 0x80;

/// One fallback syscall rule (Array maps `SYSCALL_RULES`, `SYSCALL_RULES_COMPAT`, index:
/// syscall number of the native and of the 32-bit compat ABI). An all-zero rule guards
/// nothing.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyscallRule {
    /// `GUARD_*` bits this call falls under (a mount also uses CAP_SYS_ADMIN, so
    /// `GUARD_MOUNT | GUARD_DANGEROUS_CAPABILITIES`). The first active bit is reported.
    pub guards: u32,
    /// `SC_*`.
    pub check: u8,
    /// Argument index (or count, for `SC_UIDS_TO_ROOT` and `SC_GIDS_TO_ROOT`), with
    /// `SC_ARG_USER` where the check reads what the argument points to.
    pub arg: u8,
    pub _pad: [u8; 2],
    /// Mask or value for the check.
    pub value: u64,
}

/// Capabilities an exec may add to the permitted set without counting as an escalation
/// (root-escalation): CAP_NET_BIND_SERVICE (10), the one capability Pod Security
/// "restricted" lets a container add. Binaries carrying it as a file capability (web
/// servers that bind port 80 as a non-root user) keep working.
pub const HARMLESS_FILE_CAPS: u64 = 1 << 10;

/// Bits of `KernelOffsets::present`: which offsets were found in the kernel's BTF.
pub const OFF_TASK_CRED: u64 = 1 << 0;
pub const OFF_TASK_TGID: u64 = 1 << 1;
pub const OFF_TASK_CGROUPS: u64 = 1 << 2;
pub const OFF_CSS_SET_DFL_CGRP: u64 = 1 << 3;
pub const OFF_CGROUP_KN: u64 = 1 << 4;
pub const OFF_KERNFS_NODE_ID: u64 = 1 << 5;
pub const OFF_KERNFS_NODE_PARENT: u64 = 1 << 6;
pub const OFF_TASK_THREAD_PID: u64 = 1 << 7;
pub const OFF_PID_LEVEL: u64 = 1 << 8;
pub const OFF_CRED_UID: u64 = 1 << 9;
pub const OFF_CRED_SUID: u64 = 1 << 10;
pub const OFF_CRED_EUID: u64 = 1 << 11;
pub const OFF_CRED_FSUID: u64 = 1 << 12;
pub const OFF_CRED_CAP_PERMITTED: u64 = 1 << 13;
pub const OFF_CRED_CAP_AMBIENT: u64 = 1 << 14;
pub const OFF_BINPRM_CRED: u64 = 1 << 15;
pub const OFF_BINPRM_FILENAME: u64 = 1 << 16;
pub const OFF_REGS_ARGS: u64 = 1 << 17;
pub const OFF_TASK_TI_STATUS: u64 = 1 << 18;
pub const OFF_COMPAT_REGS_ARGS: u64 = 1 << 19;
pub const OFF_TASK_NSPROXY: u64 = 1 << 20;
pub const OFF_NSPROXY_MNT_NS: u64 = 1 << 21;
pub const OFF_MNT_NS_INUM: u64 = 1 << 22;
pub const OFF_CRED_GID: u64 = 1 << 23;
pub const OFF_CRED_SGID: u64 = 1 << 24;
pub const OFF_CRED_EGID: u64 = 1 << 25;
pub const OFF_CRED_FSGID: u64 = 1 << 26;

/// Byte offsets of the kernel struct fields the guards read, resolved by the agent from
/// the running kernel's BTF (`/sys/kernel/btf/vmlinux`) and handed to the programs as the
/// read-only global `GUARD_OFFSETS` (Rust BPF has no CO-RE relocations). A field whose
/// `OFF_*` bit is clear in `present` was not found; programs never read it, and the guards
/// that need it are reported unavailable.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `OFF_*` bits.
    pub present: u64,
    /// `task_struct.cred` (subjective credentials).
    pub task_cred: u32,
    /// `task_struct.tgid`.
    pub task_tgid: u32,
    /// `task_struct.cgroups` (`struct css_set *`).
    pub task_cgroups: u32,
    /// `css_set.dfl_cgrp` (`struct cgroup *`, the cgroup v2 cgroup).
    pub css_set_dfl_cgrp: u32,
    /// `cgroup.kn` (`struct kernfs_node *`).
    pub cgroup_kn: u32,
    /// `kernfs_node.id` (u64: the cgroup id).
    pub kernfs_node_id: u32,
    /// `kernfs_node.parent` (named `__parent` since 6.15).
    pub kernfs_node_parent: u32,
    /// `task_struct.thread_pid` (`struct pid *`).
    pub task_thread_pid: u32,
    /// `pid.level` (0: the initial PID namespace).
    pub pid_level: u32,
    /// `cred.uid`, `cred.suid`, `cred.euid`, `cred.fsuid` (`kuid_t`, 4 bytes).
    pub cred_uid: u32,
    pub cred_suid: u32,
    pub cred_euid: u32,
    pub cred_fsuid: u32,
    /// `cred.cap_permitted`, `cred.cap_ambient` (`kernel_cap_t`, 8 bytes).
    pub cred_cap_permitted: u32,
    pub cred_cap_ambient: u32,
    /// `linux_binprm.cred`, `linux_binprm.filename`.
    pub binprm_cred: u32,
    pub binprm_filename: u32,
    /// Offset of `thread_info.status` in `task_struct` (x86: `TS_COMPAT` marks a 32-bit
    /// syscall).
    pub task_ti_status: u32,
    /// Offsets in `struct pt_regs` of the six syscall arguments (architecture-specific).
    pub regs_args: [u32; 6],
    /// The same for 32-bit compat syscalls (x86: ebx, ecx, edx, esi, edi, ebp).
    pub compat_regs_args: [u32; 6],
    /// Value of the compat bit in `task_ti_status` (0: no compat syscalls on this
    /// architecture).
    pub ti_status_compat: u32,
    /// `task_struct.nsproxy`, `nsproxy.mnt_ns`, `mnt_namespace.ns.inum`: a task's mount
    /// namespace (the runtime exemption tells a runtime's own exec from the workload's).
    pub task_nsproxy: u32,
    pub nsproxy_mnt_ns: u32,
    pub mnt_ns_inum: u32,
    /// `cred.gid`, `cred.sgid`, `cred.egid`, `cred.fsgid` (`kgid_t`, 4 bytes).
    pub cred_gid: u32,
    pub cred_sgid: u32,
    pub cred_egid: u32,
    pub cred_fsgid: u32,
}

impl KernelOffsets {
    /// Nothing resolved: the value compiled into the object.
    pub const UNRESOLVED: KernelOffsets = KernelOffsets {
        present: 0,
        task_cred: 0,
        task_tgid: 0,
        task_cgroups: 0,
        css_set_dfl_cgrp: 0,
        cgroup_kn: 0,
        kernfs_node_id: 0,
        kernfs_node_parent: 0,
        task_thread_pid: 0,
        pid_level: 0,
        cred_uid: 0,
        cred_suid: 0,
        cred_euid: 0,
        cred_fsuid: 0,
        cred_cap_permitted: 0,
        cred_cap_ambient: 0,
        binprm_cred: 0,
        binprm_filename: 0,
        task_ti_status: 0,
        regs_args: [0; 6],
        compat_regs_args: [0; 6],
        ti_status_compat: 0,
        task_nsproxy: 0,
        nsproxy_mnt_ns: 0,
        mnt_ns_inum: 0,
        cred_gid: 0,
        cred_sgid: 0,
        cred_egid: 0,
        cred_fsgid: 0,
    };
}

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
assert_size!(IpInfo, 16);
assert_size!(PolicyKey, 12);
assert_size!(PolicyValue, 8);
assert_size!(CtKey, 28);
assert_size!(CtValue, 16);
assert_size!(NetEvent, 64);
assert_size!(SvcKey, 20);
assert_size!(SvcValue, 16);
assert_size!(BackendKey, 8);
assert_size!(Backend, 24);
assert_size!(AffinityKey, 16);
assert_size!(AffinityValue, 32);
assert_size!(RevKey, 32);
assert_size!(RevValue, 20);
assert_size!(GuardEvent, 120);
assert_size!(GuardConfig, 8);
assert_size!(SyscallRule, 16);
assert_size!(KernelOffsets, 160);
assert_size!(ExemptTask, 24);

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
    // SAFETY: as above.
    unsafe impl aya::Pod for SvcKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for SvcValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for BackendKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Backend {}
    // SAFETY: as above.
    unsafe impl aya::Pod for AffinityKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for AffinityValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for RevKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for RevValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for GuardEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for GuardConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for SyscallRule {}
    // SAFETY: as above.
    unsafe impl aya::Pod for KernelOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ExemptTask {}
}

/// Convert an IPv4 address (network order octets) to the IPv4-mapped form used in maps.
pub const fn v4_mapped(octets: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, octets[0], octets[1], octets[2], octets[3],
    ]
}
