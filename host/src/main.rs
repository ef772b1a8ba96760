//! `lmmhost`: the command-line entry point. Each subcommand lives in `cli/`.

mod cli;

use clap::{Parser, Subcommand};
use lmmhost::memory::Arenas;

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
    /// Check an experiment file without loading the model: its settings, the
    /// model directory, every plugin and dataset.
    Check(cli::check::CheckArgs),
    /// Evaluate a model on a dataset with reward plugins: accuracy, pass@k, answers.
    Eval(cli::train::EvalArgs),
    /// Show what the experiment's loaders produce: samples, rendered prompts,
    /// token counts, and the rows a run would skip or stop on (no model weights).
    Data(cli::data::DataArgs),
    /// Predict a run's peak accelerator memory by part (weights, optimizer,
    /// gradients, activations, KV cache, reference) and what fits.
    Plan(cli::plan::PlanArgs),
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
    let cli = Cli::parse();
    if let Some(arenas) = cli.command.memory_policy() {
        lmmhost::memory::keep_freed_memory(arenas);
    }
    if let Err(e) = dispatch(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

impl Command {
    /// How the command's process keeps freed memory
    /// ([`lmmhost::memory::keep_freed_memory`]), if it changes glibc's
    /// defaults at all:
    /// - model work reuses large tensor buffers every step: one shared arena
    ///   that is never trimmed;
    /// - `bench reward` compares a sandbox whose instances keep their memory
    ///   with native code: native gets to keep its memory too (without that
    ///   its rounds paid thousands of page faults, up to 15 % of its time),
    ///   in per-thread arenas, as one shared arena would serialise its
    ///   threads' allocations;
    /// - everything else keeps glibc's defaults.
    fn memory_policy(&self) -> Option<Arenas> {
        match self {
            Command::Run(_) | Command::Eval(_) | Command::Logits(_) => Some(Arenas::Shared),
            Command::Bench(cli::bench::BenchCommand::Reward(_)) => Some(Arenas::PerThread),
            Command::Bench(_) => Some(Arenas::Shared),
            Command::Data(_)
            | Command::Plan(_)
            | Command::Check(_)
            | Command::Plot(_)
            | Command::Plugin(_)
            | Command::Bundle(_) => None,
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => cli::train::run_cmd(args),
        Command::Eval(args) => cli::train::eval_cmd(args),
        Command::Data(args) => cli::data::run(args),
        Command::Plan(args) => cli::plan::run(args),
        Command::Check(args) => cli::check::check_cmd(args),
        Command::Plot(args) => cli::train::plot_cmd(args),
        Command::Plugin(cmd) => cli::plugin::run(cmd),
        Command::Bundle(cmd) => cli::bundle::run(cmd),
        Command::Logits(args) => cli::model::logits(args),
        Command::Bench(cmd) => cli::bench::run(cmd),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(args: &[&str]) -> Command {
        let argv = std::iter::once("lmmhost").chain(args.iter().copied());
        match Cli::try_parse_from(argv) {
            Ok(cli) => cli.command,
            Err(e) => panic!("{args:?}: {e}"),
        }
    }

    /// Model work gets the single-arena malloc settings; the reward
    /// benchmark keeps freed memory in per-thread arenas, so its native path
    /// is neither serialised nor paying page faults the sandbox does not.
    #[test]
    fn malloc_settings_per_command() {
        for (args, policy) in [
            (&["run", "x.toml"][..], Some(Arenas::Shared)),
            (&["bench", "grpo", "--workload", "w1"], Some(Arenas::Shared)),
            (&["bench", "model"], Some(Arenas::Shared)),
            (&["bench", "reward"], Some(Arenas::PerThread)),
            (&["plugin", "check", "x.wasm"], None),
            (&["bundle", "inspect", "x.lmmb"], None),
            (&["plot", "runs/x"], None),
            (&["data", "x.toml", "--set", "rollout.group_size=4"], None),
        ] {
            assert_eq!(command(args).memory_policy(), policy, "{args:?}");
        }
    }
}

#[cfg(test)]
#[path = "docs_commands_tests.rs"]
mod docs_commands_tests;
