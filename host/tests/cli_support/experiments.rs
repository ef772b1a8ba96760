//! Small experiment files on the tiny Qwen2.5-VL (configs/models/tiny-qwen2.5-vl,
//! which ships no weights) and the layout fixtures of tests/fixtures/datasets/.

use std::path::{Path, PathBuf};

use super::plugin;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn fixtures() -> PathBuf {
    std::fs::canonicalize(repo().join("tests/fixtures/datasets")).unwrap()
}

pub fn tiny_vl() -> PathBuf {
    repo().join("configs/models/tiny-qwen2.5-vl")
}

/// Writes `dir/exp.toml` and its schedule: the tiny Qwen2.5-VL (`init`:
/// its directory has no weights, so a run needs "random"), loader-jsonl,
/// reward-math, and one GRPO step drawing from dataset `draw`; `datasets`
/// holds the `[datasets.*]` tables.
pub fn experiment(dir: &Path, datasets: &str, draw: &str, init: &str) -> PathBuf {
    let text = format!(
        r#"
name = "data-test"
seed = 3
output_dir = "run"

[model]
path = "{model}"
init = "{init}"
threads = 1

[plugins.jsonl]
wasm = "{jsonl}"

[plugins.math]
wasm = "{math}"

[plugins.staged]
wasm = "{staged}"

[[rewards]]
plugin = "math"

{datasets}

[schedule]
plugin = "staged"
file = "schedule.toml"

[rollout]
group_size = 2
prompts_per_step = 2
max_response_tokens = 4

[optim]
micro_batch_size = 4

[logging]
tensorboard = false
plots = false
progress = false
"#,
        model = tiny_vl().display(),
        jsonl = plugin("loader-jsonl").display(),
        math = plugin("reward-math").display(),
        staged = plugin("schedule-staged").display(),
    );
    std::fs::write(
        dir.join("schedule.toml"),
        format!("[[stages]]\nname = \"rl\"\nkind = \"grpo\"\ndatasets = {{ {draw} = 1.0 }}\nsteps = 1\n"),
    )
    .unwrap();
    let p = dir.join("exp.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// Sets `model.init` of the experiment file `p`.
pub fn with_init(p: &Path, init: &str) {
    let text = std::fs::read_to_string(p).unwrap();
    let text = text
        .replace("init = \"random\"", &format!("init = \"{init}\""))
        .replace("init = \"pretrained\"", &format!("init = \"{init}\""));
    std::fs::write(p, text).unwrap();
}

/// Training steps in `dir/run/metrics.jsonl`.
pub fn steps_logged(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("run/metrics.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"step\""))
        .count()
}

/// LMM-R1's own sample layout in `dir`: `data/test_message.jsonl`, two rows
/// of a stringified message list whose image is an absolute `file://` path
/// into `images/`, the folder beside `data/`. Returns the image's path.
pub fn lmm_r1_sibling_layout(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::create_dir_all(dir.join("images")).unwrap();
    let img = dir.join("images/1.png");
    std::fs::copy(fixtures().join("images/red.png"), &img).unwrap();
    let message = serde_json::json!([
        {"role": "user", "content": [
            {"type": "image", "image": format!("file://{}", img.display())},
            {"type": "text", "text": LMM_R1_QUESTION}
        ]}
    ]);
    let row = serde_json::json!({"message": message.to_string(), "answer": "$\\boxed{60}$"});
    std::fs::write(
        dir.join("data/test_message.jsonl"),
        format!("{row}\n{row}\n"),
    )
    .unwrap();
    img
}

pub const LMM_R1_QUESTION: &str = "Which number should be written in place of the question mark?";

/// The dataset table for [`lmm_r1_sibling_layout`], with or without `images`.
pub fn lmm_r1_dataset(with_images: bool) -> String {
    let mut t =
        "[datasets.geo]\nloader = \"jsonl\"\nfiles = [\"data/test_message.jsonl\"]\n".to_string();
    if with_images {
        t.push_str("images = [\"images\"]\n");
    }
    t
}

/// EasyR1's layout from the fixtures: names relative to `image_dir`, the
/// image folder granted through `images`.
pub fn easyr1_dataset() -> String {
    let f = fixtures();
    format!(
        "[datasets.easy]\nloader = \"jsonl\"\nfiles = [\"{}\"]\nimages = [\"{}\"]\nconfig = {{ image_dir = \"../images\" }}\n",
        f.join("easyr1/train.jsonl").display(),
        f.join("images").display()
    )
}
