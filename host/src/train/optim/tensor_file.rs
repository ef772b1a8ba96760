//! Reads parts of a safetensors file without loading the rest: the file is
//! mapped, its header says where each tensor's bytes lie (row-major,
//! contiguous), so a flat range of a tensor's elements is one byte range of
//! the map, and only the pages of that range are read. A resume under ZeRO
//! reads each rank's share of the optimizer state this way, and a rank
//! writes its shards one at a time through host memory.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use lmmhost_model::weights::{kind_of, TensorView};
use memmap2::Mmap;
use safetensors::tensor::Metadata;
use safetensors::SafeTensors;
use tch::{Kind, Tensor};

/// An open safetensors file, counting the tensor bytes read from it.
pub struct TensorFile {
    path: PathBuf,
    map: Mmap,
    meta: Metadata,
    /// Where the tensors' data starts in the file (after the header).
    data_start: usize,
    /// Bytes of tensor data read so far.
    pub bytes_read: u64,
}

/// Writes `tensors` (on any device) as a safetensors file and syncs it,
/// copying one tensor at a time to host memory.
pub fn write(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let views = tensors
        .iter()
        .map(|(name, t)| {
            let view = TensorView::new(t, t.kind()).with_context(|| format!("tensor {name}"))?;
            Ok((name.as_str(), view))
        })
        .collect::<Result<Vec<_>>>()?;
    let views = views.iter().map(|(name, view)| (*name, view));
    safetensors::serialize_to_file(views, None, path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    File::open(path)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot sync {}", path.display()))
}

impl TensorFile {
    /// Opens `path` and reads its header only.
    pub fn open(path: &Path) -> Result<TensorFile> {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        // SAFETY: checkpoint files are not written while a run reads them.
        let map = unsafe { Mmap::map(&file) }
            .with_context(|| format!("cannot map {}", path.display()))?;
        let (header, meta) = SafeTensors::read_metadata(&map)
            .with_context(|| format!("{} is not a safetensors file", path.display()))?;
        Ok(TensorFile {
            path: path.to_path_buf(),
            map,
            meta,
            data_start: 8 + header,
            bytes_read: 0,
        })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.meta.info(name).is_some()
    }

    /// The shape of tensor `name`.
    pub fn shape(&self, name: &str) -> Result<Vec<i64>> {
        Ok(self.stored(name)?.1)
    }

    /// Tensor `name`'s type, shape and first byte in the map.
    fn stored(&self, name: &str) -> Result<(Kind, Vec<i64>, usize)> {
        let info = self
            .meta
            .info(name)
            .with_context(|| format!("{}: no tensor {name}", self.path.display()))?;
        let kind = kind_of(info.dtype).with_context(|| {
            format!(
                "{}: {name} has dtype {:?}, which tch has no type for",
                self.path.display(),
                info.dtype
            )
        })?;
        let shape = info.shape.iter().map(|&d| d as i64).collect();
        Ok((kind, shape, self.data_start + info.data_offsets.0))
    }

    /// Tensor `name` whole, in its shape.
    pub fn read(&mut self, name: &str) -> Result<Tensor> {
        let shape = self.shape(name)?;
        let numel = shape.iter().product();
        Ok(self.read_range(name, 0, numel)?.view(shape.as_slice()))
    }

    /// Elements `from..to` of tensor `name`, flattened (a 1-d tensor in
    /// the stored dtype, on the CPU).
    pub fn read_range(&mut self, name: &str, from: i64, to: i64) -> Result<Tensor> {
        let (kind, shape, start) = self.stored(name)?;
        let numel: i64 = shape.iter().product();
        ensure!(
            0 <= from && from <= to && to <= numel,
            "{}: elements {from}..{to} of {name}, which has {numel}",
            self.path.display()
        );
        let size = kind.elt_size_in_bytes();
        let bytes = &self.map[start + from as usize * size..start + to as usize * size];
        self.bytes_read += bytes.len() as u64;
        Ok(Tensor::from_data_size(bytes, &[to - from], kind))
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
