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
    let cli = Cli::parse();
    if cli.command.runs_a_model() {
        lmmhost::memory::keep_freed_memory();
    }
    if let Err(e) = dispatch(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

impl Command {
    /// Whether the command runs model steps, whose large tensor buffers are
    /// what [`lmmhost::memory::keep_freed_memory`] is for. The others keep
    /// glibc's defaults: its single shared arena would serialise the
    /// allocations of multi-threaded native code (`bench reward`'s native
    /// path spends 1.6x the CPU time per completion under it).
    fn runs_a_model(&self) -> bool {
        match self {
            Command::Run(_) | Command::Eval(_) | Command::Logits(_) => true,
            Command::Bench(cmd) => !matches!(cmd, cli::bench::BenchCommand::Reward(_)),
            Command::Plot(_) | Command::Plugin(_) | Command::Bundle(_) => false,
        }
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

    /// Only model work gets the single-arena malloc settings: the reward
    /// benchmark's native path must not be slowed by them.
    #[test]
    fn malloc_settings_only_for_commands_that_run_a_model() {
        for args in [
            &["run", "x.toml"][..],
            &["bench", "grpo", "--workload", "w1"],
            &["bench", "model"],
        ] {
            assert!(command(args).runs_a_model(), "{args:?}");
        }
        for args in [
            &["bench", "reward"][..],
            &["plugin", "check", "x.wasm"],
            &["bundle", "inspect", "x.lmmb"],
            &["plot", "runs/x"],
        ] {
            assert!(!command(args).runs_a_model(), "{args:?}");
        }
    }
}
