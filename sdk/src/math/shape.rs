//! The outer shape of a final answer: a set, tuple, interval, union,
//! relation, percentage, expression or plain text. The expression parser only
//! sees the leaves.

use super::parse::{parse_expr, Expr};

/// How deep sets/tuples may nest inside each other.
const MAX_SHAPE_DEPTH: u32 = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelOp {
    Eq,
    Ne,
    Lt,
    Le,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Expr(Expr),
    /// `p%`: equal to `p` or to `p/100` (Math-Verify accepts both).
    Percent(Expr),
    /// `lhs op rhs` with `>`/`>=` flipped to `<`/`<=`.
    Rel(Expr, RelOp, Expr),
    /// `x = value`, `(p, q) = (3, 2)`, `f(x) = ...`: the value is the answer;
    /// `lhs` (when it parses) lets two equations be compared as equations.
    Assign {
        lhs: Option<Expr>,
        value: Box<Answer>,
    },
    /// Tuple or interval: the bracket characters matter, order matters.
    Seq {
        open: u8,
        close: u8,
        items: Vec<Answer>,
    },
    /// `\{...\}`, a bare comma list or `a \pm b`: order does not matter.
    Set(Vec<Answer>),
    /// A bare comma list (`1, 2`) or `a or b`: unordered against sets and
    /// other lists, ordered against a parenthesised tuple (the model wrote
    /// the pair without brackets).
    List(Vec<Answer>),
    /// `A \cup B`: order does not matter.
    Union(Vec<Answer>),
    /// Anything else, compared as lower-cased text without spaces.
    Text(String),
}

pub fn parse_answer(s: &str) -> Answer {
    shape(s, 0)
}

fn shape(s: &str, depth: u32) -> Answer {
    let s = s.trim();
    if depth > MAX_SHAPE_DEPTH {
        return text(s);
    }
    let parts = split_top(s, Sep::Cup);
    if parts.len() > 1 {
        return Answer::Union(parts.into_iter().map(|p| shape(p, depth + 1)).collect());
    }
    let parts = split_top(s, Sep::OrAnd);
    if parts.len() > 1 {
        return Answer::List(parts.into_iter().map(|p| shape(p, depth + 1)).collect());
    }
    if is_thousands(s) {
        let digits: String = s.chars().filter(|c| *c != ',' && *c != ' ').collect();
        if let Ok(v) = digits.parse::<f64>() {
            return Answer::Expr(Expr::Num(v));
        }
    }
    // `\{1, 2\}`, and `{1, 2}` where the braces are not a TeX group.
    let brace_set = wrapped(s, "\\{", "\\}").or_else(|| {
        let inner = s.strip_prefix('{')?.strip_suffix('}')?;
        (closes_at_end(s.as_bytes()) && split_top(inner, Sep::Comma).len() > 1).then_some(inner)
    });
    if let Some(m) = matrix(s, depth) {
        return m;
    }
    if let Some(inner) = brace_set {
        let items = split_top(inner, Sep::Comma);
        return Answer::Set(
            items
                .into_iter()
                .filter(|p| !p.trim().is_empty())
                .map(|p| shape(p, depth + 1))
                .collect(),
        );
    }
    let bytes = s.as_bytes();
    if bytes.len() >= 2
        && matches!(bytes[0], b'(' | b'[')
        && matches!(bytes[bytes.len() - 1], b')' | b']')
        && closes_at_end(bytes)
    {
        let inner = &s[1..s.len() - 1];
        let items = split_top(inner, Sep::Comma);
        if items.len() > 1 {
            return Answer::Seq {
                open: bytes[0],
                close: bytes[bytes.len() - 1],
                items: items.into_iter().map(|p| shape(p, depth + 1)).collect(),
            };
        }
    }
    let items = split_top(s, Sep::Comma);
    if items.len() > 1 {
        return Answer::List(items.into_iter().map(|p| shape(p, depth + 1)).collect());
    }
    if let Some(rel) = relation(s, depth) {
        return rel;
    }
    if let Some((a, b)) = split_pm(s) {
        if let (Ok(a), Ok(b)) = (parse_expr(a), parse_expr(b)) {
            return Answer::Set(vec![
                Answer::Expr(Expr::Sum(vec![(false, a.clone()), (false, b.clone())])),
                Answer::Expr(Expr::Sum(vec![(false, a), (true, b)])),
            ]);
        }
    }
    if let Some(p) = s.strip_suffix('%') {
        if let Ok(e) = parse_expr(p) {
            return Answer::Percent(e);
        }
    }
    match parse_expr(s) {
        Ok(e) => Answer::Expr(e),
        Err(()) => text(s),
    }
}

fn text(s: &str) -> Answer {
    let mut t = String::with_capacity(s.len());
    for c in s.chars() {
        if !c.is_whitespace() && c != '{' && c != '}' {
            t.extend(c.to_lowercase());
        }
    }
    Answer::Text(t)
}

/// `1,234` / `12,345,678.5`: comma thousands separators.
fn is_thousands(s: &str) -> bool {
    is_grouped(s, ',') || is_grouped(s, ' ')
}

/// Digits in groups of three separated by `sep`, optional decimal part.
fn is_grouped(s: &str, sep: char) -> bool {
    let s = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (s, None),
    };
    if frac.is_some_and(|f| f.is_empty() || !f.bytes().all(|c| c.is_ascii_digit())) {
        return false;
    }
    let mut groups = int.split(sep);
    let Some(first) = groups.next() else {
        return false;
    };
    let mut n = 0;
    if first.is_empty() || first.len() > 3 || !first.bytes().all(|c| c.is_ascii_digit()) {
        return false;
    }
    for g in groups {
        if g.len() != 3 || !g.bytes().all(|c| c.is_ascii_digit()) {
            return false;
        }
        n += 1;
    }
    n > 0
}

fn wrapped<'a>(s: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let inner = s.strip_prefix(open)?.strip_suffix(close)?;
    // The opening brace must close at the very end: "\{1\} \cup \{2\}" is not one set.
    let mut depth = 1i32;
    let b = inner.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            match b[i + 1] {
                b'{' => depth += 1,
                b'}' => depth -= 1,
                _ => {}
            }
            if depth == 0 {
                return None;
            }
            i += 2;
            continue;
        }
        i += 1;
    }
    Some(inner)
}

/// Whether the bracket opening at 0 is closed by the last byte (any bracket
/// kind closes any, so half-open intervals count).
fn closes_at_end(b: &[u8]) -> bool {
    let mut depth = 0i32;
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => {
                depth -= 1;
                if depth == 0 {
                    return i == b.len() - 1;
                }
            }
            _ => {}
        }
    }
    false
}

#[derive(Clone, Copy)]
enum Sep {
    Comma,
    Cup,
    OrAnd,
}

/// Splits at top-level (outside any bracket) separators.
fn split_top(s: &str, sep: Sep) -> Vec<&str> {
    let b = s.as_bytes();
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth -= 1,
            _ => {}
        }
        if depth == 0 {
            let sep_len = match sep {
                Sep::Comma if c == b',' || c == b';' => 1,
                Sep::Cup
                    if b[i..].starts_with(b"\\cup")
                        && !b.get(i + 4).is_some_and(u8::is_ascii_alphabetic) =>
                {
                    4
                }
                Sep::OrAnd if c == b' ' => [" or ", " and "]
                    .iter()
                    .find(|w| s[i..].starts_with(**w))
                    .map_or(0, |w| w.len() - 1),
                _ => 0,
            };
            if sep_len > 0 {
                parts.push(&s[start..i]);
                i += sep_len;
                start = i;
                continue;
            }
        }
        i += 1;
    }
    parts.push(&s[start..]);
    parts
}

/// `x = 3` (variable dropped), `x \in [0,1]`, `2x + 1 = 5`, `x >= 5`.
fn relation(s: &str, depth: u32) -> Option<Answer> {
    let b = s.as_bytes();
    let mut d = 0i32;
    let mut found: Option<(usize, usize, &str)> = None;
    let mut count = 0;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'(' | b'[' | b'{' => d += 1,
            b')' | b']' | b'}' => d -= 1,
            _ => {}
        }
        if d == 0 {
            let op = ["<=", ">=", "!=", "\\in", "=", "<", ">"]
                .into_iter()
                .find(|op| b[i..].starts_with(op.as_bytes()));
            if let Some(op) = op {
                if op == "\\in" && b.get(i + 3).is_some_and(u8::is_ascii_alphabetic) {
                    i += 1;
                    continue;
                }
                count += 1;
                if found.is_none() {
                    found = Some((i, op.len(), op));
                }
                i += op.len();
                continue;
            }
        }
        i += 1;
    }
    let (at, len, op) = found?;
    let lhs = s[..at].trim();
    let rhs = s[at + len..].trim();
    if op == "=" || op == "\\in" {
        // Drop a leading "x =" / "f(x) =": the answer is the right-hand side.
        if is_simple_lhs(lhs) || is_name_lhs(lhs) {
            // In a chain "x = 2 + 2 = 4" the last part is the answer.
            let last = if count > 1 {
                s.rfind('=').map_or(rhs, |p| s[p + 1..].trim())
            } else {
                rhs
            };
            let lhs = if op == "=" {
                parse_expr(lhs).ok()
            } else {
                None
            };
            return Some(Answer::Assign {
                lhs,
                value: Box::new(shape(last, depth + 1)),
            });
        }
    }
    if count > 1 || lhs.is_empty() || rhs.is_empty() {
        return Some(text(s));
    }
    let (l, r) = (parse_expr(lhs).ok()?, parse_expr(rhs).ok()?);
    Some(match op {
        "=" => Answer::Rel(l, RelOp::Eq, r),
        "!=" => Answer::Rel(l, RelOp::Ne, r),
        "<" => Answer::Rel(l, RelOp::Lt, r),
        "<=" => Answer::Rel(l, RelOp::Le, r),
        ">" => Answer::Rel(r, RelOp::Lt, l),
        ">=" => Answer::Rel(r, RelOp::Le, l),
        _ => return Some(text(s)),
    })
}

/// A lone variable (`x`, `x_1`, `\theta`, `a_{n}`) or a function head `f(x)`.
fn is_simple_lhs(lhs: &str) -> bool {
    let t = lhs.trim();
    let head = match t.find('(') {
        Some(p) if t.ends_with(')') => &t[..p],
        _ => t,
    };
    let head = head.trim();
    if head.is_empty() {
        return false;
    }
    let name = head.split('_').next().unwrap_or(head);
    let name = name.strip_prefix('\\').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 8
        && name.bytes().all(|c| c.is_ascii_alphabetic())
        && (name.len() == 1 || head.starts_with('\\'))
}

/// A left-hand side that only names things: letters, brackets, commas,
/// `:`/`|`/`/` and commands, but no digits (`(p,q)`, `|AB|`, `\frac{NO}{BO}`,
/// `A:B`). Its right-hand side is the answer. Sums such as `x + y` are kept
/// as equations.
fn is_name_lhs(lhs: &str) -> bool {
    !lhs.is_empty()
        && lhs.bytes().all(|c| {
            c.is_ascii_alphabetic()
                || matches!(
                    c,
                    b'(' | b')'
                        | b'['
                        | b']'
                        | b'{'
                        | b'}'
                        | b','
                        | b':'
                        | b'|'
                        | b'\\'
                        | b'_'
                        | b' '
                        | b'/'
                )
        })
}

/// `a \pm b` at top level.
fn split_pm(s: &str) -> Option<(&str, &str)> {
    let at = s.find("\\pm")?;
    if s.as_bytes()
        .get(at + 3)
        .is_some_and(u8::is_ascii_alphabetic)
    {
        return None;
    }
    let (a, b) = (s[..at].trim(), s[at + 3..].trim());
    Some((if a.is_empty() { "0" } else { a }, b))
}

/// `\begin{pmatrix} a & b \\ c & d \end{pmatrix}` (also `bmatrix`, `matrix`,
/// `array`, optionally inside `[...]`/`(...)`): a sequence of rows, each a
/// sequence of cells, compared elementwise. The environment name does not
/// matter (Math-Verify treats `pmatrix` and `bmatrix` alike).
fn matrix(s: &str, depth: u32) -> Option<Answer> {
    let mut t = s.trim();
    if t.len() >= 2 && matches!(t.as_bytes()[0], b'[' | b'(') && closes_at_end(t.as_bytes()) {
        t = t[1..t.len() - 1].trim();
    }
    let rest = t.strip_prefix("\\begin{")?;
    let (env, body) = rest.split_once('}')?;
    if !matches!(
        env,
        "pmatrix" | "bmatrix" | "matrix" | "array" | "smallmatrix" | "Bmatrix"
    ) {
        return None;
    }
    let end_tag_at = body.rfind("\\end{")?;
    if !body[end_tag_at..].trim_end().ends_with('}') || !body[end_tag_at + 5..].starts_with(env) {
        return None;
    }
    let mut body = &body[..end_tag_at];
    if env == "array" {
        // Column spec `{cc}`.
        body = body
            .trim_start()
            .strip_prefix('{')
            .and_then(|b| b.split_once('}'))
            .map_or(body, |(_, b)| b);
    }
    let rows: Vec<Answer> = body
        .split("\\\\")
        .filter(|row| !row.trim().is_empty())
        .map(|row| Answer::Seq {
            open: b'r',
            close: b'r',
            items: row.split('&').map(|cell| shape(cell, depth + 1)).collect(),
        })
        .collect();
    Some(Answer::Seq {
        open: b'm',
        close: b'm',
        items: rows,
    })
}
