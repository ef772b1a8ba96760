//! `lmmhost plan`: the predicted peak accelerator memory of a run, by part,
//! before any weight is loaded (the formulas: `train/memory_plan/` and
//! docs/performance.md).

use std::fmt::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use lmmhost::train::experiment::Experiment;
use lmmhost::train::memory_plan::{MemoryPlan, PlanInputs};
use lmmhost::train::precision::Precision;
use lmmhost_model::config::ModelConfig;

#[derive(Args)]
pub struct PlanArgs {
    /// The experiment file.
    experiment: PathBuf,
    /// Override a key of the experiment file, `KEY=VALUE` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// The accelerator's memory, e.g. `80GiB`, `141GB`, `24000MiB`.
    #[arg(long, default_value = "80GiB")]
    gpu_memory: String,
    /// Print the plan as one JSON object.
    #[arg(long)]
    json: bool,
    /// The plan of one of N data-parallel ranks (`lmmhost run --nproc N`,
    /// torchrun): its share of the step's prompts.
    #[arg(long, value_name = "N", default_value_t = 1)]
    nproc: usize,
}

/// `80GiB`, `141GB`, `512MiB`, or a number of bytes.
pub fn parse_bytes(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .trim()
        .parse()
        .with_context(|| format!("--gpu-memory {s:?}: expected a size like 80GiB"))?;
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        other => anyhow::bail!(
            "--gpu-memory {s:?}: unknown unit {other:?} (B, KiB, MiB, GiB, KB, MB, GB)"
        ),
    };
    Ok((n * scale) as u64)
}

fn gib(b: u64) -> String {
    let g = b as f64 / (1u64 << 30) as f64;
    if g >= 1.0 {
        format!("{g:.1} GiB")
    } else {
        format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
    }
}

pub fn run(args: PlanArgs) -> Result<()> {
    // Shapes and settings only: the data and plugin files need not exist here.
    let exp = Experiment::load_settings(&args.experiment, &args.sets)?;
    let config = ModelConfig::from_dir(&exp.model.path)
        .with_context(|| format!("model.path: {}", exp.model.path.display()))?;
    let budget = parse_bytes(&args.gpu_memory)?;
    if args.nproc == 0 {
        bail!("--nproc 0: at least one rank is needed");
    }
    let inputs = PlanInputs::from_experiment(&exp, &config, args.nproc)?;
    let plan = inputs.plan();
    if args.json {
        let v = serde_json::json!({
            "plan": plan,
            "vision_image": inputs.vision,
            "gpu_memory": budget,
            "fits": plan.peak <= budget,
            "largest_micro_batch": inputs.largest_micro_batch(budget),
            "largest_kv_cache_tokens": inputs.largest_kv_tokens(budget),
            "switches": switches(&exp, &inputs, &plan, budget),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", text(&exp, &inputs, &plan, budget));
    }
    Ok(())
}

fn text(exp: &Experiment, i: &PlanInputs, p: &MemoryPlan, budget: u64) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{}: {:.2} B parameters ({:.2} B trainable), model.dtype = {:?}, micro_batch_size {}, rows of up to {} tokens",
        exp.name,
        i.params.total() as f64 / 1e9,
        i.trainable as f64 / 1e9,
        exp.model.dtype,
        i.micro_batch_size,
        i.row_tokens
    );
    if i.ranks > 1 {
        let zero = match i.zero_stage {
            0 => "no ZeRO: every rank holds the whole optimizer state".to_string(),
            2 => format!(
                "ZeRO stage 2: each holds 1/{} of the master weights, moments and gradients' sum",
                i.ranks
            ),
            k => format!(
                "ZeRO stage {k}: each holds 1/{} of the master weights and moments",
                i.ranks
            ),
        };
        let _ = writeln!(o, "one of {} ranks, {zero}", i.ranks);
    }
    for (name, v) in [
        ("weights", p.weights),
        ("master weights", p.master_weights),
        ("optimizer moments", p.optimizer),
        ("gradients", p.gradients),
        ("activations (one micro-batch)", p.activations),
        ("vision activations", p.vision_activations),
        ("update transients", p.update),
        ("log-prob pass (one chunk)", p.logprob_pass),
        ("KV cache (rollout)", p.kv_cache),
        ("reference model", p.reference_model),
    ] {
        let _ = writeln!(o, "  {name:<31} {:>11}", gib(v));
    }
    if let Some(v) = &i.vision {
        let _ = writeln!(
            o,
            "  (vision: one image per prompt of max_pixels {}{} -> {}x{}, {} patches, {} tokens, \
             the worst case: the plan does not read the data's images; the tower {})",
            v.max_pixels,
            if v.capped_by_prompt {
                ", the largest within rollout.max_prompt_tokens"
            } else {
                ""
            },
            v.resized.1,
            v.resized.0,
            v.patches,
            v.tokens,
            if v.trains { "trains" } else { "is frozen" }
        );
    }
    let verdict = if p.peak <= budget {
        "fits"
    } else {
        "does NOT fit"
    };
    let _ = writeln!(
        o,
        "  {:<31} {:>11}  ({verdict} in {})",
        "peak",
        gib(p.peak),
        gib(budget)
    );
    let _ = writeln!(o, "{}", largest_that_fit(i, budget));
    for s in switches(exp, i, p, budget) {
        let _ = writeln!(o, "  try: {s}");
    }
    o
}

/// The largest micro-batch and KV cache that fit, or that none does.
fn largest_that_fit(i: &PlanInputs, budget: u64) -> String {
    let rows = match i.largest_micro_batch(budget) {
        0 => "no micro_batch_size fits, not even 1 row (see the switches below)".to_string(),
        n => format!("largest micro_batch_size that fits: {n}"),
    };
    let kv = match i.largest_kv_tokens(budget) {
        0 => "no rollout KV cache fits".to_string(),
        n => format!("largest rollout KV cache: {n} tokens (rollout.kv_cache_budget)"),
    };
    format!("{rows}; {kv}")
}

/// Settings that lower the peak, when it does not fit.
fn switches(exp: &Experiment, i: &PlanInputs, p: &MemoryPlan, budget: u64) -> Vec<String> {
    if p.peak <= budget {
        return Vec::new();
    }
    let mut out = Vec::new();
    if i.precision == Precision::Full {
        out.push(
            "model.dtype = \"bf16\" (mixed precision: bf16 weights and activations, f32 masters)"
                .into(),
        );
    }
    if i.ranks > 1 && i.zero_stage == 0 && p.optimizer > 0 {
        out.push(format!(
            "distributed.zero_stage = 1 (each rank holds 1/{} of the optimizer state)",
            i.ranks
        ));
    }
    if p.reference_model > 0 {
        out.push("grpo.kl.reference_device = \"cpu\" or reference_dtype = \"bf16\"".into());
    }
    if i.micro_batch_size > 1 {
        out.push(format!(
            "optim.micro_batch_size = {} (fewer activations)",
            i.largest_micro_batch(budget).max(1)
        ));
    }
    let kv = i.largest_kv_tokens(budget);
    if !i.activation_checkpointing && p.activations > 0 {
        out.push("model.activation_checkpointing = true (only the layers' inputs are kept)".into());
    }
    if p.logprob_pass >= p.update.max(p.kv_cache) {
        out.push(format!(
            "grpo.logprob_chunk_tokens = {} (smaller log-prob chunks)",
            i.row_tokens
        ));
    }
    if p.kv_cache > p.update && kv > i.row_tokens {
        out.push(format!(
            "rollout.kv_cache_budget = {kv} (rows wait for room in the KV cache)"
        ));
    }
    // Under LoRA the tower trains only through its own adapters.
    let tower_trains = i.params.vision > 0 && exp.model.lora.as_ref().is_none_or(|l| l.vision);
    if !exp.grpo.freeze_vision && tower_trains {
        out.push("grpo.freeze_vision = true (no gradients or moments for the vision tower)".into());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("80GiB").unwrap(), 80 << 30);
        assert_eq!(parse_bytes("141 GB").unwrap(), 141_000_000_000);
        assert_eq!(parse_bytes("1024").unwrap(), 1024);
        assert!(parse_bytes("80 parsecs")
            .unwrap_err()
            .to_string()
            .contains("unknown unit"));
    }
}
