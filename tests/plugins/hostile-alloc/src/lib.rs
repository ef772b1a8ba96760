//! Tries to allocate 4 GiB (in 64 MiB pieces, each touched) on completions
//! whose response contains "ALLOC", or on every completion with the config
//! `always = true` (a training run does not choose its responses).
use lmmhost_sdk::{Completion, Reward, Score};

struct Hog {
    always: bool,
}

impl Reward for Hog {
    fn new(config: &str) -> Result<Self, String> {
        Ok(Hog {
            always: config
                .lines()
                .any(|l| l.split_whitespace().collect::<String>() == "always=true"),
        })
    }
    fn score(&self, c: &Completion) -> Result<Score, String> {
        if self.always || c.response.contains("ALLOC") {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            for _ in 0..64 {
                let mut piece = vec![0u8; 64 << 20];
                piece[12345] = 1;
                hoard.push(std::hint::black_box(piece));
            }
            return Ok(Score {
                total: hoard.len() as f64,
                components: vec![],
            });
        }
        Ok(Score {
            total: 1.0,
            components: vec![("ok".into(), 1.0)],
        })
    }
}

lmmhost_sdk::export_reward!(Hog);
