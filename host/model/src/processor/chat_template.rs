//! The Qwen2.5-VL chat template, written out in Rust (the same text the Jinja
//! template in `chat_template.json` renders), plus the expansion of each image
//! placeholder to one token per merged patch.

use std::ops::Range;
use std::path::PathBuf;

use anyhow::{bail, Result};

pub const IM_START: &str = "<|im_start|>";
pub const IM_END: &str = "<|im_end|>";
pub const VISION_START: &str = "<|vision_start|>";
pub const VISION_END: &str = "<|vision_end|>";
pub const IMAGE_PAD: &str = "<|image_pad|>";
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are a helpful assistant.";

/// Where an image's encoded bytes (PNG, JPEG) come from.
#[derive(Debug, Clone, PartialEq)]
pub enum ImageInput {
    Path(PathBuf),
    Bytes(Vec<u8>),
}

/// One piece of a message's content.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text(String),
    Image(ImageInput),
}

/// One chat turn: `system`, `user` or `assistant` (any role renders the same way).
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: String,
    pub parts: Vec<Part>,
}

impl Message {
    pub fn text(role: &str, text: &str) -> Self {
        Self {
            role: role.to_string(),
            parts: vec![Part::Text(text.to_string())],
        }
    }
}

/// A conversation rendered to text.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedChat {
    pub text: String,
    /// Byte ranges of `text` the SFT loss covers: each assistant message's
    /// content and its `<|im_end|>` (not the `<|im_start|>assistant\n` header
    /// nor the newline after `<|im_end|>`).
    pub assistant_spans: Vec<Range<usize>>,
    /// The image parts, in order of appearance.
    pub images: Vec<ImageInput>,
}

/// Renders messages as Qwen2.5-VL's template does: a default system prompt when
/// the first message is not a system one, `<|im_start|>role\n...<|im_end|>\n`
/// per message, `<|vision_start|><|image_pad|><|vision_end|>` per image, and
/// `<|im_start|>assistant\n` at the end when `add_generation_prompt`.
pub fn render(messages: &[Message], add_generation_prompt: bool) -> RenderedChat {
    let mut text = String::new();
    let mut assistant_spans = Vec::new();
    let mut images = Vec::new();
    if messages.first().is_none_or(|m| m.role != "system") {
        text.push_str(IM_START);
        text.push_str("system\n");
        text.push_str(DEFAULT_SYSTEM_PROMPT);
        text.push_str(IM_END);
        text.push('\n');
    }
    for m in messages {
        text.push_str(IM_START);
        text.push_str(&m.role);
        text.push('\n');
        let start = text.len();
        for part in &m.parts {
            match part {
                Part::Text(t) => text.push_str(t),
                Part::Image(img) => {
                    text.push_str(VISION_START);
                    text.push_str(IMAGE_PAD);
                    text.push_str(VISION_END);
                    images.push(img.clone());
                }
            }
        }
        text.push_str(IM_END);
        if m.role == "assistant" {
            assistant_spans.push(start..text.len());
        }
        text.push('\n');
    }
    if add_generation_prompt {
        text.push_str(IM_START);
        text.push_str("assistant\n");
    }
    RenderedChat {
        text,
        assistant_spans,
        images,
    }
}

/// Replaces the i-th `<|image_pad|>` with `tokens_per_image[i]` copies and moves
/// the assistant spans along. The number of placeholders in the text (including
/// any a user typed literally) must equal the number of images.
pub fn expand_image_pads(chat: &RenderedChat, tokens_per_image: &[usize]) -> Result<RenderedChat> {
    let found: Vec<usize> = chat.text.match_indices(IMAGE_PAD).map(|(i, _)| i).collect();
    if found.len() != tokens_per_image.len() {
        bail!(
            "{} image placeholders ({IMAGE_PAD}) in the text but {} images",
            found.len(),
            tokens_per_image.len()
        );
    }
    let mut text = String::with_capacity(
        chat.text.len() + tokens_per_image.iter().sum::<usize>() * IMAGE_PAD.len(),
    );
    // (old position of a placeholder's end, extra bytes inserted up to there)
    let mut shifts = Vec::with_capacity(found.len());
    let mut last = 0;
    let mut extra = 0usize;
    for (&pos, &n) in found.iter().zip(tokens_per_image) {
        if n == 0 {
            bail!("an image maps to 0 tokens");
        }
        text.push_str(&chat.text[last..pos]);
        for _ in 0..n {
            text.push_str(IMAGE_PAD);
        }
        last = pos + IMAGE_PAD.len();
        extra += (n - 1) * IMAGE_PAD.len();
        shifts.push((last, extra));
    }
    text.push_str(&chat.text[last..]);
    let moved = |old: usize| -> usize {
        shifts
            .iter()
            .take_while(|(end, _)| *end <= old)
            .last()
            .map_or(old, |(_, e)| old + e)
    };
    let assistant_spans = chat
        .assistant_spans
        .iter()
        .map(|r| moved(r.start)..moved(r.end))
        .collect();
    Ok(RenderedChat {
        text,
        assistant_spans,
        images: chat.images.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_system_prompt_and_generation_prompt() {
        let r = render(&[Message::text("user", "Hi")], true);
        assert_eq!(
            r.text,
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n\
             <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        assert!(r.assistant_spans.is_empty());
    }

    #[test]
    fn own_system_prompt_images_and_assistant_span() {
        let msgs = vec![
            Message::text("system", "S"),
            Message {
                role: "user".into(),
                parts: vec![
                    Part::Image(ImageInput::Bytes(vec![1])),
                    Part::Text("Q".into()),
                ],
            },
            Message::text("assistant", "A"),
        ];
        let r = render(&msgs, false);
        assert_eq!(
            r.text,
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\n\
             <|vision_start|><|image_pad|><|vision_end|>Q<|im_end|>\n<|im_start|>assistant\nA<|im_end|>\n"
        );
        assert_eq!(r.images.len(), 1);
        assert_eq!(&r.text[r.assistant_spans[0].clone()], "A<|im_end|>");
        let e = expand_image_pads(&r, &[3]).unwrap();
        assert_eq!(e.text.matches(IMAGE_PAD).count(), 3);
        assert_eq!(&e.text[e.assistant_spans[0].clone()], "A<|im_end|>");
    }

    #[test]
    fn placeholder_mismatch_names_both_counts() {
        let msgs = vec![Message::text("user", "look: <|image_pad|>")];
        let r = render(&msgs, true);
        let err = expand_image_pads(&r, &[]).unwrap_err().to_string();
        assert!(
            err.contains("1 image placeholders") && err.contains("but 0 images"),
            "{err}"
        );
    }
}
