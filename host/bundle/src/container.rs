//! The `.lmmb` byte layout (all integers little-endian):
//!
//! ```text
//! 0..8    magic  b"LMMB\r\n\x1a\n"
//! 8..12   u32    container format version (1)
//! then records until end of file, each:
//!         u8     tag: b'M' manifest (exactly one, first), b'S' signature (optional, right after M),
//!                     b'C' component (any number, after those)
//!         u16    name length N, then N bytes of UTF-8 name (empty for M and S; component name for C)
//!         u64    payload length L, then L bytes of payload
//! ```
//! Manifest and signature payloads are UTF-8 TOML; component payloads are the component binaries.

use anyhow::{bail, ensure, Context, Result};

pub const MAGIC: &[u8; 8] = b"LMMB\r\n\x1a\n";
const MAX_TEXT: u64 = 1 << 20;

/// A bundle file split into its records, nothing checked beyond the layout.
#[derive(Debug, Clone)]
pub struct RawBundle {
    pub manifest: Vec<u8>,
    pub signature: Option<Vec<u8>>,
    pub components: Vec<(String, Vec<u8>)>,
}

fn push_record(out: &mut Vec<u8>, tag: u8, name: &str, data: &[u8]) {
    out.push(tag);
    out.extend_from_slice(&(name.len() as u16).to_le_bytes());
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.extend_from_slice(data);
}

impl RawBundle {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&1u32.to_le_bytes());
        push_record(&mut out, b'M', "", &self.manifest);
        if let Some(sig) = &self.signature {
            push_record(&mut out, b'S', "", sig);
        }
        for (name, bytes) in &self.components {
            push_record(&mut out, b'C', name, bytes);
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<RawBundle> {
        ensure!(
            bytes.len() >= 12 && &bytes[..8] == MAGIC,
            "not an lmmhost bundle (.lmmb): missing the `LMMB` header"
        );
        let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        ensure!(
            version == 1,
            "bundle container format {version} is not supported (this lmmhost reads 1)"
        );
        let mut pos = 12usize;
        let mut manifest = None;
        let mut signature = None;
        let mut components: Vec<(String, Vec<u8>)> = Vec::new();
        let mut index = 0usize;
        while pos < bytes.len() {
            let at = pos;
            let take = |pos: &mut usize, n: usize| -> Result<&[u8]> {
                let end = pos.checked_add(n).filter(|&e| e <= bytes.len()).with_context(|| {
                    format!("bundle is truncated: record {index} at byte {at} needs {n} more bytes at byte {pos}")
                })?;
                let s = &bytes[*pos..end];
                *pos = end;
                Ok(s)
            };
            let tag = take(&mut pos, 1)?[0];
            if index > 0 && !matches!(tag, b'M' | b'S' | b'C') {
                bail!(
                    "bundle has {} bytes of trailing data at byte {at}, after its last record (record {}): they do not start a record (tag 0x{tag:02x}); was something appended to the file?",
                    bytes.len() - at,
                    index - 1
                );
            }
            let nlen = take(&mut pos, 2)?;
            let nlen = u16::from_le_bytes([nlen[0], nlen[1]]) as usize;
            let name = std::str::from_utf8(take(&mut pos, nlen)?)
                .with_context(|| format!("record {index} at byte {at}: name is not UTF-8"))?
                .to_string();
            let len = take(&mut pos, 8)?;
            let mut l8 = [0u8; 8];
            l8.copy_from_slice(len);
            let len = u64::from_le_bytes(l8);
            let len = usize::try_from(len).ok().filter(|&l| l <= bytes.len() - pos).with_context(|| {
                format!(
                    "bundle is truncated: record {index} at byte {at} declares {len} bytes, only {} remain",
                    bytes.len() - pos
                )
            })?;
            let data = take(&mut pos, len)?.to_vec();
            match tag {
                b'M' => {
                    ensure!(
                        index == 0,
                        "record {index} at byte {at}: manifest must be the first record"
                    );
                    ensure!(len as u64 <= MAX_TEXT, "manifest is larger than 1 MiB");
                    manifest = Some(data);
                }
                b'S' => {
                    ensure!(
                        index == 1,
                        "record {index} at byte {at}: signature must directly follow the manifest"
                    );
                    ensure!(len as u64 <= MAX_TEXT, "signature is larger than 1 MiB");
                    signature = Some(data);
                }
                b'C' => {
                    ensure!(
                        index > 0,
                        "record 0 must be the manifest, found a component"
                    );
                    if components.iter().any(|(n, _)| *n == name) {
                        bail!("component `{name}` appears twice in the bundle");
                    }
                    components.push((name, data));
                }
                other => bail!("record {index} at byte {at}: unknown record tag 0x{other:02x}"),
            }
            index += 1;
        }
        Ok(RawBundle {
            manifest: manifest.context("bundle has no manifest record")?,
            signature,
            components,
        })
    }
}
