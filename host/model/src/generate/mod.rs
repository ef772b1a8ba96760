//! Generation with a KV cache: the rollout engine.
//!
//! Every prompt is prefilled once and its keys/values serve all n samples of
//! its group (they are never copied per sample); each row keeps only its own
//! tokens' keys/values. Rows run in slots under a budget of KV tokens
//! (`GenerateConfig::kv_cache_tokens`): a finished row's slot goes to the
//! next waiting row, and a prompt is prefilled when its first row gets a
//! slot (continuous batching). Each row samples from its own random stream,
//! so the completions are the same for any budget, worker count or batch
//! composition given the seed.
//!
//! Files: `config` (settings, prompts, results), `capacity` (slots under a
//! budget), `prompts` (taking prompts out of their batch), `kv_pools` (the
//! keys/values and the decode attention over them), `engine` (the loop),
//! `run` ([`generate`]: workers and results).

mod capacity;
mod config;
mod engine;
mod kv_pools;
mod prompts;
mod run;
#[cfg(test)]
mod tests;

pub use self::capacity::SlotPlan;
pub use self::config::{
    Completion, EngineStats, FinishReason, GenerateConfig, Generation, PromptBatch, TokenDecoder,
};
pub use self::run::generate;
