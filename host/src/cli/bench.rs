//! `lmmhost bench ...`: every figure printed here is measured on this machine.

use clap::Subcommand;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Prefill, decode and forward+backward tokens/s of a model config.
    Model(super::bench_model::BenchModelArgs),
    /// Completions scored per second: reward plugin through Wasm vs the same Rust natively.
    Reward(super::plugin::BenchRewardArgs),
    /// GRPO steps through the trainer (W1/W2, or any model config, lengths, batch, KV budget, dtype, device): median time, split, tokens/s, peak memory.
    Grpo(super::bench_grpo::BenchGrpoArgs),
    /// Forward logits of the shipped fixtures on a device and dtype against transformers' CPU f32 reference.
    Parity(super::bench_parity::BenchParityArgs),
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Model(args) => super::bench_model::bench_model(args),
        BenchCommand::Reward(args) => super::plugin::bench_reward(args),
        BenchCommand::Grpo(args) => super::bench_grpo::bench_grpo(args),
        BenchCommand::Parity(args) => super::bench_parity::bench_parity(args),
    }
}
