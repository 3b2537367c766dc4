//! Runtime guards.
//!
//! A guard applies to a task when the task's cgroup resolves (see `endpoint`) to a pod whose
//! `guards_enforce` or `guards_audit` has the guard's bit, or, for a cgroup below the root
//! that no endpoint classifies yet, when `Config::unclassified_guards` has it.

use aya_ebpf::{
    helpers::generated::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid},
    macros::lsm,
    programs::LsmContext,
};
use enforcer_common::*;

use crate::{
    endpoint,
    maps::{config, count, EVENTS},
};

const EPERM: i32 = 1;

const AF_INET: i32 = 2;
const AF_INET6: i32 = 10;
const AF_PACKET: i32 = 17;
const SOCK_RAW: i32 = 3;
const SOCK_TYPE_MASK: i32 = 0xf;

/// What a guard check concluded for the current task.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pass,
    Deny,
    Audit,
}

/// Which action `guard` requires for the current task, and its endpoint and cgroup.
#[inline(always)]
pub fn check(guard: u32) -> (Action, u32, u64) {
    let Some(cfg) = config() else {
        return (Action::Pass, 0, 0);
    };
    let (cgid, ep) = endpoint::of_current(cfg.root_level);
    let (enforce, audit, id) = match ep {
        Some(e) => (e.guards_enforce, e.guards_audit, e.id),
        None => {
            if cfg.unclassified_guards & guard == 0
                || !endpoint::current_under_root(cfg.root_cgroup_id, cfg.root_level)
            {
                return (Action::Pass, 0, cgid);
            }
            (cfg.unclassified_guards, 0, 0)
        }
    };
    if enforce & guard != 0 {
        (Action::Deny, id, cgid)
    } else if audit & guard != 0 {
        (Action::Audit, id, cgid)
    } else {
        (Action::Pass, id, cgid)
    }
}

/// Report a guard hit; returns the value the LSM hook must return.
#[inline(always)]
pub fn report(action: Action, guard: u32, endpoint: u32, cgid: u64, arg: u64, tier: u8) -> i32 {
    let verdict = match action {
        Action::Pass => return 0,
        Action::Deny => {
            count(CNT_GUARD_DENY);
            VERDICT_DENY
        }
        Action::Audit => {
            count(CNT_GUARD_AUDIT);
            VERDICT_AUDIT
        }
    };
    if let Some(mut slot) = EVENTS.reserve::<GuardEvent>(0) {
        // SAFETY: helpers without pointer arguments, and one writing into a local buffer
        // of the size passed.
        let (pid, uid, comm) = unsafe {
            let mut comm = [0u8; 16];
            bpf_get_current_comm(comm.as_mut_ptr() as *mut _, 16);
            (
                (bpf_get_current_pid_tgid() >> 32) as u32,
                bpf_get_current_uid_gid() as u32,
                comm,
            )
        };
        slot.write(GuardEvent {
            kind: EVENT_GUARD,
            guard,
            cgroup_id: cgid,
            endpoint,
            verdict,
            tier,
            _pad: [0; 2],
            pid,
            uid,
            arg,
            comm,
            detail: [0; 64],
        });
        slot.submit(0);
    } else {
        count(CNT_RINGBUF_DROPS);
    }
    if action == Action::Deny {
        -EPERM
    } else {
        0
    }
}

/// `raw-sockets`: AF_PACKET sockets and SOCK_RAW sockets of the IP families.
#[lsm(hook = "socket_create")]
pub fn lsm_socket_create(ctx: LsmContext) -> i32 {
    // int socket_create(int family, int type, int protocol, int kern), then the return
    // value of the previous BPF LSM program.
    let prev: i32 = ctx.arg(4);
    if prev != 0 {
        return prev;
    }
    let kern: i32 = ctx.arg(3);
    if kern != 0 {
        return 0;
    }
    let family: i32 = ctx.arg(0);
    let ty: i32 = ctx.arg(1);
    let raw = family == AF_PACKET
        || ((family == AF_INET || family == AF_INET6) && (ty & SOCK_TYPE_MASK) == SOCK_RAW);
    if !raw {
        return 0;
    }
    let (action, ep, cgid) = check(GUARD_RAW_SOCKETS);
    report(action, GUARD_RAW_SOCKETS, ep, cgid, family as u64, TIER_LSM)
}
