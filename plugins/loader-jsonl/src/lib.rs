//! lmmhost loader plugin for JSONL datasets: LMM-R1 / OpenRLHF, EasyR1 / R1-V
//! and chat SFT traces. Reference: docs/loaders.md.
//!
//! `open` reads every granted file once, validating each row and remembering
//! where its line lies; `get` re-reads and parses one line, so memory grows
//! with the number of rows (20 bytes each), not with their size.

pub mod config;
pub mod index;
pub mod rows;

use config::Config;
use index::RowPos;
use lmmhost_sdk::{DatasetInfo, Loader, Sample};
use rows::RowCtx;
use std::cell::RefCell;
use std::fs::File;
use std::path::{Path, PathBuf};

struct DataFile {
    path: PathBuf,
    dir: PathBuf,
    name: String,
    handle: RefCell<File>,
}

pub struct JsonlLoader {
    config: Config,
    files: Vec<DataFile>,
    rows: Vec<RowPos>,
}

impl JsonlLoader {
    fn parse_at(&self, pos: RowPos, text: &[u8]) -> Result<Sample, String> {
        let f = &self.files[pos.file as usize];
        let ctx = RowCtx {
            dir: &f.dir,
            file_name: &f.name,
            line: pos.line,
        };
        rows::parse_row(&self.config, &ctx, text)
            .map_err(|e| format!("{}:{}: {e}", f.path.display(), pos.line))
    }
}

impl Loader for JsonlLoader {
    fn open(config: &str, files: &[String]) -> Result<(Self, DatasetInfo), String> {
        let config = Config::parse(config)?;
        let paths = index::expand(files)?;
        let mut loader = JsonlLoader {
            config,
            files: Vec::new(),
            rows: Vec::new(),
        };
        let (mut skipped, mut notes) = (0u64, Vec::new());
        for (fi, path) in paths.into_iter().enumerate() {
            let handle =
                File::open(&path).map_err(|e| format!("{}: cannot open: {e}", path.display()))?;
            let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            loader.files.push(DataFile {
                path: path.clone(),
                dir,
                name,
                handle: RefCell::new(handle),
            });
            let mut first_err = None;
            index::scan(&path, |line, offset, text| {
                if first_err.is_some() {
                    return;
                }
                let pos = RowPos {
                    file: fi as u32,
                    line,
                    offset,
                    len: text.len() as u32,
                };
                match loader.parse_at(pos, text) {
                    Ok(_) => loader.rows.push(pos),
                    Err(e) if loader.config.skip_bad_rows => {
                        skipped += 1;
                        if notes.len() < loader.config.max_notes {
                            notes.push(format!("skipped {e}"));
                        }
                    }
                    Err(e) => first_err = Some(e),
                }
            })?;
            if let Some(e) = first_err {
                return Err(e);
            }
        }
        if loader.rows.is_empty() {
            return Err(format!("dataset has no usable rows ({skipped} skipped)"));
        }
        let info = DatasetInfo {
            len: loader.rows.len() as u64,
            skipped_rows: skipped,
            notes,
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
        let f = &self.files[pos.file as usize];
        let text = index::read_at(&mut f.handle.borrow_mut(), pos.offset, pos.len)
            .map_err(|e| format!("{}:{}: read error: {e}", f.path.display(), pos.line))?;
        self.parse_at(pos, &text)
    }
}

#[cfg(feature = "component")]
lmmhost_sdk::export_loader!(JsonlLoader);

#[cfg(test)]
mod tests;
