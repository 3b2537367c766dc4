//! enforcer's kernel programs.
//!
//! - `net`: NetworkPolicy datapath on cgroup hooks (cgroup_skb ingress/egress and the
//!   connect/sendmsg socket hooks), attached once at the root of the pods' cgroup subtree.
//! - `guards`: runtime guards (BPF LSM, and the fallback programs for kernels without it).
//!
//! Everything keys on cgroup ids; see `endpoint.rs` for how a cgroup resolves to a pod.
#![no_std]
#![no_main]
#![allow(static_mut_refs)]
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

mod endpoint;
mod guards;
mod maps;
mod net;
mod task_storage;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that can reach this; it is never executed.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
