//! lmmhost loader plugin for Hugging Face style Parquet datasets (EasyR1 and
//! verl layouts, images as `{bytes, path}` structs). Reference: README.md.
//!
//! Each record is converted to the JSON object it stands for (binary columns
//! as base64) and parsed by the SDK's shared `lmmhost_sdk::rows`, exactly as
//! loader-jsonl parses its lines (EasyR1, verl, chat traces, LMM-R1).
//!
//! Random access: `open` reads every row group once to validate the rows and
//! remember where each valid row lies; `get` decodes the row group holding the
//! row and keeps the last one decoded, so reading in order decodes each row
//! group once.

mod source;

use lmmhost_sdk::rows::{image_roots, normalize, parse_row, Config, RowCtx, SkipTally};
use lmmhost_sdk::{DatasetInfo, Loader, Sample};
use parquet::file::reader::{FileReader, SerializedFileReader};
use serde_json::Value;
use source::PathSource;
use std::cell::RefCell;
use std::path::{Path, PathBuf};

struct DataFile {
    path: PathBuf,
    dir: PathBuf,
    name: String,
    reader: SerializedFileReader<PathSource>,
}

#[derive(Clone, Copy)]
struct RowPos {
    file: u32,
    group: u32,
    /// Row index within the row group.
    row: u32,
    /// Row index within the file (0-based), for ids and messages.
    file_row: u64,
}

/// (file, row group) and its decoded rows: the last row group `get` read.
type CachedGroup = ((u32, u32), Vec<Value>);

pub struct ParquetLoader {
    config: Config,
    files: Vec<DataFile>,
    /// Granted directories: image paths must lie inside one of them.
    granted: Vec<PathBuf>,
    rows: Vec<RowPos>,
    cache: RefCell<Option<CachedGroup>>,
}

/// Granted paths expanded to files (a directory means all `*.parquet` in it,
/// sorted), and the granted directories. A grant that is an image root is
/// not data.
fn expand(files: &[String], roots: &[PathBuf]) -> Result<(Vec<PathBuf>, Vec<PathBuf>), String> {
    let mut out = Vec::new();
    let mut dirs = Vec::new();
    for f in files {
        let p = Path::new(f);
        // An image folder granted in `files` too is not data.
        if roots.iter().any(|r| normalize(p) == *r) {
            continue;
        }
        let meta = std::fs::metadata(p).map_err(|e| format!("{f}: cannot open: {e}"))?;
        if meta.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| format!("{f}: cannot list directory: {e}"))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "parquet") && p.is_file())
                .collect();
            found.sort();
            if found.is_empty() {
                return Err(format!(
                    "{f}: directory holds no *.parquet file (a directory of images belongs in the dataset's `images`, not `files`)"
                ));
            }
            out.extend(found);
            dirs.push(normalize(p));
        } else {
            out.push(p.to_path_buf());
        }
    }
    if out.is_empty() {
        return Err("no dataset files granted (`files` is empty)".into());
    }
    Ok((out, dirs))
}

fn read_group(f: &DataFile, group: u32) -> Result<Vec<Value>, String> {
    let rg = f
        .reader
        .get_row_group(group as usize)
        .map_err(|e| format!("{}: row group {group}: {e}", f.path.display()))?;
    let iter = rg
        .get_row_iter(None)
        .map_err(|e| format!("{}: row group {group}: {e}", f.path.display()))?;
    iter.map(|r| {
        r.map(|row| row.to_json_value()).map_err(|e| {
            format!(
                "{}: row group {group}: cannot decode: {e}",
                f.path.display()
            )
        })
    })
    .collect()
}

impl ParquetLoader {
    /// `<file>: row <n> (row group <g>, row <r>)`, rows counted from 1.
    fn location(&self, pos: RowPos) -> String {
        format!(
            "{}: row {} (row group {}, row {})",
            self.files[pos.file as usize].path.display(),
            pos.file_row + 1,
            pos.group,
            pos.row + 1
        )
    }

    /// The row's sample, or its problem (without the location).
    fn parse_bare(&self, pos: RowPos, value: Value) -> Result<Sample, String> {
        let f = &self.files[pos.file as usize];
        // Default ids use the 1-based row number, like lines in the JSONL loader.
        let ctx = RowCtx {
            config: &self.config,
            base: &f.dir,
            granted: &self.granted,
            default_id: format!("{}:{}", f.name, pos.file_row + 1),
        };
        parse_row(value, &ctx)
    }

    fn parse(&self, pos: RowPos, value: Value) -> Result<Sample, String> {
        self.parse_bare(pos, value)
            .map_err(|e| format!("{}: {e}", self.location(pos)))
    }
}

impl Loader for ParquetLoader {
    fn open(config: &str, files: &[String]) -> Result<(Self, DatasetInfo), String> {
        let config = Config::parse("loader-parquet", config)?;
        let roots = image_roots(&config.image_roots)?;
        let (paths, mut granted) = expand(files, &roots)?;
        granted.extend(roots);
        let mut loader = ParquetLoader {
            config,
            files: Vec::new(),
            granted,
            rows: Vec::new(),
            cache: RefCell::new(None),
        };
        let mut skips = SkipTally::new(loader.config.max_notes);
        for (fi, path) in paths.into_iter().enumerate() {
            let file = PathSource::open(&path)?;
            let reader = SerializedFileReader::new(file)
                .map_err(|e| format!("{}: not a readable Parquet file: {e}", path.display()))?;
            let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            loader.files.push(DataFile {
                path,
                dir,
                name,
                reader,
            });
            let df = &loader.files[fi];
            let mut file_row = 0u64;
            for group in 0..df.reader.num_row_groups() as u32 {
                for (row, value) in read_group(df, group)?.into_iter().enumerate() {
                    let pos = RowPos {
                        file: fi as u32,
                        group,
                        row: row as u32,
                        file_row,
                    };
                    file_row += 1;
                    match loader.parse_bare(pos, value) {
                        Ok(_) => loader.rows.push(pos),
                        Err(e) if loader.config.skip_bad_rows => {
                            skips.add(&loader.location(pos), &e)
                        }
                        Err(e) => return Err(format!("{}: {e}", loader.location(pos))),
                    }
                }
            }
        }
        for (class, n) in skips.classes() {
            lmmhost_sdk::log::warn(
                "loader-parquet skipped malformed rows",
                &[("count", &n.to_string()), ("reason", &class)],
            );
        }
        if loader.rows.is_empty() {
            let why = skips
                .first()
                .map(|n| format!(" (first: {n})"))
                .unwrap_or_default();
            return Err(format!(
                "loader-parquet: dataset has no usable rows ({} skipped){why}",
                skips.count
            ));
        }
        let info = DatasetInfo {
            len: loader.rows.len() as u64,
            skipped_rows: skips.count,
            notes: skips.notes(),
        };
        Ok((loader, info))
    }

    fn get(&self, index: u64) -> Result<Sample, String> {
        let pos = *usize::try_from(index)
            .ok()
            .and_then(|i| self.rows.get(i))
            .ok_or_else(|| {
                format!(
                    "sample index {index} out of range (dataset has {} rows)",
                    self.rows.len()
                )
            })?;
        let key = (pos.file, pos.group);
        let mut cache = self.cache.borrow_mut();
        if cache.as_ref().is_none_or(|(k, _)| *k != key) {
            *cache = Some((key, read_group(&self.files[pos.file as usize], pos.group)?));
        }
        let value = cache
            .as_ref()
            .and_then(|(_, rows)| rows.get(pos.row as usize).cloned())
            .ok_or_else(|| {
                format!(
                    "row {} of row group {} vanished since open",
                    pos.row, pos.group
                )
            })?;
        drop(cache);
        self.parse(pos, value)
    }
}

// Only in the component: the export symbols' names are not valid in a native
// shared library (the crate is also a cdylib for the wasm build).
#[cfg(target_arch = "wasm32")]
lmmhost_sdk::export_loader!(ParquetLoader);

#[cfg(test)]
mod tests;
