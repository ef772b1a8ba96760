//! The SDK's math accuracy rule exported through the 0.1.0 reward contract
//! (one completion per item, each with its own sample), as every plugin
//! built against that contract is: the host must score it exactly as the
//! 0.2.0 build.
#![cfg(target_arch = "wasm32")]

use lmmhost_sdk as sdk;
use lmmhost_sdk::Reward;

wit_bindgen::generate!({ path: "../../../wit/v0.1.0", world: "reward-plugin" });

use lmmhost::plugin::types as t;

thread_local! {
    static RULE: std::cell::RefCell<Option<sdk::rules::math::MathAccuracy>> =
        const { std::cell::RefCell::new(None) };
}

fn sample(s: t::Sample) -> sdk::Sample {
    sdk::Sample {
        id: s.id,
        messages: s
            .messages
            .into_iter()
            .map(|m| sdk::Message {
                role: m.role,
                content: m
                    .content
                    .into_iter()
                    .map(|p| match p {
                        t::ContentPart::Text(x) => sdk::ContentPart::Text(x),
                        t::ContentPart::Image(t::ImageSource::Path(x)) => {
                            sdk::ContentPart::Image(sdk::ImageSource::Path(x))
                        }
                        t::ContentPart::Image(t::ImageSource::Bytes(b)) => {
                            sdk::ContentPart::Image(sdk::ImageSource::Bytes(b))
                        }
                    })
                    .collect(),
            })
            .collect(),
        answer: s.answer,
        metadata: s.metadata,
    }
}

struct Legacy;

impl exports::lmmhost::plugin::reward::Guest for Legacy {
    fn init(config: String) -> Result<(), String> {
        let rule = sdk::rules::math::MathAccuracy::new(&config)?;
        RULE.with(|r| *r.borrow_mut() = Some(rule));
        Ok(())
    }

    fn score_batch(batch: Vec<t::Completion>) -> Vec<Result<t::Score, String>> {
        RULE.with(|r| {
            let r = r.borrow();
            let Some(rule) = r.as_ref() else {
                return batch.iter().map(|_| Err("init first".into())).collect();
            };
            batch
                .into_iter()
                .map(|c| {
                    let c = sdk::Completion {
                        sample: sample(c.sample),
                        response: c.response,
                        response_tokens: c.response_tokens,
                    };
                    rule.score(&c).map(|s| t::Score {
                        total: s.total,
                        components: s.components,
                    })
                })
                .collect()
        })
    }
}

export!(Legacy);
