//! Equality of parsed answers: the order rules for tuples, intervals, sets
//! and unions, percentages, relations and text.

use super::eval::{eval, expr_eq, num_eq, POINTS};
use super::parse::Expr;
use super::shape::{Answer, RelOp};

pub fn answers_eq(a: &Answer, b: &Answer) -> bool {
    use Answer::*;
    match (a, b) {
        (Expr(x), Expr(y)) => expr_eq(x, y),
        (Percent(x), Percent(y)) => expr_eq(x, y),
        (Percent(p), Expr(e)) | (Expr(e), Percent(p)) => expr_eq(p, e) || expr_eq(&hundredth(p), e),
        (Rel(l1, o1, r1), Rel(l2, o2, r2)) => {
            if o1 != o2 {
                return false;
            }
            let (d1, d2) = (diff(l1, r1), diff(l2, r2));
            // Equations and "!=" hold up to a non-zero factor (`2x+4y=3` is
            // `y = 3/4 - x/2`); inequalities keep their direction.
            if matches!(o1, RelOp::Eq | RelOp::Ne) {
                proportional(&d1, &d2)
            } else {
                expr_eq(&d1, &d2)
            }
        }
        (
            Seq {
                open: o1,
                close: c1,
                items: x,
            },
            Seq {
                open: o2,
                close: c2,
                items: y,
            },
        ) => {
            o1 == o2
                && c1 == c2
                && x.len() == y.len()
                && x.iter().zip(y).all(|(p, q)| answers_eq(p, q))
        }
        (Set(x) | List(x), Set(y) | List(y)) | (Union(x), Union(y)) => same_members(x, y),
        // "2, 3" against "(2, 3)": ordered.
        (
            List(x),
            Seq {
                open: b'(',
                close: b')',
                items: y,
            },
        )
        | (
            Seq {
                open: b'(',
                close: b')',
                items: y,
            },
            List(x),
        ) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| answers_eq(p, q)),
        // A one-element set, list or union against a single value.
        (Set(x) | List(x) | Union(x), other) | (other, Set(x) | List(x) | Union(x))
            if x.len() == 1 =>
        {
            answers_eq(&x[0], other)
        }
        (Assign { lhs: l1, value: v1 }, Assign { lhs: l2, value: v2 }) => {
            answers_eq(v1, v2)
                || matches!((l1, &**v1, l2, &**v2), (Some(a), Expr(b), Some(c), Expr(d)) if proportional(&diff(a, b), &diff(c, d)))
        }
        (
            Assign {
                lhs: Some(l1),
                value,
            },
            Rel(l2, RelOp::Eq, r2),
        )
        | (
            Rel(l2, RelOp::Eq, r2),
            Assign {
                lhs: Some(l1),
                value,
            },
        ) => {
            matches!(&**value, Expr(v) if proportional(&diff(l1, v), &diff(l2, r2)))
        }
        // `x = 3` against `3`: the value is the answer.
        (Assign { value, .. }, other) | (other, Assign { value, .. }) => answers_eq(value, other),
        (Text(x), Text(y)) => x == y,
        _ => false,
    }
}

/// Mutual containment, as for mathematical sets (duplicates do not matter).
fn same_members(x: &[Answer], y: &[Answer]) -> bool {
    x.iter().all(|p| y.iter().any(|q| answers_eq(p, q)))
        && y.iter().all(|q| x.iter().any(|p| answers_eq(p, q)))
}

fn diff(l: &Expr, r: &Expr) -> Expr {
    Expr::Sum(vec![(false, l.clone()), (true, r.clone())])
}

fn hundredth(e: &Expr) -> Expr {
    Expr::Prod(vec![(false, e.clone()), (true, Expr::Num(100.0))])
}

/// Whether `a = k * b` for one non-zero constant `k` at every evaluation point.
fn proportional(a: &Expr, b: &Expr) -> bool {
    let mut ratio: Option<f64> = None;
    let mut defined = 0;
    for p in 0..POINTS {
        let (x, y) = (eval(a, p), eval(b, p));
        if x.is_nan() || y.is_nan() {
            return false;
        }
        let (zx, zy) = (x.abs() < 1e-12, y.abs() < 1e-12);
        if zx || zy {
            if zx != zy {
                return false;
            }
            continue;
        }
        let k = x / y;
        match ratio {
            None => ratio = Some(k),
            Some(r) if num_eq(r, k) => {}
            Some(_) => return false,
        }
        defined += 1;
    }
    // Constant equations ("1 = 1") have nothing to sample; compare them exactly.
    defined >= 2 || (defined == 0 && expr_eq(a, b))
}
