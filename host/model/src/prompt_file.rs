//! The prompts file of `lmmhost logits`: JSONL rows of token ids
//! (`{"input_ids": [...]}`) or chat messages (`{"messages": [...]}`).

use anyhow::{bail, Context, Result};
use std::path::Path;
use tch::Tensor;

use crate::processor::{Conversation, ImageInput, Message, Part};

/// Token-id prompts of the JSONL file, left-padded into one batch.
pub fn read_id_prompts(path: &Path, pad: i64, vocab: i64) -> Result<(Tensor, Tensor)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read prompts file {}", path.display()))?;
    let mut rows: Vec<Vec<i64>> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{}:{}", path.display(), i + 1);
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("{}: not valid JSON", at()))?;
        let ids = v
            .get("input_ids")
            .and_then(|x| x.as_array())
            .with_context(|| {
                format!(
                    "{}: expected an \"input_ids\" list or a \"messages\" list",
                    at()
                )
            })?;
        let ids: Vec<i64> = ids
            .iter()
            .enumerate()
            .map(|(j, x)| {
                let id = x
                    .as_i64()
                    .with_context(|| format!("{}: input_ids[{j}] is not an integer", at()))?;
                if id < 0 || id >= vocab {
                    bail!(
                        "{}: input_ids[{j}] = {id} is outside the vocabulary (0..{vocab})",
                        at()
                    );
                }
                Ok(id)
            })
            .collect::<Result<_>>()?;
        if ids.is_empty() {
            bail!("{}: empty prompt", at());
        }
        rows.push(ids);
    }
    if rows.is_empty() {
        bail!("{} holds no prompts", path.display());
    }
    let l = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(rows.len() * l);
    let mut mask = Vec::with_capacity(rows.len() * l);
    for r in &rows {
        ids.extend(std::iter::repeat_n(pad, l - r.len()).chain(r.iter().copied()));
        mask.extend(std::iter::repeat_n(0i64, l - r.len()).chain(std::iter::repeat_n(1, r.len())));
    }
    let shape = [rows.len() as i64, l as i64];
    Ok((
        Tensor::from_slice(&ids).view(shape),
        Tensor::from_slice(&mask).view(shape),
    ))
}

/// Prompt rows of a JSONL file.
pub enum PromptFile {
    /// `{"input_ids": [...]}` rows.
    Ids,
    /// `{"messages": [...]}` rows, parsed.
    Chats(Vec<Conversation>),
}

/// Reads the JSONL once to see which kind of rows it holds (all rows must agree)
/// and parses chat rows; image paths are taken relative to the file.
pub fn read_prompt_file(path: &Path) -> Result<PromptFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read prompts file {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut chats = Vec::new();
    let mut ids_rows = 0;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = format!("{}:{}", path.display(), i + 1);
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("{at}: not valid JSON"))?;
        match v.get("messages") {
            Some(m) => chats.push(parse_messages(m, base).with_context(|| at.clone())?),
            None => ids_rows += 1,
        }
    }
    match (chats.is_empty(), ids_rows) {
        (true, _) => Ok(PromptFile::Ids),
        (false, 0) => Ok(PromptFile::Chats(chats)),
        _ => bail!(
            "{}: mixes \"messages\" rows and \"input_ids\" rows; use one kind",
            path.display()
        ),
    }
}

/// OpenAI-like messages: `{"role": "user", "content": "text"}` or content as a
/// list of parts `{"type": "text", "text": ..}` / `{"type": "image", "image": "a.png"}`
/// (also `"path"`, or `{"type": "image_url", "image_url": {"url": "file://a.png"}}`).
pub fn parse_messages(v: &serde_json::Value, base: &Path) -> Result<Conversation> {
    let list = v.as_array().context("\"messages\" must be a list")?;
    let mut out = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let role = m
            .get("role")
            .and_then(|r| r.as_str())
            .with_context(|| format!("messages[{i}]: missing \"role\" string"))?;
        let parts = match m.get("content") {
            Some(serde_json::Value::String(t)) => vec![Part::Text(t.clone())],
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(j, p)| {
                    parse_part(p, base).with_context(|| format!("messages[{i}].content[{j}]"))
                })
                .collect::<Result<_>>()?,
            _ => bail!("messages[{i}]: \"content\" must be a string or a list of parts"),
        };
        out.push(Message {
            role: role.to_string(),
            parts,
        });
    }
    Ok(out)
}

fn parse_part(p: &serde_json::Value, base: &Path) -> Result<Part> {
    let ty = p
        .get("type")
        .and_then(|t| t.as_str())
        .context("missing \"type\"")?;
    let image = |s: &str| {
        let s = s.strip_prefix("file://").unwrap_or(s);
        Part::Image(ImageInput::Path(base.join(s)))
    };
    match ty {
        "text" => Ok(Part::Text(
            p.get("text")
                .and_then(|t| t.as_str())
                .context("text part without \"text\"")?
                .to_string(),
        )),
        "image" => {
            let s = p
                .get("image")
                .or_else(|| p.get("path"))
                .and_then(|t| t.as_str());
            Ok(image(s.context("image part without an \"image\" path")?))
        }
        "image_url" => {
            let s = p
                .pointer("/image_url/url")
                .or_else(|| p.get("image_url"))
                .and_then(|t| t.as_str());
            Ok(image(s.context("image_url part without a url")?))
        }
        other => bail!("unknown part type {other:?} (expected text, image or image_url)"),
    }
}
