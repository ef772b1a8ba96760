//! Loops forever on completions whose response contains "LOOP", or on every
//! completion with the config `always = true` (a training run does not choose
//! its responses).
use lmmhost_sdk::{Completion, Reward, Score};

struct Looper {
    always: bool,
}

impl Reward for Looper {
    fn new(config: &str) -> Result<Self, String> {
        Ok(Looper {
            always: config
                .lines()
                .any(|l| l.split_whitespace().collect::<String>() == "always=true"),
        })
    }
    fn score(&self, c: &Completion) -> Result<Score, String> {
        if self.always || c.response.contains("LOOP") {
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
