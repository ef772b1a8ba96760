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
const MAX_INLINE: usize = 2_000;
const MAX_DISPLAY: usize = 20_000;

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
    let expr = MvConfig { latex: false, ..cfg };
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

/// `\boxed` candidates: environments holding boxes, and the trailing run of
/// bare boxes.
fn boxed(t: &str, prio: u16, out: &mut Vec<Cand>) {
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
fn boxes_all(s: &str) -> Vec<String> {
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
fn next_box(s: &str, from: usize) -> Option<(usize, usize)> {
    let mut i = from;
    loop {
        let at = [find(s, i, "\\boxed"), find(s, i, "\\fbox")].into_iter().flatten().min()?;
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
fn boxed_run_closed(s: &str) -> (Vec<String>, bool) {
    // All boxes, left to right, with their command start and content span.
    let mut boxes: Vec<(usize, usize, usize)> = Vec::new();
    let mut i = 0;
    let mut unclosed: Option<usize> = None;
    loop {
        let Some(at) = [find(s, i, "\\boxed"), find(s, i, "\\fbox")].into_iter().flatten().min()
        else {
            break;
        };
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

fn has_separator(s: &str) -> bool {
    s.contains(',') || s.contains(';') || words(s).any(|w| w == "and" || w == "or")
}

fn words(s: &str) -> impl Iterator<Item = &str> {
    s.split(|c: char| !c.is_alphanumeric() && c != '_')
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
        let prefixed = t.as_bytes().get(at).is_some_and(|c| c.is_ascii_whitespace() || *c == b'=');
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

/// A LaTeX environment at `i`, then up to five more joined by `,`, `and`, `or`.
fn chain_at(t: &str, i: usize) -> Option<(usize, Vec<String>)> {
    let env = env_at(t, i, true)?;
    let mut values = env.values(t);
    let mut end = env.end;
    let b = t.as_bytes();
    for _ in 0..5 {
        let mut j = skip_ws(b, end);
        let rest = &t[j..];
        let sep = [",and", "and", ",or", "or", ","].into_iter().find(|s| rest.starts_with(s));
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

struct Env {
    content: (usize, usize),
    percent: bool,
    fraction: bool,
    end: usize,
}

impl Env {
    fn values(&self, t: &str) -> Vec<String> {
        let raw = &t[self.content.0..self.content.1];
        let mut v = if self.fraction { vec![raw.to_owned()] } else { boxes_all(raw) };
        if self.percent {
            for x in &mut v {
                x.push_str("\\%");
            }
        }
        v
    }
}

/// The environment alternatives of Math-Verify's pattern, tried in its order.
fn env_at(t: &str, i: usize, plain: bool) -> Option<Env> {
    let b = t.as_bytes();
    let prev = if i > 0 { b.get(i - 1).copied() } else { None };
    let rest = t.get(i..).filter(|r| !r.is_empty())?;
    let (c0, c1, close_len, fraction) = if rest.starts_with("$$") && prev != Some(b'\\') {
        let j = find_capped(t, i + 2, "$$", MAX_DISPLAY)?;
        (i + 2, j, 2, false)
    } else if rest.starts_with("\\[") && prev != Some(b'\\') {
        let j = find_capped(t, i + 2, "\\]", MAX_DISPLAY)?;
        (i + 2, j, 2, false)
    } else if rest.starts_with('$') && prev != Some(b'\\') && !prev.is_some_and(|p| p.is_ascii_digit()) {
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
    let mut percent = false;
    for p in ["\\%", "%", "percentage", "Percentage", "percent", "Percent", "pct", "Pct"] {
        if t[end..].starts_with(p) {
            end += p.len();
            percent = true;
            break;
        }
    }
    Some(Env {
        content: (c0, c1),
        percent,
        fraction,
        end,
    })
}

/// `-?\frac{n}{n}` with `n = -?\d+([.,]\d+)?`: its end.
fn simple_fraction(t: &str, i: usize) -> Option<usize> {
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

/// Plain numbers and expressions anywhere (priority 300).
fn numbers(t: &str, out: &mut Vec<Cand>) {
    let b = t.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let prefix_ok = i == 0 || b[i - 1].is_ascii_whitespace() || b[i - 1] == b'=';
        let starts = b[i].is_ascii_digit() || matches!(b[i], b'-' | b'.' | b'(' | b'*' | b'$') || b[i] >= 0x80;
        if prefix_ok && starts {
            if let Some((end, values)) = number_or_expr_at(t, i) {
                out.push(Cand::new(300, i, end, values));
                i = end.max(i + 1);
                continue;
            }
        }
        i += 1;
    }
}

const CURRENCY: &str = "$€£¥₹₽₪₩₫฿₡₢₣₤₥₦₧₨₭₮₯₰₱₲₳₴₵₶₷₸₺₻₼₾₿";

/// At `i` (just after the prefix character): `**`? currency? then an
/// expression with an operator (and its suffix), else a number.
fn number_or_expr_at(t: &str, i: usize) -> Option<(usize, Vec<String>)> {
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

fn is_expr_char(c: u8) -> bool {
    c.is_ascii_digit() || c.is_ascii_whitespace() || b".+-*/^()".contains(&c)
}

/// `-?\(?-?\d S* op S+ \)?` followed by its suffix (longest such).
fn expr_at(t: &str, i: usize) -> Option<(usize, Vec<String>)> {
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
    while e < b.len() && is_expr_char(b[e]) && e - i < MAX_INLINE {
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
fn number_at(t: &str, i: usize) -> Option<(usize, Vec<String>)> {
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
    let after = skip_ws(b, end);
    for p in ["%", "percentage", "Percentage", "percent", "Percent", "pct", "Pct"] {
        if t[after..].starts_with(p) {
            num.push_str("\\%");
            stop = after + p.len();
            break;
        }
    }
    Some((stop, vec![num]))
}

/// `[1-9]\d{0,2}([ ,]\d{3})+(\.\d+)?`: (end of the integer part, decimal point, end).
fn thousands(b: &[u8], s: usize) -> Option<(usize, Option<usize>, usize)> {
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

fn digits(b: &[u8], i: usize) -> usize {
    b.get(i..).map_or(0, |r| r.iter().take_while(|c| c.is_ascii_digit()).count())
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

fn find(s: &str, from: usize, needle: &str) -> Option<usize> {
    crate::scan::find_bytes(s.as_bytes().get(from..)?, needle.as_bytes()).map(|i| i + from)
}

fn find_capped(s: &str, from: usize, needle: &str, cap: usize) -> Option<usize> {
    let end = (from + cap).min(s.len());
    let mut end = end;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    crate::scan::find_bytes(s.as_bytes().get(from..end)?, needle.as_bytes()).map(|i| i + from)
}

fn find_ci(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    b.get(from..)?
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
        .map(|i| i + from)
}

/// Index of the `}` closing the `{` at `open` (Math-Verify counts every
/// brace, escaped or not).
fn close_brace(b: &[u8], open: usize) -> Option<usize> {
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
