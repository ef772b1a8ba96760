//! Pulling the final answer out of a completion: `\boxed{}`, `<answer>` /
//! `<think>` tags, the R1 and EasyR1 format checks and multiple-choice letters.
//!
//! Everything here is hand-written byte scanning: these functions run once or
//! twice per scored completion (tens of thousands per second), so they neither
//! compile regexes nor allocate.

use serde::{Deserialize, Serialize};

use crate::scan::{find_bytes, rfind_byte, rfind_bytes};

/// Content of the last `\boxed{...}` (or `\fbox{...}`) in `text`, with nested
/// braces matched. Escaped braces (`\{`, `\}`) inside do not count as groups.
/// A `\boxed{` whose braces never close is skipped in favour of an earlier,
/// complete one.
pub fn last_boxed(text: &str) -> Option<&str> {
    let bytes = text.as_bytes();
    let mut end = bytes.len();
    // Walk the occurrences from the last one backwards; a few unclosed ones
    // are skipped, but not thousands (each try scans to the end of the text).
    let mut tries = 0;
    while let Some(pos) = rfind_command(&text[..end]) {
        tries += 1;
        if tries > 16 {
            return None;
        }
        let cmd_len = if text[pos..].starts_with("\\boxed") {
            6
        } else {
            5
        };
        let mut i = pos + cmd_len;
        while i < bytes.len() && bytes[i] == b' ' {
            i += 1;
        }
        if i < bytes.len() && bytes[i] == b'{' {
            if let Some(close) = matching_brace(bytes, i) {
                return Some(&text[i + 1..close]);
            }
        } else if i > pos + cmd_len && i < bytes.len() {
            // `\boxed 5`: TeX takes the next token as the argument.
            let start = i;
            while i < bytes.len() && !matches!(bytes[i], b' ' | b'$' | b'\n' | b'}' | b',') {
                i += 1;
            }
            if i > start {
                return Some(&text[start..i]);
            }
        }
        end = pos;
    }
    None
}

/// Last start position of `\boxed` or `\fbox` in `hay`. One backward pass
/// over the backslashes (16 bytes per step, see [`crate::scan`]) instead of a
/// substring search per command: fewer loop iterations, which matters most
/// in Wasm, where every loop back-edge also checks the time budget.
fn rfind_command(hay: &str) -> Option<usize> {
    let mut end = hay.len();
    while let Some(pos) = rfind_byte(&hay.as_bytes()[..end], b'\\') {
        let rest = &hay[pos..];
        if rest.starts_with("\\boxed") || rest.starts_with("\\fbox") {
            return Some(pos);
        }
        end = pos;
    }
    None
}

/// Index of the `}` closing the `{` at `open`, skipping `\{` and `\}`.
fn matching_brace(bytes: &[u8], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = open;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => {
                i += 2;
                continue;
            }
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Content of the last `<tag>...</tag>` in `text` (the last closing tag and
/// the nearest opening tag before it).
pub fn tag_content<'a>(text: &'a str, tag: &str) -> Option<&'a str> {
    if tag.is_empty() || tag.len() > 64 {
        return None;
    }
    // Build "<tag>" and "</tag>" on the stack: tags are short.
    let mut open_buf = [0u8; 67];
    let mut close_buf = [0u8; 67];
    let open = tag_bytes(&mut open_buf, tag, false);
    let close = tag_bytes(&mut close_buf, tag, true);
    let close_at = rfind_bytes(text.as_bytes(), close)?;
    let open_at = rfind_bytes(&text.as_bytes()[..close_at], open)?;
    // Both ends sit next to an ASCII `<` or `>`, so they are char boundaries.
    Some(&text[open_at + open.len()..close_at])
}

fn tag_bytes<'b>(buf: &'b mut [u8; 67], tag: &str, closing: bool) -> &'b [u8] {
    let mut n = 0;
    buf[n] = b'<';
    n += 1;
    if closing {
        buf[n] = b'/';
        n += 1;
    }
    buf[n..n + tag.len()].copy_from_slice(tag.as_bytes());
    n += tag.len();
    buf[n] = b'>';
    n += 1;
    &buf[..n]
}

/// LMM-R1's format rule (`math_verifier.py`): the response, stripped of
/// surrounding whitespace, fully matches
/// `^<think>(?:(?!</think>).)*</think><answer>(?:(?!</answer>).)*</answer>\Z`
/// and holds one `<think>` and one `<answer>`. Nothing may stand between
/// `</think>` and `<answer>`, not even a newline.
pub fn is_r1_format(text: &str) -> bool {
    let t = text.trim();
    let Some(body) = t.strip_prefix("<think>") else {
        return false;
    };
    if count(t, "<think>") != 1 || count(t, "<answer>") != 1 {
        return false;
    }
    let Some(close) = find_bytes(body.as_bytes(), b"</think>") else {
        return false;
    };
    let Some(answer) = body[close + "</think>".len()..].strip_prefix("<answer>") else {
        return false;
    };
    // The first `</answer>` must be the end of the text.
    find_bytes(answer.as_bytes(), b"</answer>") == Some(answer.len().wrapping_sub(9))
        && answer.len() >= 9
}

/// R1-V's format rule (EasyR1's `r1v.py`): the raw response fully matches
/// `<think>.*?</think>\s*<answer>.*?</answer>` (DOTALL): whitespace may
/// separate the two blocks, nothing may precede `<think>` or follow `</answer>`.
pub fn is_r1_spaced_format(text: &str) -> bool {
    if !text.starts_with("<think>") || !text.ends_with("</answer>") {
        return false;
    }
    let b = text.as_bytes();
    let last = text.len() - "</answer>".len();
    let mut from = "<think>".len();
    while let Some(off) = find_bytes(&b[from..], b"</think>") {
        let after = from + off + "</think>".len();
        let rest = text[after..].trim_start();
        let open = text.len() - rest.len();
        if rest.starts_with("<answer>") && open + "<answer>".len() <= last {
            return true;
        }
        from = from + off + 1;
    }
    false
}

fn count(hay: &str, needle: &str) -> usize {
    let (h, n) = (hay.as_bytes(), needle.as_bytes());
    let mut i = 0;
    let mut c = 0;
    while let Some(off) = find_bytes(&h[i..], n) {
        c += 1;
        i += off + n.len();
    }
    c
}

/// EasyR1's format rule, `<think>.*</think>.*\boxed{.*}` matched against the
/// whole text (DOTALL) after EasyR1's clean-up (whitespace around `<`, `>`
/// and `/` removed, [`tighten_tags`]): starts with `<think>`, a later
/// `</think>`, then a `\boxed{`, then a `}` somewhere after it.
pub fn is_boxed_format(text: &str) -> bool {
    let t = tighten_tags(text);
    let Some(rest) = t.strip_prefix("<think>") else {
        return false;
    };
    let Some(think_end) = find_bytes(rest.as_bytes(), b"</think>") else {
        return false;
    };
    let after = &rest[think_end + "</think>".len()..];
    match find_bytes(after.as_bytes(), b"\\boxed{") {
        Some(b) => after[b + "\\boxed{".len()..].contains('}'),
        None => false,
    }
}

/// EasyR1's `re.sub(r"\s*(<|>|/)\s*", r"\1", response)` (its fix for
/// models that write `< think >` or `</ answer>`): the whitespace on both
/// sides of every `<`, `>` and `/` removed.
pub fn tighten_tags(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut skip_ws = false;
    for c in text.chars() {
        if matches!(c, '<' | '>' | '/') {
            let kept = out.trim_end_matches(char::is_whitespace).len();
            out.truncate(kept);
            out.push(c);
            skip_ws = true;
        } else if skip_ws && c.is_whitespace() {
            continue;
        } else {
            skip_ws = false;
            out.push(c);
        }
    }
    out
}

/// Where [`extract_answer`] looks for the final answer, tried in the order given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Extractor {
    /// Content of the last `\boxed{}` / `\fbox{}`.
    Boxed,
    /// Content of the last `<answer>...</answer>`.
    AnswerTag,
    /// The last number in the text (`-3`, `1,234.5`, `2/3`), after any `</think>`.
    LastNumber,
    /// The whole text, trimmed, after any `</think>`.
    Whole,
}

impl std::str::FromStr for Extractor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "boxed" => Ok(Self::Boxed),
            "answer_tag" => Ok(Self::AnswerTag),
            "last_number" => Ok(Self::LastNumber),
            "whole" => Ok(Self::Whole),
            other => Err(format!(
                "unknown extractor `{other}` (expected boxed, answer_tag, last_number or whole)"
            )),
        }
    }
}

/// The first non-empty answer found by the extractors, in `order`.
pub fn extract_answer<'a>(text: &'a str, order: &[Extractor]) -> Option<&'a str> {
    order.iter().find_map(|ex| {
        let found = match ex {
            Extractor::Boxed => last_boxed(text),
            Extractor::AnswerTag => tag_content(text, "answer"),
            Extractor::LastNumber => last_number(after_think(text)),
            Extractor::Whole => Some(after_think(text)),
        };
        found.map(str::trim).filter(|s| !s.is_empty())
    })
}

/// The text a final answer may come from when the reasoning does not count:
/// after the last `</think>`; before an unclosed `<think>` (a response cut
/// off while thinking has no answer); else all of it.
pub fn outside_think(text: &str) -> &str {
    let b = text.as_bytes();
    if let Some(i) = rfind_bytes(b, b"</think>") {
        return &text[i + "</think>".len()..];
    }
    match find_bytes(b, b"<think>") {
        Some(i) => &text[..i],
        None => text,
    }
}

/// An `<answer>` that is a sentence: "The answer is 7." / "Answer: 7" /
/// "So the final answer is $7$." -> the part after the phrase, without the
/// full stop. Anything else is returned trimmed.
pub fn answer_sentence(s: &str) -> &str {
    let t = s.trim();
    let lower_has = |hay: &str, p: &str| {
        hay.as_bytes()
            .windows(p.len())
            .rposition(|w| w.eq_ignore_ascii_case(p.as_bytes()))
    };
    let mut out = t;
    for phrase in ["answer is:", "answer is", "answer:"] {
        if let Some(i) = lower_has(t, phrase) {
            out = t[i + phrase.len()..].trim();
            break;
        }
    }
    // A sentence's full stop ("3." is never a decimal in a final answer).
    out.trim_end_matches('.').trim_end()
}

/// The part after the last `</think>`, or the whole text.
fn after_think(text: &str) -> &str {
    match rfind_bytes(text.as_bytes(), b"</think>") {
        Some(i) => &text[i + "</think>".len()..],
        None => text,
    }
}

/// The last number in `text`: optional minus, digits with optional `,`
/// thousands groups, optional decimal part, optional `/denominator`.
fn last_number(text: &str) -> Option<&str> {
    let b = text.as_bytes();
    // Find the last digit, then grow the span to the left and right.
    let last_digit = b.iter().rposition(u8::is_ascii_digit)?;
    let mut start = last_digit;
    while start > 0 {
        let c = b[start - 1];
        let grows = c.is_ascii_digit()
            || ((c == b'.' || c == b'/') && start >= 2 && b[start - 2].is_ascii_digit())
            || (c == b','
                && start >= 2
                && b[start - 2].is_ascii_digit()
                && is_thousands_group(b, start));
        if !grows {
            break;
        }
        start -= 1;
    }
    if start > 0 && b[start - 1] == b'.' {
        start -= 1; // ".5"
    }
    if start > 0 && b[start - 1] == b'-' && (start < 2 || !b[start - 2].is_ascii_alphanumeric()) {
        start -= 1;
    }
    Some(&text[start..=last_digit])
}

/// Whether the bytes at `at` are exactly three digits followed by a non-digit.
fn is_thousands_group(b: &[u8], at: usize) -> bool {
    at + 3 <= b.len()
        && b[at..at + 3].iter().all(u8::is_ascii_digit)
        && (at + 3 == b.len() || !b[at + 3].is_ascii_digit())
}

/// The multiple-choice letter a completion commits to, among the first
/// `n_options` letters (`A`..). Looks, in order, at the last `\boxed{}`, the
/// `<answer>` tag, phrases such as "the answer is (B)" / "Answer: B" /
/// "option B", a reply that starts with the letter ("B", "(b)", "B. 42 cm"),
/// and finally the last parenthesised letter "(B)" in the text.
pub fn choice_letter(text: &str, n_options: usize) -> Option<char> {
    let n = n_options.min(26);
    if n == 0 {
        return None;
    }
    if let Some(b) = last_boxed(text) {
        if let Some(c) = leading_letter(b, n) {
            return Some(c);
        }
    }
    if let Some(a) = tag_content(text, "answer") {
        if let Some(c) = leading_letter(a, n).or_else(|| phrase_letter(a, n)) {
            return Some(c);
        }
    }
    let body = after_think(text);
    phrase_letter(body, n)
        .or_else(|| leading_letter(body, n))
        .or_else(|| last_paren_letter(body, n))
}

/// Letter at the start of `s` after decoration: `B`, `(B)`, `b.`, `**B**`,
/// `\text{B}`, `$B$`, `Option B`. It must not be the start of a word
/// ("Because..."); a lower-case letter must also stand alone ("a." or "a"
/// at the end), so the article "a" in "a triangle" is not taken.
fn leading_letter(s: &str, n: usize) -> Option<char> {
    let mut s = s.trim_start();
    loop {
        let before = s.len();
        for prefix in [
            "\\text{",
            "\\textbf{",
            "\\mathrm{",
            "\\mathbf{",
            "(",
            "[",
            "{",
            "*",
            "$",
            "option",
            "Option",
            "choice",
            "Choice",
            ":",
        ] {
            if let Some(rest) = s.strip_prefix(prefix) {
                s = rest.trim_start();
            }
        }
        if s.len() == before {
            break;
        }
    }
    let b = s.as_bytes();
    let c = *b.first()?;
    let next = b.get(1).copied();
    let standalone = match next {
        None => true,
        Some(x) => !x.is_ascii_alphanumeric() && x != b'_' && x != b'\'',
    };
    if !standalone {
        return None;
    }
    if c.is_ascii_uppercase() {
        letter_in_range(c, n)
    } else if c.is_ascii_lowercase() {
        // "a." / "a)" / "a" alone, but not "a triangle".
        let alone = match next {
            None => true,
            Some(b' ' | b'\t') => {
                b[1..].iter().all(|x| x.is_ascii_whitespace())
                    || b[2..].first().is_some_and(|x| *x == b'\n')
            }
            Some(_) => true,
        };
        if alone {
            letter_in_range(c.to_ascii_uppercase(), n)
        } else {
            None
        }
    } else {
        None
    }
}

fn letter_in_range(c: u8, n: usize) -> Option<char> {
    (((c - b'A') as usize) < n).then_some(c as char)
}

/// Letter after the last answer phrase: "answer is", "answer:", "option",
/// "choice", "correct answer", matched case-insensitively.
fn phrase_letter(s: &str, n: usize) -> Option<char> {
    const PHRASES: [&str; 6] = [
        "answer is",
        "answer:",
        "answer :",
        "answer",
        "option",
        "choice",
    ];
    let lower_bytes = s.as_bytes();
    // Scan from the end so the last committed answer wins.
    let mut best: Option<(usize, char)> = None;
    for phrase in PHRASES {
        let p = phrase.as_bytes();
        if lower_bytes.len() < p.len() {
            continue;
        }
        let mut i = lower_bytes.len() - p.len() + 1;
        while i > 0 {
            i -= 1;
            if best.is_some_and(|(at, _)| at >= i) {
                break;
            }
            if lower_bytes[i..i + p.len()].eq_ignore_ascii_case(p) {
                let rest = &s[i + p.len()..];
                let rest = rest.trim_start_matches(|c: char| {
                    c == ':' || c == '*' || c == '=' || c.is_whitespace()
                });
                // "the correct option is B"
                let rest = rest.strip_prefix("is ").map_or(rest, str::trim_start);
                if let Some(c) = leading_letter(rest, n) {
                    best = Some((i, c));
                    break;
                }
            }
        }
    }
    best.map(|(_, c)| c)
}

/// The last `(X)` with X a valid letter (either case).
fn last_paren_letter(s: &str, n: usize) -> Option<char> {
    let b = s.as_bytes();
    let mut i = b.len();
    while i >= 3 {
        i -= 1;
        if b[i] == b')' && b[i - 2] == b'(' {
            let c = b[i - 1].to_ascii_uppercase();
            if c.is_ascii_uppercase() {
                if let Some(l) = letter_in_range(c, n) {
                    return Some(l);
                }
            }
        }
    }
    None
}
