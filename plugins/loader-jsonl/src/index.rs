//! Finding the JSONL files and indexing their lines, so rows can be read on
//! demand instead of holding a 100k-row dataset in the sandbox's memory.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// The granted paths expanded to files: a directory means all `*.jsonl` in it, sorted by name.
pub fn expand(files: &[String]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for f in files {
        let p = Path::new(f);
        let meta = std::fs::metadata(p).map_err(|e| format!("{f}: cannot open: {e}"))?;
        if meta.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| format!("{f}: cannot list directory: {e}"))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "jsonl") && p.is_file())
                .collect();
            found.sort();
            if found.is_empty() {
                return Err(format!("{f}: directory holds no *.jsonl file"));
            }
            out.extend(found);
        } else {
            out.push(p.to_path_buf());
        }
    }
    if out.is_empty() {
        return Err("no dataset files granted (`files` is empty)".into());
    }
    Ok(out)
}

/// Where one row's line lies.
#[derive(Debug, Clone, Copy)]
pub struct RowPos {
    pub file: u32,
    /// 1-based line number, for error messages.
    pub line: u32,
    pub offset: u64,
    pub len: u32,
}

/// Calls `each(line_no, offset, text)` for every non-blank line of `path`.
pub fn scan(path: &Path, mut each: impl FnMut(u32, u64, &[u8])) -> Result<(), String> {
    let f = File::open(path).map_err(|e| format!("{}: cannot open: {e}", path.display()))?;
    let mut r = BufReader::with_capacity(1 << 20, f);
    let mut buf = Vec::new();
    let (mut offset, mut line) = (0u64, 0u32);
    loop {
        buf.clear();
        let n = r
            .read_until(b'\n', &mut buf)
            .map_err(|e| format!("{}: read error after line {line}: {e}", path.display()))?;
        if n == 0 {
            return Ok(());
        }
        line += 1;
        let text = trim_ascii(&buf);
        if !text.is_empty() {
            let lead = buf.len() - buf.trim_ascii_start().len();
            each(line, offset + lead as u64, text);
        }
        offset += n as u64;
    }
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    b.trim_ascii()
}

/// Reads `len` bytes at `offset` from an open file.
pub fn read_at(file: &mut File, offset: u64, len: u32) -> std::io::Result<Vec<u8>> {
    file.seek(SeekFrom::Start(offset))?;
    let mut buf = vec![0; len as usize];
    file.read_exact(&mut buf)?;
    Ok(buf)
}
