//! `BPF_MAP_TYPE_TASK_STORAGE`: aya-ebpf 0.2.1 has no type for it, so it is declared here
//! the way aya-ebpf declares its BTF maps (`btf_maps::{SkStorage, InodeStorage,
//! CgrpStorage}` and its `btf_map_def!` macro, which is private to that crate).
//!
//! Local storage maps must be BTF-defined: the kernel refuses to create one without BTF
//! key and value types (the key must be a 4-byte int), with a `max_entries` other than 0,
//! or without `BPF_F_NO_PREALLOC`. A BTF map definition is a `#[repr(C)]` struct in the
//! `.maps` section (the `#[btf_map]` attribute puts it there) whose members encode the map
//! in their *types*, which the loader reads from the object's BTF: `type` and
//! `max_entries`/`map_flags` as pointers to `int[N]` (N is the value), `key` and `value`
//! as pointers to the key and value types. The struct is never read at run time; its
//! address is what the map relocation patches into the helper calls.

use core::{ffi::c_void, ptr};

use aya_ebpf::{
    bindings::{bpf_map_type::BPF_MAP_TYPE_TASK_STORAGE, BPF_F_NO_PREALLOC},
    helpers::generated::{bpf_task_storage_delete, bpf_task_storage_get},
};

pub use aya_ebpf::bindings::task_struct;

/// `BPF_LOCAL_STORAGE_GET_F_CREATE`.
const F_CREATE: u64 = 1;

/// A task local storage map with values `T` (one per task, freed with the task).
#[repr(C)]
pub struct TaskStorage<T> {
    r#type: *const [i32; BPF_MAP_TYPE_TASK_STORAGE as usize],
    key: *const i32,
    value: *const T,
    max_entries: *const [i32; 0],
    map_flags: *const [i32; BPF_F_NO_PREALLOC as usize],
}

// SAFETY: the members are placeholders that encode the definition in BTF; nothing ever
// reads or writes them (the kernel's map replaces the struct at load), so sharing the
// static between CPUs shares nothing.
unsafe impl<T> Sync for TaskStorage<T> {}

impl<T> TaskStorage<T> {
    pub const fn new() -> Self {
        Self {
            r#type: ptr::null(),
            key: ptr::null(),
            value: ptr::null(),
            max_entries: ptr::null(),
            map_flags: ptr::null(),
        }
    }

    #[inline(always)]
    fn as_ptr(&self) -> *mut c_void {
        ptr::from_ref(self).cast_mut().cast()
    }

    /// The value of `task`, if it has one.
    ///
    /// # Safety
    ///
    /// `task` must be a task pointer the verifier knows as a BTF `task_struct` (from
    /// `bpf_get_current_task_btf()`, or a `task_struct *` argument of a BTF tracepoint or
    /// LSM hook), not an integer read with `bpf_probe_read_kernel`.
    #[inline(always)]
    pub unsafe fn get(&self, task: *mut task_struct) -> Option<*mut T> {
        // SAFETY: map and task as the helper expects (see above); no value, no flags.
        let p = unsafe { bpf_task_storage_get(self.as_ptr(), task, ptr::null_mut(), 0) };
        (!p.is_null()).then_some(p.cast())
    }

    /// The value of `task`, created as a copy of `init` if it has none (an existing value
    /// is returned unchanged). `None` if it had none and none could be created.
    ///
    /// # Safety
    ///
    /// As for [`TaskStorage::get`].
    #[inline(always)]
    pub unsafe fn get_or_insert(&self, task: *mut task_struct, init: &mut T) -> Option<*mut T> {
        // SAFETY: as above; `init` is a valid T on the stack that the kernel copies.
        let p = unsafe {
            bpf_task_storage_get(self.as_ptr(), task, ptr::from_mut(init).cast(), F_CREATE)
        };
        (!p.is_null()).then_some(p.cast())
    }

    /// Remove the value of `task`. `Err` carries the helper's negative errno (`-ENOENT`:
    /// there was none; `-EBUSY`: task storage was in use on this CPU by a program this
    /// one interrupted).
    ///
    /// # Safety
    ///
    /// As for [`TaskStorage::get`].
    #[inline(always)]
    pub unsafe fn delete(&self, task: *mut task_struct) -> Result<(), i64> {
        // SAFETY: as above.
        let r = unsafe { bpf_task_storage_delete(self.as_ptr(), task) };
        if r == 0 {
            Ok(())
        } else {
            Err(r)
        }
    }
}

impl<T> Default for TaskStorage<T> {
    fn default() -> Self {
        Self::new()
    }
}
