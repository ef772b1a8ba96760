//! Arithmetic chains such as `3+4-2`, evaluated left to right, every partial
//! result kept in `0..=max_result` (no negative numbers for the tiny model to
//! learn), with a worked trace `3+4=7 7-2=5`.

use crate::rng::Rng;
use crate::split::Split;

/// The task knobs (config keys of the same names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArithKnobs {
    pub min_terms: u32,
    pub max_terms: u32,
    pub max_operand: u32,
    pub max_result: u32,
}

impl Default for ArithKnobs {
    fn default() -> Self {
        ArithKnobs {
            min_terms: 2,
            max_terms: 3,
            max_operand: 9,
            max_result: 18,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Add,
    Sub,
}

impl Op {
    pub fn symbol(self) -> char {
        match self {
            Op::Add => '+',
            Op::Sub => '-',
        }
    }

    /// `a op b`, or `None` when it leaves `0..=max`.
    fn apply(self, a: u32, b: u32, max: u32) -> Option<u32> {
        let v = match self {
            Op::Add => a.checked_add(b)?,
            Op::Sub => a.checked_sub(b)?,
        };
        (v <= max).then_some(v)
    }
}

/// One problem: `operands[0] ops[0] operands[1] ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expr {
    pub operands: Vec<u32>,
    pub ops: Vec<Op>,
}

/// One step of the worked solution: `lhs op rhs = value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub lhs: u32,
    pub op: Op,
    pub rhs: u32,
    pub value: u32,
}

impl Expr {
    /// The expression as the prompt shows it, e.g. `3+4-2`; also the split key.
    pub fn canonical(&self) -> String {
        let mut s = self.operands[0].to_string();
        for (op, x) in self.ops.iter().zip(&self.operands[1..]) {
            s.push(op.symbol());
            s.push_str(&x.to_string());
        }
        s
    }

    /// The left-to-right steps, or `None` if a partial result leaves `0..=max_result`.
    pub fn steps(&self, max_result: u32) -> Option<Vec<Step>> {
        let mut acc = *self.operands.first()?;
        if acc > max_result {
            return None;
        }
        let mut steps = Vec::with_capacity(self.ops.len());
        for (&op, &rhs) in self.ops.iter().zip(&self.operands[1..]) {
            let value = op.apply(acc, rhs, max_result)?;
            steps.push(Step {
                lhs: acc,
                op,
                rhs,
                value,
            });
            acc = value;
        }
        Some(steps)
    }

    pub fn split(&self) -> Split {
        Split::of(&format!("arith:{}", self.canonical()))
    }

    /// Draws a random expression: term count uniform, then operands and
    /// operators uniform. The caller rejects invalid ones, so the accepted
    /// problems are uniform among the valid ones of each length.
    pub fn random(rng: &mut Rng, k: &ArithKnobs) -> Expr {
        let terms = rng.range(k.min_terms, k.max_terms) as usize;
        let operands = (0..terms).map(|_| rng.range(0, k.max_operand)).collect();
        let ops = (1..terms)
            .map(|_| if rng.below(2) == 0 { Op::Add } else { Op::Sub })
            .collect();
        Expr { operands, ops }
    }
}

/// `3+4=7 7-2=5`.
pub fn trace(steps: &[Step]) -> String {
    steps
        .iter()
        .map(|s| format!("{}{}{}={}", s.lhs, s.op.symbol(), s.rhs, s.value))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Distinct valid problems per split (train, eval), or `None` when there are
/// more than `cap` (then they are not enumerated).
pub fn count_problems(k: &ArithKnobs, cap: u64) -> Option<(u64, u64)> {
    struct Walk<'a> {
        k: &'a ArithKnobs,
        cap: u64,
        train: u64,
        eval: u64,
        expr: Expr,
    }
    impl Walk<'_> {
        // Depth-first over valid prefixes only (an invalid partial result
        // prunes its subtree). Returns false once the cap is exceeded.
        fn go(&mut self, acc: u32) -> bool {
            let terms = self.expr.operands.len() as u32;
            if terms >= self.k.min_terms {
                match self.expr.split() {
                    Split::Train => self.train += 1,
                    Split::Eval => self.eval += 1,
                }
                if self.train + self.eval > self.cap {
                    return false;
                }
            }
            if terms == self.k.max_terms {
                return true;
            }
            for op in [Op::Add, Op::Sub] {
                for x in 0..=self.k.max_operand {
                    let Some(v) = op.apply(acc, x, self.k.max_result) else {
                        continue;
                    };
                    self.expr.ops.push(op);
                    self.expr.operands.push(x);
                    let ok = self.go(v);
                    self.expr.ops.pop();
                    self.expr.operands.pop();
                    if !ok {
                        return false;
                    }
                }
            }
            true
        }
    }
    let mut w = Walk {
        k,
        cap,
        train: 0,
        eval: 0,
        expr: Expr {
            operands: Vec::new(),
            ops: Vec::new(),
        },
    };
    for first in 0..=k.max_operand.min(k.max_result) {
        w.expr.operands.push(first);
        let ok = w.go(first);
        w.expr.operands.pop();
        if !ok {
            return None;
        }
    }
    Some((w.train, w.eval))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expr(operands: &[u32], ops: &[Op]) -> Expr {
        Expr {
            operands: operands.to_vec(),
            ops: ops.to_vec(),
        }
    }

    #[test]
    fn steps_and_trace() {
        let e = expr(&[3, 4, 2], &[Op::Add, Op::Sub]);
        assert_eq!(e.canonical(), "3+4-2");
        let steps = e.steps(18).unwrap();
        assert_eq!(trace(&steps), "3+4=7 7-2=5");
        assert_eq!(steps.last().unwrap().value, 5);
        // Partials must stay in range: 2-5 is negative, 9+9+9 exceeds 18.
        assert!(expr(&[2, 5, 9], &[Op::Sub, Op::Add]).steps(18).is_none());
        assert!(expr(&[9, 9, 9], &[Op::Add, Op::Add]).steps(18).is_none());
        assert!(expr(&[9, 9, 9], &[Op::Add, Op::Sub]).steps(18).is_some());
    }

    #[test]
    fn enumeration_matches_brute_force() {
        let k = ArithKnobs::default();
        let (train, eval) = count_problems(&k, 1_000_000).unwrap();
        // Brute force over every operand/operator tuple.
        let (mut bt, mut be) = (0u64, 0u64);
        for terms in k.min_terms..=k.max_terms {
            let n_ops = terms - 1;
            let n_operand = u64::from(k.max_operand + 1).pow(terms);
            for code in 0..n_operand {
                for opbits in 0..(1u32 << n_ops) {
                    let mut c = code;
                    let operands: Vec<u32> = (0..terms)
                        .map(|_| {
                            let x = (c % u64::from(k.max_operand + 1)) as u32;
                            c /= u64::from(k.max_operand + 1);
                            x
                        })
                        .collect();
                    let ops: Vec<Op> = (0..n_ops)
                        .map(|j| {
                            if opbits >> j & 1 == 0 {
                                Op::Add
                            } else {
                                Op::Sub
                            }
                        })
                        .collect();
                    let e = Expr { operands, ops };
                    if e.steps(k.max_result).is_some() {
                        match e.split() {
                            Split::Train => bt += 1,
                            Split::Eval => be += 1,
                        }
                    }
                }
            }
        }
        assert_eq!((train, eval), (bt, be));
        // About one in five goes to eval.
        let share = eval as f64 / (train + eval) as f64;
        assert!((0.17..0.23).contains(&share), "eval share {share}");
        assert!(count_problems(&k, 100).is_none());
    }
}
