//! Numeric evaluation of parsed expressions at deterministic pseudo-random
//! points, and the tolerance used to compare the results.

use super::parse::{Expr, Func};

/// How many points symbolic expressions are compared at.
pub const POINTS: u64 = 6;

/// Value of variable `name` at evaluation point `point`: a fixed hash of the
/// name and the point index mapped to a magnitude in [0.5, 2.5) and a sign.
/// No external randomness, so verdicts are reproducible.
pub fn var_value(name: &str, point: u64) -> f64 {
    // FNV-1a of the name, mixed with the point index by splitmix64.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in name.as_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut z = h ^ point.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    let magnitude = 0.5 + 2.0 * ((z >> 11) as f64 / (1u64 << 53) as f64);
    // Points 0 and 1 are positive (so `\sqrt{x}`, `\ln x` are defined
    // somewhere); later points get a hashed sign, so `|x|` differs from `x`
    // and `\ln(x^2)` from `2\ln x`.
    if point >= 2 && z & 1 == 1 {
        -magnitude
    } else {
        magnitude
    }
}

/// Evaluates `e` with every variable set by [`var_value`] at `point`.
/// Depth is bounded by the parser, so the recursion is too.
pub fn eval(e: &Expr, point: u64) -> f64 {
    match e {
        Expr::Num(x) => *x,
        Expr::Var(name) => var_value(name, point),
        Expr::Sum(terms) => terms
            .iter()
            .map(|(neg, t)| {
                if *neg {
                    -eval(t, point)
                } else {
                    eval(t, point)
                }
            })
            .sum(),
        Expr::Prod(factors) => factors.iter().fold(1.0, |acc, (div, f)| {
            let v = eval(f, point);
            if *div {
                acc / v
            } else {
                acc * v
            }
        }),
        Expr::Neg(a) => -eval(a, point),
        Expr::Pow(a, b) => pow(eval(a, point), eval(b, point)),
        Expr::Root(n, x) => {
            let (n, x) = (eval(n, point), eval(x, point));
            // Odd roots of negatives are real: \sqrt[3]{-8} = -2.
            if x < 0.0 && n.fract() == 0.0 && (n as i64) % 2 != 0 {
                -(-x).powf(1.0 / n)
            } else {
                x.powf(1.0 / n)
            }
        }
        Expr::LogBase(b, x) => eval(x, point).ln() / eval(b, point).ln(),
        Expr::Binom(n, k) => binom(eval(n, point), eval(k, point)),
        Expr::Func(f, a) => {
            let x = eval(a, point);
            match f {
                Func::Sin => x.sin(),
                Func::Cos => x.cos(),
                Func::Tan => x.tan(),
                Func::Cot => 1.0 / x.tan(),
                Func::Sec => 1.0 / x.cos(),
                Func::Csc => 1.0 / x.sin(),
                Func::Asin => x.asin(),
                Func::Acos => x.acos(),
                Func::Atan => x.atan(),
                Func::Sinh => x.sinh(),
                Func::Cosh => x.cosh(),
                Func::Tanh => x.tanh(),
                Func::Ln => x.ln(),
                Func::Log10 => x.log10(),
                Func::Exp => x.exp(),
                Func::Sqrt => x.sqrt(),
            }
        }
        Expr::Fact(a) => factorial(eval(a, point)),
        Expr::Abs(a) => eval(a, point).abs(),
    }
}

fn pow(a: f64, b: f64) -> f64 {
    // (-8)^(1/3) stays NaN (as in sympy's principal branch); integer powers
    // of negatives are fine with powf.
    a.powf(b)
}

fn factorial(x: f64) -> f64 {
    if x.fract() != 0.0 || x < 0.0 {
        return f64::NAN;
    }
    if x > 170.0 {
        return f64::INFINITY;
    }
    (1..=x as u32).fold(1.0, |acc, k| acc * f64::from(k))
}

fn binom(n: f64, k: f64) -> f64 {
    if k.fract() != 0.0 || k < 0.0 {
        return f64::NAN;
    }
    if n.fract() == 0.0 && n >= 0.0 && k > n {
        return 0.0;
    }
    if k > 1000.0 {
        return f64::NAN;
    }
    // Falling product works for non-integer n too.
    (0..k as u32).fold(1.0, |acc, i| {
        acc * (n - f64::from(i)) / (f64::from(i) + 1.0)
    })
}

/// Whether two numbers are the same answer. Two integers must be exactly
/// equal (so 7425000 != 7425001); otherwise a relative tolerance of 1e-6
/// plus 1e-9 absolute, which matches Math-Verify's rounding to 6 digits on
/// typical answers (1/3 == 0.333333, 1/3 != 0.3333).
pub fn num_eq(a: f64, b: f64) -> bool {
    if a == b {
        return true;
    }
    if !a.is_finite() || !b.is_finite() {
        return false;
    }
    if a.fract() == 0.0 && b.fract() == 0.0 && a.abs() < 1e15 && b.abs() < 1e15 {
        return false;
    }
    (a - b).abs() <= 1e-6 * a.abs().max(b.abs()) + 1e-9
}

/// Whether two expressions agree: exact numeric comparison for constants,
/// otherwise agreement at every one of [`POINTS`] points where both are
/// defined (at least two such points are required; a point where exactly
/// one side is undefined is a disagreement).
pub fn expr_eq(a: &Expr, b: &Expr) -> bool {
    if !a.has_vars() && !b.has_vars() {
        return num_eq(eval(a, 0), eval(b, 0));
    }
    let mut defined = 0;
    for p in 0..POINTS {
        let (x, y) = (eval(a, p), eval(b, p));
        match (x.is_nan(), y.is_nan()) {
            (true, true) => continue,
            (false, false) => {
                if !num_eq(x, y) {
                    return false;
                }
                defined += 1;
            }
            _ => return false,
        }
    }
    defined >= 2
}
