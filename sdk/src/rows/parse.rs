//! One row (a JSON object) -> one `Sample`, for each supported layout.
//!
//! Errors carry no file/line prefix; the loader adds `<file>:<line>: `.

use super::config::{Config, Format};
use super::images::Images;
use super::kind;
use crate::{ContentPart, Message, Sample};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// What a row needs to know about where it came from.
pub struct RowCtx<'a> {
    pub config: &'a Config,
    /// Directory of the data file: relative image paths start here.
    pub base: &'a Path,
    /// Granted directories: image paths must lie inside one of them.
    pub granted: &'a [PathBuf],
    /// Used when the row has no id field.
    pub default_id: String,
}

/// A row given as JSON text (a JSONL line).
pub fn parse_json_row(text: &str, ctx: &RowCtx) -> Result<Sample, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    parse_row(value, ctx)
}

/// A row given as the JSON object it stands for (a Parquet record).
pub fn parse_row(value: Value, ctx: &RowCtx) -> Result<Sample, String> {
    let cfg = ctx.config;
    let Value::Object(mut obj) = value else {
        return Err(format!("a row must be a JSON object, got {}", kind(&value)));
    };
    let format = match cfg.format {
        Format::Auto => detect(cfg, &obj)?,
        f => f,
    };
    let id = take_id(&mut obj, ctx)?;
    let (mut messages, answer) = match format {
        Format::LmmR1 => lmm_r1(&mut obj, ctx)?,
        Format::EasyR1 => easyr1(&mut obj, ctx)?,
        Format::Verl => verl(&mut obj, ctx)?,
        Format::Messages | Format::Auto => chat(&mut obj, ctx)?,
    };
    apply_template(cfg, &mut messages)?;
    let answer = answer.map(|a| {
        if cfg.unwrap_answer {
            unwrap_answer(&a)
        } else {
            a
        }
    });
    // Every field the layout did not use: strings as they are, numbers,
    // booleans, lists (e.g. a Sokoban level as rows) and objects as compact JSON.
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
            "cannot detect the format: the row has none of `{}` (LMM-R1), `{}` (chat), `{}` (EasyR1), `{}` (verl)",
            cfg.message_key, cfg.messages_key, cfg.problem_key, cfg.prompt_key
        ))
    }
}

fn take_id(obj: &mut Map<String, Value>, ctx: &RowCtx) -> Result<String, String> {
    let (key, required) = match &ctx.config.id_field {
        Some(k) => (k.as_str(), true),
        None => (ctx.config.id_key.as_str(), false),
    };
    match obj.remove(key) {
        Some(Value::String(s)) => Ok(s),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(Value::Null) | None if required => Err(format!("missing id field `{key}`")),
        Some(Value::Null) | None => Ok(ctx.default_id.clone()),
        Some(other) => Err(format!(
            "id field `{key}` must be a string or number, got {}",
            kind(&other)
        )),
    }
}

fn take_answer(
    obj: &mut Map<String, Value>,
    key: &str,
    required: bool,
) -> Result<Option<String>, String> {
    match obj.remove(key) {
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(Value::Bool(b)) => Ok(Some(b.to_string())),
        Some(Value::Null) | None if required => Err(format!("missing field `{key}`")),
        Some(Value::Null) | None => Ok(None),
        Some(other) => Err(format!(
            "`{key}` must be a string or number, got {}",
            kind(&other)
        )),
    }
}

/// LMM-R1 / OpenRLHF: `message` is a JSON-encoded OpenAI message list.
fn lmm_r1(
    obj: &mut Map<String, Value>,
    ctx: &RowCtx,
) -> Result<(Vec<Message>, Option<String>), String> {
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
    let answer = take_answer(obj, &ctx.config.answer_key, true)?;
    let mut images = Images::new(Vec::new(), key, ctx.base, ctx.granted);
    let messages = messages_from(&list, key, None, &mut images)?;
    Ok((messages, answer))
}

/// EasyR1 / R1-V: one user turn from `problem`, images at its placeholders.
fn easyr1(
    obj: &mut Map<String, Value>,
    ctx: &RowCtx,
) -> Result<(Vec<Message>, Option<String>), String> {
    let cfg = ctx.config;
    let key = &cfg.problem_key;
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
    let mut images = Images::new(list, &cfg.images_key, ctx.base, ctx.granted);
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
fn chat(
    obj: &mut Map<String, Value>,
    ctx: &RowCtx,
) -> Result<(Vec<Message>, Option<String>), String> {
    let key = &ctx.config.messages_key;
    let list = obj
        .remove(key)
        .ok_or_else(|| format!("missing field `{key}`"))?;
    let answer = take_answer(obj, &ctx.config.answer_key, false)?;
    let messages = chat_with_images(obj, ctx, &list, key)?;
    Ok((messages, answer))
}

/// verl: `prompt` is a chat list; the answer is at a dotted path
/// (`reward_model.ground_truth`), whose top-level field is consumed.
fn verl(
    obj: &mut Map<String, Value>,
    ctx: &RowCtx,
) -> Result<(Vec<Message>, Option<String>), String> {
    let cfg = ctx.config;
    let key = &cfg.prompt_key;
    let list = obj
        .remove(key)
        .ok_or_else(|| format!("missing field `{key}`"))?;
    let answer = dotted(obj, &cfg.ground_truth_key)?;
    let root = cfg.ground_truth_key.split('.').next().unwrap_or_default();
    obj.remove(root);
    let messages = chat_with_images(obj, ctx, &list, key)?;
    Ok((messages, Some(answer)))
}

/// A chat list whose `<image>` placeholders and bare image parts take the
/// row's `images` in order; without any, the images go first in the first
/// user turn.
fn chat_with_images(
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
    let mut images = Images::new(images_list, &cfg.images_key, ctx.base, ctx.granted);
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

/// A string or number at a dotted path such as `reward_model.ground_truth`.
fn dotted(obj: &Map<String, Value>, path: &str) -> Result<String, String> {
    let mut parts = path.split('.');
    let first = parts.next().unwrap_or(path);
    let missing = || format!("missing field `{path}`");
    let mut cur = obj.get(first).ok_or_else(missing)?;
    for p in parts {
        cur = cur.get(p).ok_or_else(missing)?;
    }
    match cur {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        v => Err(format!(
            "field `{path}` must be a string or number, got {}",
            kind(v)
        )),
    }
}

fn take_images(obj: &mut Map<String, Value>, key: &str) -> Result<Vec<Value>, String> {
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
            Some(Value::String(r)) => r.clone(),
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

fn split_placeholders(
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

fn push_text(out: &mut Vec<ContentPart>, t: &str) {
    if !t.is_empty() {
        out.push(ContentPart::Text(t.to_owned()));
    }
}

/// System prompt and instruction prefix/suffix, as the RL frameworks form their prompts.
fn apply_template(cfg: &Config, messages: &mut Vec<Message>) -> Result<(), String> {
    if let Some(sys) = &cfg.system_prompt {
        let msg = Message {
            role: "system".into(),
            content: vec![ContentPart::Text(sys.clone())],
        };
        match messages.iter().position(|m| m.role == "system") {
            Some(i) if cfg.replace_system => messages[i] = msg,
            Some(_) => {}
            None => messages.insert(0, msg),
        }
    }
    if cfg.instruction_prefix.is_empty() && cfg.instruction_suffix.is_empty() {
        return Ok(());
    }
    let user = messages
        .iter_mut()
        .rev()
        .find(|m| m.role == "user")
        .ok_or("no user message to add `instruction_prefix`/`instruction_suffix` to")?;
    if !cfg.instruction_prefix.is_empty() {
        match user.content.first_mut() {
            Some(ContentPart::Text(t)) => t.insert_str(0, &cfg.instruction_prefix),
            _ => user
                .content
                .insert(0, ContentPart::Text(cfg.instruction_prefix.clone())),
        }
    }
    if !cfg.instruction_suffix.is_empty() {
        let last_text = user.content.iter_mut().rev().find_map(|p| match p {
            ContentPart::Text(t) => Some(t),
            ContentPart::Image(_) => None,
        });
        match last_text {
            Some(t) => t.push_str(&cfg.instruction_suffix),
            None => user
                .content
                .push(ContentPart::Text(cfg.instruction_suffix.clone())),
        }
    }
    Ok(())
}

/// `$\boxed{60}$` -> `60`; `$x^2$` -> `x^2`; anything else unchanged.
pub fn unwrap_answer(a: &str) -> String {
    let mut s = a.trim();
    while s.len() >= 2 && s.starts_with('$') && s.ends_with('$') {
        s = s[1..s.len() - 1].trim();
    }
    match crate::answer::last_boxed(s) {
        Some(inner) if s.starts_with("\\boxed{") || s.starts_with("\\fbox{") => {
            inner.trim().to_owned()
        }
        _ => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ImageSource;

    fn parse(cfg: &Config, row: &str) -> Result<Sample, String> {
        let granted = [PathBuf::from("/d")];
        let ctx = RowCtx {
            config: cfg,
            base: Path::new("/d/sub"),
            granted: &granted,
            default_id: "f:1".into(),
        };
        parse_json_row(row, &ctx)
    }

    fn text(t: &str) -> ContentPart {
        ContentPart::Text(t.into())
    }

    #[test]
    fn verl_prompt_ground_truth_and_template() {
        let cfg = Config {
            system_prompt: Some("S".into()),
            replace_system: true,
            instruction_prefix: "P: ".into(),
            instruction_suffix: " Box it.".into(),
            unwrap_answer: true,
            ..Config::default()
        };
        let s = parse(
            &cfg,
            r#"{"prompt": [{"role": "system", "content": "old"}, {"role": "user", "content": "<image>Angle?"}],
                "images": [{"bytes": null, "path": "a.png"}], "reward_model": {"ground_truth": "$\\boxed{60}$", "style": "rule"},
                "data_source": "geo3k", "extra": null}"#,
        )
        .unwrap();
        assert_eq!(s.id, "f:1");
        assert_eq!(s.messages[0].content, vec![text("S")], "system replaced");
        assert_eq!(
            s.messages[1].content,
            vec![
                text("P: "),
                ContentPart::Image(ImageSource::Path("/d/sub/a.png".into())),
                text("Angle? Box it.")
            ]
        );
        assert_eq!(s.answer.as_deref(), Some("60"));
        assert_eq!(
            s.metadata,
            vec![("data_source".to_owned(), "geo3k".to_owned())]
        );
    }

    #[test]
    fn configurable_keys_and_required_id() {
        let cfg = Config {
            problem_key: "question".into(),
            answer_key: "solution".into(),
            image_placeholder: "[img]".into(),
            id_field: Some("uid".into()),
            ..Config::default()
        };
        let s = parse(
            &cfg,
            r#"{"uid": 7, "question": "[img] vs [img]", "solution": 3, "images": ["x.png", "data:image/png;base64,iVBORw=="]}"#,
        )
        .unwrap();
        assert_eq!(s.id, "7");
        assert_eq!(s.answer.as_deref(), Some("3"));
        assert_eq!(s.messages[0].content.len(), 3);
        assert_eq!(
            s.messages[0].content[2],
            ContentPart::Image(ImageSource::Bytes(vec![0x89, b'P', b'N', b'G']))
        );
        let e = parse(&cfg, r#"{"question": "q", "solution": 1}"#).unwrap_err();
        assert_eq!(e, "missing id field `uid`");
        let e = parse(
            &cfg,
            r#"{"uid": 1, "question": "[img]", "solution": 1, "images": []}"#,
        )
        .unwrap_err();
        assert!(
            e.contains("1 `[img]` placeholders but `images` has 0 entries"),
            "{e}"
        );
    }

    #[test]
    fn unwrap_answer_strips_dollars_and_box() {
        assert_eq!(unwrap_answer("$\\boxed{\\frac{1}{2}}$"), "\\frac{1}{2}");
        assert_eq!(unwrap_answer(" $x^2$ "), "x^2");
        assert_eq!(unwrap_answer("12 apples"), "12 apples");
    }
}
