//! One JSONL row -> one `Sample`, for the three supported layouts.
//!
//! Errors here carry no file/line prefix; the caller adds `<file>:<line>: `.

use crate::config::{Config, Format};
use crate::files::resolve_image;
use lmmhost_sdk::{base64_decode, ContentPart, ImageSource, Message, Sample};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

const PLACEHOLDER: &str = "<image>";

/// What a row needs to know about where it came from.
pub struct RowCtx<'a> {
    pub config: &'a Config,
    /// Directory of the JSONL file: relative image paths start here.
    pub base: &'a Path,
    pub granted: &'a [PathBuf],
    /// Used when the row has no id field.
    pub default_id: String,
}

pub fn parse_row(text: &str, ctx: &RowCtx) -> Result<Sample, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Object(mut obj) = value else {
        return Err("a row must be a JSON object".into());
    };
    let format = match ctx.config.format {
        Format::Auto => detect(&obj)?,
        f => f,
    };
    let id = take_id(&mut obj, ctx)?;
    let (mut messages, answer) = match format {
        Format::LmmR1 => lmm_r1(&mut obj, ctx)?,
        Format::EasyR1 => easyr1(&mut obj, ctx)?,
        Format::Messages | Format::Auto => chat(&mut obj, ctx)?,
    };
    if let Some(sp) = &ctx.config.system_prompt {
        if !messages.iter().any(|m| m.role == "system") {
            messages.insert(
                0,
                Message {
                    role: "system".into(),
                    content: vec![ContentPart::Text(sp.clone())],
                },
            );
        }
    }
    if let Some(suffix) = &ctx.config.instruction_suffix {
        append_suffix(&mut messages, suffix)?;
    }
    let metadata = obj
        .into_iter()
        .filter_map(|(k, v)| match v {
            Value::Null => None,
            Value::String(s) => Some((k, s)),
            other => Some((k, other.to_string())),
        })
        .collect();
    Ok(Sample {
        id,
        messages,
        answer,
        metadata,
    })
}

fn detect(obj: &Map<String, Value>) -> Result<Format, String> {
    if obj.contains_key("message") {
        Ok(Format::LmmR1)
    } else if obj.contains_key("messages") {
        Ok(Format::Messages)
    } else if obj.contains_key("problem") {
        Ok(Format::EasyR1)
    } else {
        Err("cannot detect the format: the row has none of `message` (LMM-R1), `messages` (chat), `problem` (EasyR1)".into())
    }
}

fn take_id(obj: &mut Map<String, Value>, ctx: &RowCtx) -> Result<String, String> {
    let (key, required) = match &ctx.config.id_field {
        Some(k) => (k.as_str(), true),
        None => ("id", false),
    };
    match obj.remove(key) {
        Some(Value::String(s)) => Ok(s),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(other) => Err(format!(
            "id field `{key}` must be a string or number, got {}",
            kind(&other)
        )),
        None if required => Err(format!("missing id field `{key}`")),
        None => Ok(ctx.default_id.clone()),
    }
}

fn take_answer(obj: &mut Map<String, Value>, required: bool) -> Result<Option<String>, String> {
    match obj.remove("answer") {
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(Value::Bool(b)) => Ok(Some(b.to_string())),
        Some(Value::Null) | None if required => Err("missing field `answer`".into()),
        Some(Value::Null) | None => Ok(None),
        Some(other) => Err(format!(
            "`answer` must be a string or number, got {}",
            kind(&other)
        )),
    }
}

/// LMM-R1 / OpenRLHF: `message` is a JSON-encoded OpenAI message list.
fn lmm_r1(
    obj: &mut Map<String, Value>,
    ctx: &RowCtx,
) -> Result<(Vec<Message>, Option<String>), String> {
    let list = match obj.remove("message") {
        Some(Value::String(s)) => serde_json::from_str::<Value>(&s)
            .map_err(|e| format!("`message` is not a JSON-encoded message list: {e}"))?,
        Some(v @ Value::Array(_)) => v,
        Some(other) => {
            return Err(format!(
                "`message` must be a string holding a JSON message list, got {}",
                kind(&other)
            ))
        }
        None => return Err("missing field `message`".into()),
    };
    let answer = take_answer(obj, true)?;
    let mut images = Images::new(Vec::new(), "message", ctx);
    let messages = messages_from(&list, "message", false, &mut images)?;
    Ok((messages, answer))
}

/// EasyR1 / R1-V: one user turn from `problem`, images at its placeholders.
fn easyr1(
    obj: &mut Map<String, Value>,
    ctx: &RowCtx,
) -> Result<(Vec<Message>, Option<String>), String> {
    let problem = match obj.remove("problem") {
        Some(Value::String(s)) => s,
        Some(other) => return Err(format!("`problem` must be a string, got {}", kind(&other))),
        None => return Err("missing field `problem`".into()),
    };
    let answer = take_answer(obj, true)?;
    let list = take_images(obj)?;
    let n = problem.matches(PLACEHOLDER).count();
    if n > 0 && n != list.len() {
        return Err(format!(
            "`problem` has {n} `<image>` placeholders but `images` has {} entries",
            list.len()
        ));
    }
    let mut images = Images::new(list, "images", ctx);
    let content = if n == 0 {
        let mut c = images.all()?;
        c.push(ContentPart::Text(problem));
        c
    } else {
        split_placeholders(&problem, &mut images)?
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
fn chat(
    obj: &mut Map<String, Value>,
    ctx: &RowCtx,
) -> Result<(Vec<Message>, Option<String>), String> {
    let list = obj.remove("messages").ok_or("missing field `messages`")?;
    let answer = take_answer(obj, false)?;
    let images_list = take_images(obj)?;
    let n = count_slots(&list)?;
    if n > 0 && n != images_list.len() {
        return Err(format!(
            "`messages` have {n} image placeholders (`<image>` or image parts without a path) but `images` has {} entries",
            images_list.len()
        ));
    }
    let mut images = Images::new(images_list, "images", ctx);
    let mut messages = messages_from(&list, "messages", true, &mut images)?;
    if n == 0 && !images.is_empty() {
        // No placeholders: images go first in the first user turn, as EasyR1 does.
        let first = messages
            .iter_mut()
            .find(|m| m.role == "user")
            .ok_or("`images` is given but there is no user message to put the images in")?;
        let mut content = images.all()?;
        content.append(&mut first.content);
        first.content = content;
    }
    Ok((messages, answer))
}

fn take_images(obj: &mut Map<String, Value>) -> Result<Vec<Value>, String> {
    match obj.remove("images") {
        Some(Value::Array(a)) => Ok(a),
        Some(Value::Null) | None => Ok(Vec::new()),
        // A single image given without a list.
        Some(v @ (Value::String(_) | Value::Object(_))) => Ok(vec![v]),
        Some(other) => Err(format!("`images` must be a list, got {}", kind(&other))),
    }
}

/// Image slots a chat message list asks `images` for.
fn count_slots(list: &Value) -> Result<usize, String> {
    let Value::Array(msgs) = list else {
        return Err(format!("`messages` must be a list, got {}", kind(list)));
    };
    let mut n = 0;
    for m in msgs {
        match m.get("content") {
            Some(Value::String(s)) => n += s.matches(PLACEHOLDER).count(),
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

fn messages_from(
    list: &Value,
    field: &str,
    placeholders: bool,
    images: &mut Images,
) -> Result<Vec<Message>, String> {
    let Value::Array(msgs) = list else {
        return Err(format!(
            "`{field}` must be a list of messages, got {}",
            kind(list)
        ));
    };
    if msgs.is_empty() {
        return Err(format!("`{field}` is an empty message list"));
    }
    let mut out = Vec::with_capacity(msgs.len());
    for (i, m) in msgs.iter().enumerate() {
        let role = match m.get("role") {
            Some(Value::String(r)) => r.clone(),
            _ => return Err(format!("`{field}[{i}]`: missing or non-string `role`")),
        };
        let content = match m.get("content") {
            Some(Value::String(s)) if placeholders => split_placeholders(s, images)?,
            Some(Value::String(s)) => vec![ContentPart::Text(s.clone())],
            Some(Value::Array(parts)) => {
                let mut c = Vec::with_capacity(parts.len());
                for (j, p) in parts.iter().enumerate() {
                    c.push(
                        part(p, images).map_err(|e| format!("`{field}[{i}].content[{j}]`: {e}"))?,
                    );
                }
                c
            }
            Some(Value::Null) | None => Vec::new(),
            Some(other) => {
                return Err(format!(
                    "`{field}[{i}].content` must be a string or a list of parts, got {}",
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

fn split_placeholders(text: &str, images: &mut Images) -> Result<Vec<ContentPart>, String> {
    let mut out = Vec::new();
    for (i, seg) in text.split(PLACEHOLDER).enumerate() {
        if i > 0 {
            out.push(ContentPart::Image(images.next()?));
        }
        if !seg.is_empty() {
            out.push(ContentPart::Text(seg.to_owned()));
        }
    }
    Ok(out)
}

fn append_suffix(messages: &mut [Message], suffix: &str) -> Result<(), String> {
    let user = messages
        .iter_mut()
        .rev()
        .find(|m| m.role == "user")
        .ok_or("no user message to append `instruction_suffix` to")?;
    match user.content.iter_mut().rev().find_map(|p| match p {
        ContentPart::Text(t) => Some(t),
        ContentPart::Image(_) => None,
    }) {
        Some(t) => t.push_str(suffix),
        None => user.content.push(ContentPart::Text(suffix.to_owned())),
    }
    Ok(())
}

/// The row's image list, consumed in order by placeholders.
struct Images<'a> {
    list: Vec<Value>,
    next: usize,
    field: &'static str,
    ctx: &'a RowCtx<'a>,
}

impl<'a> Images<'a> {
    fn new(list: Vec<Value>, field: &'static str, ctx: &'a RowCtx<'a>) -> Self {
        Images {
            list,
            next: 0,
            field,
            ctx,
        }
    }

    fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    fn next(&mut self) -> Result<ImageSource, String> {
        let i = self.next;
        let v = self.list.get(i).cloned().ok_or_else(|| {
            format!(
                "more image placeholders than entries in `{}` ({})",
                self.field,
                self.list.len()
            )
        })?;
        self.next += 1;
        self.source(&v)
            .map_err(|e| format!("`{}[{i}]`: {e}", self.field))
    }

    fn all(&mut self) -> Result<Vec<ContentPart>, String> {
        let mut out = Vec::with_capacity(self.list.len());
        while self.next < self.list.len() {
            out.push(ContentPart::Image(self.next()?));
        }
        Ok(out)
    }

    /// A path string (`file://`, `data:...;base64,` accepted) or an object
    /// with `bytes` (base64 text or a list of byte values) or `path`.
    fn source(&self, v: &Value) -> Result<ImageSource, String> {
        match v {
            Value::String(s) => self.source_text(s),
            Value::Object(o) => {
                if let Some(b) = o.get("bytes").filter(|b| !b.is_null()) {
                    return bytes_of(b).map(ImageSource::Bytes);
                }
                for k in ["path", "image", "url"] {
                    if let Some(Value::String(s)) = o.get(k) {
                        return self.source_text(s);
                    }
                }
                Err("an image object needs `bytes` or `path`".into())
            }
            other => Err(format!(
                "an image must be a path string or an object, got {}",
                kind(other)
            )),
        }
    }

    fn source_text(&self, s: &str) -> Result<ImageSource, String> {
        if let Some(rest) = s.strip_prefix("data:") {
            let (_, data) = rest
                .split_once(";base64,")
                .ok_or("a `data:` image URL must be base64 (`data:<type>;base64,...`)")?;
            return base64_decode(data)
                .map(ImageSource::Bytes)
                .map_err(|e| format!("image data URL: {e}"));
        }
        resolve_image(s, self.ctx.base, self.ctx.granted).map(ImageSource::Path)
    }
}

fn bytes_of(b: &Value) -> Result<Vec<u8>, String> {
    match b {
        Value::String(s) => base64_decode(s).map_err(|e| format!("image `bytes`: {e}")),
        Value::Array(a) => a
            .iter()
            .map(|x| {
                x.as_u64()
                    .and_then(|n| u8::try_from(n).ok())
                    .ok_or_else(|| format!("image `bytes`: {x} is not a byte value 0..=255"))
            })
            .collect(),
        other => Err(format!(
            "image `bytes` must be base64 text or a list of bytes, got {}",
            kind(other)
        )),
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
