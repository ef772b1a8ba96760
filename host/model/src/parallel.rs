//! Data parallelism across CPU cores inside one step: independent pieces of a
//! batch (row chunks of a generation, micro-batches of a log-prob pass or an
//! update) run on `workers` threads at once, each with its share of libtorch's
//! intra-op threads.
//!
//! Why: at the sizes RL on small models runs (hidden 128-1024, batches of a
//! few thousand tokens) most libtorch ops are too small to split across cores
//! well, so with 2 intra-op threads one core idles through every small op and
//! both wait at each op's barrier. Two workers with one thread each keep both
//! cores busy, and a worker descheduled by another process no longer stalls
//! the other at every barrier.
//!
//! Results never depend on which worker ran a job or when: jobs are assigned
//! round-robin, results come back in job order, and callers combine them in
//! that order (gradients included), so a run is reproducible for a given
//! worker count.

use anyhow::{Context, Result};

/// A value (a model, tensors) that worker threads may only read.
///
/// `tch::Tensor` is `Send` but not `Sync`: it is a handle to a C++ object that
/// Rust cannot see into. libtorch ops are safe to call concurrently on tensors
/// that no thread writes to, and autograd locks each leaf while it accumulates
/// a gradient. So sharing is sound exactly when every thread only reads the
/// value: forward passes that build their own activations and caches, and
/// gradients returned per thread (`Tensor::f_run_backward`) rather than
/// accumulated into `.grad` or applied in place. The compiler cannot check
/// that, so building one is `unsafe` and each use states why it holds.
pub struct ReadOnlyShared<T>(T);

impl<T> ReadOnlyShared<T> {
    /// # Safety
    ///
    /// While the value is shared, no thread may write to the libtorch objects
    /// it reaches (no in-place ops on them, no optimizer step, no `.grad`
    /// accumulation, no `set_requires_grad`), and they must outlive the
    /// threads (scoped threads, as in [`map_jobs`]).
    pub unsafe fn new(value: T) -> Self {
        ReadOnlyShared(value)
    }

    /// The shared value.
    pub fn get(&self) -> &T {
        &self.0
    }
}

// SAFETY: `new`'s contract: the value is only read while shared.
unsafe impl<T> Sync for ReadOnlyShared<T> {}
// SAFETY: as above; the scoped worker threads end before the value does.
unsafe impl<T> Send for ReadOnlyShared<T> {}

/// Runs `f(index, job)` for every job on up to `workers` threads and returns
/// the results in job order. Job `i` runs on worker `i % workers`, in order.
/// Each worker gets `threads / workers` (at least 1) libtorch intra-op
/// threads, where `threads` is the calling thread's current count, which is
/// restored afterwards. With one worker (or one job) the jobs run inline.
///
/// An error names the job; a panicking job panics the caller.
pub fn map_jobs<J, R, F>(jobs: Vec<J>, workers: usize, f: F) -> Result<Vec<R>>
where
    J: Send,
    R: Send,
    F: Fn(usize, J) -> Result<R> + Sync,
{
    let n = jobs.len();
    let w = workers.clamp(1, n.max(1));
    if w == 1 {
        return jobs.into_iter().enumerate().map(|(i, j)| f(i, j)).collect();
    }
    let threads = tch::get_num_threads().max(1);
    let each = (threads / w as i32).max(1);
    let mut lists: Vec<Vec<(usize, J)>> = (0..w).map(|_| Vec::new()).collect();
    for (i, j) in jobs.into_iter().enumerate() {
        lists[i % w].push((i, j));
    }
    let f = &f;
    let done: Vec<Vec<(usize, Result<R>)>> = std::thread::scope(|s| {
        let handles: Vec<_> = lists
            .into_iter()
            .map(|list| {
                s.spawn(move || {
                    tch::set_num_threads(each);
                    list.into_iter()
                        .map(|(i, j)| (i, f(i, j)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    // set_num_threads also sets libtorch's process-wide default, which the
    // workers lowered.
    tch::set_num_threads(threads);
    let mut out: Vec<Option<Result<R>>> = (0..n).map(|_| None).collect();
    for (i, r) in done.into_iter().flatten() {
        out[i] = Some(r);
    }
    out.into_iter()
        .enumerate()
        .map(|(i, r)| match r {
            Some(r) => r.with_context(|| format!("parallel job {i} of {n}")),
            None => unreachable!("job {i} was assigned to a worker"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Kind, Tensor};

    #[test]
    fn results_come_back_in_job_order_and_threads_are_restored() {
        tch::set_num_threads(2);
        // SAFETY: the workers only read the tensor.
        let w = unsafe { ReadOnlyShared::new(Tensor::arange(8, (Kind::Float, tch::Device::Cpu))) };
        let out = map_jobs((0..7).collect(), 2, |i, j: i64| {
            assert_eq!(i as i64, j);
            // Every worker computes with the shared tensor.
            Ok(w.get().get(j).double_value(&[]) * 10.0)
        })
        .unwrap();
        assert_eq!(out, vec![0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0]);
        assert_eq!(tch::get_num_threads(), 2);
    }

    #[test]
    fn an_error_names_its_job() {
        let e = map_jobs(vec![1, 2, 3], 2, |_, j: i32| {
            if j == 2 {
                anyhow::bail!("bad job")
            }
            Ok(j)
        })
        .unwrap_err();
        assert_eq!(format!("{e:#}"), "parallel job 1 of 3: bad job");
    }
}
