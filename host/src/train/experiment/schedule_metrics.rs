//! The eval metrics a schedule's `advance_when` conditions read, checked
//! before training against those the experiment's `[eval]` produces. An eval
//! metric is reported at eval steps only, so the schedule cannot tell a
//! misspelt one from one not due yet, and the stage would never advance
//! early. Other metrics the schedule checks itself once the first step
//! reports them (reward components are known only then).
//!
//! The conditions are read where the staged schedule keeps them:
//! `[[stages]]` with `advance_when = { metric = ... }`, in `schedule.file`
//! merged over the schedule plugin's `config`.

use super::load::merge_tables;
use super::schema::Experiment;

impl Experiment {
    /// The metrics each evaluation reports: `eval/<dataset>/accuracy`,
    /// `reward`, `length` and `pass@k` for every k of `eval.pass_k`.
    pub fn eval_metric_names(&self) -> Vec<String> {
        let Some(e) = &self.eval else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for ds in &e.datasets {
            for m in ["accuracy", "reward", "length"] {
                out.push(format!("eval/{ds}/{m}"));
            }
            for k in &e.pass_k {
                out.push(format!("eval/{ds}/pass@{k}"));
            }
        }
        out
    }

    /// One problem per stage whose `advance_when.metric` is an eval metric
    /// this experiment never reports.
    pub(super) fn schedule_metric_problems(&self) -> Vec<String> {
        let Some(entry) = self.plugins.get(&self.schedule.plugin) else {
            return Vec::new(); // reported as an unknown plugin
        };
        let (mut config, mut source) = (
            entry.config.clone(),
            format!("plugins.{}.config", self.schedule.plugin),
        );
        if let Some(f) = &self.schedule.file {
            // An unreadable file is reported by the file check or at plugin start.
            let Some(table) = std::fs::read_to_string(f)
                .ok()
                .and_then(|t| t.parse::<toml::Table>().ok())
            else {
                return Vec::new();
            };
            config = merge_tables(&config, &table);
            source = format!("schedule.file {}", f.display());
        }
        let Some(stages) = config.get("stages").and_then(|s| s.as_array()) else {
            return Vec::new();
        };
        let known = self.eval_metric_names();
        let mut problems = Vec::new();
        for (i, stage) in stages.iter().enumerate() {
            let metric = stage
                .get("advance_when")
                .and_then(|a| a.get("metric"))
                .and_then(|m| m.as_str());
            let Some(metric) = metric.filter(|m| m.starts_with("eval/")) else {
                continue;
            };
            if known.iter().any(|k| k == metric) {
                continue;
            }
            let stage_name = stage
                .get("name")
                .and_then(|n| n.as_str())
                .map_or_else(|| format!("stage {}", i + 1), |n| format!("stage {n:?}"));
            let reported = if known.is_empty() {
                "none: the experiment has no [eval] datasets".to_string()
            } else {
                known.join(", ")
            };
            problems.push(format!(
                "{source}: {stage_name}: advance_when.metric = {metric:?} is not an eval metric this experiment reports, so the stage could never advance early; eval metrics reported: {reported}"
            ));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_files::setup;
    use super::*;

    const STAGES: &str = r#"
[[stages]]
name = "warmup"
kind = "grpo"
datasets = { train = 1.0 }
steps = 10
advance_when = { metric = "eval/train/acuracy", over_last = 1, at_least = 0.5 }

[[stages]]
name = "main"
kind = "grpo"
datasets = { train = 1.0 }
steps = 10
advance_when = { metric = "eval/train/pass@4", over_last = 1, at_least = 0.5 }

[[stages]]
name = "tail"
kind = "grpo"
datasets = { train = 1.0 }
steps = 10
advance_when = { metric = "reward/mean", over_last = 1, at_least = 0.5 }
"#;

    fn error_with(eval: &str) -> String {
        let (dir, path) = setup(&format!("file = \"sched.toml\"\n{eval}"));
        std::fs::write(dir.path().join("sched.toml"), STAGES).unwrap();
        format!("{:#}", Experiment::load(&path).unwrap_err())
    }

    #[test]
    fn an_eval_metric_no_eval_set_reports_is_refused_with_the_known_names() {
        let sched = "schedule.file ";
        let msg = error_with("[eval]\ndatasets = [\"train\"]\npass_k = [1, 2]\n");
        assert!(
            msg.contains(sched)
                && msg.contains("sched.toml: stage \"warmup\": advance_when.metric = \"eval/train/acuracy\" is not an eval metric this experiment reports")
                && msg.contains("eval metrics reported: eval/train/accuracy, eval/train/reward, eval/train/length, eval/train/pass@1, eval/train/pass@2"),
            "{msg}"
        );
        // pass@4 needs eval.pass_k to hold 4; reward/mean is not an eval metric.
        assert!(
            msg.contains("stage \"main\": advance_when.metric = \"eval/train/pass@4\""),
            "{msg}"
        );
        assert!(!msg.contains("stage \"tail\""), "{msg}");
        let msg = error_with("");
        assert!(
            msg.contains("eval metrics reported: none: the experiment has no [eval] datasets"),
            "{msg}"
        );
    }

    #[test]
    fn eval_metrics_the_eval_sets_report_pass() {
        let (dir, path) = setup(
            "file = \"sched.toml\"\n[eval]\ndatasets = [\"train\"]\npass_k = [1, 4]\nsamples = 4\ngreedy = false\n",
        );
        let fixed = STAGES.replace("acuracy", "accuracy");
        std::fs::write(dir.path().join("sched.toml"), fixed).unwrap();
        let exp = Experiment::load(&path).unwrap();
        assert!(exp.schedule_metric_problems().is_empty());
    }
}
