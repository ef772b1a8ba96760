//! Multiple-choice reward: the reference is a letter ("B", "(B)") or the text
//! of an option; the response may answer with the letter or the option text.
//!
//! Options come from the sample's metadata key `options` (configurable), as a
//! JSON list (`["10 cm", "12 cm"]`, letters A, B, ... in order) or as lines
//! `A. 10 cm` / `(B) 12 cm` / `C: 14 cm`; without that key they are parsed
//! from the user prompt's lines of the same form.
//!
//! ```toml
//! correct = 1.0
//! wrong = 0.0
//! options_key = "options"  # metadata key holding the options
//! letters = 5              # letters accepted (A..E) when the options are unknown
//! format = "none"          # "none", "r1" or "boxed": adds a format component
//! format_value = 0.5
//! format_mismatch = 0.0
//! ```

use super::{parse_config, FormatMode};
use crate::answer::{choice_letter, extract_answer, Extractor};
use crate::types::{Completion, Sample, Score};
use crate::Reward;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "one")]
    correct: f64,
    #[serde(default)]
    wrong: f64,
    #[serde(default = "default_options_key")]
    options_key: String,
    #[serde(default = "default_letters")]
    letters: usize,
    #[serde(default = "no_format")]
    format: FormatMode,
    format_value: Option<f64>,
    #[serde(default)]
    format_mismatch: f64,
}

fn one() -> f64 {
    1.0
}
fn default_options_key() -> String {
    "options".to_owned()
}
fn default_letters() -> usize {
    5
}
fn no_format() -> FormatMode {
    FormatMode::None
}

/// Accuracy on multiple-choice questions (components "accuracy" and, if
/// configured, "format").
#[derive(Debug, Clone)]
pub struct ChoiceAccuracy {
    pub correct: f64,
    pub wrong: f64,
    pub options_key: String,
    pub letters: usize,
    pub format: FormatMode,
    pub format_value: f64,
    pub format_mismatch: f64,
}

/// Where the response's final answer is looked for when matching option text.
const TEXT_ORDER: [Extractor; 3] = [Extractor::Boxed, Extractor::AnswerTag, Extractor::Whole];

impl ChoiceAccuracy {
    /// Whether `response` picks the reference option of `sample`.
    pub fn is_correct(&self, sample: &Sample, response: &str) -> Result<bool, String> {
        let reference = sample
            .answer
            .as_deref()
            .filter(|a| !a.trim().is_empty())
            .map(super::math::reference_answer)
            .ok_or_else(|| {
                format!(
                    "sample {:?} has no reference answer (`answer` is missing or empty)",
                    sample.id
                )
            })?;
        let options = match sample.meta(&self.options_key) {
            Some(text) => parse_options(text).map_err(|e| {
                format!(
                    "sample {:?}: metadata `{}`: {e}",
                    sample.id, self.options_key
                )
            })?,
            None => options_in_prompt(&sample.text_of("user")),
        };
        let n = if options.is_empty() {
            self.letters
        } else {
            options.len()
        };
        // The reference as a letter: a bare letter, or the letter of the option it names.
        // "C. gamma" / "(C) gamma" count as C.
        let ref_letter = bare_letter(reference, n.max(self.letters))
            .or_else(|| option_line(reference).map(|(c, _)| c))
            .or_else(|| option_with_text(&options, reference));
        let Some(ref_letter) = ref_letter else {
            // Options unknown and a textual reference: compare the texts.
            return Ok(extract_answer(response, &TEXT_ORDER)
                .is_some_and(|pred| same_text(pred, reference)));
        };
        let n = n.max(letter_index(ref_letter) + 1);
        if let Some(pred) = choice_letter(response, n) {
            return Ok(pred == ref_letter);
        }
        // No letter: the response may give the option's text instead.
        Ok(
            extract_answer(response, &TEXT_ORDER).and_then(|pred| option_with_text(&options, pred))
                == Some(ref_letter),
        )
    }
}

impl Reward for ChoiceAccuracy {
    fn new(config: &str) -> Result<Self, String> {
        let c: Config = parse_config("reward-choice", config)?;
        if !(1..=26).contains(&c.letters) {
            return Err("reward-choice config: `letters` must be between 1 and 26".into());
        }
        Ok(ChoiceAccuracy {
            correct: c.correct,
            wrong: c.wrong,
            options_key: c.options_key,
            letters: c.letters,
            format: c.format,
            format_value: c.format_value.unwrap_or(c.format.default_value()),
            format_mismatch: c.format_mismatch,
        })
    }

    fn score(&self, completion: &Completion) -> Result<Score, String> {
        let response = &completion.response;
        let acc = if self.is_correct(&completion.sample, response)? {
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

fn letter_index(c: char) -> usize {
    (c as u8 - b'A') as usize
}

/// `B`, `b`, `(B)`, `B.`, `B)` as a whole string, within the first `n` letters.
fn bare_letter(s: &str, n: usize) -> Option<char> {
    let s = s.trim().trim_start_matches('(');
    let s = s.trim_end_matches(['.', ')', ':']).trim();
    let mut chars = s.chars();
    let c = chars.next()?.to_ascii_uppercase();
    (chars.next().is_none() && c.is_ascii_uppercase() && letter_index(c) < n).then_some(c)
}

/// Options from metadata: a JSON list of option texts, or lettered lines.
pub fn parse_options(text: &str) -> Result<Vec<String>, String> {
    let t = text.trim();
    if t.starts_with('[') {
        let list: Vec<serde_json::Value> =
            serde_json::from_str(t).map_err(|e| format!("not a JSON list of options: {e}"))?;
        if list.len() > 26 {
            return Err(format!("{} options; at most 26 (A..Z)", list.len()));
        }
        return Ok(list
            .into_iter()
            .map(|v| match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            })
            .collect());
    }
    let opts = options_in_prompt(t);
    if opts.is_empty() {
        return Err("expected a JSON list or lines such as \"A. text\"".into());
    }
    Ok(opts)
}

/// Lettered option lines (`A. x`, `(B) y`, `C: z`, `D) w`) in order A, B, C...;
/// stops at the first gap in the sequence.
pub fn options_in_prompt(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in text.lines() {
        let Some((letter, rest)) = option_line(line) else {
            continue;
        };
        let expected = (b'A' + out.len() as u8) as char;
        if letter == expected {
            out.push(rest.to_owned());
        } else if letter == 'A' {
            // A new list starts (e.g. an example before the real question).
            out.clear();
            out.push(rest.to_owned());
        }
        if out.len() == 26 {
            break;
        }
    }
    out
}

fn option_line(line: &str) -> Option<(char, &str)> {
    let l = line.trim_start();
    let (letter, rest) = if let Some(r) = l.strip_prefix('(') {
        let mut cs = r.chars();
        let c = cs.next()?;
        (c, cs.as_str().strip_prefix(')')?)
    } else {
        let mut cs = l.chars();
        let c = cs.next()?;
        let r = cs.as_str();
        let r = r
            .strip_prefix('.')
            .or_else(|| r.strip_prefix(')'))
            .or_else(|| r.strip_prefix(':'))?;
        (c, r)
    };
    if !letter.is_ascii_uppercase() {
        return None;
    }
    let rest = rest.trim();
    (!rest.is_empty()).then_some((letter, rest))
}

/// The letter of the option whose text is `text`.
fn option_with_text(options: &[String], text: &str) -> Option<char> {
    options
        .iter()
        .position(|o| same_text(o, text))
        .map(|i| (b'A' + i as u8) as char)
}

/// Case- and space-insensitive equality, else mathematical equivalence.
fn same_text(a: &str, b: &str) -> bool {
    let squash = |s: &str| -> String {
        s.trim()
            .trim_end_matches('.')
            .chars()
            .filter(|c| !c.is_whitespace())
            .flat_map(char::to_lowercase)
            .collect()
    };
    squash(a) == squash(b) || crate::math::equivalent(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ContentPart, Message};

    fn sample(answer: &str, prompt: &str, meta: &[(&str, &str)]) -> Sample {
        Sample {
            id: "mc1".into(),
            messages: vec![Message {
                role: "user".into(),
                content: vec![ContentPart::Text(prompt.into())],
            }],
            answer: Some(answer.into()),
            metadata: meta
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
        }
    }

    fn total(r: &ChoiceAccuracy, s: &Sample, response: &str) -> f64 {
        let c = Completion {
            sample: s.clone(),
            response: response.into(),
            response_tokens: 0,
        };
        r.score(&c).unwrap().total
    }

    const PROMPT: &str = "What is the area?\nA. 10 cm\nB. 12 cm\nC. 14 cm\nD. 16 cm";

    #[test]
    fn letter_reference_letter_or_text_response() {
        let r = ChoiceAccuracy::new("").unwrap();
        let s = sample("B", PROMPT, &[]);
        assert_eq!(total(&r, &s, "<think>..</think><answer>B</answer>"), 1.0);
        assert_eq!(total(&r, &s, "The answer is (B)."), 1.0);
        assert_eq!(total(&r, &s, "\\boxed{C}"), 0.0);
        // The option text instead of the letter.
        assert_eq!(total(&r, &s, "<answer>12 cm</answer>"), 1.0);
        assert_eq!(total(&r, &s, "<answer>14 cm</answer>"), 0.0);
    }

    #[test]
    fn text_reference_and_metadata_options() {
        let r = ChoiceAccuracy::new("").unwrap();
        let s = sample("12", "Pick one.", &[("options", r#"["10", "12", "14"]"#)]);
        assert_eq!(total(&r, &s, "<answer>B</answer>"), 1.0);
        assert_eq!(total(&r, &s, "<answer>A</answer>"), 0.0);
        assert_eq!(total(&r, &s, "\\boxed{12}"), 1.0);
        let s = sample(
            "(C) gamma",
            "Pick.",
            &[("options", "(A) alpha\n(B) beta\n(C) gamma")],
        );
        assert_eq!(total(&r, &s, "answer: C"), 1.0);
        let s = sample(
            "gamma",
            "Pick.",
            &[("options", "A: alpha\nB: beta\nC: gamma")],
        );
        assert_eq!(total(&r, &s, "<answer>(C)</answer>"), 1.0);
        assert_eq!(total(&r, &s, "<answer>Gamma</answer>"), 1.0);
    }

    #[test]
    fn unknown_options_fall_back() {
        let r = ChoiceAccuracy::new("").unwrap();
        let s = sample("D", "Which one?", &[]);
        assert_eq!(total(&r, &s, "<answer>D</answer>"), 1.0);
        assert_eq!(total(&r, &s, "<answer>E</answer>"), 0.0);
        let s = sample("Paris", "Capital of France?", &[]);
        assert_eq!(total(&r, &s, "<answer> paris </answer>"), 1.0);
    }

    #[test]
    fn format_component_and_errors() {
        let r = ChoiceAccuracy::new("format = \"r1\"\ncorrect = 2.0").unwrap();
        let s = sample("A", PROMPT, &[]);
        let c = Completion {
            sample: s.clone(),
            response: "<think>x</think><answer>A</answer>".into(),
            response_tokens: 0,
        };
        let sc = r.score(&c).unwrap();
        assert_eq!(sc.total, 2.5);
        assert_eq!(sc.component("format"), Some(0.5));
        let bad = sample("A", "q", &[("options", "[1, 2")]);
        let c = Completion { sample: bad, ..c };
        let e = r.score(&c).unwrap_err();
        assert!(e.contains("mc1") && e.contains("options"), "{e}");
        assert!(ChoiceAccuracy::new("letters = 0")
            .unwrap_err()
            .contains("letters"));
        assert!(ChoiceAccuracy::new("option_key = \"o\"")
            .unwrap_err()
            .contains("option_key"));
    }

    #[test]
    fn option_parsing() {
        assert_eq!(
            options_in_prompt("Example: A. x\nB. y\nQuestion\nA) one\nB) two\nC) three\nnote"),
            vec!["one", "two", "three"]
        );
        assert_eq!(parse_options("[1, \"b\"]").unwrap(), vec!["1", "b"]);
        assert!(parse_options("just text").is_err());
    }
}
