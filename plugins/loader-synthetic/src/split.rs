//! The train / eval partition. A problem belongs to exactly one split, decided
//! by a fixed hash of its canonical text, independent of the seed, `len` and
//! the task knobs: any train config and any eval config are disjoint.

use serde::Deserialize;

use crate::rng::hash_str;

/// One problem in `EVAL_MODULUS` goes to eval.
pub const EVAL_MODULUS: u64 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    #[default]
    Train,
    Eval,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Eval => "eval",
        }
    }

    /// The split a problem belongs to. `key` is the canonical problem text
    /// prefixed by its family (e.g. `grid:2x2:R.BR`), so that problems of
    /// different families never collide.
    pub fn of(key: &str) -> Split {
        if hash_str(&format!("lmmhost-synthetic/v1/{key}")).is_multiple_of(EVAL_MODULUS) {
            Split::Eval
        } else {
            Split::Train
        }
    }
}
