//! The C interface of the shim (csrc/c10d_shim.h) and the one helper that
//! turns its error strings into Rust errors.

use std::ffi::{c_char, c_int, c_void, CStr};

#[repr(C)]
pub struct RawStore {
    _private: [u8; 0],
}
#[repr(C)]
pub struct RawGroup {
    _private: [u8; 0],
}
#[repr(C)]
pub struct RawWork {
    _private: [u8; 0],
}

pub const OP_SUM: c_int = 0;
pub const OP_AVG: c_int = 1;
pub const OP_MIN: c_int = 3;
pub const OP_MAX: c_int = 4;

extern "C" {
    pub fn lmm_dist_free_error(error: *mut c_char);
    pub fn lmm_dist_free_bytes(value: *mut u8);

    pub fn lmm_dist_store_new(
        host: *const c_char,
        port: u16,
        is_server: c_int,
        timeout_ms: i64,
        out: *mut *mut RawStore,
        port_out: *mut u16,
    ) -> *mut c_char;
    pub fn lmm_dist_store_free(store: *mut RawStore);
    pub fn lmm_dist_store_set(
        store: *mut RawStore,
        key: *const c_char,
        value: *const u8,
        len: u64,
    ) -> *mut c_char;
    pub fn lmm_dist_store_get(
        store: *mut RawStore,
        key: *const c_char,
        value: *mut *mut u8,
        len: *mut u64,
    ) -> *mut c_char;
    pub fn lmm_dist_store_add(
        store: *mut RawStore,
        key: *const c_char,
        delta: i64,
        out: *mut i64,
    ) -> *mut c_char;
    pub fn lmm_dist_store_check(
        store: *mut RawStore,
        key: *const c_char,
        present: *mut c_int,
    ) -> *mut c_char;
    pub fn lmm_dist_store_delete(
        store: *mut RawStore,
        key: *const c_char,
        deleted: *mut c_int,
    ) -> *mut c_char;
    pub fn lmm_dist_store_num_keys(store: *mut RawStore, out: *mut i64) -> *mut c_char;
    pub fn lmm_dist_store_wait(
        store: *mut RawStore,
        keys: *const *const c_char,
        n_keys: u64,
        timeout_ms: i64,
    ) -> *mut c_char;

    pub fn lmm_dist_group_new_gloo(
        store: *mut RawStore,
        prefix: *const c_char,
        rank: c_int,
        world_size: c_int,
        timeout_ms: i64,
        out: *mut *mut RawGroup,
    ) -> *mut c_char;
    #[cfg(lmmhost_nccl)]
    pub fn lmm_dist_group_new_nccl(
        store: *mut RawStore,
        prefix: *const c_char,
        rank: c_int,
        world_size: c_int,
        timeout_ms: i64,
        device_index: c_int,
        out: *mut *mut RawGroup,
    ) -> *mut c_char;
    pub fn lmm_dist_group_free(group: *mut RawGroup);

    pub fn lmm_dist_all_reduce(
        group: *mut RawGroup,
        tensor: *mut c_void,
        op: c_int,
        out: *mut *mut RawWork,
    ) -> *mut c_char;
    pub fn lmm_dist_broadcast(
        group: *mut RawGroup,
        tensor: *mut c_void,
        root: c_int,
        out: *mut *mut RawWork,
    ) -> *mut c_char;
    pub fn lmm_dist_all_gather(
        group: *mut RawGroup,
        output: *mut c_void,
        input: *mut c_void,
        out: *mut *mut RawWork,
    ) -> *mut c_char;
    pub fn lmm_dist_reduce_scatter(
        group: *mut RawGroup,
        output: *mut c_void,
        input: *mut c_void,
        op: c_int,
        out: *mut *mut RawWork,
    ) -> *mut c_char;
    pub fn lmm_dist_barrier(group: *mut RawGroup, out: *mut *mut RawWork) -> *mut c_char;

    pub fn lmm_dist_work_wait(work: *mut RawWork, timeout_ms: i64) -> *mut c_char;
    pub fn lmm_dist_work_free(work: *mut RawWork);

    pub fn lmm_dist_grad_hook_add(
        param: *mut c_void,
        callback: GradHookFn,
        context: *mut c_void,
        index: i64,
        handle: *mut u32,
    ) -> *mut c_char;
    pub fn lmm_dist_grad_hook_remove(param: *mut c_void, handle: u32) -> *mut c_char;
}

/// What the shim calls with a parameter's gradient (a new `at::Tensor*`).
pub type GradHookFn = unsafe extern "C" fn(context: *mut c_void, index: i64, grad: *mut c_void);

/// `Ok(())` for a null error pointer; otherwise the message (freed here).
pub fn check(error: *mut c_char) -> Result<(), String> {
    if error.is_null() {
        return Ok(());
    }
    // SAFETY: a non-null error is a NUL-terminated string malloc'd by the
    // shim, owned by us from here on.
    let message = unsafe { CStr::from_ptr(error) }
        .to_string_lossy()
        .trim()
        .to_owned();
    unsafe { lmm_dist_free_error(error) };
    Err(message)
}

/// The `at::Tensor*` behind a tch tensor, as the shim takes it.
pub fn tensor_ptr(tensor: &tch::Tensor) -> *mut c_void {
    tensor.as_ptr() as *mut c_void
}
