//! Ed25519 key files and the trusted-keys list.
//!
//! Secret key file: `ed25519-secret <64 hex>` (one line; `#` comments allowed).
//! Public key / trusted-keys line: `ed25519 <64 hex> [name ...]`, so `cat team.pub >> trusted_keys`
//! works. Blank lines and lines starting with `#` are ignored.

use std::path::Path;

use anyhow::{bail, Context, Result};
use ed25519_dalek::{SigningKey, VerifyingKey};
use rand::TryRngCore;

use crate::sha256_hex;

/// Short, stable identifier of a public key: first 16 hex chars of SHA-256(key bytes).
pub fn key_id(key: &VerifyingKey) -> String {
    sha256_hex(key.as_bytes())[..16].to_string()
}

#[derive(Debug, Clone)]
pub struct TrustedKey {
    pub key: VerifyingKey,
    pub name: String,
}

impl TrustedKey {
    pub fn id(&self) -> String {
        key_id(&self.key)
    }
}

fn parse_hex32(hex_text: &str) -> Result<[u8; 32]> {
    let bytes = hex::decode(hex_text).context("key is not valid hex")?;
    bytes.try_into().map_err(|b: Vec<u8>| {
        anyhow::anyhow!("key must be 32 bytes (64 hex chars), got {}", b.len())
    })
}

fn content_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
}

/// Parses a public-key line `ed25519 <hex> [name]`.
pub fn parse_public_line(line: &str) -> Result<TrustedKey> {
    let mut parts = line.splitn(3, char::is_whitespace);
    let (Some("ed25519"), Some(hex_text)) = (parts.next(), parts.next()) else {
        bail!("expected `ed25519 <64 hex chars> [name]`");
    };
    let key = VerifyingKey::from_bytes(&parse_hex32(hex_text)?)
        .context("not a valid ed25519 public key")?;
    Ok(TrustedKey {
        key,
        name: parts.next().unwrap_or("").trim().to_string(),
    })
}

/// Reads a trusted-keys file (one public-key line per key).
pub fn read_trusted_keys(path: &Path) -> Result<Vec<TrustedKey>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read trusted-keys file {}", path.display()))?;
    content_lines(&text)
        .map(|(n, l)| parse_public_line(l).with_context(|| format!("{}:{n}", path.display())))
        .collect()
}

/// Reads a secret key file written by `write_keypair`.
pub fn read_secret_key(path: &Path) -> Result<SigningKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read secret key file {}", path.display()))?;
    let (n, line) = content_lines(&text)
        .next()
        .with_context(|| format!("{}: no key line found", path.display()))?;
    let hex_text = line.strip_prefix("ed25519-secret ").with_context(|| {
        format!(
            "{}:{n}: expected `ed25519-secret <64 hex chars>`",
            path.display()
        )
    })?;
    let seed = parse_hex32(hex_text.trim()).with_context(|| format!("{}:{n}", path.display()))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// The public-key line for `key`.
pub fn public_line(key: &VerifyingKey, name: &str) -> String {
    format!("ed25519 {} {name}", hex::encode(key.as_bytes()))
        .trim_end()
        .to_string()
}

/// Generates a key pair from the OS random source; writes the secret to `secret_path`
/// (mode 0600, refuses to overwrite) and the public key to `secret_path` with `.pub` extension.
/// Returns the public key file path and the key id.
pub fn write_keypair(secret_path: &Path, name: &str) -> Result<(std::path::PathBuf, String)> {
    let mut seed = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut seed)
        .map_err(|e| anyhow::anyhow!("OS random source failed: {e}"))?;
    let key = SigningKey::from_bytes(&seed);
    let pub_path = secret_path.with_extension("pub");
    // `-o team.pub` would write the public key over the secret one.
    if pub_path == secret_path {
        bail!(
            "{}: the secret key file must not end in .pub (the public key goes there); use e.g. {}",
            secret_path.display(),
            secret_path.with_extension("key").display()
        );
    }
    for p in [secret_path, pub_path.as_path()] {
        if p.exists() {
            bail!(
                "{} already exists; refusing to overwrite a key",
                p.display()
            );
        }
    }
    let id = key_id(&key.verifying_key());
    let secret = format!(
        "# lmmhost bundle signing key (ed25519), key id {id}. Keep this file private.\ned25519-secret {}\n",
        hex::encode(seed)
    );
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    use std::io::Write;
    opts.open(secret_path)
        .and_then(|mut f| f.write_all(secret.as_bytes()))
        .with_context(|| format!("cannot write {}", secret_path.display()))?;
    std::fs::write(
        &pub_path,
        format!("{}\n", public_line(&key.verifying_key(), name)),
    )
    .with_context(|| format!("cannot write {}", pub_path.display()))?;
    Ok((pub_path, id))
}
