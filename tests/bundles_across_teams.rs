//! Bundles across teams: team A packs its reward rule into a bundle signed with
//! its key and hands over the file and its public key. An experiment whose
//! `[trust]` section trusts team A verifies the bundle, loads the component and
//! scores with it through the plugin host; an experiment that trusts only team
//! B refuses it, naming the key, before anything is instantiated.
//!
//! The experiment side mirrors the trainer's mapping (host/src/train/):
//! `[trust] trusted_keys = "path", allow_unsigned = bool` (paths relative to
//! the experiment file) -> `TrustPolicy::from_file(path, allow_unsigned)` ->
//! `open_verified(bundle, &policy)`; the plugin's config is the bundle's
//! default config with the experiment's `[plugins.<name>.config]` over it.
//!
//! Needs target/plugins/example-rust-reward.wasm (scripts/build-example-plugins.sh).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use lmmhost_bundle::keys::{read_secret_key, write_keypair};
use lmmhost_bundle::{open_verified, pack_dir, Signer, TrustPolicy};
use lmmhost_plugin_host::{
    stderr_sink, ItemOutcome, Limits, OnError, PluginRuntime, PluginSpec, RewardPlugin,
    RuntimeOptions,
};
use lmmhost_sdk::{Completion, Sample};
use serde::Deserialize;

fn example_component() -> PathBuf {
    let dir = std::env::var_os("LMMHOST_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/plugins"));
    let path = dir.join("example-rust-reward.wasm");
    assert!(
        path.is_file(),
        "{} is missing: run scripts/build-example-plugins.sh rust",
        path.display()
    );
    path
}

/// The parts of an experiment file this test needs, with the trainer's keys.
#[derive(Deserialize)]
struct Experiment {
    trust: Option<Trust>,
    #[serde(default)]
    plugins: BTreeMap<String, PluginEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Trust {
    trusted_keys: PathBuf,
    #[serde(default)]
    allow_unsigned: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginEntry {
    bundle: PathBuf,
    component: String,
    #[serde(default)]
    config: toml::Table,
}

/// Loads reward plugin `name` of the experiment file at `path` the way the
/// trainer does; returns it with the bundle's signer.
fn load_reward(
    runtime: &PluginRuntime,
    path: &Path,
    name: &str,
) -> Result<(RewardPlugin, Option<Signer>)> {
    let text = std::fs::read_to_string(path)?;
    let exp: Experiment =
        toml::from_str(&text).with_context(|| format!("experiment {}", path.display()))?;
    let base = path.parent().context("experiment file has no directory")?;
    let entry = exp
        .plugins
        .get(name)
        .with_context(|| format!("no [plugins.{name}]"))?;
    let trust = exp
        .trust
        .as_ref()
        .with_context(|| format!("plugins.{name}.bundle: needs a [trust] section"))?;
    let policy = TrustPolicy::from_file(&base.join(&trust.trusted_keys), trust.allow_unsigned)
        .context("trust.trusted_keys")?;
    let verified = open_verified(&base.join(&entry.bundle), &policy)
        .with_context(|| format!("plugin {name}"))?;
    let component = verified
        .component(&entry.component)
        .with_context(|| format!("plugins.{name}.component: no {:?}", entry.component))?;
    let mut config: toml::Table = component.default_config.parse()?;
    config.extend(entry.config.clone());
    let spec = PluginSpec {
        name: name.to_string(),
        bytes: Arc::new(component.bytes.clone()),
        config: toml::to_string(&config)?,
        limits: Limits {
            instances: Some(1),
            ..Limits::default()
        },
        on_error: OnError::Abort,
        seed: 0,
        grants: Vec::new(),
        image_roots: Vec::new(),
        log: stderr_sink(),
    };
    Ok((RewardPlugin::new(runtime, spec)?, verified.signed_by))
}

fn experiment(dir: &Path, file: &str, trusted_keys: &str, allow_unsigned: bool) -> PathBuf {
    let path = dir.join(file);
    let text = format!(
        "# The receiving team's experiment (the parts that matter here).\n\
         [trust]\n\
         trusted_keys = \"{trusted_keys}\"\n\
         allow_unsigned = {allow_unsigned}\n\
         \n\
         [plugins.accuracy]\n\
         bundle = \"../shared/team-a.lmmb\"\n\
         component = \"numeric\"\n\
         [plugins.accuracy.config]\n\
         accuracy_weight = 2.0\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn completion(id: &str, response: &str, answer: &str) -> Completion {
    Completion {
        sample: Sample {
            id: id.into(),
            answer: Some(answer.into()),
            ..Default::default()
        },
        response: response.into(),
        response_tokens: 8,
    }
}

#[test]
fn bundle_runs_where_its_signer_is_trusted_and_is_refused_elsewhere() {
    let root = tempfile::tempdir().unwrap();
    let (team_a, team_b, shared, consumer) = (
        root.path().join("team-a"),
        root.path().join("team-b"),
        root.path().join("shared"),
        root.path().join("consumer"),
    );
    for d in [&team_a, &team_b, &shared, &consumer.join("keys")] {
        std::fs::create_dir_all(d).unwrap();
    }

    // Team A: a key pair and a signed bundle with its rule and a default config.
    let (a_pub, a_id) = write_keypair(&team_a.join("team-a.key"), "team-a").unwrap();
    let (b_pub, b_id) = write_keypair(&team_b.join("team-b.key"), "team-b").unwrap();
    assert_ne!(a_id, b_id);
    let rules = team_a.join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::copy(example_component(), rules.join("numeric.wasm")).unwrap();
    std::fs::write(
        rules.join("bundle.toml"),
        "name = \"team-a-rewards\"\nversion = \"1.0.0\"\n\n\
         [[component]]\nfile = \"numeric.wasm\"\nname = \"numeric\"\n\
         [component.config]\nformat_weight = 0.25\n",
    )
    .unwrap();
    let key_a = read_secret_key(&team_a.join("team-a.key")).unwrap();
    let signed = pack_dir(&rules, Some(&key_a)).unwrap();
    std::fs::write(shared.join("team-a.lmmb"), &signed).unwrap();

    // The receiving team keeps two trusted-keys files: one with team A's
    // public key, one with team B's only.
    std::fs::copy(&a_pub, consumer.join("keys/trust-a")).unwrap();
    std::fs::copy(&b_pub, consumer.join("keys/trust-b")).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let runtime = PluginRuntime::new(RuntimeOptions {
        cache_dir: Some(cache.path().to_path_buf()),
    })
    .unwrap();

    // Trusts A: verified, loaded, scores with the bundle's default config
    // (format 0.25) under the experiment's override (accuracy 2).
    let trusting = experiment(&consumer, "trusts-a.toml", "keys/trust-a", false);
    let (plugin, signer) = load_reward(&runtime, &trusting, "accuracy")
        .unwrap_or_else(|e| panic!("trusted bundle refused: {e:#}"));
    let signer = signer.expect("the bundle is signed");
    assert_eq!(
        (signer.key_id.as_str(), signer.name.as_str()),
        (a_id.as_str(), "team-a")
    );
    let batch = [
        completion("right", "<think>6*7</think><answer>42</answer>", "42"),
        completion("wrong", "<think>6*7</think><answer>41</answer>", "42"),
        completion("unformatted", "<answer>42</answer>", "42"),
    ];
    let totals: Vec<f64> = plugin
        .score_batch(&batch)
        .unwrap()
        .into_iter()
        .map(|o| match o {
            ItemOutcome::Scored(s) => s.total,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(totals, vec![2.25, 0.25, 2.0]);

    // Trusts only B: refused at verification, naming team A's key id.
    let distrusting = experiment(&consumer, "trusts-b.toml", "keys/trust-b", false);
    let err = format!(
        "{:#}",
        load_reward(&runtime, &distrusting, "accuracy")
            .err()
            .expect("a bundle signed by an untrusted key was loaded")
    );
    assert!(
        err.contains(&format!(
            "signed by key id {a_id}, which is not in the trusted keys"
        )) && err.contains("team-a.lmmb refused")
            && err.contains("plugin accuracy"),
        "{err}"
    );
    // allow_unsigned does not let a bundle signed by an unknown key through.
    let lax = experiment(&consumer, "trusts-b-lax.toml", "keys/trust-b", true);
    let err = format!(
        "{:#}",
        load_reward(&runtime, &lax, "accuracy")
            .err()
            .expect("loaded")
    );
    assert!(err.contains("not in the trusted keys"), "{err}");

    // The same rule unsigned: refused unless the experiment allows unsigned bundles.
    std::fs::write(shared.join("team-a.lmmb"), pack_dir(&rules, None).unwrap()).unwrap();
    let err = format!(
        "{:#}",
        load_reward(&runtime, &trusting, "accuracy")
            .err()
            .expect("loaded")
    );
    assert!(
        err.contains("not signed and unsigned bundles are not allowed"),
        "{err}"
    );
    let (plugin, signer) = load_reward(&runtime, &lax, "accuracy").unwrap();
    assert!(signer.is_none());
    assert_eq!(plugin.score_batch(&batch[..1]).unwrap().len(), 1);

    // Signed by A but a component byte changed in transit: refused even by
    // the experiment that trusts A.
    let mut tampered = signed.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    std::fs::write(shared.join("team-a.lmmb"), &tampered).unwrap();
    let err = format!(
        "{:#}",
        load_reward(&runtime, &trusting, "accuracy")
            .err()
            .expect("loaded")
    );
    assert!(
        err.contains("component `numeric`") && err.contains("component modified"),
        "{err}"
    );
}
