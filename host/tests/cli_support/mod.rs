//! Running the `lmmhost` binary as a user would, for the CLI tests.
// Each test binary uses a subset of these helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub mod experiments;

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `lmmhost args` in `dir`; the compiled-component cache goes to
/// `dir/cache`, not `~/.cache`.
pub fn lmmhost(dir: &Path, args: &[&str]) -> Out {
    let o = Command::new(env!("CARGO_BIN_EXE_lmmhost"))
        .args(args)
        .current_dir(dir)
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .output()
        .unwrap();
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// Runs and expects success; returns stdout.
pub fn ok(dir: &Path, args: &[&str]) -> String {
    let o = lmmhost(dir, args);
    assert_eq!(o.code, 0, "{args:?} failed:\n{}\n{}", o.stdout, o.stderr);
    o.stdout
}

/// Runs and expects exit code 1; returns stderr.
pub fn refused(dir: &Path, args: &[&str]) -> String {
    let o = lmmhost(dir, args);
    assert_eq!(
        o.code, 1,
        "{args:?} should fail:\n{}\n{}",
        o.stdout, o.stderr
    );
    o.stderr
}

/// A built plugin component (scripts/build-plugins.sh).
pub fn plugin(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/plugins")
        .join(format!("{name}.wasm"));
    assert!(
        p.is_file(),
        "{} is missing: run scripts/build-plugins.sh first",
        p.display()
    );
    p
}
