//! Conversation layouts of the SFT tool-chains, turned into OpenAI-style
//! message lists and read like chat traces (placeholders take `images` in
//! order): ShareGPT (`conversations` of `{"from", "value"}` turns, as
//! LLaMA-Factory and ms-swift read them), ms-swift's `query`/`response`
//! with `history`, and LLaMA-Factory's Alpaca `instruction`/`input`/`output`.
//! A top-level `system` string becomes the system message. `answer` is
//! optional (SFT rows have none; the assistant turn is the target).

use super::kind;
use super::layouts::{chat_with_images, Built};
use super::parse::{take_answer, RowCtx};
use serde_json::{json, Map, Value};

/// ShareGPT: `conversations` of `{"from": "human"|"gpt"|..., "value": ...}`.
pub(super) fn sharegpt(obj: &mut Map<String, Value>, ctx: &RowCtx) -> Result<Built, String> {
    let cfg = ctx.config;
    let key = &cfg.conversations_key;
    let turns = match obj.remove(key) {
        Some(Value::Array(t)) if !t.is_empty() => t,
        Some(Value::Array(_)) => return Err(format!("`{key}` is an empty list of turns")),
        Some(other) => {
            return Err(format!(
                "`{key}` must be a list of turns, got {}",
                kind(&other)
            ))
        }
        None => return Err(format!("missing field `{key}`")),
    };
    let mut list = system_message(obj, &cfg.system_key)?;
    for (i, t) in turns.iter().enumerate() {
        // LLaMA-Factory's default tags; OpenAI's `role`/`content` are accepted too.
        let from = t.get("from").or_else(|| t.get("role"));
        let value = t.get("value").or_else(|| t.get("content"));
        let role = match from.and_then(Value::as_str) {
            Some("human" | "user") => "user",
            Some("gpt" | "assistant" | "function_call") => "assistant",
            Some("system") => "system",
            Some("observation" | "tool") => "tool",
            Some(other) => {
                return Err(format!(
                    "`{key}[{i}].from` is `{other}`; expected human, gpt, system, function_call or observation"
                ))
            }
            None => return Err(format!("`{key}[{i}]`: missing or non-string `from`")),
        };
        let Some(value @ (Value::String(_) | Value::Array(_))) = value else {
            return Err(format!(
                "`{key}[{i}].value` must be a string, got {}",
                value.map_or("nothing", kind)
            ));
        };
        list.push(json!({"role": role, "content": value}));
    }
    let answer = take_answer(obj, &cfg.answer_key, false)?;
    let messages = chat_with_images(obj, ctx, &Value::Array(list), key)?;
    Ok((messages, answer))
}

/// ms-swift: `query` (+ `response`), earlier turns in `history` as `[q, r]` pairs.
pub(super) fn query_response(obj: &mut Map<String, Value>, ctx: &RowCtx) -> Result<Built, String> {
    let cfg = ctx.config;
    let query = text_field(obj, &cfg.query_key, true)?.unwrap_or_default();
    let response = text_field(obj, &cfg.response_key, false)?;
    turns(obj, ctx, query, response, &cfg.query_key)
}

/// LLaMA-Factory's Alpaca layout: the user turn is `instruction` and `input`
/// joined by a newline (as LLaMA-Factory does), `output` the assistant turn.
pub(super) fn alpaca(obj: &mut Map<String, Value>, ctx: &RowCtx) -> Result<Built, String> {
    let cfg = ctx.config;
    let instruction = text_field(obj, &cfg.instruction_key, true)?.unwrap_or_default();
    let input = text_field(obj, &cfg.input_key, false)?.unwrap_or_default();
    let output = text_field(obj, &cfg.output_key, false)?;
    let query = if input.is_empty() {
        instruction
    } else {
        format!("{instruction}\n{input}")
    };
    turns(obj, ctx, query, output, &cfg.instruction_key)
}

fn turns(
    obj: &mut Map<String, Value>,
    ctx: &RowCtx,
    query: String,
    response: Option<String>,
    key: &str,
) -> Result<Built, String> {
    let cfg = ctx.config;
    let mut list = system_message(obj, &cfg.system_key)?;
    let hk = &cfg.history_key;
    match obj.remove(hk) {
        Some(Value::Array(pairs)) => {
            for (i, p) in pairs.iter().enumerate() {
                let pair = p.as_array().filter(|a| a.len() == 2);
                let (Some(Value::String(q)), Some(Value::String(r))) =
                    (pair.and_then(|a| a.first()), pair.and_then(|a| a.get(1)))
                else {
                    return Err(format!(
                        "`{hk}[{i}]` must be a [query, response] pair of strings, got {p}"
                    ));
                };
                list.push(json!({"role": "user", "content": q}));
                list.push(json!({"role": "assistant", "content": r}));
            }
        }
        Some(Value::Null) | None => {}
        Some(other) => {
            return Err(format!(
                "`{hk}` must be a list of [query, response] pairs, got {}",
                kind(&other)
            ))
        }
    }
    list.push(json!({"role": "user", "content": query}));
    if let Some(r) = response {
        list.push(json!({"role": "assistant", "content": r}));
    }
    let answer = take_answer(obj, &cfg.answer_key, false)?;
    let messages = chat_with_images(obj, ctx, &Value::Array(list), key)?;
    Ok((messages, answer))
}

fn text_field(
    obj: &mut Map<String, Value>,
    key: &str,
    required: bool,
) -> Result<Option<String>, String> {
    match obj.remove(key) {
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Null) | None if required => Err(format!("missing field `{key}`")),
        Some(Value::Null) | None => Ok(None),
        Some(other) => Err(format!("`{key}` must be a string, got {}", kind(&other))),
    }
}

/// The row's top-level system prompt as the first message (if any).
fn system_message(obj: &mut Map<String, Value>, key: &str) -> Result<Vec<Value>, String> {
    match obj.remove(key) {
        Some(Value::String(s)) if !s.is_empty() => {
            Ok(vec![json!({"role": "system", "content": s})])
        }
        Some(Value::String(_) | Value::Null) | None => Ok(Vec::new()),
        Some(other) => Err(format!("`{key}` must be a string, got {}", kind(&other))),
    }
}
