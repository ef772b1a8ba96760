//! The sandbox against hostile plugins: each gets a clear error within its
//! budget and the host keeps working.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lmmhost_plugin_host::{
    ItemOutcome, LoaderPlugin, OnError, PluginRuntime, PluginSpec, RewardPlugin, RuntimeOptions,
};
use lmmhost_sdk::{Completion, ContentPart, Message, Sample};

fn plugin_dir() -> PathBuf {
    std::env::var_os("LMMHOST_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/plugins"))
}

fn wasm(name: &str) -> PathBuf {
    let p = plugin_dir().join(format!("{name}.wasm"));
    assert!(
        p.is_file(),
        "{} is missing: run scripts/build-plugins.sh first",
        p.display()
    );
    p
}

fn runtime() -> PluginRuntime {
    PluginRuntime::new(RuntimeOptions { cache_dir: None }).unwrap()
}

fn spec(name: &str, timeout_ms: u64, on_error: OnError) -> PluginSpec {
    let mut s = PluginSpec::from_file(name, &wasm(name), "").unwrap();
    s.limits.call_timeout_ms = timeout_ms;
    s.limits.instances = Some(2);
    s.on_error = on_error;
    s.log = Arc::new(|_| {});
    s
}

fn completion(id: &str, response: &str) -> Completion {
    Completion {
        sample: Sample {
            id: id.into(),
            messages: vec![Message {
                role: "user".into(),
                content: vec![ContentPart::Text("q".into())],
            }],
            answer: Some("1".into()),
            metadata: vec![],
        },
        response: response.into(),
        response_tokens: 3,
    }
}

fn batch(responses: &[&str]) -> Vec<Completion> {
    responses
        .iter()
        .enumerate()
        .map(|(i, r)| completion(&format!("s{i}"), r))
        .collect()
}

#[test]
fn infinite_loop_times_out_and_names_the_item() {
    let rt = runtime();
    let p = RewardPlugin::new(&rt, spec("hostile-loop", 300, OnError::Zero)).unwrap();
    let start = Instant::now();
    let out = p
        .score_batch(&batch(&["fine", "LOOP", "fine", "fine"]))
        .unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    assert!(matches!(out[0], ItemOutcome::Scored(_)));
    match &out[1] {
        ItemOutcome::Failed { index, error } => {
            assert_eq!(*index, 1);
            assert!(error.contains("timed out after 300 ms"), "{error}");
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    assert!(matches!(out[2], ItemOutcome::Scored(_)) && matches!(out[3], ItemOutcome::Scored(_)));

    let p = RewardPlugin::new(&rt, spec("hostile-loop", 300, OnError::Abort)).unwrap();
    let err = format!(
        "{:#}",
        p.score_batch(&batch(&["fine", "fine", "LOOP"]))
            .unwrap_err()
    );
    assert!(
        err.contains("plugin hostile-loop") && err.contains("score-groups failed on item 2"),
        "{err}"
    );
    assert!(
        err.contains("sample id \"s2\"") && err.contains("timed out"),
        "{err}"
    );
    // The host and the plugin keep working.
    let out = p.score_batch(&batch(&["fine", "fine"])).unwrap();
    assert!(out.iter().all(|o| matches!(o, ItemOutcome::Scored(_))));
}

#[test]
fn huge_allocation_hits_the_memory_cap() {
    let rt = runtime();
    let mut s = spec("hostile-alloc", 5_000, OnError::Zero);
    s.limits.memory_mb = 128;
    let p = RewardPlugin::new(&rt, s).unwrap();
    let out = p.score_batch(&batch(&["ALLOC", "fine"])).unwrap();
    match &out[0] {
        ItemOutcome::Failed { error, .. } => assert!(
            error.contains("ran out of memory (limit memory_mb = 128)"),
            "{error}"
        ),
        other => panic!("expected a memory failure, got {other:?}"),
    }
    assert!(matches!(out[1], ItemOutcome::Scored(_)));
}

#[test]
fn panic_is_a_trap_naming_the_item_and_plain_errors_stay_per_item() {
    let rt = runtime();
    let p = RewardPlugin::new(&rt, spec("hostile-panic", 2_000, OnError::Abort)).unwrap();
    let err = format!(
        "{:#}",
        p.score_batch(&batch(&["fine", "PANIC"])).unwrap_err()
    );
    assert!(err.contains("item 1") && err.contains("trapped"), "{err}");
    assert!(
        err.contains("deliberate panic on sample s1"),
        "the guest's panic message is shown: {err}"
    );

    let p = RewardPlugin::new(&rt, spec("hostile-panic", 2_000, OnError::Zero)).unwrap();
    let out = p
        .score_batch(&batch(&["ERR", "fine", "PANIC", "fine"]))
        .unwrap();
    assert_eq!(out.len(), 4);
    assert!(
        matches!(&out[0], ItemOutcome::Failed { index: 0, error } if error.contains("cannot score sample s0"))
    );
    assert!(matches!(out[1], ItemOutcome::Scored(_)));
    assert!(matches!(&out[2], ItemOutcome::Failed { index: 2, .. }));
    assert!(matches!(out[3], ItemOutcome::Scored(_)));
}

#[test]
fn loader_reads_only_its_grant() {
    let dir = tempfile::tempdir().unwrap();
    let granted = dir.path().join("granted");
    std::fs::create_dir(&granted).unwrap();
    std::fs::write(granted.join("train.jsonl"), "{}\n").unwrap();
    std::fs::write(dir.path().join("secret.txt"), "secret").unwrap();
    std::fs::write(dir.path().join("sibling.jsonl"), "sibling").unwrap();
    let single = dir.path().join("single.jsonl");
    std::fs::write(&single, "x").unwrap();
    let rt = runtime();
    let mut s = spec("hostile-escape", 2_000, OnError::Abort);
    let outside = dir.path().join("secret.txt");
    let sibling = dir.path().join("sibling.jsonl");
    let escape = granted.join("../secret.txt");
    s.config = format!(
        "read = [\"/etc/passwd\", {:?}, {:?}, {:?}, {:?}]",
        outside.canonicalize().unwrap().display().to_string(),
        escape.display().to_string(),
        sibling.canonicalize().unwrap().display().to_string(),
        granted
            .canonicalize()
            .unwrap()
            .join("train.jsonl")
            .display()
            .to_string(),
    );
    s.grants = vec![granted.clone(), single.clone()];
    let p = LoaderPlugin::new(&rt, s).unwrap();
    let notes = &p.info().notes;
    let line = |prefix: &str| {
        notes
            .iter()
            .find(|n| n.contains(prefix))
            .cloned()
            .unwrap_or_default()
    };
    // Granted: the directory (as a path given to `open` and by name) and the single file.
    assert!(
        notes[0].starts_with("err ") && notes[0].contains("granted"),
        "a directory is not a file: {notes:?}"
    );
    assert!(
        notes[1].starts_with("ok ") && notes[1].ends_with(" 1"),
        "{notes:?}"
    );
    assert!(line("train.jsonl").starts_with("ok "), "{notes:?}");
    // Not granted: system files, files next to the grant, and `..` escapes.
    assert!(line("/etc/passwd").starts_with("err "), "{notes:?}");
    assert!(line("secret.txt").starts_with("err "), "{notes:?}");
    assert!(
        line("sibling.jsonl").starts_with("err "),
        "a granted file's siblings stay hidden: {notes:?}"
    );
}

#[test]
fn out_of_version_and_wrong_world_are_refused() {
    let rt = runtime();
    let err = format!(
        "{:#}",
        RewardPlugin::new(&rt, spec("wrong-wit-version", 1_000, OnError::Abort))
            .err()
            .unwrap()
    );
    assert!(
        err.contains("wrong-wit-version")
            && err.contains("needs lmmhost:plugin@0.9.0")
            && err.contains("speaks @0.1.0 and @0.2.0"),
        "{err}"
    );
    let err = format!(
        "{:#}",
        RewardPlugin::new(&rt, spec("hostile-escape", 1_000, OnError::Abort))
            .err()
            .unwrap()
    );
    assert!(
        err.contains("loader-plugin") && err.contains("reward-plugin"),
        "{err}"
    );
}

#[test]
fn no_environment_clock_or_network_and_seeded_randomness() {
    let rt = runtime();
    let probe = |seed: u64| {
        let mut s = spec("sandbox-probe", 2_000, OnError::Abort);
        s.seed = seed;
        s.limits.instances = Some(1);
        let p = RewardPlugin::new(&rt, s).unwrap();
        match p.score_batch(&batch(&["x"])).unwrap().remove(0) {
            ItemOutcome::Scored(score) => score
                .components
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
            other => panic!("{other:?}"),
        }
    };
    let a = probe(7);
    assert_eq!(a["env_vars"], 0.0);
    assert_eq!(a["wall_secs"], 0.0);
    assert_eq!(a["net_ok"], 0.0);
    assert_eq!(
        probe(7)["random"],
        a["random"],
        "same seed, same randomness"
    );
    assert_ne!(
        probe(8)["random"],
        a["random"],
        "another seed, other randomness"
    );
}

#[test]
fn compiled_components_are_cached_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let rt = PluginRuntime::new(RuntimeOptions {
        cache_dir: Some(dir.path().to_path_buf()),
    })
    .unwrap();
    RewardPlugin::new(&rt, spec("hostile-panic", 1_000, OnError::Abort)).unwrap();
    RewardPlugin::new(&rt, spec("hostile-panic", 1_000, OnError::Abort)).unwrap();
    assert_eq!(rt.cache().unwrap().stats(), (1, 1));
    let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(files.len(), 1);
}

#[test]
fn a_trap_inside_a_group_names_the_response_and_spares_the_rest() {
    let rt = runtime();
    // Two groups of 4 responses to one sample each; the panic is response 2
    // of the second group, i.e. item 6 of the batch.
    let mut groups = Vec::new();
    for (id, responses) in [
        ("g0", ["a", "b", "c", "d"]),
        ("g1", ["e", "f", "PANIC", "ERR"]),
    ] {
        let mut g = lmmhost_sdk::Group::new(completion(id, "").sample);
        responses.iter().for_each(|r| g.push(r, 1));
        groups.push(g);
    }
    let p = RewardPlugin::new(&rt, spec("hostile-panic", 2_000, OnError::Abort)).unwrap();
    let err = format!("{:#}", p.score_groups(&groups).unwrap_err());
    assert!(
        err.contains("score-groups failed on item 6 (sample id \"g1\", response 2 of its group)")
            && err.contains("deliberate panic on sample g1"),
        "{err}"
    );
    let p = RewardPlugin::new(&rt, spec("hostile-panic", 2_000, OnError::Zero)).unwrap();
    let t = p.score_groups(&groups).unwrap();
    assert_eq!(t.len(), 8);
    assert!(
        t.failure(6).unwrap().contains("trapped"),
        "{:?}",
        t.failure(6)
    );
    assert_eq!(t.failure(7), Some("cannot score sample g1"));
    for i in [0, 1, 2, 3, 4, 5] {
        assert_eq!(
            t.item(i),
            Ok(lmmhost_sdk::Score {
                total: 1.0,
                components: vec![("ok".into(), 1.0)]
            }),
            "item {i}"
        );
    }
    // The pool recovered: the next call scores normally.
    assert_eq!(p.score_groups(&groups[..1]).unwrap().failures, vec![]);
}
