//! Reading an experiment file: `extends` chains (a file starts from a base
//! file and overrides it key by key), relative paths rebased on the file that
//! wrote them, the typed parse, then the checks of `validate`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::schema::{parse, Experiment};

impl Experiment {
    /// Reads and checks an experiment file. Relative paths inside it are
    /// resolved against the file's directory.
    ///
    /// `extends = "base.toml"` at the top of a file starts from that file (its
    /// relative paths resolve against its own directory) and overrides it key
    /// by key, tables merged.
    pub fn load(path: &Path) -> Result<Experiment> {
        Experiment::load_with(path, &[])
    }

    /// [`Experiment::load`] with `KEY=VALUE` settings (`--set` on the command
    /// line) applied over the file: `KEY` a dotted path such as
    /// `datasets.mm.files`, `VALUE` TOML (`["a.jsonl"]`, `1e-6`), or else
    /// taken as a string. Relative paths in them are the current
    /// directory's, as a user typing them means.
    pub fn load_with(path: &Path, sets: &[String]) -> Result<Experiment> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read experiment file {}", path.display()))?;
        let (text, origin) = match resolve_extends(path, &text, 0)? {
            Some(merged) => (
                merged.0,
                format!("{} (merged over {})", path.display(), merged.1.join(", ")),
            ),
            None => (text, path.display().to_string()),
        };
        let (text, origin) = if sets.is_empty() {
            (text, origin)
        } else {
            let file: toml::Table = text.parse().map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
            let mut over = settings_table(sets)?;
            let cwd = std::path::absolute(".").context("cannot resolve the current directory")?;
            absolutize_paths(&mut over, &cwd);
            let merged = merge_tables(&file, &over);
            (
                toml::to_string(&merged)?,
                format!("{origin} with --set {}", sets.join(" --set ")),
            )
        };
        let mut exp = parse(&text).map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        let base = path.parent().unwrap_or(Path::new("."));
        exp.resolve_paths(base);
        exp.validate()
            .with_context(|| format!("invalid experiment file {}", path.display()))?;
        Ok(exp)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.model.path);
        for entry in self.plugins.values_mut() {
            entry.wasm.as_mut().map(fix);
            entry.bundle.as_mut().map(fix);
        }
        for ds in self.datasets.values_mut() {
            ds.files.iter_mut().for_each(fix);
        }
        if let Some(t) = self.trust.as_mut() {
            fix(&mut t.trusted_keys);
        }
        self.schedule.file.as_mut().map(fix);
        let out = self
            .output_dir
            .get_or_insert_with(|| PathBuf::from("runs").join(&self.name));
        fix(out);
        if let Some(d) = self.checkpoint.dir.as_mut() {
            fix(d);
        }
    }
}

/// Makes the relative paths of a base file absolute against its own
/// directory, so that a file extending it from elsewhere keeps them working.
fn absolutize_paths(t: &mut toml::Table, dir: &Path) {
    let fix = |v: &mut toml::Value| {
        if let Some(p) = v.as_str().map(PathBuf::from).filter(|p| p.is_relative()) {
            *v = toml::Value::String(dir.join(p).display().to_string());
        }
    };
    let fix_in = |t: &mut toml::Table, keys: &[&str]| {
        for k in keys {
            match t.get_mut(*k) {
                Some(toml::Value::Array(a)) => a.iter_mut().for_each(fix),
                Some(v) => fix(v),
                None => {}
            }
        }
    };
    fix_in(t, &["output_dir"]);
    for (section, keys) in [
        ("model", &["path"][..]),
        ("schedule", &["file"][..]),
        ("trust", &["trusted_keys"][..]),
        ("checkpoint", &["dir"][..]),
    ] {
        if let Some(toml::Value::Table(s)) = t.get_mut(section) {
            fix_in(s, keys);
        }
    }
    for (section, keys) in [
        ("plugins", &["wasm", "bundle"][..]),
        ("datasets", &["files"][..]),
    ] {
        if let Some(toml::Value::Table(s)) = t.get_mut(section) {
            for (_, entry) in s.iter_mut() {
                if let toml::Value::Table(e) = entry {
                    fix_in(e, keys);
                }
            }
        }
    }
}

/// Follows `extends` chains: the merged document as TOML text and the files
/// it came from, or `None` when `text` extends nothing.
fn resolve_extends(path: &Path, text: &str, depth: usize) -> Result<Option<(String, Vec<String>)>> {
    let mut table: toml::Table = text
        .parse()
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let Some(parent) = table.remove("extends") else {
        return Ok(None);
    };
    if depth >= 8 {
        bail!("{}: `extends` nests more than 8 files deep", path.display());
    }
    let rel = parent
        .as_str()
        .with_context(|| format!("{}: key `extends` must be a file path", path.display()))?;
    let base_path = path.parent().unwrap_or(Path::new(".")).join(rel);
    let base_text = std::fs::read_to_string(&base_path).with_context(|| {
        format!(
            "{}: key `extends`: cannot read {}",
            path.display(),
            base_path.display()
        )
    })?;
    let (base_text, mut chain) = match resolve_extends(&base_path, &base_text, depth + 1)? {
        Some(x) => x,
        None => (base_text, Vec::new()),
    };
    chain.insert(0, base_path.display().to_string());
    let mut base: toml::Table = base_text
        .parse()
        .map_err(|e| anyhow::anyhow!("{}: {e}", base_path.display()))?;
    let base_dir = std::path::absolute(base_path.parent().unwrap_or(Path::new(".")))
        .with_context(|| format!("cannot resolve {}", base_path.display()))?;
    absolutize_paths(&mut base, &base_dir);
    let merged = merge_tables(&base, &table);
    Ok(Some((toml::to_string(&merged)?, chain)))
}

/// `KEY=VALUE` settings as a table (see [`Experiment::load_with`]).
pub fn settings_table(sets: &[String]) -> Result<toml::Table> {
    let mut out = toml::Table::new();
    for set in sets {
        let Some((key, value)) = set.split_once('=') else {
            bail!("--set {set:?}: expected KEY=VALUE (e.g. model.path=/models/qwen)");
        };
        let parts: Vec<&str> = key.trim().split('.').map(str::trim).collect();
        if parts.iter().any(|p| p.is_empty()) {
            bail!("--set {set:?}: {key:?} is not a dotted key");
        }
        // A TOML value when it reads as one, else the text itself.
        let value = format!("v = {value}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.to_string()));
        let mut table = &mut out;
        for part in &parts[..parts.len() - 1] {
            let entry = table
                .entry(part.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let toml::Value::Table(t) = entry else {
                bail!("--set {set:?}: {part:?} is set to a value by an earlier --set");
            };
            table = t;
        }
        table.insert(parts[parts.len() - 1].to_string(), value);
    }
    Ok(out)
}

/// `over` merged over `base`, tables recursively.
pub fn merge_tables(base: &toml::Table, over: &toml::Table) -> toml::Table {
    let mut out = base.clone();
    for (k, v) in over {
        match (out.get_mut(k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => {
                *b = merge_tables(b, o);
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::test_files::{error_of, setup};
    use super::*;
    use crate::rl::kl::KlEstimator;

    #[test]
    fn minimal_file_loads_with_defaults_and_resolved_paths() {
        let (dir, p) = setup("");
        let e = Experiment::load(&p).unwrap();
        assert_eq!(e.model.path, dir.path().join("model"));
        assert_eq!(e.rollout.group_size, 8);
        assert_eq!(e.grpo.kl.estimator, KlEstimator::K3);
        assert_eq!(e.output_dir.unwrap(), dir.path().join("runs/t"));
        assert_eq!(e.plugins["math"].config["weight"].as_float(), Some(1.0));
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let msg = error_of("[rollout]\ngroup_sise = 4\n");
        assert!(msg.contains("group_sise") && msg.contains("line"), "{msg}");
    }

    /// `--set` values override the file's, nested tables merge, TOML values
    /// keep their type, bare text is a string, relative paths are the current
    /// directory's, and a typo is refused like one in the file.
    #[test]
    fn settings_override_the_file() {
        let (dir, p) = setup("[rollout]\ngroup_size = 4\ntemperature = 0.7\n");
        let sets = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let model = dir.path().join("model");
        let e = Experiment::load_with(
            &p,
            &sets(&[
                "rollout.group_size=16",
                "grpo.kl.estimator=k1",
                &format!("model.path={}", model.display()),
                "output_dir=somewhere/else",
            ]),
        )
        .unwrap();
        assert_eq!(e.rollout.group_size, 16);
        assert_eq!(e.rollout.temperature, 0.7);
        assert_eq!(e.grpo.kl.estimator, KlEstimator::K1);
        assert_eq!(e.model.path, model);
        let cwd = std::path::absolute(".").unwrap();
        assert_eq!(e.output_dir.unwrap(), cwd.join("somewhere/else"));
        let err = Experiment::load_with(&p, &sets(&["rollout.group_sise=3"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("group_sise") && err.contains("--set"), "{err}");
        let err = format!(
            "{:#}",
            Experiment::load_with(&p, &sets(&["rollout"])).unwrap_err()
        );
        assert!(err.contains("KEY=VALUE"), "{err}");
    }

    #[test]
    fn extends_overrides_a_base_file_key_by_key() {
        let (dir, _p) = setup("[rollout]\ngroup_size = 4\ntemperature = 0.7\n");
        // From another directory: the base's relative paths stay the base's.
        let other = dir.path().join("variants");
        std::fs::create_dir_all(&other).unwrap();
        let child = other.join("child.toml");
        std::fs::write(
            &child,
            "extends = \"../exp.toml\"\nname = \"child\"\n[rollout]\ngroup_size = 16\n",
        )
        .unwrap();
        let e = Experiment::load(&child).unwrap();
        assert_eq!(e.name, "child");
        assert_eq!(e.rollout.group_size, 16);
        assert_eq!(e.rollout.temperature, 0.7);
        assert_eq!(e.model.path, other.join("../model"));
        assert!(e.model.path.is_dir());
        // Paths the base leaves to defaults follow the extending file.
        assert_eq!(e.output_dir.clone().unwrap(), other.join("runs/child"));
        std::fs::write(
            &child,
            "extends = \"../exp.toml\"\n[rollout]\ngroup_sise = 16\n",
        )
        .unwrap();
        let msg = format!("{:#}", Experiment::load(&child).unwrap_err());
        assert!(
            msg.contains("group_sise") && msg.contains("merged over"),
            "{msg}"
        );
    }

    #[test]
    fn wrong_type_is_named() {
        let msg = error_of("[optim]\nlr = \"fast\"\n");
        assert!(msg.contains("lr") || msg.contains("invalid type"), "{msg}");
        assert!(msg.contains("line 2"), "{msg}");
    }
}
