//! `lmmhost bundle ...` (placeholder until the plugin-host work lands).

use clap::Subcommand;

#[derive(Subcommand)]
pub enum BundleCommand {}

pub fn run(cmd: BundleCommand) -> anyhow::Result<()> {
    match cmd {}
}
