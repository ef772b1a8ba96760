//! Packing, reading and verifying bundles.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::container::RawBundle;
use crate::keys::{key_id, read_trusted_keys, TrustedKey};
use crate::manifest::{
    valid_component_name, Manifest, ManifestComponent, PackSpec, FORMAT_VERSION,
};
use crate::HOST_WIT_PACKAGE;
use crate::{
    check_host_serves, check_wit_compatible, inspect_component, sha256_hex, WitVersion, World,
};

/// Domain separation so a bundle signature can never be replayed as a signature of anything else.
const SIGNING_CONTEXT: &[u8] = b"lmmhost-bundle-manifest-v1\0";

/// The signature record (TOML).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureRecord {
    pub algorithm: String,
    pub key_id: String,
    pub public_key: String,
    pub signature: String,
}

/// Which bundles a host accepts.
#[derive(Debug, Clone, Default)]
pub struct TrustPolicy {
    pub trusted_keys: Vec<TrustedKey>,
    pub allow_unsigned: bool,
}

impl TrustPolicy {
    pub fn from_file(path: &Path, allow_unsigned: bool) -> Result<TrustPolicy> {
        Ok(TrustPolicy {
            trusted_keys: read_trusted_keys(path)?,
            allow_unsigned,
        })
    }
}

#[derive(Debug, Clone)]
pub struct BundledComponent {
    pub name: String,
    pub world: World,
    pub wit_version: String,
    pub sha256: String,
    pub bytes: Vec<u8>,
    /// TOML text.
    pub default_config: String,
}

/// Who signed a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer {
    pub key_id: String,
    /// Name from the trusted-keys file (empty if none).
    pub name: String,
}

#[derive(Debug, Clone)]
pub struct VerifiedBundle {
    pub manifest: Manifest,
    pub components: Vec<BundledComponent>,
    pub signed_by: Option<Signer>,
}

impl VerifiedBundle {
    pub fn component(&self, name: &str) -> Option<&BundledComponent> {
        self.components.iter().find(|c| c.name == name)
    }
}

/// A bundle read without any trust decision (for `bundle inspect`).
#[derive(Debug, Clone)]
pub struct OpenedBundle {
    pub manifest: Manifest,
    pub manifest_bytes: Vec<u8>,
    pub signature: Option<SignatureRecord>,
    pub raw: RawBundle,
}

fn sign_message(manifest: &[u8]) -> Vec<u8> {
    [SIGNING_CONTEXT, manifest].concat()
}

/// Packs `dir` (holding `bundle.toml` and the .wasm files) into bundle bytes, signed when `key` is given.
pub fn pack_dir(dir: &Path, key: Option<&SigningKey>) -> Result<Vec<u8>> {
    let spec_path = dir.join("bundle.toml");
    let text = std::fs::read_to_string(&spec_path)
        .with_context(|| format!("cannot read {}", spec_path.display()))?;
    let spec: PackSpec =
        toml::from_str(&text).with_context(|| format!("{}", spec_path.display()))?;
    ensure!(
        !spec.components.is_empty(),
        "{}: no [[component]] entries",
        spec_path.display()
    );
    let mut entries = Vec::new();
    let mut records = Vec::new();
    let mut needed: Option<WitVersion> = None;
    for (i, c) in spec.components.iter().enumerate() {
        let path: PathBuf = dir.join(&c.file);
        let ctx = || format!("{} component {i} (`{}`)", spec_path.display(), c.file);
        let bytes = std::fs::read(&path)
            .with_context(|| format!("{}: cannot read {}", ctx(), path.display()))?;
        let facts = inspect_component(&bytes).with_context(ctx)?;
        let Some(world) = facts.world else {
            bail!(
                "{}: exports no single lmmhost:plugin world interface (exports: [{}])",
                ctx(),
                facts.exports.join(", ")
            );
        };
        check_wit_compatible(&facts).map_err(|e| anyhow::anyhow!("{}: {e}", ctx()))?;
        let wit_version = facts.wit_version.clone().unwrap_or_default();
        let v = WitVersion::parse(&wit_version).map_err(|e| anyhow::anyhow!("{}: {e}", ctx()))?;
        if needed
            .as_ref()
            .is_none_or(|n| (v.major, v.minor, v.patch) > (n.major, n.minor, n.patch))
        {
            needed = Some(v);
        }
        let file = Path::new(&c.file)
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| c.file.clone());
        let name = match &c.name {
            Some(n) => n.clone(),
            None => Path::new(&c.file)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
        };
        ensure!(
            valid_component_name(&name),
            "{}: component name `{name}` must be 1-64 chars of A-Z a-z 0-9 - _ .",
            ctx()
        );
        ensure!(
            !entries.iter().any(|e: &ManifestComponent| e.name == name),
            "{}: duplicate component name `{name}`",
            ctx()
        );
        let default_config = if c.config.is_empty() {
            String::new()
        } else {
            toml::to_string(&c.config).with_context(|| format!("{}: config", ctx()))?
        };
        entries.push(ManifestComponent {
            name: name.clone(),
            file,
            world: world.name().to_string(),
            wit_version,
            sha256: facts.sha256.clone(),
            size: facts.size_bytes,
            default_config,
        });
        records.push((name, bytes));
    }
    let manifest = Manifest {
        format: FORMAT_VERSION,
        name: spec.name,
        version: spec.version,
        description: spec.description,
        wit_package: HOST_WIT_PACKAGE.to_string(),
        wit_version: needed.map(|v| v.to_string()).unwrap_or_default(),
        created_by: format!("lmmhost-bundle {}", env!("CARGO_PKG_VERSION")),
        components: entries,
    };
    let manifest_bytes = toml::to_string(&manifest)
        .context("serializing manifest")?
        .into_bytes();
    let signature = key.map(|k| sign_manifest(&manifest_bytes, k));
    Ok(RawBundle {
        manifest: manifest_bytes,
        signature,
        components: records,
    }
    .encode())
}

/// The signature record bytes for `manifest_bytes` signed by `key`.
pub fn sign_manifest(manifest_bytes: &[u8], key: &SigningKey) -> Vec<u8> {
    let sig = key.sign(&sign_message(manifest_bytes));
    let rec = SignatureRecord {
        algorithm: "ed25519".into(),
        key_id: key_id(&key.verifying_key()),
        public_key: hex::encode(key.verifying_key().as_bytes()),
        signature: hex::encode(sig.to_bytes()),
    };
    // Serializing four strings cannot fail.
    toml::to_string(&rec).unwrap_or_default().into_bytes()
}

/// Reads and parses a bundle without checking hashes or trust.
pub fn open_bundle_bytes(bytes: &[u8]) -> Result<OpenedBundle> {
    let raw = RawBundle::decode(bytes)?;
    let text = std::str::from_utf8(&raw.manifest).context("manifest is not UTF-8")?;
    let manifest: Manifest = toml::from_str(text).context("manifest does not parse")?;
    ensure!(
        manifest.format == FORMAT_VERSION,
        "manifest format {} is not supported (this lmmhost reads {FORMAT_VERSION})",
        manifest.format
    );
    let signature = match &raw.signature {
        None => None,
        Some(s) => {
            let text = std::str::from_utf8(s).context("signature record is not UTF-8")?;
            Some(
                toml::from_str::<SignatureRecord>(text)
                    .context("signature record does not parse")?,
            )
        }
    };
    Ok(OpenedBundle {
        manifest,
        manifest_bytes: raw.manifest.clone(),
        signature,
        raw,
    })
}

pub fn open_bundle(path: &Path) -> Result<OpenedBundle> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read bundle {}", path.display()))?;
    open_bundle_bytes(&bytes).with_context(|| format!("bundle {}", path.display()))
}

/// Checks the signature against the policy; returns the signer.
fn check_signature(b: &OpenedBundle, trust: &TrustPolicy) -> Result<Option<Signer>> {
    let Some(rec) = &b.signature else {
        ensure!(trust.allow_unsigned, "bundle is not signed and unsigned bundles are not allowed (use --allow-unsigned / allow_unsigned = true to accept it)");
        return Ok(None);
    };
    ensure!(
        rec.algorithm == "ed25519",
        "unsupported signature algorithm `{}`",
        rec.algorithm
    );
    let pk: [u8; 32] = hex::decode(&rec.public_key)
        .ok()
        .and_then(|v| v.try_into().ok())
        .context("signature record: public_key is not 32 bytes of hex")?;
    let pk =
        VerifyingKey::from_bytes(&pk).context("signature record: invalid ed25519 public key")?;
    let id = key_id(&pk);
    let Some(trusted) = trust.trusted_keys.iter().find(|t| t.key == pk) else {
        bail!("bundle is signed by key id {id}, which is not in the trusted keys");
    };
    let sig: [u8; 64] = hex::decode(&rec.signature)
        .ok()
        .and_then(|v| v.try_into().ok())
        .context("signature record: signature is not 64 bytes of hex")?;
    trusted
        .key
        .verify(&sign_message(&b.manifest_bytes), &Signature::from_bytes(&sig))
        .map_err(|_| anyhow::anyhow!("signature by key id {id} does not match the manifest (manifest edited or signature replaced)"))?;
    Ok(Some(Signer {
        key_id: id,
        name: trusted.name.clone(),
    }))
}

/// Full verification of parsed bundle bytes.
pub fn verify_bundle_bytes(bytes: &[u8], trust: &TrustPolicy) -> Result<VerifiedBundle> {
    let b = open_bundle_bytes(bytes)?;
    let signed_by = check_signature(&b, trust)?;
    let m = &b.manifest;
    ensure!(
        m.wit_package == HOST_WIT_PACKAGE,
        "bundle targets WIT package `{}`, this host speaks {HOST_WIT_PACKAGE}",
        m.wit_package
    );
    check_host_serves(&m.wit_version).map_err(|e| anyhow::anyhow!("bundle: {e}"))?;
    for (name, _) in &b.raw.components {
        ensure!(m.components.iter().any(|c| c.name == *name), "component `{name}` is in the bundle but not listed in the manifest (added after packing)");
    }
    let mut components = Vec::new();
    for entry in &m.components {
        let ctx = format!("component `{}`", entry.name);
        let (_, bytes) = b.raw.components.iter().find(|(n, _)| *n == entry.name)
            .with_context(|| format!("{ctx} is listed in the manifest but missing from the bundle (removed after packing)"))?;
        ensure!(
            bytes.len() as u64 == entry.size,
            "{ctx}: size is {} bytes, manifest says {} (component modified)",
            bytes.len(),
            entry.size
        );
        let actual = sha256_hex(bytes);
        ensure!(
            actual == entry.sha256,
            "{ctx}: SHA-256 is {actual}, manifest says {} (component modified)",
            entry.sha256
        );
        let facts = inspect_component(bytes).with_context(|| ctx.clone())?;
        let world = World::parse(&entry.world)
            .with_context(|| format!("{ctx}: unknown world `{}`", entry.world))?;
        ensure!(
            facts.world == Some(world),
            "{ctx}: manifest says world {world}, the component exports {:?}",
            facts.exports
        );
        ensure!(
            facts.wit_version.as_deref() == Some(entry.wit_version.as_str()),
            "{ctx}: manifest says WIT {}, the component uses {:?}",
            entry.wit_version,
            facts.wit_version
        );
        check_wit_compatible(&facts).map_err(|e| anyhow::anyhow!("{ctx}: {e}"))?;
        if !entry.default_config.is_empty() {
            toml::from_str::<toml::Table>(&entry.default_config)
                .with_context(|| format!("{ctx}: default config is not valid TOML"))?;
        }
        components.push(BundledComponent {
            name: entry.name.clone(),
            world,
            wit_version: entry.wit_version.clone(),
            sha256: actual,
            bytes: bytes.clone(),
            default_config: entry.default_config.clone(),
        });
    }
    Ok(VerifiedBundle {
        manifest: b.manifest,
        components,
        signed_by,
    })
}

/// Reads `path` and verifies it: layout, manifest, signature against `trust`, every component's
/// size/hash/world/WIT version, and WIT compatibility with this host.
pub fn open_verified(path: &Path, trust: &TrustPolicy) -> Result<VerifiedBundle> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read bundle {}", path.display()))?;
    verify_bundle_bytes(&bytes, trust).with_context(|| format!("bundle {} refused", path.display()))
}
