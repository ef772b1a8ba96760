//! Text cleanup before parsing: strips math delimiters, `\boxed`, spacing
//! commands, `\left`/`\right`, degree signs, units and `\text{}` wrappers, and
//! rewrites Unicode math symbols and relation commands to ASCII.

use crate::answer::last_boxed;

/// Words dropped when they follow a number (inside `\text{}` or bare at the
/// end). Single letters are only dropped inside `\text{}`/`\mbox{}`, where
/// they cannot be a variable.
const UNIT_WORDS: &[&str] = &[
    "cm",
    "mm",
    "km",
    "m",
    "meter",
    "meters",
    "metre",
    "metres",
    "centimeter",
    "centimeters",
    "millimeter",
    "millimeters",
    "kilometer",
    "kilometers",
    "inch",
    "inches",
    "ft",
    "feet",
    "foot",
    "yd",
    "yard",
    "yards",
    "mile",
    "miles",
    "kg",
    "g",
    "gram",
    "grams",
    "kilogram",
    "kilograms",
    "mg",
    "lb",
    "lbs",
    "pound",
    "pounds",
    "oz",
    "ounce",
    "ounces",
    "l",
    "liter",
    "liters",
    "litre",
    "litres",
    "ml",
    "s",
    "sec",
    "second",
    "seconds",
    "min",
    "minute",
    "minutes",
    "h",
    "hr",
    "hrs",
    "hour",
    "hours",
    "day",
    "days",
    "week",
    "weeks",
    "month",
    "months",
    "year",
    "years",
    "dollar",
    "dollars",
    "cent",
    "cents",
    "euro",
    "euros",
    "yuan",
    "unit",
    "units",
    "square",
    "sq",
    "cubic",
    "degree",
    "degrees",
    "deg",
    "radian",
    "radians",
    "mph",
    "km/h",
    "m/s",
    "kmh",
    "people",
    "persons",
    "students",
    "ways",
    "points",
    "times",
];

/// Words after a number that are maths, not a noun.
const NOT_NOUNS: &[&str] = &[
    "sin", "cos", "tan", "cot", "sec", "csc", "log", "exp", "sqrt", "and", "or",
];

fn is_unit_phrase(s: &str) -> bool {
    let mut any = false;
    for word in s.split(|c: char| c.is_whitespace() || c == '~') {
        if word.is_empty() {
            continue;
        }
        // "cm^2", "m^{3}"
        let base = word.split('^').next().unwrap_or(word);
        if !UNIT_WORDS.iter().any(|u| u.eq_ignore_ascii_case(base)) {
            return false;
        }
        any = true;
    }
    any
}

/// The cleaned answer text. Allocates one `String`.
pub fn normalize(input: &str) -> String {
    let fixed = fix_escapes(input);
    let mut s = fixed.trim();
    if let Some(b) = last_boxed(s) {
        s = b.trim();
    }
    s = strip_delimiters(s);
    let mut out = String::with_capacity(s.len() + 8);
    clean_into(s, &mut out, 0);
    strip_trailing_units(&mut out);
    let trimmed = out.trim().trim_end_matches('.').trim();
    if trimmed.len() != out.len() {
        out = trimmed.to_string();
    }
    out
}

/// `14{,}916` (a thousands separator in braces) -> `14916`, and a doubled
/// backslash before a command (`\\\\frac`, from over-escaped strings) ->
/// `\\frac` outside environments, where `\\\\` separates rows.
fn fix_escapes(s: &str) -> std::borrow::Cow<'_, str> {
    let doubled = !s.contains("\\begin")
        && s.as_bytes()
            .windows(3)
            .any(|w| w[0] == b'\\' && w[1] == b'\\' && w[2].is_ascii_alphabetic());
    let braced_comma = s.contains(",}") || s.contains(", }");
    if !doubled && !braced_comma {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut t = if braced_comma {
        drop_braced_commas(s)
    } else {
        s.to_owned()
    };
    if doubled {
        let mut out = String::with_capacity(t.len());
        let b = t.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'\\'
                && b.get(i + 1) == Some(&b'\\')
                && b.get(i + 2).is_some_and(u8::is_ascii_alphabetic)
            {
                i += 1;
                continue;
            }
            let c = t[i..].chars().next().unwrap_or(' ');
            out.push(c);
            i += c.len_utf8();
        }
        t = out;
    }
    std::borrow::Cow::Owned(t)
}

/// Removes `{,}` (also with spaces inside), a thousands separator.
fn drop_braced_commas(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('{') {
        let inner = &rest[i + 1..];
        let close = inner.find('}');
        match close {
            Some(c) if inner[..c].trim() == "," => {
                out.push_str(&rest[..i]);
                rest = &inner[c + 1..];
            }
            _ => {
                out.push_str(&rest[..=i]);
                rest = inner;
            }
        }
    }
    out.push_str(rest);
    out
}

fn strip_delimiters(mut s: &str) -> &str {
    loop {
        let before = s.len();
        s = s.trim();
        for (open, close) in [("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")] {
            if let Some(inner) = s.strip_prefix(open).and_then(|r| r.strip_suffix(close)) {
                s = inner;
            }
        }
        if s.len() == before {
            return s;
        }
    }
}

/// Commands whose brace argument is kept as plain text (or dropped as a unit).
const TEXT_COMMANDS: &[&str] = &[
    "text",
    "textbf",
    "textit",
    "textrm",
    "mbox",
    "mathrm",
    "mathbf",
    "mathit",
    "operatorname",
    "textnormal",
    "boldsymbol",
    "mathsf",
];

/// Commands that only affect spacing or sizing and are dropped.
const DROP_COMMANDS: &[&str] = &[
    "left",
    "right",
    "big",
    "Big",
    "bigg",
    "Bigg",
    "bigl",
    "bigr",
    "Bigl",
    "Bigr",
    "biggl",
    "biggr",
    "quad",
    "qquad",
    "displaystyle",
    "textstyle",
    "circ",
    "degree",
    "limits",
    "nolimits",
    "hfill",
    "medskip",
    "smallskip",
];

fn clean_into(s: &str, out: &mut String, depth: u32) {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'\\' => {
                let start = i + 1;
                let mut j = start;
                while j < b.len() && b[j].is_ascii_alphabetic() {
                    j += 1;
                }
                if j == start {
                    // One-character command: spacing, escaped symbols.
                    match b.get(start) {
                        // `11,\! 111`: a thousands separator, keep the digits together.
                        Some(b'!') if out.ends_with(',') => {
                            let mut k = start + 1;
                            while k < b.len() && b[k] == b' ' {
                                k += 1;
                            }
                            i = k;
                            continue;
                        }
                        Some(b'!' | b',' | b';' | b':' | b' ' | b'$') => {}
                        Some(b'%') => out.push('%'),
                        Some(_) => {
                            let ch_end = next_char_end(s, start);
                            out.push_str(&s[i..ch_end]);
                            i = ch_end;
                            continue;
                        }
                        None => {}
                    }
                    i = start + 1;
                    continue;
                }
                let name = &s[start..j];
                i = j;
                if DROP_COMMANDS.contains(&name) {
                    out.push(' ');
                    continue;
                }
                if TEXT_COMMANDS.contains(&name) {
                    let (content, after) = brace_arg(s, i);
                    i = after;
                    if is_unit_phrase(content) {
                        i = skip_power(s, i);
                    } else if depth < 8 {
                        out.push(' ');
                        clean_into(content, out, depth + 1);
                        out.push(' ');
                    }
                    continue;
                }
                let replacement = match name {
                    "dfrac" | "tfrac" | "cfrac" => "\\frac",
                    "le" | "leq" | "leqslant" => "<=",
                    "ge" | "geq" | "geqslant" => ">=",
                    "lt" => "<",
                    "gt" => ">",
                    "ne" | "neq" => "!=",
                    "dbinom" | "tbinom" => "\\binom",
                    "colon" => ":",
                    _ => "",
                };
                if replacement.is_empty() {
                    out.push('\\');
                    out.push_str(name);
                } else {
                    out.push_str(replacement);
                }
                // Keep `\pi2` from becoming the command `\pitwo`-like garbage later.
                if b.get(i).is_some_and(|x| x.is_ascii_alphanumeric()) {
                    out.push(' ');
                }
            }
            b'^' => {
                // `^\circ`, `^{\circ}`: degrees are dropped.
                let rest = &s[i + 1..];
                let rest_t = rest.trim_start();
                if let Some(r) = rest_t.strip_prefix("\\circ") {
                    i = s.len() - r.len();
                } else if let Some(r) = rest_t
                    .strip_prefix('{')
                    .map(str::trim_start)
                    .and_then(|r| r.strip_prefix("\\circ"))
                    .map(str::trim_start)
                    .and_then(|r| r.strip_prefix('}'))
                {
                    i = s.len() - r.len();
                } else {
                    out.push('^');
                    i += 1;
                }
            }
            b'~' | b'\t' | b'\n' | b'\r' => {
                out.push(' ');
                i += 1;
            }
            b'$' => i += 1,
            _ if c < 0x80 => {
                out.push(c as char);
                i += 1;
            }
            _ => {
                let end = next_char_end(s, i);
                let ch = &s[i..end];
                let rep = match ch {
                    "°" => "",
                    "−" | "–" => "-",
                    "×" => "\\times ",
                    "·" | "⋅" => "\\cdot ",
                    "÷" => "\\div ",
                    "π" => "\\pi ",
                    "∞" => "\\infty ",
                    "√" => "\\sqrt",
                    "≤" => "<=",
                    "≥" => ">=",
                    "≠" => "!=",
                    "∪" => "\\cup ",
                    "∈" => "\\in ",
                    "²" => "^2",
                    "³" => "^3",
                    "\u{a0}" | "\u{2009}" | "\u{202f}" => " ",
                    other => other,
                };
                out.push_str(rep);
                i = end;
            }
        }
    }
}

fn next_char_end(s: &str, i: usize) -> usize {
    let mut e = i + 1;
    while e < s.len() && !s.is_char_boundary(e) {
        e += 1;
    }
    e.min(s.len())
}

/// Content of the `{...}` starting at `i` (after optional spaces) and the
/// index after it; a bare token if there is no brace.
fn brace_arg(s: &str, mut i: usize) -> (&str, usize) {
    let b = s.as_bytes();
    while i < b.len() && b[i] == b' ' {
        i += 1;
    }
    if i < b.len() && b[i] == b'{' {
        let mut depth = 0usize;
        let mut j = i;
        while j < b.len() {
            match b[j] {
                b'\\' => {
                    j += 2;
                    continue;
                }
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        return (&s[i + 1..j], j + 1);
                    }
                }
                _ => {}
            }
            j += 1;
        }
        // Unclosed: take the rest.
        (&s[(i + 1).min(s.len())..], s.len())
    } else {
        let start = i;
        let end = if i < b.len() { next_char_end(s, i) } else { i };
        (&s[start..end], end)
    }
}

/// Skips `^2`, `^3`, `^{2}` after a unit (square/cubic units).
fn skip_power(s: &str, i: usize) -> usize {
    let rest = &s[i..];
    for p in ["^2", "^3", "^{2}", "^{3}", "²", "³"] {
        if let Some(r) = rest.strip_prefix(p) {
            return s.len() - r.len();
        }
    }
    i
}

/// Drops trailing unit words ("5 cm", "12 square units", "3 cm^2") and the
/// word "percent" (turned into `%`), as long as something precedes them.
fn strip_trailing_units(out: &mut String) {
    for _ in 0..4 {
        let t = out.trim_end();
        let t = t
            .strip_suffix("^2")
            .or_else(|| t.strip_suffix("^3"))
            .or_else(|| t.strip_suffix("^{2}"))
            .unwrap_or(t);
        let word_start = t
            .char_indices()
            .rev()
            .find(|(_, c)| !(c.is_ascii_alphabetic() || *c == '/'))
            .map_or(0, |(p, c)| p + c.len_utf8());
        let word = &t[word_start..];
        let head = t[..word_start].trim_end();
        if word.is_empty() || head.is_empty() || t[..word_start].ends_with('\\') {
            return;
        }
        if ["percent", "percentage", "pct"]
            .iter()
            .any(|w| word.eq_ignore_ascii_case(w))
        {
            let new = format!("{head}%");
            *out = new;
            return;
        }
        // Listed units, or any lower-case word of 3+ letters after a plain
        // number ("5 apples", "18 \text{ marbles}"): a count's noun.
        let is_unit = (word.len() >= 2 && UNIT_WORDS.iter().any(|u| u.eq_ignore_ascii_case(word)))
            || (word.len() >= 3
                && word.bytes().all(|c| c.is_ascii_lowercase())
                && head.ends_with(|c: char| c.is_ascii_digit())
                && !NOT_NOUNS.contains(&word));
        // Only after something that ends like a quantity: "5 cm", "\frac{1}{2} cm".
        let quantity_before = head.ends_with(|c: char| {
            c.is_ascii_digit() || c == '}' || c == ')' || c.is_ascii_alphabetic()
        });
        if !is_unit || !quantity_before || head.ends_with('^') {
            return;
        }
        let len = head.len();
        out.truncate(len);
    }
}
