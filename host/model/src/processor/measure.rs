//! What a conversation costs in tokens, without its pixels: the image sizes
//! come from the files' headers, so a whole dataset can be measured before
//! a run (`lmmhost data`). The counts are the ones [`Processor::encode`]
//! produces (same template, same resize, same tokenizer).

use std::io::Cursor;

use anyhow::{Context, Result};

use super::{Conversation, ImageInput, Processor};

/// One image of a measured conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSize {
    /// Where it comes from: its path, or `N bytes given inline`.
    pub source: String,
    pub width: usize,
    pub height: usize,
    /// The size the processor resizes it to.
    pub resized_width: usize,
    pub resized_height: usize,
    /// Its `<|image_pad|>` tokens in the prompt.
    pub tokens: usize,
}

/// One conversation rendered and counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measured {
    /// The rendered text with one `<|image_pad|>` per image (not expanded).
    pub text: String,
    /// Tokens, image tokens included.
    pub tokens: usize,
    pub images: Vec<ImageSize>,
}

impl Measured {
    pub fn image_tokens(&self) -> usize {
        self.images.iter().map(|i| i.tokens).sum()
    }
}

impl Processor {
    /// Renders and tokenizes conversation `sample` (its index, for errors)
    /// reading only the images' sizes; fails where [`Processor::encode`]
    /// would, except on image data that is corrupt past its header.
    pub fn measure(
        &self,
        sample: usize,
        conv: &Conversation,
        add_generation_prompt: bool,
    ) -> Result<Measured> {
        let name = format!("sample {sample}");
        let chat = self.render(&name, conv, add_generation_prompt)?;
        let mut images = Vec::with_capacity(chat.images.len());
        for (i, img) in chat.images.iter().enumerate() {
            let proc = self.images_of(&name)?;
            let (source, dims) = match img {
                ImageInput::Path(p) => (
                    p.display().to_string(),
                    image::ImageReader::open(p)
                        .and_then(|r| r.with_guessed_format())
                        .with_context(|| {
                            format!("sample {sample}, image {i}: cannot read {}", p.display())
                        })?
                        .into_dimensions(),
                ),
                ImageInput::Bytes(b) => (
                    format!("{} bytes given inline", b.len()),
                    image::ImageReader::new(Cursor::new(b))
                        .with_guessed_format()
                        .context("reading from memory")?
                        .into_dimensions(),
                ),
            };
            let (w, h) = dims
                .context("cannot decode image (PNG or JPEG expected)")
                .with_context(|| format!("sample {sample}, image {i} ({source})"))?;
            let (w, h) = (w as usize, h as usize);
            let resized = proc
                .resized(w, h)
                .with_context(|| format!("sample {sample}, image {i} ({source})"))?;
            images.push(ImageSize {
                source,
                width: w,
                height: h,
                resized_width: resized.1,
                resized_height: resized.0,
                tokens: proc.tokens(resized),
            });
        }
        let per_image: Vec<usize> = images.iter().map(|i| i.tokens).collect();
        let (_, enc) = self.tokenize(&name, &chat, &per_image)?;
        Ok(Measured {
            text: chat.text,
            tokens: enc.ids.len(),
            images,
        })
    }
}
