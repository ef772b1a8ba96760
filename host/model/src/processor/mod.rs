//! The processor: chat template, tokenizer, image preprocessing and M-RoPE
//! positions, turned into a left-padded batch of tensors for the model.

pub mod chat_template;
pub mod image;
pub mod jinja_template;
mod measure;
pub mod rope_index;
pub mod tokenizer;

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use tch::Tensor;

pub use self::chat_template::{ImageInput, Message, Part, RenderedChat};
pub use self::image::{ImageProcessor, ImageProcessorConfig, ProcessedImage};
pub use self::jinja_template::JinjaTemplate;
pub use self::measure::{ImageSize, Measured};
pub use self::rope_index::{get_rope_index, RopeIndex};
pub use self::tokenizer::QwenTokenizer;
use crate::lm::ForwardInputs;

/// A chat conversation: the messages of one sample.
pub type Conversation = Vec<Message>;

/// One conversation rendered and tokenized, its images preprocessed: a row
/// of a [`PreparedBatch`] before padding.
#[derive(Debug, Clone)]
pub struct EncodedSample {
    ids: Vec<i64>,
    assistant_mask: Vec<i64>,
    grids: Vec<[i64; 3]>,
    /// The images' patches, `patches` rows of `patch_len` floats.
    pixels: Vec<f32>,
    patches: usize,
    patch_len: usize,
    text: String,
}

impl EncodedSample {
    /// Tokens, image tokens included.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// A left-padded batch ready for the model (all tensors on the CPU).
pub struct PreparedBatch {
    /// `[B, L]` int64, left-padded with the pad token.
    pub input_ids: Tensor,
    /// `[B, L]` int64: 1 for real tokens.
    pub attention_mask: Tensor,
    /// `[N_patches, 3*T*P*P]` float32, all images of the batch in order; `None` without images.
    pub pixel_values: Option<Tensor>,
    /// `[N_images, 3]` int64.
    pub image_grid_thw: Option<Tensor>,
    /// `[3, B, L]` int64 M-RoPE positions (0 at padding).
    pub position_ids: Tensor,
    /// `[B]` int64: rotary offset of decoded tokens (position = index + delta).
    pub rope_deltas: Tensor,
    /// `[B, L]` int64: 1 on assistant tokens (content and its `<|im_end|>`), for SFT.
    pub assistant_mask: Tensor,
    /// Real (unpadded) tokens per sample.
    pub seq_lens: Vec<usize>,
    /// Images per sample.
    pub images_per_sample: Vec<usize>,
    /// The rendered (placeholder-expanded) prompt text per sample.
    pub texts: Vec<String>,
}

impl PreparedBatch {
    /// The model inputs borrowed from this batch.
    pub fn forward_inputs(&self) -> ForwardInputs<'_> {
        ForwardInputs {
            input_ids: &self.input_ids,
            attention_mask: &self.attention_mask,
            position_ids: Some(&self.position_ids),
            pixel_values: self.pixel_values.as_ref(),
            image_grid_thw: self.image_grid_thw.as_ref(),
        }
    }
}

/// Tokenizer, chat template and image processor of one model directory.
pub struct Processor {
    pub tokenizer: QwenTokenizer,
    /// `None` when the directory has no `preprocessor_config.json` (text-only models).
    pub image_processor: Option<ImageProcessor>,
    pub image_token_id: Option<i64>,
    pub spatial_merge_size: usize,
    /// The checkpoint's own chat template; `None`: the directory has none and
    /// conversations render as Qwen2.5-VL's template does ([`chat_template::render`]).
    pub chat_template: Option<JinjaTemplate>,
    /// The tokenizer's special tokens, longest first.
    special_tokens: Vec<String>,
    dir: PathBuf,
}

impl Processor {
    /// Reads `tokenizer.json`, `preprocessor_config.json` (if present), the
    /// chat template (`chat_template.jinja`, `chat_template.json` or
    /// `tokenizer_config.json`, if present) and the image token id / spatial
    /// merge size from `config.json` (if present; otherwise the tokenizer's
    /// `<|image_pad|>` and the preprocessor's merge size).
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let tokenizer = QwenTokenizer::from_file(dir.join("tokenizer.json"))?;
        let pre_path = dir.join("preprocessor_config.json");
        let image_processor = if pre_path.is_file() {
            Some(ImageProcessor::new(ImageProcessorConfig::from_file(
                &pre_path,
            )?))
        } else {
            None
        };
        let mut image_token_id = tokenizer.image_pad_id;
        let mut spatial_merge_size = image_processor.as_ref().map_or(2, |p| p.config.merge_size);
        let cfg_path = dir.join("config.json");
        if cfg_path.is_file() {
            let text = std::fs::read_to_string(&cfg_path)
                .with_context(|| format!("cannot read {}", cfg_path.display()))?;
            let cfg: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid JSON", cfg_path.display()))?;
            if let Some(v) = cfg.get("image_token_id").filter(|v| !v.is_null()) {
                image_token_id = Some(v.as_i64().with_context(|| {
                    format!(
                        "{}: key \"image_token_id\" must be an integer, got {v}",
                        cfg_path.display()
                    )
                })?);
            }
            let vocab = cfg
                .pointer("/text_config/vocab_size")
                .or_else(|| cfg.get("vocab_size"))
                .and_then(Value::as_i64);
            if let (Some(vocab), Some((max, token))) = (vocab, tokenizer.max_id()) {
                if max >= vocab {
                    bail!(
                        "{} has token ids up to {max} ({token:?}) but {} sets vocab_size = {vocab}: the model has no embedding for them (the tokenizer is not this model's)",
                        tokenizer.path().display(),
                        cfg_path.display()
                    );
                }
            }
            if let Some(v) = cfg
                .pointer("/vision_config/spatial_merge_size")
                .filter(|v| !v.is_null())
            {
                spatial_merge_size = v.as_u64().with_context(|| {
                    format!(
                        "{}: key \"vision_config.spatial_merge_size\" must be a positive integer, got {v}",
                        cfg_path.display()
                    )
                })? as usize;
            }
        }
        if let (Some(p), Some(cfg_id)) = (&image_processor, image_token_id) {
            if p.config.merge_size != spatial_merge_size {
                bail!(
                    "{}: merge_size {} differs from config.json's vision_config.spatial_merge_size {spatial_merge_size}",
                    pre_path.display(),
                    p.config.merge_size
                );
            }
            if tokenizer.image_pad_id.is_some_and(|t| t != cfg_id) {
                bail!(
                    "{}: image_token_id {cfg_id} is not the tokenizer's <|image_pad|> id {:?}",
                    cfg_path.display(),
                    tokenizer.image_pad_id
                );
            }
        }
        let chat_template = JinjaTemplate::from_dir(&dir)?;
        let mut special_tokens = tokenizer.special_tokens();
        special_tokens.sort_by_key(|t| std::cmp::Reverse(t.len()));
        Ok(Self {
            special_tokens,
            tokenizer,
            image_processor,
            image_token_id,
            spatial_merge_size,
            chat_template,
            dir,
        })
    }

    /// The directory the processor was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The first of the tokenizer's special tokens written in `text`, if
    /// any: rendered into a prompt, it would become a control token (a
    /// forged turn, an image placeholder without an image).
    pub fn special_token_in(&self, text: &str) -> Option<&str> {
        self.special_tokens
            .iter()
            .filter_map(|t| text.find(t.as_str()).map(|at| (at, t)))
            .min_by_key(|(at, t)| (*at, std::cmp::Reverse(t.len())))
            .map(|(_, t)| t.as_str())
    }

    /// Images with more pixels are refused before decoding.
    pub fn set_max_image_pixels(&mut self, max: u64) {
        if let Some(p) = self.image_processor.as_mut() {
            p.max_decode_pixels = max;
        }
    }

    /// Replaces the image resize bounds read from `preprocessor_config.json`
    /// (see [`ImageProcessorConfig::with_pixel_bounds`]); an error for a
    /// directory without an image processor.
    pub fn set_pixel_bounds(&mut self, min: Option<usize>, max: Option<usize>) -> Result<()> {
        if min.is_none() && max.is_none() {
            return Ok(());
        }
        let Some(p) = self.image_processor.as_mut() else {
            bail!(
                "{} has no preprocessor_config.json, so there is no image resolution to set",
                self.dir.display()
            );
        };
        p.config = p.config.clone().with_pixel_bounds(min, max)?;
        Ok(())
    }

    /// The image processor, for a sample that has images.
    fn images_of(&self, sample: &str) -> Result<&ImageProcessor> {
        self.image_processor.as_ref().ok_or_else(|| {
            anyhow!(
                "{sample}: has images but {} has no preprocessor_config.json",
                self.dir.display()
            )
        })
    }

    /// Reads, decodes and preprocesses image `index` of sample `sample`.
    fn load_image(&self, sample: &str, index: usize, img: &ImageInput) -> Result<ProcessedImage> {
        let proc = self.images_of(sample)?;
        let (bytes, name) = match img {
            ImageInput::Path(p) => (
                std::fs::read(p).with_context(|| {
                    format!("{sample}, image {index}: cannot read {}", p.display())
                })?,
                p.display().to_string(),
            ),
            ImageInput::Bytes(b) => (b.clone(), format!("{} bytes given inline", b.len())),
        };
        proc.process_bytes(&bytes)
            .with_context(|| format!("{sample}, image {index} ({name})"))
    }

    /// Renders, tokenizes and pads conversations; preprocesses their images and
    /// computes M-RoPE positions. `add_generation_prompt` appends
    /// `<|im_start|>assistant\n` (for generation; SFT passes full conversations
    /// and `false`). The same as [`Processor::encode`] then [`Processor::batch`].
    pub fn prepare(
        &self,
        conversations: &[Conversation],
        add_generation_prompt: bool,
    ) -> Result<PreparedBatch> {
        self.batch(&self.encode(conversations, add_generation_prompt)?)
    }

    /// Renders and tokenizes each conversation and preprocesses its images,
    /// without padding: callers that drop samples by length (or split them
    /// into micro-batches) encode once and [`Processor::batch`] what they keep.
    /// Errors name the sample by its index in `conversations`.
    pub fn encode(
        &self,
        conversations: &[Conversation],
        add_generation_prompt: bool,
    ) -> Result<Vec<EncodedSample>> {
        conversations
            .iter()
            .enumerate()
            .map(|(s, conv)| self.encode_one(conv, add_generation_prompt, &format!("sample {s}")))
            .collect()
    }

    /// [`Processor::encode`] with errors naming each conversation by
    /// `names[i]` (a sample's file and line, or its id).
    pub fn encode_named(
        &self,
        conversations: &[Conversation],
        names: &[String],
        add_generation_prompt: bool,
    ) -> Result<Vec<EncodedSample>> {
        if names.len() != conversations.len() {
            bail!(
                "{} names for {} conversations",
                names.len(),
                conversations.len()
            );
        }
        conversations
            .iter()
            .zip(names)
            .map(|(conv, name)| self.encode_one(conv, add_generation_prompt, name))
            .collect()
    }

    /// One conversation rendered, tokenized and its images preprocessed;
    /// errors begin with `name`.
    pub fn encode_one(
        &self,
        conv: &Conversation,
        add_generation_prompt: bool,
        name: &str,
    ) -> Result<EncodedSample> {
        let merge2 = self.spatial_merge_size * self.spatial_merge_size;
        let s = name;
        let chat = self.render(s, conv, add_generation_prompt)?;
        let mut grids = Vec::with_capacity(chat.images.len());
        let mut tokens_per_image = Vec::with_capacity(chat.images.len());
        let mut pixels = Vec::new();
        let mut patches = 0usize;
        let mut patch_len = 0usize;
        for (i, img) in chat.images.iter().enumerate() {
            let p = self.load_image(s, i, img)?;
            let n = p.num_patches();
            if n % merge2 != 0 {
                bail!("{s}, image {i}: {n} patches are not a multiple of {merge2}");
            }
            tokens_per_image.push(n / merge2);
            grids.push(p.grid_thw);
            patch_len = p.pixel_values.len() / n;
            patches += n;
            pixels.extend_from_slice(&p.pixel_values);
        }
        let (chat, enc) = self.tokenize(s, &chat, &tokens_per_image)?;
        let assistant_mask: Vec<i64> = enc
            .offsets
            .iter()
            .map(|(start, _)| i64::from(chat.assistant_spans.iter().any(|r| r.contains(start))))
            .collect();
        Ok(EncodedSample {
            ids: enc.ids,
            assistant_mask,
            grids,
            pixels,
            patches,
            patch_len,
            text: chat.text,
        })
    }

    /// Renders conversation `s` with the checkpoint's template (or Qwen2.5-VL's)
    /// and checks that its text has one image placeholder per image.
    fn render(
        &self,
        s: &str,
        conv: &Conversation,
        add_generation_prompt: bool,
    ) -> Result<RenderedChat> {
        let chat = match &self.chat_template {
            Some(t) => t
                .render(conv, add_generation_prompt)
                .with_context(|| s.to_string())?,
            None => chat_template::render(conv, add_generation_prompt),
        };
        // Count placeholders before decoding anything: a mismatch is the cheaper error.
        let placeholders = chat.text.matches(chat_template::IMAGE_PAD).count();
        if placeholders != chat.images.len() {
            bail!(
                "{s}: {placeholders} image placeholders ({}) in the text but {} images",
                chat_template::IMAGE_PAD,
                chat.images.len()
            );
        }
        Ok(chat)
    }

    /// Expands each image placeholder of a rendered chat to its tokens and
    /// tokenizes the text; the image tokens found must be the ones expected.
    fn tokenize(
        &self,
        s: &str,
        chat: &RenderedChat,
        tokens_per_image: &[usize],
    ) -> Result<(RenderedChat, tokenizer::Encoded)> {
        let chat = chat_template::expand_image_pads(chat, tokens_per_image)
            .with_context(|| s.to_string())?;
        if !chat.images.is_empty() && self.image_token_id.is_none() {
            bail!("{s}: has images but the tokenizer has no <|image_pad|> token");
        }
        let enc = self
            .tokenizer
            .encode_with_offsets(&chat.text)
            .with_context(|| s.to_string())?;
        if let Some(img_id) = self.image_token_id {
            let found = enc.ids.iter().filter(|&&t| t == img_id).count();
            let want: usize = tokens_per_image.iter().sum();
            if found != want {
                bail!("{s}: {found} image tokens after tokenization, expected {want}");
            }
        }
        Ok((chat, enc))
    }

    /// Left-pads encoded samples into one batch, with their images and M-RoPE
    /// positions.
    pub fn batch(&self, samples: &[EncodedSample]) -> Result<PreparedBatch> {
        if samples.is_empty() {
            bail!("no conversations to prepare");
        }
        let rows: Vec<(&[i64], &[i64])> = samples
            .iter()
            .map(|e| (e.ids.as_slice(), e.assistant_mask.as_slice()))
            .collect();
        let grids: Vec<Vec<[i64; 3]>> = samples.iter().map(|e| e.grids.clone()).collect();
        let n_patches: usize = samples.iter().map(|e| e.patches).sum();
        let row_len = samples
            .iter()
            .rev()
            .find(|e| e.patches > 0)
            .map_or(0, |e| e.patch_len);
        let mut pixels: Vec<f32> = Vec::with_capacity(n_patches * row_len);
        for e in samples {
            pixels.extend_from_slice(&e.pixels);
        }
        let texts = samples.iter().map(|e| e.text.clone()).collect();
        let b = rows.len();
        let l = rows.iter().map(|(ids, _)| ids.len()).max().unwrap_or(0);
        let pad = self.tokenizer.pad_id;
        let mut ids_rows = Vec::with_capacity(b);
        let mut attn_rows = Vec::with_capacity(b);
        let mut asst_rows = Vec::with_capacity(b);
        let mut seq_lens = Vec::with_capacity(b);
        for (ids, asst) in rows {
            let padn = l - ids.len();
            seq_lens.push(ids.len());
            let mut r = vec![pad; padn];
            r.extend_from_slice(ids);
            ids_rows.push(r);
            let mut a = vec![0i64; padn];
            a.extend(std::iter::repeat_n(1i64, ids.len()));
            attn_rows.push(a);
            let mut m = vec![0i64; padn];
            m.extend_from_slice(asst);
            asst_rows.push(m);
        }
        let rope = get_rope_index(
            &ids_rows,
            &attn_rows,
            &grids,
            self.image_token_id.unwrap_or(-1),
            self.spatial_merge_size as i64,
        )?;
        let (position_ids, rope_deltas) = rope.to_tensors();
        let to2d =
            |rows: &[Vec<i64>]| Tensor::from_slice(&rows.concat()).reshape([b as i64, l as i64]);
        let images_per_sample = grids.iter().map(Vec::len).collect();
        let all_grids: Vec<i64> = grids.iter().flatten().flatten().copied().collect();
        let (pixel_values, image_grid_thw) = if n_patches > 0 {
            (
                Some(Tensor::from_slice(&pixels).reshape([n_patches as i64, row_len as i64])),
                Some(Tensor::from_slice(&all_grids).reshape([-1, 3])),
            )
        } else {
            (None, None)
        };
        Ok(PreparedBatch {
            input_ids: to2d(&ids_rows),
            attention_mask: to2d(&attn_rows),
            pixel_values,
            image_grid_thw,
            position_ids,
            rope_deltas,
            assistant_mask: to2d(&asst_rows),
            seq_lens,
            images_per_sample,
            texts,
        })
    }
}
