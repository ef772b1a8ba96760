//! LaTeX environments (`$..$`, `\\[..\\]`, ...) and their joined chains.

use super::boxes::boxes_all;
use super::numbers::{digits, percent_at};
use super::{find_capped, skip_ws};

const MAX_INLINE: usize = 2_000;
const MAX_DISPLAY: usize = 20_000;

/// A LaTeX environment at `i`, then up to five more joined by `,`, `and`, `or`.
pub(super) fn chain_at(t: &str, i: usize) -> Option<(usize, Vec<String>)> {
    let env = env_at(t, i, true)?;
    let mut values = env.values(t);
    let mut end = env.end;
    let b = t.as_bytes();
    for _ in 0..5 {
        let mut j = skip_ws(b, end);
        let rest = &t[j..];
        let sep = [",and", "and", ",or", "or", ","]
            .into_iter()
            .find(|s| rest.starts_with(s));
        let Some(sep) = sep else { break };
        j = skip_ws(b, j + sep.len());
        match env_at(t, j, true) {
            Some(next) => {
                values.extend(next.values(t));
                end = next.end;
            }
            None => break,
        }
    }
    Some((end, values))
}

pub(super) struct Env {
    content: (usize, usize),
    percent: bool,
    fraction: bool,
    end: usize,
}

impl Env {
    fn values(&self, t: &str) -> Vec<String> {
        let raw = &t[self.content.0..self.content.1];
        let mut v = if self.fraction {
            vec![raw.to_owned()]
        } else {
            boxes_all(raw)
        };
        if self.percent {
            for x in &mut v {
                x.push_str("\\%");
            }
        }
        v
    }
}

/// The environment alternatives of Math-Verify's pattern, tried in its order.
pub(super) fn env_at(t: &str, i: usize, plain: bool) -> Option<Env> {
    let b = t.as_bytes();
    let prev = if i > 0 { b.get(i - 1).copied() } else { None };
    let rest = t.get(i..).filter(|r| !r.is_empty())?;
    let (c0, c1, close_len, fraction) = if rest.starts_with("$$") && prev != Some(b'\\') {
        let j = find_capped(t, i + 2, "$$", MAX_DISPLAY)?;
        (i + 2, j, 2, false)
    } else if rest.starts_with("\\[") && prev != Some(b'\\') {
        let j = find_capped(t, i + 2, "\\]", MAX_DISPLAY)?;
        (i + 2, j, 2, false)
    } else if rest.starts_with('$')
        && prev != Some(b'\\')
        && !prev.is_some_and(|p| p.is_ascii_digit())
    {
        let mut j = i + 1;
        loop {
            match b.get(j) {
                None | Some(b'\n') => return None,
                Some(b'\\') if b.get(j + 1) == Some(&b'$') => j += 2,
                Some(b'$') => break,
                _ => j += 1,
            }
            if j - i > MAX_INLINE {
                return None;
            }
        }
        (i + 1, j, 1, false)
    } else if rest.starts_with("\\(") && prev != Some(b'\\') {
        let j = find_capped(t, i + 2, "\\)", MAX_INLINE)?;
        if t[i + 2..j].contains('\n') {
            return None;
        }
        (i + 2, j, 2, false)
    } else if b[i].is_ascii_whitespace() && b.get(i + 1) == Some(&b'[') {
        let mut j = i + 2;
        while j < b.len() && !matches!(b[j], b'\n' | b'[' | b']') && j - i < MAX_INLINE {
            j += 1;
        }
        if b.get(j) != Some(&b']') || !b.get(j + 1).is_some_and(u8::is_ascii_whitespace) {
            return None;
        }
        // The closing whitespace is part of the match.
        (i + 2, j, 2, false)
    } else if plain && (rest.starts_with("\\frac") || rest.starts_with("-\\frac")) {
        let end = simple_fraction(t, i)?;
        (i, end, 0, true)
    } else {
        return None;
    };
    if c1 <= c0 {
        return None;
    }
    let mut end = c1 + close_len;
    // `\s*` then an optional percent sign or word.
    end = skip_ws(b, end);
    let percent = match percent_at(t, end, true) {
        Some(after) => {
            end = after;
            true
        }
        None => false,
    };
    Some(Env {
        content: (c0, c1),
        percent,
        fraction,
        end,
    })
}

/// `-?\frac{n}{n}` with `n = -?\d+([.,]\d+)?`: its end.
pub(super) fn simple_fraction(t: &str, i: usize) -> Option<usize> {
    let mut j = i + usize::from(t[i..].starts_with('-'));
    j += "\\frac".len();
    for _ in 0..2 {
        let b = t.as_bytes();
        if b.get(j) != Some(&b'{') {
            return None;
        }
        j += 1;
        if b.get(j) == Some(&b'-') {
            j += 1;
        }
        let d = digits(b, j);
        if d == 0 {
            return None;
        }
        j += d;
        if matches!(b.get(j), Some(b'.' | b',')) && digits(b, j + 1) > 0 {
            j += 1 + digits(b, j + 1);
        }
        if b.get(j) != Some(&b'}') {
            return None;
        }
        j += 1;
    }
    Some(j)
}
