//! The run's metrics: one JSON line per step in `metrics.jsonl` (the record of
//! truth, read back by `lmmhost plot` and by resume), mirrored into
//! TensorBoard event files.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::tensorboard::EventWriter;

/// One step's record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepRecord {
    pub step: u64,
    pub stage: String,
    pub kind: String,
    pub stage_step: u64,
    /// Every scalar of the step by name (`reward/mean`, `time/rollout`, ...).
    #[serde(deserialize_with = "nan_for_null")]
    pub values: BTreeMap<String, f64>,
}

/// JSON has no NaN or infinities: serde writes them as `null`, read back as
/// NaN (a metric that was not a number), not as a broken record.
fn nan_for_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<String, f64>, D::Error> {
    let values = BTreeMap::<String, Option<f64>>::deserialize(d)?;
    Ok(values
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or(f64::NAN)))
        .collect())
}

pub struct MetricsLog {
    path: PathBuf,
    tb: Option<EventWriter>,
    /// Counts records without writing them: a data-parallel rank other than
    /// 0, whose records rank 0 writes.
    discard: bool,
    /// Records in the file (a checkpoint stores it; resume keeps that many).
    pub records: usize,
    /// Records a resumed run expected to keep but did not find (the file
    /// was deleted or cut short since the checkpoint).
    pub missing: usize,
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl MetricsLog {
    /// Opens `dir/metrics.jsonl`, keeping its first `keep` records (a resumed
    /// run rewrites what came after its checkpoint); `None` starts afresh.
    pub fn open(dir: &Path, tensorboard: bool, keep: Option<usize>) -> Result<MetricsLog> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join("metrics.jsonl");
        let kept: Vec<StepRecord> = match keep {
            Some(n) if path.exists() => read_first_records(&path, n)?,
            _ => Vec::new(),
        };
        let mut f = std::fs::File::create(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        for r in &kept {
            serde_json::to_writer(&mut f, r)?;
            writeln!(f).with_context(|| format!("cannot write {}", path.display()))?;
        }
        let tb = if tensorboard {
            Some(EventWriter::create(&dir.join("tensorboard"), now())?)
        } else {
            None
        };
        Ok(MetricsLog {
            path,
            tb,
            discard: false,
            records: kept.len(),
            missing: keep.map_or(0, |n| n.saturating_sub(kept.len())),
        })
    }

    /// A log that writes nothing, counting from `keep` records (what rank 0's
    /// log holds).
    pub fn discard(dir: &Path, keep: Option<usize>) -> MetricsLog {
        MetricsLog {
            path: dir.join("metrics.jsonl"),
            tb: None,
            discard: true,
            records: keep.unwrap_or(0),
            missing: 0,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn write(&mut self, r: &StepRecord) -> Result<()> {
        if self.discard {
            self.records += 1;
            return Ok(());
        }
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.path)
            .with_context(|| format!("cannot open {}", self.path.display()))?;
        let mut line = serde_json::to_string(r)?;
        line.push('\n');
        f.write_all(line.as_bytes())
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        self.records += 1;
        if let Some(tb) = self.tb.as_mut() {
            let values: Vec<(String, f64)> = r
                .values
                .iter()
                .map(|(k, v)| (format!("{}/{k}", r.stage), *v))
                .chain(r.values.iter().map(|(k, v)| (k.clone(), *v)))
                .collect();
            let refs: Vec<(&str, f64)> = values.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            tb.scalars(r.step as i64, now(), &refs)?;
            tb.flush()?;
        }
        Ok(())
    }
}

/// The first `n` records of a metrics.jsonl file; what follows them (a line
/// torn by a kill, records after the checkpoint) is not read.
fn read_first_records(path: &Path, n: usize) -> Result<Vec<StepRecord>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .take(n)
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{}:{}: not a metrics record", path.display(), i + 1))
        })
        .collect()
}

/// Reads a metrics.jsonl file; a bad line is an error naming its number.
pub fn read_records(path: &Path) -> Result<Vec<StepRecord>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{}:{}: not a metrics record", path.display(), i + 1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A metric that is not a number is written as JSON's `null` and read
    /// back as NaN; the record stays readable.
    #[test]
    fn a_metric_that_is_not_a_number_reads_back_as_nan() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        let record = StepRecord {
            step: 1,
            stage: "rl".into(),
            kind: "grpo".into(),
            stage_step: 1,
            values: [("loss".to_string(), f64::NAN), ("lr".to_string(), 1e-3)].into(),
        };
        std::fs::write(&path, serde_json::to_string(&record).unwrap()).unwrap();
        let back = read_records(&path).unwrap();
        assert!(back[0].values["loss"].is_nan());
        assert_eq!(back[0].values["lr"], 1e-3);
    }
}
