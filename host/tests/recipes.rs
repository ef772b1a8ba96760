//! Every experiment file in configs/recipes/ (the papers' recipes), checked
//! and run end to end on the tiny Qwen2.5-VL and tiny datasets in the
//! recipe's own data format, as a user points a recipe at a checkpoint and
//! data: only `--set`, never an edited file.
//!
//! Conventions, so that a new recipe is covered by dropping two things in:
//! - `configs/recipes/<name>.toml` (every `*.toml` directly in the folder);
//! - `tests/fixtures/recipes/<name>/`, holding one data file per dataset of
//!   the recipe, named after the dataset (`<dataset>.<ext>`, any extension),
//!   written by `tests/fixtures/recipes/make_fixtures.py`; every
//!   sub-folder of it (images, Sokoban levels) is granted to every dataset
//!   as an image root (`datasets.<dataset>.images`).
//!
//! `lmmhost check` must pass on the recipe as it is (its own settings and
//! schedule) with the model and data pointed at the fixtures. The run then
//! shrinks what makes it slow and nothing else: 2 prompts, 2 samples each, 8
//! response tokens, 2 updates per batch, 2 steps per stage (the schedule is
//! rewritten with those lengths and group sizes and passed with
//! `--set schedule.file=`; every other override stays). The run must log
//! every stage of the schedule, in order, with its kind, and each GRPO
//! stage's KL, PAD and entropy settings must show in its steps' metrics.

use std::path::{Path, PathBuf};
use std::process::Command;

use lmmhost::metrics::log::read_records;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

fn recipes() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo().join("configs/recipes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    v.sort();
    v
}

/// Runs `lmmhost args`; all recipes share one compiled-component cache.
fn lmmhost(cache: &Path, args: &[String]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_lmmhost"))
        .args(args)
        .current_dir(repo())
        .env("XDG_CACHE_HOME", cache)
        .output()
        .unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "lmmhost {args:?} failed:\n{out}\n{err}");
    out.into_owned()
}

fn table(path: &Path) -> toml::Table {
    let text = std::fs::read_to_string(path).unwrap();
    toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `--set`s that point recipe `recipe` at the tiny model and its fixtures.
fn fixture_sets(recipe: &Path, exp: &toml::Table, out: &Path) -> Vec<String> {
    let name = recipe.file_stem().unwrap().to_string_lossy().to_string();
    let dir = repo().join("tests/fixtures/recipes").join(&name);
    assert!(
        dir.is_dir(),
        "recipe {name}: no fixtures in {} (one data file per dataset, named after it)",
        dir.display()
    );
    let entries: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let roots: Vec<String> = entries
        .iter()
        .filter(|p| p.is_dir())
        .map(|p| format!("{:?}", p.display().to_string()))
        .collect();
    let model = repo().join("configs/models/tiny-qwen2.5-vl");
    let mut sets = vec![
        format!("model.path={}", model.display()),
        "model.init=random".into(),
        "model.device=cpu".into(),
        "model.dtype=f32".into(),
        "model.threads=1".into(),
        format!("output_dir={}", out.display()),
    ];
    let datasets = exp["datasets"].as_table().unwrap();
    assert!(!datasets.is_empty(), "recipe {name} has no datasets");
    for ds in datasets.keys() {
        let file = entries
            .iter()
            .find(|p| p.is_file() && p.file_stem().is_some_and(|s| s == ds.as_str()))
            .unwrap_or_else(|| {
                panic!(
                    "recipe {name}: dataset {ds} has no fixture {}/{ds}.*",
                    dir.display()
                )
            });
        sets.push(format!(
            "datasets.{ds}.files=[{:?}]",
            file.display().to_string()
        ));
        sets.push(format!("datasets.{ds}.images=[{}]", roots.join(",")));
    }
    sets
}

/// The recipe's schedule with every stage 2 steps long and groups of 2; the
/// `extra` settings that size a step (response length, batch sizes) are
/// shrunk the same way, every other override kept.
fn short_schedule(schedule: &Path, to: &Path) -> Vec<(String, String)> {
    let mut s = table(schedule);
    let shrink = |o: &mut toml::Table| {
        if o.contains_key("group_size") {
            o.insert("group_size".into(), 2.into());
        }
        if let Some(extra) = o.get_mut("extra").and_then(|e| e.as_table_mut()) {
            for (k, v) in [
                ("rollout.max_response_tokens", 8),
                ("rollout.prompts_per_step", 2),
                ("optim.updates_per_batch", 2),
                ("optim.micro_batch_size", 4),
                ("sft.batch_size", 2),
            ] {
                if extra.contains_key(k) {
                    extra.insert(k.into(), v.into());
                }
            }
        }
    };
    if let Some(o) = s.get_mut("overrides").and_then(|o| o.as_table_mut()) {
        shrink(o);
    }
    let mut stages = Vec::new();
    for st in s["stages"].as_array_mut().unwrap() {
        let st = st.as_table_mut().unwrap();
        st.remove("epochs");
        st.insert("steps".into(), 2.into());
        if let Some(o) = st.get_mut("overrides").and_then(|o| o.as_table_mut()) {
            shrink(o);
        }
        stages.push((
            st["name"].as_str().unwrap().to_string(),
            st["kind"].as_str().unwrap().to_string(),
        ));
    }
    std::fs::write(to, toml::to_string(&s).unwrap()).unwrap();
    stages
}

#[test]
fn every_recipe_checks_and_runs_each_stage_on_the_tiny_model() {
    let t = tempfile::tempdir().unwrap();
    let tmp = t.path().canonicalize().unwrap();
    let cache = tmp.join("cache");
    let all = recipes();
    assert!(
        all.len() >= 4,
        "configs/recipes/ holds {} recipes",
        all.len()
    );
    for recipe in all {
        let name = recipe.file_stem().unwrap().to_string_lossy().to_string();
        let exp = table(&recipe);
        let out = tmp.join(&name).join("run");
        let fixtures = fixture_sets(&recipe, &exp, &out);
        let file = recipe.display().to_string();

        // The recipe as it is, pointed at the fixtures: no problem found, and
        // every stage of its schedule planned.
        let schedule_file = exp["schedule"]["file"].as_str().unwrap();
        let schedule = recipe.parent().unwrap().join(schedule_file);
        let mut args = vec!["check".to_string(), file.clone()];
        for s in &fixtures {
            args.extend(["--set".into(), s.clone()]);
        }
        let report = lmmhost(&cache, &args);
        assert!(report.contains(&format!("ok: {file}")), "{name}: {report}");
        let short = tmp.join(&name).join("schedule.toml");
        std::fs::create_dir_all(short.parent().unwrap()).unwrap();
        let stages = short_schedule(&schedule, &short);
        for (stage, kind) in &stages {
            assert!(
                report.contains(&format!("stage {stage} ({kind}): ")),
                "{name}: check did not plan stage {stage}:\n{report}"
            );
        }

        // A few steps of every stage.
        let mut args = vec!["run".to_string(), file.clone()];
        let sizes = [
            "rollout.prompts_per_step=2",
            "rollout.group_size=2",
            "rollout.max_response_tokens=8",
            "optim.updates_per_batch=2",
            "optim.micro_batch_size=4",
            "sft.batch_size=2",
            "logging.progress=false",
            "logging.tensorboard=false",
            "logging.plots=false",
            "checkpoint.every=0",
        ];
        let schedule_set = format!("schedule.file={}", short.display());
        for s in fixtures
            .iter()
            .map(String::as_str)
            .chain(sizes)
            .chain([schedule_set.as_str()])
        {
            args.extend(["--set".into(), s.to_string()]);
        }
        lmmhost(&cache, &args);
        let records: Vec<_> = read_records(&out.join("metrics.jsonl"))
            .unwrap()
            .into_iter()
            .filter(|r| r.kind != "eval")
            .collect();
        let logged: Vec<(String, String, u64)> = records
            .iter()
            .map(|r| (r.stage.clone(), r.kind.clone(), r.stage_step))
            .collect();
        let expected: Vec<(String, String, u64)> = stages
            .iter()
            .flat_map(|(s, k)| (1..=2).map(move |i| (s.clone(), k.clone(), i)))
            .collect();
        assert_eq!(logged, expected, "{name}: stages logged in metrics.jsonl");
        for r in &records {
            let loss = if r.kind == "sft" {
                "sft/loss"
            } else {
                "reward/mean"
            };
            let v = r.values.get(loss).copied();
            assert!(
                v.is_some_and(f64::is_finite),
                "{name}: step {} ({}) logs {loss} = {v:?}",
                r.step,
                r.stage
            );
        }
        assert!(
            out.join("final-model/config.json").is_file(),
            "{name}: no final model"
        );
        stage_settings_reach_the_trainer(&name, &exp, &table(&short), &records);
    }
}

/// The KL, PAD and entropy settings a GRPO stage gets (its schedule
/// overrides over the recipe's `[grpo]`) are the ones its steps log: a KL
/// value only where the coefficient is above 0, PAD's metrics only where it
/// is on, the entropy coefficient held at 0 through its warmup.
fn stage_settings_reach_the_trainer(
    name: &str,
    exp: &toml::Table,
    schedule: &toml::Table,
    records: &[lmmhost::metrics::log::StepRecord],
) {
    let file_kl = exp
        .get("grpo")
        .and_then(|g| g.get("kl"))
        .and_then(|k| k.get("coef"))
        .and_then(|c| c.as_float())
        .unwrap_or(0.0);
    let empty = toml::Table::new();
    let top = schedule
        .get("overrides")
        .and_then(|o| o.as_table())
        .unwrap_or(&empty);
    for st in schedule["stages"].as_array().unwrap() {
        if st["kind"].as_str() != Some("grpo") {
            continue;
        }
        let stage = st["name"].as_str().unwrap();
        let own = st
            .get("overrides")
            .and_then(|o| o.as_table())
            .unwrap_or(&empty);
        let get = |k: &str| own.get(k).or_else(|| top.get(k));
        let kl = get("kl_coef").and_then(|v| v.as_float()).unwrap_or(file_kl);
        let pad = get("pad")
            .and_then(|p| p.get("enabled"))
            .and_then(|e| e.as_bool())
            .unwrap_or(false);
        let entropy_warmup = get("entropy_warmup_steps")
            .and_then(|v| v.as_integer())
            .unwrap_or(0);
        for r in records.iter().filter(|r| r.stage == stage) {
            let at = format!("{name}: stage {stage} step {}", r.stage_step);
            assert_eq!(r.values.contains_key("kl"), kl > 0.0, "{at}: kl coef {kl}");
            assert_eq!(r.values.contains_key("pad/tau"), pad, "{at}: pad {pad}");
            if entropy_warmup > 0 {
                assert_eq!(
                    r.values.get("entropy_coef"),
                    Some(&0.0),
                    "{at}: in entropy warmup"
                );
            }
        }
    }
}

/// `lmmhost check` asks the schedule for its plans as a run would: a stage
/// drawing from a dataset the file does not define, or a later stage whose
/// overrides make invalid settings, is reported before any model is loaded.
#[test]
fn check_walks_the_schedule_and_reports_its_plans_problems() {
    let t = tempfile::tempdir().unwrap();
    let tmp = t.path().canonicalize().unwrap();
    let recipe = repo().join("configs/recipes/lmm-r1-fre-mgt.toml");
    let sets = fixture_sets(&recipe, &table(&recipe), &tmp.join("run"));
    let check = |schedule: &str| {
        let file = tmp.join("schedule.toml");
        std::fs::write(&file, schedule).unwrap();
        let mut args = vec!["check".to_string(), recipe.display().to_string()];
        for s in sets
            .iter()
            .cloned()
            .chain([format!("schedule.file={}", file.display())])
        {
            args.extend(["--set".into(), s]);
        }
        Command::new(env!("CARGO_BIN_EXE_lmmhost"))
            .args(&args)
            .env("XDG_CACHE_HOME", tmp.join("cache"))
            .output()
            .unwrap()
    };
    let stage = |name: &str, ds: &str, extra: &str| {
        format!(
            "[[stages]]\nname = \"{name}\"\nkind = \"grpo\"\ndatasets = {{ {ds} = 1.0 }}\nsteps = 3\n\
             [stages.overrides]\nextra = {{ {extra} }}\n"
        )
    };
    let o = check(&(stage("a", "fre", "") + &stage("b", "mgt", "")));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("stage a (grpo): 3 steps") && out.contains("stage b (grpo): 3 steps"),
        "{out}"
    );

    let o = check(&(stage("a", "fre", "") + &stage("b", "geometry", "")));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("stage \"b\" draws from dataset \"geometry\"") && err.contains("fre, mgt"),
        "{err}"
    );

    let o = check(&(stage("a", "fre", "") + &stage("b", "mgt", "\"grpo.clip_low\" = 7.0")));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("stage \"b\"") && err.contains("grpo.clip_low"),
        "{err}"
    );
}

/// docs/recipes.md's table of image tokens per `max_pixels` setting is the
/// processor's for the recipes' `model.min_pixels` / `model.max_pixels`: each
/// row is recomputed with its resize rule.
#[test]
fn image_token_table_in_the_docs_is_the_processors() {
    use lmmhost_model::processor::image::smart_resize;
    let text = std::fs::read_to_string(repo().join("docs/recipes.md")).unwrap();
    let start = text
        .find("<!-- image-tokens: checked by host/tests/recipes.rs -->")
        .expect("docs/recipes.md lost its image-token table marker");
    let mut lines = text[start..].lines().skip(1);
    let header = lines.next().unwrap();
    // (min_pixels, max_pixels) of each setting, in the table's column order:
    // the default processor's, then each recipe's `model` keys.
    let pixels = |recipe: &str| {
        let exp = table(&repo().join("configs/recipes").join(recipe));
        let key = |k: &str| exp["model"][k].as_integer().unwrap() as usize;
        (key("min_pixels"), key("max_pixels"))
    };
    let settings = [
        (3136, 12845056),
        pixels("revisual-r1.toml"),
        pixels("rl-cold-start.toml"),
    ];
    assert_eq!(settings[1..], [(262144, 4194304), (262144, 1204224)]);
    for (lo, hi) in &settings[1..] {
        assert!(header.contains(&format!("({lo}..{hi})")), "{header}");
    }
    let size = |s: &str| -> (usize, usize) {
        let (w, h) = s.trim().split_once(" x ").unwrap();
        (w.parse().unwrap(), h.parse().unwrap())
    };
    let mut rows = 0;
    for line in lines.skip(1).take_while(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').collect();
        assert_eq!(cells.len(), 7, "{line}");
        let (w, h) = size(cells[0]);
        for (i, (lo, hi)) in settings.iter().enumerate() {
            let (rh, rw) = smart_resize(h, w, 28, *lo, *hi).unwrap();
            let tokens = rh / 28 * (rw / 28);
            assert_eq!(size(cells[1 + 2 * i]), (rw, rh), "{line}");
            assert_eq!(
                cells[2 + 2 * i].trim().parse::<usize>().unwrap(),
                tokens,
                "{line}"
            );
        }
        rows += 1;
    }
    assert!(rows >= 5, "the table has {rows} rows");
}

/// The `--set` keys of each `lmmhost check|run configs/recipes/X.toml`
/// command shown in the recipe's own header and in docs/recipes.md: every
/// one is a key the recipe has (`model.path`, `datasets.<its dataset>.files`),
/// so a renamed dataset cannot leave the documented command behind.
#[test]
fn documented_commands_set_keys_the_recipe_has() {
    let docs = std::fs::read_to_string(repo().join("docs/recipes.md")).unwrap();
    // Commands are `\`-continued lines; join them, one command per line.
    let commands = |text: &str| -> Vec<String> {
        let joined = text
            .lines()
            .map(|l| l.trim_start_matches('#').trim())
            .collect::<Vec<_>>()
            .join("\n")
            .replace("\\\n", " ");
        joined
            .lines()
            .filter(|l| {
                (l.starts_with("lmmhost check ") || l.starts_with("lmmhost run "))
                    && l.contains("configs/recipes/")
            })
            .map(str::to_string)
            .collect()
    };
    let mut shown = 0;
    for cmd in commands(&docs).into_iter().chain(
        recipes()
            .iter()
            .flat_map(|r| commands(&std::fs::read_to_string(r).unwrap())),
    ) {
        let file = cmd
            .split_whitespace()
            .find(|w| w.starts_with("configs/recipes/"))
            .unwrap();
        let exp = table(&repo().join(file));
        for part in cmd.split("--set ").skip(1) {
            let key = part.trim_start_matches('\'').split('=').next().unwrap();
            if key.starts_with("...") {
                continue; // "the same --sets"
            }
            let mut cur = toml::Value::Table(exp.clone());
            for seg in key.split('.') {
                cur = cur
                    .get(seg)
                    .unwrap_or_else(|| panic!("{file} has no `{key}` (documented: {cmd})"))
                    .clone();
            }
            shown += 1;
        }
    }
    assert!(shown >= 12, "only {shown} documented --set keys found");
}
