//! The loader: index rows at `open`, parse one row per `get`.

use crate::files::{expand_grants, index_file, read_row, row_text, DataFile, Row};
use lmmhost_sdk::rows::{parse_json_row, Config, RowCtx};
use lmmhost_sdk::{DatasetInfo, Loader, Sample};
use std::path::PathBuf;

pub struct JsonlLoader {
    config: Config,
    files: Vec<DataFile>,
    granted: Vec<PathBuf>,
    rows: Vec<Row>,
}

impl JsonlLoader {
    fn parse(&self, row: &Row, text: &str) -> Result<Sample, String> {
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
        parse_json_row(text, &ctx).map_err(|e| format!("{}:{}: {e}", file.path.display(), row.line))
    }
}

impl Loader for JsonlLoader {
    fn open(config: &str, files: &[String]) -> Result<(Self, DatasetInfo), String> {
        let config = Config::parse("loader-jsonl", config)?;
        let (files, granted) = expand_grants(files)?;
        let mut loader = JsonlLoader {
            config,
            files,
            granted,
            rows: Vec::new(),
        };
        let mut skipped = 0u64;
        let mut notes = Vec::new();
        for i in 0..loader.files.len() {
            let path = loader.files[i].path.clone();
            let file_no = u32::try_from(i).map_err(|_| "too many files".to_owned())?;
            let cfg_skip = loader.config.skip_bad_rows;
            let max_notes = loader.config.max_notes;
            let mut rows = Vec::new();
            index_file(file_no, &path, |row, bytes| {
                if !cfg_skip {
                    // Rows are parsed lazily in `get`; a bad one is an error there.
                    rows.push(row);
                    return Ok(());
                }
                // Skipping needs to know which rows are bad, so parse them all now.
                match row_text(bytes, &row, &path).and_then(|t| loader.parse(&row, t)) {
                    Ok(_) => rows.push(row),
                    Err(e) => {
                        skipped += 1;
                        if notes.len() < max_notes {
                            notes.push(format!("skipped {e}"));
                        }
                    }
                }
                Ok(())
            })?;
            loader.rows.extend(rows);
        }
        if skipped > 0 {
            lmmhost_sdk::log::warn(
                "loader-jsonl skipped malformed rows",
                &[("count", &skipped.to_string())],
            );
        }
        if loader.rows.is_empty() {
            let why = notes
                .first()
                .map(|n| format!(" (first: {n})"))
                .unwrap_or_default();
            return Err(format!(
                "loader-jsonl: no usable rows in the granted files ({skipped} skipped){why}"
            ));
        }
        let info = DatasetInfo {
            len: loader.rows.len() as u64,
            skipped_rows: skipped,
            notes,
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
