//! How many prompts and rows the engine holds at once under a KV budget.
//!
//! Keys/values live in two pools allocated once per generation: prompt slots
//! of the longest prompt's length (each prompt once, shared by its samples)
//! and row slots of `max_new_tokens - 1` positions (a row's own tokens; its
//! last token is never fed back). The budget counts both, padding included,
//! so it is the memory actually allocated: tokens x 2 (K, V) x layers x
//! KV heads x head_dim x bytes per element.

use anyhow::{bail, Result};

/// Slots of one engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotPlan {
    pub prompt_slots: usize,
    pub row_slots: usize,
    /// Positions of a prompt slot: the longest prompt.
    pub prompt_len: usize,
    /// Positions of a row slot.
    pub response_len: usize,
}

impl SlotPlan {
    /// The plan for `prompts` prompts of `samples` rows each, under a budget
    /// of `budget` tokens (`None`: every row at once). As many row slots as
    /// fit, with prompt slots for the groups those rows span plus one (so
    /// that a group's last rows and the next group's first can run side by
    /// side), or without the extra one when it does not fit.
    pub fn new(
        prompts: usize,
        samples: usize,
        prompt_len: usize,
        max_new_tokens: usize,
        budget: Option<usize>,
    ) -> Result<SlotPlan> {
        let response_len = max_new_tokens.saturating_sub(1).max(1);
        let rows = prompts * samples;
        let plan = |prompt_slots: usize, row_slots: usize| SlotPlan {
            prompt_slots,
            row_slots,
            prompt_len,
            response_len,
        };
        let Some(budget) = budget else {
            return Ok(plan(prompts, rows));
        };
        let least = prompt_len + response_len;
        if budget < least {
            bail!(
                "a KV budget of {budget} tokens cannot hold one prompt of {prompt_len} tokens and one \
                 response of {response_len}: it needs at least {least}"
            );
        }
        let most_rows = rows.min((budget - prompt_len) / response_len).max(1);
        for row_slots in (1..=most_rows).rev() {
            let groups = row_slots.div_ceil(samples);
            for prompt_slots in [groups + 1, groups] {
                let p = prompt_slots.min(prompts);
                if p * prompt_len + row_slots * response_len <= budget {
                    return Ok(plan(p, row_slots));
                }
            }
        }
        Ok(plan(1, 1))
    }

    /// Tokens of keys/values the plan allocates.
    pub fn kv_tokens(&self) -> usize {
        self.prompt_slots * self.prompt_len + self.row_slots * self.response_len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unbounded_holds_everything() {
        let p = SlotPlan::new(16, 8, 71, 64, None).unwrap();
        assert_eq!((p.prompt_slots, p.row_slots, p.response_len), (16, 128, 63));
        assert_eq!(p.kv_tokens(), 16 * 71 + 128 * 63);
    }

    #[test]
    fn budgets_give_rows_and_their_prompts() {
        // One prompt and one row: the least that works.
        let p = SlotPlan::new(16, 8, 71, 64, Some(71 + 63)).unwrap();
        assert_eq!((p.prompt_slots, p.row_slots), (1, 1));
        assert!(SlotPlan::new(16, 8, 71, 64, Some(71 + 62)).is_err());
        // Room for 16 rows: two groups plus one prompt slot.
        let p = SlotPlan::new(16, 8, 71, 64, Some(3 * 71 + 16 * 63)).unwrap();
        assert_eq!((p.prompt_slots, p.row_slots), (3, 16));
        // One token less: the extra prompt slot goes first, then rows.
        let p = SlotPlan::new(16, 8, 71, 64, Some(3 * 71 + 16 * 63 - 1)).unwrap();
        assert_eq!((p.prompt_slots, p.row_slots), (2, 16));
        // Never more than there is.
        let p = SlotPlan::new(2, 4, 10, 5, Some(1_000_000)).unwrap();
        assert_eq!((p.prompt_slots, p.row_slots), (2, 8));
        for budget in [14, 20, 33, 50, 70] {
            let p = SlotPlan::new(2, 4, 10, 5, Some(budget)).unwrap();
            assert!(p.kv_tokens() <= budget, "{budget}: {p:?}");
        }
        // max_new_tokens 1 still needs a (never used) position per row.
        assert_eq!(SlotPlan::new(1, 1, 3, 1, None).unwrap().response_len, 1);
    }
}
