//! Every `lmmhost` command line in a code block of README.md and docs/*.md
//! parses with the real command-line definition: a documented flag cannot be
//! one the program rejects. Synopsis notation is read as such: `[--flag
//! value]` groups are optional and left out, `\` continues a line, `#`
//! starts a comment, placeholders (`DIR`, `...`) stand for values.

use std::path::{Path, PathBuf};

use clap::Parser;

use super::Cli;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The documented files, README first.
fn documents() -> Vec<PathBuf> {
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    docs.insert(0, repo().join("README.md"));
    docs
}

/// A line without its comment (a `#` that starts a word).
fn without_comment(line: &str) -> &str {
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        if c == '#' && prev.is_whitespace() {
            return &line[..i];
        }
        prev = c;
    }
    line
}

/// Leaves out the optional `[--flag ...]` groups of a synopsis.
fn without_optional_groups(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(start) = rest.find("[--") {
        out.push_str(&rest[..start]);
        match rest[start..].find(']') {
            Some(end) => rest = &rest[start + end + 1..],
            None => {
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// The command lines of the code blocks of `text` (continued lines joined),
/// as (line number, words from `lmmhost` on).
fn commands(text: &str) -> Vec<(usize, Vec<String>)> {
    let mut out = Vec::new();
    let (mut in_block, mut pending, mut first) = (false, String::new(), 0);
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
            pending.clear();
            continue;
        }
        if !in_block {
            continue;
        }
        if pending.is_empty() {
            first = i + 1;
        }
        let line = without_comment(line);
        pending.push_str(line.trim_end().trim_end_matches('\\'));
        pending.push('\n');
        let Some(words) = shlex::split(&without_optional_groups(&pending)) else {
            continue; // a quote goes on to the next line
        };
        if line.trim_end().ends_with('\\') {
            continue;
        }
        pending.clear();
        for segment in words.split(|w| ["&&", "||", ";", "|"].contains(&w.as_str())) {
            if let Some(command) = lmmhost_command(segment) {
                out.push((first, command.to_vec()));
            }
        }
    }
    out
}

/// The words from `lmmhost` on, when this shell command runs it: as its
/// program (after any `VAR=value`), as the program of a launcher's
/// `--no-python`, or as what `srun` starts; and followed by a
/// subcommand-like word (diagrams in code blocks name the program too).
fn lmmhost_command(words: &[String]) -> Option<&[String]> {
    let is_program = |w: &String| w == "lmmhost" || w.ends_with("/lmmhost");
    let start = words.iter().position(|w| !w.contains('=')).unwrap_or(0);
    let at = if words.get(start).is_some_and(is_program) {
        start
    } else if words.get(start).is_some_and(|w| w == "srun") {
        words.iter().position(is_program)?
    } else {
        words.iter().position(|w| w == "--no-python")? + 1
    };
    if !words.get(at).is_some_and(is_program) {
        return None;
    }
    words
        .get(at + 1)?
        .starts_with(|c: char| c.is_ascii_lowercase())
        .then(|| &words[at..])
}

#[test]
fn every_documented_command_line_parses() {
    let (mut checked, mut problems) = (0, Vec::new());
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).unwrap();
        for (line, words) in commands(&text) {
            checked += 1;
            if let Err(e) = Cli::try_parse_from(&words) {
                let first = e.to_string().lines().next().unwrap_or("").to_string();
                problems.push(format!(
                    "{}:{line}: `{}`: {first}",
                    doc.display(),
                    words.join(" ")
                ));
            }
        }
    }
    assert!(checked >= 50, "only {checked} command lines found");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The reader of the docs finds commands in their notation, and a flag the
/// program does not have fails the check.
#[test]
fn synopsis_notation_is_read_and_a_bad_flag_fails() {
    let text = "```\nlmmhost plot runs/x   # comment\n\
                lmmhost bench model [--config w1|w2] \\\n    --device cpu\n\
                torchrun --nproc-per-node 2 --no-python lmmhost run a.toml\n\
                lmmhost run a.toml --no-such-flag\n\
                cargo build -p lmmhost && X=1 lmmhost plot r\n\
                srun --ntasks-per-node=8 lmmhost run b.toml\n\
                lmmhost (host/) | <---+\n```\nlmmhost outside a block\n";
    let found = commands(text);
    let lines: Vec<usize> = found.iter().map(|(l, _)| *l).collect();
    assert_eq!(lines, vec![2, 3, 5, 6, 7, 8]);
    assert_eq!(found[0].1, ["lmmhost", "plot", "runs/x"]);
    assert_eq!(found[1].1, ["lmmhost", "bench", "model", "--device", "cpu"]);
    assert_eq!(found[2].1, ["lmmhost", "run", "a.toml"]);
    assert_eq!(found[4].1, ["lmmhost", "plot", "r"]);
    assert_eq!(found[5].1, ["lmmhost", "run", "b.toml"]);
    let ok: Vec<bool> = found
        .iter()
        .map(|(_, w)| Cli::try_parse_from(w).is_ok())
        .collect();
    assert_eq!(ok, vec![true, true, true, false, true, true]);
}
