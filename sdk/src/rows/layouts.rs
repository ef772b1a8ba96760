//! The row layouts built on OpenAI-style message lists: LMM-R1/OpenRLHF,
//! EasyR1/R1-V, chat traces and verl, and the image slots they share.

use super::images::Images;
use super::kind;
use super::parse::{take_answer, RowCtx};
use crate::{ContentPart, Message, CHAT_ROLES};
use serde_json::{Map, Value};

/// A layout's result: the messages and the reference answer, if any.
pub(super) type Built = (Vec<Message>, Option<String>);

/// LMM-R1 / OpenRLHF: `message` is a JSON-encoded OpenAI message list.
/// Sokoban rows carry no reference answer (`answer_required = false`).
pub(super) fn lmm_r1(
    obj: &mut Map<String, Value>,
    ctx: &RowCtx,
    answer_required: bool,
) -> Result<Built, String> {
    let key = &ctx.config.message_key;
    let list = match obj.remove(key) {
        Some(Value::String(s)) => serde_json::from_str::<Value>(&s)
            .map_err(|e| format!("`{key}` is not a JSON-encoded message list: {e}"))?,
        Some(v @ Value::Array(_)) => v,
        Some(other) => {
            return Err(format!(
                "`{key}` must be a string holding a JSON message list, got {}",
                kind(&other)
            ))
        }
        None => return Err(format!("missing field `{key}`")),
    };
    let answer = take_answer(obj, &ctx.config.answer_key, answer_required)?;
    let mut images = Images::new(Vec::new(), key, ctx.image_base(), ctx.granted);
    let messages = messages_from(&list, key, None, &mut images)?;
    Ok((messages, answer))
}

/// EasyR1 / R1-V: one user turn from the text at `key` (`problem`, or
/// EasyR1's default `prompt` column), images at its placeholders.
pub(super) fn easyr1(
    obj: &mut Map<String, Value>,
    ctx: &RowCtx,
    key: &str,
) -> Result<Built, String> {
    let cfg = ctx.config;
    let problem = match obj.remove(key) {
        Some(Value::String(s)) => s,
        Some(other) => return Err(format!("`{key}` must be a string, got {}", kind(&other))),
        None => return Err(format!("missing field `{key}`")),
    };
    let answer = take_answer(obj, &cfg.answer_key, true)?;
    let list = take_images(obj, &cfg.images_key)?;
    let ph = cfg.image_placeholder.as_str();
    let n = problem.matches(ph).count();
    if n > 0 && n != list.len() {
        return Err(format!(
            "`{key}` has {n} `{ph}` placeholders but `{}` has {} entries",
            cfg.images_key,
            list.len()
        ));
    }
    let mut images = Images::new(list, &cfg.images_key, ctx.image_base(), ctx.granted);
    let content = if n == 0 {
        // No placeholders: the images come first, then the text (as EasyR1 does).
        let mut c = images.rest()?;
        push_text(&mut c, &problem);
        c
    } else {
        split_placeholders(&problem, ph, &mut images)?
    };
    Ok((
        vec![Message {
            role: "user".into(),
            content,
        }],
        answer,
    ))
}

/// Chat SFT traces: `messages` (the assistant turn is the target) + `images`.
pub(super) fn chat(obj: &mut Map<String, Value>, ctx: &RowCtx) -> Result<Built, String> {
    let key = &ctx.config.messages_key;
    let list = obj
        .remove(key)
        .ok_or_else(|| format!("missing field `{key}`"))?;
    let answer = take_answer(obj, &ctx.config.answer_key, false)?;
    let messages = chat_with_images(obj, ctx, &list, key)?;
    Ok((messages, answer))
}

/// verl: `prompt` is a chat list; the answer is at a dotted path
/// (`reward_model.ground_truth`), whose top-level field is consumed. A list
/// of answers (or `{"target": [...]}`) gives the first as the answer and,
/// when there are several, all of them as the `answers` metadata (a JSON
/// list) that the math reward accepts any of.
pub(super) fn verl(obj: &mut Map<String, Value>, ctx: &RowCtx) -> Result<Built, String> {
    let cfg = ctx.config;
    let key = &cfg.prompt_key;
    let list = obj
        .remove(key)
        .ok_or_else(|| format!("missing field `{key}`"))?;
    let answers = dotted(obj, &cfg.ground_truth_key)?;
    let root = cfg.ground_truth_key.split('.').next().unwrap_or_default();
    obj.remove(root);
    let messages = chat_with_images(obj, ctx, &list, key)?;
    let answer = answers.first().cloned();
    if answers.len() > 1 {
        let list = answers.into_iter().map(Value::String).collect();
        obj.insert("answers".into(), Value::Array(list));
    }
    Ok((messages, answer))
}

/// A chat list whose `<image>` placeholders and bare image parts take the
/// row's `images` in order; without any, the images go first in the first
/// user turn.
pub(super) fn chat_with_images(
    obj: &mut Map<String, Value>,
    ctx: &RowCtx,
    list: &Value,
    key: &str,
) -> Result<Vec<Message>, String> {
    let cfg = ctx.config;
    let images_list = take_images(obj, &cfg.images_key)?;
    let n = count_slots(list, key, &cfg.image_placeholder)?;
    if n > 0 && n != images_list.len() {
        return Err(format!(
            "`{key}` have {n} image placeholders (`{}` or image parts without a path) but `{}` has {} entries",
            cfg.image_placeholder,
            cfg.images_key,
            images_list.len()
        ));
    }
    let mut images = Images::new(images_list, &cfg.images_key, ctx.image_base(), ctx.granted);
    let mut messages = messages_from(list, key, Some(&cfg.image_placeholder), &mut images)?;
    if n == 0 && images.len() > 0 {
        let first = messages
            .iter_mut()
            .find(|m| m.role == "user")
            .ok_or_else(|| {
                format!(
                    "`{}` is given but there is no user message to put the images in",
                    cfg.images_key
                )
            })?;
        let mut content = images.rest()?;
        content.append(&mut first.content);
        first.content = content;
    }
    Ok(messages)
}

/// The answers at a dotted path such as `reward_model.ground_truth`: a
/// string or number, a non-empty list of them, or `{"target": ...}`.
fn dotted(obj: &Map<String, Value>, path: &str) -> Result<Vec<String>, String> {
    let mut parts = path.split('.');
    let first = parts.next().unwrap_or(path);
    let missing = || format!("missing field `{path}`");
    let mut cur = obj.get(first).ok_or_else(missing)?;
    for p in parts {
        cur = cur.get(p).ok_or_else(missing)?;
    }
    if let Some(t) = cur.as_object().and_then(|o| o.get("target")) {
        cur = t;
    }
    let one = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let expected = "a string, a number or a non-empty list of them";
    match cur {
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                one(v).ok_or_else(|| {
                    format!("`{path}[{i}]` must be a string or number, got {}", kind(v))
                })
            })
            .collect(),
        Value::Array(_) => Err(format!("`{path}` is an empty list; expected {expected}")),
        v => one(v)
            .map(|s| vec![s])
            .ok_or_else(|| format!("`{path}` must be {expected}, got {}", kind(v))),
    }
}

pub(super) fn take_images(obj: &mut Map<String, Value>, key: &str) -> Result<Vec<Value>, String> {
    match obj.remove(key) {
        Some(Value::Array(a)) => Ok(a),
        Some(Value::Null) | None => Ok(Vec::new()),
        // A single image given without a list (common in R1-V rows).
        Some(v @ (Value::String(_) | Value::Object(_))) => Ok(vec![v]),
        Some(other) => Err(format!("`{key}` must be a list, got {}", kind(&other))),
    }
}

/// Image slots a chat message list asks `images` for.
fn count_slots(list: &Value, key: &str, placeholder: &str) -> Result<usize, String> {
    let Value::Array(msgs) = list else {
        return Err(format!(
            "`{key}` must be a list of messages, got {}",
            kind(list)
        ));
    };
    let mut n = 0;
    for m in msgs {
        match m.get("content") {
            Some(Value::String(s)) => n += s.matches(placeholder).count(),
            Some(Value::Array(parts)) => {
                for p in parts {
                    let is_image = p.get("type").and_then(Value::as_str) == Some("image");
                    if is_image && image_field(p).is_none() {
                        n += 1;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(n)
}

fn image_field(part: &Value) -> Option<&Value> {
    ["image", "path", "url", "bytes"]
        .iter()
        .find_map(|k| part.get(*k).filter(|v| !v.is_null()))
}

/// An OpenAI-style message list. With `placeholder`, string contents are
/// split at it, each occurrence taking the next image.
fn messages_from(
    list: &Value,
    key: &str,
    placeholder: Option<&str>,
    images: &mut Images,
) -> Result<Vec<Message>, String> {
    let Value::Array(msgs) = list else {
        return Err(format!(
            "`{key}` must be a list of messages, got {}",
            kind(list)
        ));
    };
    if msgs.is_empty() {
        return Err(format!("`{key}` is an empty message list"));
    }
    let mut out = Vec::with_capacity(msgs.len());
    for (i, m) in msgs.iter().enumerate() {
        let role = match m.get("role") {
            Some(Value::String(r)) if CHAT_ROLES.contains(&r.as_str()) => r.clone(),
            Some(Value::String(r)) => {
                return Err(format!(
                    "`{key}[{i}].role` is `{r}`; expected {}",
                    CHAT_ROLES.join(", ")
                ))
            }
            _ => return Err(format!("`{key}[{i}]`: missing or non-string `role`")),
        };
        let content = match (m.get("content"), placeholder) {
            (Some(Value::String(s)), Some(ph)) => split_placeholders(s, ph, images)?,
            (Some(Value::String(s)), None) => vec![ContentPart::Text(s.clone())],
            (Some(Value::Array(parts)), _) => {
                let mut c = Vec::with_capacity(parts.len());
                for (j, p) in parts.iter().enumerate() {
                    c.push(part(p, images).map_err(|e| format!("`{key}[{i}].content[{j}]`: {e}"))?);
                }
                c
            }
            (Some(Value::Null) | None, _) => Vec::new(),
            (Some(other), _) => {
                return Err(format!(
                    "`{key}[{i}].content` must be a string or a list of parts, got {}",
                    kind(other)
                ))
            }
        };
        out.push(Message { role, content });
    }
    Ok(out)
}

fn part(p: &Value, images: &mut Images) -> Result<ContentPart, String> {
    match p.get("type").and_then(Value::as_str) {
        Some("text") => match p.get("text") {
            Some(Value::String(t)) => Ok(ContentPart::Text(t.clone())),
            _ => Err("a text part needs a string `text`".into()),
        },
        Some("image") => match image_field(p) {
            Some(v) => images.source(v).map(ContentPart::Image),
            None => images.next().map(ContentPart::Image),
        },
        // OpenAI style: {"type": "image_url", "image_url": {"url": ...}}.
        Some("image_url") => {
            let v = p
                .get("image_url")
                .ok_or("an `image_url` part needs `image_url`")?;
            let url = v.get("url").unwrap_or(v);
            images.source(url).map(ContentPart::Image)
        }
        Some(other) => Err(format!(
            "unsupported part type `{other}` (expected text, image or image_url)"
        )),
        None => Err("a content part needs a string `type`".into()),
    }
}

pub(super) fn split_placeholders(
    text: &str,
    placeholder: &str,
    images: &mut Images,
) -> Result<Vec<ContentPart>, String> {
    let mut out = Vec::new();
    for (i, seg) in text.split(placeholder).enumerate() {
        if i > 0 {
            out.push(ContentPart::Image(images.next()?));
        }
        push_text(&mut out, seg);
    }
    Ok(out)
}

pub(super) fn push_text(out: &mut Vec<ContentPart>, t: &str) {
    if !t.is_empty() {
        out.push(ContentPart::Text(t.to_owned()));
    }
}
