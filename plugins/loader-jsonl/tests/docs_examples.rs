//! The examples of docs/loaders.md: every sample row is read by the loader
//! in its documented layout (and auto-detection picks the same layout),
//! and every TOML config block is a valid loader config.

use lmmhost_sdk::rows::Config;
use lmmhost_sdk::Loader;
use loader_jsonl::JsonlLoader;
use std::path::Path;

fn doc() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/loaders.md");
    std::fs::read_to_string(path).unwrap()
}

/// (heading, language, body) of every fenced block.
fn blocks(text: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut heading = String::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.starts_with('#') {
            heading = line.to_owned();
        } else if let Some(lang) = line.strip_prefix("```") {
            let body: Vec<&str> = lines
                .by_ref()
                .take_while(|l| !l.starts_with("```"))
                .collect();
            out.push((heading.clone(), lang.to_owned(), body.join("\n")));
        }
    }
    out
}

#[test]
fn every_documented_sample_row_is_read_in_its_layout() {
    // The data file's folder (granted, with the Sokoban level next to the
    // file) and an image root elsewhere, with `image_dir` pointing into it.
    let t = tempfile::tempdir().unwrap();
    let (data, root) = (t.path().join("data"), t.path().join("root"));
    std::fs::create_dir_all(root.join("images")).unwrap();
    std::fs::write(root.join("images/1.png"), [0x89, b'P', b'N', b'G']).unwrap();
    std::fs::create_dir_all(data.join("levels")).unwrap();
    let level = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/datasets/sokoban/levels/Sokoban-small-v0-level_0.npy");
    std::fs::copy(level, data.join("levels/Sokoban-small-v0-level_0.npy")).unwrap();
    let images = format!(
        "image_dir = {0:?}\nimage_roots = [{0:?}]",
        root.to_string_lossy()
    );
    let mut seen = Vec::new();
    for (heading, lang, body) in blocks(&doc()) {
        if lang != "json" {
            continue;
        }
        // "### Name (`layout`)"
        let layout = heading
            .rsplit('`')
            .nth(1)
            .unwrap_or_else(|| panic!("no layout name in {heading:?}"));
        let row: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{heading}: {e}"));
        std::fs::write(data.join("row.jsonl"), format!("{row}\n")).unwrap();
        let open = |cfg: &str| {
            let cfg = format!("{cfg}\n{images}");
            let grant = [data.to_string_lossy().into_owned()];
            let (l, _) = JsonlLoader::open(&cfg, &grant)
                .unwrap_or_else(|e| panic!("{heading} ({cfg}): {e}"));
            l.get(0).unwrap()
        };
        let forced = open(&format!("format = {layout:?}"));
        let auto = open("");
        assert_eq!(
            forced, auto,
            "{heading}: auto-detection picks another layout"
        );
        assert!(!forced.messages.is_empty(), "{heading}");
        seen.push(layout.to_owned());
    }
    let all = [
        "lmm-r1",
        "sokoban",
        "easyr1",
        "messages",
        "sharegpt",
        "query-response",
        "alpaca",
        "verl",
    ];
    assert_eq!(seen, all, "every layout has one sample row, in this order");
}

#[test]
fn every_documented_config_parses() {
    let mut n = 0;
    for (heading, lang, body) in blocks(&doc()) {
        if lang != "toml" {
            continue;
        }
        let table: toml::Table = body.parse().unwrap_or_else(|e| panic!("{heading}: {e}"));
        let configs: Vec<String> = match table.get("datasets") {
            // An experiment snippet: each dataset's loader config.
            Some(toml::Value::Table(ds)) => ds
                .values()
                .filter_map(|d| d.get("config"))
                .map(|c| toml::to_string(c).unwrap())
                .collect(),
            _ => vec![body.clone()],
        };
        for c in configs {
            let parsed = if table.get("datasets").is_some() && !c.contains("task") {
                Config::parse("docs", &c).map(|_| ())
            } else if table.get("datasets").is_some() {
                Ok(()) // loader-synthetic's own keys: checked in its crate.
            } else {
                Config::parse("docs", &c).map(|_| ())
            };
            parsed.unwrap_or_else(|e| panic!("{heading}: {e}"));
            n += 1;
        }
    }
    assert!(n >= 2, "{n} configs checked");
}
