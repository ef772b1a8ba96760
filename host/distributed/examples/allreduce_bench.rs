//! Gloo all-reduce throughput between local ranks.
//!
//! cargo run --release -p lmmhost-distributed --example allreduce_bench -- [--nproc 2] [--numel 10000000] [--iters 10]
//!
//! Started without RANK it launches `--nproc` ranks of itself; rank 0 prints
//! per-iteration times of one all-reduce of `numel` f32 values, of the same
//! values as 100 tensors in 25 MiB buckets (DDP's default size), and as 100
//! separate all-reduces.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use lmmhost_distributed::launch::LocalLaunch;
use lmmhost_distributed::{BackendChoice, DistOptions, Distributed, GradBuckets, ReduceOp};
use tch::{Device, Kind, Tensor};

struct Args {
    nproc: usize,
    numel: i64,
    iters: usize,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        nproc: 2,
        numel: 10_000_000,
        iters: 10,
    };
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let mut it = raw.iter();
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--nproc" => args.nproc = value.parse().context("--nproc")?,
            "--numel" => args.numel = value.parse().context("--numel")?,
            "--iters" => args.iters = value.parse().context("--iters")?,
            other => bail!("unknown argument {other} (--nproc, --numel, --iters)"),
        }
    }
    Ok(args)
}

fn main() -> Result<()> {
    let args = parse_args()?;
    if std::env::var_os("RANK").is_none() {
        let forwarded = std::env::args_os().skip(1).collect();
        if let Err(e) = LocalLaunch::current_exe(args.nproc, forwarded)?.run() {
            eprintln!("{e}");
            std::process::exit(e.exit_code());
        }
        return Ok(());
    }
    let dist = Distributed::from_env(&DistOptions {
        backend: BackendChoice::Gloo,
        timeout: Duration::from_secs(300),
        group_of_one: false,
    })?;
    let world = dist.world_size();
    let bytes = args.numel as f64 * 4.0;
    let report = |name: &str, times: &mut Vec<f64>| {
        if !dist.is_main() {
            return;
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        let algbw = bytes / median / 1e9;
        println!(
            "{name:<28} median {:>8.1} ms  min {:>8.1} ms  algbw {algbw:>5.2} GB/s  busbw {:>5.2} GB/s",
            median * 1e3,
            times[0] * 1e3,
            algbw * 2.0 * (world as f64 - 1.0) / world as f64,
        );
    };
    if dist.is_main() {
        println!(
            "{world} gloo ranks, {} f32 ({:.0} MB), {} iterations after 2 warm-ups, OMP_NUM_THREADS={}",
            args.numel,
            bytes / 1e6,
            args.iters,
            std::env::var("OMP_NUM_THREADS").unwrap_or_default()
        );
    }
    let time = |f: &dyn Fn() -> Result<()>| -> Result<Vec<f64>> {
        for _ in 0..2 {
            f()?;
        }
        (0..args.iters)
            .map(|_| {
                dist.barrier()?;
                let start = Instant::now();
                f()?;
                Ok(start.elapsed().as_secs_f64())
            })
            .collect()
    };

    let flat = Tensor::ones([args.numel], (Kind::Float, Device::Cpu));
    report(
        "one all_reduce",
        &mut time(&|| dist.all_reduce(&flat, ReduceOp::Sum))?,
    );

    let pieces: Vec<Tensor> = flat.chunk(100, 0).iter().map(|t| t.copy()).collect();
    let buckets = GradBuckets::new(&pieces, 25 << 20);
    report(
        &format!("100 tensors, {} buckets", buckets.len()),
        &mut time(&|| buckets.all_reduce(&dist, &pieces, ReduceOp::Avg))?,
    );
    report(
        "100 tensors, one call each",
        &mut time(&|| {
            pieces
                .iter()
                .try_for_each(|t| dist.all_reduce(t, ReduceOp::Avg))
        })?,
    );
    Ok(())
}
