//! The PNG plots of a run (`lmmhost plot RUN_DIR`, also written at the end of
//! every run): reward, accuracy, response length and KL over steps, one
//! series per stage, stage boundaries marked; evaluation accuracy per dataset.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::log::{read_records, StepRecord};
use super::plot::{render_png, Chart, Series};

/// (file stem, title, y label, metric key)
const CURVES: [(&str, &str, &str, &str); 5] = [
    ("reward", "Mean reward", "reward", "reward/mean"),
    ("accuracy", "Training accuracy", "accuracy", "accuracy"),
    (
        "length",
        "Mean response length",
        "tokens",
        "response_length/mean",
    ),
    ("kl", "KL to the reference", "KL", "kl"),
    ("sft_loss", "SFT loss", "NLL / token", "sft/loss"),
];

fn per_stage(records: &[StepRecord], key: &str) -> Vec<Series> {
    let mut stages: Vec<String> = Vec::new();
    let mut points: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for r in records {
        if let Some(v) = r.values.get(key).filter(|v| v.is_finite()) {
            if !stages.contains(&r.stage) {
                stages.push(r.stage.clone());
            }
            points
                .entry(r.stage.clone())
                .or_default()
                .push((r.step as f64, *v));
        }
    }
    stages
        .into_iter()
        .map(|s| Series {
            points: points.remove(&s).unwrap_or_default(),
            label: s,
        })
        .collect()
}

fn stage_markers(records: &[StepRecord]) -> Vec<(f64, String)> {
    let mut out = Vec::new();
    let mut last: Option<&str> = None;
    for r in records {
        if last != Some(r.stage.as_str()) {
            if last.is_some() {
                out.push((r.step as f64, r.stage.clone()));
            }
            last = Some(&r.stage);
        }
    }
    out
}

/// Writes the plots of `run_dir/metrics.jsonl` into `run_dir/plots/`; returns
/// the files written (curves without any data are skipped).
pub fn plot_run(run_dir: &Path) -> Result<Vec<PathBuf>> {
    let metrics = run_dir.join("metrics.jsonl");
    if !metrics.is_file() {
        bail!(
            "{} has no metrics.jsonl: is it a run directory (the experiment's output_dir)?",
            run_dir.display()
        );
    }
    let records = read_records(&metrics)?;
    let out_dir = run_dir.join("plots");
    std::fs::create_dir_all(&out_dir)?;
    let markers = stage_markers(&records);
    let mut written = Vec::new();
    for (stem, title, y, key) in CURVES {
        let series = per_stage(&records, key);
        if series.iter().all(|s| s.points.is_empty()) {
            continue;
        }
        let chart = Chart {
            title: title.to_string(),
            x_label: "step".into(),
            y_label: y.to_string(),
            series,
            markers: markers.clone(),
        };
        let path = out_dir.join(format!("{stem}.png"));
        render_png(&chart, &path, 900, 500)?;
        written.push(path);
    }
    // Evaluation accuracy: one series per evaluated dataset.
    let mut eval: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for r in &records {
        for (k, v) in &r.values {
            if let Some(ds) = k
                .strip_prefix("eval/")
                .and_then(|s| s.strip_suffix("/accuracy"))
            {
                eval.entry(ds.to_string())
                    .or_default()
                    .push((r.step as f64, *v));
            }
        }
    }
    if !eval.is_empty() {
        let chart = Chart {
            title: "Held-out accuracy".into(),
            x_label: "step".into(),
            y_label: "accuracy".into(),
            series: eval
                .into_iter()
                .map(|(label, points)| Series { label, points })
                .collect(),
            markers,
        };
        let path = out_dir.join("eval_accuracy.png");
        render_png(&chart, &path, 900, 500)?;
        written.push(path);
    }
    Ok(written)
}
