//! How an extracted answer is judged against the reference:
//! `equivalent` (lmmhost's mathematical equivalence), `mathruler`
//! (the same, with MathRuler's two strict rules) or `dapo` (DAPO's string
//! normalization, then equality).

use crate::math::equivalent;
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compare {
    /// `lmmhost_sdk::math::equivalent` (docs/math-equivalence.md).
    Equivalent,
    /// MathRuler's `grade_answer` (EasyR1, ReVisual-R1, RL with cold start):
    /// equivalence, but two fractions `a/b` must be written alike (an
    /// unreduced fraction is wrong), and an integer reference needs an
    /// integer answer (`6^2`, `42 apples`, `x = 5` are wrong for `36`, `42`, `5`).
    Mathruler,
    /// DAPO's `normalize_final_answer` on both sides, then string equality.
    Dapo,
    /// Math-Verify's `verify` on top of `equivalent`: against a plain value,
    /// an equation or `\approx` chain counts by its last part (`x = 5+1 = 6`
    /// is 6); `a < x \le b` and `x \in (a, b]` are the interval `(a, b]`;
    /// `(1,2)or(2,1)` and `p=5,q=2;p=7,q=2` are lists of tuples.
    MathVerify,
}

impl Compare {
    pub fn judge(self, prediction: &str, reference: &str) -> bool {
        match self {
            Compare::Equivalent => equivalent(prediction, reference),
            Compare::Mathruler => mathruler(prediction, reference),
            Compare::Dapo => dapo_normalize(prediction) == dapo_normalize(reference),
            Compare::MathVerify => mv_equivalent(prediction, reference),
        }
    }
}

fn mv_equivalent(prediction: &str, reference: &str) -> bool {
    if equivalent(prediction, reference) {
        return true;
    }
    let p = mv_rewrite(prediction);
    let mut r = mv_rewrite(reference);
    // Math-Verify reads `\\in` in a response, and an inequality chain in the
    // reference as an interval (not the other way round).
    let p = match p.split_once("\\in ") {
        Some((_, set)) => set.trim().to_owned(),
        None => p,
    };
    if let Some(interval) = chain_to_interval(&r) {
        r = interval;
    }
    if equivalent(&p, &r) {
        return true;
    }
    // Math-Verify compares a value with an equation's right side when the
    // left side is a variable or the equation is a chain; two plain
    // equations are compared as equations (above).
    let (pl, rl) = (last_parts(&p, true), last_parts(&r, false));
    let chain = |l: &Option<(Vec<String>, bool)>| l.as_ref().is_some_and(|x| x.1);
    if pl.is_none() && rl.is_none() || pl.is_some() && rl.is_some() && !chain(&pl) && !chain(&rl) {
        return false;
    }
    let ps = pl.map_or_else(|| vec![p.clone()], |x| x.0);
    let rs = rl.map_or_else(|| vec![r.clone()], |x| x.0);
    ps.iter().any(|a| rs.iter().any(|b| equivalent(a, b)))
}

/// The rewrites of [`Compare::MathVerify`] that change an answer's shape.
fn mv_rewrite(s: &str) -> String {
    let mut t = s
        .trim()
        .trim_matches('$')
        .trim()
        .replace("\\ ", " ")
        .replace(")or(", "), (");
    if !t.contains("\\begin") {
        t = t.replace("\\\\", "\\");
    }
    t = t.replace("\\$", "");
    if t.contains(';') && t.contains('=') {
        // `p=5,q=2;p=7,q=2`: each group of assignments is a tuple of values.
        let groups: Vec<String> = t
            .split(';')
            .map(|g| {
                let vals: Vec<&str> = g
                    .split(',')
                    .map(|a| a.rsplit('=').next().unwrap_or(a).trim())
                    .collect();
                format!("({})", vals.join(", "))
            })
            .collect();
        t = groups.join(", ");
    }
    t
}

/// `a < x \le b` -> `(a, b]`.
fn chain_to_interval(s: &str) -> Option<String> {
    const OPS: [(&str, bool); 6] = [
        ("\\leqslant", false),
        ("\\leq", false),
        ("\\le", false),
        ("<=", false),
        ("≤", false),
        ("<", true),
    ];
    let mut found: Vec<(usize, usize, bool)> = Vec::new();
    let mut i = 0;
    while i < s.len() {
        match OPS.iter().find(|(op, _)| s[i..].starts_with(op)) {
            Some((op, strict)) => {
                found.push((i, op.len(), *strict));
                i += op.len();
            }
            None => i += s[i..].chars().next().map_or(1, char::len_utf8),
        }
    }
    let [(a, la, sa), (b, lb, sb)] = found[..] else {
        return None;
    };
    let (lo, var, hi) = (s[..a].trim(), s[a + la..b].trim(), s[b + lb..].trim());
    if lo.is_empty() || var.is_empty() || hi.is_empty() {
        return None;
    }
    let open = if sa { '(' } else { '[' };
    let close = if sb { ')' } else { ']' };
    Some(format!("{open}{lo}, {hi}{close}"))
}

/// Positions of `=` that are not part of `<=`, `>=`, `!=`.
fn eq_positions(s: &str) -> impl Iterator<Item = usize> + '_ {
    let b = s.as_bytes();
    (0..b.len())
        .filter(move |&i| b[i] == b'=' && !(i > 0 && matches!(b[i - 1], b'<' | b'>' | b'!')))
}

/// The parts an equation is compared by: after the last `=` when the left
/// side is a variable (`x`, `y_1`, `f(x)`; any left side with `any_lhs`, as
/// Math-Verify treats a response) or there are several `=`; both
/// sides of a final `\\approx`. The flag tells a chain (several `=` or an
/// `\\approx`). `None` when `s` is no such equation.
fn last_parts(s: &str, any_lhs: bool) -> Option<(Vec<String>, bool)> {
    let eqs: Vec<usize> = eq_positions(s).collect();
    let approx = s.contains("\\approx");
    let last = match eqs[..] {
        [] if approx => s,
        [] => return None,
        [i] if any_lhs || is_variable(&s[..i]) => &s[i + 1..],
        [_] if approx => s,
        [_] => return None,
        [.., i] => &s[i + 1..],
    };
    let mut parts: Vec<String> = last
        .split("\\approx")
        .map(|p| p.trim().to_owned())
        .collect();
    parts.retain(|p| !p.is_empty());
    Some((parts, eqs.len() > 1 || approx))
}

/// `x`, `y_1`, `y_{1}`, `f(x)`, `\\theta`.
fn is_variable(s: &str) -> bool {
    let s = s.trim();
    let s = s
        .split_once('(')
        .map_or(s, |(f, args)| if args.ends_with(')') { f } else { s });
    let (name, sub) = s.split_once('_').unwrap_or((s, ""));
    let name = name.strip_prefix('\\').unwrap_or(name);
    let name_ok = name.len() == 1 && name.chars().all(|c| c.is_ascii_alphabetic())
        || name.len() > 1 && s.starts_with('\\') && name.chars().all(|c| c.is_ascii_alphabetic());
    let sub = sub.trim_matches(|c| c == '{' || c == '}');
    name_ok && sub.chars().all(|c| c.is_ascii_alphanumeric())
}

/// Longer answers are not graded by MathRuler-like rules (its sympy call
/// would not finish either); this bounds a hostile response's cost.
const MAX_RULER_LEN: usize = 10_000;

fn mathruler(prediction: &str, reference: &str) -> bool {
    if prediction.len() > MAX_RULER_LEN || reference.len() > MAX_RULER_LEN {
        return false;
    }
    let (p, r) = (ruler_normal(prediction), ruler_normal(reference));
    if p == r && !p.is_empty() {
        return true;
    }
    // MathRuler turns LaTeX into text and hands it to sympy: a sentence
    // (R1-V's whole-response fallback) never parses.
    if is_prose(prediction) {
        return false;
    }
    if is_simple_fraction(&p) && is_simple_fraction(&r) {
        return false;
    }
    // sympy is not asked about `^{..}` (MathRuler's "might hang" list), and
    // a comma list without brackets is one string to it (so sets are ordered).
    if p.contains("^{") || p.contains("^(") || r.contains("^{") || r.contains("^(") {
        return false;
    }
    let bracketed = |s: &str| s.starts_with(['(', '[']);
    if (p.contains(',') || r.contains(',')) && !bracketed(&p) && !bracketed(&r) {
        return false;
    }
    if is_int(&p) != is_int(&r) {
        return false;
    }
    equivalent(prediction, reference)
}

/// MathRuler's light normalization: `$`, `\$`, `\%`, a whole `\text{..}`,
/// degrees, its unit words, spaces, `\frac{a}{b}` -> `a/b`, case.
fn ruler_normal(s: &str) -> String {
    let mut t = s.trim().trim_matches('$').trim().to_owned();
    // MATH's normalization: `x = 5` -> `5` when the left side is short.
    if let Some((lhs, rhs)) = t.split_once('=') {
        if lhs.trim().len() <= 2 && !rhs.contains('=') {
            t = rhs.trim().to_owned();
        }
    }
    // pylatexenc renders `\boxed{x}` and `\text{x}` as their content.
    for cmd in ["\\boxed{", "\\text{"] {
        if let Some(inner) = t.strip_prefix(cmd).and_then(|x| x.strip_suffix('}')) {
            t = inner.trim().to_owned();
        }
    }
    for (a, b) in [
        ("\\%", ""),
        ("\\$", ""),
        ("$", ""),
        ("%", ""),
        ("^{\\circ}", ""),
        ("^\\circ", ""),
        ("\\{", ""),
        ("\\}", ""),
    ] {
        t = t.replace(a, b);
    }
    for unit in [
        "degree",
        "centimeter",
        "cm",
        "meter",
        "mile",
        "second",
        "minute",
        "hour",
        "day",
        "week",
        "month",
        "year",
        "foot",
        "feet",
        "inch",
        "yard",
    ] {
        for suffix in ["es", "s", ""] {
            t = t.replace(&format!("{unit}{suffix}"), "");
        }
    }
    for cmd in ["\\dfrac", "\\tfrac", "\\frac"] {
        while let Some(i) = t.find(cmd) {
            let rest = &t[i + cmd.len()..];
            let parts = rest
                .strip_prefix('{')
                .and_then(|r| r.split_once('}'))
                .and_then(|(a, r)| Some((a, r.strip_prefix('{')?.split_once('}')?)));
            // A digit before it makes a mixed number (`2\\frac{1}{2}` = 2+1/2).
            let plus = if t[..i].ends_with(|c: char| c.is_ascii_digit()) {
                "+"
            } else {
                ""
            };
            match parts {
                Some((a, (b, tail))) => t = format!("{}{plus}{a}/{b}{tail}", &t[..i]),
                None => break,
            }
        }
    }
    let t: String = t.chars().filter(|c| !c.is_whitespace()).collect();
    let t = t.trim_matches(|c| c == '{' || c == '}').to_lowercase();
    // Properly formatted thousands commas.
    if t.split(',')
        .skip(1)
        .all(|g| g.len() == 3 && g.bytes().all(|c| c.is_ascii_digit()))
    {
        t.replace(',', "")
    } else {
        t
    }
}

/// Two or more words of three or more letters outside LaTeX commands.
fn is_prose(s: &str) -> bool {
    let mut words = 0;
    let mut run = 0;
    let mut command = false;
    for c in s.chars().chain([' ']) {
        if c == '\\' {
            command = true;
            run = 0;
        } else if c.is_alphabetic() {
            run += 1;
        } else {
            if run >= 3 && !command {
                words += 1;
            }
            run = 0;
            command = false;
        }
    }
    words >= 2
}

fn is_simple_fraction(s: &str) -> bool {
    let s = s.strip_prefix('-').unwrap_or(s);
    match s.split_once('/') {
        Some((a, b)) => {
            !a.is_empty()
                && !b.is_empty()
                && a.bytes().all(|c| c.is_ascii_digit())
                && b.bytes().all(|c| c.is_ascii_digit())
                && !b.trim_start_matches('0').is_empty()
        }
        None => false,
    }
}

fn is_int(s: &str) -> bool {
    s.parse::<f64>()
        .is_ok_and(|v| v.is_finite() && (v - v.round()).abs() <= 1e-7)
}

const DAPO_SUBSTITUTIONS: [(&str, &str); 10] = [
    ("an ", ""),
    ("a ", ""),
    (".$", "$"),
    ("\\$", ""),
    ("\\ ", ""),
    (" ", ""),
    ("mbox", "text"),
    (",\\text{and}", ","),
    ("\\text{and}", ","),
    ("\\text{m}", "\\text{}"),
];

const DAPO_REMOVED: [&str; 41] = [
    "square",
    "ways",
    "integers",
    "dollars",
    "mph",
    "inches",
    "hours",
    "km",
    "units",
    "\\ldots",
    "sue",
    "points",
    "feet",
    "minutes",
    "digits",
    "cents",
    "degrees",
    "cm",
    "gm",
    "pounds",
    "meters",
    "meals",
    "edges",
    "students",
    "childrentickets",
    "multiples",
    "\\text{s}",
    "\\text{.}",
    "\\text{\ns}",
    "\\text{}^2",
    "\\text{}^3",
    "\\text{\n}",
    "\\text{}",
    "\\mathrm{th}",
    "^\\circ",
    "^{\\circ}",
    "\\;",
    ",\\!",
    "{,}",
    "\"",
    "\\dots",
];

/// DAPO's `normalize_final_answer` (verl `math_dapo.py`), step for step.
pub fn dapo_normalize(answer: &str) -> String {
    let mut s = answer.rsplit('=').next().unwrap_or(answer).to_owned();
    for (a, b) in DAPO_SUBSTITUTIONS {
        s = s.replace(a, b);
    }
    for r in DAPO_REMOVED {
        s = s.replace(r, "");
    }
    // `(.*?)(\$)(.*?)(\$)(.*)` -> `$\3$`, per line (`.` stops at newlines).
    s = s
        .split('\n')
        .map(|line| {
            let mut it = line.splitn(3, '$');
            match (it.next(), it.next(), it.next()) {
                (Some(_), Some(mid), Some(_)) => format!("${mid}$"),
                _ => line.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    for cmd in ["\\text{", "\\textbf{", "\\overline{"] {
        s = unwrap_lazy(&s, cmd);
    }
    // `(\\boxed\{)(.*)(\})` -> `\2`: first `\boxed{` to the line's last `}`.
    s = s
        .split('\n')
        .map(|line| match line.find("\\boxed{") {
            Some(i) => match line.rfind('}') {
                Some(j) if j >= i + 7 => {
                    format!("{}{}{}", &line[..i], &line[i + 7..j], &line[j + 1..])
                }
                _ => line.to_owned(),
            },
            None => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    s = shorthand(&s, "frac", 2);
    s = shorthand(&s, "sqrt", 1);
    s = s.replace('$', "");
    let no_commas = s.replace(',', "");
    if !no_commas.is_empty() && no_commas.chars().all(|c| c.is_numeric()) {
        s = no_commas;
    }
    s.trim().to_owned()
}

/// `(\\cmd\{)(.*?)(\})` -> `\2`, left to right, within a line.
fn unwrap_lazy(s: &str, cmd: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(cmd) {
        let after = &rest[i + cmd.len()..];
        match after.find(['}', '\n']) {
            Some(j) if after.as_bytes()[j] == b'}' => {
                out.push_str(&rest[..i]);
                out.push_str(&after[..j]);
                rest = &after[j + 1..];
            }
            _ => {
                out.push_str(&rest[..i + cmd.len()]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// `(frac)([^{])(.)` -> `frac{\2}{\3}` and `(sqrt)([^{])` -> `sqrt{\2}`.
fn shorthand(s: &str, word: &str, args: usize) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(word) {
        out.push_str(&rest[..i + word.len()]);
        let after = &rest[i + word.len()..];
        let mut chars = after.chars();
        let a = chars.next();
        let b = if args == 2 { chars.next() } else { None };
        match (a, b) {
            (Some('{'), _) => rest = after,
            (Some(a), Some(b)) if args == 2 && b != '\n' => {
                out.push_str(&format!("{{{a}}}{{{b}}}"));
                rest = &after[a.len_utf8() + b.len_utf8()..];
            }
            (Some(a), _) if args == 1 => {
                out.push_str(&format!("{{{a}}}"));
                rest = &after[a.len_utf8()..];
            }
            _ => rest = after,
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dapo_normalization_steps() {
        assert_eq!(dapo_normalize("$\\boxed{60}$"), "60");
        assert_eq!(dapo_normalize("x = 1,000"), "1000");
        assert_eq!(dapo_normalize("\\frac12"), "\\frac{1}{2}");
        assert_eq!(dapo_normalize("\\sqrt3"), "\\sqrt{3}");
        assert_eq!(dapo_normalize("12 \\text{ cm}^2"), "12");
        assert_eq!(dapo_normalize("The answer is $5$."), "5");
        assert_eq!(dapo_normalize("30^\\circ"), "30");
        assert_ne!(dapo_normalize("0.5"), dapo_normalize("\\frac{1}{2}"));
    }

    #[test]
    fn math_verify_relations_chains_and_groups() {
        assert!(mv_equivalent("x = 5+5+1 = 1/3 \\approx 11", "x = 1/3"));
        assert!(mv_equivalent("x\\approx11", "11"));
        assert!(mv_equivalent("x \\in [-2,7]", "-2 \\le x \\le 7"));
        assert!(mv_equivalent("(0,1)", "0<f(x)<1"));
        assert!(!mv_equivalent("(0,1)", "0<f(x)\\le 1"));
        assert!(mv_equivalent("(11,7)or(7,11)", "(7,11),\\ (11,7)"));
        assert!(mv_equivalent("p=5,q=2;p=7,q=2", "(5,2),(7,2)"));
        assert!(!mv_equivalent("x = 2", "y = 3"));
        assert!(
            !mv_equivalent("11a+c", "7 = 11a+c"),
            "the reference's left side is no variable"
        );
        assert!(mv_equivalent("\\frac{1}{2} = \\frac{10}{9}", "10/9"));
    }

    #[test]
    fn mathruler_strict_rules() {
        assert!(mathruler("\\frac{1}{2}", "1/2"));
        assert!(!mathruler("\\frac{2}{4}", "\\frac{1}{2}"), "unreduced");
        assert!(mathruler("0.5", "\\frac{1}{2}"));
        assert!(
            !mathruler("6^2", "36"),
            "integer reference, non-integer text"
        );
        assert!(mathruler("7.0", "7"));
        assert!(mathruler("60^\\circ", "60"));
        assert!(mathruler("1,000", "1000"));
        assert!(
            mathruler("x = 5", "5"),
            "MATH's normalization drops a short left side"
        );
    }
}
