//! `\\boxed{..}` candidates: environments holding boxes, and the trailing
//! run of bare boxes (Math-Verify's `extract_boxed_content`).

use super::latex::chain_at;
use super::{find, Cand};

/// `\boxed` candidates: environments holding boxes, and the trailing run of
/// bare boxes.
pub(super) fn boxed(t: &str, prio: u16, out: &mut Vec<Cand>) {
    let Some(first) = find(t, 0, "\\boxed").or_else(|| find(t, 0, "\\fbox")) else {
        return;
    };
    // Environments holding boxes, joined like any environments.
    let mut i = 0;
    while i < t.len() {
        match chain_at(t, i) {
            Some((end, values)) => {
                let text = &t[i..end];
                if text.contains("\\boxed") || text.contains("\\fbox") {
                    out.push(Cand::new(prio, i, end, values));
                }
                i = end.max(i + 1);
            }
            None => i += 1,
        }
    }
    // `\\boxed{.+}`: from the first box to the last `}` of the text.
    let Some(end) = t.rfind('}').filter(|&e| e > first) else {
        return;
    };
    let (run, unclosed) = boxed_run_closed(&t[first..=end]);
    if !run.is_empty() {
        out.push(Cand {
            unclosed,
            ..Cand::new(prio, first, end, run)
        });
    }
}

/// Every `\boxed{..}` content in `s`, in order (Math-Verify's `boxed="all"`),
/// or `s` itself when it has none.
pub(super) fn boxes_all(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some((start, end)) = next_box(s, i) {
        out.push(s[start..end].trim().to_owned());
        i = end + 1;
    }
    if out.is_empty() {
        out.push(s.trim().to_owned());
    }
    out
}

/// Content span of the first `\boxed{..}`/`\fbox{..}` at or after `from`.
pub(super) fn next_box(s: &str, from: usize) -> Option<(usize, usize)> {
    let mut i = from;
    loop {
        let at = [find(s, i, "\\boxed"), find(s, i, "\\fbox")]
            .into_iter()
            .flatten()
            .min()?;
        let cmd = if s[at..].starts_with("\\boxed") { 6 } else { 5 };
        let open = at + cmd + (s[at + cmd..].len() - s[at + cmd..].trim_start().len());
        if s.as_bytes().get(open) == Some(&b'{') {
            if let Some(close) = close_brace(s.as_bytes(), open) {
                return Some((open + 1, close));
            }
            return None;
        }
        i = at + cmd;
    }
}

/// Math-Verify's `boxed="last"`: from the last box backwards, boxes that sit
/// within 10 bytes of the next one, or within 70 with a separator between
/// them and a different content, form one answer (a set); consecutive
/// duplicates count once. An unclosed last box gives its rest of the text.
pub fn boxed_run(s: &str) -> Vec<String> {
    boxed_run_closed(s).0
}

/// [`boxed_run`], and whether the last box is unclosed.
pub(super) fn boxed_run_closed(s: &str) -> (Vec<String>, bool) {
    // All boxes, left to right, with their command start and content span.
    let mut boxes: Vec<(usize, usize, usize)> = Vec::new();
    let mut i = 0;
    let mut unclosed: Option<usize> = None;
    while let Some(at) = [find(s, i, "\\boxed"), find(s, i, "\\fbox")]
        .into_iter()
        .flatten()
        .min()
    {
        let cmd = if s[at..].starts_with("\\boxed") { 6 } else { 5 };
        let open = at + cmd + (s[at + cmd..].len() - s[at + cmd..].trim_start().len());
        if s.as_bytes().get(open) != Some(&b'{') {
            i = at + cmd;
            continue;
        }
        match close_brace(s.as_bytes(), open) {
            Some(close) => {
                boxes.push((at, open + 1, close));
                i = close + 1;
            }
            None => {
                unclosed = Some(open);
                break;
            }
        }
    }
    if let Some(open) = unclosed {
        // Math-Verify: an unclosed last box is the rest of the text (a
        // response cut off inside `\boxed{` still gives an answer).
        return (vec![s[open + 1..].trim().to_owned()], true);
    }
    let mut out: Vec<String> = Vec::new();
    let mut later_start: Option<usize> = None;
    for &(at, c0, c1) in boxes.iter().rev() {
        let content = s[c0..c1].trim().to_owned();
        if let Some(next) = later_start {
            let between = &s[(c1 + 1).min(next)..next];
            let last = out.last().map(String::as_str).unwrap_or("");
            let near = between.len() < 10;
            let sep = content != last && between.len() < 70 && has_separator(between);
            if !(near || sep) {
                break;
            }
        }
        if out.last() != Some(&content) {
            out.push(content);
        }
        later_start = Some(at);
    }
    out.reverse();
    (out, false)
}

pub(super) fn has_separator(s: &str) -> bool {
    s.contains(',') || s.contains(';') || words(s).any(|w| w == "and" || w == "or")
}

pub(super) fn words(s: &str) -> impl Iterator<Item = &str> {
    s.split(|c: char| !c.is_alphanumeric() && c != '_')
}

/// Index of the `}` closing the `{` at `open` (Math-Verify counts every
/// brace, escaped or not).
pub(super) fn close_brace(b: &[u8], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (k, &c) in b[open..].iter().enumerate() {
        match c {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(open + k);
                }
            }
            _ => {}
        }
    }
    None
}
