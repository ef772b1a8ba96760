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

impl DynamicSampling {
    /// Fails when `metric` names a component none of the scored completions
    /// report (a misspelt name would otherwise fall back to the total).
    pub fn check_metric_reported<'a>(
        &self,
        components: impl Iterator<Item = &'a BTreeMap<String, f64>>,
    ) -> Result<(), String> {
        if self.metric == "total" {
            return Ok(());
        }
        let mut seen: Vec<&String> = Vec::new();
        for c in components {
            if c.contains_key(&self.metric) {
                return Ok(());
            }
            seen.extend(c.keys());
        }
        seen.sort();
        seen.dedup();
        if seen.is_empty() {
            // Every item failed: nothing to compare the name with.
            return Ok(());
        }
        Err(format!(
            "grpo.dynamic_sampling.metric = {:?}: no reward plugin reports this score component; they report {}, or use \"total\" for the weighted sum",
            self.metric,
            seen.iter()
                .map(|k| format!("{k:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }

    /// Why a step that generated `groups` groups in `rounds` rounds kept
    /// none, and what to do about it.
    pub fn all_uniform(&self, groups: usize, rounds: u32) -> String {
        format!(
            "dynamic sampling found every group uniform: all {groups} groups of {rounds} round(s) scored the same on `{}` within each group (all right or all wrong), so none has an advantage to learn from. This is common early in training on hard data (or late on easy data): raise grpo.dynamic_sampling.max_retries (now {}), rollout.group_size or rollout.temperature, mix in data of middling difficulty, or use grpo.pad instead, which trains on whatever groups have an advantage",
            self.metric, self.max_retries
        )
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
