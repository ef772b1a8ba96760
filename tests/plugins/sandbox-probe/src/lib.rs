//! Reports what the sandbox lets a plugin see, as score components:
//! environment variables, arguments, wall-clock seconds, a value derived from
//! the random source, and whether a TCP connection could be opened.
use std::hash::{BuildHasher, Hasher};

use lmmhost_sdk::{Completion, Reward, Score};

struct Probe;

impl Reward for Probe {
    fn new(_config: &str) -> Result<Self, String> {
        Ok(Probe)
    }
    fn score(&self, _c: &Completion) -> Result<Score, String> {
        let env = std::env::vars().count() as f64;
        let args = std::env::args().count() as f64;
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(-1.0);
        // RandomState draws its keys from the WASI random source.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(42);
        let random = (h.finish() >> 11) as f64;
        let net = std::net::TcpStream::connect("127.0.0.1:9").is_ok() as u8 as f64;
        Ok(Score {
            total: 0.0,
            components: vec![
                ("env_vars".into(), env),
                ("args".into(), args),
                ("wall_secs".into(), wall),
                ("random".into(), random),
                ("net_ok".into(), net),
            ],
        })
    }
}

lmmhost_sdk::export_reward!(Probe);
