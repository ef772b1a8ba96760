//! Reward plugin for loader-synthetic's worked traces: LMM-R1's format term,
//! an accuracy term that counts only when the answer follows from a correct
//! trace, and partial credit for each check of the trace.
//!
//! A format + accuracy reward pays a right answer reached by a wrong trace
//! (`blue=0 0+6=7` -> 7) as much as an honest one, and a policy that learns
//! such fudged sums unlearns the arithmetic the traces share. Here:
//!
//! - `format` (0.5): the response is `<think>..</think><answer>..</answer>`
//!   (LMM-R1's rule);
//! - `supported` (1): the answer equals the reference *and* every check of
//!   the trace below passes: the answer follows from a trace that is right
//!   for the question asked (a count of the other colour, or of misread
//!   cells, that happens to give the right number earns nothing here);
//! - `trace` (0.5): that weight times the fraction of the trace's checks
//!   that pass (below), so a closer trace earns more even when the answer is
//!   wrong;
//! - `accuracy` (logged, not added): the answer equals the reference,
//!   however it was reached; evaluation counts a completion correct by it,
//!   so held-out accuracy means the same as under reward-math.
//!
//! Checks, from the sample's metadata as loader-synthetic writes it:
//!
//! - arithmetic (`operands`, `ops`): one check per step of the left-to-right
//!   solution (step `i` is `a op b = c` with `a` the previous result, `op`
//!   and `b` the expression's, `c` right), one that there is no extra step,
//!   one that the answer is the last step's result;
//! - shapes-count (`cells`, `color`, `add`; trace `see red . blue red,
//!   red=2 2+3=5`): the listed cells are the image's (credit per cell), the
//!   counted colour is the one asked, the count is that of the listed cells,
//!   the step adds the question's number to the count and is right, the
//!   answer is its result.
//!
//! ```toml
//! format = 0.5
//! supported = 1.0
//! trace = 0.5
//! ```

use lmmhost_sdk::answer::{is_r1_format, tag_content};
use lmmhost_sdk::rules::parse_config;
use lmmhost_sdk::{Completion, Reward, Score};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "half")]
    format: f64,
    #[serde(default = "one")]
    supported: f64,
    #[serde(default = "half")]
    trace: f64,
}

fn half() -> f64 {
    0.5
}

fn one() -> f64 {
    1.0
}

/// The rule (component weights).
#[derive(Debug, Clone)]
pub struct TraceReward {
    pub format: f64,
    pub supported: f64,
    pub trace: f64,
}

/// One `a+b=c` / `a-b=c` step as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Step {
    lhs: u64,
    op: char,
    rhs: u64,
    value: u64,
}

impl Step {
    fn parse(word: &str) -> Option<Step> {
        let (expr, value) = word.split_once('=')?;
        let at = expr.find(['+', '-'])?;
        let (lhs, rest) = expr.split_at(at);
        let op = rest.chars().next()?;
        Some(Step {
            lhs: number(lhs)?,
            op,
            rhs: number(&rest[1..])?,
            value: number(value)?,
        })
    }

    fn is_right(&self) -> bool {
        match self.op {
            '+' => self.lhs.checked_add(self.rhs) == Some(self.value),
            _ => self.lhs.checked_sub(self.rhs) == Some(self.value),
        }
    }
}

/// A plain decimal number (no sign, at most 9 digits).
fn number(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 9 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The credits of the trace checks, each in 0..=1.
#[derive(Debug, PartialEq)]
struct Checks {
    credits: Vec<f64>,
}

impl Checks {
    fn fraction(&self) -> f64 {
        self.credits.iter().sum::<f64>() / self.credits.len() as f64
    }

    fn all_pass(&self) -> bool {
        self.credits.iter().all(|&c| c == 1.0)
    }
}

fn pass(ok: bool) -> f64 {
    if ok {
        1.0
    } else {
        0.0
    }
}

fn meta<'a>(c: &'a Completion, key: &str) -> Result<&'a str, String> {
    c.sample.meta(key).ok_or_else(|| {
        format!(
            "sample {:?}: reward-trace needs metadata `{key}` (loader-synthetic's arithmetic or \
             shapes-count task)",
            c.sample.id
        )
    })
}

fn bad_meta(c: &Completion, key: &str, value: &str) -> String {
    format!(
        "sample {:?}: metadata `{key}` = {value:?} is not what loader-synthetic writes",
        c.sample.id
    )
}

/// Arithmetic: `operands` "3,4,2", `ops` "+-".
fn arithmetic_checks(c: &Completion, think: &str, answer: Option<u64>) -> Result<Checks, String> {
    let raw = meta(c, "operands")?;
    let operands: Vec<u64> = raw
        .split(',')
        .map(number)
        .collect::<Option<_>>()
        .ok_or_else(|| bad_meta(c, "operands", raw))?;
    let ops: Vec<char> = meta(c, "ops")?.chars().collect();
    if operands.len() != ops.len() + 1 {
        return Err(bad_meta(c, "ops", &ops.iter().collect::<String>()));
    }
    let written: Vec<Step> = think.split_whitespace().filter_map(Step::parse).collect();
    let mut credits = Vec::with_capacity(ops.len() + 2);
    let mut acc = operands[0];
    for (i, (&op, &rhs)) in ops.iter().zip(&operands[1..]).enumerate() {
        let value = if op == '+' {
            acc + rhs
        } else {
            acc.saturating_sub(rhs)
        };
        let want = Step {
            lhs: acc,
            op,
            rhs,
            value,
        };
        credits.push(pass(written.get(i) == Some(&want)));
        acc = value;
    }
    credits.push(pass(written.len() == ops.len()));
    let last = written.last().map(|s| s.value);
    credits.push(pass(last.is_some() && last == answer));
    Ok(Checks { credits })
}

/// Shapes-count: `cells` "R.BR", `color` "red", `add` "3".
fn count_checks(c: &Completion, think: &str, answer: Option<u64>) -> Result<Checks, String> {
    let cells = meta(c, "cells")?;
    let color = meta(c, "color")?;
    let add_raw = meta(c, "add")?;
    let add = number(add_raw).ok_or_else(|| bad_meta(c, "add", add_raw))?;
    let truth: Vec<&str> = cells
        .chars()
        .map(|ch| match ch {
            'R' => Ok("red"),
            'B' => Ok("blue"),
            '.' => Ok("."),
            _ => Err(bad_meta(c, "cells", cells)),
        })
        .collect::<Result<_, _>>()?;

    // `see red . blue red, red=2 2+3=5`
    let (listing, rest) = match think.trim_start().strip_prefix("see ") {
        Some(t) => t.split_once(',').unwrap_or((t, "")),
        None => ("", think),
    };
    let listed: Vec<&str> = listing.split_whitespace().collect();
    let cells_right = truth
        .iter()
        .enumerate()
        .filter(|&(i, t)| listed.get(i) == Some(t))
        .count();
    let cell_credit = if listed.len() == truth.len() {
        cells_right as f64 / truth.len() as f64
    } else {
        0.0
    };
    let mut words = rest.split_whitespace();
    let counted = words.next().and_then(|w| {
        let (name, n) = w.split_once('=')?;
        Some((name, number(n)?))
    });
    let steps: Vec<Step> = words.filter_map(Step::parse).collect();
    let step = (steps.len() == 1).then(|| steps[0]);

    let colour_asked = counted.is_some_and(|(name, _)| name == color);
    let count_consistent = counted.is_some_and(|(name, n)| {
        (name == "red" || name == "blue")
            && listed.len() == truth.len()
            && listed.iter().filter(|&&w| w == name).count() as u64 == n
    });
    let step_right = match (counted, step) {
        (Some((_, n)), Some(s)) => s.lhs == n && s.op == '+' && s.rhs == add && s.is_right(),
        _ => false,
    };
    let answer_follows = step.is_some_and(|s| Some(s.value) == answer);
    Ok(Checks {
        credits: vec![
            cell_credit,
            pass(colour_asked),
            pass(count_consistent),
            pass(step_right),
            pass(answer_follows),
        ],
    })
}

impl TraceReward {
    fn checks(&self, c: &Completion, answer: Option<u64>) -> Result<Checks, String> {
        let think = tag_content(&c.response, "think").unwrap_or("");
        if c.sample.meta("operands").is_some() {
            arithmetic_checks(c, think, answer)
        } else if c.sample.meta("cells").is_some() && c.sample.meta("color").is_some() {
            count_checks(c, think, answer)
        } else {
            Err(format!(
                "sample {:?}: reward-trace checks loader-synthetic's arithmetic (metadata \
                 `operands`, `ops`) and shapes-count (`cells`, `color`, `add`) samples; this one \
                 has neither",
                c.sample.id
            ))
        }
    }
}

impl Reward for TraceReward {
    fn new(config: &str) -> Result<Self, String> {
        let c: Config = parse_config("reward-trace", config)?;
        for (key, v) in [
            ("format", c.format),
            ("supported", c.supported),
            ("trace", c.trace),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(format!(
                    "reward-trace config: `{key}` = {v} must be a finite number >= 0"
                ));
            }
        }
        Ok(TraceReward {
            format: c.format,
            supported: c.supported,
            trace: c.trace,
        })
    }

    fn score(&self, c: &Completion) -> Result<Score, String> {
        let reference = c
            .sample
            .answer
            .as_deref()
            .map(str::trim)
            .and_then(number)
            .ok_or_else(|| {
                format!(
                    "sample {:?}: reward-trace needs a whole-number reference answer, got {:?}",
                    c.sample.id, c.sample.answer
                )
            })?;
        let answer = tag_content(&c.response, "answer").and_then(|a| number(a.trim()));
        let checks = self.checks(c, answer)?;
        let right = answer == Some(reference);
        let format = self.format * pass(is_r1_format(&c.response));
        let supported = self.supported * pass(right && checks.all_pass());
        let trace = self.trace * checks.fraction();
        Ok(Score {
            total: format + supported + trace,
            components: vec![
                ("format".to_owned(), format),
                ("supported".to_owned(), supported),
                ("trace".to_owned(), trace),
                ("accuracy".to_owned(), pass(right)),
            ],
        })
    }
}

lmmhost_sdk::export_reward!(TraceReward);

#[cfg(test)]
mod tests;
