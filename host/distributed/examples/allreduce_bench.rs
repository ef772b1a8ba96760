//! Gloo all-reduce throughput between local ranks.
//!
//! cargo run --release -p lmmhost-distributed --example allreduce_bench -- [--nproc 2] [--numel 10000000] [--iters 10]
//!
//! Started without RANK it launches `--nproc` ranks of itself; rank 0 prints
//! per-iteration times of one all-reduce of `numel` f32 values, of the same
//! values as 100 tensors in 25 MiB buckets (DDP's default size), and as 100
//! separate all-reduces; then of a backward pass through a chain of 100
//! layers holding `numel` weights followed by their all-reduce, against the
//! same backward with the all-reduce started bucket by bucket from gradient
//! hooks while it runs (25 and 4 MiB buckets).

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use lmmhost_distributed::launch::LocalLaunch;
use lmmhost_distributed::{
    backward_all_reduced, BackendChoice, DistOptions, Distributed, GradBuckets, ReduceOp,
};
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
    backward_and_all_reduce(&dist, &args)
}

/// A chain of 100 square layers with `numel` weights in all, each rank
/// seeing its own batch of 64 rows: the forward and backward passes alone,
/// then followed by the bucketed all-reduce, and with the all-reduce
/// overlapped (25 and 4 MiB buckets). The variants take turns within each
/// iteration, so that a busy machine's slow spells hit them alike.
fn backward_and_all_reduce(dist: &Distributed, args: &Args) -> Result<()> {
    let side = ((args.numel / 100) as f64).sqrt() as i64;
    tch::manual_seed(0);
    let weights: Vec<Tensor> = (0..100)
        .map(|_| {
            (Tensor::randn([side, side], (Kind::Float, Device::Cpu)) / (side as f64).sqrt())
                .set_requires_grad(true)
        })
        .collect();
    let input = Tensor::randn([64, side], (Kind::Float, Device::Cpu)) + dist.rank() as f64;
    let loss = || {
        let mut h = input.shallow_clone();
        for w in &weights {
            h = h.matmul(w).tanh();
        }
        h.square().mean(Kind::Float)
    };
    let alone = || -> Result<f64> {
        let _ = Tensor::run_backward(&[&loss()], &weights, false, false);
        Ok(0.0)
    };
    let after = || -> Result<f64> {
        let grads = Tensor::run_backward(&[&loss()], &weights, false, false);
        GradBuckets::new(&grads, 25 << 20).all_reduce(dist, &grads, ReduceOp::Sum)?;
        Ok(0.0)
    };
    let overlapped = |mib: usize| -> Result<f64> {
        Ok(backward_all_reduced(dist, &loss(), &weights, mib << 20)?.1)
    };
    type Variant<'a> = (String, Box<dyn Fn() -> Result<f64> + 'a>);
    let variants: Vec<Variant> = vec![
        ("forward + backward alone".into(), Box::new(alone)),
        ("... then the all-reduce".into(), Box::new(after)),
        (
            "... overlapped, 25 MiB".into(),
            Box::new(move || overlapped(25)),
        ),
        (
            "... overlapped, 4 MiB".into(),
            Box::new(move || overlapped(4)),
        ),
    ];
    let mut times = vec![Vec::new(); variants.len()];
    let mut early = vec![0.0; variants.len()];
    for iter in 0..args.iters + 2 {
        for (v, (_, run)) in variants.iter().enumerate() {
            dist.barrier()?;
            let start = Instant::now();
            early[v] = run()?;
            // Every rank done: the all-reduce's last bucket included.
            dist.barrier()?;
            if iter >= 2 {
                times[v].push(start.elapsed().as_secs_f64());
            }
        }
    }
    if dist.is_main() {
        println!(
            "forward + backward through 100 layers of {side}x{side} ({} weights), 64 rows per rank, \
             variants interleaved:",
            100 * side * side
        );
        for ((name, _), (t, e)) in variants.iter().zip(times.iter_mut().zip(&early)) {
            t.sort_by(f64::total_cmp);
            println!(
                "{name:<28} median {:>8.1} ms  min {:>8.1} ms  early share {e:.2}",
                t[t.len() / 2] * 1e3,
                t[0] * 1e3
            );
        }
    }
    Ok(())
}
