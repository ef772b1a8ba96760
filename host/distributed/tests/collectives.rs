//! Each collective, on 2 and 3 Gloo ranks (threads with their own process
//! groups), for the dtypes training uses; the expected numbers are computed
//! here from the per-rank inputs.

mod common;

use common::on_ranks;
use lmmhost_distributed::{Distributed, ReduceOp};
use tch::{Device, Kind, Tensor};

const KINDS: [Kind; 3] = [Kind::Float, Kind::Double, Kind::BFloat16];

/// Rank r's input: r + 1 + i / 2 for i in 0..n (exact in bf16 for small n).
fn input(rank: usize, n: usize, kind: Kind) -> Tensor {
    (Tensor::arange(n as i64, (Kind::Double, Device::Cpu)) / 2.0 + (rank + 1) as f64).to_kind(kind)
}

fn values(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(&t.to_kind(Kind::Double).reshape([-1])).expect("to f64")
}

fn expected_reduce(world: usize, n: usize, op: ReduceOp) -> Vec<f64> {
    (0..n)
        .map(|i| {
            let per_rank: Vec<f64> = (0..world)
                .map(|r| (r + 1) as f64 + i as f64 / 2.0)
                .collect();
            match op {
                ReduceOp::Sum => per_rank.iter().sum(),
                ReduceOp::Avg => per_rank.iter().sum::<f64>() / world as f64,
                ReduceOp::Min => per_rank.iter().cloned().fold(f64::INFINITY, f64::min),
                ReduceOp::Max => per_rank.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
            }
        })
        .collect()
}

#[test]
fn all_reduce_sum_avg_min_max() {
    for world in [2, 3] {
        let results = on_ranks(world, |dist: &Distributed| {
            let mut out = Vec::new();
            for kind in KINDS {
                for op in [ReduceOp::Sum, ReduceOp::Avg, ReduceOp::Min, ReduceOp::Max] {
                    let t = input(dist.rank(), 6, kind);
                    dist.all_reduce(&t, op)?;
                    assert_eq!(t.kind(), kind);
                    out.push((kind, op, values(&t)));
                }
            }
            Ok(out)
        });
        for (rank, got) in results.iter().enumerate() {
            for (kind, op, v) in got {
                let want = expected_reduce(world, 6, *op);
                // Avg over 3 ranks is not exact in bf16 (8 significant bits).
                let tol = if *kind == Kind::BFloat16 { 2e-2 } else { 1e-6 };
                for (g, w) in v.iter().zip(&want) {
                    assert!(
                        (g - w).abs() <= tol * w.abs().max(1.0),
                        "world {world} rank {rank} {kind:?} {op:?}: {v:?} vs {want:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn broadcast_copies_the_root_tensor() {
    for world in [2, 3] {
        let results = on_ranks(world, |dist: &Distributed| {
            let mut out = Vec::new();
            for kind in KINDS {
                let t = input(dist.rank(), 5, kind);
                dist.broadcast(&t, 1)?;
                out.push(values(&t));
            }
            Ok(out)
        });
        for got in results {
            for v in got {
                assert_eq!(v, values(&input(1, 5, Kind::Double)));
            }
        }
    }
}

#[test]
fn all_gather_concatenates_in_rank_order() {
    for world in [2, 3] {
        let results = on_ranks(world, move |dist: &Distributed| {
            let mut out = Vec::new();
            for kind in KINDS {
                // A 2-D input: the gathered tensor is flat.
                let t = input(dist.rank(), 4, kind).reshape([2, 2]);
                let all = dist.all_gather(&t)?;
                assert_eq!((all.size(), all.kind()), (vec![4 * world as i64], kind));
                out.push(values(&all));
            }
            Ok(out)
        });
        let want: Vec<f64> = (0..world)
            .flat_map(|r| values(&input(r, 4, Kind::Double)))
            .collect();
        for got in results {
            for v in got {
                assert_eq!(v, want);
            }
        }
    }
}

#[test]
fn reduce_scatter_leaves_each_rank_its_chunk() {
    for world in [2, 3] {
        let chunk = 3;
        let results = on_ranks(world, move |dist: &Distributed| {
            let mut out = Vec::new();
            for kind in KINDS {
                for op in [ReduceOp::Sum, ReduceOp::Avg] {
                    let t = input(dist.rank(), chunk * dist.world_size(), kind);
                    let mine = dist.reduce_scatter(&t, op)?;
                    assert_eq!((mine.numel(), mine.kind()), (chunk, kind));
                    out.push((kind, op, values(&mine)));
                }
            }
            Ok(out)
        });
        for (rank, got) in results.iter().enumerate() {
            for (kind, op, v) in got {
                let full = expected_reduce(world, chunk * world, *op);
                let want = &full[rank * chunk..(rank + 1) * chunk];
                let tol = if *kind == Kind::BFloat16 { 2e-2 } else { 1e-6 };
                for (g, w) in v.iter().zip(want) {
                    assert!(
                        (g - w).abs() <= tol * w.abs().max(1.0),
                        "rank {rank} {kind:?} {op:?}: {v:?} vs {want:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn barrier_scalars_and_async_work() {
    let results = on_ranks(3, |dist: &Distributed| {
        dist.barrier()?;
        let sums = dist.all_reduce_scalars(&[dist.rank() as f64, 1.5], ReduceOp::Sum)?;
        let maxes = dist.all_reduce_scalars(&[dist.rank() as f64], ReduceOp::Max)?;
        let t = Tensor::full([4], dist.rank() as f64, (Kind::Float, Device::Cpu));
        let work = dist
            .all_reduce_async(&t, ReduceOp::Avg)?
            .expect("a group of 3 has work");
        work.wait()?;
        Ok((sums, maxes, values(&t)))
    });
    for (sums, maxes, avg) in results {
        assert_eq!(sums, vec![3.0, 4.5]);
        assert_eq!(maxes, vec![2.0]);
        assert_eq!(avg, vec![1.0; 4]);
    }
}

#[test]
fn bad_arguments_are_named() {
    let results = on_ranks(2, |dist: &Distributed| {
        let group = dist.group().expect("two ranks have a group");
        let strided = Tensor::zeros([4, 4], (Kind::Float, Device::Cpu)).transpose(0, 1);
        let e1 = group
            .all_reduce(&strided, ReduceOp::Sum)
            .unwrap_err()
            .to_string();
        let input = Tensor::zeros([3], (Kind::Float, Device::Cpu));
        let wrong = Tensor::zeros([5], (Kind::Float, Device::Cpu));
        let e2 = group
            .all_gather_into_async(&wrong, &input)
            .err()
            .expect("size mismatch")
            .to_string();
        let e3 = group
            .reduce_scatter(&input, ReduceOp::Sum)
            .unwrap_err()
            .to_string();
        let e4 = dist.broadcast(&input, 5).unwrap_err().to_string();
        // The group still works after refused calls.
        let ok = Tensor::ones([2], (Kind::Float, Device::Cpu));
        dist.all_reduce(&ok, ReduceOp::Sum)?;
        Ok((dist.rank(), [e1, e2, e3, e4], values(&ok)))
    });
    for (rank, errors, ok) in results {
        let at = format!("on rank {rank} of 2 (gloo)");
        assert!(
            errors[0].contains("all_reduce (sum)")
                && errors[0].contains("contiguous")
                && errors[0].contains(&at),
            "{}",
            errors[0]
        );
        assert!(
            errors[1].contains("all_gather") && errors[1].contains("6 elements"),
            "{}",
            errors[1]
        );
        assert!(
            errors[2].contains("reduce_scatter") && errors[2].contains("do not split into 2"),
            "{}",
            errors[2]
        );
        assert!(errors[3].contains("root 5 is not a rank"), "{}", errors[3]);
        assert_eq!(ok, vec![2.0, 2.0]);
    }
}

#[test]
fn a_single_process_world_is_the_identity() {
    let dist = Distributed::single(Device::Cpu);
    assert_eq!(
        (dist.rank(), dist.world_size(), dist.is_main()),
        (0, 1, true)
    );
    assert!(dist.group().is_none() && dist.store().is_none());
    let t = Tensor::from_slice(&[1.0f32, 2.0]);
    dist.all_reduce(&t, ReduceOp::Avg).unwrap();
    dist.broadcast(&t, 0).unwrap();
    dist.barrier().unwrap();
    assert_eq!(values(&t), vec![1.0, 2.0]);
    assert_eq!(values(&dist.all_gather(&t).unwrap()), vec![1.0, 2.0]);
    assert_eq!(
        values(&dist.reduce_scatter(&t, ReduceOp::Sum).unwrap()),
        vec![1.0, 2.0]
    );
    assert!(dist.broadcast(&t, 1).is_err());
}

#[test]
fn backends_refuse_the_other_device() {
    let results = on_ranks(1, |dist: &Distributed| {
        let store = lmmhost_distributed::Store::connect(
            "127.0.0.1",
            0,
            true,
            std::time::Duration::from_secs(5),
        )?;
        let err = |backend, device| {
            lmmhost_distributed::ProcessGroup::new(
                &store,
                "t",
                backend,
                device,
                0,
                1,
                std::time::Duration::from_secs(5),
            )
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
        };
        use lmmhost_distributed::Backend::{Gloo, Nccl};
        Ok((
            dist.world_size(),
            err(Nccl, Device::Cpu),
            err(Gloo, Device::Cuda(0)),
        ))
    });
    let (world, nccl_on_cpu, gloo_on_cuda) = &results[0];
    assert_eq!(*world, 1);
    assert!(
        nccl_on_cpu.contains("the nccl backend runs on CUDA tensors"),
        "{nccl_on_cpu}"
    );
    assert!(
        gloo_on_cuda.contains("the gloo backend runs on CPU tensors"),
        "{gloo_on_cuda}"
    );
    let (compiled, why) = lmmhost_distributed::nccl_build();
    assert_eq!(compiled, why.starts_with("compiled against"), "{why}");
}
