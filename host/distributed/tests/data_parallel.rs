//! The data-parallel helpers against plain references: bucketed all-reduce
//! equals one all-reduce per tensor, and a ZeRO-sharded AdamW step
//! (reduce-scatter, update the owned shard, all-gather) equals the
//! unsharded step on averaged gradients.

mod common;

use common::on_ranks;
use lmmhost_distributed::{materialize_grads, Distributed, GradBuckets, ReduceOp, ShardPlan};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

fn random(shape: &[i64], kind: Kind, seed: u64, integers: bool) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n: i64 = shape.iter().product();
    let v: Vec<f64> = (0..n)
        .map(|_| {
            if integers {
                rng.random_range(-50i32..50) as f64
            } else {
                rng.random_range(-1.0..1.0)
            }
        })
        .collect();
    Tensor::from_slice(&v).reshape(shape).to_kind(kind)
}

fn flat(ts: &[Tensor]) -> Vec<f64> {
    ts.iter()
        .flat_map(|t| Vec::<f64>::try_from(&t.to_kind(Kind::Double).reshape([-1])).expect("f64"))
        .collect()
}

/// Gradients of one rank: mixed dtypes, one of them non-contiguous.
fn grads(rank: usize) -> Vec<Tensor> {
    let seed = 100 * rank as u64;
    vec![
        random(&[3, 5], Kind::Float, seed + 1, true),
        random(&[7], Kind::Float, seed + 2, true),
        random(&[4, 2], Kind::Float, seed + 3, true).transpose(0, 1),
        random(&[6], Kind::Double, seed + 4, true),
        random(&[2, 3], Kind::Float, seed + 5, true),
        random(&[1], Kind::Double, seed + 6, true),
    ]
}

#[test]
fn bucketed_all_reduce_equals_per_tensor() {
    for world in [2, 3] {
        let results = on_ranks(world, |dist: &Distributed| {
            let reference = grads(dist.rank());
            for g in &reference {
                let c = g.contiguous();
                dist.all_reduce(&c, ReduceOp::Avg)?;
                g.shallow_clone().copy_(&c);
            }
            let mut layouts = Vec::new();
            let mut bucketed = Vec::new();
            for bucket_bytes in [1, 100, 1 << 20] {
                let gs = grads(dist.rank());
                let buckets = GradBuckets::new(&gs, bucket_bytes);
                buckets.all_reduce(dist, &gs, ReduceOp::Avg)?;
                layouts.push(buckets.members());
                bucketed.push(flat(&gs));
            }
            Ok((flat(&reference), layouts, bucketed))
        });
        for (reference, layouts, bucketed) in results {
            // 1 byte: one tensor per bucket; 1 MiB: one bucket per dtype run.
            assert_eq!(layouts[0].len(), 6);
            assert_eq!(layouts[2], vec![vec![0, 1, 2], vec![3], vec![4], vec![5]]);
            assert!(
                layouts[1].len() > layouts[2].len() && layouts[1].len() < 6,
                "{:?}",
                layouts[1]
            );
            for b in bucketed {
                assert_eq!(b, reference, "world {world}");
            }
        }
    }
}

#[test]
fn unused_parameters_get_zero_gradients() {
    let used = Tensor::from_slice(&[1.0f32, 2.0]).set_requires_grad(true);
    let unused = Tensor::from_slice(&[3.0f32]).set_requires_grad(true);
    (&used * 2.0).sum(Kind::Float).backward();
    assert!(!unused.grad().defined());
    materialize_grads(&[used.shallow_clone(), unused.shallow_clone()]);
    assert_eq!(flat(&[used.grad(), unused.grad()]), vec![2.0, 2.0, 0.0]);
    let layout = GradBuckets::new(&[used.shallow_clone()], 1 << 20);
    let err = layout
        .all_reduce(
            &Distributed::single(Device::Cpu),
            &[Tensor::new()],
            ReduceOp::Avg,
        )
        .unwrap_err();
    assert!(err.to_string().contains("tensor 0 is undefined"), "{err}");
}

/// AdamW as host/src/train/adamw.rs computes it (decoupled weight decay,
/// bias-corrected moments), on explicit tensors.
#[allow(clippy::too_many_arguments)]
fn adamw(
    p: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    step: i32,
    lr: f64,
    betas: (f64, f64),
    eps: f64,
    wd: f64,
) {
    let (b1, b2) = betas;
    let bc1 = 1.0 - b1.powi(step);
    let bc2 = 1.0 - b2.powi(step);
    let (mut p, mut m, mut v) = (p.shallow_clone(), m.shallow_clone(), v.shallow_clone());
    let _ = p.g_mul_scalar_(1.0 - lr * wd);
    let _ = m.g_mul_scalar_(b1).g_add_(&(g * (1.0 - b1)));
    let _ = v.g_mul_scalar_(b2).g_add_(&(g.square() * (1.0 - b2)));
    let denom = (v.sqrt() / bc2.sqrt()) + eps;
    let update = (&m / &denom) * (lr / bc1);
    let _ = p.g_sub_(&update);
}

const SHAPES: [&[i64]; 5] = [&[3, 5], &[7], &[2, 2, 3], &[11], &[1]];
const STEPS: i32 = 3;
const HP: (f64, (f64, f64), f64, f64) = (0.05, (0.9, 0.999), 1e-8, 0.01);

fn init_params() -> Vec<Tensor> {
    SHAPES
        .iter()
        .enumerate()
        .map(|(i, s)| random(s, Kind::Float, 7 + i as u64, false))
        .collect()
}

fn step_grads(rank: usize, step: i32) -> Vec<Tensor> {
    SHAPES
        .iter()
        .enumerate()
        .map(|(i, s)| {
            random(
                s,
                Kind::Float,
                1000 * step as u64 + 10 * rank as u64 + i as u64,
                false,
            )
        })
        .collect()
}

#[test]
fn sharded_adamw_equals_unsharded() {
    let (lr, betas, eps, wd) = HP;
    for world in [2, 3] {
        let results = on_ranks(world, move |dist: &Distributed| {
            // Unsharded: average the full gradients, every rank updates everything.
            let full = init_params();
            let moments: Vec<(Tensor, Tensor)> = full
                .iter()
                .map(|p| (p.zeros_like(), p.zeros_like()))
                .collect();
            for step in 1..=STEPS {
                for (p, (g, (m, v))) in full
                    .iter()
                    .zip(step_grads(dist.rank(), step).iter().zip(&moments))
                {
                    dist.all_reduce(g, ReduceOp::Avg)?;
                    adamw(p, g, m, v, step, lr, betas, eps, wd);
                }
            }
            // Sharded: small buckets so that several shards and padding occur.
            let params = init_params();
            let plan = ShardPlan::new(&params, 48, dist);
            let master = plan.local_shards(&params)?;
            let state: Vec<(Tensor, Tensor)> = master
                .iter()
                .map(|s| (s.zeros_like(), s.zeros_like()))
                .collect();
            for step in 1..=STEPS {
                let g_shards =
                    plan.reduce_scatter(dist, &step_grads(dist.rank(), step), ReduceOp::Avg)?;
                for ((p, g), (m, v)) in master.iter().zip(&g_shards).zip(&state) {
                    adamw(p, g, m, v, step, lr, betas, eps, wd);
                }
                plan.all_gather_into(dist, &master, &params)?;
            }
            let owned: i64 = (0..plan.len()).map(|b| plan.shard_numel(b).1).sum();
            Ok((flat(&full), flat(&params), owned, plan.len()))
        });
        let total: i64 = SHAPES.iter().map(|s| s.iter().product::<i64>()).sum();
        let owned: i64 = results.iter().map(|r| r.2).sum();
        assert_eq!(owned, total, "the shards partition the parameters");
        for (rank, (reference, sharded, mine, buckets)) in results.into_iter().enumerate() {
            assert!(buckets > 1, "several buckets");
            assert!(
                mine < total,
                "rank {rank} owns {mine} of {total}: not sharded"
            );
            assert_eq!(reference.len(), sharded.len());
            let init = flat(&init_params());
            assert!(
                reference
                    .iter()
                    .zip(&init)
                    .any(|(a, b)| (a - b).abs() > 1e-3),
                "the steps moved the weights"
            );
            for (i, (a, b)) in reference.iter().zip(&sharded).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-6,
                    "world {world} rank {rank} element {i}: {a} vs {b}"
                );
            }
        }
    }
}

#[test]
fn a_single_rank_plan_owns_everything() {
    let dist = Distributed::single(Device::Cpu);
    let params = init_params();
    let plan = ShardPlan::new(&params, 48, &dist);
    let shards = plan.local_shards(&params).unwrap();
    assert_eq!(flat(&shards), flat(&params));
    let g = plan
        .reduce_scatter(&dist, &step_grads(0, 1), ReduceOp::Avg)
        .unwrap();
    assert_eq!(flat(&g), flat(&step_grads(0, 1)));
    let targets: Vec<Tensor> = params.iter().map(|p| p.zeros_like()).collect();
    plan.all_gather_into(&dist, &shards, &targets).unwrap();
    assert_eq!(flat(&targets), flat(&params));
}

/// ZeRO-2's accumulation: each micro-batch's gradients (f32, some missing)
/// reduce-scattered into f64 shard sums equal the shards of the whole sums
/// reduce-scattered once, when rank r runs r + 1 micro-batches and takes
/// part in the others' rounds with nothing (integers: exact in any order).
#[test]
fn reduce_scatter_add_sums_micro_batches_into_shards() {
    for world in [2, 3] {
        let results = on_ranks(world, move |dist: &Distributed| {
            let layout: Vec<Tensor> = SHAPES
                .iter()
                .map(|s| Tensor::zeros(*s, (Kind::Double, Device::Cpu)))
                .collect();
            let plan = ShardPlan::new(&layout, 48, dist);
            let micro_batch = |k: usize| -> Vec<Tensor> {
                SHAPES
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        if (i + k).is_multiple_of(3) {
                            Tensor::new()
                        } else {
                            let seed = 1000 * k as u64 + 10 * dist.rank() as u64 + i as u64;
                            random(s, Kind::Float, seed, true)
                        }
                    })
                    .collect()
            };
            let sums = plan.zero_shards();
            let mine = dist.rank() + 1;
            for k in 0..world {
                let grads = if k < mine {
                    micro_batch(k)
                } else {
                    SHAPES.iter().map(|_| Tensor::new()).collect()
                };
                plan.reduce_scatter_add(dist, &grads, &sums, ReduceOp::Sum)?;
            }
            let whole: Vec<Tensor> = layout.iter().map(Tensor::zeros_like).collect();
            for k in 0..mine {
                for (w, g) in whole.iter().zip(micro_batch(k)) {
                    if g.defined() {
                        let _ = w.shallow_clone().g_add_(&g);
                    }
                }
            }
            let reference = plan.reduce_scatter(dist, &whole, ReduceOp::Sum)?;
            let kinds: Vec<Kind> = sums.iter().map(Tensor::kind).collect();
            Ok((flat(&sums), flat(&reference), kinds, plan.len()))
        });
        for (rank, (sums, reference, kinds, buckets)) in results.into_iter().enumerate() {
            assert!(buckets > 1, "several buckets");
            assert!(kinds.iter().all(|&k| k == Kind::Double), "{kinds:?}");
            assert!(sums.iter().any(|&v| v != 0.0), "nothing was summed");
            assert_eq!(sums, reference, "world {world} rank {rank}");
        }
    }
}
