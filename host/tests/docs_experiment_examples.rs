//! Every TOML example in docs/*.md that shows experiment-file keys is read
//! by the experiment parser, so a documented key cannot be one the parser
//! rejects (an unknown key, a wrong type, a value outside its range).
//!
//! Which blocks are checked, decided by their top-level keys:
//! - an **experiment fragment**: every top-level key is one of the experiment
//!   file's (`name`, `model`, `rollout`, `grpo`, ...; `extends` is dropped, it
//!   names a file). The fragment is merged over a minimal experiment (a name,
//!   a model path, a schedule plugin, no plugins, rewards or datasets) and
//!   parsed into `Experiment`; its numbers must be inside their ranges.
//! - a **schedule config** (top-level `stages`, `overrides`,
//!   `samples_per_step` or `dataset_sizes`): each `extra` key of its
//!   overrides is set on the minimal experiment with its value, which must
//!   parse and be in range, like a stage override at run time.
//! - anything else (plugin configs such as a loader's or a reward's own
//!   table) is not an experiment example and is skipped; their plugins'
//!   tests read them.
//!
//! The file paths in examples are not checked (they are the reader's).

use std::path::{Path, PathBuf};

use lmmhost::train::experiment::{merge_tables, range_problems, Experiment};

const EXPERIMENT_KEYS: &[&str] = &[
    "name",
    "seed",
    "output_dir",
    "extends",
    "model",
    "plugins",
    "rewards",
    "datasets",
    "schedule",
    "rollout",
    "optim",
    "grpo",
    "checkpoint",
    "logging",
    "eval",
    "sft",
    "trust",
    "distributed",
];
const SCHEDULE_KEYS: &[&str] = &["stages", "overrides", "samples_per_step", "dataset_sizes"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn base() -> toml::Table {
    toml::from_str(
        "name = \"docs\"\nplugins = {}\nrewards = []\ndatasets = {}\n\
         [model]\npath = \"model\"\n[schedule]\nplugin = \"staged\"\n",
    )
    .unwrap()
}

/// The experiment `table` describes, or what the parser says is wrong.
fn parse(table: &toml::Table) -> Result<(), String> {
    let text = toml::to_string(table).map_err(|e| e.to_string())?;
    toml::from_str::<Experiment>(&text).map_err(|e| e.to_string())?;
    let out = range_problems(table);
    if out.is_empty() {
        Ok(())
    } else {
        Err(out.join("; "))
    }
}

/// `key` (dotted) set to `value` in `t`.
fn set(t: &mut toml::Table, key: &str, value: toml::Value) {
    let (head, last) = match key.rsplit_once('.') {
        Some((h, l)) => (h.split('.').collect::<Vec<_>>(), l),
        None => (vec![], key),
    };
    let mut cur = t;
    for part in head {
        cur = cur
            .entry(part)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .unwrap();
    }
    cur.insert(last.to_string(), value);
}

fn extras(t: &toml::Table) -> Vec<(String, toml::Value)> {
    let mut out = Vec::new();
    let mut from = |o: Option<&toml::Value>| {
        if let Some(e) = o.and_then(|o| o.get("extra")).and_then(|e| e.as_table()) {
            out.extend(e.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    };
    from(t.get("overrides"));
    for st in t
        .get("stages")
        .and_then(|s| s.as_array())
        .into_iter()
        .flatten()
    {
        from(st.get("overrides"));
    }
    out
}

/// Checks every TOML block of `doc`; returns (experiment fragments, schedule extras) checked.
fn check_doc(doc: &Path, problems: &mut Vec<String>) -> (usize, usize) {
    let text = std::fs::read_to_string(doc).unwrap();
    let (mut fragments, mut extra_keys) = (0, 0);
    for (i, block) in text.split("```toml\n").skip(1).enumerate() {
        let body = &block[..block.find("```").unwrap()];
        let line = text[..text.find(body).unwrap()].lines().count() + 1;
        let at = format!("{}:{line} (TOML block {})", doc.display(), i + 1);
        let Ok(mut t) = body.parse::<toml::Table>() else {
            problems.push(format!("{at}: not TOML"));
            continue;
        };
        if !t.is_empty() && t.keys().all(|k| EXPERIMENT_KEYS.contains(&k.as_str())) {
            t.remove("extends");
            if let Err(e) = parse(&merge_tables(&base(), &t)) {
                problems.push(format!("{at}: {e}"));
            }
            fragments += 1;
        } else if t.keys().any(|k| SCHEDULE_KEYS.contains(&k.as_str())) {
            for (key, value) in extras(&t) {
                let section = key.split('.').next().unwrap_or("");
                let mut exp = base();
                set(&mut exp, &key, value);
                if !["rollout", "optim", "grpo", "sft"].contains(&section) {
                    problems.push(format!("{at}: extra key `{key}` is not a stage setting"));
                } else if let Err(e) = parse(&exp) {
                    problems.push(format!("{at}: extra `{key}`: {e}"));
                }
                extra_keys += 1;
            }
        }
    }
    (fragments, extra_keys)
}

#[test]
fn every_documented_experiment_example_parses() {
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    let mut problems = Vec::new();
    let (mut fragments, mut extra_keys) = (0, 0);
    for doc in &docs {
        let (f, e) = check_doc(doc, &mut problems);
        fragments += f;
        extra_keys += e;
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // experiment.md, loaders.md, plugins.md, bundles.md and rewards.md show
    // eight such blocks; an extraction that finds few is broken, not clean.
    assert!(
        fragments >= 6,
        "only {fragments} experiment fragments found"
    );
    assert!(extra_keys >= 1, "no schedule `extra` key found");
}

/// The check itself: a misspelt key, a wrong type, a value out of range and
/// an `extra` key the parser rejects are each reported with the block's place.
#[test]
fn a_bad_example_is_reported() {
    let t = tempfile::tempdir().unwrap();
    let doc = t.path().join("bad.md");
    std::fs::write(
        &doc,
        "# x\n\n```toml\n[rollout]\ngroup_sise = 4\n```\n\n```toml\n[optim]\nlr = \"fast\"\n```\n\n\
         ```toml\n[grpo]\nclip_low = 3.0\n```\n\n```toml\n[[stages]]\nname = \"a\"\n\
         [stages.overrides]\nextra = { \"grpo.clip_hi\" = 0.28 }\n```\n\n```toml\nformat = \"easyr1\"\n```\n",
    )
    .unwrap();
    let mut problems = Vec::new();
    assert_eq!(check_doc(&doc, &mut problems), (3, 1));
    assert_eq!(problems.len(), 4, "{problems:#?}");
    assert!(
        problems[0].contains("bad.md:4") && problems[0].contains("group_sise"),
        "{}",
        problems[0]
    );
    assert!(problems[1].contains("lr"), "{}", problems[1]);
    assert!(problems[2].contains("grpo.clip_low"), "{}", problems[2]);
    assert!(problems[3].contains("grpo.clip_hi"), "{}", problems[3]);
}
