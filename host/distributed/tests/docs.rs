//! docs/distributed.md against the code: the files it names exist, the
//! examples take the flags it shows, the launch variables it lists are the
//! ones read, and the launcher sets the ones it says.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::Path;

use lmmhost_distributed::launch::LocalLaunch;
use lmmhost_distributed::LaunchEnv;

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn doc() -> String {
    let path = crate_dir().join("../../docs/distributed.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The text of the `## title` section.
fn section(doc: &str, title: &str) -> String {
    let start = doc
        .find(&format!("\n## {title}\n"))
        .unwrap_or_else(|| panic!("no section {title:?}"));
    let rest = &doc[start + title.len() + 5..];
    rest[..rest.find("\n## ").unwrap_or(rest.len())].to_owned()
}

/// Backticked words in `text` (outside code blocks) that look like
/// environment variables.
fn variables(text: &str) -> BTreeSet<String> {
    let mut prose = String::new();
    let mut in_block = false;
    for line in text.lines() {
        if line.starts_with("```") {
            in_block = !in_block;
        } else if !in_block {
            prose.push_str(line);
            prose.push('\n');
        }
    }
    prose
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|w| w.split('=').next().unwrap_or("").to_owned())
        .filter(|w| w.len() > 2 && w.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .collect()
}

#[test]
fn named_files_and_examples_exist() {
    let doc = doc();
    for word in doc.split('`').skip(1).step_by(2) {
        let w = word.split_whitespace().next().unwrap_or("");
        if (w.starts_with("src/")
            || w.starts_with("csrc/")
            || w.starts_with("tests/")
            || w == "build.rs")
            && !w.contains('*')
        {
            assert!(
                crate_dir().join(w).exists(),
                "docs/distributed.md names {w}, which does not exist"
            );
        }
    }
    let mut examples = 0;
    for line in doc.lines().filter(|l| l.contains("--example ")) {
        let name = line
            .split("--example ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .expect("a name");
        let source = std::fs::read_to_string(crate_dir().join(format!("examples/{name}.rs")))
            .unwrap_or_else(|e| panic!("example {name}: {e}"));
        for flag in line
            .split_whitespace()
            .filter(|w| w.starts_with("--") && !["--", "--release", "--example"].contains(w))
        {
            assert!(
                source.contains(&format!("\"{flag}\"")),
                "example {name} does not take {flag}"
            );
        }
        examples += 1;
    }
    assert!(examples >= 2, "the benchmark and the NCCL check are shown");
}

#[test]
fn the_variable_table_is_what_is_read() {
    let listed = variables(&section(&doc(), "Launch variables"));
    let read = RefCell::new(BTreeSet::new());
    let record = |set: &[(&str, &str)]| {
        let _ = LaunchEnv::from_lookup(|name| {
            read.borrow_mut().insert(name.to_owned());
            set.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        });
    };
    // Neither MASTER_ADDR: both paths go on to look for a fallback.
    record(&[("RANK", "0"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "0")]);
    record(&[
        ("SLURM_PROCID", "0"),
        ("SLURM_NTASKS", "2"),
        ("SLURM_LOCALID", "0"),
    ]);
    record(&[
        ("SLURM_PROCID", "0"),
        ("SLURM_NTASKS", "2"),
        ("SLURM_LOCALID", "0"),
        ("SLURM_JOB_NODELIST", "n1"),
    ]);
    let read = read.into_inner();
    // The table also names GLOO_SOCKET_IFNAME, which the C++ shim reads.
    let mut expected = read.clone();
    expected.insert("GLOO_SOCKET_IFNAME".to_owned());
    expected.remove("SLURM_NODELIST"); // an older spelling, read as a fallback only
    assert_eq!(listed, expected, "variables listed vs read");
}

#[test]
fn the_launcher_sets_what_the_doc_lists() {
    let listed = variables(&section(&doc(), "The launcher"));
    assert!(
        listed.contains("GROUP_RANK") && listed.contains("MASTER_PORT"),
        "{listed:?}"
    );
    let script = listed
        .iter()
        .map(|v| format!("[ -n \"${v}\" ] || {{ echo {v} missing >&2; exit 9; }};"))
        .collect::<String>();
    let launch = LocalLaunch::new(2, "/bin/sh", vec!["-c".into(), script.into()]);
    if let Err(e) = launch.run() {
        panic!("{e}");
    }
}
