//! A small LaTeX-ish expression parser: numbers (incl. `1.2e3`), variables
//! with subscripts, `+ - * / ^ !`, `\cdot \times \div`, implicit
//! multiplication, `\frac \sqrt[n] \binom`, `|x|`, functions
//! (`\sin \cos \tan \log \ln \exp`, arcs, hyperbolics), `\pi`, `e`, `\infty`.
//!
//! Recursion is bounded by [`MAX_DEPTH`]; any input either parses or returns
//! `Err(())`, never panics.

/// Deepest nesting of groups/exponents/unary signs accepted.
pub const MAX_DEPTH: u32 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    Sin,
    Cos,
    Tan,
    Cot,
    Sec,
    Csc,
    Asin,
    Acos,
    Atan,
    Sinh,
    Cosh,
    Tanh,
    Ln,
    Log10,
    Exp,
    Sqrt,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Num(f64),
    Var(Box<str>),
    /// Terms with a "negated" flag each.
    Sum(Vec<(bool, Expr)>),
    /// Factors with a "divide by" flag each.
    Prod(Vec<(bool, Expr)>),
    Neg(Box<Expr>),
    Pow(Box<Expr>, Box<Expr>),
    /// `Root(index, radicand)`, e.g. `\sqrt[3]{x}`.
    Root(Box<Expr>, Box<Expr>),
    /// Logarithm with an explicit base: `LogBase(base, x)`.
    LogBase(Box<Expr>, Box<Expr>),
    Binom(Box<Expr>, Box<Expr>),
    Func(Func, Box<Expr>),
    Fact(Box<Expr>),
    Abs(Box<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Tok<'a> {
    /// Number literal text (digits, `.`, exponent part).
    Num(&'a str),
    /// Variable name, already lower-cased for single ASCII letters.
    Var(&'a str),
    /// `\name` without the backslash, or a known bare word (`sin`, `pi`...).
    Cmd(&'a str),
    Sym(u8),
}

const FUNC_WORDS: &[&str] = &[
    "sin", "cos", "tan", "cot", "sec", "csc", "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh",
    "log", "ln", "exp", "sqrt", "pi",
];

const GREEK: &[&str] = &[
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "varepsilon",
    "zeta",
    "eta",
    "theta",
    "vartheta",
    "iota",
    "kappa",
    "lambda",
    "mu",
    "nu",
    "xi",
    "rho",
    "sigma",
    "tau",
    "upsilon",
    "phi",
    "varphi",
    "chi",
    "psi",
    "omega",
    "Gamma",
    "Delta",
    "Theta",
    "Lambda",
    "Xi",
    "Sigma",
    "Phi",
    "Psi",
    "Omega",
];

/// Single ASCII letters as `&'static str`, so lower-casing allocates nothing.
const LOWER: [&str; 26] = [
    "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p", "q", "r", "s",
    "t", "u", "v", "w", "x", "y", "z",
];

fn tokenize(s: &str) -> Result<Vec<Tok<'_>>, ()> {
    let b = s.as_bytes();
    let mut toks = Vec::with_capacity(b.len() / 2 + 1);
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit))
        {
            let start = i;
            while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
                i += 1;
            }
            // Scientific notation `1.2e3`, `5E-4`: an `e` directly followed by
            // an (optionally signed) digit.
            if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
                let mut j = i + 1;
                if j < b.len() && (b[j] == b'+' || b[j] == b'-') {
                    j += 1;
                }
                if j < b.len() && b[j].is_ascii_digit() {
                    while j < b.len() && b[j].is_ascii_digit() {
                        j += 1;
                    }
                    i = j;
                }
            }
            toks.push(Tok::Num(&s[start..i]));
        } else if c.is_ascii_alphabetic() {
            let start = i;
            while i < b.len() && b[i].is_ascii_alphabetic() {
                i += 1;
            }
            let word = &s[start..i];
            if word.len() == 1 {
                let sub_end = subscript_end(b, i);
                if sub_end > i {
                    toks.push(Tok::Var(&s[start..sub_end]));
                    i = sub_end;
                } else {
                    toks.push(Tok::Var(LOWER[(c.to_ascii_lowercase() - b'a') as usize]));
                }
            } else if let Some(f) = FUNC_WORDS.iter().find(|f| f.eq_ignore_ascii_case(word)) {
                toks.push(Tok::Cmd(f));
            } else if word.len() == 2 {
                // "xy": a product of two variables.
                for k in start..i {
                    toks.push(Tok::Var(LOWER[(b[k].to_ascii_lowercase() - b'a') as usize]));
                }
            } else {
                // A word: this answer is text, not an expression.
                return Err(());
            }
        } else if c == b'\\' {
            let start = i + 1;
            let mut j = start;
            while j < b.len() && b[j].is_ascii_alphabetic() {
                j += 1;
            }
            if j == start {
                // `\{`, `\}` and friends: not part of an expression.
                return Err(());
            }
            let name = &s[start..j];
            i = j;
            if GREEK.contains(&name) {
                let sub_end = subscript_end(b, i);
                toks.push(Tok::Var(&s[start..sub_end]));
                i = sub_end;
            } else {
                toks.push(Tok::Cmd(name));
            }
        } else if c.is_ascii() {
            toks.push(Tok::Sym(c));
            i += 1;
        } else {
            return Err(());
        }
    }
    Ok(toks)
}

/// End of a `_x` / `_{...}` / `_12` subscript starting at `i`, or `i`.
fn subscript_end(b: &[u8], i: usize) -> usize {
    if b.get(i) != Some(&b'_') {
        return i;
    }
    match b.get(i + 1) {
        Some(b'{') => {
            let mut j = i + 2;
            while j < b.len() && b[j] != b'}' && b[j] != b'{' {
                j += 1;
            }
            if b.get(j) == Some(&b'}') {
                j + 1
            } else {
                i
            }
        }
        Some(x) if x.is_ascii_alphanumeric() => {
            let mut j = i + 2;
            while x.is_ascii_digit() && j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            j
        }
        _ => i,
    }
}

struct Parser<'a> {
    toks: Vec<Tok<'a>>,
    pos: usize,
    in_abs: u32,
}

type R = Result<Expr, ()>;

/// Parses a whole expression; `Err` if anything is left over or malformed.
pub fn parse_expr(s: &str) -> R {
    let toks = tokenize(s)?;
    if toks.is_empty() {
        return Err(());
    }
    let mut p = Parser {
        toks,
        pos: 0,
        in_abs: 0,
    };
    let e = p.sum(0)?;
    if p.pos == p.toks.len() {
        Ok(e)
    } else {
        Err(())
    }
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<Tok<'a>> {
        self.toks.get(self.pos).copied()
    }

    fn eat_sym(&mut self, c: u8) -> bool {
        if self.peek() == Some(Tok::Sym(c)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn eat_cmd(&mut self, name: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Cmd(n)) if n == name) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn sum(&mut self, d: u32) -> R {
        if d > MAX_DEPTH {
            return Err(());
        }
        let mut terms = Vec::new();
        let mut neg = false;
        // Leading signs.
        loop {
            if self.eat_sym(b'-') {
                neg = !neg;
            } else if !self.eat_sym(b'+') {
                break;
            }
        }
        terms.push((neg, self.product(d)?));
        loop {
            let neg = if self.eat_sym(b'+') {
                false
            } else if self.eat_sym(b'-') {
                true
            } else if self.eat_cmd("pm") || self.eat_cmd("mp") {
                // `a \pm b` is a set of two values, handled above the parser.
                return Err(());
            } else {
                break;
            };
            let mut neg = neg;
            while self.eat_sym(b'-') {
                neg = !neg;
            }
            while self.eat_sym(b'+') {}
            terms.push((neg, self.product(d)?));
        }
        Ok(if terms.len() == 1 && !terms[0].0 {
            terms.pop().map_or(Expr::Num(f64::NAN), |t| t.1)
        } else {
            Expr::Sum(terms)
        })
    }

    fn product(&mut self, d: u32) -> R {
        let mut factors = vec![(false, self.unary(d)?)];
        loop {
            let div = if self.eat_sym(b'*')
                || self.eat_cmd("cdot")
                || self.eat_cmd("times")
                || self.eat_cmd("ast")
            {
                false
            } else if self.eat_sym(b'/') || self.eat_cmd("div") || self.eat_cmd("over") {
                true
            } else if self.starts_primary() {
                false
            } else {
                break;
            };
            factors.push((div, self.unary(d)?));
        }
        Ok(if factors.len() == 1 {
            factors.pop().map_or(Expr::Num(f64::NAN), |f| f.1)
        } else {
            Expr::Prod(factors)
        })
    }

    /// Whether the next token can begin an implicitly multiplied factor.
    fn starts_primary(&self) -> bool {
        match self.peek() {
            Some(Tok::Num(_) | Tok::Var(_)) => true,
            Some(Tok::Cmd(c)) => !matches!(
                c,
                "cdot" | "times" | "div" | "pm" | "mp" | "cup" | "in" | "over" | "ast"
            ),
            Some(Tok::Sym(b'(' | b'[' | b'{')) => true,
            Some(Tok::Sym(b'|')) => self.in_abs == 0,
            _ => false,
        }
    }

    fn unary(&mut self, d: u32) -> R {
        if d > MAX_DEPTH {
            return Err(());
        }
        if self.eat_sym(b'-') {
            return Ok(Expr::Neg(Box::new(self.unary(d + 1)?)));
        }
        if self.eat_sym(b'+') {
            return self.unary(d + 1);
        }
        self.power(d)
    }

    fn power(&mut self, d: u32) -> R {
        let base = self.postfix(d)?;
        if self.eat_sym(b'^') {
            let exp = self.script_arg(d + 1)?;
            // `x^2!` is rare; postfix after the exponent is not supported.
            return Ok(Expr::Pow(Box::new(base), Box::new(exp)));
        }
        Ok(base)
    }

    fn postfix(&mut self, d: u32) -> R {
        let mut e = self.primary(d)?;
        loop {
            if self.eat_sym(b'!') {
                e = Expr::Fact(Box::new(e));
            } else if self.eat_sym(b'%') {
                e = Expr::Prod(vec![(false, e), (true, Expr::Num(100.0))]);
            } else if self.eat_sym(b'\'') {
                // f'(x): keep the prime as part of the meaning by scaling.
                e = Expr::Prod(vec![(false, e), (false, Expr::Var("'".into()))]);
            } else {
                return Ok(e);
            }
        }
    }

    /// Argument of `^`, `\frac`, `\sqrt`: a braced group, or a single token
    /// (only the first digit of a bare number, as TeX reads `x^23` as `x^2 3`).
    fn script_arg(&mut self, d: u32) -> R {
        if d > MAX_DEPTH {
            return Err(());
        }
        match self.peek() {
            Some(Tok::Sym(b'{')) => {
                self.pos += 1;
                let e = self.sum(d + 1)?;
                if !self.eat_sym(b'}') {
                    return Err(());
                }
                Ok(e)
            }
            Some(Tok::Num(text)) if !text.starts_with('.') => {
                let first = &text[..1];
                if text.len() > 1 {
                    self.toks[self.pos] = Tok::Num(&text[1..]);
                } else {
                    self.pos += 1;
                }
                number(first)
            }
            Some(Tok::Sym(b'-')) => {
                self.pos += 1;
                Ok(Expr::Neg(Box::new(self.script_arg(d + 1)?)))
            }
            _ => self.postfix(d + 1),
        }
    }

    fn group(&mut self, close: u8, d: u32) -> R {
        let e = self.sum(d + 1)?;
        if !self.eat_sym(close) {
            return Err(());
        }
        Ok(e)
    }

    fn primary(&mut self, d: u32) -> R {
        if d > MAX_DEPTH {
            return Err(());
        }
        let Some(tok) = self.peek() else {
            return Err(());
        };
        self.pos += 1;
        match tok {
            Tok::Num(text) => {
                let n = number(text)?;
                // Mixed number `2\frac{1}{2}` = 2 + 1/2.
                if !text.contains(['.', 'e', 'E']) && matches!(self.peek(), Some(Tok::Cmd("frac")))
                {
                    let save = self.pos;
                    self.pos += 1;
                    let num = self.script_arg(d + 1)?;
                    let den = self.script_arg(d + 1)?;
                    if let (Expr::Num(a), Expr::Num(b)) = (&num, &den) {
                        if a.fract() == 0.0 && b.fract() == 0.0 {
                            return Ok(Expr::Sum(vec![
                                (false, n),
                                (false, Expr::Prod(vec![(false, num), (true, den)])),
                            ]));
                        }
                    }
                    self.pos = save;
                }
                Ok(n)
            }
            Tok::Var(name) => Ok(match name {
                "e" => Expr::Num(std::f64::consts::E),
                _ => Expr::Var(name.into()),
            }),
            Tok::Sym(b'(') => self.group(b')', d),
            Tok::Sym(b'[') => self.group(b']', d),
            Tok::Sym(b'{') => self.group(b'}', d),
            Tok::Sym(b'|') => {
                self.in_abs += 1;
                let e = self.sum(d + 1);
                self.in_abs -= 1;
                let e = e?;
                if !self.eat_sym(b'|') {
                    return Err(());
                }
                Ok(Expr::Abs(Box::new(e)))
            }
            Tok::Cmd(name) => self.command(name, d),
            Tok::Sym(_) => Err(()),
        }
    }

    fn command(&mut self, name: &str, d: u32) -> R {
        let func = match name {
            "pi" => return Ok(Expr::Num(std::f64::consts::PI)),
            "infty" | "infinity" => return Ok(Expr::Num(f64::INFINITY)),
            "frac" => {
                let num = self.script_arg(d + 1)?;
                let den = self.script_arg(d + 1)?;
                return Ok(Expr::Prod(vec![(false, num), (true, den)]));
            }
            "binom" => {
                let n = self.script_arg(d + 1)?;
                let k = self.script_arg(d + 1)?;
                return Ok(Expr::Binom(Box::new(n), Box::new(k)));
            }
            "sqrt" => {
                if self.eat_sym(b'[') {
                    let idx = self.group(b']', d)?;
                    let x = self.script_arg(d + 1)?;
                    return Ok(Expr::Root(Box::new(idx), Box::new(x)));
                }
                let x = self.script_arg(d + 1)?;
                return Ok(Expr::Func(Func::Sqrt, Box::new(x)));
            }
            "sin" => Func::Sin,
            "cos" => Func::Cos,
            "tan" => Func::Tan,
            "cot" => Func::Cot,
            "sec" => Func::Sec,
            "csc" => Func::Csc,
            "arcsin" => Func::Asin,
            "arccos" => Func::Acos,
            "arctan" => Func::Atan,
            "sinh" => Func::Sinh,
            "cosh" => Func::Cosh,
            "tanh" => Func::Tanh,
            "ln" => Func::Ln,
            "log" => Func::Log10,
            "lg" => Func::Log10,
            "exp" => Func::Exp,
            _ => return Err(()),
        };
        // `\log_2 x`
        let mut base = None;
        if func == Func::Log10 && self.eat_sym(b'_') {
            base = Some(self.script_arg(d + 1)?);
        }
        // `\sin^2 x` = (\sin x)^2
        let mut power = None;
        if self.eat_sym(b'^') {
            power = Some(self.script_arg(d + 1)?);
        }
        let arg = self.func_arg(d + 1)?;
        let mut e = match base {
            Some(b) => Expr::LogBase(Box::new(b), Box::new(arg)),
            None => Expr::Func(func, Box::new(arg)),
        };
        if let Some(p) = power {
            e = Expr::Pow(Box::new(e), Box::new(p));
        }
        Ok(e)
    }

    /// Argument of a function: a parenthesised group, or an implicit product
    /// of powers (`\sin 2x` = sin(2x)).
    fn func_arg(&mut self, d: u32) -> R {
        if d > MAX_DEPTH {
            return Err(());
        }
        if matches!(self.peek(), Some(Tok::Sym(b'(' | b'{'))) {
            return self.power(d);
        }
        let mut factors = vec![(false, self.unary(d)?)];
        while matches!(self.peek(), Some(Tok::Num(_) | Tok::Var(_))) {
            factors.push((false, self.power(d)?));
        }
        Ok(if factors.len() == 1 {
            factors.pop().map_or(Expr::Num(f64::NAN), |f| f.1)
        } else {
            Expr::Prod(factors)
        })
    }
}

fn number(text: &str) -> R {
    // "1.2.3" and similar fail here.
    text.parse::<f64>().map(Expr::Num).map_err(|_| ())
}

impl Expr {
    /// Whether the expression mentions any variable.
    pub fn has_vars(&self) -> bool {
        match self {
            Expr::Num(_) => false,
            Expr::Var(_) => true,
            Expr::Sum(v) | Expr::Prod(v) => v.iter().any(|(_, e)| e.has_vars()),
            Expr::Neg(a) | Expr::Func(_, a) | Expr::Fact(a) | Expr::Abs(a) => a.has_vars(),
            Expr::Pow(a, b) | Expr::Root(a, b) | Expr::LogBase(a, b) | Expr::Binom(a, b) => {
                a.has_vars() || b.has_vars()
            }
        }
    }
}
