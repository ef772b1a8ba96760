//! A reward plugin built against `lmmhost:plugin@0.9.0` (a copy of the
//! contract with another version), so the host's version check must refuse it.
wit_bindgen::generate!({ path: "wit", world: "reward-plugin" });

struct Future;

impl exports::lmmhost::plugin::reward::Guest for Future {
    fn init(_config: String) -> Result<(), String> {
        Ok(())
    }
    fn score_batch(
        batch: Vec<lmmhost::plugin::types::Completion>,
    ) -> Vec<Result<lmmhost::plugin::types::Score, String>> {
        batch
            .iter()
            .map(|_| {
                Ok(lmmhost::plugin::types::Score {
                    total: 1.0,
                    components: vec![],
                })
            })
            .collect()
    }
}

export!(Future);
