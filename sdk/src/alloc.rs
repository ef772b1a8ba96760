//! A small-block allocator for plugin instances (cargo feature `fast-alloc`).
//!
//! Every value that crosses the component boundary is allocated in the
//! plugin: the host calls `cabi_realloc` for each string and list it lowers
//! (five or more per completion), the bindings turn lists into `Vec`s, and
//! the rule allocates its score. The default wasm allocator (dlmalloc) spends
//! most of a cheap rule's time there. This one serves sizes up to 2 KiB from
//! per-size-class free lists carved out of 64 KiB chunks (a few instructions
//! per call); larger blocks go to the system allocator. Small blocks are
//! reused but never returned, so an instance's memory is its peak use, which
//! the host's memory cap bounds anyway.
//!
//! Only for single-threaded programs (a wasm32 component instance is one):
//! it keeps its state without locks.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::ptr::null_mut;

/// Size classes 8, 16, ..., 2048 bytes.
const CLASSES: usize = 9;
const MAX_SMALL: usize = 8 << (CLASSES - 1);
const CHUNK: usize = 64 << 10;

pub struct PluginAlloc {
    state: UnsafeCell<State>,
}

struct State {
    /// Head of each class's free list (the next pointer lives in the block).
    free: [*mut u8; CLASSES],
    /// Each class carves fresh blocks from its own chunk, so a block is
    /// aligned to its class size (chunks are aligned to `MAX_SMALL`).
    next: [*mut u8; CLASSES],
    end: [*mut u8; CLASSES],
}

// SAFETY: installed only in single-threaded programs (wasm32 component
// instances), where no two calls can run at once.
unsafe impl Sync for PluginAlloc {}

impl PluginAlloc {
    pub const fn new() -> Self {
        PluginAlloc {
            state: UnsafeCell::new(State {
                free: [null_mut(); CLASSES],
                next: [null_mut(); CLASSES],
                end: [null_mut(); CLASSES],
            }),
        }
    }
}

impl Default for PluginAlloc {
    fn default() -> Self {
        Self::new()
    }
}

/// The class serving `layout`: its size rounded up to a power of two that
/// is also at least the alignment.
fn class(layout: &Layout) -> Option<usize> {
    let size = layout.size().max(layout.align()).max(8);
    if size > MAX_SMALL {
        return None;
    }
    Some(size.next_power_of_two().trailing_zeros() as usize - 3)
}

unsafe impl GlobalAlloc for PluginAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(c) = class(&layout) else {
            return System.alloc(layout);
        };
        let st = &mut *self.state.get();
        let head = st.free[c];
        if !head.is_null() {
            st.free[c] = *(head as *mut *mut u8);
            return head;
        }
        let size = 8usize << c;
        if st.next[c] == st.end[c] {
            // Both null at first: take a new chunk for this class.
            let chunk = System.alloc(Layout::from_size_align_unchecked(CHUNK, MAX_SMALL));
            if chunk.is_null() {
                return null_mut();
            }
            st.next[c] = chunk;
            st.end[c] = chunk.add(CHUNK);
        }
        let p = st.next[c];
        st.next[c] = p.add(size);
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match class(&layout) {
            Some(c) => {
                let st = &mut *self.state.get();
                *(ptr as *mut *mut u8) = st.free[c];
                st.free[c] = ptr;
            }
            None => System.dealloc(ptr, layout),
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = Layout::from_size_align_unchecked(new_size, layout.align());
        match (class(&layout), class(&new)) {
            // Same block size: nothing to move.
            (Some(a), Some(b)) if a == b => ptr,
            (None, None) => System.realloc(ptr, layout, new_size),
            _ => {
                let p = self.alloc(new);
                if !p.is_null() {
                    std::ptr::copy_nonoverlapping(ptr, p, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
                p
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_round_up_and_respect_alignment() {
        let l = |s, a| Layout::from_size_align(s, a).unwrap();
        assert_eq!(class(&l(1, 1)), Some(0));
        assert_eq!(class(&l(8, 8)), Some(0));
        assert_eq!(class(&l(9, 1)), Some(1));
        assert_eq!(class(&l(3, 64)), Some(3));
        assert_eq!(class(&l(2048, 8)), Some(8));
        assert_eq!(class(&l(2049, 8)), None);
    }

    #[test]
    fn blocks_are_aligned_distinct_reused_and_keep_their_bytes() {
        let a = PluginAlloc::new();
        unsafe {
            let mut live = Vec::new();
            for (i, size) in [1usize, 7, 8, 24, 100, 1000, 2048, 5000, 70_000]
                .iter()
                .cycle()
                .take(2000)
                .enumerate()
            {
                let align = [1, 8, 16][i % 3];
                let layout = Layout::from_size_align(*size, align).unwrap();
                let p = a.alloc(layout);
                assert!(!p.is_null());
                assert_eq!(p as usize % align, 0);
                std::ptr::write_bytes(p, (i % 251) as u8, *size);
                live.push((p, layout, (i % 251) as u8));
            }
            // No two live blocks overlap, and none was overwritten.
            let mut spans: Vec<(usize, usize)> = live
                .iter()
                .map(|(p, l, _)| (*p as usize, *p as usize + l.size()))
                .collect();
            spans.sort();
            assert!(spans.windows(2).all(|w| w[0].1 <= w[1].0));
            for (p, l, v) in &live {
                assert!(std::slice::from_raw_parts(*p, l.size())
                    .iter()
                    .all(|b| b == v));
            }
            // Freed small blocks are handed out again.
            let (p, l, _) = live.pop().unwrap();
            a.dealloc(p, l);
            let (p2, l2, _) = live.pop().unwrap();
            a.dealloc(p2, l2);
            assert_eq!(a.alloc(l2), p2);
            // realloc within a class keeps the pointer; across classes it copies.
            let l = Layout::from_size_align(10, 1).unwrap();
            let p = a.alloc(l);
            std::ptr::copy_nonoverlapping(b"0123456789".as_ptr(), p, 10);
            assert_eq!(a.realloc(p, l, 16), p);
            let q = a.realloc(p, Layout::from_size_align(16, 1).unwrap(), 3000);
            assert_eq!(std::slice::from_raw_parts(q, 10), b"0123456789");
            a.dealloc(q, Layout::from_size_align(3000, 1).unwrap());
            for (p, l, _) in live {
                a.dealloc(p, l);
            }
        }
    }
}
