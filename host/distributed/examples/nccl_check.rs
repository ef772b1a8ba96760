//! The NCCL backend on this machine's GPUs: each collective on CUDA tensors
//! (f32 and bf16), checked against the numbers it must give.
//!
//! cargo run --release -p lmmhost-distributed --example nccl_check -- [NPROC]
//!
//! Started without RANK it launches NPROC ranks of itself (default: one per
//! visible GPU); NPROC=1 is the world-size-1 step.

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use lmmhost_distributed::launch::LocalLaunch;
use lmmhost_distributed::{
    nccl_build, BackendChoice, DistOptions, Distributed, GradBuckets, ReduceOp,
};
use tch::{Device, Kind, Tensor};

fn main() -> Result<()> {
    if std::env::var_os("RANK").is_none() {
        let (compiled, why) = nccl_build();
        if !compiled {
            bail!("this build has no NCCL backend: {why}");
        }
        if !tch::Cuda::is_available() {
            bail!("no CUDA device is visible");
        }
        let nproc = match std::env::args().nth(1) {
            Some(n) => n.parse().context("NPROC must be a number")?,
            None => tch::Cuda::device_count() as usize,
        };
        if let Err(e) = LocalLaunch::current_exe(nproc, Vec::new())?.run() {
            eprintln!("{e}");
            std::process::exit(e.exit_code());
        }
        println!("nccl check passed on {nproc} rank(s)");
        return Ok(());
    }
    let dist = Distributed::from_env(&DistOptions {
        backend: BackendChoice::Nccl,
        timeout: Duration::from_secs(120),
        // Without a group a world of one runs no collective at all.
        group_of_one: true,
    })?;
    let (rank, world, device) = (dist.rank(), dist.world_size(), dist.device());
    ensure!(
        device == Device::Cuda(dist.local_rank()),
        "rank {rank} is on {device:?}"
    );
    let world_f = world as f64;
    for kind in [Kind::Float, Kind::BFloat16] {
        let t = Tensor::full([1 << 20], (rank + 1) as f64, (kind, device));
        dist.all_reduce(&t, ReduceOp::Avg)?;
        let mean = (world_f + 1.0) / 2.0;
        ensure!(
            f64::try_from(t.max())? == mean && f64::try_from(t.min())? == mean,
            "{kind:?} avg"
        );
        let mine = Tensor::full([4], rank as f64, (kind, device));
        let all = dist
            .all_gather(&mine)?
            .to_device(Device::Cpu)
            .to_kind(Kind::Double);
        let want: Vec<f64> = (0..world).flat_map(|r| [r as f64; 4]).collect();
        ensure!(Vec::<f64>::try_from(&all)? == want, "{kind:?} all_gather");
        let chunk = dist.reduce_scatter(
            &Tensor::ones([4 * world as i64], (kind, device)),
            ReduceOp::Sum,
        )?;
        ensure!(
            f64::try_from(chunk.sum(Kind::Double))? == 4.0 * world_f,
            "{kind:?} reduce_scatter"
        );
        let b = Tensor::full([8], rank as f64, (kind, device));
        dist.broadcast(&b, world - 1)?;
        ensure!(
            f64::try_from(b.sum(Kind::Double))? == 8.0 * (world_f - 1.0),
            "{kind:?} broadcast"
        );
    }
    let grads: Vec<Tensor> = (0..10)
        .map(|i| Tensor::full([1000 + i], rank as f64, (Kind::Float, device)))
        .collect();
    GradBuckets::new(&grads, 8 << 10).all_reduce(&dist, &grads, ReduceOp::Avg)?;
    for g in &grads {
        ensure!(
            f64::try_from(g.max())? == (world_f - 1.0) / 2.0,
            "bucketed avg"
        );
    }
    dist.barrier()?;
    Ok(())
}
