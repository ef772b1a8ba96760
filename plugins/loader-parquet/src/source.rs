//! A Parquet byte source that opens the file again for every read.
//!
//! parquet's own `ChunkReader for File` clones the handle
//! (`File::try_clone`), which WASI does not support ("operation not
//! supported on this platform"): as a component, the loader could not read
//! any file that way. Reopening by path works in the sandbox (the path is
//! granted read-only) and costs one `open` per column chunk read.

use bytes::Bytes;
use parquet::errors::Result;
use parquet::file::reader::{ChunkReader, Length};
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

pub struct PathSource {
    path: PathBuf,
    len: u64,
}

impl PathSource {
    pub fn open(path: &Path) -> std::result::Result<Self, String> {
        let len = std::fs::metadata(path)
            .map_err(|e| format!("{}: cannot open: {e}", path.display()))?
            .len();
        Ok(PathSource {
            path: path.to_path_buf(),
            len,
        })
    }

    fn at(&self, start: u64) -> Result<File> {
        let mut f = File::open(&self.path)?;
        f.seek(SeekFrom::Start(start))?;
        Ok(f)
    }
}

impl Length for PathSource {
    fn len(&self) -> u64 {
        self.len
    }
}

impl ChunkReader for PathSource {
    type T = BufReader<File>;

    fn get_read(&self, start: u64) -> Result<Self::T> {
        Ok(BufReader::new(self.at(start)?))
    }

    fn get_bytes(&self, start: u64, length: usize) -> Result<Bytes> {
        let mut buf = vec![0u8; length];
        self.at(start)?.read_exact(&mut buf)?;
        Ok(buf.into())
    }
}
