//! Tries to allocate 4 GiB (in 64 MiB pieces, each touched) on completions
//! whose response contains "ALLOC".
use lmmhost_sdk::{Completion, Reward, Score};

struct Hog;

impl Reward for Hog {
    fn new(_config: &str) -> Result<Self, String> {
        Ok(Hog)
    }
    fn score(&self, c: &Completion) -> Result<Score, String> {
        if c.response.contains("ALLOC") {
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
