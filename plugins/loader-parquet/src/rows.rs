//! One record (as a JSON object) -> one sample, for each supported layout.
//!
//! Errors are plain descriptions of the problem; the caller prefixes the file and line.

use crate::config::{Config, Format};
use base64::Engine;
use lmmhost_sdk::{ContentPart, ImageSource, Message, Sample};
use serde_json::{Map, Value};
use std::path::{Component, Path, PathBuf};

/// Where a row came from: image paths are resolved against `dir`.
pub struct RowCtx<'a> {
    pub dir: &'a Path,
    pub file_name: &'a str,
    pub line: u32,
}

/// One record, already converted to the JSON object it stands for.
pub fn parse_value(cfg: &Config, ctx: &RowCtx, v: Value) -> Result<Sample, String> {
    let Value::Object(obj) = v else {
        return Err(format!("expected a JSON object, found {}", kind(&v)));
    };
    let format = match cfg.format {
        Format::Auto => detect(cfg, &obj)?,
        f => f,
    };
    let (mut messages, answer_key, used): (Vec<Message>, Option<&str>, Vec<&str>) = match format {
        Format::LmmR1 => (
            lmm_r1(cfg, ctx, &obj)?,
            Some(&cfg.answer_key),
            vec![&cfg.message_key, &cfg.answer_key],
        ),
        Format::EasyR1 => (
            easyr1(cfg, ctx, &obj)?,
            Some(&cfg.answer_key),
            vec![&cfg.problem_key, &cfg.answer_key, &cfg.images_key],
        ),
        Format::Messages => (
            chat(cfg, ctx, &obj)?,
            None,
            vec![&cfg.messages_key, &cfg.images_key, &cfg.answer_key],
        ),
        Format::Verl => (
            verl(cfg, ctx, &obj)?,
            None,
            vec![
                &cfg.prompt_key,
                &cfg.images_key,
                root_key(&cfg.ground_truth_key),
            ],
        ),
        Format::Auto => unreachable!("detect() returns a concrete format"),
    };
    let answer = match (format, answer_key) {
        (Format::Verl, _) => Some(dotted(&obj, &cfg.ground_truth_key)?),
        (_, Some(k)) => Some(scalar(&obj, k)?.ok_or_else(|| format!("missing field `{k}`"))?),
        // RL formats need a reference answer; in chat traces it is optional.
        (_, None) => scalar(&obj, &cfg.answer_key)?,
    };
    let answer = answer.map(|a| {
        if cfg.unwrap_answer {
            unwrap_answer(&a)
        } else {
            a
        }
    });
    apply_template(cfg, &mut messages);
    let id = match obj.get(&cfg.id_key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => format!("{}:{}", ctx.file_name, ctx.line),
    };
    let metadata = obj
        .iter()
        .filter(|(k, _)| !used.contains(&k.as_str()) && **k != cfg.id_key)
        .filter_map(|(k, v)| {
            let s = match v {
                Value::Null => return None,
                Value::String(s) => s.clone(),
                // Numbers, booleans, lists (e.g. a Sokoban level as rows) and
                // objects travel as their compact JSON text.
                other => other.to_string(),
            };
            Some((k.clone(), s))
        })
        .collect();
    Ok(Sample {
        id,
        messages,
        answer,
        metadata,
    })
}

fn detect(cfg: &Config, obj: &Map<String, Value>) -> Result<Format, String> {
    if obj.contains_key(&cfg.message_key) {
        Ok(Format::LmmR1)
    } else if obj.contains_key(&cfg.messages_key) {
        Ok(Format::Messages)
    } else if obj.contains_key(&cfg.problem_key) {
        Ok(Format::EasyR1)
    } else if obj.contains_key(&cfg.prompt_key) {
        Ok(Format::Verl)
    } else {
        Err(format!(
            "cannot tell the row's format: expected a `{}` (LMM-R1), `{}` (chat), `{}` (EasyR1) or `{}` (verl) field",
            cfg.message_key, cfg.messages_key, cfg.problem_key, cfg.prompt_key
        ))
    }
}

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

/// A string or number field as a string; `None` if absent or null.
fn scalar(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(v) => Err(format!(
            "field `{key}` must be a string or number, found {}",
            kind(v)
        )),
    }
}

/// `$\boxed{60}$` -> `60`; `$x^2$` -> `x^2`; anything else unchanged.
pub fn unwrap_answer(a: &str) -> String {
    let mut s = a.trim();
    while s.len() >= 2 && s.starts_with('$') && s.ends_with('$') {
        s = s[1..s.len() - 1].trim();
    }
    match lmmhost_sdk::answer::last_boxed(s) {
        Some(inner) if s.starts_with("\\boxed{") || s.starts_with("\\fbox{") => {
            inner.trim().to_owned()
        }
        _ => s.to_owned(),
    }
}

/// Resolves an image reference to the path the host receives: `file://` URLs
/// lose the scheme, relative paths are joined to the data file's directory,
/// and `.`/`..` are folded lexically.
pub fn image_path(dir: &Path, raw: &str) -> String {
    let raw = raw.strip_prefix("file://").unwrap_or(raw);
    let p = Path::new(raw);
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                // Past the root (or the start of a relative path) `..` is kept,
                // so the host sees, and refuses, an escape attempt.
                if matches!(out.components().next_back(), Some(Component::Normal(_))) {
                    out.pop();
                } else {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out.to_string_lossy().into_owned()
}

/// An image given as a path string, `{"bytes": ...}` (base64 or a list of
/// ints, the Hugging Face `Image` feature) or `{"path": ...}`.
fn image_value(ctx: &RowCtx, v: &Value, what: &str) -> Result<ImageSource, String> {
    match v {
        Value::String(s) => Ok(ImageSource::Path(image_path(ctx.dir, s))),
        Value::Object(o) => match (o.get("bytes"), o.get("path")) {
            (Some(Value::String(b)), _) => base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .map(ImageSource::Bytes)
                .map_err(|e| format!("{what}: `bytes` is not valid base64: {e}")),
            (Some(Value::Array(xs)), _) => xs
                .iter()
                .map(|x| x.as_u64().filter(|b| *b < 256).map(|b| b as u8))
                .collect::<Option<Vec<u8>>>()
                .map(ImageSource::Bytes)
                .ok_or_else(|| format!("{what}: `bytes` list must hold integers 0..=255")),
            (None | Some(Value::Null), Some(Value::String(p))) => {
                Ok(ImageSource::Path(image_path(ctx.dir, p)))
            }
            _ => Err(format!(
                "{what}: expected `bytes` (base64 or list of ints) or `path`"
            )),
        },
        other => Err(format!(
            "{what}: expected a path or an object with `bytes`/`path`, found {}",
            kind(other)
        )),
    }
}

fn images_list(
    cfg: &Config,
    ctx: &RowCtx,
    obj: &Map<String, Value>,
) -> Result<Vec<ImageSource>, String> {
    match obj.get(&cfg.images_key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(xs)) => xs
            .iter()
            .enumerate()
            .map(|(i, x)| image_value(ctx, x, &format!("`{}[{i}]`", cfg.images_key)))
            .collect(),
        // A single image is common in R1-V style rows.
        Some(v @ (Value::String(_) | Value::Object(_))) => {
            Ok(vec![image_value(ctx, v, &format!("`{}`", cfg.images_key))?])
        }
        Some(v) => Err(format!(
            "field `{}` must be a list of images, found {}",
            cfg.images_key,
            kind(v)
        )),
    }
}

/// Splits `text` at the placeholders, taking one image from `images` per placeholder.
fn split_placeholders(
    text: &str,
    placeholder: &str,
    images: &mut std::vec::IntoIter<ImageSource>,
    used: &mut usize,
    out: &mut Vec<ContentPart>,
) {
    let mut pieces = text.split(placeholder);
    if let Some(first) = pieces.next() {
        push_text(out, first);
    }
    for piece in pieces {
        *used += 1;
        if let Some(img) = images.next() {
            out.push(ContentPart::Image(img));
        }
        push_text(out, piece);
    }
}

fn push_text(out: &mut Vec<ContentPart>, t: &str) {
    if !t.is_empty() {
        out.push(ContentPart::Text(t.to_owned()));
    }
}

fn check_counts(cfg: &Config, placeholders: usize, images: usize) -> Result<(), String> {
    if placeholders != images {
        return Err(format!(
            "{placeholders} `{}` placeholder(s) but {images} image(s) in `{}`",
            cfg.image_placeholder, cfg.images_key
        ));
    }
    Ok(())
}

fn easyr1(cfg: &Config, ctx: &RowCtx, obj: &Map<String, Value>) -> Result<Vec<Message>, String> {
    let problem = match obj.get(&cfg.problem_key) {
        Some(Value::String(s)) => s,
        Some(v) => {
            return Err(format!(
                "field `{}` must be a string, found {}",
                cfg.problem_key,
                kind(v)
            ))
        }
        None => return Err(format!("missing field `{}`", cfg.problem_key)),
    };
    let images = images_list(cfg, ctx, obj)?;
    let n_images = images.len();
    let mut it = images.into_iter();
    let (mut used, mut content) = (0, Vec::new());
    split_placeholders(
        problem,
        &cfg.image_placeholder,
        &mut it,
        &mut used,
        &mut content,
    );
    check_counts(cfg, used, n_images)?;
    Ok(vec![Message {
        role: "user".into(),
        content,
    }])
}

fn lmm_r1(cfg: &Config, ctx: &RowCtx, obj: &Map<String, Value>) -> Result<Vec<Message>, String> {
    let list: Value = match obj.get(&cfg.message_key) {
        Some(Value::String(s)) => serde_json::from_str(s).map_err(|e| {
            format!(
                "field `{}` is not a valid JSON message list: {e}",
                cfg.message_key
            )
        })?,
        Some(v @ Value::Array(_)) => v.clone(),
        Some(v) => {
            return Err(format!(
                "field `{}` must be a (stringified) message list, found {}",
                cfg.message_key,
                kind(v)
            ))
        }
        None => return Err(format!("missing field `{}`", cfg.message_key)),
    };
    let mut no_images = Vec::new().into_iter();
    let msgs = chat_list(cfg, ctx, &list, &cfg.message_key, &mut no_images)?;
    Ok(msgs.0)
}

fn root_key(dotted: &str) -> &str {
    dotted.split('.').next().unwrap_or(dotted)
}

/// A string or number at a dotted path such as `reward_model.ground_truth`.
fn dotted(obj: &Map<String, Value>, path: &str) -> Result<String, String> {
    let mut parts = path.split('.');
    let first = parts.next().unwrap_or(path);
    let mut cur = obj
        .get(first)
        .ok_or_else(|| format!("missing field `{path}`"))?;
    for p in parts {
        cur = cur
            .get(p)
            .ok_or_else(|| format!("missing field `{path}`"))?;
    }
    match cur {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        v => Err(format!(
            "field `{path}` must be a string or number, found {}",
            kind(v)
        )),
    }
}

fn verl(cfg: &Config, ctx: &RowCtx, obj: &Map<String, Value>) -> Result<Vec<Message>, String> {
    let list = obj
        .get(&cfg.prompt_key)
        .ok_or_else(|| format!("missing field `{}`", cfg.prompt_key))?;
    let images = images_list(cfg, ctx, obj)?;
    let n_images = images.len();
    let mut it = images.into_iter();
    let (msgs, used) = chat_list(cfg, ctx, list, &cfg.prompt_key, &mut it)?;
    check_counts(cfg, used, n_images)?;
    Ok(msgs)
}

fn chat(cfg: &Config, ctx: &RowCtx, obj: &Map<String, Value>) -> Result<Vec<Message>, String> {
    let list = obj
        .get(&cfg.messages_key)
        .ok_or_else(|| format!("missing field `{}`", cfg.messages_key))?;
    let images = images_list(cfg, ctx, obj)?;
    let n_images = images.len();
    let mut it = images.into_iter();
    let (msgs, used) = chat_list(cfg, ctx, list, &cfg.messages_key, &mut it)?;
    check_counts(cfg, used, n_images)?;
    if msgs.last().is_none_or(|m| m.role != "assistant") {
        return Err(format!(
            "`{}` must end with an assistant turn (the SFT target)",
            cfg.messages_key
        ));
    }
    Ok(msgs)
}

/// An OpenAI-style message list. Returns the messages and how many images
/// were taken from `images` (by `<image>` placeholders or bare image parts).
fn chat_list(
    cfg: &Config,
    ctx: &RowCtx,
    list: &Value,
    key: &str,
    images: &mut std::vec::IntoIter<ImageSource>,
) -> Result<(Vec<Message>, usize), String> {
    let Value::Array(items) = list else {
        return Err(format!(
            "`{key}` must be a list of messages, found {}",
            kind(list)
        ));
    };
    if items.is_empty() {
        return Err(format!("`{key}` is an empty message list"));
    }
    let mut used = 0;
    let mut out = Vec::with_capacity(items.len());
    for (i, m) in items.iter().enumerate() {
        let at = format!("`{key}[{i}]`");
        let Value::Object(m) = m else {
            return Err(format!("{at} must be an object with `role` and `content`"));
        };
        let role = match m.get("role") {
            Some(Value::String(r)) => r.clone(),
            _ => return Err(format!("{at}: missing string field `role`")),
        };
        let mut content = Vec::new();
        match m.get("content") {
            Some(Value::String(t)) => {
                split_placeholders(t, &cfg.image_placeholder, images, &mut used, &mut content)
            }
            Some(Value::Array(parts)) => {
                for (j, p) in parts.iter().enumerate() {
                    let pat = format!("{at}.content[{j}]");
                    let ty = p.get("type").and_then(Value::as_str);
                    match ty {
                        Some("text") => match p.get("text") {
                            Some(Value::String(t)) => push_text(&mut content, t),
                            _ => return Err(format!("{pat}: text part without a string `text`")),
                        },
                        Some("image") | Some("image_url") => {
                            let src = p
                                .get("image")
                                .or_else(|| p.get("image_url").map(|u| u.get("url").unwrap_or(u)))
                                .or_else(|| p.get("path"));
                            match src {
                                Some(Value::String(s)) => content.push(ContentPart::Image(
                                    ImageSource::Path(image_path(ctx.dir, s)),
                                )),
                                // A bare image part takes the row's next image.
                                None | Some(Value::Null) => {
                                    used += 1;
                                    if let Some(img) = images.next() {
                                        content.push(ContentPart::Image(img));
                                    }
                                }
                                Some(v) => {
                                    content.push(ContentPart::Image(image_value(ctx, v, &pat)?))
                                }
                            }
                        }
                        _ => {
                            return Err(format!(
                                "{pat}: unknown part type {:?} (expected \"text\" or \"image\")",
                                ty.unwrap_or("<none>")
                            ))
                        }
                    }
                }
            }
            Some(v) => {
                return Err(format!(
                    "{at}: `content` must be a string or a list of parts, found {}",
                    kind(v)
                ))
            }
            None => return Err(format!("{at}: missing field `content`")),
        }
        out.push(Message { role, content });
    }
    Ok((out, used))
}

/// System prompt and instruction prefix/suffix, as the RL frameworks form their prompts.
fn apply_template(cfg: &Config, messages: &mut Vec<Message>) {
    if let Some(sys) = &cfg.system_prompt {
        let msg = Message {
            role: "system".into(),
            content: vec![ContentPart::Text(sys.clone())],
        };
        match messages.first() {
            Some(m) if m.role == "system" => {
                if cfg.replace_system {
                    messages[0] = msg;
                }
            }
            _ => messages.insert(0, msg),
        }
    }
    if cfg.instruction_prefix.is_empty() && cfg.instruction_suffix.is_empty() {
        return;
    }
    let Some(user) = messages.iter_mut().rev().find(|m| m.role == "user") else {
        return;
    };
    if !cfg.instruction_prefix.is_empty() {
        match user.content.first_mut() {
            Some(ContentPart::Text(t)) => t.insert_str(0, &cfg.instruction_prefix),
            _ => user
                .content
                .insert(0, ContentPart::Text(cfg.instruction_prefix.clone())),
        }
    }
    if !cfg.instruction_suffix.is_empty() {
        match user.content.last_mut() {
            Some(ContentPart::Text(t)) => t.push_str(&cfg.instruction_suffix),
            _ => user
                .content
                .push(ContentPart::Text(cfg.instruction_suffix.clone())),
        }
    }
}
