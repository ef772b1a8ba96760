//! The typed overrides a stage may set: the host's list
//! (`lmmhost::train::experiment::OVERRIDE_KEYS`) is the authority, and every
//! other place that spells them must agree with it: the WIT record of each
//! served contract version, the SDK's `Overrides`, schedule-staged's
//! `[overrides]` table and the table in docs/experiment.md.

use std::path::{Path, PathBuf};

use lmmhost::train::experiment::OVERRIDE_KEYS;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn host_names() -> Vec<String> {
    let mut names: Vec<String> = OVERRIDE_KEYS.iter().map(|k| k.name.to_string()).collect();
    names.sort();
    names
}

/// The fields (name, type) of WIT record `name`, in order.
fn record_fields(wit: &str, name: &str) -> Vec<(String, String)> {
    let start = wit
        .find(&format!("record {name} {{"))
        .unwrap_or_else(|| panic!("no record {name}"));
    let body = &wit[start..];
    let body = &body[body.find('{').unwrap() + 1..body.find('}').unwrap()];
    body.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("//"))
        .map(|l| {
            let (field, ty) = l.trim_end_matches(',').split_once(':').unwrap();
            (field.trim().to_string(), ty.trim().to_string())
        })
        .collect()
}

/// The overrides record's keys with `pad.` for the fields of its PAD record,
/// and each one's WIT type.
fn wit_keys(wit: &str) -> Vec<(String, String)> {
    let mut keys = Vec::new();
    for (field, ty) in record_fields(wit, "overrides") {
        if field == "extra" {
            continue;
        }
        if ty == "pad-overrides" {
            for (pad_field, pad_ty) in record_fields(wit, "pad-overrides") {
                keys.push((format!("pad.{pad_field}"), pad_ty));
            }
        } else {
            keys.push((field, ty));
        }
    }
    keys.into_iter()
        .map(|(k, ty)| (k.replace('-', "_"), ty))
        .collect()
}

#[test]
fn wit_records_of_every_served_version_list_the_host_keys() {
    for version in ["v0.1.0", "v0.2.0"] {
        let path = repo().join("wit").join(version).join("schedule.wit");
        let wit = std::fs::read_to_string(&path).unwrap();
        let mut names: Vec<String> = wit_keys(&wit).into_iter().map(|(k, _)| k).collect();
        names.sort();
        assert_eq!(names, host_names(), "{}", path.display());
    }
}

#[test]
fn sdk_overrides_list_the_host_keys() {
    let value = serde_json::to_value(lmmhost_sdk::Overrides::default()).unwrap();
    let mut names = Vec::new();
    for (field, v) in value.as_object().unwrap() {
        match v.as_object() {
            _ if field == "extra" => {}
            Some(inner) => names.extend(inner.keys().map(|k| format!("{field}.{k}"))),
            None => names.push(field.clone()),
        }
    }
    names.sort();
    assert_eq!(names, host_names());
}

/// A value of WIT type `ty` for a schedule config, in TOML (`alt` picks a
/// second, different one); every value passes the plugin's checks.
fn toml_value(ty: &str, alt: bool) -> &'static str {
    match (ty, alt) {
        ("option<f64>", false) => "0.5",
        ("option<f64>", true) => "0.25",
        ("option<u32>" | "option<u64>", false) => "3",
        ("option<u32>" | "option<u64>", true) => "2",
        ("option<bool>", false) => "true",
        ("option<bool>", true) => "false",
        _ => panic!("no test value for WIT type {ty}"),
    }
}

/// schedule-staged takes every key in `[overrides]` and in a stage's own
/// overrides, and merges each one (the stage's value wins).
#[test]
fn schedule_staged_takes_and_merges_every_key() {
    let wit = std::fs::read_to_string(repo().join("wit/v0.2.0/schedule.wit")).unwrap();
    let keys = wit_keys(&wit);
    let table = |alt: bool| {
        keys.iter()
            .map(|(k, ty)| format!("{k} = {}\n", toml_value(ty, alt)))
            .collect::<String>()
    };
    let config = format!(
        "[overrides]\n{}\n[[stages]]\nname = \"a\"\nkind = \"grpo\"\ndatasets = {{ d = 1.0 }}\nsteps = 1\n\n\
         [[stages]]\nname = \"b\"\nkind = \"grpo\"\ndatasets = {{ d = 1.0 }}\nsteps = 1\n[stages.overrides]\n{}",
        table(false),
        table(true)
    );
    let parsed = schedule_staged::config::ScheduleConfig::parse(&config).unwrap();
    for (stage, alt) in parsed.stages.iter().zip([false, true]) {
        for k in &OVERRIDE_KEYS {
            let (_, ty) = keys.iter().find(|(name, _)| name == k.name).unwrap();
            let want: toml::Value = format!("v = {}", toml_value(ty, alt))
                .parse::<toml::Table>()
                .unwrap()["v"]
                .clone();
            assert_eq!(
                (k.value)(&stage.overrides),
                Some(want),
                "stage {}: {}",
                stage.name,
                k.name
            );
        }
    }
}

#[test]
fn docs_table_lists_the_host_keys_and_what_they_set() {
    let text = std::fs::read_to_string(repo().join("docs/experiment.md")).unwrap();
    let section = &text[text.find("## Stage overrides").unwrap()..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let mut rows: Vec<(String, String)> = section
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            match cells.as_slice() {
                ["", name, key, ..] if name.starts_with('`') && key.starts_with('`') => Some((
                    name.trim_matches('`').to_string(),
                    key.trim_matches('`').to_string(),
                )),
                _ => None,
            }
        })
        .collect();
    rows.sort();
    let mut want: Vec<(String, String)> = OVERRIDE_KEYS
        .iter()
        .map(|k| (k.name.to_string(), k.key.to_string()))
        .collect();
    want.sort();
    assert_eq!(rows, want);
}
