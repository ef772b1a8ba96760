//! Reading an experiment file: `extends` chains (a file starts from a base
//! file and overrides it key by key), relative paths rebased on the file that
//! wrote them, the typed parse, then the checks of `validate`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::schema::{parse, Experiment};
use super::stage::{set_dotted, toml_value};

impl Experiment {
    /// Reads and checks an experiment file. Relative paths inside it are
    /// resolved against the file's directory.
    ///
    /// `extends = "base.toml"` at the top of a file starts from that file (its
    /// relative paths resolve against its own directory) and overrides it key
    /// by key, tables merged. An error in the merged document names the file
    /// and line that set the key.
    pub fn load(path: &Path) -> Result<Experiment> {
        Experiment::load_with_sets(path, &[])
    }

    /// [`Experiment::load`] with command-line overrides, each `KEY=VALUE`
    /// (`rollout.max_prompt_tokens=2048`, `model.path=/ckpt/x`), set over
    /// the file (and its `extends` chain) before the parse and the checks.
    /// A value is read as TOML (`2048`, `true`, `["a", "b"]`), else taken as
    /// a string; a relative path given this way is relative to the current
    /// directory, not to the file.
    pub fn load_with_sets(path: &Path, sets: &[String]) -> Result<Experiment> {
        Experiment::load_checked(path, sets, true)
    }

    /// [`Experiment::load_with_sets`] without requiring the plugin, data and
    /// schedule files to exist: the settings and the model's config only.
    pub fn load_settings(path: &Path, sets: &[String]) -> Result<Experiment> {
        Experiment::load_checked(path, sets, false)
    }

    fn load_checked(path: &Path, sets: &[String], files: bool) -> Result<Experiment> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read experiment file {}", path.display()))?;
        let (mut merged, bases) = match resolve_extends(path, &text, 0)? {
            Some((merged, bases)) => (merged, bases),
            None => (text.clone(), Vec::new()),
        };
        let mut with_sets = String::new();
        if !sets.is_empty() {
            let base: toml::Table = merged
                .parse()
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            let over = command_line_table(sets)?;
            merged = toml::to_string(&merge_tables(&base, &over))?;
            with_sets = format!(" with --set {}", sets.join(" --set "));
        }
        let mut exp = parse(&merged).map_err(|e| {
            if bases.is_empty() {
                return anyhow::anyhow!("{}{with_sets}: {e}", path.display());
            }
            let files: Vec<(&Path, &str)> = std::iter::once((path, text.as_str()))
                .chain(bases.iter().map(|(p, t)| (p.as_path(), t.as_str())))
                .collect();
            let chain = bases
                .iter()
                .map(|(p, _)| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            match locate_error(&files, &e.key, &e.message) {
                Some((file, line, key)) => anyhow::anyhow!(
                    "{}:{line}: key `{key}`: {} (in {} merged over {chain}{with_sets})",
                    file.display(),
                    e.message,
                    path.display()
                ),
                None => anyhow::anyhow!("{} (merged over {chain}){with_sets}: {e}", path.display()),
            }
        })?;
        exp.resolve_paths(&dir_of(path));
        let checked = if files {
            exp.validate()
        } else {
            exp.validate_settings()
        };
        checked.with_context(|| format!("invalid experiment file {}", path.display()))?;
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
            ds.images.iter_mut().for_each(fix);
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
        ("datasets", &["files", "images"][..]),
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

/// The `KEY=VALUE` overrides as one table, their relative paths made
/// absolute against the current directory.
fn command_line_table(sets: &[String]) -> Result<toml::Table> {
    let mut over = toml::Table::new();
    for set in sets {
        let (key, value) = set
            .split_once('=')
            .with_context(|| format!("--set {set}: expected KEY=VALUE"))?;
        let key = key.trim();
        if key.is_empty() || key.split('.').any(str::is_empty) {
            bail!("--set {set}: {key:?} is not a dotted key such as rollout.group_size");
        }
        let value = toml_value(value.trim())
            .unwrap_or_else(|_| toml::Value::String(value.trim().to_string()));
        set_dotted(&mut over, key, value).with_context(|| format!("--set {set}"))?;
    }
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    absolutize_paths(&mut over, &cwd);
    Ok(over)
}

/// The directory a file's relative paths resolve against (`.` for a bare
/// file name).
fn dir_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A base file of an `extends` chain: its path and text.
type BaseFile = (PathBuf, String);

/// Follows `extends` chains: the merged document as TOML text and the base
/// files it came from, nearest first, or `None` when `text` extends nothing.
fn resolve_extends(
    path: &Path,
    text: &str,
    depth: usize,
) -> Result<Option<(String, Vec<BaseFile>)>> {
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
    let base_path = dir_of(path).join(rel);
    let base_text = std::fs::read_to_string(&base_path).with_context(|| {
        format!(
            "{}: key `extends`: cannot read {}",
            path.display(),
            base_path.display()
        )
    })?;
    let (merged_base, mut chain) = match resolve_extends(&base_path, &base_text, depth + 1)? {
        Some(x) => x,
        None => (base_text.clone(), Vec::new()),
    };
    let mut base: toml::Table = merged_base
        .parse()
        .map_err(|e| anyhow::anyhow!("{}: {e}", base_path.display()))?;
    let base_dir = std::path::absolute(dir_of(&base_path))
        .with_context(|| format!("cannot resolve {}", base_path.display()))?;
    absolutize_paths(&mut base, &base_dir);
    let merged = merge_tables(&base, &table);
    chain.insert(0, (base_path, base_text));
    Ok(Some((toml::to_string(&merged)?, chain)))
}

/// The file, line and full key of an error about `key` (a dotted path such
/// as `rollout` or `rewards[0].weight`): the first of `files` (the
/// extending file first) that sets the key. Unknown fields are located by
/// their own name.
fn locate_error<'a>(
    files: &[(&'a Path, &str)],
    key: &str,
    message: &str,
) -> Option<(&'a Path, usize, String)> {
    let mut full = key.to_string();
    if let Some(field) = message
        .strip_prefix("unknown field `")
        .and_then(|m| m.split('`').next())
    {
        let last = full.rsplit('.').next().unwrap_or_default();
        if last != field {
            if !full.is_empty() {
                full.push('.');
            }
            full.push_str(field);
        }
    }
    if full.is_empty() {
        return None;
    }
    let segments = key_segments(&full);
    files.iter().find_map(|(path, text)| {
        let offset = key_offset(text, &segments)?;
        let line = text[..offset.min(text.len())].matches('\n').count() + 1;
        Some((*path, line, full.clone()))
    })
}

/// `a.b[2].c` as (name, index) segments.
fn key_segments(key: &str) -> Vec<(String, Option<usize>)> {
    key.split('.')
        .map(|part| match part.split_once('[') {
            Some((name, rest)) => (
                name.to_string(),
                rest.trim_end_matches(']').parse::<usize>().ok(),
            ),
            None => (part.to_string(), None),
        })
        .collect()
}

/// Byte offset of the key at `segments` in the TOML `text`, if the text sets it.
fn key_offset(text: &str, segments: &[(String, Option<usize>)]) -> Option<usize> {
    use toml::de::{DeTable, DeValue};
    let doc = DeTable::parse(text).ok()?;
    let mut table: &DeTable = doc.get_ref();
    let mut found = None;
    for (i, (name, index)) in segments.iter().enumerate() {
        let (k, v) = table.iter().find(|(k, _)| k.get_ref() == name)?;
        found = Some(k.span().start);
        let mut value: &DeValue = v.get_ref();
        if let Some(ix) = index {
            let DeValue::Array(items) = value else {
                return found;
            };
            let item = items.get(*ix)?;
            found = Some(item.span().start);
            value = item.get_ref();
        }
        if i + 1 < segments.len() {
            match value {
                DeValue::Table(t) => table = t,
                _ => return found,
            }
        }
    }
    found
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
        let e = Experiment::load_with_sets(
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
        let err = Experiment::load_with_sets(&p, &sets(&["rollout.group_sise=3"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("group_sise") && err.contains("--set"), "{err}");
        let err = format!(
            "{:#}",
            Experiment::load_with_sets(&p, &sets(&["rollout"])).unwrap_err()
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

    /// An error in a file of an `extends` chain names that file and its own
    /// line, not the line of the merged document.
    #[test]
    fn errors_name_the_file_and_line_that_set_the_key() {
        let (dir, base) = setup("[optim]\nlr = 1e-6\n");
        let child = dir.path().join("child.toml");
        std::fs::write(
            &child,
            "extends = \"exp.toml\"\nname = \"c\"\n\n[rollout]\ngroup_sise = 16\n",
        )
        .unwrap();
        let msg = format!("{:#}", Experiment::load(&child).unwrap_err());
        assert!(
            msg.contains(&format!("{}:5: key `rollout.group_sise`", child.display())),
            "{msg}"
        );
        // A wrong type set in the base file is found there.
        let text = std::fs::read_to_string(&base)
            .unwrap()
            .replace("lr = 1e-6", "lr = \"fast\"");
        std::fs::write(&base, &text).unwrap();
        let line = text.lines().position(|l| l.starts_with("lr =")).unwrap() + 1;
        let msg = format!("{:#}", Experiment::load(&child).unwrap_err());
        assert!(
            msg.contains(&format!("{}:{line}: key `optim.lr`", base.display())),
            "{msg}"
        );
        // An array-of-tables entry: the key of the right element.
        std::fs::write(
            &child,
            "extends = \"exp.toml\"\n[[rewards]]\nplugin = \"math\"\n[[rewards]]\nplugin = \"math\"\nweigth = 2\n",
        )
        .unwrap();
        std::fs::write(&base, text.replace("lr = \"fast\"", "lr = 1e-6")).unwrap();
        let msg = format!("{:#}", Experiment::load(&child).unwrap_err());
        assert!(
            msg.contains(&format!("{}:6: key `rewards[1].weigth`", child.display())),
            "{msg}"
        );
    }

    /// The experiment example of docs/bundles.md parses and validates.
    #[test]
    fn the_bundles_doc_example_is_accepted() {
        let doc = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/bundles.md"),
        )
        .unwrap();
        let section = &doc[doc.find("## 4. Use a bundle from an experiment").unwrap()..];
        let start = section.find("```toml\n").unwrap() + "```toml\n".len();
        let block = &section[start..start + section[start..].find("```").unwrap()];
        let (dir, path) = setup(block);
        for f in ["keys/trusted_keys", "team-a.lmmb"] {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"x").unwrap();
        }
        let exp = Experiment::load(&path).unwrap();
        assert_eq!(exp.plugins["accuracy"].component.as_deref(), Some("math"));
        assert_eq!(exp.rewards.last().unwrap().plugin, "accuracy");
    }

    #[test]
    fn a_bare_file_name_extends_from_its_own_directory() {
        assert_eq!(dir_of(Path::new("child.toml")), PathBuf::from("."));
        assert_eq!(dir_of(Path::new("a/child.toml")), PathBuf::from("a"));
    }

    #[test]
    fn command_line_sets_override_the_file_and_its_base() {
        let (dir, p) = setup("[rollout]\ngroup_size = 4\ntemperature = 0.7\n");
        let sets = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let e = Experiment::load_with_sets(
            &p,
            &sets(&[
                "rollout.group_size=16",
                "rollout.max_prompt_tokens = 2048",
                "name=other-name",
                "output_dir=out/x",
            ]),
        )
        .unwrap();
        assert_eq!(e.rollout.group_size, 16);
        assert_eq!(e.rollout.temperature, 0.7);
        assert_eq!(e.rollout.max_prompt_tokens, 2048);
        assert_eq!(e.name, "other-name");
        // A path on the command line is relative to where the command runs.
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(e.output_dir.unwrap(), cwd.join("out/x"));
        // The file's own relative paths still follow the file.
        assert_eq!(e.model.path, dir.path().join("model"));
        // Over an `extends` chain too.
        let child = dir.path().join("child.toml");
        std::fs::write(
            &child,
            "extends = \"exp.toml\"\n[rollout]\ngroup_size = 2\n",
        )
        .unwrap();
        let e = Experiment::load_with_sets(&child, &sets(&["rollout.top_k=5"])).unwrap();
        assert_eq!((e.rollout.group_size, e.rollout.top_k), (2, 5));
        // Errors name the key and the override.
        let msg = format!(
            "{:#}",
            Experiment::load_with_sets(&p, &sets(&["rollout.group_sise=3"])).unwrap_err()
        );
        assert!(
            msg.contains("group_sise") && msg.contains("--set rollout.group_sise=3"),
            "{msg}"
        );
        let msg = format!(
            "{:#}",
            Experiment::load_with_sets(&p, &sets(&["rollout.group_size"])).unwrap_err()
        );
        assert!(msg.contains("expected KEY=VALUE"), "{msg}");
        let msg = format!(
            "{:#}",
            Experiment::load_with_sets(&p, &sets(&["optim.lr=-1"])).unwrap_err()
        );
        assert!(msg.contains("optim.lr = -1: must be >= 0"), "{msg}");
    }

    #[test]
    fn dataset_images_resolve_like_files() {
        let (dir, p) = setup("");
        std::fs::create_dir_all(dir.path().join("data/images")).unwrap();
        let text = std::fs::read_to_string(&p).unwrap().replace(
            "files = [\"data/train.jsonl\"]",
            "files = [\"data/train.jsonl\"]\nimages = [\"data/images\"]",
        );
        std::fs::write(&p, text).unwrap();
        let e = Experiment::load(&p).unwrap();
        assert_eq!(
            e.datasets["train"].images,
            vec![dir.path().join("data/images")]
        );
        // From a file extending it in another directory: still the base's folder.
        let other = dir.path().join("variants");
        std::fs::create_dir_all(&other).unwrap();
        let child = other.join("child.toml");
        std::fs::write(&child, "extends = \"../exp.toml\"\n").unwrap();
        let e = Experiment::load(&child).unwrap();
        assert!(e.datasets["train"].images[0].is_dir());
        assert!(e.datasets["train"].images[0].ends_with("data/images"));
    }

    #[test]
    fn wrong_type_is_named() {
        let msg = error_of("[optim]\nlr = \"fast\"\n");
        assert!(msg.contains("lr") || msg.contains("invalid type"), "{msg}");
        assert!(msg.contains("line 2"), "{msg}");
    }
}
