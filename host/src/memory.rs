//! How the process gets memory from the OS.
//!
//! A training step allocates and frees the same large activation and
//! gradient buffers (megabytes each) hundreds of times. With glibc's default
//! settings most of them are mmapped, or trimmed back to the OS when freed,
//! and every reuse then page-faults on fresh zeroed pages: on the GRPO
//! benchmark that was 14-22 % of the CPU time (`clear_page_erms` in the
//! kernel), more with several worker threads (each has its own arena).

/// How threads share the heap under [`keep_freed_memory`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arenas {
    /// One arena for all threads: a worker thread's own arena is unmapped
    /// whenever all of it is free (after every parallel section of a
    /// training step), whatever the trim threshold.
    Shared,
    /// glibc's default, an arena per thread: for many threads allocating
    /// small blocks at once (`bench reward`'s native path spends 1.6x the CPU
    /// time per completion in one shared arena).
    PerThread,
}

/// Keeps freed memory in the process for reuse: blocks up to 32 MB (glibc's
/// ceiling for this setting) come from the heap and the heap is never
/// trimmed, so the resident size stays at its peak instead of going up and
/// down every step. Call once, first thing in `main`. No effect outside glibc.
pub fn keep_freed_memory(arenas: Arenas) {
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
            if arenas == Arenas::Shared {
                mallopt(M_ARENA_MAX, 1);
            }
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = arenas;
}
