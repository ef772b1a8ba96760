//! The loader: index rows at `open` (and, by default, parse each once so a
//! malformed row is reported before training), parse one row per `get`.

use crate::files::{expand_grants, index_file, read_row, DataFile, Row};
use lmmhost_sdk::rows::{image_roots, parse_json_row, Config, RowCtx, SkipTally};
use lmmhost_sdk::{DatasetInfo, Loader, Sample};
use std::path::PathBuf;

pub struct JsonlLoader {
    config: Config,
    files: Vec<DataFile>,
    /// Granted directories and image roots.
    granted: Vec<PathBuf>,
    rows: Vec<Row>,
}

impl JsonlLoader {
    /// `<file>:<line>` of a row.
    fn location(&self, row: &Row) -> String {
        format!(
            "{}:{}",
            self.files[row.file as usize].path.display(),
            row.line
        )
    }

    /// The row's sample, or its problem (without the location).
    fn parse_bare(&self, row: &Row, text: &str) -> Result<Sample, String> {
        let file = &self.files[row.file as usize];
        let stem = file
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let ctx = RowCtx {
            config: &self.config,
            base: &file.dir,
            granted: &self.granted,
            default_id: format!("{stem}:{}", row.line),
        };
        parse_json_row(text, &ctx)
    }

    fn parse(&self, row: &Row, text: &str) -> Result<Sample, String> {
        self.parse_bare(row, text)
            .map_err(|e| format!("{}: {e}", self.location(row)))
    }
}

impl Loader for JsonlLoader {
    fn open(config: &str, files: &[String]) -> Result<(Self, DatasetInfo), String> {
        let config = Config::parse("loader-jsonl", config)?;
        let roots = image_roots(&config.image_roots)?;
        let (files, mut granted) = expand_grants(files, &roots)?;
        granted.extend(roots);
        let mut loader = JsonlLoader {
            config,
            files,
            granted,
            rows: Vec::new(),
        };
        let skip = loader.config.skip_bad_rows;
        let validate = skip || loader.config.validate_at_open;
        let mut skips = SkipTally::new(loader.config.max_notes);
        for i in 0..loader.files.len() {
            let file_no = u32::try_from(i).map_err(|_| "too many files".to_owned())?;
            let mut rows = Vec::new();
            index_file(file_no, &loader.files[i], |row, bytes| {
                if !validate {
                    rows.push(row);
                    return Ok(());
                }
                let checked = std::str::from_utf8(bytes)
                    .map_err(|e| format!("not valid UTF-8: {e}"))
                    .and_then(|t| loader.parse_bare(&row, t));
                match checked {
                    Ok(_) => rows.push(row),
                    Err(e) if skip => skips.add(&loader.location(&row), &e),
                    Err(e) => return Err(format!("{}: {e}", loader.location(&row))),
                }
                Ok(())
            })?;
            loader.rows.extend(rows);
        }
        if skips.count > 0 {
            for (class, n) in skips.classes() {
                lmmhost_sdk::log::warn(
                    "loader-jsonl skipped malformed rows",
                    &[("count", &n.to_string()), ("reason", &class)],
                );
            }
        }
        if loader.rows.is_empty() {
            let why = skips
                .first()
                .map(|n| format!(" (first: {n})"))
                .unwrap_or_default();
            return Err(format!(
                "loader-jsonl: no usable rows in the granted files ({} skipped){why}",
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
        let row = usize::try_from(index)
            .ok()
            .and_then(|i| self.rows.get(i))
            .ok_or_else(|| {
                format!(
                    "loader-jsonl: index {index} is out of range (len {})",
                    self.rows.len()
                )
            })?;
        let path = &self.files[row.file as usize].path;
        let text = read_row(path, row)?;
        self.parse(row, &text)
    }
}
