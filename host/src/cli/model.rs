//! `lmmhost logits` and `lmmhost bench model` (placeholder until the model work lands).

use clap::Args;

#[derive(Args)]
pub struct LogitsArgs {}

#[derive(Args)]
pub struct BenchModelArgs {}

pub fn logits(_args: LogitsArgs) -> anyhow::Result<()> {
    anyhow::bail!("not built yet")
}

pub fn bench_model(_args: BenchModelArgs) -> anyhow::Result<()> {
    anyhow::bail!("not built yet")
}
