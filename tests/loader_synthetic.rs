//! loader-synthetic end to end: the component opened by the plugin host gives
//! the same samples as the crate compiled natively, and its images become
//! exactly one vision token per grid cell in the tiny model's processor.

use std::path::PathBuf;
use std::sync::Arc;

use lmmhost_model::processor::{ImageInput, Message, Part, Processor};
use lmmhost_plugin_host::{LoaderPlugin, PluginRuntime, PluginSpec, RuntimeOptions};
use lmmhost_sdk::{ContentPart, ImageSource, Loader, Sample};
use loader_synthetic::SyntheticLoader;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn wasm() -> PathBuf {
    let dir = std::env::var_os("LMMHOST_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/plugins"));
    let p = dir.join("loader-synthetic.wasm");
    assert!(
        p.is_file(),
        "{} is missing: run scripts/build-plugins.sh first",
        p.display()
    );
    p
}

fn plugin(config: &str) -> LoaderPlugin {
    let runtime = PluginRuntime::new(RuntimeOptions { cache_dir: None }).unwrap();
    let mut spec = PluginSpec::from_file("loader-synthetic", &wasm(), config).unwrap();
    spec.log = Arc::new(|_| {});
    LoaderPlugin::new(&runtime, spec).unwrap()
}

fn processor() -> Processor {
    Processor::from_dir(repo().join("configs/models/tiny-qwen2.5-vl")).unwrap()
}

/// The sample's messages as the processor's conversation.
fn conversation(s: &Sample) -> Vec<Message> {
    s.messages
        .iter()
        .map(|m| Message {
            role: m.role.clone(),
            parts: m
                .content
                .iter()
                .map(|p| match p {
                    ContentPart::Text(t) => Part::Text(t.clone()),
                    ContentPart::Image(ImageSource::Bytes(b)) => {
                        Part::Image(ImageInput::Bytes(b.clone()))
                    }
                    ContentPart::Image(ImageSource::Path(p)) => {
                        panic!("loader-synthetic gave an image path {p}")
                    }
                })
                .collect(),
        })
        .collect()
}

fn text_of(m: &lmmhost_sdk::Message) -> &str {
    m.content
        .iter()
        .find_map(|p| match p {
            ContentPart::Text(t) => Some(t.as_str()),
            _ => None,
        })
        .unwrap()
}

#[test]
fn component_matches_native_crate() {
    for task in ["arithmetic", "shapes-count", "shapes-describe"] {
        for split in ["train", "eval"] {
            let config = format!("task = \"{task}\"\nsplit = \"{split}\"\nlen = 64\nseed = 5");
            let p = plugin(&config);
            let (native, info) = SyntheticLoader::open(&config, &[]).unwrap();
            assert_eq!(p.info(), &info);
            assert_eq!(p.len(), 64);
            let indices: Vec<u64> = (0..64).rev().collect();
            let from_plugin = p.get_many(&indices).unwrap();
            for (s, &i) in from_plugin.iter().zip(&indices) {
                assert_eq!(s, &native.get(i).unwrap(), "{task}/{split} sample {i}");
            }
            let e = p.get(64).unwrap_err().to_string();
            assert!(e.contains("out of range"), "{e}");
        }
    }
    // Config errors surface through the host with the key named.
    let runtime = PluginRuntime::new(RuntimeOptions { cache_dir: None }).unwrap();
    let mut spec = PluginSpec::from_file(
        "loader-synthetic",
        &wasm(),
        "task = \"arithmetic\"\nrows = 3",
    )
    .unwrap();
    spec.log = Arc::new(|_| {});
    let e = format!("{:#}", LoaderPlugin::new(&runtime, spec).err().unwrap());
    assert!(e.contains("`rows`"), "{e}");
}

#[test]
fn grid_cells_become_one_image_token_each() {
    let proc = processor();
    let image_id = proc.image_token_id.unwrap();
    for (rows, cols) in [(2i64, 2i64), (3, 4)] {
        let p = plugin(&format!(
            "task = \"shapes-count\"\nrows = {rows}\ncols = {cols}\nlen = 8"
        ));
        let s = p.get(3).unwrap();
        let batch = proc.prepare(&[conversation(&s)], false).unwrap();
        let grid = batch.image_grid_thw.as_ref().unwrap();
        // Patches of 14 px: 2 per 28 px cell side, not resized.
        assert_eq!(
            Vec::<i64>::try_from(grid.view([-1])).unwrap(),
            vec![1, rows * 2, cols * 2]
        );
        let ids = Vec::<i64>::try_from(batch.input_ids.view([-1])).unwrap();
        let n_image = ids.iter().filter(|&&t| t == image_id).count() as i64;
        assert_eq!(n_image, rows * cols, "{rows}x{cols} grid");
        assert_eq!(
            batch.pixel_values.as_ref().unwrap().size(),
            vec![rows * cols * 4, 3 * 2 * 14 * 14]
        );
        // The SFT target is the response and its <|im_end|>.
        let response = text_of(s.messages.last().unwrap());
        let n_resp = proc.tokenizer.encode(response).unwrap().len() as i64;
        let mask = Vec::<i64>::try_from(batch.assistant_mask.view([-1])).unwrap();
        assert_eq!(mask.iter().sum::<i64>(), n_resp + 1);
    }
}

/// Prompts and responses stay short for the tiny model (the quickstart's budget).
#[test]
fn samples_are_short_in_tiny_tokens() {
    let proc = processor();
    for (task, max_prompt, max_response) in [
        ("arithmetic", 12, 30),
        ("shapes-count", 20, 34),
        ("shapes-describe", 12, 36),
    ] {
        let p = plugin(&format!("task = \"{task}\"\nlen = 200"));
        let samples = p.get_many(&(0..200).collect::<Vec<_>>()).unwrap();
        let (mut longest_prompt, mut longest_response, mut total) = (0, 0, 0);
        for s in &samples {
            let prompt = proc
                .tokenizer
                .encode(text_of(&s.messages[0]))
                .unwrap()
                .len();
            let response = proc
                .tokenizer
                .encode(text_of(s.messages.last().unwrap()))
                .unwrap()
                .len();
            longest_prompt = longest_prompt.max(prompt);
            longest_response = longest_response.max(response);
            let batch = proc.prepare(&[conversation(s)], false).unwrap();
            total += batch.seq_lens[0];
        }
        eprintln!(
            "{task}: prompt text <= {longest_prompt} tokens, response <= {longest_response} tokens, \
             mean full sequence (template, system prompt, image tokens) {:.1}",
            total as f64 / samples.len() as f64
        );
        assert!(
            longest_prompt <= max_prompt,
            "{task}: prompt {longest_prompt} tokens"
        );
        assert!(
            longest_response <= max_response,
            "{task}: response {longest_response} tokens"
        );
    }
}
