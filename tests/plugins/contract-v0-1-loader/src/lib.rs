//! A loader built against the 0.1.0 contract: `n` (config) generated samples,
//! each with a text part, an image given by bytes, an answer and metadata.
#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({ path: "../../../wit/v0.1.0", world: "loader-plugin" });

use exports::lmmhost::plugin::loader::DatasetInfo;
use lmmhost::plugin::types as t;

thread_local! {
    static LEN: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

struct Legacy;

impl exports::lmmhost::plugin::loader::Guest for Legacy {
    fn open(config: String, files: Vec<String>) -> Result<DatasetInfo, String> {
        let n = config
            .trim()
            .strip_prefix("n = ")
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| format!("config must be `n = <count>`, got {config:?}"))?;
        LEN.with(|l| l.set(n));
        Ok(DatasetInfo {
            len: n,
            skipped_rows: 0,
            notes: vec![format!("{} granted paths", files.len())],
        })
    }

    fn get(index: u64) -> Result<t::Sample, String> {
        if index >= LEN.with(|l| l.get()) {
            return Err(format!("index {index} out of range"));
        }
        Ok(t::Sample {
            id: format!("legacy-{index}"),
            messages: vec![t::Message {
                role: "user".into(),
                content: vec![
                    t::ContentPart::Image(t::ImageSource::Bytes(vec![index as u8, 1, 2])),
                    t::ContentPart::Text(format!("What is {index} + 1?")),
                ],
            }],
            answer: Some((index + 1).to_string()),
            metadata: vec![("source".into(), "v0.1.0".into())],
        })
    }

    fn get_many(indices: Vec<u64>) -> Vec<Result<t::Sample, String>> {
        indices.into_iter().map(Self::get).collect()
    }
}

export!(Legacy);
