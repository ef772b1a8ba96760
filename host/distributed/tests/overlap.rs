//! The all-reduce overlapped with the backward pass: on 2 and 3 Gloo ranks,
//! a chain of layers whose gradients are summed by hooks during the backward
//! ends with exactly the sums of the plain bucketed all-reduce after it, also
//! when a rank's backward never reaches a parameter; and with small buckets
//! most of the bytes start before the backward ends.

mod common;

use common::on_ranks;
use lmmhost_distributed::{backward_all_reduced, Distributed, GradBuckets, ReduceOp};
use tch::{Device, Kind, Tensor};

const WIDTHS: [i64; 5] = [3, 7, 5, 4, 6];

/// Layer i's weight: a [w_i, w_{i+1}] matrix (the last one [6, 1]), seeded
/// identically on every rank.
fn weights() -> Vec<Tensor> {
    let mut dims: Vec<i64> = WIDTHS.to_vec();
    dims.push(1);
    (0..WIDTHS.len())
        .map(|i| {
            let n = dims[i] * dims[i + 1];
            (Tensor::arange(n, (Kind::Float, Device::Cpu)).reshape([dims[i], dims[i + 1]])
                / n as f64
                - 0.3)
                .set_requires_grad(true)
        })
        .collect()
}

/// Rank r's loss; rank 1 skips layer 0 (its input enters at layer 1), so
/// its backward never reaches that weight.
fn loss(rank: usize, w: &[Tensor]) -> Tensor {
    let skip_first = rank == 1;
    let start = usize::from(skip_first);
    let x = Tensor::arange(2 * WIDTHS[start], (Kind::Float, Device::Cpu))
        .reshape([2, WIDTHS[start]])
        / 10.0
        + rank as f64;
    let mut h = x;
    for wi in &w[start..] {
        h = h.matmul(wi).tanh();
    }
    h.sum(Kind::Float)
}

fn values(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(&t.reshape([-1])).expect("f32")
}

/// The overlapped sums, and the fraction of bytes started in the backward.
fn overlapped(dist: &Distributed, bucket_bytes: usize) -> anyhow::Result<(Vec<Vec<f32>>, f64)> {
    let w = weights();
    let (sums, early) = backward_all_reduced(dist, &loss(dist.rank(), &w), &w, bucket_bytes)?;
    Ok((sums.iter().map(values).collect(), early))
}

/// The plain bucketed all-reduce of the same gradients, after the backward.
fn after_backward(dist: &Distributed) -> anyhow::Result<Vec<Vec<f32>>> {
    let w = weights();
    let l = loss(dist.rank(), &w);
    let grads: Vec<Tensor> = w
        .iter()
        .map(|p| {
            let g = Tensor::run_backward(&[&l], &[p], true, false).remove(0);
            if g.defined() {
                g
            } else {
                p.zeros_like()
            }
        })
        .collect();
    GradBuckets::new(&grads, 1 << 20).all_reduce(dist, &grads, ReduceOp::Sum)?;
    Ok(grads.iter().map(values).collect())
}

#[test]
fn overlapped_sums_equal_the_sums_after_the_backward() {
    for world in [2, 3] {
        for bucket_bytes in [1usize, 64, 1 << 20] {
            let got = on_ranks(world, move |dist: &Distributed| {
                Ok((overlapped(dist, bucket_bytes)?, after_backward(dist)?))
            });
            for (rank, ((sums, early), plain)) in got.iter().enumerate() {
                // Equal up to the order Gloo adds the ranks' values in,
                // which depends on where a value sits in its bucket.
                for (s, p) in sums.iter().flatten().zip(plain.iter().flatten()) {
                    assert!(
                        (s - p).abs() <= 1e-6 * p.abs().max(1.0),
                        "world {world}, rank {rank}, bucket {bucket_bytes} B: {s} vs {p}"
                    );
                }
                // Rank 1 never reaches layer 0: its sum still holds the others'.
                assert!(sums[0].iter().any(|&v| v != 0.0));
                // One bucket per weight: on the ranks that reach every
                // layer, all but layer 0's (the last gradient the backward
                // finishes: 21 of 106 values) started before the backward
                // ended; rank 1's last gradient is layer 1's (24 values),
                // and its bucket of layer 0 starts after the backward. One
                // bucket for everything overlaps nothing.
                let want = match (bucket_bytes, rank) {
                    (1, 1) => Some(50.0 / 106.0),
                    (1, _) => Some(85.0 / 106.0),
                    (b, _) if b == 1 << 20 => Some(0.0),
                    _ => None,
                };
                match want {
                    Some(w) => assert!((early - w).abs() < 1e-9, "rank {rank}: {early} vs {w}"),
                    None => assert!((0.0..1.0).contains(early), "{early}"),
                }
            }
        }
    }
}
