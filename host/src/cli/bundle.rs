//! `lmmhost bundle keygen|pack|inspect|verify`: signed plugin bundles (.lmmb), see docs/bundles.md.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use lmmhost_bundle::keys::{read_secret_key, write_keypair};
use lmmhost_bundle::{host_speaks, open_bundle, open_verified, pack_dir, TrustPolicy};

#[derive(Subcommand)]
pub enum BundleCommand {
    /// Generate an ed25519 signing key: writes KEY (secret, mode 0600) and KEY with `.pub`.
    Keygen {
        /// Secret key file to write, e.g. team.key (team.pub is written next to it).
        #[arg(short, long)]
        output: PathBuf,
        /// Name recorded in the public key line (defaults to the file stem).
        #[arg(long)]
        name: Option<String>,
    },
    /// Pack DIR (bundle.toml + .wasm components) into one .lmmb file.
    Pack {
        dir: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
        /// Secret key file to sign the manifest with.
        #[arg(long)]
        sign: Option<PathBuf>,
    },
    /// Print a bundle's manifest, components and signer without trusting it.
    Inspect { bundle: PathBuf },
    /// Check hashes, signature against trusted keys and WIT compatibility; non-zero exit on refusal.
    Verify {
        bundle: PathBuf,
        /// Trusted public keys, one `ed25519 <hex> [name]` per line.
        #[arg(long)]
        trusted_keys: Option<PathBuf>,
        /// Accept bundles without a signature (hashes and WIT version are still checked).
        #[arg(long)]
        allow_unsigned: bool,
    },
}

pub fn run(cmd: BundleCommand) -> Result<()> {
    match cmd {
        BundleCommand::Keygen { output, name } => {
            let name = name.unwrap_or_else(|| {
                output
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default()
            });
            let (pub_path, id) = write_keypair(&output, &name)?;
            println!("secret key: {} (keep private)", output.display());
            println!(
                "public key: {} (key id {id}); add its line to a trusted-keys file",
                pub_path.display()
            );
        }
        BundleCommand::Pack { dir, output, sign } => {
            let key = sign.as_deref().map(read_secret_key).transpose()?;
            let bytes = pack_dir(&dir, key.as_ref())?;
            std::fs::write(&output, &bytes)
                .with_context(|| format!("cannot write {}", output.display()))?;
            let b = lmmhost_bundle::open_bundle_bytes(&bytes)?;
            println!(
                "packed {} {} ({} components, {} bytes{}) -> {}",
                b.manifest.name,
                b.manifest.version,
                b.manifest.components.len(),
                bytes.len(),
                b.signature
                    .map(|s| format!(", signed by key id {}", s.key_id))
                    .unwrap_or_default(),
                output.display()
            );
        }
        BundleCommand::Inspect { bundle } => {
            let b = open_bundle(&bundle)?;
            let m = &b.manifest;
            println!("bundle       {} {}", m.name, m.version);
            if !m.description.is_empty() {
                println!("description  {}", m.description);
            }
            println!(
                "wit          {}@{} (host speaks {})",
                m.wit_package,
                m.wit_version,
                host_speaks()
            );
            println!("created by   {}", m.created_by);
            match &b.signature {
                Some(s) => println!(
                    "signed       yes, {} key id {} (not verified; run `bundle verify`)",
                    s.algorithm, s.key_id
                ),
                None => println!("signed       no"),
            }
            println!("components   {}", m.components.len());
            for c in &m.components {
                println!(
                    "  {:<16} {:<16} wit {:<8} {:>10} bytes  sha256 {}  ({})",
                    c.name, c.world, c.wit_version, c.size, c.sha256, c.file
                );
                for line in c.default_config.lines() {
                    println!("      {line}");
                }
            }
        }
        BundleCommand::Verify {
            bundle,
            trusted_keys,
            allow_unsigned,
        } => {
            let trust = match &trusted_keys {
                Some(p) => TrustPolicy::from_file(p, allow_unsigned)?,
                None if allow_unsigned => TrustPolicy { trusted_keys: Vec::new(), allow_unsigned },
                None => bail!("--trusted-keys FILE is required (or --allow-unsigned to accept only unsigned bundles)"),
            };
            let v = open_verified(&bundle, &trust)?;
            let signer = match &v.signed_by {
                Some(s) if s.name.is_empty() => format!("signed by trusted key id {}", s.key_id),
                Some(s) => format!("signed by trusted key id {} ({})", s.key_id, s.name),
                None => "unsigned (allowed)".to_string(),
            };
            println!(
                "OK {} {}: {} components, hashes match, WIT @{} served by this host ({}), {signer}",
                v.manifest.name,
                v.manifest.version,
                v.components.len(),
                v.manifest.wit_version,
                host_speaks()
            );
        }
    }
    Ok(())
}
