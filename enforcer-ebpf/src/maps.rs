//! Every map of the object. Names are part of the ABI: the agent finds and pins them by
//! name, and the `abi` test checks their key and value sizes against enforcer-common.

use aya_ebpf::{
    macros::{btf_map, map},
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use enforcer_common::{
    AffinityKey, AffinityValue, Backend, BackendKey, Config, CtKey, CtValue, Endpoint, ExemptTask,
    GuardConfig, IpInfo, IpKey, PolicyKey, PolicyValue, RevKey, RevValue, SvcKey, SvcValue,
    SyscallRule, CNT_MAX, SYSCALL_RULES_MAX,
};

use crate::task_storage::TaskStorage;

/// Global settings, one entry.
#[map]
pub static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// cgroup id -> pod.
#[map]
pub static ENDPOINTS: HashMap<u64, Endpoint> = HashMap::with_max_entries(65_536, 0);

/// address -> peer identity (pod IPs as /128, ipBlock regions as prefixes). Sized for
/// 200,000 dual-stack pods (GKE's cluster limit) plus ipBlock regions; an LPM trie is not
/// preallocated, so the size costs memory only when used.
#[map]
pub static IPCACHE: LpmTrie<IpKey, IpInfo> = LpmTrie::with_max_entries(1_048_576, 0);

/// (endpoint, identity, direction, protocol, port prefix) -> allowing policy.
#[map]
pub static POLICY: LpmTrie<PolicyKey, PolicyValue> = LpmTrie::with_max_entries(1_048_576, 0);

/// Flows seen per endpoint, for stateful replies.
#[map]
pub static CONNTRACK: LruHashMap<CtKey, CtValue> = LruHashMap::with_max_entries(262_144, 0);

/// Service frontend -> backend set. Sized for GKE's limits (10,000 Services, a few ports
/// and frontends each).
#[map]
pub static SERVICES: HashMap<SvcKey, SvcValue> = HashMap::with_max_entries(131_072, 0);

/// (backend set, slot) -> backend address. Not preallocated: memory follows use.
#[map]
pub static BACKENDS: HashMap<BackendKey, Backend> =
    HashMap::with_max_entries(262_144, aya_ebpf::bindings::BPF_F_NO_PREALLOC);

/// Session affinity (per client netns) and per-socket backends of unconnected datagram
/// sockets.
#[map]
pub static AFFINITY: LruHashMap<AffinityKey, AffinityValue> =
    LruHashMap::with_max_entries(65_536, 0);

/// (socket, backend) -> the Service frontend it was translated from.
#[map]
pub static REVNAT: LruHashMap<RevKey, RevValue> = LruHashMap::with_max_entries(131_072, 0);

/// Verdict and guard events to the agent.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Per-CPU counters, indexed by `CNT_*`.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(CNT_MAX, 0);

/// cgroup id -> `ARM_*` bits: cgroups whose tasks the runtime guards apply to (see
/// `guards.rs` for why guards wait for the first exec).
#[map]
pub static ARMED: HashMap<u64, u32> = HashMap::with_max_entries(65_536, 0);

/// task -> exemption: container runtime tasks that entered a pod cgroup from outside the
/// pods and have not yet reached the workload's exec (see `guards/exempt.rs`). A BTF map
/// (local storage maps must be), in the `.maps` section.
#[btf_map]
pub static EXEMPT: TaskStorage<ExemptTask> = TaskStorage::new();

/// The attach root's level in the cgroup hierarchy as the kernel numbers it, once a
/// program has verified it: `level << 56 | (root cgroup id & ROOT_ID_MASK)`, one entry,
/// 0 while unknown (see `endpoint::root_level`). One u64, so a reader never sees a level
/// from one root with the id of another.
#[map]
pub static ROOT_LEVEL: Array<u64> = Array::with_max_entries(1, 0);

/// Guard settings, one entry.
#[map]
pub static GUARD_CONFIG: Array<GuardConfig> = Array::with_max_entries(1, 0);

/// Fallback tier: native syscall number -> rule.
#[map]
pub static SYSCALL_RULES: Array<SyscallRule> = Array::with_max_entries(SYSCALL_RULES_MAX, 0);

/// Fallback tier: 32-bit compat syscall number -> rule.
#[map]
pub static SYSCALL_RULES_COMPAT: Array<SyscallRule> = Array::with_max_entries(SYSCALL_RULES_MAX, 0);

#[inline(always)]
pub fn config() -> Option<&'static Config> {
    CONFIG.get(0)
}

#[inline(always)]
pub fn count(idx: u32) {
    if let Some(p) = COUNTERS.get_ptr_mut(idx) {
        // An atomic add, although the slot is this CPU's: programs do not migrate while
        // they run, but they do interleave on one CPU. A cgroup skb program in the
        // network softirq can interrupt a socket or LSM program of the task between the
        // load and the store of a plain `+= 1`, and on preemptible kernels two task-context
        // programs can preempt each other; either would lose an increment.
        // (core has no atomic read-modify-write for the BPF target: the instruction is
        // written out.)
        #[cfg(target_arch = "bpf")]
        // SAFETY: `p` points to this CPU's u64 slot of the map value, valid and aligned for
        // the program's run; BPF_ATOMIC BPF_ADD on it.
        unsafe {
            core::arch::asm!("lock *(u64 *)({p} + 0) += {v}", p = in(reg) p, v = in(reg) 1u64);
        }
        #[cfg(not(target_arch = "bpf"))]
        // SAFETY: as above.
        unsafe {
            *p += 1
        };
    }
}
