//! Dataset rows -> samples, shared by the core loaders (loader-jsonl reads
//! JSONL lines, loader-parquet turns Parquet records into the same JSON
//! objects): the LMM-R1/OpenRLHF, EasyR1/R1-V, chat-trace and verl layouts,
//! configurable column names, the prompt template, and image references
//! checked against the grants. Behind the SDK's `rows` cargo feature.

mod config;
mod images;
mod parse;

pub use config::{Config, Format};
pub use images::{normalize, resolve_image};
pub use parse::{parse_json_row, parse_row, unwrap_answer, RowCtx};

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
