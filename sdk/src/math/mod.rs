//! Mathematical equivalence of two final answers (see
//! `docs/math-equivalence.md` for the rules and the comparison with
//! Hugging Face's Math-Verify).
//!
//! Pipeline: a fast path for identical strings and plain numbers, then
//! [`normalize`](normalize::normalize) (delimiters, `\boxed`, `\text`, units,
//! degrees), [`shape`] (sets, tuples, intervals, relations, percentages),
//! [`parse`] (LaTeX-ish expressions) and [`compare`] (numeric evaluation at
//! deterministic points).

mod compare;
mod eval;
mod normalize;
mod parse;
mod shape;
mod words;

pub use eval::num_eq;
pub use normalize::normalize;
pub use words::number_from_words;

/// Inputs longer than this are compared as normalized text only, which keeps
/// the cost of a hostile completion bounded.
const MAX_PARSE_LEN: usize = 2000;

/// Whether `prediction` and `reference` are the same final answer.
///
/// Both are final answers (e.g. the content of `\boxed{}`), not whole
/// completions; `$...$`, `\boxed{}` and `x =` wrappers are tolerated. An
/// empty prediction never matches.
pub fn equivalent(prediction: &str, reference: &str) -> bool {
    let (p, r) = (prediction.trim(), reference.trim());
    if p.is_empty() || r.is_empty() {
        return false;
    }
    if p == r {
        return true;
    }
    // Fast path: both plain numbers ("42", "-3.5"), no allocation.
    if let (Some(a), Some(b)) = (plain_number(p), plain_number(r)) {
        return match (a, b) {
            (Plain::Int(x), Plain::Int(y)) => x == y,
            (a, b) => num_eq(a.value(), b.value()),
        };
    }
    // Second fast path: fractions and decimals such as `\frac{3}{4}`, `-3/4`, `$0.75$`.
    if let (Some(a), Some(b)) = (quick_value(p), quick_value(r)) {
        return num_eq(a, b);
    }
    let (np, nr) = (normalize(p), normalize(r));
    if np.is_empty() || nr.is_empty() {
        return false;
    }
    if np == nr {
        return true;
    }
    if np.len() > MAX_PARSE_LEN || nr.len() > MAX_PARSE_LEN {
        return false;
    }
    compare::answers_eq(&shape::parse_answer(&np), &shape::parse_answer(&nr))
}

#[derive(Clone, Copy)]
enum Plain<'a> {
    /// Canonical integer digits (sign kept, leading zeros dropped), compared
    /// as text so integers beyond f64 precision stay exact.
    Int(&'a str),
    Dec(f64),
}

impl Plain<'_> {
    fn value(self) -> f64 {
        match self {
            Plain::Int(s) => s.parse().unwrap_or(f64::NAN),
            Plain::Dec(v) => v,
        }
    }
}

/// `-?digits(.digits)?` with nothing else.
fn plain_number(s: &str) -> Option<Plain<'_>> {
    let b = s.as_bytes();
    let body = b.strip_prefix(b"-").unwrap_or(b);
    if body.is_empty() || !body[0].is_ascii_digit() {
        return None;
    }
    let mut dots = 0;
    for &c in body {
        if c == b'.' {
            dots += 1;
        } else if !c.is_ascii_digit() {
            return None;
        }
    }
    match dots {
        0 => {
            let negative = b.len() != body.len();
            let digits = s.trim_start_matches('-').trim_start_matches('0');
            if digits.is_empty() {
                Some(Plain::Int("0"))
            } else if negative {
                // Keep the sign: point back into `s` just before the digits.
                let start = s.len() - digits.len() - 1;
                if s.as_bytes()[start] == b'-' {
                    Some(Plain::Int(&s[start..]))
                } else {
                    // "-007": parse numerically instead.
                    s.parse().ok().map(Plain::Dec)
                }
            } else {
                Some(Plain::Int(digits))
            }
        }
        1 if !s.ends_with('.') => s.parse().ok().map(Plain::Dec),
        _ => None,
    }
}

/// Value of a simple numeric answer without allocating: an optional `$...$`,
/// an optional minus, then a plain number, `a/b`, or `\frac{a}{b}` (also
/// `\dfrac`, `\tfrac`) with plain-number parts. Anything else is `None` and
/// goes through the full parser.
fn quick_value(s: &str) -> Option<f64> {
    let s = s.trim();
    let s = s
        .strip_prefix('$')
        .and_then(|x| x.strip_suffix('$'))
        .unwrap_or(s)
        .trim();
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest.trim_start()),
        None => (false, s),
    };
    let v = if let Some(rest) = s
        .strip_prefix("\\frac")
        .or_else(|| s.strip_prefix("\\dfrac"))
        .or_else(|| s.strip_prefix("\\tfrac"))
    {
        let (num, rest) = rest.strip_prefix('{')?.split_once('}')?;
        let den = rest.strip_prefix('{')?.strip_suffix('}')?;
        plain_value(num)? / plain_value(den)?
    } else if let Some((num, den)) = s.split_once('/') {
        plain_value(num)? / plain_value(den)?
    } else {
        plain_value(s)?
    };
    Some(if neg { -v } else { v })
}

fn plain_value(s: &str) -> Option<f64> {
    let s = s.trim();
    let body = s.strip_prefix('-').unwrap_or(s);
    if body.is_empty()
        || !body.bytes().all(|c| c.is_ascii_digit() || c == b'.')
        || body.starts_with('.') && body.len() == 1
    {
        return None;
    }
    s.parse().ok()
}
