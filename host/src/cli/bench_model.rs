//! `lmmhost bench model`: prefill, decode and forward+backward tokens/s and
//! peak memory of any model config with random weights (a thin wrapper over
//! `lmmhost_model::bench`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use lmmhost_model::bench::{self, BenchOptions};
use lmmhost_model::device::{dtype_name, parse_device, parse_dtype};
use lmmhost_model::memory::{format_mib, peak_bytes};
use tch::Device;

#[derive(Args)]
pub struct BenchModelArgs {
    /// A preset (w1: the GRPO benchmark's W1 text model, w2: its Qwen2.5-VL
    /// model, w2-qwen3-vl: a Qwen3-VL of w2's sizes), a config.json, a
    /// directory with one, or a folder name under configs/models/ (e.g.
    /// qwen2.5-vl-3b). Weights are random either way.
    #[arg(long, default_value = "w1")]
    pub config: String,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Sequences per batch.
    #[arg(long, default_value_t = 16)]
    pub batch: i64,
    /// Prompt tokens per sequence (prefill and forward+backward length).
    #[arg(long, default_value_t = 64)]
    pub prompt_len: i64,
    /// Decode steps measured.
    #[arg(long, default_value_t = 64)]
    pub new_tokens: i64,
    /// Timed repetitions after one warm-up; the median is printed.
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// libtorch intra-op threads (default: libtorch's choice).
    #[arg(long)]
    pub threads: Option<i32>,
    /// Also write the figures as one JSON object to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// What the peak figure is on `device`.
pub fn peak_label(device: Device) -> &'static str {
    match device {
        Device::Cuda(_) => "CUDA allocator peak",
        _ => "peak RSS",
    }
}

pub fn bench_model(args: BenchModelArgs) -> Result<()> {
    let device = parse_device(&args.device)?;
    let kind = parse_dtype(&args.dtype)?;
    if let Some(t) = args.threads {
        tch::set_num_threads(t);
    }
    let model = bench::random_model(&args.config, device, kind, 0)?;
    let opts = BenchOptions {
        batch: args.batch,
        prompt_len: args.prompt_len,
        new_tokens: args.new_tokens,
        reps: args.reps,
        seed: 0,
    };
    let r = bench::run(&model, device, kind, &opts)?;
    let peak = peak_bytes(device);
    let c = &model.config.text;
    println!(
        "model {} ({}): hidden {}, {} layers, {} heads / {} kv, vocab {}{}",
        args.config,
        model.config.architecture.hf_name(),
        c.hidden_size,
        c.num_hidden_layers,
        c.num_attention_heads,
        c.num_key_value_heads,
        c.vocab_size,
        if r.image_tokens_per_prompt > 0 {
            format!(
                ", one image ({} tokens) per prompt",
                r.image_tokens_per_prompt
            )
        } else {
            String::new()
        }
    );
    println!(
        "device {device:?}, dtype {}, {} threads, batch {}, prompt {} tokens, {} new tokens, median of {}",
        dtype_name(kind),
        tch::get_num_threads(),
        args.batch,
        args.prompt_len,
        args.new_tokens,
        args.reps
    );
    println!(
        "prefill       {:>10.0} tokens/s  ({:.4} s)",
        r.prefill_tok_s(),
        r.prefill_s
    );
    println!(
        "decode        {:>10.0} tokens/s  ({:.4} s for {} steps)",
        r.decode_tok_s(),
        r.decode_s,
        args.new_tokens
    );
    println!(
        "forward+back  {:>10.0} tokens/s  ({:.4} s)",
        r.fwd_bwd_tok_s(),
        r.fwd_bwd_s
    );
    println!(
        "peak memory   {:>10}  ({})",
        format_mib(peak),
        peak_label(device)
    );
    if let Some(p) = &args.json {
        let v = serde_json::json!({
            "config": args.config,
            "device": format!("{device:?}"),
            "dtype": dtype_name(kind),
            "batch": args.batch,
            "prompt_len": args.prompt_len,
            "new_tokens": args.new_tokens,
            "prefill_tokens_per_s": r.prefill_tok_s(),
            "decode_tokens_per_s": r.decode_tok_s(),
            "fwd_bwd_tokens_per_s": r.fwd_bwd_tok_s(),
            "peak_memory_mb": peak.map(|b| b as f64 / (1024.0 * 1024.0)),
            "peak_memory_kind": peak_label(device),
        });
        std::fs::write(p, v.to_string())
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(())
}
