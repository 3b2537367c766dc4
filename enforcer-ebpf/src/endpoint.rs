//! cgroup -> pod resolution.
//!
//! The agent stores pod cgroups (and, when it has seen them, container cgroups) in
//! `ENDPOINTS`. A cgroup without an entry is resolved to its nearest classified ancestor
//! below the attach root: a container that started before the agent noticed it still gets
//! its pod's policy. A cgroup with no classified ancestor is *unclassified*.
//!
//! # The attach root's level
//!
//! Ancestors are addressed by their absolute level in the cgroup hierarchy (the kernel's
//! `cgroup->level`, 0 for the hierarchy's root). The agent computes the attach root's
//! level from its view of cgroupfs (`Config::root_level`), which is right on a node whose
//! agent sees the whole hierarchy (GKE, VMs) but not when the node itself runs in a nested
//! cgroup namespace (kind, minikube's docker driver): there cgroupfs starts at the node
//! container's cgroup, several levels below the real root, and nothing in user space shows
//! how many. So the agent's level is only a hint: [`root_level`] checks it against the
//! kernel's ancestor ids, searches the levels when it is wrong, and remembers the level it
//! verified (`ROOT_LEVEL`, keyed by the root's id so that a new attach root starts over).

use aya_ebpf::bindings::__sk_buff;
use aya_ebpf::helpers::generated::{
    bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_skb_ancestor_cgroup_id,
    bpf_skb_cgroup_id,
};
use enforcer_common::{Endpoint, MAX_ANCESTOR_DEPTH};

use crate::maps::{ENDPOINTS, ROOT_LEVEL};

/// Deepest level searched for the attach root. Real hierarchies are a few levels deep
/// (kind: about 6 for `kubepods.slice`).
const MAX_ROOT_LEVEL: u32 = 32;
/// `ROOT_LEVEL` packing: the level in the top byte, the low bits of the root's id below.
const LEVEL_SHIFT: u32 = 56;
const ROOT_ID_MASK: u64 = (1 << LEVEL_SHIFT) - 1;

#[inline(always)]
fn lookup(cgid: u64) -> Option<Endpoint> {
    // SAFETY: the value is copied out at once; entries are plain data.
    unsafe { ENDPOINTS.get(cgid).copied() }
}

/// The level of the attach root `root_cgid` if the cgroup whose ancestors `ancestor`
/// returns (id at an absolute level, 0 beyond the cgroup's own level) is the root or below
/// it; `None` if it is outside (or no root is configured). `hint` is the agent's level.
///
/// Cost: with the level known, one map lookup and one `ancestor` call. Until a program
/// has seen a cgroup below the root, and only then, a cgroup outside it costs a search
/// over its own levels.
#[inline(always)]
fn root_level(root_cgid: u64, hint: u32, ancestor: impl Fn(u32) -> u64) -> Option<u32> {
    if root_cgid == 0 {
        return None;
    }
    let tag = root_cgid & ROOT_ID_MASK;
    let known = ROOT_LEVEL.get(0).copied().unwrap_or(0);
    if known != 0 && known & ROOT_ID_MASK == tag {
        let level = (known >> LEVEL_SHIFT) as u32;
        return (ancestor(level) == root_cgid).then_some(level);
    }
    let mut found = None;
    if hint <= MAX_ROOT_LEVEL && ancestor(hint) == root_cgid {
        found = Some(hint);
    } else {
        let mut level = 0;
        while level <= MAX_ROOT_LEVEL {
            let id = ancestor(level);
            if id == 0 {
                break;
            }
            if id == root_cgid {
                found = Some(level);
                break;
            }
            level += 1;
        }
    }
    if let Some(level) = found {
        if let Some(slot) = ROOT_LEVEL.get_ptr_mut(0) {
            // SAFETY: a valid pointer to the map's only value; an aligned u64 store.
            unsafe { *slot = ((level as u64) << LEVEL_SHIFT) | tag };
        }
    }
    found
}

/// Endpoint of the socket that owns `skb`.
#[inline(always)]
pub fn of_skb(skb: *mut __sk_buff, root_cgid: u64, hint: u32) -> (u64, Option<Endpoint>) {
    // SAFETY: helper call on the program's own context.
    let cgid = unsafe { bpf_skb_cgroup_id(skb) };
    if let Some(ep) = lookup(cgid) {
        return (cgid, Some(ep));
    }
    // SAFETY: as above; returns 0 beyond the cgroup's own level.
    let ancestor = |level: u32| unsafe { bpf_skb_ancestor_cgroup_id(skb, level as i32) };
    let Some(root_level) = root_level(root_cgid, hint, ancestor) else {
        return (cgid, None);
    };
    let mut i = 1;
    while i <= MAX_ANCESTOR_DEPTH {
        let anc = ancestor(root_level + i);
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

#[inline(always)]
fn current_ancestor(level: u32) -> u64 {
    // SAFETY: helper with a scalar argument; returns 0 beyond the task's own level.
    unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) }
}

/// Endpoint of the current task (process context hooks: socket calls, LSM, tracepoints).
#[inline(always)]
pub fn of_current(root_cgid: u64, hint: u32) -> (u64, Option<Endpoint>) {
    // SAFETY: helper without arguments.
    let cgid = unsafe { bpf_get_current_cgroup_id() };
    if let Some(ep) = lookup(cgid) {
        return (cgid, Some(ep));
    }
    let Some(root_level) = root_level(root_cgid, hint, current_ancestor) else {
        return (cgid, None);
    };
    let mut i = 1;
    while i <= MAX_ANCESTOR_DEPTH {
        let anc = current_ancestor(root_level + i);
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

/// Is the current task in the attach root or below it? (Process-context hooks that are
/// not attached to the cgroup tree, such as LSM, see every task of the machine.)
#[inline(always)]
pub fn current_under_root(root_cgid: u64, hint: u32) -> bool {
    root_level(root_cgid, hint, current_ancestor).is_some()
}
