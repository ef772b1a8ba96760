//! The fuzz corpus (fuzz/corpus/<target>/) replayed through the fuzzed entry
//! points (fuzz/entries.rs) on stable: the parsers cargo-fuzz explores run in
//! every test run, and a corpus entry that once crashed one (a finding, kept
//! as a regression) must not crash it again.

#[path = "../../fuzz/entries.rs"]
mod entries;

use std::path::Path;

#[test]
fn every_corpus_entry_runs_through_its_target_without_a_panic() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    for (target, entry) in entries::TARGETS {
        let dir = corpus.join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(
            files.len() >= 3,
            "{target}: only {} corpus entries",
            files.len()
        );
        for f in files {
            let data = std::fs::read(&f).unwrap();
            if let Err(panic) = std::panic::catch_unwind(|| entry(&data)) {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                panic!("{target}: {} panics: {msg}", f.display());
            }
        }
    }
}

/// The entry points do reach the parsers: a well-formed input of each kind
/// parses (a target that rejected everything would fuzz nothing).
#[test]
fn the_seed_inputs_parse() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let read = |p: &str| std::fs::read(corpus.join(p)).unwrap();
    for seed in [
        "ms-swift-5",
        "easyr1-0",
        "lmm-r1-7",
        "messages-10",
        "sharegpt-11",
        "alpaca-12",
        "verl-13",
    ] {
        let sample = entries::row(&read(&format!("rows/{seed}")))
            .unwrap()
            .unwrap_or_else(|e| panic!("{seed}: {e}"));
        assert!(!sample.messages.is_empty(), "{seed}");
    }
    lmmhost_bundle::open_bundle_bytes(&read("bundle/signed")).unwrap();
    lmmhost_bundle::open_bundle_bytes(&read("bundle/unsigned")).unwrap();
    let pair = read("math_answer/pair-0");
    let (a, b) = std::str::from_utf8(&pair)
        .unwrap()
        .split_once('\0')
        .unwrap();
    assert!(lmmhost_sdk::math::equivalent(
        lmmhost_sdk::answer::last_boxed(a).unwrap(),
        b
    ));
}
