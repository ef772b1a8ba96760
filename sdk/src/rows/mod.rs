//! Dataset rows -> samples, shared by the core loaders (loader-jsonl reads
//! JSONL lines and JSON arrays, loader-parquet turns Parquet records into the
//! same JSON objects): the LMM-R1/OpenRLHF (and its Sokoban rows),
//! EasyR1/R1-V, chat-trace, verl, ShareGPT, ms-swift and Alpaca layouts,
//! configurable column names, the prompt template, image references checked
//! against the grants, and `skip_bad_rows` bookkeeping. Behind the SDK's
//! `rows` cargo feature.

mod config;
mod conversations;
mod images;
mod layouts;
mod parse;
mod skips;
mod sokoban;

pub use config::{Config, Format};
pub use images::{image_roots, normalize, resolve_image};
pub use parse::{detect, parse_json_row, parse_row, unwrap_answer, RowCtx};
pub use skips::{reason_class, SkipTally};
pub use sokoban::level_from_npy;

use serde_json::Value;

/// A JSON value's kind, for error messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
