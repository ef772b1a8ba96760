//! `lmmhost logits`: a thin wrapper over `lmmhost_model::parity_dump`.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

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
