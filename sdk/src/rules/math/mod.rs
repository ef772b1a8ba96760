//! Math accuracy reward: extract the final answer, compare it with the
//! reference by mathematical equivalence, optionally add a format component.
//!
//! ```toml
//! extract = ["boxed", "answer_tag"]  # extraction order: "boxed", "answer_tag", "last_number", "whole"
//! correct = 1.0                      # accuracy component when equivalent
//! wrong = 0.0                        # ... when not (or when no answer can be extracted)
//! format = "none"                    # "none", "r1" or "boxed": adds a format component
//! format_value = 0.5                 # format component when the format matches (default: 0.5 r1, 0.1 boxed)
//! format_mismatch = 0.0              # ... when it does not
//! ```
//!
//! The total is the sum of the components, e.g. LMM-R1's "format + accuracy":
//! `format = "r1"` (0.5 + 1.0); EasyR1's `0.9 * accuracy + 0.1 * format`:
//! `correct = 0.9`, `format = "boxed"`. The reference answer may itself be
//! wrapped as `$\boxed{60}$` (the LMM-R1 data format); the boxed content is used.

use super::{parse_config, FormatMode};
use crate::answer::{extract_answer, last_boxed, Extractor};
use crate::types::{Completion, Score};
use crate::Reward;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_extract")]
    extract: Vec<Extractor>,
    #[serde(default = "one")]
    correct: f64,
    #[serde(default)]
    wrong: f64,
    #[serde(default = "no_format")]
    format: FormatMode,
    format_value: Option<f64>,
    #[serde(default)]
    format_mismatch: f64,
}

fn default_extract() -> Vec<Extractor> {
    vec![Extractor::Boxed, Extractor::AnswerTag]
}

fn one() -> f64 {
    1.0
}

fn no_format() -> FormatMode {
    FormatMode::None
}

/// Accuracy against the reference answer (components "accuracy" and, if
/// configured, "format").
#[derive(Debug, Clone)]
pub struct MathAccuracy {
    pub extract: Vec<Extractor>,
    pub correct: f64,
    pub wrong: f64,
    pub format: FormatMode,
    pub format_value: f64,
    pub format_mismatch: f64,
}

impl MathAccuracy {
    /// Whether `response` answers `reference` correctly.
    pub fn is_correct(&self, response: &str, reference: &str) -> bool {
        let reference = reference_answer(reference);
        match extract_answer(response, &self.extract) {
            Some(pred) => crate::math::equivalent(pred, reference),
            None => false,
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
        if c.extract.is_empty() {
            return Err("reward-math config: `extract` must list at least one extractor".into());
        }
        Ok(MathAccuracy {
            extract: c.extract,
            correct: c.correct,
            wrong: c.wrong,
            format: c.format,
            format_value: c.format_value.unwrap_or(c.format.default_value()),
            format_mismatch: c.format_mismatch,
        })
    }

    fn score(&self, completion: &Completion) -> Result<Score, String> {
        let reference = completion.sample.answer.as_deref().ok_or_else(|| {
            format!(
                "sample {:?} has no reference answer (`answer`)",
                completion.sample.id
            )
        })?;
        let response = &completion.response;
        let acc = if self.is_correct(response, reference) {
            self.correct
        } else {
            self.wrong
        };
        let mut components = Vec::with_capacity(2);
        let mut total = acc;
        if self.format != FormatMode::None {
            let f = if self.format.matches(response) {
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
mod tests {
    use super::*;
    use crate::types::Sample;

    fn completion(answer: Option<&str>, response: &str) -> Completion {
        Completion {
            sample: Sample {
                id: "s7".into(),
                answer: answer.map(str::to_owned),
                ..Default::default()
            },
            response: response.to_owned(),
            response_tokens: 10,
        }
    }

    #[test]
    fn default_is_boxed_then_answer_tag() {
        let r = MathAccuracy::new("").unwrap();
        let s = r
            .score(&completion(
                Some("$\\boxed{60}$"),
                "so the answer is \\boxed{60}.",
            ))
            .unwrap();
        assert_eq!(s.total, 1.0);
        assert_eq!(s.components, vec![("accuracy".to_owned(), 1.0)]);
        // Falls back to <answer> when there is no \boxed.
        let s = r
            .score(&completion(
                Some("0.5"),
                "<think>x</think><answer>1/2</answer>",
            ))
            .unwrap();
        assert_eq!(s.total, 1.0);
        // Wrong, and no extractable answer: both `wrong`.
        assert_eq!(
            r.score(&completion(Some("3"), "\\boxed{4}")).unwrap().total,
            0.0
        );
        assert_eq!(
            r.score(&completion(Some("3"), "it is 3")).unwrap().total,
            0.0
        );
    }

    #[test]
    fn last_number_extraction_when_configured() {
        let r = MathAccuracy::new("extract = [\"last_number\"]").unwrap();
        assert_eq!(
            r.score(&completion(Some("3"), "it is 3")).unwrap().total,
            1.0
        );
    }

    #[test]
    fn format_plus_accuracy_lmm_r1() {
        let r = MathAccuracy::new("format = \"r1\"").unwrap();
        let good = "<think>6*10</think><answer>60</answer>";
        let s = r.score(&completion(Some("60"), good)).unwrap();
        assert_eq!(s.total, 1.5);
        assert_eq!(
            s.components,
            vec![("format".to_owned(), 0.5), ("accuracy".to_owned(), 1.0)]
        );
        // Right answer, broken format.
        let s = r
            .score(&completion(Some("60"), "<answer>60</answer>"))
            .unwrap();
        assert_eq!(s.total, 1.0);
        assert_eq!(s.component("format"), Some(0.0));
    }

    #[test]
    fn easyr1_weights() {
        let r = MathAccuracy::new("correct = 0.9\nformat = \"boxed\"").unwrap();
        let s = r
            .score(&completion(Some("2"), "<think>1+1</think> \\boxed{2}"))
            .unwrap();
        assert!((s.total - 1.0).abs() < 1e-12, "{s:?}");
        let s = r.score(&completion(Some("2"), "\\boxed{3}")).unwrap();
        assert_eq!(s.total, 0.0);
    }

    #[test]
    fn missing_reference_is_an_error_naming_the_sample() {
        let r = MathAccuracy::new("").unwrap();
        let e = r.score(&completion(None, "\\boxed{1}")).unwrap_err();
        assert!(e.contains("s7") && e.contains("answer"), "{e}");
        // One bad item does not sink the batch.
        let out = r.score_batch(&[completion(None, "x"), completion(Some("1"), "\\boxed{1}")]);
        assert!(out[0].is_err());
        assert_eq!(out[1].as_ref().unwrap().total, 1.0);
    }

    #[test]
    fn config_errors() {
        let e = MathAccuracy::new("extract = [\"boxd\"]").unwrap_err();
        assert!(e.contains("boxd"), "{e}");
        let e = MathAccuracy::new("extract = []").unwrap_err();
        assert!(e.contains("extract"), "{e}");
        let e = MathAccuracy::new("corect = 1.0").unwrap_err();
        assert!(e.contains("corect"), "{e}");
    }
}
