//! `lmmhost plugin ...` (owned by the plugin-host work; placeholder until it lands).

use clap::{Args, Subcommand};

#[derive(Subcommand)]
pub enum PluginCommand {}

#[derive(Args)]
pub struct BenchRewardArgs {}

pub fn run(cmd: PluginCommand) -> anyhow::Result<()> {
    match cmd {}
}

pub fn bench_reward(_args: BenchRewardArgs) -> anyhow::Result<()> {
    anyhow::bail!("not built yet")
}
