//! `lmmhost bench grpo`: the GRPO step benchmark. It runs a shipped
//! experiment (configs/bench/w1.toml, w2.toml), optionally with any model
//! config, prompt and response lengths, batch, KV budget, dtype and device
//! (bench_grpo_setup.rs), through the same `run` the `lmmhost run` command
//! uses, then reads the run's metrics.jsonl back and prints the median step
//! time, its split, tokens/s and peak memory.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use lmmhost::metrics::log::read_records;
use lmmhost::train::data::prompt_conversation;
use lmmhost::train::experiment::Experiment;
use lmmhost::train::plugins::Plugins;
use lmmhost::train::run::{run_steps_only, RunOptions};
use lmmhost_model::device::parse_device;
use lmmhost_model::memory::{format_mib, peak_bytes};
use lmmhost_model::processor::chat_template::{render, ImageInput, Part};

use super::bench_grpo_setup::{prepare, Custom, Scratch};
use super::bench_model::peak_label;

#[derive(Clone, Copy, ValueEnum)]
pub enum Workload {
    W1,
    W2,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::W1 => "w1",
            Workload::W2 => "w2",
        }
    }
}

#[derive(Args)]
pub struct BenchGrpoArgs {
    /// The workload: w1 (Qwen2 text) or w2 (Qwen2.5-VL, one image per
    /// prompt). Default: w1, or w2 when --model is a vision-language config.
    #[arg(long, value_enum)]
    workload: Option<Workload>,
    /// Any model config instead of the workload's (random weights, the
    /// workload's character tokenizer): a preset (w1, w2, w2-qwen3-vl), a
    /// config.json, a directory with one, or a folder name under configs/models/.
    #[arg(long)]
    model: Option<String>,
    /// Prompts per step (rollout.prompts_per_step).
    #[arg(long)]
    prompts: Option<usize>,
    /// Samples per prompt (rollout.group_size).
    #[arg(long)]
    group_size: Option<u32>,
    /// Prompt length in tokens after the chat template: the workload's prompts
    /// are replaced by filler text of this length (one image each for a
    /// vision-language model).
    #[arg(long)]
    prompt_tokens: Option<usize>,
    /// Side in pixels of that image (56: 4 image tokens at patch 14, merge 2).
    #[arg(long, default_value_t = 56)]
    image_side: u32,
    /// Response length in tokens: every sample generates exactly this many
    /// (rollout.max_response_tokens and min_new_tokens).
    #[arg(long)]
    response_tokens: Option<usize>,
    /// rollout.kv_cache_budget in tokens (unset: every row at once).
    #[arg(long)]
    kv_budget: Option<usize>,
    /// model.dtype (f32, bf16, f16).
    #[arg(long)]
    dtype: Option<String>,
    /// model.device (cpu, cuda, cuda:N); on a GPU model.workers defaults to 1.
    #[arg(long)]
    device: Option<String>,
    /// Sequences per forward/backward (optim.micro_batch_size).
    #[arg(long)]
    micro_batch: Option<usize>,
    /// Any other setting, KEY=VALUE as `lmmhost run --set`
    /// (e.g. model.activation_checkpointing=true); applied last.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Measured steps (the median is over these).
    #[arg(long, default_value_t = 5)]
    steps: u64,
    /// Steps run first and not measured (the first one also loads the reference model).
    #[arg(long, default_value_t = 1)]
    warmup: u64,
    /// libtorch CPU threads (overrides the experiment's model.threads).
    #[arg(long)]
    threads: Option<usize>,
    /// Threads the rows of a step are split over, each with threads/workers
    /// libtorch threads (overrides the experiment's model.workers).
    #[arg(long)]
    workers: Option<usize>,
    /// The experiment file (default: configs/bench/<workload>.toml, from the repository root).
    #[arg(long)]
    experiment: Option<PathBuf>,
    /// Write the workload's prompts (chat-templated text, images as PNG files
    /// beside it) to this JSONL file for bench/trl/grpo_trl.py, and exit.
    #[arg(long)]
    export_prompts: Option<PathBuf>,
    /// Prompts to export.
    #[arg(long, default_value_t = 256)]
    export_count: u64,
    /// Also write the figures as one JSON object to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Only build and check the benchmark's experiment (e.g. whether this
    /// binary knows a --set key), then exit.
    #[arg(long)]
    check_only: bool,
}

/// The figures of one run (seconds are medians over the measured steps).
const SPLIT: [(&str, &str); 7] = [
    ("rollout", "time/rollout"),
    ("reward", "time/reward"),
    ("ref/old logprobs", "time/logprobs"),
    ("forward", "time/forward"),
    ("backward", "time/backward"),
    ("optimizer", "time/optimizer"),
    ("step", "time/step"),
];

pub fn bench_grpo(args: BenchGrpoArgs) -> Result<()> {
    let workload = match (args.workload, &args.model) {
        (Some(w), _) => w,
        (None, Some(m)) if is_multimodal(m)? => Workload::W2,
        (None, _) => Workload::W1,
    };
    let base = args
        .experiment
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("configs/bench/{}.toml", workload.name())));
    if !base.exists() {
        bail!(
            "{} not found: run from the repository root or pass --experiment",
            base.display()
        );
    }
    // A changed model or prompt set is written out as an experiment file of its own.
    let scratch =
        Scratch(std::env::temp_dir().join(format!("lmmhost-bench-grpo-{}", std::process::id())));
    let path = if args.model.is_some() || args.prompt_tokens.is_some() {
        std::fs::create_dir_all(&scratch.0)
            .with_context(|| format!("cannot create {}", scratch.0.display()))?;
        let custom = Custom {
            model: args.model.as_deref(),
            prompt_tokens: args.prompt_tokens,
            prompt_count: args.prompts.unwrap_or(16) * 4,
            image_side: args.image_side,
        };
        prepare(&base, &custom, &scratch.0)?
    } else {
        base.clone()
    };
    let mut sets = Vec::new();
    if let Some(n) = args.prompts {
        sets.push(format!("rollout.prompts_per_step={n}"));
    }
    if let Some(n) = args.group_size {
        sets.push(format!("rollout.group_size={n}"));
    }
    if let Some(n) = args.response_tokens {
        sets.push(format!("rollout.max_response_tokens={n}"));
        sets.push(format!("rollout.min_new_tokens={n}"));
    }
    if let Some(n) = args.kv_budget {
        sets.push(format!("rollout.kv_cache_budget={n}"));
    }
    if let Some(d) = &args.dtype {
        sets.push(format!("model.dtype={}", toml::Value::String(d.clone())));
    }
    if let Some(d) = &args.device {
        sets.push(format!("model.device={}", toml::Value::String(d.clone())));
        if d.starts_with("cuda") && args.workers.is_none() {
            sets.push("model.workers=1".into());
        }
    }
    if let Some(n) = args.micro_batch {
        sets.push(format!("optim.micro_batch_size={n}"));
    }
    sets.extend(args.sets.iter().cloned());
    let mut exp = Experiment::load_with_sets(&path, &sets)
        .with_context(|| format!("benchmark experiment from {}", base.display()))?;
    if let Some(t) = args.threads {
        exp.model.threads = Some(t);
    }
    if let Some(w) = args.workers {
        exp.model.workers = w;
    }
    if args.check_only {
        println!(
            "benchmark experiment ok ({} settings over {})",
            sets.len(),
            base.display()
        );
        return Ok(());
    }
    if let Some(out) = &args.export_prompts {
        return export_prompts(&exp, out, args.export_count);
    }
    if args.steps == 0 {
        bail!("--steps must be at least 1");
    }
    let out = exp
        .output_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(&exp.name));
    // A previous benchmark's metrics would be appended to; start clean, but
    // only in a directory that is evidently a benchmark's.
    let is_bench_dir = out
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("bench-grpo-"));
    if out.exists() {
        if !is_bench_dir {
            bail!(
                "{} exists and is not a bench-grpo-* directory; point output_dir elsewhere",
                out.display()
            );
        }
        std::fs::remove_dir_all(&out).with_context(|| format!("cannot clear {}", out.display()))?;
    }
    exp.output_dir = Some(out.clone());
    run_steps_only(
        &exp,
        &RunOptions {
            resume: false,
            max_steps: Some(args.warmup + args.steps),
        },
    )?;
    let records = read_records(&out.join("metrics.jsonl"))?;
    let measured: Vec<&BTreeMap<String, f64>> = records
        .iter()
        .filter(|r| r.step > args.warmup && r.kind == "grpo")
        .map(|r| &r.values)
        .collect();
    if measured.is_empty() {
        bail!(
            "no GRPO step after the {} warm-up step(s) in {}",
            args.warmup,
            out.join("metrics.jsonl").display()
        );
    }
    let med = |key: &str| median(measured.iter().filter_map(|v| v.get(key).copied()));
    let device = parse_device(&exp.model.device)?;
    let peak_mb = peak_bytes(device).map(|b| b as f64 / (1024.0 * 1024.0));
    let threads = exp
        .model
        .threads
        .map_or("all".to_string(), |t| t.to_string());

    println!(
        "\nGRPO step, workload {}{} ({} measured steps after {} warm-up, {} threads, {} workers, {})",
        workload.name(),
        args.model
            .as_ref()
            .map(|m| format!(" with model {m}"))
            .unwrap_or_default(),
        measured.len(),
        args.warmup,
        threads,
        exp.model.workers,
        exp.model.path.display()
    );
    let c = lmmhost_model::config::ModelConfig::from_dir(&exp.model.path)?.text;
    println!(
        "  model: hidden {}, {} layers, {} heads / {} kv, vocab {}; {} {} on {}",
        c.hidden_size,
        c.num_hidden_layers,
        c.num_attention_heads,
        c.num_key_value_heads,
        c.vocab_size,
        exp.model.dtype,
        if exp.model.init == lmmhost::train::experiment::ModelInit::Random {
            "random weights"
        } else {
            "weights"
        },
        exp.model.device,
    );
    let lengths = (
        med("prompt_length/mean"),
        med("response_length/mean"),
        med("samples/generated"),
    );
    println!(
        "  batch: {} prompts x {} samples, prompt {:.0} tokens, response {:.0} tokens (means), {:.0} rows, KV budget {}",
        exp.rollout.prompts_per_step,
        exp.rollout.group_size,
        lengths.0,
        lengths.1,
        lengths.2,
        exp.rollout
            .kv_cache_budget
            .map_or("none".to_string(), |b| format!("{b} tokens")),
    );
    let step = med("time/step");
    let mut json = serde_json::Map::new();
    for (label, key) in SPLIT {
        let s = med(key);
        println!(
            "  {label:<18} {:>8.3} s  {:>5.1} %",
            s,
            100.0 * s / step.max(1e-12)
        );
        json.insert(key.to_string(), s.into());
    }
    let tok = med("throughput/tokens_per_s");
    let gen = med("throughput/gen_tokens_per_s");
    println!("  tokens/s (prompt+response per step time) {tok:.0}");
    println!("  generated tokens/s (rollout)             {gen:.0}");
    println!(
        "  {:<40} {}",
        format!("peak memory ({})", peak_label(device)),
        format_mib(peak_bytes(device))
    );
    if let Some(mb) = peak_mb {
        json.insert("peak_memory_mb".into(), mb.into());
        if device == tch::Device::Cpu {
            // The name earlier versions wrote.
            json.insert("peak_rss_mb".into(), mb.into());
        }
    }
    json.insert("peak_memory_kind".into(), peak_label(device).into());
    // The floor compares against a CPU matmul rate measured here.
    if device == tch::Device::Cpu {
        if let Some(floor) = compute_floor(&exp, &measured, step)? {
            println!("{floor}");
        }
    }
    println!("  load average before/after: {}", load_average());
    json.insert("throughput/tokens_per_s".into(), tok.into());
    json.insert("throughput/gen_tokens_per_s".into(), gen.into());
    json.insert("steps".into(), (measured.len() as u64).into());
    json.insert("workload".into(), workload.name().into());
    json.insert(
        "model".into(),
        args.model
            .clone()
            .map_or(serde_json::Value::Null, Into::into),
    );
    json.insert("prompts".into(), exp.rollout.prompts_per_step.into());
    json.insert("group_size".into(), exp.rollout.group_size.into());
    json.insert("prompt_length/mean".into(), lengths.0.into());
    json.insert("response_length/mean".into(), lengths.1.into());
    json.insert("dtype".into(), exp.model.dtype.clone().into());
    json.insert("device".into(), exp.model.device.clone().into());
    json.insert(
        "kv_cache_budget".into(),
        exp.rollout
            .kv_cache_budget
            .map_or(serde_json::Value::Null, Into::into),
    );
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::Value::Object(json).to_string())
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(())
}

/// The decoder's matrix-multiply work in one step, counted from the model
/// config and the step's measured prompt and response lengths, against the
/// fp32 matmul rate measured here and now: how far the step is from the
/// hardware, and the least time any implementation of the same maths needs.
fn compute_floor(
    exp: &Experiment,
    measured: &[&BTreeMap<String, f64>],
    step: f64,
) -> Result<Option<String>> {
    let med = |key: &str| median(measured.iter().filter_map(|v| v.get(key).copied()));
    let (rows, lp, lr) = (
        med("samples/generated"),
        med("prompt_length/mean"),
        med("response_length/mean"),
    );
    if !(rows.is_finite() && lp.is_finite() && lr.is_finite()) {
        return Ok(None);
    }
    let c = lmmhost_model::config::ModelConfig::from_dir(&exp.model.path)?.text;
    let (h, d) = (c.hidden_size as f64, c.head_dim as f64);
    let linear = h * d * (c.num_attention_heads as f64 * 2.0 + c.num_key_value_heads as f64 * 2.0)
        + 3.0 * h * c.intermediate_size as f64;
    let per_token = 2.0 * linear * c.num_hidden_layers as f64;
    let head = 2.0 * h * c.vocab_size as f64;
    let prompts = rows / f64::from(exp.rollout.group_size.max(1));
    // Each prompt once (prefill; shared in the passes), every response token
    // through the decoder and the lm_head.
    let pass = prompts * lp * per_token + rows * lr * (per_token + head);
    let (rollout, reference, forward, backward) = (pass, pass, pass, 2.0 * pass);
    let total = rollout + reference + forward + backward;
    let rate = measure_matmul_rate(c.hidden_size, c.intermediate_size);
    Ok(Some(format!(
        "  decoder matmul work per step             {:.1} GFLOP (rollout {:.1}, reference {:.1}, update {:.1} + {:.1}; attention scores and vision tower not counted)\n  \
         fp32 matmul rate measured now            {:.0} GFLOP/s ([2048 x {}] @ [{} x {}], {} threads)\n  \
         compute floor (work / rate)              {:.2} s; this step ran at {:.0} GFLOP/s, {:.0} % of the rate",
        total / 1e9,
        rollout / 1e9,
        reference / 1e9,
        forward / 1e9,
        backward / 1e9,
        rate / 1e9,
        c.hidden_size,
        c.hidden_size,
        c.intermediate_size,
        tch::get_num_threads(),
        total / rate,
        total / step / 1e9,
        100.0 * total / step / rate,
    )))
}

/// FLOP/s of a large fp32 matmul of the model's MLP shape on the CPU, best
/// of a few rounds of ~0.1 s.
fn measure_matmul_rate(hidden: i64, inter: i64) -> f64 {
    let opts = (tch::Kind::Float, tch::Device::Cpu);
    let a = tch::Tensor::randn([2048, hidden], opts);
    let b = tch::Tensor::randn([hidden, inter], opts);
    let flop = 2.0 * 2048.0 * hidden as f64 * inter as f64;
    let _ = a.matmul(&b);
    let mut best = 0f64;
    for _ in 0..5 {
        let t = std::time::Instant::now();
        let mut n = 0;
        while t.elapsed().as_secs_f64() < 0.1 {
            let _ = a.matmul(&b);
            n += 1;
        }
        best = best.max(flop * n as f64 / t.elapsed().as_secs_f64());
    }
    best
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if !n.is_multiple_of(2) {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Whether a model config (as `--model` names it) is vision-language.
fn is_multimodal(config: &str) -> Result<bool> {
    let raw = lmmhost_model::bench::resolve_config(config)?;
    Ok(raw.get("vision_config").is_some())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Writes the first `count` prompts of the experiment's first dataset as
/// `{"prompt": <chat-templated text>, "images": [<png path>...]}` lines.
fn export_prompts(exp: &Experiment, out: &Path, count: u64) -> Result<()> {
    let plugins = Plugins::start(exp)?;
    let (name, loader) = plugins
        .datasets
        .iter()
        .next()
        .context("the experiment has no [datasets]")?;
    let n = count.min(loader.len());
    let samples = loader
        .get_many(&(0..n).collect::<Vec<_>>())
        .with_context(|| format!("dataset {name}"))?;
    let dir = out.parent().unwrap_or(Path::new("."));
    let stem = out
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("prompts");
    let img_dir = dir.join(format!("{stem}-images"));
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?,
    );
    for (i, s) in samples.iter().enumerate() {
        let conv = prompt_conversation(s)?;
        let chat = render(&conv, true);
        let mut images = Vec::new();
        for (j, img) in chat.images.iter().enumerate() {
            std::fs::create_dir_all(&img_dir)
                .with_context(|| format!("cannot create {}", img_dir.display()))?;
            let p = img_dir.join(format!("{i:05}-{j}.png"));
            match img {
                ImageInput::Bytes(b) => std::fs::write(&p, b)
                    .with_context(|| format!("cannot write {}", p.display()))?,
                ImageInput::Path(src) => {
                    std::fs::copy(src, &p).with_context(|| {
                        format!("sample {}: cannot copy {}", s.id, src.display())
                    })?;
                }
            }
            images.push(p.to_string_lossy().into_owned());
        }
        // Messages with text only, for a processor that applies its own template.
        let user: String = conv
            .iter()
            .flat_map(|m| m.parts.iter())
            .filter_map(|p| match p {
                Part::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        let line = serde_json::json!({ "prompt": chat.text, "user_text": user, "images": images });
        writeln!(f, "{line}")?;
    }
    f.flush()?;
    println!("{n} prompts written to {}", out.display());
    Ok(())
}
