//! Math accuracy reward: extract the final answer, judge it against the
//! reference, optionally add a format component. A `preset` reproduces the
//! verifier of a known recipe; every other key overrides the preset.
//!
//! ```toml
//! preset = "strict"        # strict (default), math-verify, lmm-r1, easyr1, r1v, dapo
//! extract = ["boxed", "answer_tag"]  # boxed, answer_tag, first_answer_tag, last_number, whole,
//!                          # math_verify, math_verify_latex, answer_line
//! think = false            # also read answers inside <think>..</think>
//! boxes = "last"           # several \boxed: "last", or "run" (Math-Verify's set)
//! tail_chars = 0           # only the last N characters (DAPO: 300)
//! reference = "boxed_or_whole"  # or "math_verify": extract the reference like the response
//! compare = "equivalent"   # equivalent, math_verify, mathruler, dapo
//! number_words = true      # a spelled-out answer ("seven") counts as the number
//! correct = 1.0            # accuracy component when right
//! wrong = 0.0              # ... when wrong or no answer found
//! format = "none"          # none, r1 (LMM-R1), r1_spaced (R1-V), boxed (EasyR1)
//! format_value = 0.5       # format component when the format matches
//! format_mismatch = 0.0    # ... when it does not
//! ```
//!
//! The total is accuracy + format. Presets (docs/rewards.md):
//!
//! | preset | extract | think | compare | accuracy | format |
//! |---|---|---|---|---|---|
//! | `strict` | boxed, answer_tag | no | equivalent, number words | 1 / 0 | none |
//! | `math-verify` | math_verify, boxes as a run | yes | math_verify | 1 / 0 | none |
//! | `lmm-r1` | math_verify_latex | yes | equivalent | 1 / 0 | r1, 0.5 |
//! | `easyr1` | boxed | yes | mathruler | 0.9 / 0 | boxed, 0.1 |
//! | `r1v` | first_answer_tag, whole | yes | mathruler | 0.5 / 0 | r1_spaced, 0.5 |
//! | `dapo` | answer_line (last 300 chars) | yes | dapo | 1 / -1 | none |
//!
//! A sample may carry several acceptable answers in the `answers` metadata
//! (a JSON list, e.g. from verl's list-valued `ground_truth`): any of them counts.

mod compare;
mod extract;
pub mod mv;

pub use compare::{dapo_normalize, Compare};
pub use extract::{answer_line, extract, Boxes, Extract, Scope};

use super::{parse_config, FormatMode};
use crate::answer::last_boxed;
use crate::types::{Completion, Score};
use crate::Reward;
use serde::Deserialize;

/// The presets, named as in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Preset {
    #[serde(rename = "strict")]
    Strict,
    #[serde(rename = "math-verify")]
    MathVerify,
    #[serde(rename = "lmm-r1")]
    LmmR1,
    #[serde(rename = "easyr1")]
    EasyR1,
    #[serde(rename = "r1v")]
    R1v,
    #[serde(rename = "dapo")]
    Dapo,
}

impl Preset {
    pub const ALL: [Preset; 6] = [
        Preset::Strict,
        Preset::MathVerify,
        Preset::LmmR1,
        Preset::EasyR1,
        Preset::R1v,
        Preset::Dapo,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Preset::Strict => "strict",
            Preset::MathVerify => "math-verify",
            Preset::LmmR1 => "lmm-r1",
            Preset::EasyR1 => "easyr1",
            Preset::R1v => "r1v",
            Preset::Dapo => "dapo",
        }
    }

    /// The rule this preset configures.
    pub fn rule(self) -> MathAccuracy {
        let strict = MathAccuracy {
            extract: vec![Extract::Boxed, Extract::AnswerTag],
            scope: Scope {
                think: false,
                tail_chars: 0,
                boxes: Boxes::Last,
            },
            reference: Reference::BoxedOrWhole,
            compare: Compare::Equivalent,
            number_words: true,
            correct: 1.0,
            wrong: 0.0,
            format: FormatMode::None,
            format_value: 0.0,
            format_mismatch: 0.0,
        };
        let peer = Scope {
            think: true,
            ..strict.scope
        };
        // The verifiers reproduced here read no spelled-out numbers.
        let strict = MathAccuracy {
            number_words: self == Preset::Strict,
            ..strict
        };
        match self {
            Preset::Strict => strict,
            Preset::MathVerify => MathAccuracy {
                extract: vec![Extract::MathVerify],
                scope: Scope {
                    boxes: Boxes::Run,
                    ..peer
                },
                compare: Compare::MathVerify,
                ..strict
            },
            Preset::LmmR1 => MathAccuracy {
                extract: vec![Extract::MathVerifyLatex],
                scope: peer,
                format: FormatMode::R1,
                format_value: 0.5,
                ..strict
            },
            Preset::EasyR1 => MathAccuracy {
                extract: vec![Extract::Boxed],
                scope: peer,
                compare: Compare::Mathruler,
                correct: 0.9,
                format: FormatMode::Boxed,
                format_value: 0.1,
                ..strict
            },
            Preset::R1v => MathAccuracy {
                extract: vec![Extract::FirstAnswerTag, Extract::Whole],
                scope: peer,
                compare: Compare::Mathruler,
                correct: 0.5,
                format: FormatMode::R1Spaced,
                format_value: 0.5,
                ..strict
            },
            Preset::Dapo => MathAccuracy {
                extract: vec![Extract::AnswerLine],
                scope: Scope {
                    tail_chars: 300,
                    ..peer
                },
                compare: Compare::Dapo,
                wrong: -1.0,
                ..strict
            },
        }
    }
}

/// How the reference answer is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reference {
    /// The content of a `\boxed{}` in it (`$\boxed{60}$`), else all of it.
    BoxedOrWhole,
    /// Math-Verify's extraction (as `parse(gold)` does), falling back to
    /// `boxed_or_whole` when it finds nothing (a bare `x^2+1`).
    MathVerify,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    preset: Option<Preset>,
    extract: Option<Vec<Extract>>,
    think: Option<bool>,
    boxes: Option<Boxes>,
    tail_chars: Option<usize>,
    reference: Option<Reference>,
    compare: Option<Compare>,
    number_words: Option<bool>,
    correct: Option<f64>,
    wrong: Option<f64>,
    format: Option<FormatMode>,
    format_value: Option<f64>,
    format_mismatch: Option<f64>,
}

/// Accuracy against the reference answer (components "accuracy" and, if
/// configured, "format").
#[derive(Debug, Clone)]
pub struct MathAccuracy {
    pub extract: Vec<Extract>,
    pub scope: Scope,
    pub reference: Reference,
    pub compare: Compare,
    pub number_words: bool,
    pub correct: f64,
    pub wrong: f64,
    pub format: FormatMode,
    pub format_value: f64,
    pub format_mismatch: f64,
}

impl MathAccuracy {
    /// Whether `response` answers `reference` correctly.
    pub fn is_correct(&self, response: &str, reference: &str) -> bool {
        let Some(pred) = extract(response, &self.extract, self.scope) else {
            return false;
        };
        let reference = match self.reference {
            Reference::BoxedOrWhole => std::borrow::Cow::Borrowed(reference_answer(reference)),
            Reference::MathVerify => mv::extract(reference, mv::MvConfig::DEFAULT)
                .filter(|v| !v.is_empty())
                .map(|v| std::borrow::Cow::Owned(v.join(", ")))
                .unwrap_or(std::borrow::Cow::Borrowed(reference_answer(reference))),
        };
        if self.number_words {
            if let Some(n) = crate::math::number_from_words(&pred) {
                return self.compare.judge(&n.to_string(), &reference);
            }
        }
        self.compare.judge(&pred, &reference)
    }

    fn accuracy(&self, completion: &Completion, reference: &str) -> f64 {
        let response = &completion.response;
        let mut right = self.is_correct(response, reference);
        if !right {
            // Several acceptable answers (verl's list ground truths).
            if let Some((_, list)) = completion
                .sample
                .metadata
                .iter()
                .find(|(k, _)| k == "answers")
            {
                if let Ok(all) = serde_json::from_str::<Vec<String>>(list) {
                    right = all.iter().any(|a| self.is_correct(response, a));
                }
            }
        }
        if right {
            self.correct
        } else {
            self.wrong
        }
    }
}

/// The reference without a `$\boxed{..}$` wrapper.
pub(crate) fn reference_answer(reference: &str) -> &str {
    last_boxed(reference).unwrap_or(reference).trim()
}

impl Reward for MathAccuracy {
    fn new(config: &str) -> Result<Self, String> {
        let c: Config = parse_config("reward-math", config)?;
        let mut r = c.preset.unwrap_or(Preset::Strict).rule();
        if let Some(e) = c.extract {
            if e.is_empty() {
                return Err(
                    "reward-math config: `extract` must list at least one extractor".into(),
                );
            }
            r.extract = e;
        }
        if let Some(f) = c.format {
            r.format = f;
            r.format_value = f.default_value();
        }
        r.scope.think = c.think.unwrap_or(r.scope.think);
        r.scope.boxes = c.boxes.unwrap_or(r.scope.boxes);
        r.scope.tail_chars = c.tail_chars.unwrap_or(r.scope.tail_chars);
        r.reference = c.reference.unwrap_or(r.reference);
        r.compare = c.compare.unwrap_or(r.compare);
        r.number_words = c.number_words.unwrap_or(r.number_words);
        r.correct = c.correct.unwrap_or(r.correct);
        r.wrong = c.wrong.unwrap_or(r.wrong);
        r.format_value = c.format_value.unwrap_or(r.format_value);
        r.format_mismatch = c.format_mismatch.unwrap_or(r.format_mismatch);
        Ok(r)
    }

    fn score(&self, completion: &Completion) -> Result<Score, String> {
        let reference = completion
            .sample
            .answer
            .as_deref()
            .filter(|a| !a.trim().is_empty())
            .ok_or_else(|| {
                format!(
                    "sample {:?} has no reference answer (`answer` is missing or empty)",
                    completion.sample.id
                )
            })?;
        let acc = self.accuracy(completion, reference);
        let mut components = Vec::with_capacity(2);
        let mut total = acc;
        if self.format != FormatMode::None {
            let f = if self.format.matches(&completion.response) {
                self.format_value
            } else {
                self.format_mismatch
            };
            total += f;
            components.push(("format".to_owned(), f));
        }
        components.push(("accuracy".to_owned(), acc));
        Ok(Score { total, components })
    }
}

#[cfg(test)]
mod tests;
