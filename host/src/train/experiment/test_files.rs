//! Experiment files for the tests of this module's parts.

use std::path::PathBuf;

use super::schema::Experiment;

/// A minimal valid experiment in a temporary directory (with the files it names).
pub fn setup(extra: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    for f in [
        "model/config.json",
        "p/math.wasm",
        "p/jsonl.wasm",
        "p/staged.wasm",
        "data/train.jsonl",
    ] {
        let p = dir.path().join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"x").unwrap();
    }
    let text = format!(
        r#"
name = "t"
[model]
path = "model"
[plugins.math]
wasm = "p/math.wasm"
config = {{ weight = 1.0 }}
[plugins.jsonl]
wasm = "p/jsonl.wasm"
[plugins.staged]
wasm = "p/staged.wasm"
[[rewards]]
plugin = "math"
[datasets.train]
loader = "jsonl"
files = ["data/train.jsonl"]
[schedule]
plugin = "staged"
{extra}
"#
    );
    let path = dir.path().join("exp.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

pub fn error_of(extra: &str) -> String {
    let (_d, p) = setup(extra);
    format!("{:#}", Experiment::load(&p).unwrap_err())
}
