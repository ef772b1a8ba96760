//! Where the final answer is taken from, per preset: which extractors in
//! which order, over which part of the response.

use super::mv::{boxed_run, extract as mv_extract, MvConfig};
use crate::answer::{answer_sentence, last_boxed, outside_think, tag_content};
use serde::Deserialize;
use std::borrow::Cow;

/// One way to find the answer; `extract` lists them in the order tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Extract {
    /// The last `\boxed{}` (or, with `boxes = "run"`, Math-Verify's run of boxes as a set).
    Boxed,
    /// The last `<answer>..</answer>`; a sentence inside ("The answer is 7.") gives its answer.
    AnswerTag,
    /// R1-V: the first `<answer>..</answer>` on one line, as is.
    FirstAnswerTag,
    /// The last number.
    LastNumber,
    /// The whole (scoped) text.
    Whole,
    /// Math-Verify's extraction with its defaults (LaTeX and plain expressions).
    MathVerify,
    /// Math-Verify as LMM-R1 configures it: LaTeX only, boxes first, anchors required.
    MathVerifyLatex,
    /// DAPO: the last `Answer: ...` line.
    AnswerLine,
}

/// Which `\boxed{}` the `boxed` extractor reads when there are several.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Boxes {
    /// The last one.
    Last,
    /// Math-Verify's trailing run (boxes close together or joined by
    /// `and`/`or`/`,`), compared as a set.
    Run,
}

/// The part of the response answers are read from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scope {
    /// Read the reasoning (`<think>..</think>`) too.
    pub think: bool,
    /// Only the last this many characters (0: all).
    pub tail_chars: usize,
    pub boxes: Boxes,
}

/// The first answer found by `order` in the scoped response.
pub fn extract<'a>(response: &'a str, order: &[Extract], scope: Scope) -> Option<Cow<'a, str>> {
    let text = tail(response, scope.tail_chars);
    let text = if scope.think {
        text
    } else {
        outside_think(text)
    };
    order.iter().find_map(|ex| {
        let found: Option<Cow<str>> = match ex {
            Extract::Boxed => match scope.boxes {
                Boxes::Last => last_boxed(text).map(Cow::Borrowed),
                Boxes::Run => set(boxed_run(text)),
            },
            Extract::AnswerTag => {
                tag_content(text, "answer").map(|a| Cow::Borrowed(answer_sentence(a)))
            }
            Extract::FirstAnswerTag => first_answer_tag(text).map(Cow::Borrowed),
            Extract::LastNumber => {
                crate::answer::extract_answer(text, &[crate::answer::Extractor::LastNumber])
                    .map(Cow::Borrowed)
            }
            Extract::Whole => Some(Cow::Borrowed(text)),
            Extract::MathVerify => mv_extract(text, MvConfig::DEFAULT).and_then(set),
            Extract::MathVerifyLatex => mv_extract(text, MvConfig::LMM_R1).and_then(set),
            Extract::AnswerLine => answer_line(text).map(Cow::Borrowed),
        };
        found
            .map(|f| match f {
                Cow::Borrowed(b) => Cow::Borrowed(b.trim()),
                Cow::Owned(o) => Cow::Owned(o.trim().to_owned()),
            })
            .filter(|s| !s.is_empty())
    })
}

/// Several answers are one set (`a, b`); one stays as it is.
fn set<'a>(v: Vec<String>) -> Option<Cow<'a, str>> {
    match v.len() {
        0 => None,
        1 => v.into_iter().next().map(Cow::Owned),
        _ => Some(Cow::Owned(v.join(", "))),
    }
}

/// The last `n` characters (not bytes) of `s`.
fn tail(s: &str, n: usize) -> &str {
    if n == 0 {
        return s;
    }
    match s.char_indices().rev().nth(n - 1) {
        Some((i, _)) => &s[i..],
        None => s,
    }
}

/// R1-V's `re.search(r"<answer>(.*?)</answer>", response)`: the first
/// `<answer>` whose closing tag follows on the same line.
fn first_answer_tag(text: &str) -> Option<&str> {
    let mut from = 0;
    while let Some(i) = text[from..].find("<answer>") {
        let start = from + i + "<answer>".len();
        let rest = &text[start..];
        let close = rest.find("</answer>");
        let newline = rest.find('\n');
        match (close, newline) {
            (Some(c), Some(n)) if c < n => return Some(&rest[..c]),
            (Some(c), None) => return Some(&rest[..c]),
            _ => from = start,
        }
    }
    None
}

/// DAPO's `re.findall(r"(?i)Answer\s*:\s*([^\n]+)", response)[-1]`.
pub fn answer_line(text: &str) -> Option<&str> {
    let b = text.as_bytes();
    let mut found = None;
    let mut i = 0;
    while i + 6 <= b.len() {
        if !b[i..i + 6].eq_ignore_ascii_case(b"answer") {
            i += 1;
            continue;
        }
        let mut j = i + 6;
        while j < b.len() && b[j].is_ascii_whitespace() {
            j += 1;
        }
        if b.get(j) != Some(&b':') {
            i += 1;
            continue;
        }
        j += 1;
        while j < b.len() && b[j].is_ascii_whitespace() {
            j += 1;
        }
        let end = text[j..].find('\n').map_or(text.len(), |e| j + e);
        if end > j {
            found = Some(&text[j..end]);
            i = end;
        } else {
            i += 1;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Scope = Scope {
        think: true,
        tail_chars: 0,
        boxes: Boxes::Last,
    };

    #[test]
    fn scope_excludes_the_reasoning_and_keeps_the_tail() {
        let strict = Scope {
            think: false,
            ..ALL
        };
        let r = "<think>so \\boxed{4}</think><answer></answer>";
        assert_eq!(extract(r, &[Extract::Boxed], strict), None);
        assert_eq!(extract(r, &[Extract::Boxed], ALL).as_deref(), Some("4"));
        // Cut off while thinking: nothing counts.
        assert_eq!(
            extract("<think>it is \\boxed{4}", &[Extract::Boxed], strict),
            None
        );
        assert_eq!(tail("aé b", 2), " b");
        assert_eq!(tail("ab", 5), "ab");
    }

    #[test]
    fn answer_tags_lines_and_runs() {
        let r = "<think>x</think><answer>The answer is 7.</answer>";
        assert_eq!(extract(r, &[Extract::AnswerTag], ALL).as_deref(), Some("7"));
        assert_eq!(
            first_answer_tag("<answer>a\nb</answer><answer>c</answer>"),
            Some("c")
        );
        assert_eq!(answer_line("x\nAnswer: 5\nanswer :  $6$\n"), Some("$6$"));
        assert_eq!(answer_line("the answer is 5"), None);
        let run = Scope {
            boxes: Boxes::Run,
            ..ALL
        };
        assert_eq!(
            extract("\\boxed{1} and \\boxed{2}", &[Extract::Boxed], run).as_deref(),
            Some("1, 2")
        );
    }
}
