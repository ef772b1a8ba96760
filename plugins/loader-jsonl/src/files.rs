//! Granted paths: expanding directories into `*.jsonl` / `*.json` files,
//! indexing the byte offsets of rows (JSON Lines, or the elements of a file
//! holding one JSON array) and reading one row back.

use lmmhost_sdk::rows::normalize;
use std::fs;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// A dataset file and its directory (relative image paths start there).
#[derive(Debug, Clone)]
pub struct DataFile {
    pub path: PathBuf,
    pub dir: PathBuf,
    pub kind: FileKind,
}

/// How rows are laid out in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// One JSON object per line (`.jsonl`, or a `.json` file not starting with `[`).
    Lines,
    /// One JSON array of objects (`.json` starting with `[`: OpenRLHF,
    /// LLaMA-Factory, ms-swift).
    Array,
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
/// contributes its `*.jsonl` and `*.json` files sorted by name, in place.
/// A grant that is an image root is not data. Also returns the granted
/// directories (images must live under one of them or an image root).
pub fn expand_grants(
    files: &[String],
    image_roots: &[PathBuf],
) -> Result<(Vec<DataFile>, Vec<PathBuf>), String> {
    let mut out = Vec::new();
    let mut dirs = Vec::new();
    for f in files {
        let p = PathBuf::from(f);
        // The image folders granted in `files` too (before the host grants
        // `images` apart) are not data; data files inside a root still are.
        if image_roots.iter().any(|r| normalize(&p) == *r) {
            continue;
        }
        let meta = fs::metadata(&p).map_err(|e| format!("{f}: {e}"))?;
        if meta.is_dir() {
            let mut names = Vec::new();
            for entry in fs::read_dir(&p).map_err(|e| format!("{f}: cannot list: {e}"))? {
                let entry = entry.map_err(|e| format!("{f}: cannot list: {e}"))?;
                let path = entry.path();
                let is_data = path
                    .extension()
                    .is_some_and(|x| x == "jsonl" || x == "json");
                if is_data && entry.file_type().is_ok_and(|t| !t.is_dir()) {
                    names.push(path);
                }
            }
            if names.is_empty() {
                return Err(format!(
                    "{f}: the granted directory has no *.jsonl or *.json files (a directory of images belongs in the dataset's `images`, not `files`)"
                ));
            }
            names.sort();
            for path in names {
                let kind = file_kind(&path)?;
                out.push(DataFile {
                    path,
                    dir: p.clone(),
                    kind,
                });
            }
            dirs.push(normalize(&p));
        } else {
            let dir = p.parent().map(Path::to_path_buf).unwrap_or_default();
            let kind = file_kind(&p)?;
            out.push(DataFile { path: p, dir, kind });
        }
    }
    if out.is_empty() {
        return Err(
            "loader-jsonl: no files granted (or only image roots); grant a .jsonl or .json file or a directory".into(),
        );
    }
    Ok((out, dirs))
}

/// A `.json` file whose first character (after a byte order mark and
/// whitespace) is `[` holds an array; anything else is read as JSON Lines.
fn file_kind(path: &Path) -> Result<FileKind, String> {
    if path.extension().is_none_or(|x| x != "json") {
        return Ok(FileKind::Lines);
    }
    let mut f = fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut head = [0u8; 4096];
    let n = f
        .read(&mut head)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let head = head[..n]
        .strip_prefix(b"\xEF\xBB\xBF")
        .unwrap_or(&head[..n]);
    Ok(match head.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => FileKind::Array,
        _ => FileKind::Lines,
    })
}

/// Indexes a file of either kind (see [`index_lines`] and [`index_array`]).
pub fn index_file(
    file_no: u32,
    file: &DataFile,
    on_row: impl FnMut(Row, &[u8]) -> Result<(), String>,
) -> Result<(), String> {
    match file.kind {
        FileKind::Lines => index_lines(file_no, &file.path, on_row),
        FileKind::Array => index_array(file_no, &file.path, on_row),
    }
}

/// Streams a file once, calling `on_row` with each row (non-blank line) and
/// its bytes. Streaming, not reading the whole file, keeps a multi-GB dataset
/// within the sandbox's memory cap. A UTF-8 byte order mark at the start is
/// skipped.
pub fn index_lines(
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

/// Streams a file holding one JSON array, calling `on_row` with each
/// element (its line is where the element starts). The array's structure
/// (brackets, commas, strings) is checked here, so a truncated file is an
/// error at `open`, naming the line where the unclosed element starts.
pub fn index_array(
    file_no: u32,
    path: &Path,
    mut on_row: impl FnMut(Row, &[u8]) -> Result<(), String>,
) -> Result<(), String> {
    let f = fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut reader = BufReader::with_capacity(1 << 20, f);
    let at = |line: u64| format!("{}:{line}", path.display());
    let (mut offset, mut line) = (0u64, 1u64);
    let mut state = ArrayState::Before;
    // The element being read: its start, line, bytes, nesting and string state.
    let (mut start, mut start_line) = (0u64, 0u64);
    let mut elem: Vec<u8> = Vec::new();
    let (mut depth, mut in_str, mut escaped) = (0usize, false, false);
    let mut count = 0u64;
    loop {
        let buf = reader
            .fill_buf()
            .map_err(|e| format!("{}: {e}", at(line)))?;
        if buf.is_empty() {
            break;
        }
        let n = buf.len();
        for (i, &b) in buf.iter().enumerate() {
            let pos = offset + i as u64;
            if pos < 3 && state == ArrayState::Before && b"\xEF\xBB\xBF"[pos as usize] == b {
                continue;
            }
            match state {
                ArrayState::Before => match b {
                    b'[' => state = ArrayState::Expect,
                    b if b.is_ascii_whitespace() => {}
                    _ => {
                        return Err(format!(
                            "{}: expected `[` to start the JSON array",
                            at(line)
                        ))
                    }
                },
                ArrayState::Expect | ArrayState::AfterComma => match b {
                    b']' if state == ArrayState::Expect && count == 0 => state = ArrayState::Done,
                    b if b.is_ascii_whitespace() => {}
                    b',' | b']' => {
                        return Err(format!("{}: missing element in the JSON array", at(line)))
                    }
                    _ => {
                        state = ArrayState::Elem;
                        (start, start_line) = (pos, line);
                        elem.clear();
                        elem.push(b);
                        (depth, in_str, escaped) =
                            (usize::from(matches!(b, b'{' | b'[')), b == b'"', false);
                    }
                },
                ArrayState::Elem => {
                    let ends = !in_str && depth == 0 && (b == b',' || b == b']');
                    if ends {
                        let text = trim_end(&elem);
                        let len = u32::try_from(text.len()).map_err(|_| {
                            format!("{}: the element is longer than 4 GiB", at(start_line))
                        })?;
                        let row = Row {
                            file: file_no,
                            line: start_line,
                            offset: start,
                            len,
                        };
                        on_row(row, text)?;
                        count += 1;
                        state = if b == b',' {
                            ArrayState::AfterComma
                        } else {
                            ArrayState::Done
                        };
                    } else {
                        elem.push(b);
                        if in_str {
                            match b {
                                _ if escaped => escaped = false,
                                b'\\' => escaped = true,
                                b'"' => in_str = false,
                                _ => {}
                            }
                        } else {
                            match b {
                                b'"' => in_str = true,
                                b'{' | b'[' => depth += 1,
                                b'}' | b']' if depth == 0 => {
                                    return Err(format!(
                                        "{}: unbalanced `{}` in the JSON array",
                                        at(line),
                                        b as char
                                    ))
                                }
                                b'}' | b']' => depth -= 1,
                                _ => {}
                            }
                        }
                    }
                }
                ArrayState::Done => {
                    if !b.is_ascii_whitespace() {
                        return Err(format!(
                            "{}: text after the end of the JSON array",
                            at(line)
                        ));
                    }
                }
            }
            if b == b'\n' {
                line += 1;
            }
        }
        reader.consume(n);
        offset += n as u64;
    }
    match state {
        ArrayState::Done => Ok(()),
        ArrayState::Before => Err(format!("{}: the file is empty; expected a JSON array", path.display())),
        ArrayState::Elem => Err(format!(
            "{}: the JSON array is not closed: the file ends inside element {} (which starts there)",
            at(start_line),
            count + 1
        )),
        ArrayState::Expect | ArrayState::AfterComma => Err(format!(
            "{}: the JSON array is not closed: the file ends after {count} elements without `]`",
            at(line)
        )),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ArrayState {
    Before,
    Expect,
    AfterComma,
    Elem,
    Done,
}

fn trim_end(b: &[u8]) -> &[u8] {
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    &b[..end]
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
        index_lines(7, &p, |row, bytes| {
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
        let e = index_lines(0, &p, |_, _| Err("stop".into())).unwrap_err();
        assert_eq!(e, "stop");
    }

    #[test]
    fn directory_grant_lists_jsonl_sorted() {
        let dir = tempfile::tempdir().unwrap();
        for n in ["b.jsonl", "a.jsonl", "notes.txt", "c.json"] {
            fs::write(dir.path().join(n), "{}\n").unwrap();
        }
        let (files, dirs) = expand_grants(&[dir.path().to_str().unwrap().to_owned()], &[]).unwrap();
        let names: Vec<_> = files
            .iter()
            .map(|f| f.path.file_name().unwrap().to_str().unwrap().to_owned())
            .collect();
        assert_eq!(names, vec!["a.jsonl", "b.jsonl", "c.json"]);
        assert!(files.iter().all(|f| f.kind == FileKind::Lines));
        assert_eq!(dirs, vec![dir.path().to_path_buf()]);
    }

    #[test]
    fn an_image_root_granted_as_a_file_is_not_data_but_files_inside_are() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("imgs");
        fs::create_dir_all(&root).unwrap();
        fs::write(root.join("t.jsonl"), "{}\n").unwrap();
        let s = |p: &Path| p.to_str().unwrap().to_owned();
        let e = expand_grants(&[s(&root)], std::slice::from_ref(&root)).unwrap_err();
        assert!(e.contains("no files granted"), "{e}");
        let (files, _) = expand_grants(
            &[s(&root.join("t.jsonl")), s(&root)],
            std::slice::from_ref(&root),
        )
        .unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].path, root.join("t.jsonl"));
    }

    fn array_rows(text: &[u8]) -> Result<Vec<(u64, String)>, String> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        fs::write(&p, text).unwrap();
        let mut rows = Vec::new();
        index_array(0, &p, |row, bytes| {
            let t = row_text(bytes, &row, &p)?.to_owned();
            assert_eq!(
                read_row(&p, &row).unwrap(),
                t,
                "offset and length locate the element"
            );
            rows.push((row.line, t));
            Ok(())
        })?;
        Ok(rows)
    }

    #[test]
    fn json_array_elements_with_lines_strings_and_nesting() {
        let text =
            b"\xEF\xBB\xBF[\n  {\"a\": \"x, ] } [\\\"\"},\n  {\"b\": [1, {\"c\": 2}]}\r\n]\n";
        let rows = array_rows(text).unwrap();
        assert_eq!(
            rows,
            vec![
                (2, "{\"a\": \"x, ] } [\\\"\"}".to_owned()),
                (3, "{\"b\": [1, {\"c\": 2}]}".to_owned())
            ]
        );
        assert_eq!(array_rows(b" [ ] ").unwrap(), vec![]);
    }

    #[test]
    fn broken_json_arrays_are_named_at_open() {
        let e = array_rows(b"[\n{\"a\": 1},\n{\"b\": [1, 2").unwrap_err();
        assert!(e.ends_with("a.json:3: the JSON array is not closed: the file ends inside element 2 (which starts there)"), "{e}");
        let e = array_rows(b"[{\"a\": 1},\n").unwrap_err();
        assert!(
            e.contains("a.json:2: the JSON array is not closed") && e.contains("after 1 elements"),
            "{e}"
        );
        let e = array_rows(b"[{\"a\": 1},,{}]").unwrap_err();
        assert!(e.contains("a.json:1: missing element"), "{e}");
        let e = array_rows(b"[{}]\n[{}]").unwrap_err();
        assert!(e.contains("a.json:2: text after the end"), "{e}");
        let e = array_rows(b"{\"a\": 1}").unwrap_err();
        assert!(e.contains("expected `[`"), "{e}");
        let e = array_rows(b"").unwrap_err();
        assert!(e.contains("empty"), "{e}");
    }
}
