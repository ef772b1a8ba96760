//! Panics on completions whose response contains "PANIC".
use lmmhost_sdk::{Completion, Reward, Score};

struct Panicker;

impl Reward for Panicker {
    fn new(_config: &str) -> Result<Self, String> {
        Ok(Panicker)
    }
    fn score(&self, c: &Completion) -> Result<Score, String> {
        if c.response.contains("PANIC") {
            panic!("deliberate panic on sample {}", c.sample.id);
        }
        if c.response.contains("ERR") {
            return Err(format!("cannot score sample {}", c.sample.id));
        }
        Ok(Score {
            total: 1.0,
            components: vec![("ok".into(), 1.0)],
        })
    }
}

lmmhost_sdk::export_reward!(Panicker);
