//! Gradient hooks: libtorch hands each parameter's gradient to a Rust
//! callback the moment the backward pass has it, so that work on it (its
//! bucket's all-reduce) overlaps the rest of the backward. tch has no hooks;
//! these are libtorch's tensor hooks, registered through the shim.

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;

use anyhow::{anyhow, Context, Result};
use tch::Tensor;

use crate::distributed::Distributed;
use crate::ffi;

type Callback<'a> = dyn Fn(usize, Tensor) -> Result<()> + Send + Sync + 'a;

/// What the shim's hooks call back into: the callback and the first error
/// it returned (a hook cannot fail the backward pass; the error waits for
/// [`GradHooks::check`]).
struct Target<'a> {
    callback: Box<Callback<'a>>,
    error: Mutex<Option<anyhow::Error>>,
}

/// Hooks on a list of parameters, removed when dropped. While they are in
/// place, a backward pass that computes parameter `i`'s gradient calls
/// `callback(i, grad)` and continues with zeros (taking no memory) in its
/// place: the callback has taken the gradient, and whatever the backward
/// returns or accumulates for that parameter is zero.
pub struct GradHooks<'a> {
    params: Vec<(Tensor, u32)>,
    target: Box<Target<'a>>,
}

// SAFETY: the hooks call `target` from libtorch's backward threads; the
// callback is Send + Sync and the error slot a Mutex.
unsafe impl Send for GradHooks<'_> {}

impl<'a> GradHooks<'a> {
    /// Hooks `callback` onto every tensor of `params` (each must require
    /// grad). Add them only while no backward pass runs on these tensors.
    pub fn take(
        params: &[Tensor],
        callback: impl Fn(usize, Tensor) -> Result<()> + Send + Sync + 'a,
    ) -> Result<GradHooks<'a>> {
        let target = Box::new(Target {
            callback: Box::new(callback),
            error: Mutex::new(None),
        });
        let mut hooks = GradHooks {
            params: Vec::with_capacity(params.len()),
            target,
        };
        let context = &*hooks.target as *const Target as *mut c_void;
        for (i, p) in params.iter().enumerate() {
            let mut handle = 0u32;
            // SAFETY: a valid tensor; `context` points into the box that
            // `hooks` owns, and the hooks are removed (in Drop) before it
            // is freed.
            ffi::check(unsafe {
                ffi::lmm_dist_grad_hook_add(
                    ffi::tensor_ptr(p),
                    on_grad,
                    context,
                    i as i64,
                    &mut handle,
                )
            })
            .map_err(|e| anyhow!("hooking parameter {i}'s gradient: {e}"))?;
            hooks.params.push((p.shallow_clone(), handle));
        }
        Ok(hooks)
    }

    /// The first error a callback returned (or its panic), if any.
    pub fn check(&self) -> Result<()> {
        match self.target.error.lock() {
            Ok(mut slot) => slot.take().map_or(Ok(()), Err),
            Err(_) => Err(anyhow!(
                "a gradient hook panicked while holding its error slot"
            )),
        }
        .context("in a gradient hook during the backward pass")
    }
}

impl Drop for GradHooks<'_> {
    fn drop(&mut self) {
        for (p, handle) in &self.params {
            // SAFETY: the handle was returned for this tensor. Removing can
            // only fail for a handle that is not there, which cannot be.
            let _ =
                ffi::check(unsafe { ffi::lmm_dist_grad_hook_remove(ffi::tensor_ptr(p), *handle) });
        }
    }
}

/// A rank's handle for the gradient hooks of one backward pass, which run
/// on libtorch's backward threads (and may start collectives there).
#[derive(Clone, Copy)]
pub struct InBackward<'a>(&'a Distributed);

// SAFETY: `InBackward::new`'s caller promises that nothing else issues a
// collective on this rank while the hooks may run; c10d's process groups
// themselves may be called from any thread.
unsafe impl Send for InBackward<'_> {}
unsafe impl Sync for InBackward<'_> {}

impl<'a> InBackward<'a> {
    /// # Safety
    /// While any copy is in use, no other thread may issue a collective on
    /// `dist` (collectives must start in the same order on every rank).
    pub unsafe fn new(dist: &'a Distributed) -> InBackward<'a> {
        InBackward(dist)
    }

    pub fn get(&self) -> &'a Distributed {
        self.0
    }
}

/// The shim's hook: owns `grad`, runs the callback, keeps its first error.
unsafe extern "C" fn on_grad(context: *mut c_void, index: i64, grad: *mut c_void) {
    // SAFETY: `context` is the `Target` of live hooks; `grad` a new
    // `at::Tensor*` that is ours to free.
    let target = unsafe { &*(context as *const Target) };
    let grad = unsafe { Tensor::from_ptr(grad as *mut torch_sys::C_tensor) };
    let outcome = catch_unwind(AssertUnwindSafe(|| (target.callback)(index as usize, grad)));
    let error = match outcome {
        Ok(Ok(())) => return,
        Ok(Err(e)) => e,
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic".to_owned());
            anyhow!("parameter {index}'s gradient hook panicked: {what}")
        }
    };
    if let Ok(mut slot) = target.error.lock() {
        slot.get_or_insert(error);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tch::Kind;

    /// The callback gets each parameter's whole gradient (summed over its
    /// uses) once per backward; the backward's own result is zeros; after
    /// the hooks are dropped the backward is untouched again.
    #[test]
    fn hooks_take_each_whole_gradient_once() {
        let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0]).set_requires_grad(true);
        let b = Tensor::from_slice(&[-1.0f32, 0.5, 4.0]).set_requires_grad(true);
        type Taken = Vec<(usize, Vec<f32>)>;
        let got: Arc<Mutex<Taken>> = Arc::default();
        let sink = got.clone();
        let hooks = GradHooks::take(&[a.shallow_clone(), b.shallow_clone()], move |i, g| {
            sink.lock().unwrap().push((i, Vec::<f32>::try_from(&g)?));
            Ok(())
        })
        .unwrap();
        // d/da (a*b + a*a) = b + 2a, d/db = a.
        let loss = ((&a * &b) + (&a * &a)).sum(Kind::Float);
        let back = Tensor::run_backward(&[&loss], &[&a, &b], false, false);
        hooks.check().unwrap();
        let mut got = got.lock().unwrap().clone();
        got.sort_by_key(|(i, _)| *i);
        assert_eq!(
            got,
            vec![(0, vec![1.0, 4.5, 10.0]), (1, vec![1.0, 2.0, 3.0])]
        );
        for g in &back {
            assert_eq!(Vec::<f32>::try_from(g).unwrap(), vec![0.0; 3]);
            // An expanded scalar: no memory per element.
            assert_eq!(g.stride(), vec![0]);
        }
        drop(hooks);
        let loss = (&a * &b).sum(Kind::Float);
        let back = Tensor::run_backward(&[&loss], &[&a], false, false);
        assert_eq!(
            Vec::<f32>::try_from(&back[0]).unwrap(),
            vec![-1.0, 0.5, 4.0]
        );
    }

    /// A callback's error (or panic) reaches `check`; the backward finishes.
    #[test]
    fn a_failing_callback_is_reported_after_the_backward() {
        let a = Tensor::from_slice(&[1.0f32]).set_requires_grad(true);
        let hooks = GradHooks::take(&[a.shallow_clone()], |i, _| {
            anyhow::bail!("no room for parameter {i}")
        })
        .unwrap();
        let _ = Tensor::run_backward(&[&(&a * 2.0).sum(Kind::Float)], &[&a], false, false);
        let err = format!("{:#}", hooks.check().unwrap_err());
        assert!(err.contains("no room for parameter 0"), "{err}");
        assert!(hooks.check().is_ok(), "reported once");

        let hooks = GradHooks::take(&[a.shallow_clone()], |_, _| panic!("boom")).unwrap();
        let _ = Tensor::run_backward(&[&(&a * 2.0).sum(Kind::Float)], &[&a], false, false);
        let err = format!("{:#}", hooks.check().unwrap_err());
        assert!(err.contains("panicked: boom"), "{err}");
    }
}
