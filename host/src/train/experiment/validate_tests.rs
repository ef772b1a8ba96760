use super::super::schema_keys::{numeric_keys, Numeric};
use super::super::test_files::{error_of, setup};
use super::*;
use crate::train::experiment::Experiment;

/// Every numeric key of the schema has a range, and every range is a key.
#[test]
fn every_numeric_key_has_a_range() {
    let keys = numeric_keys();
    assert!(keys.len() > 40, "the probe found only {keys:?}");
    let missing: Vec<&str> = keys
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| range_of(k).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "numeric settings without a range in RANGES: {missing:?}"
    );
    let stale: Vec<&str> = RANGES
        .iter()
        .map(|(k, _)| *k)
        .filter(|k| !keys.iter().any(|(n, _)| n == k))
        .collect();
    assert!(
        stale.is_empty(),
        "RANGES entries the schema does not have: {stale:?}"
    );
}

/// A value just outside the range, when the key's type can hold one.
fn outside(r: &Range, kind: Numeric) -> Option<toml::Value> {
    let v = match (r.min, r.max, kind) {
        (Bound::Inclusive(m), _, Numeric::Integer) if m >= 1.0 => m - 1.0,
        (_, Bound::Inclusive(m), Numeric::Integer) if m.is_finite() => m + 1.0,
        (Bound::Inclusive(m), _, Numeric::Float) => m - 0.5,
        (Bound::Exclusive(m), _, Numeric::Float) => m,
        (_, Bound::Inclusive(m), Numeric::Float) if m.is_finite() => m + 0.5,
        (_, Bound::Exclusive(m), Numeric::Float) => m,
        (Bound::None, Bound::None, Numeric::Float) => f64::NAN,
        _ => return None,
    };
    Some(match kind {
        Numeric::Integer => toml::Value::Integer(v as i64),
        Numeric::Float => toml::Value::Float(v),
    })
}

/// `plugins.*.limits.memory_mb` as a path in the test file, and that
/// path as the error names it.
fn concrete(pattern: &str) -> (Vec<String>, String) {
    let named = pattern.replacen("plugins.*", "plugins.math", 1).replacen(
        "datasets.*",
        "datasets.train",
        1,
    );
    let parts = named.split('.').map(str::to_string).collect();
    (parts, named.replace("[]", "[0]"))
}

fn set(table: &mut toml::Table, parts: &[String], value: toml::Value) {
    let (last, parents) = parts.split_last().unwrap();
    let mut t = table;
    for p in parents {
        let (name, arr) = match p.strip_suffix("[]") {
            Some(n) => (n, true),
            None => (p.as_str(), false),
        };
        let entry = t
            .entry(name.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        t = if arr {
            entry.as_array_mut().unwrap()[0].as_table_mut().unwrap()
        } else {
            entry.as_table_mut().unwrap()
        };
    }
    match last.strip_suffix("[]") {
        Some(name) => {
            t.insert(
                name.to_string(),
                toml::Value::Array(vec![value.clone(), value]),
            );
        }
        None => {
            t.insert(last.clone(), value);
        }
    }
}

/// Every numeric key, set just outside its range, is refused with its
/// key path, its value and the range.
#[test]
fn every_range_is_enforced_with_key_and_range() {
    let (dir, p) = setup("[eval]\ndatasets = [\"train\"]\n");
    let base: toml::Table = std::fs::read_to_string(&p).unwrap().parse().unwrap();
    let mut checked = 0;
    for (pattern, kind) in numeric_keys() {
        let r = range_of(&pattern).unwrap();
        let Some(bad) = outside(r, kind) else {
            // Only unsigned integers from 0 up: the parse refuses the rest.
            assert!(
                kind == Numeric::Integer
                    && matches!(r.min, Bound::Inclusive(m) if m <= 0.0)
                    && matches!(r.max, Bound::None),
                "{pattern}: no out-of-range value to test"
            );
            continue;
        };
        let (parts, named) = concrete(&pattern);
        let mut t = base.clone();
        set(&mut t, &parts, bad.clone());
        let file = dir.path().join("range.toml");
        std::fs::write(&file, toml::to_string(&t).unwrap()).unwrap();
        let msg = format!("{:#}", Experiment::load(&file).unwrap_err());
        assert!(
            msg.contains(&format!("{named} = ")) && msg.contains(&r.describe()),
            "{pattern} = {bad}: {msg}"
        );
        checked += 1;
    }
    assert!(
        checked > 35,
        "only {checked} keys had an out-of-range value"
    );
}

#[test]
fn the_campaign_inputs_are_refused() {
    let msg =
        error_of("[optim]\neps = -1e-8\nweight_decay = -0.1\n[grpo]\nloss_constant_length = 0\n");
    assert!(
        msg.contains("optim.eps = -1e-8: must be in (0, 1]"),
        "{msg}"
    );
    assert!(
        msg.contains("optim.weight_decay = -0.1: must be >= 0"),
        "{msg}"
    );
    assert!(
        msg.contains("grpo.loss_constant_length = 0: must be >= 1"),
        "{msg}"
    );
    let msg = error_of("[plugins.math.limits]\nmemory_mb = 17592186044416\n");
    assert!(
        msg.contains("plugins.math.limits.memory_mb = 17592186044416: must be in [1, 4096]"),
        "{msg}"
    );
}

#[test]
fn defaults_are_inside_their_ranges() {
    let (_d, p) = setup("");
    let e = Experiment::load(&p).unwrap();
    let s = e.file_stage_settings();
    let defaults = [
        ("rollout.temperature", s.rollout.temperature),
        ("rollout.top_p", s.rollout.top_p),
        ("optim.eps", s.optim.eps),
        ("optim.weight_decay", s.optim.weight_decay),
        ("optim.betas[]", s.optim.betas[0]),
        ("optim.betas[]", s.optim.betas[1]),
        ("grpo.clip_low", s.grpo.clip_low),
        ("grpo.clip_high", s.grpo.clip_high),
        ("grpo.entropy.decay", s.grpo.entropy.decay),
        ("grpo.pad.t_low", s.grpo.pad.t_low),
        ("grpo.pad.t_high", s.grpo.pad.t_high),
        ("grpo.pad.ratio", s.grpo.pad.ratio),
        (
            "plugins.*.limits.memory_mb",
            e.plugins["math"].limits.memory_mb as f64,
        ),
        ("checkpoint.keep_last", e.checkpoint.keep_last as f64),
        ("distributed.timeout_secs", e.distributed.timeout_secs),
        (
            "distributed.zero_stage",
            f64::from(e.distributed.zero_stage),
        ),
    ];
    for (k, v) in defaults {
        assert!(range_of(k).unwrap().contains(v), "{k} = {v}");
    }
}

#[test]
fn impossible_combinations_are_rejected_together() {
    let msg = error_of(
        "[grpo]\nfreeze_vision = true\nfreeze_language = true\n[grpo.pad]\nenabled = true\n[grpo.dynamic_sampling]\nenabled = true\n[eval]\ndatasets = [\"nope\"]\nsamples = 2\n",
    );
    assert!(
        msg.contains("grpo.freeze_vision and grpo.freeze_language"),
        "{msg}"
    );
    assert!(msg.contains("choose one remedy"), "{msg}");

    assert!(
        msg.contains("eval.datasets: no dataset named \"nope\""),
        "{msg}"
    );
    assert!(
        msg.contains("eval.greedy = true with eval.samples > 1"),
        "{msg}"
    );
}

#[test]
fn zero_threads_or_workers_are_named() {
    let (_d, p) = setup("");
    let text = std::fs::read_to_string(&p).unwrap().replace(
        "path = \"model\"",
        "path = \"model\"\nthreads = 0\nworkers = 0",
    );
    std::fs::write(&p, text).unwrap();
    let msg = format!("{:#}", Experiment::load(&p).unwrap_err());
    assert!(msg.contains("model.threads = 0: must be >= 1"), "{msg}");
    assert!(msg.contains("model.workers = 0: must be >= 1"), "{msg}");
}

#[test]
fn dtypes_are_named() {
    let (_d, p) = setup("[grpo.kl]\nreference_dtype = \"f32-pure\"\n");
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("path = \"model\"", "path = \"model\"\ndtype = \"bf17\"");
    std::fs::write(&p, text).unwrap();
    let msg = format!("{:#}", Experiment::load(&p).unwrap_err());
    assert!(msg.contains("model.dtype: dtype \"bf17\""), "{msg}");
    assert!(
        msg.contains("grpo.kl.reference_dtype: dtype \"f32-pure\""),
        "{msg}"
    );
}

#[test]
fn image_folders_must_exist_and_roots_come_from_images_only() {
    let (dir, p) = setup("");
    let text = std::fs::read_to_string(&p).unwrap().replace(
        "files = [\"data/train.jsonl\"]",
        "files = [\"data/train.jsonl\"]\nimages = [\"data/train.jsonl\", \"data/pics\"]\nconfig = { image_roots = [\"/srv/pics\"] }",
    );
    std::fs::write(&p, text).unwrap();
    let msg = format!("{:#}", Experiment::load(&p).unwrap_err());
    let file = dir.path().join("data/train.jsonl");
    let pics = dir.path().join("data/pics");
    assert!(
        msg.contains(&format!(
            "datasets.train.images: {} is not a directory",
            file.display()
        )),
        "{msg}"
    );
    assert!(
        msg.contains(&format!(
            "datasets.train.images: {} does not exist",
            pics.display()
        )),
        "{msg}"
    );
    assert!(
        msg.contains("datasets.train: set image roots with images = [...], not config.image_roots"),
        "{msg}"
    );
    // In the loader plugin's own table too.
    let msg = error_of("[plugins.jsonl.config]\nimage_roots = [\"/srv\"]\n");
    assert!(
        msg.contains("datasets.train: set image roots with images = [...]"),
        "{msg}"
    );
}

#[test]
fn missing_files_and_dangling_names() {
    let (dir, p) = setup("");
    std::fs::remove_file(dir.path().join("p/math.wasm")).unwrap();
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("loader = \"jsonl\"", "loader = \"jsnl\"");
    std::fs::write(&p, text).unwrap();
    let msg = format!("{:#}", Experiment::load(&p).unwrap_err());
    assert!(msg.contains("plugins.math.wasm: file not found"), "{msg}");
    assert!(
        msg.contains("datasets.train.loader: no plugin named \"jsnl\""),
        "{msg}"
    );
}
