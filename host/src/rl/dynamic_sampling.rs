//! DAPO dynamic sampling: groups whose completions all scored the same
//! (mean accuracy 0 or 1 for 0/1 rewards) give zero advantages; drop them and
//! generate more prompts until the batch is full, within a bound on retries.

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
    fn drops_all_right_and_all_wrong_groups() {
        let s = [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.5, 0.5];
        assert_eq!(
            informative_groups(&s[..8], 2),
            vec![false, true, false, true]
        );
        assert_eq!(informative_groups(&s[..9], 3), vec![false, false, true]);
    }
}
