//! The PNG plots of a run (`lmmhost plot RUN_DIR`, also written at the end of
//! every run): reward, accuracy, response length and KL over steps, one
//! smoothed series per stage, stage boundaries marked; evaluation accuracy per
//! dataset; and a summary of held-out accuracy per dataset after each stage.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::bar_chart::{render_bars, BarChart};
use super::log::{read_records, StepRecord};
use super::plot::{render_png, Chart, Series, Style};

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

const WIDTH: u32 = 1200;
const HEIGHT: u32 = 650;
/// The summary picture's file name in `plots/`.
pub const SUMMARY_PNG: &str = "summary.png";

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
            style: Style::Smoothed,
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

/// The evaluations a run ends its stages with: the last evaluation of each
/// stage (and the one before training, named "start"), as (moment, step,
/// accuracy per dataset).
pub fn stage_evaluations(records: &[StepRecord]) -> Vec<(String, u64, BTreeMap<String, f64>)> {
    let mut out: Vec<(String, u64, BTreeMap<String, f64>)> = Vec::new();
    for r in records {
        let accuracy: BTreeMap<String, f64> = r
            .values
            .iter()
            .filter_map(|(k, v)| {
                let ds = k.strip_prefix("eval/")?.strip_suffix("/accuracy")?;
                Some((ds.to_string(), *v))
            })
            .collect();
        if accuracy.is_empty() {
            continue;
        }
        let moment = if r.stage.is_empty() {
            "start".to_string()
        } else {
            r.stage.clone()
        };
        // A later evaluation in the same stage replaces the earlier one.
        match out.last_mut() {
            Some(last) if last.0 == moment => *last = (moment, r.step, accuracy),
            _ => out.push((moment, r.step, accuracy)),
        }
    }
    out
}

/// The summary picture: held-out accuracy per dataset at the start and at the
/// end of each stage.
fn summary_chart(records: &[StepRecord]) -> Option<BarChart> {
    let evals = stage_evaluations(records);
    let datasets: Vec<String> = evals
        .iter()
        .flat_map(|e| e.2.keys().cloned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if evals.is_empty() {
        return None;
    }
    Some(BarChart {
        title: "Held-out accuracy after each stage".into(),
        y_label: "accuracy".into(),
        groups: evals
            .iter()
            .map(|(moment, step, _)| format!("{moment}\nstep {step}"))
            .collect(),
        series: datasets
            .iter()
            .map(|ds| {
                (
                    ds.clone(),
                    evals.iter().map(|e| e.2.get(ds).copied()).collect(),
                )
            })
            .collect(),
        y_max: 1.0,
    })
}

/// Writes the plots of `run_dir/metrics.jsonl` into `run_dir/plots/`; returns
/// the files written (curves without any data are skipped). The summary
/// picture, when the run evaluated, is `plots/summary.png`.
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
        render_png(&chart, &path, WIDTH, HEIGHT)?;
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
                .map(|(label, points)| Series {
                    label,
                    points,
                    style: Style::Points,
                })
                .collect(),
            markers,
        };
        let path = out_dir.join("eval_accuracy.png");
        render_png(&chart, &path, WIDTH, HEIGHT)?;
        written.push(path);
    }
    if let Some(chart) = summary_chart(&records) {
        let path = out_dir.join(SUMMARY_PNG);
        render_bars(&chart, &path, WIDTH, HEIGHT)?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(step: u64, stage: &str, values: &[(&str, f64)]) -> StepRecord {
        StepRecord {
            step,
            stage: stage.into(),
            kind: "eval".into(),
            stage_step: 0,
            values: values.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        }
    }

    #[test]
    fn the_summary_takes_each_stages_last_evaluation() {
        let records = vec![
            record(
                0,
                "",
                &[("eval/img/accuracy", 0.0), ("eval/txt/accuracy", 0.1)],
            ),
            record(5, "sft", &[("reward/mean", 0.3)]),
            record(10, "sft", &[("eval/img/accuracy", 0.1)]),
            record(
                20,
                "sft",
                &[("eval/img/accuracy", 0.2), ("eval/txt/accuracy", 0.4)],
            ),
            record(
                30,
                "mgt",
                &[("eval/img/accuracy", 0.5), ("eval/txt/accuracy", 0.35)],
            ),
        ];
        let evals = stage_evaluations(&records);
        let moments: Vec<(&str, u64)> = evals.iter().map(|e| (e.0.as_str(), e.1)).collect();
        assert_eq!(moments, vec![("start", 0), ("sft", 20), ("mgt", 30)]);
        let chart = summary_chart(&records).unwrap();
        assert_eq!(
            chart.groups,
            vec!["start\nstep 0", "sft\nstep 20", "mgt\nstep 30"]
        );
        assert_eq!(
            chart.series,
            vec![
                ("img".to_string(), vec![Some(0.0), Some(0.2), Some(0.5)]),
                ("txt".to_string(), vec![Some(0.1), Some(0.4), Some(0.35)]),
            ]
        );
    }
}
