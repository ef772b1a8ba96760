//! `lmmhost data`: what the experiment's loaders produce, before any GPU
//! hour is spent (see docs/loaders.md).

use std::fmt::Write;
use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use lmmhost::train::dataset_report::{report, DatasetReport, Finding, Options, Report};
use lmmhost::train::experiment::Experiment;

#[derive(Args)]
pub struct DataArgs {
    /// The experiment file.
    experiment: PathBuf,
    /// Override a key of the experiment file, `KEY=VALUE` (repeatable),
    /// e.g. `--set rollout.max_prompt_tokens=2048`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Samples shown in full per dataset (the first ones).
    #[arg(long, default_value_t = 3)]
    samples: usize,
    /// Look at one dataset only.
    #[arg(long)]
    dataset: Option<String>,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Prints the report; fails (exit code 1, after the report) when a run
/// would refuse a dataset or stop on a sample.
pub fn run(args: DataArgs) -> Result<()> {
    let exp = Experiment::load_with_sets(&args.experiment, &args.sets)?;
    let r = report(
        &exp,
        &Options {
            samples: args.samples,
            dataset: args.dataset.clone(),
            progress: std::io::stderr().is_terminal(),
        },
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", text(&r));
    }
    let blocking = r.blocking();
    if blocking > 0 {
        bail!(
            "{blocking} problem(s) would stop a run of {}: see \"refused\" above",
            args.experiment.display()
        );
    }
    Ok(())
}

/// The report for a terminal.
pub fn text(r: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "model       {}", r.model);
    let _ = writeln!(o, "template    {}", r.chat_template);
    let _ = writeln!(
        o,
        "limits      rollout.max_prompt_tokens = {}, sft.max_tokens = {}",
        r.max_prompt_tokens, r.sft_max_tokens
    );
    for d in &r.datasets {
        o.push('\n');
        dataset(&mut o, d);
    }
    o
}

fn dataset(o: &mut String, d: &DatasetReport) {
    let _ = writeln!(o, "== dataset {} (loader {})", d.name, d.loader);
    if !d.files.is_empty() {
        let _ = writeln!(o, "files       {}", d.files.join(", "));
    }
    if !d.images.is_empty() {
        let _ = writeln!(o, "images      {}", d.images.join(", "));
    }
    let _ = writeln!(
        o,
        "samples     {} ({} rows skipped by the loader)",
        d.samples, d.loader_skipped_rows
    );
    for n in &d.loader_notes {
        let _ = writeln!(o, "  loader: {n}");
    }
    if let Some(e) = &d.error {
        let _ = writeln!(o, "refused     {e}");
        return;
    }
    let _ = writeln!(
        o,
        "            {} with images ({} images), {} without a reference answer",
        d.samples_with_images, d.image_count, d.without_answer
    );
    for (what, s) in [
        ("prompts", &d.prompt_tokens),
        ("SFT convs", &d.conversation_tokens),
    ] {
        if let Some(s) = s {
            let _ = writeln!(
                o,
                "{what:<11} {} measured, tokens min {} / mean {:.1} / max {}",
                s.count, s.min, s.mean, s.max
            );
        }
    }
    for s in &d.shown {
        let _ = writeln!(o, "\n-- sample {} (id {})", s.index, s.id);
        for (i, img) in s.images.iter().enumerate() {
            let _ = writeln!(
                o,
                "image {i}     {} {}x{} -> {}x{}, {} tokens",
                img.source,
                img.width,
                img.height,
                img.resized_width,
                img.resized_height,
                img.tokens
            );
        }
        let _ = write!(
            o,
            "tokens      prompt {} ({} image tokens)",
            s.prompt_tokens, s.image_tokens
        );
        match s.conversation_tokens {
            Some(n) => {
                let _ = writeln!(o, ", whole conversation {n}");
            }
            None => o.push('\n'),
        }
        let _ = writeln!(o, "answer      {}", s.answer.as_deref().unwrap_or("(none)"));
        if let Some(w) = &s.worked_answer {
            let _ = writeln!(o, "assistant   {}", indent(w));
        }
        let _ = writeln!(o, "prompt      {}", indent(&s.prompt));
    }
    findings(o, "skipped", &d.skipped);
    findings(o, "refused", &d.refused);
}

fn findings(o: &mut String, what: &str, list: &[Finding]) {
    for f in list {
        let _ = writeln!(o, "\n{what} {} sample(s): {}", f.count, f.reason);
        for e in &f.examples {
            let _ = writeln!(o, "  sample {} (id {}): {}", e.index, e.id, e.detail);
        }
        if f.count > f.examples.len() {
            let _ = writeln!(o, "  ... and {} more", f.count - f.examples.len());
        }
    }
}

/// Continuation lines indented under a 12-column label.
fn indent(text: &str) -> String {
    text.trim_end().replace('\n', "\n            ")
}
