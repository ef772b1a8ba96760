//! How the process gets memory from the OS.
//!
//! A training step allocates and frees the same large activation and
//! gradient buffers (megabytes each) hundreds of times. With glibc's default
//! settings most of them are mmapped, or trimmed back to the OS when freed,
//! and every reuse then page-faults on fresh zeroed pages: on the GRPO
//! benchmark that was 14-22 % of the CPU time (`clear_page_erms` in the
//! kernel), more with several worker threads (each has its own arena).

/// Keeps freed memory in the process for reuse: blocks up to 32 MB (glibc's
/// ceiling for this setting) come from the heap, the heap is never trimmed,
/// and all threads share it. The resident size stays at its peak instead of going up and down
/// every step. Call once, first thing in `main`. No effect outside glibc.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // glibc <malloc.h>
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_MMAP_THRESHOLD: i32 = -3;
        const M_ARENA_MAX: i32 = -8;
        extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        // SAFETY: mallopt only changes allocator parameters; it is called
        // before the program's threads start.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 32 << 20);
            mallopt(M_TRIM_THRESHOLD, i32::MAX);
            // One arena for all threads: a worker thread's own arena is
            // unmapped whenever all of it is free (after every parallel
            // section), whatever the trim threshold.
            mallopt(M_ARENA_MAX, 1);
        }
    }
}
