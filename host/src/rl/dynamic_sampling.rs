//! DAPO dynamic sampling: groups whose completions all scored the same
//! (mean accuracy 0 or 1 for 0/1 rewards) give zero advantages; drop them and
//! generate more prompts until the batch is full, within a bound on retries.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `[grpo.dynamic_sampling]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DynamicSampling {
    pub enabled: bool,
    /// Extra rounds of generation allowed to fill the batch.
    pub max_retries: u32,
    /// Score component whose groups must not be all equal (`total` for the weighted sum).
    pub metric: String,
}

impl Default for DynamicSampling {
    fn default() -> Self {
        DynamicSampling {
            enabled: false,
            max_retries: 3,
            metric: "accuracy".into(),
        }
    }
}

impl DynamicSampling {
    /// Rounds of generation a step may run.
    pub fn max_rounds(&self) -> u32 {
        if self.enabled {
            1 + self.max_retries
        } else {
            1
        }
    }

    /// The value of one completion that `metric` names (the total when the
    /// completion has no such component).
    pub fn metric_of(&self, total: f64, components: &BTreeMap<String, f64>) -> f64 {
        match self.metric.as_str() {
            "total" => total,
            m => components.get(m).copied().unwrap_or(total),
        }
    }
}

/// Which groups to keep: `true` where the group's scores are not all equal.
pub fn informative_groups(scores: &[f64], group_size: usize) -> Vec<bool> {
    scores
        .chunks(group_size)
        .map(|g| g.iter().any(|s| (s - g[0]).abs() > 1e-12))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_falls_back_to_the_total() {
        let ds = DynamicSampling::default();
        let c = BTreeMap::from([("accuracy".to_string(), 1.0)]);
        assert_eq!(ds.metric_of(1.5, &c), 1.0);
        assert_eq!(ds.metric_of(1.5, &BTreeMap::new()), 1.5);
        let total = DynamicSampling {
            metric: "total".into(),
            ..ds
        };
        assert_eq!(total.metric_of(1.5, &c), 1.5);
        assert_eq!(total.max_rounds(), 1);
    }

    #[test]
    fn drops_all_right_and_all_wrong_groups() {
        let s = [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.5, 0.5];
        assert_eq!(
            informative_groups(&s[..8], 2),
            vec![false, true, false, true]
        );
        assert_eq!(informative_groups(&s[..9], 3), vec![false, false, true]);
    }
}
