//! Math-Verify's answer extraction (huggingface/Math-Verify `parser.py`,
//! default `LatexExtractionConfig` and `ExprExtractionConfig`), re-stated
//! as a byte scanner: candidates are found by priority, and within a
//! priority the one ending last wins.
//!
//! | priority | candidates |
//! |---|---|
//! | 0 (or 50) | `\boxed{..}`: the trailing run of boxes joined into a set when they sit within 10 characters, or within 70 with `and`/`or`/`,`/`;` between them and different contents; a `$..$` holding boxes gives all of them |
//! | 50 | `final answer ... is X` |
//! | 100 | `answer:` then X within 50 characters |
//! | 200 | `answer` then X within 50 characters (numbers: or after the last `=` within 100) |
//! | 300 | any X (only `without_anchor`) |
//!
//! X is a LaTeX environment (`$$..$$`, `\[..\]`, `$..$`, `\(..\)`,
//! ` [..] `, a bare `\frac{a}{b}` of numbers; up to six joined by `,`,
//! `and`, `or` become a set; a `%` after it makes it a percentage) or, with
//! `expr`, a number (thousands separators, decimal commas, currency signs,
//! percent words) or an arithmetic expression such as `1/2`.
//!
//! Only the last [`WINDOW`] bytes of a response are scanned, and each
//! environment's content is capped, so a hostile response costs linear time.

mod boxes;
mod latex;
mod numbers;

use boxes::boxed;
pub use boxes::boxed_run;
use latex::chain_at;
use numbers::{number_or_expr_at, numbers};

/// Which of Math-Verify's extraction targets, and how anchored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MvConfig {
    /// LaTeX environments (`LatexExtractionConfig`).
    pub latex: bool,
    /// Plain numbers and expressions (`ExprExtractionConfig`).
    pub expr: bool,
    /// Also take an X that no anchor ("answer", "final answer is") precedes.
    pub without_anchor: bool,
    /// `\boxed` at priority 0 (before "final answer is") instead of 50.
    pub boxed_first: bool,
    /// Math-Verify's default normalization repairs malformed LaTeX
    /// (`\sqrt3`, `\frac12`, an unclosed last box). Without it (LMM-R1
    /// turns it off) such an answer does not parse, and the first match
    /// is the only one tried: nothing is extracted.
    pub repair: bool,
}

impl MvConfig {
    /// `math_verify.parse` with its defaults.
    pub const DEFAULT: MvConfig = MvConfig {
        latex: true,
        expr: true,
        without_anchor: true,
        boxed_first: false,
        repair: true,
    };
    /// LMM-R1's `verify_math`: LaTeX only, boxed first, anchors required.
    pub const LMM_R1: MvConfig = MvConfig {
        latex: true,
        expr: false,
        without_anchor: false,
        boxed_first: true,
        repair: false,
    };
}

/// How much of the end of a response is scanned.
pub const WINDOW: usize = 100_000;

struct Cand {
    prio: u16,
    start: usize,
    end: usize,
    values: Vec<String>,
    /// The run ends in a box that never closes.
    unclosed: bool,
}

impl Cand {
    fn new(prio: u16, start: usize, end: usize, values: Vec<String>) -> Cand {
        Cand {
            prio,
            start,
            end,
            values,
            unclosed: false,
        }
    }
}

/// The answer Math-Verify would extract: one element, or several (a set).
pub fn extract(text: &str, cfg: MvConfig) -> Option<Vec<String>> {
    let mut from = text.len().saturating_sub(WINDOW);
    while !text.is_char_boundary(from) {
        from += 1;
    }
    let t = &text[from..];
    let mut cands = Vec::new();
    let boxed_prio = if cfg.boxed_first { 0 } else { 50 };
    // LaTeX and plain expressions are separate patterns in Math-Verify:
    // each finds its own matches, and all compete on where they end.
    let latex = MvConfig { expr: false, ..cfg };
    let expr = MvConfig {
        latex: false,
        ..cfg
    };
    for target in [latex, expr].into_iter().filter(|c| c.latex || c.expr) {
        anchored(t, "final answer", 50, true, target, &mut cands);
        anchored(t, "answer:", 100, false, target, &mut cands);
        anchored(t, "answer", 200, false, target, &mut cands);
    }
    if cfg.latex {
        boxed(t, boxed_prio, &mut cands);
        if cfg.without_anchor {
            let mut i = 0;
            while i < t.len() {
                match chain_at(t, i) {
                    Some((end, values)) => {
                        cands.push(Cand::new(300, i, end, values));
                        i = end.max(i + 1);
                    }
                    None => i += 1,
                }
            }
        }
    }
    if cfg.expr && cfg.without_anchor {
        numbers(t, &mut cands);
    }
    cands.retain(|c| c.values.iter().all(|v| !v.trim().is_empty()));
    let best_prio = cands.iter().map(|c| c.prio).min()?;
    let best = cands
        .into_iter()
        .filter(|c| c.prio == best_prio)
        .max_by(|a, b| a.end.cmp(&b.end).then(b.start.cmp(&a.start)))?;
    if !cfg.repair && (best.unclosed || best.values.iter().any(|v| malformed(v))) {
        return None;
    }
    Some(best.values)
}

/// `\sqrt3`, `\frac12`: an operator without its braces.
fn malformed(v: &str) -> bool {
    ["\\sqrt", "\\frac", "\\dfrac", "\\tfrac"].iter().any(|op| {
        v.match_indices(op).any(|(i, _)| {
            let next = v[i + op.len()..].trim_start().chars().next();
            !matches!(next, Some('{' | '['))
        })
    })
}

/// Candidates after an anchor word (case-insensitive), non-overlapping.
fn anchored(t: &str, anchor: &str, prio: u16, is_phrase: bool, cfg: MvConfig, out: &mut Vec<Cand>) {
    let b = t.as_bytes();
    let mut from = 0;
    while let Some(p) = find_ci(b, from, anchor.as_bytes()) {
        let q = p + anchor.len();
        let found = if is_phrase {
            after_is(t, q, cfg)
        } else {
            within(t, q, 50, cfg).or_else(|| after_equals(t, q, cfg))
        };
        match found {
            Some((end, values)) => {
                out.push(Cand::new(prio, p, end, values));
                from = end.max(p + 1);
            }
            None => from = p + 1,
        }
    }
}

/// `final answer.{0,100}?\s+is:?\s*X`.
fn after_is(t: &str, q: usize, cfg: MvConfig) -> Option<(usize, Vec<String>)> {
    let b = t.as_bytes();
    for k in 0..=100 {
        let at = q + k;
        if at >= b.len() {
            return None;
        }
        if !b[at].is_ascii_whitespace() {
            continue;
        }
        let mut r = at;
        while r < b.len() && b[r].is_ascii_whitespace() {
            r += 1;
        }
        if !t[r..].starts_with("is") {
            continue;
        }
        let mut s = r + 2;
        if b.get(s) == Some(&b':') {
            s += 1;
        }
        let ws_end = skip_ws(b, s);
        if cfg.latex {
            if let Some(x) = chain_at(t, ws_end) {
                return Some(x);
            }
        }
        // A number's own prefix is the whitespace before it.
        if cfg.expr && ws_end > s {
            if let Some(x) = number_or_expr_at(t, ws_end) {
                return Some(x);
            }
        }
    }
    None
}

/// X starting within `max` bytes after `q` (the regex's lazy `.{0,50}?`).
fn within(t: &str, q: usize, max: usize, cfg: MvConfig) -> Option<(usize, Vec<String>)> {
    for k in 0..=max {
        let at = q + k;
        if at > t.len() {
            return None;
        }
        if cfg.latex {
            if let Some(x) = chain_at(t, at) {
                return Some(x);
            }
        }
        // A number needs its prefix: whitespace or `=` (then the number).
        let prefixed = t
            .as_bytes()
            .get(at)
            .is_some_and(|c| c.is_ascii_whitespace() || *c == b'=');
        if cfg.expr && prefixed {
            if let Some(x) = number_or_expr_at(t, at + 1) {
                if !followed_by_equals(t, x.0) {
                    return Some(x);
                }
            }
        }
    }
    None
}

/// Numbers: X after the last `=` within 100 bytes of the anchor.
fn after_equals(t: &str, q: usize, cfg: MvConfig) -> Option<(usize, Vec<String>)> {
    if !cfg.expr {
        return None;
    }
    let end = (q + 101).min(t.len());
    let b = t.as_bytes();
    (q..end).rev().filter(|&e| b[e] == b'=').find_map(|e| {
        // `=\s*` then the number's own whitespace prefix.
        if !b.get(e + 1)?.is_ascii_whitespace() {
            return None;
        }
        let x = number_or_expr_at(t, skip_ws(b, e + 1))?;
        (!followed_by_equals(t, x.0)).then_some(x)
    })
}

fn followed_by_equals(t: &str, end: usize) -> bool {
    t[end.min(t.len())..].trim_start().starts_with('=')
}

pub(super) fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

pub(super) fn find(s: &str, from: usize, needle: &str) -> Option<usize> {
    crate::scan::find_bytes(s.as_bytes().get(from..)?, needle.as_bytes()).map(|i| i + from)
}

pub(super) fn find_capped(s: &str, from: usize, needle: &str, cap: usize) -> Option<usize> {
    let end = (from + cap).min(s.len());
    let mut end = end;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    crate::scan::find_bytes(s.as_bytes().get(from..end)?, needle.as_bytes()).map(|i| i + from)
}

pub(super) fn find_ci(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    b.get(from..)?
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
        .map(|i| i + from)
}
#[cfg(test)]
mod tests {
    use super::*;

    fn mv(s: &str) -> Option<Vec<String>> {
        extract(s, MvConfig::DEFAULT)
    }

    fn one(s: &str) -> Option<String> {
        mv(s).map(|v| v.join(", "))
    }

    #[test]
    fn boxes_runs_and_sets() {
        assert_eq!(one("so \\boxed{5}."), Some("5".into()));
        assert_eq!(one("\\boxed{1} and \\boxed{2}"), Some("1, 2".into()));
        assert_eq!(one("\\boxed{1}, \\boxed{1}"), Some("1".into()));
        // Far apart without a separator: only the last.
        let far = format!("\\boxed{{1}} {} \\boxed{{2}}", "x".repeat(80));
        assert_eq!(one(&far), Some("2".into()));
        assert_eq!(one("$\\boxed{1}, \\boxed{3}$"), Some("1, 3".into()));
    }

    #[test]
    fn anchors_then_last_latex_or_number() {
        assert_eq!(one("The answer is $9$."), Some("9".into()));
        assert_eq!(one("Answer $9$ and later 12"), Some("9".into()));
        assert_eq!(one("the final answer is 100"), Some("100".into()));
        assert_eq!(one("We get $x=3$ so 3 + 4 = 7 apples"), Some("7".into()));
        assert_eq!(one("it costs $1,000.99 total"), Some("1000.99".into()));
        assert_eq!(one("about 25% of them"), Some("25\\%".into()));
        assert_eq!(one("so it is 1/2."), Some("1/2".into()));
        assert_eq!(one("no numbers here"), None);
        // LMM-R1's configuration needs an anchor or a box.
        assert_eq!(extract("So we get $9$.", MvConfig::LMM_R1), None);
        assert_eq!(
            extract("<answer>The answer is $9$</answer>", MvConfig::LMM_R1),
            Some(vec!["9".into()])
        );
    }

    #[test]
    fn hostile_inputs_stay_linear() {
        let s = "$".repeat(200_000) + &"\\(".repeat(50_000) + &"{".repeat(3000);
        let _ = mv(&s);
        let _ = mv(&"1 ".repeat(300_000));
    }
}
