//! cgroup -> pod resolution.
//!
//! The agent stores pod cgroups (and, when it has seen them, container cgroups) in
//! `ENDPOINTS`. A cgroup without an entry is resolved to its nearest classified ancestor
//! below the attach root: a container that started before the agent noticed it still gets
//! its pod's policy. A cgroup with no classified ancestor is *unclassified*.

use aya_ebpf::bindings::__sk_buff;
use aya_ebpf::helpers::generated::{
    bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_skb_ancestor_cgroup_id,
    bpf_skb_cgroup_id,
};
use enforcer_common::{Endpoint, MAX_ANCESTOR_DEPTH};

use crate::maps::ENDPOINTS;

#[inline(always)]
fn lookup(cgid: u64) -> Option<Endpoint> {
    // SAFETY: the value is copied out at once; entries are plain data.
    unsafe { ENDPOINTS.get(cgid).copied() }
}

/// Endpoint of the socket that owns `skb`.
#[inline(always)]
pub fn of_skb(skb: *mut __sk_buff, root_level: u32) -> (u64, Option<Endpoint>) {
    // SAFETY: helper calls on the program's own context.
    let cgid = unsafe { bpf_skb_cgroup_id(skb) };
    if let Some(ep) = lookup(cgid) {
        return (cgid, Some(ep));
    }
    let mut i = 1;
    while i <= MAX_ANCESTOR_DEPTH {
        // SAFETY: as above; returns 0 beyond the cgroup's own level.
        let anc = unsafe { bpf_skb_ancestor_cgroup_id(skb, (root_level + i) as i32) };
        if anc == 0 || anc == cgid {
            break;
        }
        if let Some(ep) = lookup(anc) {
            return (cgid, Some(ep));
        }
        i += 1;
    }
    (cgid, None)
}

/// Endpoint of the current task (process context hooks: socket calls, LSM, tracepoints).
#[inline(always)]
pub fn of_current(root_level: u32) -> (u64, Option<Endpoint>) {
    // SAFETY: helper without arguments.
    let cgid = unsafe { bpf_get_current_cgroup_id() };
    if let Some(ep) = lookup(cgid) {
        return (cgid, Some(ep));
    }
    let mut i = 1;
    while i <= MAX_ANCESTOR_DEPTH {
        // SAFETY: returns 0 beyond the cgroup's own level.
        let anc = unsafe { bpf_get_current_ancestor_cgroup_id((root_level + i) as i32) };
        if anc == 0 || anc == cgid {
            break;
        }
        if let Some(ep) = lookup(anc) {
            return (cgid, Some(ep));
        }
        i += 1;
    }
    (cgid, None)
}

/// Is the current task below the attach root at all? (Process-context hooks that are not
/// attached to the cgroup tree, such as LSM, see every task of the machine.)
#[inline(always)]
pub fn current_under_root(root_cgid: u64, root_level: u32) -> bool {
    // SAFETY: helper with a scalar argument.
    let anc = unsafe { bpf_get_current_ancestor_cgroup_id(root_level as i32) };
    root_cgid != 0 && anc == root_cgid
}
