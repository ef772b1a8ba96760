//! Plain numbers and arithmetic expressions (`ExprExtractionConfig`).

use super::{skip_ws, Cand};

const MAX_RUN: usize = 2_000;

/// Plain numbers and expressions anywhere (priority 300).
pub(super) fn numbers(t: &str, out: &mut Vec<Cand>) {
    let b = t.as_bytes();
    let mut i = 0;
    // A run of expression characters without an operator holds no
    // expression at any of its positions: scan it once, not once per start.
    let mut no_expr_until = 0;
    while i < b.len() {
        let prefix_ok = i == 0 || b[i - 1].is_ascii_whitespace() || b[i - 1] == b'=';
        let starts = b[i].is_ascii_digit()
            || matches!(b[i], b'-' | b'.' | b'(' | b'*' | b'$')
            || b[i] >= 0x80;
        if prefix_ok && starts && i >= no_expr_until {
            let run = i + b[i..].iter().take_while(|c| is_expr_char(**c)).count();
            if !b[i..run].iter().skip(1).any(|c| b"+-*/^()".contains(c)) {
                no_expr_until = run;
            }
        }
        if prefix_ok && starts {
            let found = if i < no_expr_until {
                number_after_prefix(t, i)
            } else {
                number_or_expr_at(t, i)
            };
            if let Some((end, values)) = found {
                out.push(Cand::new(300, i, end, values));
                i = end.max(i + 1);
                continue;
            }
        }
        i += 1;
    }
}

/// [`number_or_expr_at`] without trying an expression.
pub(super) fn number_after_prefix(t: &str, i: usize) -> Option<(usize, Vec<String>)> {
    let mut j = i;
    if t.get(j..)?.starts_with("**") {
        j += 2;
    }
    if let Some(c) = t.get(j..)?.chars().next() {
        if CURRENCY.contains(c) {
            j += c.len_utf8();
        }
    }
    number_at(t, j)
}

pub(super) const CURRENCY: &str = "$€£¥₹₽₪₩₫฿₡₢₣₤₥₦₧₨₭₮₯₰₱₲₳₴₵₶₷₸₺₻₼₾₿";

/// At `i` (just after the prefix character): `**`? currency? then an
/// expression with an operator (and its suffix), else a number.
pub(super) fn number_or_expr_at(t: &str, i: usize) -> Option<(usize, Vec<String>)> {
    let mut j = i;
    if t.get(j..)?.starts_with("**") {
        j += 2;
    }
    if let Some(e) = expr_at(t, j) {
        return Some(e);
    }
    if let Some(c) = t.get(j..)?.chars().next() {
        if CURRENCY.contains(c) {
            j += c.len_utf8();
        }
    }
    number_at(t, j)
}

pub(super) fn is_expr_char(c: u8) -> bool {
    c.is_ascii_digit() || c.is_ascii_whitespace() || b".+-*/^()".contains(&c)
}

/// `-?\(?-?\d S* op S+ \)?` followed by its suffix (longest such).
pub(super) fn expr_at(t: &str, i: usize) -> Option<(usize, Vec<String>)> {
    let b = t.as_bytes();
    let mut j = i;
    if b.get(j) == Some(&b'-') {
        j += 1;
    }
    if b.get(j) == Some(&b'(') {
        j += 1;
    }
    if b.get(j) == Some(&b'-') {
        j += 1;
    }
    if !b.get(j)?.is_ascii_digit() {
        return None;
    }
    let first = j;
    let mut e = j + 1;
    while e < b.len() && is_expr_char(b[e]) && e - i < MAX_RUN {
        e += 1;
    }
    let ops = b"+-*/^()";
    // The first operator after the first digit: the expression must hold
    // one with at least one more character after it.
    let first_op = (first + 1..e).find(|&k| ops.contains(&b[k]))?;
    let mut cut = e;
    while cut > first_op + 1 {
        let suffix_ok = match b.get(cut) {
            None => true,
            Some(c) => {
                matches!(c, b'.' | b',' | b':' | b')' | b'$')
                    || c.is_ascii_whitespace()
                    || t[cut..].starts_with("**")
            }
        };
        if suffix_ok {
            // Python reads a trailing `2.` as the float 2.0.
            let expr = t[i..cut].trim().trim_end_matches('.');
            let end = if cut < b.len() { cut + 1 } else { cut };
            return Some((end, vec![expr.to_owned()]));
        }
        cut -= 1;
    }
    None
}

/// Math-Verify's number formats, in its order, then a percent sign or word.
pub(super) fn number_at(t: &str, i: usize) -> Option<(usize, Vec<String>)> {
    let b = t.as_bytes();
    if i > 0 && b.get(i - 1).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    let neg = b.get(i) == Some(&b'-');
    let s = i + usize::from(neg);
    let (int, dec, end) = thousands(b, s)
        .or_else(|| {
            let d = digits(b, s);
            (d > 0 && matches!(b.get(s + d), Some(b'.' | b',')) && digits(b, s + d + 1) > 0)
                .then(|| (s + d, Some(s + d), s + d + 1 + digits(b, s + d + 1)))
        })
        .or_else(|| {
            (!neg && b.get(s) == Some(&b'.') && digits(b, s + 1) > 0)
                .then(|| (s, Some(s), s + 1 + digits(b, s + 1)))
        })
        .or_else(|| {
            let d = digits(b, s);
            (d > 0).then_some((s + d, None, s + d))
        })?;
    let int_text: String = t[s..int].chars().filter(|c| c.is_ascii_digit()).collect();
    let int_text = int_text.trim_start_matches('0');
    let mut num = String::new();
    if neg {
        num.push('-');
    }
    num.push_str(if int_text.is_empty() { "0" } else { int_text });
    if let Some(d) = dec {
        num.push('.');
        num.push_str(&t[d + 1..end]);
    }
    let mut stop = end;
    if let Some(after) = percent_at(t, skip_ws(b, end), false) {
        num.push_str("\\%");
        stop = after;
    }
    Some((stop, vec![num]))
}

/// `[1-9]\d{0,2}([ ,]\d{3})+(\.\d+)?`: (end of the integer part, decimal point, end).
pub(super) fn thousands(b: &[u8], s: usize) -> Option<(usize, Option<usize>, usize)> {
    if !b.get(s)?.is_ascii_digit() || b[s] == b'0' {
        return None;
    }
    let lead = digits(b, s).min(3);
    // Try the longest leading group that is followed by a separator group.
    for l in (1..=lead).rev() {
        let mut j = s + l;
        let mut groups = 0;
        while matches!(b.get(j), Some(b' ' | b',')) && digits(b, j + 1) >= 3 {
            j += 4;
            groups += 1;
        }
        if groups > 0 {
            if b.get(j) == Some(&b'.') && digits(b, j + 1) > 0 {
                return Some((j, Some(j), j + 1 + digits(b, j + 1)));
            }
            return Some((j, None, j));
        }
    }
    None
}

/// After a percent sign or word at `at` (`\%` only after LaTeX).
pub(super) fn percent_at(t: &str, at: usize, latex: bool) -> Option<usize> {
    const WORDS: [&str; 7] = [
        "%",
        "percentage",
        "Percentage",
        "percent",
        "Percent",
        "pct",
        "Pct",
    ];
    let rest = t.get(at..)?;
    if latex && rest.starts_with("\\%") {
        return Some(at + 2);
    }
    WORDS
        .iter()
        .find(|w| rest.starts_with(*w))
        .map(|w| at + w.len())
}

pub(super) fn digits(b: &[u8], i: usize) -> usize {
    b.get(i..)
        .map_or(0, |r| r.iter().take_while(|c| c.is_ascii_digit()).count())
}
