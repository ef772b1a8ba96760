//! The optimizer's part of a checkpoint, in one of two layouts:
//!
//! - whole, `optimizer.safetensors`: per parameter `<param>.exp_avg`,
//!   `<param>.exp_avg_sq` and `<param>.master` (the f32 master weight under
//!   mixed precision), and `step`; written by rank 0 when the state is not
//!   sharded (ZeRO stage 0, one rank);
//! - sharded, `optimizer/` (ZeRO stages 1 and 2 on several ranks): each
//!   rank writes its own shards, `rank-RRRRR-of-WWWWW.safetensors` holding
//!   `bucket-BBBBB.exp_avg`, `.exp_avg_sq` and `.master` (flat, this rank's
//!   contiguous slice of each bucket), and rank 0 adds `step`, what is not
//!   sharded (a frozen part's master, whole, as `<param>.master`) and
//!   `layout.json` ([`ShardLayout`]): which parameters each bucket holds,
//!   in order, so that a flat range of a shard maps to a parameter's.
//!
//! No rank ever holds the whole state to save it, and a resume reads only
//! what the rank keeps: on the same number of ranks its own file; on
//! another number (or from a whole checkpoint) the byte ranges of each
//! file that cover its shards. Without ZeRO a rank keeps everything, and
//! reads every parameter's state whole, one tensor at a time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use lmmhost_distributed::ShardPlan;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::adamw::narrow;
use super::adamw::{AdamW, ZeroShards};
use super::grads::sum_kind;
use super::tensor_file::{self, TensorFile};
use super::zero::{sum_layout, BUCKET_BYTES};

const WHOLE_FILE: &str = "optimizer.safetensors";
const SHARD_DIR: &str = "optimizer";
const LAYOUT_FILE: &str = "layout.json";

/// The parts of a parameter's state, as the files name them.
const EXP_AVG: &str = "exp_avg";
const EXP_AVG_SQ: &str = "exp_avg_sq";
const MASTER: &str = "master";

/// How a sharded checkpoint's buckets are laid out (`optimizer/layout.json`).
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct ShardLayout {
    pub world_size: usize,
    pub bucket_bytes: usize,
    pub buckets: Vec<BucketLayout>,
}

/// One flat bucket: its parameters end to end, then zeros up to
/// `world_size * shard_numel`; rank r's file holds elements
/// `r * shard_numel .. (r + 1) * shard_numel`.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct BucketLayout {
    pub numel: i64,
    pub shard_numel: i64,
    pub params: Vec<ParamSlot>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct ParamSlot {
    pub name: String,
    pub shape: Vec<i64>,
}

/// The rank file of `rank` of `world` ranks, under the checkpoint `dir`.
pub fn rank_file(dir: &Path, rank: usize, world: usize) -> PathBuf {
    dir.join(SHARD_DIR)
        .join(format!("rank-{rank:05}-of-{world:05}.safetensors"))
}

fn bucket_key(b: usize, part: &str) -> String {
    format!("bucket-{b:05}.{part}")
}

/// Writes the whole (unsharded) state of `opt` into `dir`, naming each
/// parameter's tensors by `names`.
pub fn save_whole(dir: &Path, names: &[String], opt: &AdamW) -> Result<()> {
    let mut named: Vec<(String, Tensor)> = whole_entries(names, opt);
    named.push(("step".into(), Tensor::from_slice(&[opt.step])));
    tensor_file::write(&dir.join(WHOLE_FILE), &named)
}

/// The state `opt` holds per parameter (all of it without ZeRO; what is not
/// sharded under it), on the CPU.
fn whole_entries(names: &[String], opt: &AdamW) -> Vec<(String, Tensor)> {
    let mut named = Vec::new();
    for (&i, (m, v)) in &opt.moments {
        named.push((format!("{}.{EXP_AVG}", names[i]), m.shallow_clone()));
        named.push((format!("{}.{EXP_AVG_SQ}", names[i]), v.shallow_clone()));
    }
    for (&i, w) in &opt.masters {
        named.push((format!("{}.{MASTER}", names[i]), w.shallow_clone()));
    }
    named
}

/// Writes this rank's shards of `opt` (sharded: `opt.zero` is set) into
/// `dir/optimizer/`; rank 0 adds the step, the unsharded state and the
/// layout. `params` are the policy's tensors, named by `names`.
pub fn save_shards(dir: &Path, names: &[String], params: &[Tensor], opt: &AdamW) -> Result<()> {
    let zero = opt
        .zero
        .as_ref()
        .context("saving optimizer shards of a state that is not sharded")?;
    let plan = &zero.plan;
    let (rank, world) = (plan.rank(), plan.world_size());
    let shard_dir = dir.join(SHARD_DIR);
    std::fs::create_dir_all(&shard_dir)
        .with_context(|| format!("rank {rank}: cannot create {}", shard_dir.display()))?;
    // Where they are (the accelerator): the file is written one at a time.
    let mut named: Vec<(String, Tensor)> = Vec::new();
    for (b, (m, v)) in zero.moments.iter().enumerate() {
        named.push((bucket_key(b, EXP_AVG), m.shallow_clone()));
        named.push((bucket_key(b, EXP_AVG_SQ), v.shallow_clone()));
    }
    for (b, w) in zero.masters.iter().flatten().enumerate() {
        named.push((bucket_key(b, MASTER), w.shallow_clone()));
    }
    // Each rank's file has the step, so that a resume on as many ranks
    // reads its own file only (and rank 0's for what is not sharded).
    named.push(("step".into(), Tensor::from_slice(&[opt.step])));
    if rank == 0 {
        named.extend(whole_entries(names, opt));
        let layout = ShardLayout {
            world_size: world,
            bucket_bytes: BUCKET_BYTES,
            buckets: (0..plan.len())
                .map(|b| {
                    let (numel, shard_numel) = plan.bucket_numel(b);
                    let params = plan
                        .members(b)
                        .iter()
                        .map(|&j| {
                            let i = zero.indices[j];
                            ParamSlot {
                                name: names[i].clone(),
                                shape: params[i].size(),
                            }
                        })
                        .collect();
                    BucketLayout {
                        numel,
                        shard_numel,
                        params,
                    }
                })
                .collect(),
        };
        let path = shard_dir.join(LAYOUT_FILE);
        std::fs::write(&path, serde_json::to_string_pretty(&layout)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let path = rank_file(dir, rank, world);
    tensor_file::write(&path, &named).with_context(|| format!("rank {rank}"))
}

/// A checkpoint's optimizer state, read in parts.
pub struct StateSource {
    files: Files,
    /// Sharded: where each sharded parameter lies, by name.
    slots: BTreeMap<String, Slot>,
}

/// A sharded parameter's place: its bucket, its offset and elements in
/// it, and the elements of each rank's shard of the bucket.
#[derive(Clone)]
struct Slot {
    bucket: usize,
    offset: i64,
    numel: i64,
    shape: Vec<i64>,
    shard: i64,
}

enum Files {
    Whole(TensorFile),
    Sharded {
        dir: PathBuf,
        layout: ShardLayout,
        /// Rank files, opened when first read.
        open: BTreeMap<usize, TensorFile>,
    },
}

impl StateSource {
    /// The optimizer state of checkpoint `dir`, sharded or whole; reads
    /// headers only.
    pub fn open(dir: &Path) -> Result<StateSource> {
        let layout_path = dir.join(SHARD_DIR).join(LAYOUT_FILE);
        if !layout_path.exists() {
            let file = TensorFile::open(&dir.join(WHOLE_FILE))?;
            return Ok(StateSource {
                files: Files::Whole(file),
                slots: BTreeMap::new(),
            });
        }
        let text = std::fs::read_to_string(&layout_path)
            .with_context(|| format!("cannot read {}", layout_path.display()))?;
        let layout: ShardLayout = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a shard layout", layout_path.display()))?;
        ensure!(
            layout.world_size > 0,
            "{}: world_size 0",
            layout_path.display()
        );
        let mut slots = BTreeMap::new();
        for (b, bucket) in layout.buckets.iter().enumerate() {
            let mut offset = 0i64;
            for p in &bucket.params {
                let numel: i64 = p.shape.iter().product();
                let slot = Slot {
                    bucket: b,
                    offset,
                    numel,
                    shape: p.shape.clone(),
                    shard: bucket.shard_numel,
                };
                slots.insert(p.name.clone(), slot);
                offset += numel;
            }
            ensure!(
                offset == bucket.numel && bucket.numel <= bucket.shard_numel * layout.world_size as i64,
                "{}: bucket {b} holds {offset} elements of parameters, {} by its numel, {} per shard",
                layout_path.display(),
                bucket.numel,
                bucket.shard_numel
            );
        }
        Ok(StateSource {
            files: Files::Sharded {
                dir: dir.to_path_buf(),
                layout,
                open: BTreeMap::new(),
            },
            slots,
        })
    }

    /// Bytes of tensor data read so far, and from how many files.
    pub fn bytes_read(&self) -> (u64, usize) {
        match &self.files {
            Files::Whole(f) => (f.bytes_read, usize::from(f.bytes_read > 0)),
            Files::Sharded { open, .. } => (
                open.values().map(|f| f.bytes_read).sum(),
                open.values().filter(|f| f.bytes_read > 0).count(),
            ),
        }
    }

    /// The number of ranks that wrote a sharded checkpoint.
    pub fn world_size(&self) -> Option<usize> {
        match &self.files {
            Files::Whole(_) => None,
            Files::Sharded { layout, .. } => Some(layout.world_size),
        }
    }

    fn file(&mut self, rank: usize) -> Result<&mut TensorFile> {
        match &mut self.files {
            Files::Whole(f) => Ok(f),
            Files::Sharded { dir, layout, open } => {
                let file = match open.entry(rank) {
                    std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::btree_map::Entry::Vacant(e) => {
                        e.insert(TensorFile::open(&rank_file(dir, rank, layout.world_size))?)
                    }
                };
                Ok(file)
            }
        }
    }

    /// The step count, from the file of `rank` where there is one.
    pub fn step(&mut self, rank: usize) -> Result<i64> {
        let rank = self.world_size().map_or(0, |w| rank.min(w - 1));
        Ok(self.file(rank)?.read("step")?.int64_value(&[0]))
    }

    /// The parameters with sharded state, in bucket order (none for a whole
    /// checkpoint).
    pub fn sharded_names(&self) -> Vec<String> {
        match &self.files {
            Files::Whole(_) => Vec::new(),
            Files::Sharded { layout, .. } => layout
                .buckets
                .iter()
                .flat_map(|b| b.params.iter().map(|p| p.name.clone()))
                .collect(),
        }
    }

    /// Whether the checkpoint holds `part` of parameter `name`.
    pub fn has(&mut self, name: &str, part: &str) -> Result<bool> {
        let key = match self.slots.get(name) {
            Some(slot) => bucket_key(slot.bucket, part),
            None => format!("{name}.{part}"),
        };
        Ok(self.file(0)?.contains(&key))
    }

    /// Elements `from..to` of `part` of parameter `name`, flattened, on the
    /// CPU in the stored dtype: from the whole tensor, or from the rank files
    /// whose shards cover them.
    pub fn range(&mut self, name: &str, part: &str, from: i64, to: i64) -> Result<Tensor> {
        let Some(&Slot {
            bucket,
            offset,
            numel,
            shard,
            ..
        }) = self.slots.get(name)
        else {
            return self
                .file(0)?
                .read_range(&format!("{name}.{part}"), from, to);
        };
        ensure!(
            0 <= from && from <= to && to <= numel,
            "elements {from}..{to} of the state of {name}, which has {numel}"
        );
        let (lo, hi) = (offset + from, offset + to);
        let key = bucket_key(bucket, part);
        let mut pieces = Vec::new();
        let mut at = lo;
        while at < hi {
            let rank = (at / shard) as usize;
            let end = hi.min((rank as i64 + 1) * shard);
            let base = rank as i64 * shard;
            pieces.push(self.file(rank)?.read_range(&key, at - base, end - base)?);
            at = end;
        }
        Ok(match pieces.len() {
            1 => pieces.pop().expect("one piece"),
            _ => Tensor::cat(&pieces, 0),
        })
    }

    /// Fails unless `part` of parameter `name` has the parameter's `shape`.
    fn check_shape(&mut self, name: &str, part: &str, shape: &[i64]) -> Result<()> {
        let stored = match self.slots.get(name) {
            Some(slot) => slot.shape.clone(),
            None => self.file(0)?.shape(&format!("{name}.{part}"))?,
        };
        if stored != shape {
            bail!("{part} of {name} has shape {stored:?}, the parameter {shape:?}");
        }
        Ok(())
    }

    /// `part` of parameter `name` whole, in `shape` (the parameter's).
    fn whole(&mut self, name: &str, part: &str, shape: &[i64]) -> Result<Tensor> {
        self.check_shape(name, part, shape)?;
        let numel: i64 = shape.iter().product();
        Ok(self.range(name, part, 0, numel)?.view(shape))
    }
}

/// Restores `opt`'s state from checkpoint `dir` for `params` (named by
/// `names`): whole on the parameters' device without ZeRO; under it as this
/// rank's shards (`rank` of `world`). Returns the bytes of optimizer
/// tensors read and the files they came from.
pub fn load(
    dir: &Path,
    names: &[String],
    params: &[Tensor],
    opt: &mut AdamW,
    rank: usize,
    world: usize,
) -> Result<(u64, usize)> {
    let mut src = StateSource::open(dir)?;
    let what = || format!("the optimizer state of {}", dir.display());
    opt.moments.clear();
    opt.masters.clear();
    opt.zero = None;
    if opt.zero_stage > 0 && world > 1 {
        load_shards(&mut src, names, params, opt, rank, world).with_context(what)?;
    } else {
        load_whole(&mut src, names, params, opt, &[]).with_context(what)?;
    }
    opt.step = src.step(rank).with_context(what)?;
    Ok(src.bytes_read())
}

/// The whole state of every parameter but those at `skip`, one tensor at a
/// time (on the CPU under ZeRO, where it waits to be sharded).
fn load_whole(
    src: &mut StateSource,
    names: &[String],
    params: &[Tensor],
    opt: &mut AdamW,
    skip: &[usize],
) -> Result<()> {
    for (i, (name, p)) in names.iter().zip(params).enumerate() {
        if skip.contains(&i) {
            continue;
        }
        let device = if opt.zero_stage > 0 {
            Device::Cpu
        } else {
            p.device()
        };
        if src.has(name, MASTER)? {
            let w = src.whole(name, MASTER, &p.size())?;
            opt.masters
                .insert(i, w.to_device(device).to_kind(Kind::Float));
        }
        if !src.has(name, EXP_AVG)? {
            continue;
        }
        // Moments are in the type of what they update: the master or the parameter.
        let kind = if opt.masters.contains_key(&i) {
            Kind::Float
        } else {
            p.kind()
        };
        let m = src.whole(name, EXP_AVG, &p.size())?;
        let v = src.whole(name, EXP_AVG_SQ, &p.size())?;
        let on = |t: Tensor| t.to_device(device).to_kind(kind);
        opt.moments.insert(i, (on(m), on(v)));
    }
    Ok(())
}

/// This rank's shards of the parameters the checkpoint holds state for, laid
/// out as the first update will lay them out (`AdamW::shard_state` keeps
/// them when the same parameters train); the rest (a frozen part's master)
/// whole on the CPU.
fn load_shards(
    src: &mut StateSource,
    names: &[String],
    params: &[Tensor],
    opt: &mut AdamW,
    rank: usize,
    world: usize,
) -> Result<()> {
    let index: BTreeMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let mut indices = Vec::new();
    let sharded = src.sharded_names();
    if sharded.is_empty() {
        // A whole checkpoint: what has moments trained (or, before any
        // update, what has a master).
        let part = if names.iter().any(|n| src.has(n, EXP_AVG).unwrap_or(false)) {
            EXP_AVG
        } else {
            MASTER
        };
        for (i, n) in names.iter().enumerate() {
            if src.has(n, part)? {
                indices.push(i);
            }
        }
    } else {
        for n in &sharded {
            let i = index.get(n.as_str()).with_context(|| {
                format!("the checkpoint has optimizer state for {n}, which the model lacks")
            })?;
            indices.push(*i);
        }
        indices.sort_unstable();
    }
    for &i in &indices {
        for part in [EXP_AVG, MASTER] {
            if src.has(&names[i], part)? {
                src.check_shape(&names[i], part, &params[i].size())?;
            }
        }
    }
    load_whole(src, names, params, opt, &indices)?;
    if indices.is_empty() {
        return Ok(());
    }
    // Laid out as the gradients' sum is (the plan the first update makes).
    let protos = sum_layout(params, &indices, sum_kind(params, opt.master_weights));
    let plan = ShardPlan::for_rank(&protos, BUCKET_BYTES, rank, world);
    let with_masters = opt.master_weights && indices.iter().any(|&i| narrow(&params[i]));
    let with_moments = {
        let mut any = false;
        for &i in &indices {
            any |= src.has(&names[i], EXP_AVG)?;
        }
        any
    };
    let mut masters = Vec::new();
    let mut moments = Vec::new();
    for b in 0..plan.len() {
        let shard = |src: &mut StateSource, part: &str, kind: Kind| -> Result<Tensor> {
            let flat = shard_of(src, &plan, b, &indices, (names, params), part, kind)?;
            Ok(flat.to_device(protos[0].device()))
        };
        let kind = protos[plan.members(b)[0]].kind();
        if with_masters {
            masters.push(shard(src, MASTER, Kind::Float)?);
        }
        if with_moments {
            moments.push((shard(src, EXP_AVG, kind)?, shard(src, EXP_AVG_SQ, kind)?));
        }
    }
    opt.zero = Some(ZeroShards {
        plan,
        indices,
        masters: with_masters.then_some(masters),
        moments,
    });
    Ok(())
}

/// This rank's flat shard of bucket `b` of `plan` (over the parameters at
/// `indices`) of `part`, from the checkpoint: a parameter without it there
/// contributes its weight (a master) or zeros (a moment), the bucket's end
/// zeros; on the CPU in `kind`.
fn shard_of(
    src: &mut StateSource,
    plan: &ShardPlan,
    b: usize,
    indices: &[usize],
    (names, params): (&[String], &[Tensor]),
    part: &str,
    kind: Kind,
) -> Result<Tensor> {
    let (numel, shard) = plan.bucket_numel(b);
    let lo = plan.rank() as i64 * shard;
    let hi = (lo + shard).min(numel);
    let mut pieces = Vec::new();
    let mut offset = 0i64;
    for &j in plan.members(b) {
        let i = indices[j];
        let n = params[i].numel() as i64;
        let (from, to) = (lo.max(offset) - offset, hi.min(offset + n) - offset);
        if from < to {
            let piece = if src.has(&names[i], part)? {
                src.range(&names[i], part, from, to)?.to_kind(kind)
            } else if part == MASTER {
                params[i]
                    .detach()
                    .reshape([-1])
                    .narrow(0, from, to - from)
                    .to_device(Device::Cpu)
                    .to_kind(kind)
            } else {
                Tensor::zeros([to - from], (kind, Device::Cpu))
            };
            pieces.push(piece);
        }
        offset += n;
    }
    let real: i64 = pieces.iter().map(|p| p.numel() as i64).sum();
    if real < shard {
        pieces.push(Tensor::zeros([shard - real], (kind, Device::Cpu)));
    }
    Ok(Tensor::cat(&pieces, 0))
}

#[cfg(test)]
#[path = "checkpoint_tests.rs"]
mod tests;
