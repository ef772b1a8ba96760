//! Image folders granted apart from the data (`images = [...]` beside
//! `files`), end to end through `lmmhost run` on the tiny Qwen2.5-VL:
//! LMM-R1's own sample layout (images in a folder beside the data file's)
//! and EasyR1's `image_dir`, each trained for one GRPO step.

mod cli_support;

use cli_support::experiments::{
    easyr1_dataset, experiment, lmm_r1_dataset, lmm_r1_sibling_layout, steps_logged,
};
use cli_support::{ok, refused};

#[test]
fn lmm_r1_images_in_a_sibling_folder_train_through_images() {
    let t = tempfile::tempdir().unwrap();
    let dir = std::fs::canonicalize(t.path()).unwrap();
    lmm_r1_sibling_layout(&dir);
    // The data file alone: refused at open, naming the key that fixes it
    // (granting the folder as data instead was the dead end).
    experiment(&dir, &lmm_r1_dataset(false), "geo", "random");
    let err = refused(&dir, &["run", "exp.toml"]);
    assert!(
        err.contains("test_message.jsonl:1:")
            && err.contains("outside the granted directories")
            && err.contains("`images`"),
        "{err}"
    );
    assert!(!dir.join("run/metrics.jsonl").exists());
    // The image folder in `images`: one GRPO step trains on it.
    experiment(&dir, &lmm_r1_dataset(true), "geo", "random");
    ok(&dir, &["run", "exp.toml"]);
    assert_eq!(steps_logged(&dir), 1);
}

#[test]
fn easyr1_image_dir_trains_a_step() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    experiment(dir, &easyr1_dataset(), "easy", "random");
    ok(dir, &["run", "exp.toml"]);
    assert_eq!(steps_logged(dir), 1);
    // Without the grant, the names resolve into a folder the loader cannot see.
    let no_grant = easyr1_dataset().replace("images = [", "# images = [");
    experiment(dir, &no_grant, "easy", "random");
    let err = refused(dir, &["run", "exp.toml"]);
    assert!(err.contains("`images`"), "{err}");
}

#[test]
fn image_roots_in_config_and_bad_folders_are_refused_by_key() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let f = cli_support::experiments::fixtures();
    let ds = format!(
        "[datasets.easy]\nloader = \"jsonl\"\nfiles = [\"{}\"]\nconfig = {{ image_roots = [\"{}\"] }}\n",
        f.join("easyr1/train.jsonl").display(),
        f.join("images").display()
    );
    experiment(dir, &ds, "easy", "random");
    let err = refused(dir, &["run", "exp.toml"]);
    assert!(
        err.contains("datasets.easy: set image roots with images = [...], not config.image_roots"),
        "{err}"
    );
    let ds = format!(
        "[datasets.easy]\nloader = \"jsonl\"\nfiles = [\"{}\"]\nimages = [\"pics\", \"exp.toml\"]\n",
        f.join("easyr1/train.jsonl").display(),
    );
    experiment(dir, &ds, "easy", "random");
    let err = refused(dir, &["run", "exp.toml"]);
    // Paths as the experiment names them, rebased on its folder (here `.`).
    for want in [
        "datasets.easy.images: ./pics does not exist",
        "datasets.easy.images: ./exp.toml is not a directory",
    ] {
        assert!(err.contains(want), "{want:?} in {err}");
    }
}

/// Every `[datasets.*]` table that docs/loaders.md and docs/experiment.md
/// show is a dataset entry of the experiment file (`images` included).
#[test]
fn documented_dataset_tables_are_experiment_keys() {
    let mut seen = 0;
    for doc in ["docs/loaders.md", "docs/experiment.md"] {
        let text = std::fs::read_to_string(cli_support::experiments::repo().join(doc)).unwrap();
        for block in text.split("```toml\n").skip(1) {
            let body = &block[..block.find("```").unwrap()];
            let table: toml::Table = body
                .parse()
                .unwrap_or_else(|e| panic!("{doc}: a TOML block does not parse: {e}"));
            let Some(toml::Value::Table(ds)) = table.get("datasets") else {
                continue;
            };
            for (name, entry) in ds {
                let e: lmmhost::train::experiment::DatasetEntry = entry
                    .clone()
                    .try_into()
                    .unwrap_or_else(|err| panic!("{doc}: datasets.{name}: {err}"));
                seen += 1 + e.images.len();
            }
        }
    }
    // At least the two layouts of docs/loaders.md and their image folders.
    assert!(seen >= 4, "{seen}");
}
