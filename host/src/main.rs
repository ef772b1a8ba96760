//! `lmmhost`: the command-line entry point. Each subcommand lives in `cli/`.

mod cli;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "lmmhost",
    version,
    about = "Staged rule-based RL for small multimodal models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train: run an experiment file (staged SFT and GRPO driven by its plugins).
    Run(cli::train::RunArgs),
    /// Evaluate a model on a dataset with reward plugins: accuracy, pass@k, answers.
    Eval(cli::train::EvalArgs),
    /// Draw the PNG plots of a run directory (also written at the end of a run).
    Plot(cli::train::PlotArgs),
    /// Inspect and try plugins (WebAssembly components) offline.
    #[command(subcommand)]
    Plugin(cli::plugin::PluginCommand),
    /// Pack, inspect and verify signed plugin bundles (.lmmb).
    #[command(subcommand)]
    Bundle(cli::bundle::BundleCommand),
    /// Write input ids, logits and a greedy continuation for chat prompts.
    Logits(cli::model::LogitsArgs),
    /// Benchmarks that print measured figures.
    #[command(subcommand)]
    Bench(cli::bench::BenchCommand),
}

/// Errors print as `error: <context>: <cause>` without a backtrace: what a
/// user needs to fix is in the context chain.
fn main() {
    lmmhost::memory::keep_freed_memory();
    if let Err(e) = dispatch(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => cli::train::run_cmd(args),
        Command::Eval(args) => cli::train::eval_cmd(args),
        Command::Plot(args) => cli::train::plot_cmd(args),
        Command::Plugin(cmd) => cli::plugin::run(cmd),
        Command::Bundle(cmd) => cli::bundle::run(cmd),
        Command::Logits(args) => cli::model::logits(args),
        Command::Bench(cmd) => cli::bench::run(cmd),
    }
}
