//! `lmmhost logits` and `lmmhost bench model`: thin wrappers over
//! `lmmhost_model::parity_dump` and `lmmhost_model::bench`.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

use lmmhost_model::bench::{self, BenchOptions};
use lmmhost_model::device::{dtype_name, parse_device, parse_dtype};
use lmmhost_model::parity_dump;

#[derive(Args)]
pub struct LogitsArgs {
    /// Checkpoint directory (config.json + safetensors).
    #[arg(long)]
    pub model: PathBuf,
    /// JSONL, one prompt per line: {"input_ids": [..]} (token ids) or
    /// {"messages": [..]} (chat messages; images by path relative to the file).
    #[arg(long)]
    pub prompts: PathBuf,
    /// Output safetensors file.
    #[arg(long)]
    pub out: PathBuf,
    /// Greedy tokens generated after each prompt.
    #[arg(long, default_value_t = 16)]
    pub greedy_tokens: usize,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[arg(long, default_value = "f32")]
    pub dtype: String,
}

#[derive(Args)]
pub struct BenchModelArgs {
    /// A preset (w1: the GRPO benchmark's W1 text model, w2: its Qwen2.5-VL
    /// model, w2-qwen3-vl: a Qwen3-VL of w2's sizes) or a directory with a
    /// config.json (weights are random either way).
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
}

pub fn logits(args: LogitsArgs) -> Result<()> {
    let device = parse_device(&args.device)?;
    let kind = parse_dtype(&args.dtype)?;
    let dump = parity_dump::run(
        &args.model,
        &args.prompts,
        &args.out,
        args.greedy_tokens,
        device,
        kind,
    )?;
    println!(
        "{}: {} prompt(s), vocab {}, {} on {:?}, wrote {}",
        args.model.display(),
        dump.prompt_lens.len(),
        dump.vocab,
        dtype_name(kind),
        device,
        args.out.display()
    );
    for (i, (len, greedy)) in dump.prompt_lens.iter().zip(&dump.greedy).enumerate() {
        let text = dump
            .texts
            .get(i)
            .filter(|t| !t.is_empty())
            .map(|t| format!(" {t:?}"))
            .unwrap_or_default();
        println!("  prompt {i}: {len} tokens, greedy {greedy:?}{text}");
    }
    Ok(())
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
    Ok(())
}
