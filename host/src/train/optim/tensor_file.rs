//! Reads parts of a safetensors file without loading the rest: its header
//! says where each tensor's bytes lie (row-major, contiguous), so a flat
//! range of a tensor's elements is one byte range of the file. A resume
//! under ZeRO reads each rank's share of the optimizer state this way, and
//! a rank writes its shards one at a time through host memory.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use serde::Deserialize;
use tch::{Kind, Tensor};

#[derive(Deserialize)]
struct Entry {
    dtype: String,
    shape: Vec<i64>,
    data_offsets: [u64; 2],
}

/// One tensor's place in the file.
struct Stored {
    kind: Kind,
    shape: Vec<i64>,
    /// First byte of its data, from the start of the file.
    start: u64,
}

/// An open safetensors file, counting the tensor bytes read from it.
pub struct TensorFile {
    path: PathBuf,
    file: File,
    tensors: BTreeMap<String, Stored>,
    /// Bytes of tensor data read so far.
    pub bytes_read: u64,
}

fn kind_of(dtype: &str) -> Option<Kind> {
    Some(match dtype {
        "F64" => Kind::Double,
        "F32" => Kind::Float,
        "BF16" => Kind::BFloat16,
        "F16" => Kind::Half,
        "I64" => Kind::Int64,
        "I32" => Kind::Int,
        _ => return None,
    })
}

fn dtype_of(kind: Kind) -> Result<&'static str> {
    Ok(match kind {
        Kind::Double => "F64",
        Kind::Float => "F32",
        Kind::BFloat16 => "BF16",
        Kind::Half => "F16",
        Kind::Int64 => "I64",
        Kind::Int => "I32",
        _ => bail!("no safetensors dtype for {kind:?}"),
    })
}

/// Writes `tensors` (on any device) as a safetensors file and syncs it,
/// copying one tensor at a time to host memory.
pub fn write(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let mut header = serde_json::Map::new();
    let mut offset = 0u64;
    for (name, t) in tensors {
        let bytes = (t.numel() * t.kind().elt_size_in_bytes()) as u64;
        header.insert(
            name.clone(),
            serde_json::json!({
                "dtype": dtype_of(t.kind())?,
                "shape": t.size(),
                "data_offsets": [offset, offset + bytes],
            }),
        );
        offset += bytes;
    }
    let mut header = serde_json::to_vec(&header)?;
    // The data starts 8-byte aligned, as the safetensors writers align it.
    header.resize(header.len().next_multiple_of(8), b' ');
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut out = BufWriter::new(file);
    let io = |e: std::io::Error| {
        anyhow::Error::new(e).context(format!("cannot write {}", path.display()))
    };
    out.write_all(&(header.len() as u64).to_le_bytes())
        .map_err(io)?;
    out.write_all(&header).map_err(io)?;
    for (_, t) in tensors {
        let t = t.to_device(tch::Device::Cpu).contiguous();
        let mut bytes = vec![0u8; t.numel() * t.kind().elt_size_in_bytes()];
        t.copy_data_u8(&mut bytes, t.numel());
        out.write_all(&bytes).map_err(io)?;
    }
    let file = out.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)
}

impl TensorFile {
    /// Opens `path` and reads its header only.
    pub fn open(path: &Path) -> Result<TensorFile> {
        let mut file =
            File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let mut len = [0u8; 8];
        file.read_exact(&mut len)
            .with_context(|| format!("{}: no safetensors header", path.display()))?;
        let len = u64::from_le_bytes(len);
        ensure!(
            len < 1 << 30,
            "{}: a header of {len} bytes is not a safetensors file's",
            path.display()
        );
        let mut header = vec![0u8; len as usize];
        file.read_exact(&mut header)
            .with_context(|| format!("{}: the header is cut short", path.display()))?;
        let entries: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&header)
            .with_context(|| format!("{}: the header is not JSON", path.display()))?;
        let mut tensors = BTreeMap::new();
        for (name, value) in entries {
            if name == "__metadata__" {
                continue;
            }
            let e: Entry = serde_json::from_value(value)
                .with_context(|| format!("{}: header entry {name}", path.display()))?;
            let Some(kind) = kind_of(&e.dtype) else {
                bail!(
                    "{}: {name} has dtype {}, not a float or integer one lmmhost writes",
                    path.display(),
                    e.dtype
                );
            };
            let numel: i64 = e.shape.iter().product();
            let bytes = e.data_offsets[1].saturating_sub(e.data_offsets[0]);
            ensure!(
                bytes == (numel as usize * kind.elt_size_in_bytes()) as u64,
                "{}: {name} has {bytes} bytes for shape {:?} of {}",
                path.display(),
                e.shape,
                e.dtype
            );
            let start = 8 + len + e.data_offsets[0];
            tensors.insert(
                name,
                Stored {
                    kind,
                    shape: e.shape,
                    start,
                },
            );
        }
        Ok(TensorFile {
            path: path.to_path_buf(),
            file,
            tensors,
            bytes_read: 0,
        })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The shape of tensor `name`.
    pub fn shape(&self, name: &str) -> Result<&[i64]> {
        Ok(&self.stored(name)?.shape)
    }

    fn stored(&self, name: &str) -> Result<&Stored> {
        self.tensors
            .get(name)
            .with_context(|| format!("{}: no tensor {name}", self.path.display()))
    }

    /// Tensor `name` whole, in its shape.
    pub fn read(&mut self, name: &str) -> Result<Tensor> {
        let shape = self.shape(name)?.to_vec();
        let numel = shape.iter().product();
        Ok(self.read_range(name, 0, numel)?.view(shape.as_slice()))
    }

    /// Elements `from..to` of tensor `name`, flattened (a 1-d tensor in
    /// the stored dtype, on the CPU).
    pub fn read_range(&mut self, name: &str, from: i64, to: i64) -> Result<Tensor> {
        let stored = self.stored(name)?;
        let numel: i64 = stored.shape.iter().product();
        ensure!(
            0 <= from && from <= to && to <= numel,
            "{}: elements {from}..{to} of {name}, which has {numel}",
            self.path.display()
        );
        let (kind, start) = (stored.kind, stored.start);
        let size = kind.elt_size_in_bytes() as u64;
        let mut bytes = vec![0u8; ((to - from) as u64 * size) as usize];
        self.file
            .seek(SeekFrom::Start(start + from as u64 * size))
            .and_then(|_| self.file.read_exact(&mut bytes))
            .with_context(|| format!("{}: cannot read {name}", self.path.display()))?;
        self.bytes_read += bytes.len() as u64;
        Ok(Tensor::from_data_size(&bytes, &[to - from], kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ranges of tensors of several dtypes read back what was written,
    /// counting only their bytes.
    #[test]
    fn reads_ranges_of_the_stored_tensors() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("t.safetensors");
        let a = Tensor::arange(12, (Kind::Float, tch::Device::Cpu)).view([3, 4]);
        let b = Tensor::arange(5, (Kind::Float, tch::Device::Cpu)).to_kind(Kind::BFloat16);
        let step = Tensor::from_slice(&[7i64]);
        let named = [("a", &a), ("b", &b), ("step", &step)]
            .map(|(n, t)| (n.to_string(), t.shallow_clone()));
        write(&path, &named).unwrap();
        // What tch (the safetensors crate) reads back.
        let back = Tensor::read_safetensors(&path).unwrap();
        assert_eq!(back.len(), 3);
        for (name, t) in &back {
            let (_, want) = named.iter().find(|(n, _)| n == name).unwrap();
            assert!(t.equal(want), "{name}");
        }
        let mut f = TensorFile::open(&path).unwrap();
        assert_eq!(f.shape("a").unwrap(), &[3, 4]);
        let part = f.read_range("a", 5, 9).unwrap();
        assert!(part.equal(&Tensor::from_slice(&[5.0f32, 6.0, 7.0, 8.0])));
        assert_eq!(f.bytes_read, 16);
        assert!(f.read("b").unwrap().equal(&b));
        assert_eq!(f.bytes_read, 16 + 10);
        assert_eq!(f.read("step").unwrap().int64_value(&[0]), 7);
        let err = format!("{:#}", f.read_range("a", 10, 13).unwrap_err());
        assert!(err.contains("elements 10..13 of a, which has 12"), "{err}");
        let err = format!("{:#}", f.read("c").unwrap_err());
        assert!(err.contains("no tensor c"), "{err}");
    }
}
