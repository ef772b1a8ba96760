//! What a run shows while it trains: the step bar and the lines above it.

use indicatif::{ProgressBar, ProgressStyle};

use super::experiment::Experiment;

/// A line above the progress bar, or on stderr when the bar is not drawn.
pub(crate) fn say(bar: &ProgressBar, msg: impl AsRef<str>) {
    if bar.is_hidden() {
        eprintln!("{}", msg.as_ref());
    } else {
        bar.println(msg);
    }
}

/// The run's step bar (rate and ETA when the step count is known), hidden
/// when `logging.progress` is off.
pub(crate) fn progress_bar(exp: &Experiment) -> ProgressBar {
    if !exp.logging.progress {
        return ProgressBar::hidden();
    }
    let bar = match exp.logging.total_steps {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    let template = if exp.logging.total_steps.is_some() {
        "{bar:30} {pos}/{len} steps [{elapsed_precise} < {eta_precise}, {per_sec}] {msg}"
    } else {
        "{spinner} step {pos} [{elapsed_precise}, {per_sec}] {msg}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}
