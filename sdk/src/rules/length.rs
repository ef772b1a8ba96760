//! ReVisual-R1's length-budget term ("L1-Max"): a completion of `L` tokens
//! under a budget of `L_budget` tokens scores
//! `clip(alpha * (L_budget - L) + delta, 0, 1)`, as ReVisual-R1's
//! `length_reward_l1_max` computes it (its reward function passes the
//! response's token count, EOS included, and `worker.reward.target_max_length`
//! as the budget, and weighs the term 0.05 in the total).
//!
//! ```toml
//! budget = 8192        # L_budget, tokens (ReVisual-R1: target_max_length = 8192)
//! alpha = 0.005        # per token of budget left (ReVisual-R1's default)
//! delta = 0.5          # the value at exactly the budget
//! component = "length" # name of the score component
//! ```
//!
//! The token count is the host's (`response_tokens`, the stop token
//! included, as verl's response mask counts it). The weight goes on the
//! experiment's `[[rewards]]` entry (0.05 in ReVisual-R1).

use super::parse_config;
use crate::types::{Completion, Score};
use crate::Reward;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    budget: u32,
    #[serde(default = "default_alpha")]
    alpha: f64,
    #[serde(default = "default_delta")]
    delta: f64,
    #[serde(default = "default_component")]
    component: String,
}

fn default_alpha() -> f64 {
    0.005
}
fn default_delta() -> f64 {
    0.5
}
fn default_component() -> String {
    "length".to_owned()
}

/// The length-budget term, configured.
#[derive(Debug, Clone)]
pub struct LengthBudget {
    pub budget: u32,
    pub alpha: f64,
    pub delta: f64,
    pub component: String,
}

impl LengthBudget {
    /// The term for a completion of `tokens` tokens.
    pub fn value(&self, tokens: u32) -> f64 {
        (self.alpha * (f64::from(self.budget) - f64::from(tokens)) + self.delta).clamp(0.0, 1.0)
    }
}

impl Reward for LengthBudget {
    fn new(config: &str) -> Result<Self, String> {
        let c: Config = parse_config("reward-length", config)?;
        if !(c.alpha.is_finite() && c.delta.is_finite()) {
            return Err("reward-length config: `alpha` and `delta` must be finite numbers".into());
        }
        Ok(LengthBudget {
            budget: c.budget,
            alpha: c.alpha,
            delta: c.delta,
            component: c.component,
        })
    }

    fn score(&self, completion: &Completion) -> Result<Score, String> {
        let v = self.value(completion.response_tokens);
        Ok(Score {
            total: v,
            components: vec![(self.component.clone(), v)],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(n: u32) -> Completion {
        Completion {
            response_tokens: n,
            ..Default::default()
        }
    }

    /// ReVisual-R1's verdicts (`length_reward_l1_max(n_y, 8192)` with its
    /// defaults alpha = 0.005, delta = 0.5), recorded with its own function
    /// by scripts/rewards/peer_length_budget.py: 0.5 at the budget, 1 from
    /// 100 tokens under it, 0 from 100 tokens over it, linear in between.
    #[test]
    fn revisual_r1_verdicts() {
        let r = LengthBudget::new("budget = 8192").unwrap();
        for (n, want) in [
            (8192, 0.5),
            (8092, 1.0),
            (100, 1.0),
            (8142, 0.75),
            (8242, 0.25),
            (8292, 0.0),
            (9000, 0.0),
            (8193, 0.495),
        ] {
            let s = r.score(&tokens(n)).unwrap();
            assert!(
                (s.total - want).abs() < 1e-12,
                "{n} tokens: {} vs {want}",
                s.total
            );
            assert_eq!(s.components, vec![("length".to_owned(), s.total)]);
        }
    }

    #[test]
    fn config_keys() {
        let r = LengthBudget::new("budget = 100\nalpha = 0.01\ndelta = 0.2\ncomponent = \"len\"")
            .unwrap();
        assert!((r.value(90) - 0.3).abs() < 1e-12);
        let e = LengthBudget::new("").unwrap_err();
        assert!(e.contains("budget"), "{e}");
        let e = LengthBudget::new("budget = 10\nbugdet = 3").unwrap_err();
        assert!(e.contains("bugdet"), "{e}");
    }
}
