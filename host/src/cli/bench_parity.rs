//! `lmmhost bench parity`: forward logits of the shipped fixtures on a device
//! and dtype against transformers' CPU float32 reference
//! (`lmmhost_model::parity_check`); fails when a case is out of its bound.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use lmmhost_model::device::{dtype_name, parse_device, parse_dtype};
use lmmhost_model::parity_check;

#[derive(Args)]
pub struct BenchParityArgs {
    /// The fixture folder (tests/fixtures/model of the repository).
    #[arg(long, default_value = "tests/fixtures/model")]
    fixtures: PathBuf,
    #[arg(long, default_value = "cpu")]
    device: String,
    /// f32, bf16 or f16 (bounds: 1e-4; 6 units of bf16/f16 rounding of the logit range).
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn bench_parity(args: BenchParityArgs) -> Result<()> {
    let device = parse_device(&args.device)?;
    let kind = parse_dtype(&args.dtype)?;
    let results = parity_check::run(&args.fixtures, device, kind)?;
    println!(
        "forward parity on {device:?} in {} against transformers' CPU float32 logits ({})",
        dtype_name(kind),
        args.fixtures.display()
    );
    let mut rows = Vec::new();
    for r in &results {
        println!(
            "  {:<26} on {:<24} max |diff| {:.3e}  bound {:.3e}  {}",
            r.model,
            r.inputs,
            r.max_diff,
            r.bound,
            if r.ok() { "ok" } else { "FAIL" }
        );
        rows.push(serde_json::json!({
            "model": r.model, "inputs": r.inputs, "max_diff": r.max_diff,
            "bound": r.bound, "ok": r.ok(),
        }));
    }
    if let Some(p) = &args.json {
        let v = serde_json::json!({
            "device": format!("{device:?}"), "dtype": dtype_name(kind), "cases": rows,
        });
        std::fs::write(p, v.to_string())
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    let failed = results.iter().filter(|r| !r.ok()).count();
    if failed > 0 {
        bail!("{failed} of {} fixture cases out of bounds", results.len());
    }
    Ok(())
}
