use super::*;
use lmmhost_model::checkpoint::seeded;

/// Parameters of two buckets (25 MiB of f32: `a` and `b` fill the first,
/// `c`, of an odd size, pads the second) and a frozen `d`.
fn model(kind: Kind) -> (Vec<String>, Vec<Tensor>) {
    let shapes: [&[i64]; 4] = [&[1000, 3000], &[3_550_000], &[5001], &[4]];
    let params = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| {
            seeded(7 + i as i64, || {
                Tensor::randn(*s, (Kind::Float, Device::Cpu))
            })
            .to_kind(kind)
            .set_requires_grad(i < 3)
        })
        .collect();
    let names = ["a", "b", "c", "d"].map(String::from).to_vec();
    (names, params)
}

fn optimizer(master: bool, stage: u8) -> AdamW {
    AdamW::new([0.9, 0.999], 1e-8, 0.1)
        .with_master_weights(master)
        .with_zero_stage(stage)
}

/// Two unsharded updates; under mixed precision the frozen `d` has a
/// master too (as after a stage that trained it).
fn trained(params: &[Tensor], master: bool) -> AdamW {
    let mut opt = optimizer(master, 0);
    for step in 1..=2 {
        let mut grads: Vec<Tensor> = params[..3]
            .iter()
            .map(|p| {
                seeded(step, || Tensor::randn(p.size(), (Kind::Float, Device::Cpu))) * step as f64
            })
            .collect();
        grads.push(Tensor::new());
        opt.step(params, &grads, 0.01).unwrap();
    }
    if master {
        opt.masters.insert(3, params[3].to_kind(Kind::Float) + 0.25);
    }
    opt
}

/// Rank `rank` of `world`'s shards of `whole`'s state of the trained `a`,
/// `b`, `c`: (masters, moments).
#[allow(clippy::type_complexity)]
fn expected(whole: &AdamW, rank: usize, world: usize) -> (Vec<Tensor>, Vec<(Tensor, Tensor)>) {
    let ms: Vec<Tensor> = (0..3)
        .map(|i| whole.moments[&i].0.shallow_clone())
        .collect();
    let vs: Vec<Tensor> = (0..3)
        .map(|i| whole.moments[&i].1.shallow_clone())
        .collect();
    let plan = ShardPlan::for_rank(&ms, BUCKET_BYTES, rank, world);
    let masters = if whole.masters.is_empty() {
        Vec::new()
    } else {
        let ws: Vec<Tensor> = (0..3).map(|i| whole.masters[&i].shallow_clone()).collect();
        plan.local_shards(&ws).unwrap()
    };
    let moments = plan
        .local_shards(&ms)
        .unwrap()
        .into_iter()
        .zip(plan.local_shards(&vs).unwrap())
        .collect();
    (masters, moments)
}

fn assert_shards(opt: &AdamW, whole: &AdamW, rank: usize, world: usize, what: &str) {
    let zero = opt.zero.as_ref().expect("sharded");
    assert_eq!(zero.indices, vec![0, 1, 2], "{what}");
    let (masters, moments) = expected(whole, rank, world);
    assert_eq!(zero.moments.len(), 2, "{what}: two buckets");
    for (b, ((m, v), (em, ev))) in zero.moments.iter().zip(&moments).enumerate() {
        assert!(m.equal(em) && v.equal(ev), "{what}: moments of bucket {b}");
    }
    match &zero.masters {
        Some(ws) => {
            assert_eq!(ws.len(), masters.len(), "{what}");
            for (b, (w, e)) in ws.iter().zip(&masters).enumerate() {
                assert!(w.equal(e), "{what}: master of bucket {b}");
            }
        }
        None => assert!(masters.is_empty(), "{what}: masters lost"),
    }
    assert_eq!(opt.step, 2, "{what}");
    // What is not sharded is held whole, as the trainer holds it.
    assert_eq!(opt.masters.keys().copied().collect::<Vec<_>>(), {
        let frozen: Vec<usize> = whole.masters.keys().copied().filter(|&i| i == 3).collect();
        frozen
    });
}

fn assert_whole(opt: &AdamW, whole: &AdamW, what: &str) {
    assert!(opt.zero.is_none(), "{what}");
    assert_eq!(opt.step, 2, "{what}");
    assert_eq!(opt.moments.len(), whole.moments.len(), "{what}");
    for (i, (m, v)) in &whole.moments {
        let (lm, lv) = &opt.moments[i];
        assert!(lm.equal(m) && lv.equal(v), "{what}: moments of {i}");
    }
    assert_eq!(opt.masters.len(), whole.masters.len(), "{what}");
    for (i, w) in &whole.masters {
        assert!(opt.masters[i].equal(w), "{what}: master of {i}");
    }
}

/// Bytes of optimizer state in rank `rank`'s shards of `world` (elements
/// past the parameters' end are padding: neither written real nor read).
fn shard_bytes(whole: &AdamW, rank: usize, world: usize) -> u64 {
    let parts = if whole.masters.is_empty() { 2 } else { 3 };
    let ms: Vec<Tensor> = (0..3)
        .map(|i| whole.moments[&i].0.shallow_clone())
        .collect();
    let plan = ShardPlan::for_rank(&ms, BUCKET_BYTES, rank, world);
    (0..plan.len())
        .map(|b| plan.shard_numel(b).1 as u64 * 4 * parts)
        .sum()
}

/// A whole checkpoint is read as each rank's shards; the shards each rank
/// writes resume on as many ranks from each rank's own file (its share of
/// the bytes), on another number of ranks from the byte ranges that cover
/// the new shards, and without ZeRO as the whole state: always the state
/// the unsharded optimizer holds, bit for bit.
#[test]
fn sharded_checkpoints_resume_on_any_number_of_ranks_reading_their_share() {
    for (kind, master) in [(Kind::Float, false), (Kind::BFloat16, true)] {
        let (names, params) = model(kind);
        let whole = trained(&params, master);
        let d = tempfile::tempdir().unwrap();
        let whole_dir = d.path().join("whole");
        std::fs::create_dir_all(&whole_dir).unwrap();
        save_whole(&whole_dir, &names, &whole).unwrap();
        let total: u64 = (0..2).map(|r| shard_bytes(&whole, r, 2)).sum();
        for world in [2usize, 3] {
            let dir = d.path().join(format!("sharded-{world}"));
            for rank in 0..world {
                let what = format!("{kind:?}: rank {rank} of {world} from a whole checkpoint");
                let mut opt = optimizer(master, 1);
                load(&whole_dir, &names, &params, &mut opt, rank, world).unwrap();
                assert_shards(&opt, &whole, rank, world, &what);
                save_shards(&dir, &names, &params, &opt).unwrap();
            }
            for rank in 0..world {
                let what = format!("{kind:?}: rank {rank} of {world} from {world} ranks' files");
                let mut opt = optimizer(master, 2);
                let (read, files) = load(&dir, &names, &params, &mut opt, rank, world).unwrap();
                assert_shards(&opt, &whole, rank, world, &what);
                // Its shards, the step, and (mixed precision, not rank 0) the
                // frozen part's master from rank 0's file.
                let frozen = if master { 16 } else { 0 };
                let share = shard_bytes(&whole, rank, world);
                eprintln!(
                    "{what}: read {read} bytes from {files} file(s), {:.4} of the sharded state",
                    read as f64 / total as f64
                );
                assert_eq!(read, share + 8 + frozen, "{what}");
                assert_eq!(files, if rank > 0 && master { 2 } else { 1 }, "{what}");
            }
            let mut opt = optimizer(master, 0);
            load(&dir, &names, &params, &mut opt, 0, 1).unwrap();
            assert_whole(
                &opt,
                &whole,
                &format!("{kind:?}: 1 rank from {world} ranks' files"),
            );
            // Another number of ranks: the new shards cut across the files.
            let other = 5 - world;
            for rank in 0..other {
                let what = format!("{kind:?}: rank {rank} of {other} from {world} ranks' files");
                let mut opt = optimizer(master, 1);
                let (read, files) = load(&dir, &names, &params, &mut opt, rank, other).unwrap();
                assert_shards(&opt, &whole, rank, other, &what);
                let share = shard_bytes(&whole, rank, other);
                eprintln!("{what}: read {read} bytes from {files} file(s)");
                assert!(
                    read <= share + 8 + 16 && read >= share,
                    "{what}: {read} vs {share}"
                );
            }
        }
    }
}

/// The layout names each bucket's parameters in order, and a checkpoint
/// whose layout names a parameter the model lacks, or whose state (sharded
/// or whole) has another shape than the parameter, is refused by name.
#[test]
fn the_layout_maps_buckets_to_parameters() {
    let (names, params) = model(Kind::Float);
    let whole = trained(&params, false);
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("w")).unwrap();
    save_whole(&d.path().join("w"), &names, &whole).unwrap();
    let dir = d.path().join("s");
    for rank in 0..2 {
        let mut opt = optimizer(false, 1);
        load(&d.path().join("w"), &names, &params, &mut opt, rank, 2).unwrap();
        save_shards(&dir, &names, &params, &opt).unwrap();
    }
    let text = std::fs::read_to_string(dir.join("optimizer/layout.json")).unwrap();
    let layout: ShardLayout = serde_json::from_str(&text).unwrap();
    assert_eq!(layout.world_size, 2);
    let buckets: Vec<Vec<&str>> = layout
        .buckets
        .iter()
        .map(|b| b.params.iter().map(|p| p.name.as_str()).collect())
        .collect();
    assert_eq!(buckets, vec![vec!["a", "b"], vec!["c"]]);
    assert_eq!(
        (layout.buckets[1].numel, layout.buckets[1].shard_numel),
        (5001, 2501)
    );
    assert!(rank_file(&dir, 1, 2).is_file());
    let mut renamed = names.clone();
    renamed[1] = "b2".into();
    let mut opt = optimizer(false, 1);
    let err = format!(
        "{:#}",
        load(&dir, &renamed, &params, &mut opt, 0, 2).unwrap_err()
    );
    assert!(
        err.contains("optimizer state for b, which the model lacks"),
        "{err}"
    );
    // A parameter of another shape: refused, sharded or whole, by name.
    let mut reshaped: Vec<Tensor> = params.iter().map(Tensor::shallow_clone).collect();
    reshaped[2] = Tensor::zeros([5000], (Kind::Float, Device::Cpu));
    for (from, stage, world) in [(&dir, 1, 2), (&dir, 0, 1), (&d.path().join("w"), 1, 2)] {
        let mut opt = optimizer(false, stage);
        let err = format!(
            "{:#}",
            load(from, &names, &reshaped, &mut opt, 0, world).unwrap_err()
        );
        assert!(
            err.contains("exp_avg of c has shape [5001], the parameter [5000]"),
            "{err}"
        );
    }
}
