//! A checkpoint's own chat template (Jinja), rendered as transformers'
//! `apply_chat_template` does: `chat_template.jinja`, else the
//! `"chat_template"` of `chat_template.json`, else that of
//! `tokenizer_config.json`; trimmed blocks, Python string methods.
//!
//! The SFT loss needs the byte ranges of the assistant messages in the
//! rendered text. They are found by rendering prefixes of the conversation:
//! message i of an assistant starts where `messages[..i]` with the generation
//! prompt ends, and ends where `messages[..=i]` ends (without the newline
//! after its end-of-turn token). A template whose rendering of a prefix is not
//! a prefix of the whole, or does not hold the message's text there (one that
//! rewrites earlier turns), is an error.

use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use minijinja::syntax::SyntaxConfig;
use minijinja::{Environment, Error, ErrorKind};
use serde_json::{json, Value};

use super::chat_template::{Message, Part, RenderedChat};

pub struct JinjaTemplate {
    env: Environment<'static>,
    /// The file the template came from, for errors.
    source: PathBuf,
}

const NAME: &str = "chat_template";

impl JinjaTemplate {
    /// The template of the checkpoint directory `dir`, or None when it has none.
    pub fn from_dir(dir: &Path) -> Result<Option<Self>> {
        let jinja = dir.join("chat_template.jinja");
        if jinja.is_file() {
            let text = std::fs::read_to_string(&jinja)
                .with_context(|| format!("cannot read {}", jinja.display()))?;
            return Self::new(text, jinja).map(Some);
        }
        for file in ["chat_template.json", "tokenizer_config.json"] {
            let path = dir.join(file);
            if !path.is_file() {
                continue;
            }
            let v: Value = serde_json::from_str(
                &std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?,
            )
            .with_context(|| format!("{} is not valid JSON", path.display()))?;
            let text = match v.get("chat_template") {
                None | Some(Value::Null) => continue,
                Some(Value::String(s)) => s.clone(),
                // A list of named templates: the default one.
                Some(Value::Array(list)) => list
                    .iter()
                    .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                    .and_then(|t| t.get("template"))
                    .and_then(Value::as_str)
                    .with_context(|| {
                        format!(
                            "{}: no \"default\" entry in \"chat_template\"",
                            path.display()
                        )
                    })?
                    .to_string(),
                Some(other) => bail!(
                    "{}: \"chat_template\" must be a string, found {other}",
                    path.display()
                ),
            };
            return Self::new(text, path).map(Some);
        }
        Ok(None)
    }

    fn new(text: String, source: PathBuf) -> Result<Self> {
        let mut env = Environment::new();
        // transformers renders with trim_blocks and lstrip_blocks.
        let syntax = SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .context("minijinja syntax settings")?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<String, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_template_owned(NAME, text)
            .with_context(|| format!("{}: the chat template does not parse", source.display()))?;
        Ok(JinjaTemplate { env, source })
    }

    /// The file the template came from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    fn render_text(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let ctx = json!({
            "messages": messages.iter().map(message_json).collect::<Vec<_>>(),
            "add_generation_prompt": add_generation_prompt,
        });
        self.env
            .get_template(NAME)
            .and_then(|t| t.render(minijinja::Value::from(minijinja::value::Serde(&ctx))))
            .with_context(|| format!("rendering the chat template of {}", self.source.display()))
    }

    /// Renders `messages`; `add_generation_prompt` opens an assistant turn.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<RenderedChat> {
        let text = self.render_text(messages, add_generation_prompt)?;
        let mut assistant_spans: Vec<Range<usize>> = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            if m.role != "assistant" {
                continue;
            }
            let head = self.render_text(&messages[..i], true)?;
            let upto = self.render_text(&messages[..=i], false)?;
            let content: String = m
                .parts
                .iter()
                .filter_map(|p| match p {
                    Part::Text(t) => Some(t.as_str()),
                    Part::Image(_) => None,
                })
                .collect();
            if !upto.starts_with(&head)
                || !text.starts_with(&upto)
                || !upto[head.len()..].contains(&content)
            {
                bail!(
                    "the chat template of {} renders message {i} differently depending on what \
                     follows it, so the assistant tokens of a training sample cannot be located",
                    self.source.display()
                );
            }
            let end = upto.trim_end_matches('\n').len();
            assistant_spans.push(head.len()..end.max(head.len()));
        }
        let images = messages
            .iter()
            .flat_map(|m| &m.parts)
            .filter_map(|p| match p {
                Part::Image(img) => Some(img.clone()),
                Part::Text(_) => None,
            })
            .collect();
        Ok(RenderedChat {
            text,
            assistant_spans,
            images,
        })
    }
}

/// A message as `apply_chat_template` gets it: text-only content as one
/// string (what text models' templates expect), else a list of parts.
fn message_json(m: &Message) -> Value {
    let content = if m.parts.iter().all(|p| matches!(p, Part::Text(_))) {
        Value::String(
            m.parts
                .iter()
                .filter_map(|p| match p {
                    Part::Text(t) => Some(t.as_str()),
                    Part::Image(_) => None,
                })
                .collect(),
        )
    } else {
        Value::Array(
            m.parts
                .iter()
                .map(|p| match p {
                    Part::Text(t) => json!({"type": "text", "text": t}),
                    Part::Image(_) => json!({"type": "image"}),
                })
                .collect(),
        )
    };
    json!({"role": m.role, "content": content})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(text: &str) -> JinjaTemplate {
        JinjaTemplate::new(text.to_string(), PathBuf::from("x/chat_template.jinja")).unwrap()
    }

    #[test]
    fn spans_and_text_only_content_as_a_string() {
        // Text-only messages arrive as strings, so `is string` holds.
        let t = template(
            "{% for m in messages %}[{{ m.role }}]{% if m.content is string %}{{ m.content }}\
             {% endif %}<end>\n{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}",
        );
        let msgs = vec![
            Message::text("user", "hi"),
            Message::text("assistant", "yo"),
        ];
        let r = t.render(&msgs, false).unwrap();
        assert_eq!(r.text, "[user]hi<end>\n[assistant]yo<end>\n");
        assert_eq!(&r.text[r.assistant_spans[0].clone()], "yo<end>");
    }

    #[test]
    fn a_template_that_rewrites_earlier_turns_is_an_error() {
        // Shows the assistant's text only when it is the last message.
        let t = template(
            "{% for m in messages %}[{{ m.role }}]{% if not loop.last or m.role != 'assistant' %}\
             {{ m.content }}{% endif %}\n{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}",
        );
        let msgs = vec![
            Message::text("user", "hi"),
            Message::text("assistant", "yo"),
            Message::text("user", "again"),
        ];
        let err = t.render(&msgs, false).unwrap_err().to_string();
        assert!(
            err.contains("x/chat_template.jinja") && err.contains("message 1"),
            "{err}"
        );
        let err = template("{{ raise_exception('no tools') }}")
            .render(&msgs, true)
            .unwrap_err();
        assert!(format!("{err:#}").contains("no tools"), "{err:#}");
    }
}
