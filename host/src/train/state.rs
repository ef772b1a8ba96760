//! What a checkpoint holds besides the model: the trainer's position (step,
//! stage, the metrics the schedule saw last), dataset cursors, the schedule
//! plugin's own state, the optimizer and the SHA-256 of every plugin.
//!
//! Layout of `checkpoints/step-NNNNNNNN/`:
//! `model/` (Hugging Face directory), `optimizer.safetensors` (AdamW moments,
//! `<param>.exp_avg` / `<param>.exp_avg_sq`, and `<param>.master`, the f32
//! master weight, under mixed precision), `trainer.json` (this struct).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::data::Cursor;
use super::optim::AdamW;
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

/// Writes model, optimizer and trainer state into `dir`.
pub fn save(dir: &Path, policy: &Policy, opt: &AdamW, state: &TrainerState) -> Result<()> {
    policy.save(&dir.join("model"))?;
    let mut named: Vec<(String, Tensor)> = Vec::new();
    for (&i, (m, v)) in &opt.moments {
        let name = &policy.params[i].0;
        named.push((format!("{name}.exp_avg"), m.to_device(tch::Device::Cpu)));
        named.push((format!("{name}.exp_avg_sq"), v.to_device(tch::Device::Cpu)));
    }
    for (&i, w) in &opt.masters {
        let name = &policy.params[i].0;
        named.push((format!("{name}.master"), w.to_device(tch::Device::Cpu)));
    }
    named.push(("step".into(), Tensor::from_slice(&[opt.step])));
    let path = dir.join("optimizer.safetensors");
    Tensor::write_safetensors(&named, &path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    let path = dir.join("trainer.json");
    std::fs::write(&path, serde_json::to_string_pretty(state)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
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
/// ZeRO on the CPU, from where each rank takes its shard.
pub fn load_optimizer(dir: &Path, policy: &Policy, opt: &mut AdamW) -> Result<()> {
    let path = dir.join("optimizer.safetensors");
    let tensors: BTreeMap<String, Tensor> = Tensor::read_safetensors(&path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .into_iter()
        .collect();
    let get = |k: &str| {
        tensors
            .get(k)
            .with_context(|| format!("{}: no tensor {k}", path.display()))
    };
    opt.moments.clear();
    opt.masters.clear();
    for (i, (name, p)) in policy.params.iter().enumerate() {
        let device = if opt.zero_stage > 0 {
            tch::Device::Cpu
        } else {
            p.device()
        };
        if let Some(w) = tensors.get(&format!("{name}.master")) {
            if w.size() != p.size() {
                bail!(
                    "{}: master weight of {name} has shape {:?}, the parameter {:?}",
                    path.display(),
                    w.size(),
                    p.size()
                );
            }
            opt.masters
                .insert(i, w.to_device(device).to_kind(tch::Kind::Float));
        }
        if !tensors.contains_key(&format!("{name}.exp_avg")) {
            continue;
        }
        // Moments are in the type of what they update: the master or the parameter.
        let kind = if opt.masters.contains_key(&i) {
            tch::Kind::Float
        } else {
            p.kind()
        };
        let m = get(&format!("{name}.exp_avg"))?
            .to_device(device)
            .to_kind(kind);
        let v = get(&format!("{name}.exp_avg_sq"))?
            .to_device(device)
            .to_kind(kind);
        if m.size() != p.size() {
            bail!(
                "{}: moment of {name} has shape {:?}, the parameter {:?}",
                path.display(),
                m.size(),
                p.size()
            );
        }
        opt.moments.insert(i, (m, v));
    }
    opt.step = get("step")?.int64_value(&[0]);
    Ok(())
}
