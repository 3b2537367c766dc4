//! Exemption of container runtime tasks that work inside a pod's cgroup.
//!
//! # Why
//!
//! Container runtimes do privileged work *inside* a pod's cgroup. Since runc 1.4.0,
//! `runc exec` (kubectl exec, exec probes) creates its `runc init` directly in the
//! container's cgroup with `clone3(CLONE_INTO_CGROUP)`; that task execs the runc binary,
//! joins the container's namespaces (`setns()`, CAP_SYS_ADMIN), maybe changes its user,
//! and finally execs the user's command. The container's cgroup was armed long ago (its
//! workload exec'd), so without an exemption the guards deny `runc init`'s setns and,
//! under restricted, its exec as root: `kubectl exec` breaks in guarded namespaces. Older
//! runc joins the namespaces first and has its parent write the already running `runc
//! init` into `cgroup.procs` before it execs the command (and, for a new container,
//! before the set-up). A runtime that *creates* containers with `CLONE_INTO_CGROUP` would
//! also arm the fresh cgroup with the exec of its own binary, before the container's
//! set-up (mounts, the pod's sysctls, device nodes) has run.
//!
//! # What is exempt, and until when
//!
//! A per-task mark in task local storage (`EXEMPT`: keyed by the task itself, never by a
//! PID, freed with the task) with the number of execs the task may still do:
//!
//! | entry path | granted by | `remaining` |
//! | --- | --- | --- |
//! | migration: the task's leader is written into a pod cgroup's `cgroup.procs` or `cgroup.threads` (`tp_btf/cgroup_attach_task`) | the **writer**, which must be outside the attach root when the tracepoint runs | 1: its next exec is the workload's (runc < 1.4: the parent writes the child's pid), except a re-exec of an open file from the writer's mount namespace (recorded) |
//! | creation: the task is created into a pod cgroup other than its parent's (`clone3(CLONE_INTO_CGROUP)`, seen in `tp_btf/sched_process_fork`) | the **parent**, which must be outside the attach root | 2: the first exec is the runtime's own binary (`runc init`), the second the workload's; the mark also records the parent's mount namespace |
//! | fork by an exempt task into its own cgroup (`sched_process_fork`) | the parent's mark | the parent's count, copied |
//!
//! "A pod cgroup" is one at or below the attach root (the pods' subtree). The mark records
//! the cgroup it was granted for and counts only while the task is in that cgroup.
//!
//! While a task is exempt (`remaining` >= 1), every LSM hook and the fallback tier's
//! `sys_enter` program treat it as not guarded. At `sched_process_exec` (`guard_exec`),
//! which runs once the new program is in place and before it runs an instruction:
//! - `remaining` >= 2, and the task is still in the mount namespace its mark recorded (if
//!   it recorded one): the count goes down by one; this exec is exempt: not checked by the
//!   exec-time guards and it **does not arm** the cgroup.
//! - otherwise (`remaining` == 1, or the task has moved to another mount namespace): the
//!   mark is removed, and this exec is handled like the exec of a task that was never
//!   exempt: in an armed cgroup the exec-time guards (root-exec, root-escalation of
//!   setuid/file-capability binaries) check it, in an unarmed cgroup it arms it (and, as
//!   every arming exec, is not checked).
//!
//! Why the mount namespace: runc execs its own binary *before* it joins the container's
//! namespaces, so that exec happens in the namespace of the runtime that created the
//! task. crun does not exec itself: its exec sessions are created with
//! `CLONE_INTO_CGROUP` too, join the container's namespaces and exec the user's command
//! directly. Counting alone would let that command run exempt until its next exec; an
//! exec from another mount namespace than the creator's is the workload's, whatever the
//! count. Only the runtime's own code runs under a creation mark before that exec, so
//! only the runtime decides where it execs.
//!
//! So the exec that ends an exemption is the workload's, and it is checked:
//! - migration (1): the migrated task's next exec. `kubectl exec` with runc < 1.4 in an
//!   armed container: the user's command exec'd as root under restricted is denied (LSM:
//!   `bprm_creds_from_file` returns EPERM; fallback: SIGKILL before its first
//!   instruction). Container creation by runc < 1.4: that exec is the entrypoint's, which
//!   arms the new cgroup, as before.
//! - creation (2): the exec of the runc binary passes (root, unchecked, not arming); the
//!   second exec, the user's command, is checked (or arms a fresh container cgroup). With
//!   crun the first exec is already the user's command, from the container's mount
//!   namespace, and it is checked.
//!
//! In the LSM tier the exec check runs in `bprm_creds_from_file`, *before*
//! `sched_process_exec` updates the count: it applies the same rule (`subject_exec`). An exec that fails consumes nothing. Hooks that run
//! between the two (the kernel's own exec steps) still see the task as exempt; the new
//! program never does.
//!
//! # Which programs honour it
//!
//! - LSM tier: every hook (`subject()` checks the mark; `subject_exec()` for
//!   `bprm_creds_from_file`).
//! - Fallback tier: `guard_sys_enter` (`subject()`) and the exec checks of `guard_exec`.
//! - Not the cgroup programs (`guard_device`, `guard_sysctl`, the fallback's
//!   `guard_sock_create` for raw IP sockets): they keep relying on arming alone. On Linux
//!   6.1 (the VM tier, COS 109, Debian 12) `bpf_task_storage_get` is offered only to
//!   tracing (`bpf_tracing_func_proto`), LSM (`bpf_lsm_func_proto`) and struct_ops
//!   programs; the cgroup program types get `cgroup_common_func_proto`,
//!   `cgroup_current_func_proto` and `bpf_base_func_proto`, none of which has it, so the
//!   verifier rejects the call and the program would not load. Linux 6.16 moved the task
//!   storage helpers into `bpf_base_func_proto` ("bpf: Allow some trace helpers for all
//!   prog types"; a `cgroup/dev` program calling it loads on this project's 6.18 host),
//!   but one object has one behaviour on every kernel: an exec session needs no host
//!   device, no sysctl write and no raw socket, so the exemption stays as small as its
//!   purpose.
//!   What it means: in an *armed* cgroup an exempt task still gets EPERM for host
//!   devices, sysctl writes and (fallback tier) raw IP sockets. Container set-up, which
//!   needs them, happens before the cgroup is armed (exempt execs never arm it).
//!
//! # Why a workload cannot obtain it
//!
//! Only an actor outside the pods' cgroup subtree grants a mark, and every task of a pod
//! is inside it:
//! - Its forks have a parent inside the subtree. A fork into its own cgroup copies the
//!   parent's mark (it has none); a fork into another cgroup (`CLONE_INTO_CGROUP`, which
//!   needs write permission on the target's `cgroup.procs` and on the common ancestor's)
//!   gets nothing, not even an exempt parent's mark.
//! - Its writes to `cgroup.procs` are writes by a task inside the subtree: they grant
//!   nothing, and they *remove* the mark of every task they move. (Pods normally cannot
//!   write there at all: cgroupfs is mounted read-only in containers, and their cgroup
//!   namespace hides every cgroup but their own.) A task moving itself is never granted
//!   one either: the tracepoint runs after the move, so the writer is then inside the pod
//!   (where it came from is not observable there; runtimes move their children from the
//!   parent, and the test harness's self-move is, like a workload's, not exempt).
//! - It cannot make a trusted task outside do it for it without access to the runtime's
//!   API (the node, not the pod), and it cannot extend a mark: marks live in kernel memory,
//!   are keyed by the task (a recycled PID names a new task without one), die with their
//!   task, and their count only goes down or is copied to the marked task's own forks.
//!
//! Limits:
//! - A pod that can leave the subtree is not meaningfully guarded, and can grant marks: a
//!   privileged pod (or one with `hostPID` and CAP_SYS_ADMIN, with a writable cgroupfs)
//!   can write its own or a host process into a cgroup outside the attach root, and from
//!   there migrate or `CLONE_INTO_CGROUP` tasks into pods.
//! - A workload that controls an exempt task acts with its freedom until that task's last
//!   exec: `runc init` is not dumpable, so attaching to it needs CAP_SYS_PTRACE, which
//!   dangerous-capabilities denies; a pod without that guard could ptrace it.
//! - A trusted writer outside that moves an already running workload process into a pod
//!   (no runtime does) exempts it until its next exec, which may never come.
//! - Migration marks only the task the tracepoint reports: for a `cgroup.procs` write the
//!   thread-group leader. Other threads moved with it stay guarded (runtimes exec from the
//!   leader: runc locks `runc init` to its main thread).
//! - The counts follow runc's pattern, the mount namespace crun's. A runtime whose
//!   `CLONE_INTO_CGROUP` child execs the workload directly *without* joining another
//!   mount namespace first would leave the workload exempt until its next exec (no OCI
//!   runtime we know does: the workload must see the container's filesystem); one that
//!   execs its own binary again after entering would have that exec taken for the
//!   workload's. The one such exec we know is handled: runc 1.1's `runc init` re-execs
//!   itself from a sealed memfd copy at start (CVE-2019-5736 protection, moved into the
//!   parent in runc 1.2), racing with its parent, which may have moved it already. Seen on
//!   a real node (Debian's runc 1.1.5): the re-exec ended the migration mark and armed the
//!   new container's cgroup, and the `setns()` of `runc:[1:CHILD]` was then denied, so
//!   that containers of guarded pods failed to start at random. An exec of an open file
//!   (`/dev/fd/N`) by a migrated task, from the mount namespace of the runtime that moved
//!   it (recorded with the mark), is the runtime's: it consumes nothing (`runtime_reexec`).
//! - A runtime helper placed inside the subtree (CRI-O with `conmon_cgroup = "pod"`) is
//!   itself inside: nothing it starts is exempt.
//! - Without the BTF offsets of `task_struct.cgroups`, `css_set.dfl_cgrp`, `cgroup.kn` and
//!   `kernfs_node.id`/`parent` no mark is granted: runtime work is guarded as if this
//!   module did not exist.
//! - In tracing programs the task storage helpers can fail with EBUSY when they interrupt
//!   another task storage user on the same CPU. A grant that fails leaves the task guarded
//!   (fail closed); a removal that fails zeroes the count first, and a zero count is no
//!   exemption. Both are counted (`CNT_EXEMPT_ERRORS`).

use aya_ebpf::{
    helpers::generated::{
        bpf_get_current_cgroup_id, bpf_get_current_task_btf, bpf_probe_read_kernel_str,
    },
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use enforcer_common::*;

use super::{has, kptr, kread, off};
use crate::{
    endpoint,
    maps::{config, count, EXEMPT},
    task_storage::task_struct,
};

/// Offsets every exemption decision needs (cgroup of a task that is not current).
const TASK_CGROUP: u64 = OFF_TASK_CGROUPS
    | OFF_CSS_SET_DFL_CGRP
    | OFF_CGROUP_KN
    | OFF_KERNFS_NODE_ID
    | OFF_KERNFS_NODE_PARENT;

/// How many kernfs ancestors of a cgroup are compared with the attach root. Pod cgroups
/// are 1 to 4 levels below it; a cgroup deeper than this below the root is treated as
/// outside it (no exemption: the safe side).
const MAX_ROOT_WALK: u32 = 16;

#[inline(always)]
fn current_task() -> *mut task_struct {
    // SAFETY: helper without arguments; returns the current task as a BTF pointer.
    unsafe { bpf_get_current_task_btf() }
}

/// Is the current task exempt in cgroup `cgid` with at least `min` (>= 1) execs left?
#[inline(always)]
pub fn current_is_exempt(cgid: u64, min: u32) -> bool {
    // SAFETY: a BTF task pointer from the helper.
    match unsafe { EXEMPT.get(current_task()) } {
        // SAFETY: a non-null map value of the right type.
        Some(v) => unsafe { (*v).cgroup_id == cgid && (*v).remaining >= min },
        None => false,
    }
}

/// Offsets of a task's mount namespace.
const MNT_NS: u64 = OFF_TASK_NSPROXY | OFF_NSPROXY_MNT_NS | OFF_MNT_NS_INUM;

/// The inode number of the current task's mount namespace; 0 if unknown.
#[inline(always)]
fn current_mnt_ns() -> u32 {
    if !has(MNT_NS) {
        return 0;
    }
    let nsproxy = kptr(current_task() as u64, off!(task_nsproxy));
    let mnt_ns = kptr(nsproxy, off!(nsproxy_mnt_ns));
    kread(mnt_ns, off!(mnt_ns_inum), 0u32)
}

/// May an exec by a task with mark `v`, in cgroup `cgid`, be the runtime's own? Only
/// while it is not the last exec of the mark, and, when the mark recorded the mount
/// namespace of the runtime that created the task, only from that namespace: a task that
/// has joined the container's mount namespace execs the workload.
#[inline(always)]
fn runtime_exec(v: &ExemptTask, cgid: u64) -> bool {
    v.cgroup_id == cgid && v.remaining >= 2 && (v.mnt_ns == 0 || v.mnt_ns == current_mnt_ns())
}

/// Is `bprm` the exec of an already open file (`fexecve`, `execveat(fd, "",
/// AT_EMPTY_PATH)`)? The kernel names such a file `/dev/fd/N`.
#[inline(always)]
pub fn fd_exec(bprm: u64) -> bool {
    if bprm == 0 || !has(OFF_BINPRM_FILENAME) {
        return false;
    }
    let name = kptr(bprm, off!(binprm_filename));
    if name == 0 {
        return false;
    }
    let mut head = [0u64; 2];
    // SAFETY: reads at most 16 bytes into `head`; the helper copes with a bad address.
    unsafe {
        bpf_probe_read_kernel_str(head.as_mut_ptr() as *mut _, 16, name as *const _);
    }
    head[0] == u64::from_le_bytes(*b"/dev/fd/")
}

/// runc before 1.2 starts `runc init` by re-executing it from a sealed memfd copy
/// (`fexecve`, CVE-2019-5736), and its parent may have moved it into the container's
/// cgroup already. That exec, of an open file, from the mount namespace of the runtime
/// that moved the task, is the runtime's own: it neither ends the mark nor arms the
/// cgroup. The workload's exec comes after the task joined the container's mount
/// namespace (and is of a path).
#[inline(always)]
fn runtime_reexec(v: &ExemptTask, cgid: u64, fd: bool) -> bool {
    fd && v.cgroup_id == cgid
        && v.remaining >= 1
        && v.via & 0xff == EXEMPT_VIA_MIGRATION
        && v.mnt_ns != 0
        && v.mnt_ns == current_mnt_ns()
}

/// Is the current task's exec of `bprm` in cgroup `cgid` exempt (checked before it
/// happens, by the LSM tier's `bprm_creds_from_file`)? See [`runtime_exec`] and
/// [`runtime_reexec`].
#[inline(always)]
pub fn current_exec_is_exempt(cgid: u64, bprm: u64) -> bool {
    // SAFETY: a BTF task pointer from the helper.
    match unsafe { EXEMPT.get(current_task()) } {
        // SAFETY: a non-null map value of the right type.
        Some(v) => unsafe { runtime_exec(&*v, cgid) || runtime_reexec(&*v, cgid, fd_exec(bprm)) },
        None => false,
    }
}

/// The current task execs `bprm` in cgroup `cgid` (`sched_process_exec`): consume one
/// exec of its exemption (none for the runtime's re-exec, [`runtime_reexec`]). True if this exec is exempt (not checked, does not arm); false if the task
/// had no exemption here or this exec ended it (the workload's exec, see
/// [`runtime_exec`]).
#[inline(always)]
pub fn consume_exec(cgid: u64, bprm: u64) -> bool {
    let task = current_task();
    // SAFETY: a BTF task pointer from the helper.
    let Some(v) = (unsafe { EXEMPT.get(task) }) else {
        return false;
    };
    // SAFETY: a non-null map value of the right type.
    unsafe {
        if runtime_reexec(&*v, cgid, fd_exec(bprm)) {
            count(CNT_EXEMPT_PASSED);
            return true;
        }
        if runtime_exec(&*v, cgid) {
            (*v).remaining -= 1;
            count(CNT_EXEMPT_PASSED);
            return true;
        }
    }
    end(task, v);
    false
}

/// Remove a mark: zero its count first (a zero count is no exemption, should the delete
/// fail), then delete it.
#[inline(always)]
fn end(task: *mut task_struct, v: *mut ExemptTask) {
    // SAFETY: a non-null map value of the right type; `task` is a BTF task pointer.
    unsafe {
        (*v).remaining = 0;
        if EXEMPT.delete(task).is_err() {
            count(CNT_EXEMPT_ERRORS);
        }
    }
}

/// Mark `task` exempt in `cgid` for `execs` execs (replacing any mark it had); `mnt_ns`:
/// the creating runtime's mount namespace, or 0.
#[inline(always)]
fn grant(task: *mut task_struct, cgid: u64, execs: u32, via: u32, mnt_ns: u32) {
    let mut init = ExemptTask {
        cgroup_id: cgid,
        remaining: execs,
        via,
        mnt_ns,
        _pad: 0,
    };
    // SAFETY: `task` is a BTF task pointer (tracepoint argument); `init` is a valid value.
    match unsafe { EXEMPT.get_or_insert(task, &mut init) } {
        Some(v) => {
            // SAFETY: a non-null map value of the right type (an existing mark is
            // overwritten).
            unsafe {
                (*v).cgroup_id = cgid;
                (*v).remaining = execs;
                (*v).via = via;
                (*v).mnt_ns = mnt_ns;
            }
            count(CNT_EXEMPT_GRANTED);
        }
        None => count(CNT_EXEMPT_ERRORS),
    }
}

/// Remove `task`'s mark if it has one.
#[inline(always)]
fn revoke(task: *mut task_struct) {
    // SAFETY: `task` is a BTF task pointer (tracepoint argument).
    if let Some(v) = unsafe { EXEMPT.get(task) } {
        end(task, v);
    }
}

/// The id of the cgroup whose kernfs node is `kn`, and whether it is the attach root
/// `root` or below it (compared over at most `MAX_ROOT_WALK` ancestors).
#[inline(always)]
fn kn_under_root(kn: u64, root: u64) -> (u64, bool) {
    let cgid = kread(kn, off!(kernfs_node_id), 0u64);
    if cgid == 0 || root == 0 {
        return (cgid, false);
    }
    let mut cur = kn;
    let mut i = 0;
    while i < MAX_ROOT_WALK {
        if cur == 0 {
            break;
        }
        if kread(cur, off!(kernfs_node_id), 0u64) == root {
            return (cgid, true);
        }
        cur = kptr(cur, off!(kernfs_node_parent));
        i += 1;
    }
    (cgid, false)
}

/// A fork into the parent's own cgroup `cgid`: the child inherits an exempt parent's mark.
#[inline(always)]
fn inherit(parent: *mut task_struct, child: *mut task_struct, cgid: u64) {
    // SAFETY: a BTF task pointer (tracepoint argument).
    let Some(v) = (unsafe { EXEMPT.get(parent) }) else {
        return;
    };
    // SAFETY: a non-null map value of the right type.
    let pv = unsafe { *v };
    if pv.remaining == 0 || pv.cgroup_id != cgid {
        return;
    }
    let mut init = ExemptTask {
        via: pv.via | EXEMPT_INHERITED,
        ..pv
    };
    // SAFETY: as above; the child is new, so this creates its mark.
    if unsafe { EXEMPT.get_or_insert(child, &mut init) }.is_none() {
        count(CNT_EXEMPT_ERRORS);
    }
}

/// Grants on creation, inheritance by fork. `sched_process_fork(struct task_struct
/// *parent, struct task_struct *child)` runs in the parent once the child is fully set up
/// (its cgroup included) and before it first runs. It runs for every fork and thread of
/// the node: the common case, a child in its parent's css_set whose parent has no mark,
/// costs two reads and one task storage lookup.
#[btf_tracepoint(function = "sched_process_fork")]
pub fn guard_fork(ctx: BtfTracePointContext) -> i32 {
    let parent: *mut task_struct = ctx.arg(0);
    let child: *mut task_struct = ctx.arg(1);
    if !has(TASK_CGROUP) {
        return 0;
    }
    let parent_css = kptr(parent as u64, off!(task_cgroups));
    let child_css = kptr(child as u64, off!(task_cgroups));
    // SAFETY: helper without arguments (current is the parent).
    let parent_cgid = || unsafe { bpf_get_current_cgroup_id() };
    if parent_css == child_css {
        inherit(parent, child, parent_cgid());
        return 0;
    }
    let child_kn = kptr(kptr(child_css, off!(css_set_dfl_cgrp)), off!(cgroup_kn));
    let child_cgid = kread(child_kn, off!(kernfs_node_id), 0u64);
    let cgid = parent_cgid();
    if child_cgid == cgid {
        // Another css_set, same cgroup v2 cgroup (a cgroup v1 hierarchy differs).
        inherit(parent, child, cgid);
        return 0;
    }
    // Created into another cgroup (CLONE_INTO_CGROUP): a grant if the parent is outside
    // the pods and the child inside. (An exempt parent's mark does not follow its child
    // there: the parent is inside.)
    let Some(cfg) = config() else {
        return 0;
    };
    if endpoint::current_under_root(cfg.root_cgroup_id, cfg.root_level) {
        return 0;
    }
    let (cgid, under) = kn_under_root(child_kn, cfg.root_cgroup_id);
    if under {
        // The parent is current: its mount namespace is the runtime's.
        grant(
            child,
            cgid,
            EXEMPT_EXECS_CLONE,
            EXEMPT_VIA_CLONE,
            current_mnt_ns(),
        );
    }
    0
}

/// Grants on migration. `cgroup_attach_task(struct cgroup *dst_cgrp, const char *path,
/// struct task_struct *task, bool threadgroup)` runs in the writer, after `task` (the
/// leader, for a whole thread group) was moved into `dst_cgrp`.
#[btf_tracepoint(function = "cgroup_attach_task")]
pub fn guard_cgroup_attach(ctx: BtfTracePointContext) -> i32 {
    let dst: u64 = ctx.arg(0);
    let task: *mut task_struct = ctx.arg(2);
    let Some(cfg) = config() else {
        return 0;
    };
    if !has(TASK_CGROUP) {
        return 0;
    }
    let writer_outside = !endpoint::current_under_root(cfg.root_cgroup_id, cfg.root_level);
    let (cgid, under) = kn_under_root(kptr(dst, off!(cgroup_kn)), cfg.root_cgroup_id);
    if writer_outside && under {
        // The writer is current: its mount namespace is the runtime's.
        grant(
            task,
            cgid,
            EXEMPT_EXECS_MIGRATION,
            EXEMPT_VIA_MIGRATION,
            current_mnt_ns(),
        );
    } else {
        // Moved out of the pods, or by a task inside them: whatever mark it had ends.
        revoke(task);
    }
    0
}
