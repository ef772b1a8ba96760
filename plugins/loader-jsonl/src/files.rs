//! Granted paths: expanding directories into `*.jsonl` files, indexing the
//! byte offsets of rows and reading one row back.

use lmmhost_sdk::rows::normalize;
use std::fs;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// A dataset file and its directory (relative image paths start there).
#[derive(Debug, Clone)]
pub struct DataFile {
    pub path: PathBuf,
    pub dir: PathBuf,
}

/// Where one non-empty line lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    pub file: u32,
    /// 1-based line number, for error messages.
    pub line: u64,
    pub offset: u64,
    pub len: u32,
}

/// The granted files and directories as given, expanded: a directory
/// contributes its `*.jsonl` files sorted by name, in place. Also returns
/// the granted directories (images must live under one of them).
pub fn expand_grants(files: &[String]) -> Result<(Vec<DataFile>, Vec<PathBuf>), String> {
    if files.is_empty() {
        return Err("loader-jsonl: no files granted; grant a .jsonl file or a directory".into());
    }
    let mut out = Vec::new();
    let mut dirs = Vec::new();
    for f in files {
        let p = PathBuf::from(f);
        let meta = fs::metadata(&p).map_err(|e| format!("{f}: {e}"))?;
        if meta.is_dir() {
            let mut names = Vec::new();
            for entry in fs::read_dir(&p).map_err(|e| format!("{f}: cannot list: {e}"))? {
                let entry = entry.map_err(|e| format!("{f}: cannot list: {e}"))?;
                let path = entry.path();
                let is_jsonl = path.extension().is_some_and(|x| x == "jsonl");
                if is_jsonl && entry.file_type().is_ok_and(|t| !t.is_dir()) {
                    names.push(path);
                }
            }
            if names.is_empty() {
                return Err(format!("{f}: the granted directory has no *.jsonl files"));
            }
            names.sort();
            out.extend(names.into_iter().map(|path| DataFile {
                path,
                dir: p.clone(),
            }));
            dirs.push(normalize(&p));
        } else {
            let dir = p.parent().map(Path::to_path_buf).unwrap_or_default();
            out.push(DataFile { path: p, dir });
        }
    }
    Ok((out, dirs))
}

/// Streams a file once, calling `on_row` with each row (non-blank line) and
/// its bytes. Streaming, not reading the whole file, keeps a multi-GB dataset
/// within the sandbox's memory cap. A UTF-8 byte order mark at the start is
/// skipped.
pub fn index_file(
    file_no: u32,
    path: &Path,
    mut on_row: impl FnMut(Row, &[u8]) -> Result<(), String>,
) -> Result<(), String> {
    let f = fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut reader = BufReader::with_capacity(1 << 20, f);
    let mut buf = Vec::new();
    let (mut offset, mut line) = (0u64, 0u64);
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| format!("{}:{}: {e}", path.display(), line + 1))?;
        if n == 0 {
            return Ok(());
        }
        line += 1;
        let start = offset;
        offset += n as u64;
        let mut text = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let mut skip = 0u64;
        if line == 1 {
            if let Some(rest) = text.strip_prefix(b"\xEF\xBB\xBF") {
                text = rest;
                skip = 3;
            }
        }
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let len = u32::try_from(text.len())
            .map_err(|_| format!("{}:{line}: the line is longer than 4 GiB", path.display()))?;
        let row = Row {
            file: file_no,
            line,
            offset: start + skip,
            len,
        };
        on_row(row, text)?;
    }
}

/// A row's bytes as text.
pub fn row_text<'a>(bytes: &'a [u8], row: &Row, path: &Path) -> Result<&'a str, String> {
    std::str::from_utf8(bytes)
        .map_err(|e| format!("{}:{}: not valid UTF-8: {e}", path.display(), row.line))
}

/// Reads one row back from disk (seek + read of just that line).
pub fn read_row(path: &Path, row: &Row) -> Result<String, String> {
    let mut f = fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    f.seek(SeekFrom::Start(row.offset))
        .map_err(|e| format!("{}:{}: {e}", path.display(), row.line))?;
    let mut buf = vec![0u8; row.len as usize];
    f.read_exact(&mut buf).map_err(|e| {
        format!(
            "{}:{}: cannot read the row (file changed since open?): {e}",
            path.display(),
            row.line
        )
    })?;
    String::from_utf8(buf)
        .map_err(|e| format!("{}:{}: not valid UTF-8: {e}", path.display(), row.line))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_skips_blank_lines_and_bom_and_counts_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.jsonl");
        fs::write(&p, b"\xEF\xBB\xBF{\"a\":1}\n\n   \n{\"b\":2}\r\n{\"c\":3}").unwrap();
        let mut rows = Vec::new();
        let mut texts = Vec::new();
        index_file(7, &p, |row, bytes| {
            rows.push(row);
            texts.push(row_text(bytes, &row, &p)?.to_owned());
            Ok(())
        })
        .unwrap();
        assert_eq!(
            rows.iter().map(|r| r.line).collect::<Vec<_>>(),
            vec![1, 4, 5]
        );
        assert_eq!(texts, vec!["{\"a\":1}", "{\"b\":2}\r", "{\"c\":3}"]);
        assert_eq!(rows[0].file, 7);
        // Reading back by offset gives the same bytes as the scan.
        for (row, text) in rows.iter().zip(&texts) {
            assert_eq!(&read_row(&p, row).unwrap(), text);
        }
        // The callback's error stops the scan and comes back unchanged.
        let e = index_file(0, &p, |_, _| Err("stop".into())).unwrap_err();
        assert_eq!(e, "stop");
    }

    #[test]
    fn directory_grant_lists_jsonl_sorted() {
        let dir = tempfile::tempdir().unwrap();
        for n in ["b.jsonl", "a.jsonl", "notes.txt", "c.json"] {
            fs::write(dir.path().join(n), "{}\n").unwrap();
        }
        let (files, dirs) = expand_grants(&[dir.path().to_str().unwrap().to_owned()]).unwrap();
        let names: Vec<_> = files
            .iter()
            .map(|f| f.path.file_name().unwrap().to_str().unwrap().to_owned())
            .collect();
        assert_eq!(names, vec!["a.jsonl", "b.jsonl"]);
        assert_eq!(dirs, vec![dir.path().to_path_buf()]);
    }
}
