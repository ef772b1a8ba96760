//! Loops forever on completions whose response contains "LOOP".
use lmmhost_sdk::{Completion, Reward, Score};

struct Looper;

impl Reward for Looper {
    fn new(_config: &str) -> Result<Self, String> {
        Ok(Looper)
    }
    fn score(&self, c: &Completion) -> Result<Score, String> {
        if c.response.contains("LOOP") {
            let mut x = 0u64;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        Ok(Score {
            total: 1.0,
            components: vec![("ok".into(), 1.0)],
        })
    }
}

lmmhost_sdk::export_reward!(Looper);
