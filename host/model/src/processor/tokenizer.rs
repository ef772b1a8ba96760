//! `tokenizer.json` through the `tokenizers` crate, with the Qwen2.5-VL special
//! tokens looked up by name.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};

/// The tokenizer and the special token ids the processor and generation need.
pub struct QwenTokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
    /// `<|endoftext|>`: padding (Qwen2's pad token) and a stop token.
    pub pad_id: i64,
    /// `<|im_end|>`: end of a chat turn, the chat models' eos.
    pub im_end_id: i64,
    /// `<|endoftext|>`.
    pub endoftext_id: i64,
    /// `<|im_start|>`.
    pub im_start_id: i64,
    /// `<|image_pad|>`, `<|vision_start|>`, `<|vision_end|>`: absent in text-only tokenizers.
    pub image_pad_id: Option<i64>,
    pub vision_start_id: Option<i64>,
    pub vision_end_id: Option<i64>,
}

/// A token sequence with the byte span of each token in the encoded text.
pub struct Encoded {
    pub ids: Vec<i64>,
    pub offsets: Vec<(usize, usize)>,
}

impl QwenTokenizer {
    /// Loads `tokenizer.json` (a file, or a directory holding one).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let mut path = path.as_ref().to_path_buf();
        if path.is_dir() {
            path = path.join("tokenizer.json");
        }
        if !path.is_file() {
            return Err(anyhow!("tokenizer file {} not found", path.display()));
        }
        let inner = tokenizers::Tokenizer::from_file(&path)
            .map_err(|e| anyhow!("cannot load tokenizer {}: {e}", path.display()))?;
        let required = |name: &str| -> Result<i64> {
            inner.token_to_id(name).map(i64::from).with_context(|| {
                format!("tokenizer {} has no special token {name}", path.display())
            })
        };
        let endoftext_id = required("<|endoftext|>")?;
        let im_end_id = required("<|im_end|>")?;
        let im_start_id = required("<|im_start|>")?;
        let optional = |name: &str| inner.token_to_id(name).map(i64::from);
        Ok(Self {
            pad_id: endoftext_id,
            im_end_id,
            endoftext_id,
            im_start_id,
            image_pad_id: optional("<|image_pad|>"),
            vision_start_id: optional("<|vision_start|>"),
            vision_end_id: optional("<|vision_end|>"),
            inner,
            path,
        })
    }

    /// Where the tokenizer was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Id of a token by its text, e.g. `"<|im_end|>"`.
    pub fn token_id(&self, token: &str) -> Option<i64> {
        self.inner.token_to_id(token).map(i64::from)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The highest token id and its token (added tokens included).
    pub fn max_id(&self) -> Option<(i64, String)> {
        self.inner
            .get_vocab(true)
            .into_iter()
            .max_by_key(|(_, id)| *id)
            .map(|(t, id)| (i64::from(id), t))
    }

    /// The added tokens marked special (`<|im_start|>`, `<|image_pad|>`, ...):
    /// written in a text, each becomes its control token.
    pub fn special_tokens(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .inner
            .get_added_tokens_decoder()
            .into_values()
            .filter(|t| t.special)
            .map(|t| t.content)
            .filter(|c| !c.is_empty())
            .collect();
        v.sort();
        v
    }

    /// Encodes without adding special tokens (Qwen2 adds none anyway); special
    /// tokens written in the text (`<|im_start|>` ...) map to their ids.
    pub fn encode(&self, text: &str) -> Result<Vec<i64>> {
        Ok(self.encode_with_offsets(text)?.ids)
    }

    /// Like [`encode`](Self::encode), with each token's byte span in `text`.
    pub fn encode_with_offsets(&self, text: &str) -> Result<Encoded> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| anyhow!("tokenizer {}: cannot encode text: {e}", self.path.display()))?;
        Ok(Encoded {
            ids: enc.get_ids().iter().map(|&i| i64::from(i)).collect(),
            offsets: enc.get_offsets().to_vec(),
        })
    }

    /// Decodes ids to text, optionally dropping special tokens.
    pub fn decode(&self, ids: &[i64], skip_special_tokens: bool) -> Result<String> {
        let ids: Vec<u32> = ids
            .iter()
            .map(|&i| u32::try_from(i).map_err(|_| anyhow!("token id {i} out of range")))
            .collect::<Result<_>>()?;
        self.inner
            .decode(&ids, skip_special_tokens)
            .map_err(|e| anyhow!("tokenizer {}: cannot decode: {e}", self.path.display()))
    }
}
