//! Example reward plugin in Rust: the R1 format and a numeric answer.
//!
//! The same rule is implemented in Python (`../python-reward/app.py`) and
//! JavaScript (`../js-reward/reward.js`); `tests/polyglot.rs` checks that the
//! three components agree bit for bit. The rule (docs/plugins.md, "The example
//! rule") is defined on ASCII only, so that every language reads it the same:
//!
//! - whitespace means the four ASCII characters space, tab, LF and CR;
//! - format: after trimming whitespace at both ends, the text starts with
//!   `<think>`, ends with `</answer>`, holds each of the four tags `<think>`,
//!   `</think>`, `<answer>`, `</answer>` exactly once, and only whitespace
//!   (or nothing) lies between `</think>` and `<answer>`;
//! - answer: the text between the last `<answer>` and the first `</answer>`
//!   after it, trimmed; none when either tag is missing;
//! - number: `[+-]? digits [. digits]` with ASCII digits, at least one digit,
//!   either side of the point may be empty (`5.`, `.5`); no exponent, no
//!   thousands separators; two numbers are equal when their decimal values
//!   are equal (compared exactly, as canonical decimal strings, not floats);
//! - score: `format = format_weight` if the format matches else 0,
//!   `accuracy = accuracy_weight` if the answer is a number equal to the
//!   reference else 0, `total = format + accuracy`;
//! - errors (per item): a sample without a reference answer, or whose
//!   reference is not a number by the grammar above.
//!
//! ```toml
//! format_weight = 0.5     # LMM-R1's format reward
//! accuracy_weight = 1.0
//! ```

use lmmhost_sdk::{Completion, Reward, Score};
use serde::Deserialize;

/// The example rule, configured.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumericR1 {
    #[serde(default = "default_format_weight")]
    pub format_weight: f64,
    #[serde(default = "default_accuracy_weight")]
    pub accuracy_weight: f64,
}

fn default_format_weight() -> f64 {
    0.5
}

fn default_accuracy_weight() -> f64 {
    1.0
}

const WS: &[char] = &[' ', '\t', '\n', '\r'];

fn trim_ws(s: &str) -> &str {
    s.trim_matches(WS)
}

/// The R1 format check of the example rule (ASCII whitespace only).
pub fn is_r1_format(text: &str) -> bool {
    let t = trim_ws(text);
    if !t.starts_with("<think>") || !t.ends_with("</answer>") {
        return false;
    }
    let once = |tag: &str| t.matches(tag).count() == 1;
    if !["<think>", "</think>", "<answer>", "</answer>"]
        .into_iter()
        .all(once)
    {
        return false;
    }
    // Each tag is present exactly once, so `find` is its only position.
    let (Some(close_think), Some(open_answer)) = (t.find("</think>"), t.find("<answer>")) else {
        return false;
    };
    let gap_start = close_think + "</think>".len();
    open_answer >= gap_start && trim_ws(&t[gap_start..open_answer]).is_empty()
}

/// The text between the last `<answer>` and the first `</answer>` after it, trimmed.
pub fn answer_content(text: &str) -> Option<&str> {
    let start = text.rfind("<answer>")? + "<answer>".len();
    let len = text[start..].find("</answer>")?;
    Some(trim_ws(&text[start..start + len]))
}

/// The canonical decimal form of `s` (`-0012.50` -> `-12.5`, `-0.0` -> `0`),
/// or `None` when `s` (trimmed) is not a number by the rule's grammar.
pub fn canonical_number(s: &str) -> Option<String> {
    let s = trim_ws(s);
    let (negative, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (int, frac) = match body.split_once('.') {
        Some((i, f)) => (i, f),
        None => (body, ""),
    };
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if int.len() + frac.len() == 0 || !digits(int) || !digits(frac) {
        return None;
    }
    let int = int.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    if int.is_empty() && frac.is_empty() {
        return Some("0".to_owned());
    }
    let sign = if negative { "-" } else { "" };
    let int = if int.is_empty() { "0" } else { int };
    Some(if frac.is_empty() {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    })
}

impl Reward for NumericR1 {
    fn new(config: &str) -> Result<Self, String> {
        let rule: NumericR1 = lmmhost_sdk::rules::parse_config("example-rust-reward", config)?;
        for (key, v) in [
            ("format_weight", rule.format_weight),
            ("accuracy_weight", rule.accuracy_weight),
        ] {
            if !v.is_finite() {
                return Err(format!(
                    "example-rust-reward config: `{key}` must be a finite number"
                ));
            }
        }
        Ok(rule)
    }

    fn score(&self, c: &Completion) -> Result<Score, String> {
        let id = &c.sample.id;
        let Some(reference) = c.sample.answer.as_deref() else {
            return Err(format!("sample `{id}`: no reference answer"));
        };
        let Some(reference) = canonical_number(reference) else {
            return Err(format!(
                "sample `{id}`: reference answer `{reference}` is not a number"
            ));
        };
        let format = if is_r1_format(&c.response) {
            self.format_weight
        } else {
            0.0
        };
        let correct = answer_content(&c.response)
            .and_then(canonical_number)
            .is_some_and(|a| a == reference);
        let accuracy = if correct { self.accuracy_weight } else { 0.0 };
        Ok(Score {
            total: format + accuracy,
            components: vec![("format".into(), format), ("accuracy".into(), accuracy)],
        })
    }
}

lmmhost_sdk::export_reward!(NumericR1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_compare_as_decimals() {
        for (a, b) in [
            ("42", "42"),
            ("-0012.50", "-12.5"),
            ("-0.0", "0"),
            ("+.5", "0.5"),
            ("5.", "5"),
            (" \t7\n", "7"),
        ] {
            assert_eq!(canonical_number(a).as_deref(), Some(b), "{a}");
        }
        for bad in [
            "", ".", "-", "1e3", "1,000", "١٢", "４２", "1.2.3", "0x10", "\u{a0}1",
        ] {
            assert_eq!(canonical_number(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn format_needs_each_tag_once_and_only_whitespace_between() {
        assert!(is_r1_format(" <think>a</think>\n<answer>1</answer>\t"));
        assert!(!is_r1_format("<think>a</think>x<answer>1</answer>"));
        assert!(!is_r1_format(
            "<think>a</think><answer>1</answer><answer>2</answer>"
        ));
        assert!(!is_r1_format(
            "<answer>1</answer><think>a</think><answer>1</answer>"
        ));
        assert!(!is_r1_format("\u{a0}<think>a</think><answer>1</answer>"));
    }

    #[test]
    fn scores_and_errors() {
        let rule = NumericR1::new("").unwrap();
        let mut c = Completion {
            response: "<think>6*7</think><answer> 42.0 </answer>".into(),
            ..Default::default()
        };
        c.sample.id = "s1".into();
        c.sample.answer = Some("42".into());
        let s = rule.score(&c).unwrap();
        assert_eq!(
            (s.total, s.components[0].1, s.components[1].1),
            (1.5, 0.5, 1.0)
        );
        c.sample.answer = Some("forty-two".into());
        let e = rule.score(&c).unwrap_err();
        assert_eq!(
            e,
            "sample `s1`: reference answer `forty-two` is not a number"
        );
        assert!(NumericR1::new("format_weigth = 1")
            .unwrap_err()
            .contains("format_weigth"));
        assert!(NumericR1::new("format_weight = nan")
            .unwrap_err()
            .contains("finite"));
    }
}
