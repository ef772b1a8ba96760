//! What a checkpoint holds besides the model: the trainer's position (step,
//! stage, the metrics the schedule saw last), dataset cursors, the schedule
//! plugin's own state, the optimizer and the SHA-256 of every plugin.
//!
//! Layout of `checkpoints/step-NNNNNNNN/`:
//! `model/` (Hugging Face directory), the optimizer's state (whole in
//! `optimizer.safetensors`, or one file per rank in `optimizer/` under
//! ZeRO: `optim/checkpoint.rs`), `trainer.json` (this struct).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};

use super::checkpoint_store::CheckpointStore;
use super::data::Cursor;
use super::data_parallel::DataParallel;
use super::optim::{checkpoint, AdamW};
use super::policy::Policy;

/// One line of the evaluation summary table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SummaryRow {
    pub when: String,
    pub step: u64,
    pub dataset: String,
    pub prompts: usize,
    pub accuracy: f64,
    pub pass_at_k: Vec<(usize, f64)>,
    pub reward: f64,
    pub length: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainerState {
    pub global_step: u64,
    /// Stage of the last step ("" before the first).
    pub stage: String,
    pub stage_step: u64,
    /// The last step's metrics, passed to the schedule's next call.
    pub last_metrics: Vec<(String, f64)>,
    pub cursors: BTreeMap<String, Cursor>,
    /// Every random stream (data mixing, sampling, PAD) is derived from this
    /// seed and the step number, so the seed is the whole RNG state.
    pub seed: u64,
    /// The schedule plugin's `save-state` bytes, hex.
    pub schedule_state: String,
    pub plugin_sha256: BTreeMap<String, String>,
    pub summary: Vec<SummaryRow>,
    /// Lines of metrics.jsonl written up to this checkpoint.
    pub metrics_records: usize,
    pub lmmhost_version: String,
}

impl TrainerState {
    pub fn fresh(seed: u64) -> TrainerState {
        TrainerState {
            global_step: 0,
            stage: String::new(),
            stage_step: 0,
            last_metrics: Vec::new(),
            cursors: BTreeMap::new(),
            seed,
            schedule_state: String::new(),
            plugin_sha256: BTreeMap::new(),
            summary: Vec::new(),
            metrics_records: 0,
            lmmhost_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn from_hex(s: &str) -> Result<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        bail!("odd-length hex string");
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).context("not a hex string"))
        .collect()
}

/// Writes the checkpoint of `st`'s step through `store`; every rank calls
/// it, and rank 0 gets the checkpoint's directory. Under ZeRO each rank
/// writes its own shards of the optimizer state into the incomplete
/// directory, which rank 0 renames into place once every rank has written:
/// no rank holds the whole state. Otherwise every rank holds the same
/// state, and rank 0 writes it.
pub fn write_checkpoint(
    store: &CheckpointStore,
    dp: &DataParallel,
    policy: &Policy,
    opt: &AdamW,
    st: &TrainerState,
) -> Result<Option<PathBuf>> {
    let step = st.global_step;
    let sharded = opt.zero.is_some() && dp.world_size() > 1;
    let world = dp.world_size() as f64;
    let shards = |d: &Path, mine: Result<()>| -> Result<()> {
        let mine = mine.and_then(|()| save_optimizer_shards(d, policy, opt));
        let written = dp.sum(&[f64::from(u8::from(mine.is_ok()))])?[0];
        mine.with_context(|| format!("rank {}", dp.rank()))?;
        ensure!(
            written == world,
            "{} of {world} ranks could not write their optimizer shards (their errors say why)",
            world - written
        );
        Ok(())
    };
    if !dp.is_main() {
        if sharded {
            // Once rank 0 has made the directory.
            dp.barrier()?;
            shards(&store.incomplete_dir(step), Ok(()))?;
        }
        return Ok(None);
    }
    let dir = store.save(step, |d| {
        if sharded {
            dp.barrier()?;
            shards(d, save_model_and_state(d, policy, st))
        } else {
            save_model_and_state(d, policy, st)?;
            save_optimizer(d, policy, opt)
        }
    })?;
    Ok(Some(dir))
}

/// Writes the model and the trainer state into `dir` (rank 0; the
/// optimizer goes with `save_optimizer` or, sharded, from every rank).
pub fn save_model_and_state(dir: &Path, policy: &Policy, state: &TrainerState) -> Result<()> {
    policy.save(&dir.join("model"))?;
    let path = dir.join("trainer.json");
    std::fs::write(&path, serde_json::to_string_pretty(state)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Writes the optimizer's whole state (`optimizer.safetensors`).
pub fn save_optimizer(dir: &Path, policy: &Policy, opt: &AdamW) -> Result<()> {
    checkpoint::save_whole(dir, &param_names(policy), opt)
}

/// Writes this rank's shards of the optimizer's state (`optimizer/`).
pub fn save_optimizer_shards(dir: &Path, policy: &Policy, opt: &AdamW) -> Result<()> {
    checkpoint::save_shards(dir, &param_names(policy), &policy.tensors(), opt)
}

fn param_names(policy: &Policy) -> Vec<String> {
    policy.params.iter().map(|(n, _)| n.clone()).collect()
}

pub fn load_state(dir: &Path) -> Result<TrainerState> {
    let path = dir.join("trainer.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a trainer state", path.display()))
}

/// Restores the optimizer's moments (of the parameters that had any), f32
/// master weights and step from `dir`: on the parameters' device, or under
/// ZeRO as this rank's shards (`rank` of `world`), reading only those.
/// Returns the bytes of optimizer tensors read and the number of files.
pub fn load_optimizer(
    dir: &Path,
    policy: &Policy,
    opt: &mut AdamW,
    rank: usize,
    world: usize,
) -> Result<(u64, usize)> {
    checkpoint::load(
        dir,
        &param_names(policy),
        &policy.tensors(),
        opt,
        rank,
        world,
    )
}
