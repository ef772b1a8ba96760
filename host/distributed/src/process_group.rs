//! A c10d process group (Gloo or NCCL) and its collectives on tch tensors.
//! Every collective is c10d's own; this file only checks arguments, names
//! failures and, for Gloo (which has no AVG), divides a SUM by the world size.

use std::ffi::{c_int, CString};
use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use tch::{Device, Tensor};

use crate::ffi;
use crate::store::{millis, Store};

/// Which c10d backend a group runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// CPU tensors, TCP between processes.
    Gloo,
    /// CUDA tensors, NVLink / InfiniBand / TCP through NCCL.
    Nccl,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Gloo => "gloo",
            Backend::Nccl => "nccl",
        })
    }
}

/// Whether this build has the NCCL backend, and why (not).
pub fn nccl_build() -> (bool, &'static str) {
    (cfg!(lmmhost_nccl), env!("LMMHOST_NCCL_BUILD"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    /// The mean over ranks.
    Avg,
    Min,
    Max,
}

impl ReduceOp {
    fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Avg => "avg",
            ReduceOp::Min => "min",
            ReduceOp::Max => "max",
        }
    }
}

pub struct ProcessGroup {
    raw: NonNull<ffi::RawGroup>,
    backend: Backend,
    rank: usize,
    world_size: usize,
    timeout: Duration,
    /// Bytes of the tensors this rank's collectives reduced, gathered or
    /// broadcast so far (see [`ProcessGroup::bytes`]).
    bytes: AtomicU64,
}

// SAFETY: a c10d backend may be used from any thread; collectives must still
// be issued in the same order on every rank, which &mut-free sharing across
// threads would not guarantee, so the group is Send but not Sync.
unsafe impl Send for ProcessGroup {}

/// A collective in flight. `wait` finishes it; dropping it without waiting
/// lets it complete in the background (its tensors stay alive until then).
#[must_use = "a collective is only complete after wait()"]
pub struct Work {
    raw: NonNull<ffi::RawWork>,
    context: String,
    timeout: Duration,
    started: Instant,
    /// Gloo has no AVG: the tensor holding the SUM and the divisor.
    divide: Option<(Tensor, f64)>,
}

// SAFETY: c10d work handles are waited on from any thread.
unsafe impl Send for Work {}

impl Work {
    pub fn wait(mut self) -> Result<()> {
        // SAFETY: valid work handle, freed in Drop.
        ffi::check(unsafe { ffi::lmm_dist_work_wait(self.raw.as_ptr(), millis(self.timeout)) }).map_err(|e| {
            let elapsed = self.started.elapsed();
            if elapsed >= self.timeout.mul_f64(0.9) {
                anyhow!(
                    "{} failed after {elapsed:.1?}, at the {:?} timeout (another rank is hung, or did not call \
                     the same collective): {e}",
                    self.context,
                    self.timeout
                )
            } else {
                anyhow!("{} failed after {elapsed:.1?}: {e}", self.context)
            }
        })?;
        if let Some((tensor, divisor)) = self.divide.take() {
            let mut tensor = tensor;
            tch::no_grad(|| {
                let _ = tensor.g_div_scalar_(divisor);
            });
        }
        Ok(())
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        // SAFETY: the handle came from the shim and is freed once.
        unsafe { ffi::lmm_dist_work_free(self.raw.as_ptr()) }
    }
}

impl ProcessGroup {
    /// Joins the group of `world_size` ranks over `store`. Every rank must
    /// call this with the same `backend` and `name`. For NCCL, `device` is
    /// this rank's GPU.
    pub fn new(
        store: &Store,
        name: &str,
        backend: Backend,
        device: Device,
        rank: usize,
        world_size: usize,
        timeout: Duration,
    ) -> Result<ProcessGroup> {
        if rank >= world_size {
            bail!("rank {rank} is not below the world size {world_size}");
        }
        let prefix = CString::new(format!("lmmhost/pg/{name}"))
            .map_err(|_| anyhow!("process group name {name:?} contains a NUL byte"))?;
        let (c_rank, c_world) = (rank as c_int, world_size as c_int);
        let mut raw = std::ptr::null_mut();
        let result = match (backend, device) {
            (Backend::Gloo, Device::Cpu) => {
                // SAFETY: valid store handle and out-pointer.
                ffi::check(unsafe {
                    ffi::lmm_dist_group_new_gloo(
                        store.raw(),
                        prefix.as_ptr(),
                        c_rank,
                        c_world,
                        millis(timeout),
                        &mut raw,
                    )
                })
            }
            (Backend::Gloo, other) => {
                bail!("the gloo backend runs on CPU tensors; this rank's device is {other:?}")
            }
            (Backend::Nccl, Device::Cuda(index)) => {
                new_nccl(store, &prefix, c_rank, c_world, timeout, index, &mut raw)
            }
            (Backend::Nccl, other) => {
                bail!("the nccl backend runs on CUDA tensors; this rank's device is {other:?}")
            }
        };
        result.map_err(|e| {
            anyhow!(
                "creating the {backend} process group (rank {rank} of {world_size}, store {}:{}): {e}",
                store.host(),
                store.port()
            )
        })?;
        let raw = NonNull::new(raw).ok_or_else(|| anyhow!("c10d returned no process group"))?;
        Ok(ProcessGroup {
            raw,
            backend,
            rank,
            world_size,
            timeout,
            bytes: AtomicU64::new(0),
        })
    }

    /// The payload of this rank's collectives so far, in bytes: the tensor
    /// of each all_reduce and broadcast, the output of each all_gather and
    /// the input of each reduce_scatter. What crosses the network per rank
    /// follows from it and the algorithm (a ring all-reduce sends and
    /// receives 2 (W - 1) / W of its payload; see docs/distributed.md).
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    fn count(&self, tensor: &Tensor) {
        let n = tensor.numel() as u64 * tensor.kind().elt_size_in_bytes() as u64;
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn world_size(&self) -> usize {
        self.world_size
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn context(&self, what: &str) -> String {
        format!(
            "{what} on rank {} of {} ({})",
            self.rank, self.world_size, self.backend
        )
    }

    fn check_tensor(&self, what: &str, role: &str, tensor: &Tensor) -> Result<()> {
        if !tensor.defined() {
            bail!("{}: the {role} tensor is undefined", self.context(what));
        }
        if !tensor.is_contiguous() {
            bail!(
                "{}: the {role} tensor must be contiguous",
                self.context(what)
            );
        }
        let device = tensor.device();
        let fits = match self.backend {
            Backend::Gloo => device == Device::Cpu,
            Backend::Nccl => matches!(device, Device::Cuda(_)),
        };
        if !fits {
            bail!(
                "{}: the {role} tensor is on {device:?}, the {} backend needs {}",
                self.context(what),
                self.backend,
                if self.backend == Backend::Gloo {
                    "CPU"
                } else {
                    "CUDA"
                }
            );
        }
        Ok(())
    }

    fn start(
        &self,
        context: String,
        call: impl FnOnce(*mut *mut ffi::RawWork) -> *mut std::ffi::c_char,
    ) -> Result<Work> {
        let mut raw = std::ptr::null_mut();
        ffi::check(call(&mut raw)).map_err(|e| anyhow!("{context} failed: {e}"))?;
        let raw = NonNull::new(raw).ok_or_else(|| anyhow!("{context}: c10d returned no work"))?;
        Ok(Work {
            raw,
            context,
            timeout: self.timeout,
            started: Instant::now(),
            divide: None,
        })
    }

    /// The c10d op, and the divisor to apply after it where the backend
    /// lacks AVG.
    fn native_op(&self, op: ReduceOp) -> (c_int, Option<f64>) {
        match op {
            ReduceOp::Sum => (ffi::OP_SUM, None),
            ReduceOp::Avg if self.backend == Backend::Gloo => {
                (ffi::OP_SUM, Some(self.world_size as f64))
            }
            ReduceOp::Avg => (ffi::OP_AVG, None),
            ReduceOp::Min => (ffi::OP_MIN, None),
            ReduceOp::Max => (ffi::OP_MAX, None),
        }
    }

    /// Reduces `tensor` in place across ranks; every rank ends with the result.
    pub fn all_reduce_async(&self, tensor: &Tensor, op: ReduceOp) -> Result<Work> {
        let what = format!("all_reduce ({})", op.name());
        self.check_tensor(&what, "input", tensor)?;
        self.count(tensor);
        let (native, divisor) = self.native_op(op);
        let group = self.raw.as_ptr();
        // SAFETY: valid group; the tensor handle outlives the call and c10d
        // keeps its own reference for the collective.
        let mut work = self.start(self.context(&what), |out| unsafe {
            ffi::lmm_dist_all_reduce(group, ffi::tensor_ptr(tensor), native, out)
        })?;
        work.divide = divisor.map(|d| (tensor.shallow_clone(), d));
        Ok(work)
    }

    pub fn all_reduce(&self, tensor: &Tensor, op: ReduceOp) -> Result<()> {
        self.all_reduce_async(tensor, op)?.wait()
    }

    /// Copies `root`'s `tensor` into every other rank's `tensor`, in place.
    pub fn broadcast(&self, tensor: &Tensor, root: usize) -> Result<()> {
        let what = format!("broadcast (root {root})");
        self.check_tensor(&what, "input", tensor)?;
        if root >= self.world_size {
            bail!("{}: root {root} is not a rank", self.context(&what));
        }
        self.count(tensor);
        let group = self.raw.as_ptr();
        // SAFETY: as in all_reduce_async.
        self.start(self.context(&what), |out| unsafe {
            ffi::lmm_dist_broadcast(group, ffi::tensor_ptr(tensor), root as c_int, out)
        })?
        .wait()
    }

    /// Gathers every rank's `input` into `output` (world_size * input.numel()
    /// elements, rank r's at offset r * input.numel(); both read flat).
    pub fn all_gather_into_async(&self, output: &Tensor, input: &Tensor) -> Result<Work> {
        let what = "all_gather";
        self.check_tensor(what, "input", input)?;
        self.check_tensor(what, "output", output)?;
        let want = input.numel() * self.world_size;
        if output.numel() != want || output.kind() != input.kind() {
            bail!(
                "{}: the output must hold {want} elements of {:?} (world size x input), it has {} of {:?}",
                self.context(what),
                input.kind(),
                output.numel(),
                output.kind()
            );
        }
        self.count(output);
        // c10d wants output = world x input in shape; flat views of both are.
        let (flat_out, flat_in) = (output.reshape([-1]), input.reshape([-1]));
        let group = self.raw.as_ptr();
        // SAFETY: as in all_reduce_async.
        self.start(self.context(what), |out| unsafe {
            ffi::lmm_dist_all_gather(
                group,
                ffi::tensor_ptr(&flat_out),
                ffi::tensor_ptr(&flat_in),
                out,
            )
        })
    }

    /// Every rank's `input`, concatenated in rank order into one flat tensor.
    pub fn all_gather(&self, input: &Tensor) -> Result<Tensor> {
        let input = input.contiguous();
        let output = Tensor::empty(
            [(input.numel() * self.world_size) as i64],
            (input.kind(), input.device()),
        );
        self.all_gather_into_async(&output, &input)?.wait()?;
        Ok(output)
    }

    /// Reduces `input` (world_size equal chunks, flat) across ranks and
    /// leaves chunk `rank` of the result in `output`.
    pub fn reduce_scatter_into_async(
        &self,
        output: &Tensor,
        input: &Tensor,
        op: ReduceOp,
    ) -> Result<Work> {
        let what = format!("reduce_scatter ({})", op.name());
        self.check_tensor(&what, "input", input)?;
        self.check_tensor(&what, "output", output)?;
        if input.numel() != output.numel() * self.world_size || output.kind() != input.kind() {
            bail!(
                "{}: the input must hold world size x output elements ({} x {} of {:?}), it has {} of {:?}",
                self.context(&what),
                self.world_size,
                output.numel(),
                output.kind(),
                input.numel(),
                input.kind()
            );
        }
        self.count(input);
        let (native, divisor) = self.native_op(op);
        let group = self.raw.as_ptr();
        // SAFETY: as in all_reduce_async.
        let mut work = self.start(self.context(&what), |out| unsafe {
            ffi::lmm_dist_reduce_scatter(
                group,
                ffi::tensor_ptr(output),
                ffi::tensor_ptr(input),
                native,
                out,
            )
        })?;
        work.divide = divisor.map(|d| (output.shallow_clone(), d));
        Ok(work)
    }

    /// This rank's chunk of the reduction of `input` (flat, numel divisible by the world size).
    pub fn reduce_scatter(&self, input: &Tensor, op: ReduceOp) -> Result<Tensor> {
        let input = input.contiguous();
        if !input.numel().is_multiple_of(self.world_size) {
            bail!(
                "{}: {} elements do not split into {} equal chunks",
                self.context(&format!("reduce_scatter ({})", op.name())),
                input.numel(),
                self.world_size
            );
        }
        let output = Tensor::empty(
            [(input.numel() / self.world_size) as i64],
            (input.kind(), input.device()),
        );
        self.reduce_scatter_into_async(&output, &input.reshape([-1]), op)?
            .wait()?;
        Ok(output)
    }

    /// Returns once every rank has reached it.
    pub fn barrier(&self) -> Result<()> {
        let group = self.raw.as_ptr();
        // SAFETY: valid group and out-pointer.
        self.start(self.context("barrier"), |out| unsafe {
            ffi::lmm_dist_barrier(group, out)
        })?
        .wait()
    }
}

#[cfg(lmmhost_nccl)]
fn new_nccl(
    store: &Store,
    prefix: &CString,
    rank: c_int,
    world: c_int,
    timeout: Duration,
    device: usize,
    raw: &mut *mut ffi::RawGroup,
) -> std::result::Result<(), String> {
    // SAFETY: valid store handle and out-pointer.
    ffi::check(unsafe {
        ffi::lmm_dist_group_new_nccl(
            store.raw(),
            prefix.as_ptr(),
            rank,
            world,
            millis(timeout),
            device as c_int,
            raw,
        )
    })
}

#[cfg(not(lmmhost_nccl))]
fn new_nccl(
    _store: &Store,
    _prefix: &CString,
    _rank: c_int,
    _world: c_int,
    _timeout: Duration,
    _device: usize,
    _raw: &mut *mut ffi::RawGroup,
) -> std::result::Result<(), String> {
    Err(format!(
        "this build has no NCCL backend ({}); rebuild lmmhost where libtorch has CUDA and the CUDA \
         and NCCL headers are found (LMMHOST_NCCL=1 makes that a build error)",
        nccl_build().1
    ))
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: the handle came from the shim and is freed once.
        unsafe { ffi::lmm_dist_group_free(self.raw.as_ptr()) }
    }
}
