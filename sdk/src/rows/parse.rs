//! One row (a JSON object) -> one `Sample`, for each supported layout.
//!
//! Errors carry no file/line prefix; the loader adds `<file>:<line>: `.

use super::config::{Config, Format};
use super::conversations::{alpaca, query_response, sharegpt};
use super::images::normalize;
use super::kind;
use super::layouts::{chat, easyr1, lmm_r1, verl};
use super::sokoban::sokoban;
use crate::{ContentPart, Message, Sample};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// What a row needs to know about where it came from.
pub struct RowCtx<'a> {
    pub config: &'a Config,
    /// Directory of the data file: relative image paths start here.
    pub base: &'a Path,
    /// Granted directories and image roots: image paths must lie inside one of them.
    pub granted: &'a [PathBuf],
    /// Used when the row has no id field.
    pub default_id: String,
}

impl RowCtx<'_> {
    /// Where relative image paths start: `image_dir` (itself relative to
    /// the data file's directory when not absolute), else that directory.
    pub fn image_base(&self) -> PathBuf {
        match &self.config.image_dir {
            Some(d) => normalize(&self.base.join(d)),
            None => self.base.to_path_buf(),
        }
    }
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
        Format::LmmR1 => lmm_r1(&mut obj, ctx, true)?,
        Format::Sokoban => sokoban(&mut obj, ctx)?,
        Format::EasyR1 => {
            // EasyR1's own default column is `prompt` (a string).
            let prompt_text = obj.get(&cfg.prompt_key).is_some_and(Value::is_string);
            let key = if !obj.contains_key(&cfg.problem_key) && prompt_text {
                &cfg.prompt_key
            } else {
                &cfg.problem_key
            };
            easyr1(&mut obj, ctx, key)?
        }
        Format::Verl => verl(&mut obj, ctx)?,
        Format::ShareGpt => sharegpt(&mut obj, ctx)?,
        Format::QueryResponse => query_response(&mut obj, ctx)?,
        Format::Alpaca => alpaca(&mut obj, ctx)?,
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

/// The layout of a row, from the fields it has (first match wins).
pub fn detect(cfg: &Config, obj: &Map<String, Value>) -> Result<Format, String> {
    let has = |k: &String| obj.contains_key(k);
    Ok(if has(&cfg.message_key) {
        if has(&cfg.level_file_key) {
            Format::Sokoban
        } else {
            Format::LmmR1
        }
    } else if has(&cfg.messages_key) {
        Format::Messages
    } else if has(&cfg.conversations_key) {
        Format::ShareGpt
    } else if has(&cfg.problem_key) {
        Format::EasyR1
    } else if let Some(p) = obj.get(&cfg.prompt_key) {
        // verl's `prompt` is a chat list; EasyR1's is the problem text.
        if p.is_string() {
            Format::EasyR1
        } else {
            Format::Verl
        }
    } else if has(&cfg.query_key) {
        Format::QueryResponse
    } else if has(&cfg.instruction_key) {
        Format::Alpaca
    } else {
        return Err(format!(
            "cannot detect the format: the row has none of `{}` (LMM-R1), `{}` (chat), `{}` (ShareGPT), `{}` (EasyR1), `{}` (verl or EasyR1), `{}` (ms-swift), `{}` (Alpaca); set `format` or the key names",
            cfg.message_key,
            cfg.messages_key,
            cfg.conversations_key,
            cfg.problem_key,
            cfg.prompt_key,
            cfg.query_key,
            cfg.instruction_key
        ));
    })
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

pub(super) fn take_answer(
    obj: &mut Map<String, Value>,
    key: &str,
    required: bool,
) -> Result<Option<String>, String> {
    match obj.remove(key) {
        // Layouts whose rows may lack an answer write it empty (LMM-R1's
        // Sokoban rows, SFT conversations): that is no answer. Where the
        // reward needs one, an empty answer could only ever score 0.
        Some(Value::String(s)) if s.trim().is_empty() && !required => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Err(format!(
            "`{key}` is empty: a reference answer must hold text (leave the field out of rows that have none)"
        )),
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
    fn unknown_roles_and_empty_answers_are_bad_rows() {
        let cfg = Config::default();
        let e = parse(
            &cfg,
            r#"{"messages": [{"role": "narrator", "content": "Once"}], "answer": "1"}"#,
        )
        .unwrap_err();
        assert_eq!(
            e,
            "`messages[0].role` is `narrator`; expected system, user, assistant, tool"
        );
        let e = parse(&cfg, r#"{"problem": "2+2?", "answer": "  "}"#).unwrap_err();
        assert!(e.starts_with("`answer` is empty"), "{e}");
        let s = parse(
            &cfg,
            r#"{"messages": [{"role": "tool", "content": "42"}, {"role": "user", "content": "ok?"}], "answer": "1"}"#,
        )
        .unwrap();
        assert_eq!(s.messages[0].role, "tool");
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
