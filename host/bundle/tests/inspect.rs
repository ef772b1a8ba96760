//! Component inspection and WIT version checks on components assembled from WAT text.

use lmmhost_bundle::{
    check_host_serves, check_served_by, check_version_compatible, check_wit_compatible,
    inspect_component, sha256_hex, World, HOST_WIT_VERSION, HOST_WIT_VERSIONS,
};

/// A component that imports `types`/`log` and exports one `lmmhost:plugin` interface at `version`,
/// shaped like what wit-bindgen produces (interface names as instance imports/exports). No `$names`,
/// so there is no trailing name section and the export is the last section.
fn plugin_component(iface: &str, version: &str) -> Vec<u8> {
    let text = format!(
        r#"(component
            (import "lmmhost:plugin/types@{version}" (instance))
            (import "lmmhost:plugin/log@{version}" (instance))
            (import "wasi:cli/environment@0.2.6" (instance))
            (component
                (import "inner-only" (instance))
                (export "inner-export" (instance 0)))
            (instance)
            (export "lmmhost:plugin/{iface}@{version}" (instance 3))
        )"#
    );
    wat::parse_str(&text).expect("test WAT is valid")
}

#[test]
fn reward_component_facts() {
    let bytes = plugin_component("reward", "0.1.0");
    let facts = inspect_component(&bytes).unwrap();
    assert_eq!(facts.world, Some(World::Reward));
    assert_eq!(facts.world.unwrap().to_string(), "reward-plugin");
    assert_eq!(facts.wit_version.as_deref(), Some("0.1.0"));
    assert_eq!(
        facts.exports,
        vec!["lmmhost:plugin/reward@0.1.0".to_string()]
    );
    // Only the outer component's imports count, not the nested component's.
    assert_eq!(
        facts.imports,
        vec![
            "lmmhost:plugin/types@0.1.0".to_string(),
            "lmmhost:plugin/log@0.1.0".to_string(),
            "wasi:cli/environment@0.2.6".to_string(),
        ]
    );
    assert_eq!(facts.size_bytes, bytes.len() as u64);
    assert_eq!(facts.sha256, sha256_hex(&bytes));
    assert_eq!(facts.sha256.len(), 64);
    assert!(check_wit_compatible(&facts).is_ok());
}

#[test]
fn loader_and_schedule_worlds() {
    let loader = inspect_component(&plugin_component("loader", "0.1.0")).unwrap();
    assert_eq!(loader.world, Some(World::Loader));
    let schedule = inspect_component(&plugin_component("schedule", "0.1.3")).unwrap();
    assert_eq!(schedule.world, Some(World::Schedule));
    assert_eq!(schedule.wit_version.as_deref(), Some("0.1.3"));
    // Same 0.1 minor: compatible.
    assert!(check_wit_compatible(&schedule).is_ok());
}

#[test]
fn out_of_version_component_is_refused_with_every_version() {
    let facts = inspect_component(&plugin_component("reward", "0.9.0")).unwrap();
    assert_eq!(facts.wit_version.as_deref(), Some("0.9.0"));
    let err = check_wit_compatible(&facts).unwrap_err();
    assert_eq!(
        err,
        "plugin needs lmmhost:plugin@0.9.0, this host speaks @0.1.0 and @0.2.0 (compatible: 0.1.x, 0.2.x)"
    );
    // Both contract versions the host implements are served, patches either way.
    for v in ["0.1.0", "0.1.4", "0.2.0", "0.2.3"] {
        let facts = inspect_component(&plugin_component("reward", v)).unwrap();
        assert!(check_wit_compatible(&facts).is_ok(), "{v}");
        assert!(check_host_serves(v).is_ok(), "{v}");
    }
    for v in ["0.3.0", "1.0.0", "0.0.9", "0.2.0-draft"] {
        assert!(check_host_serves(v).is_err(), "{v}");
    }
    assert_eq!(HOST_WIT_VERSIONS.last(), Some(&HOST_WIT_VERSION));
    let err = check_served_by("0.2.0", &["0.1.0"]).unwrap_err();
    assert_eq!(
        err,
        "plugin needs lmmhost:plugin@0.2.0, this host speaks @0.1.0 (compatible: 0.1.x)"
    );
}

#[test]
fn component_without_a_world_export() {
    let bytes = wat::parse_str(
        r#"(component
            (import "lmmhost:plugin/types@0.1.0" (instance))
            (instance $x)
            (export "other:pkg/thing@1.0.0" (instance $x)))"#,
    )
    .unwrap();
    let facts = inspect_component(&bytes).unwrap();
    assert_eq!(facts.world, None);
    // Version still known from the import.
    assert_eq!(facts.wit_version.as_deref(), Some("0.1.0"));

    let foreign =
        wat::parse_str(r#"(component (instance $x) (export "other:pkg/thing" (instance $x)))"#)
            .unwrap();
    let facts = inspect_component(&foreign).unwrap();
    assert_eq!(facts.wit_version, None);
    let err = check_wit_compatible(&facts).unwrap_err();
    assert!(err.contains("does not use lmmhost:plugin"), "{err}");
    assert!(err.contains("other:pkg/thing"), "{err}");
}

#[test]
fn two_world_exports_are_ambiguous() {
    let bytes = wat::parse_str(
        r#"(component
            (instance $a)
            (export "lmmhost:plugin/reward@0.1.0" (instance $a))
            (export "lmmhost:plugin/loader@0.1.0" (instance $a)))"#,
    )
    .unwrap();
    let facts = inspect_component(&bytes).unwrap();
    assert_eq!(facts.world, None);
    assert_eq!(facts.exports.len(), 2);
}

#[test]
fn core_module_is_not_a_component() {
    let module =
        wat::parse_str(r#"(module (func (export "score") (result i32) i32.const 1))"#).unwrap();
    let err = format!("{:#}", inspect_component(&module).unwrap_err());
    assert!(
        err.contains("core WebAssembly module, not a component"),
        "{err}"
    );
}

#[test]
fn garbage_and_truncated_inputs_are_errors() {
    let err = format!(
        "{:#}",
        inspect_component(b"hello, this is not wasm").unwrap_err()
    );
    assert!(err.contains("not a WebAssembly file"), "{err}");
    let err = format!("{:#}", inspect_component(b"").unwrap_err());
    assert!(err.contains("not a WebAssembly file"), "{err}");

    let bytes = plugin_component("reward", "0.1.0");
    let full = inspect_component(&bytes).unwrap();
    // A cut exactly at a section boundary is a valid, shorter component; every other cut must be
    // an error. Either way the export (the last section) never survives a truncation.
    let mut errors = 0;
    for cut in 8..bytes.len() {
        match inspect_component(&bytes[..cut]) {
            Ok(facts) => assert_ne!(facts.exports, full.exports, "truncated at {cut}"),
            Err(_) => errors += 1,
        }
    }
    // Valid cuts: after the header and after each of the 3 (type, import) pairs, the nested
    // component and the instance section: 9 in all.
    let boundaries = 9;
    assert!(errors >= bytes.len() - 8 - boundaries, "{errors} errors");
    // Corrupting a byte in the middle must not panic.
    for i in 8..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0xff;
        let _ = inspect_component(&b);
    }
}

#[test]
fn semver_rule() {
    // 0.x: same minor.
    assert!(check_version_compatible("0.1.0", "0.1.0").is_ok());
    assert!(check_version_compatible("0.1.7", "0.1.0").is_ok());
    assert!(check_version_compatible("0.1.0", "0.1.9").is_ok());
    assert!(check_version_compatible("0.2.0", "0.1.0").is_err());
    assert!(check_version_compatible("0.0.1", "0.1.0").is_err());
    // >= 1.0: same major, host minor >= plugin minor.
    assert!(check_version_compatible("1.0.0", "1.3.0").is_ok());
    assert!(check_version_compatible("1.3.2", "1.3.0").is_ok());
    let err = check_version_compatible("1.4.0", "1.3.0").unwrap_err();
    assert_eq!(
        err,
        "plugin needs lmmhost:plugin@1.4.0, this host speaks @1.3.0 (compatible: 1.0.x to 1.3.x)"
    );
    assert!(check_version_compatible("2.0.0", "1.3.0").is_err());
    assert!(check_version_compatible("1.0.0", "2.0.0").is_err());
    // Pre-releases only match exactly; build metadata is ignored.
    assert!(check_version_compatible("0.2.0-draft", "0.2.0-draft").is_ok());
    assert!(check_version_compatible("0.2.0-draft", "0.2.0").is_err());
    assert!(check_version_compatible("0.1.0+abc", "0.1.0").is_ok());
    // Malformed versions are explained.
    let err = check_version_compatible("0.1", "0.1.0").unwrap_err();
    assert!(err.contains("expected MAJOR.MINOR.PATCH"), "{err}");
    let err = check_version_compatible("0.x.0", "0.1.0").unwrap_err();
    assert!(err.contains("`x` is not a number"), "{err}");
}

/// Real components from `scripts/build-plugins.sh` (Rust + wit-bindgen), when they have been built.
/// Each must be recognized; the hostile `wrong-wit-version` plugin must be refused.
#[test]
fn real_plugins_when_built() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(std::env::var("LMMB_TEST_PLUGINS").unwrap_or_else(|_| "../../target/plugins".into()));
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!(
            "skipped: {} not built (run scripts/build-plugins.sh)",
            dir.display()
        );
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "wasm") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let facts =
            inspect_component(&bytes).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        if stem.contains("wrong") {
            assert!(check_wit_compatible(&facts).is_err(), "{stem}");
            continue;
        }
        // `reward_*`, `loader_*`, `schedule_*` (core plugins) must be that world; others any world.
        let expected = World::ALL
            .into_iter()
            .find(|w| stem.starts_with(w.interface()));
        assert!(
            facts.world.is_some(),
            "{stem}: no world in {:?}",
            facts.exports
        );
        if expected.is_some() {
            assert_eq!(facts.world, expected, "{stem}: {:?}", facts.exports);
        }
        // Core plugins and anything built with the SDK speak the newest
        // contract; fixtures and the Python/JS examples of 0.1.0 the older one.
        let legacy = ["contract-v0-1", "example-python", "example-js"];
        let want = if legacy.iter().any(|p| stem.starts_with(p)) {
            "0.1.0"
        } else {
            HOST_WIT_VERSION
        };
        assert_eq!(facts.wit_version.as_deref(), Some(want), "{stem}");
        assert!(check_wit_compatible(&facts).is_ok(), "{stem}");
    }
}
