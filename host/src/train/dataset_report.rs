//! What the loaders produce, measured the way a run uses it, before any
//! model weight is loaded (`lmmhost data`): per dataset the samples and the
//! loader's own notes, every sample rendered through the model's chat
//! template and counted in tokens (images by their size after the
//! processor's resize), and the samples a run would skip or stop on, with why.
//! Only the tokenizer, the chat template and the processor config are read.

use std::path::Path;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use lmmhost_model::processor::{Conversation, Measured, Processor};
use lmmhost_plugin_host::{LoaderPlugin, PluginRuntime, RuntimeOptions};
use lmmhost_sdk as sdk;
use serde::Serialize;

use super::data::{prompt_conversation, sft_conversation};
use super::experiment::Experiment;
use super::plugins::open_dataset;

/// Samples read from a loader per call.
const CHUNK: u64 = 64;
/// Samples named per reason (the count covers them all).
const EXAMPLES: usize = 10;

/// What to look at.
pub struct Options {
    /// Samples shown in full per dataset (the first ones, in the loader's order).
    pub samples: usize,
    /// One dataset instead of all of them.
    pub dataset: Option<String>,
    /// Progress on stderr (drawn only on a terminal).
    pub progress: bool,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub model: String,
    /// Where the chat template comes from.
    pub chat_template: String,
    /// What the run skips prompts and conversations by (the file's values;
    /// a schedule may override them per stage).
    pub max_prompt_tokens: usize,
    pub sft_max_tokens: usize,
    pub datasets: Vec<DatasetReport>,
}

impl Report {
    /// Samples that would stop a run, and datasets it would refuse.
    pub fn blocking(&self) -> usize {
        self.datasets
            .iter()
            .map(|d| {
                usize::from(d.error.is_some()) + d.refused.iter().map(|f| f.count).sum::<usize>()
            })
            .sum()
    }
}

#[derive(Debug, Serialize)]
pub struct DatasetReport {
    pub name: String,
    pub loader: String,
    pub files: Vec<String>,
    /// Image roots (`images`).
    pub images: Vec<String>,
    /// Why the run would refuse the whole dataset (open failed, no samples).
    pub error: Option<String>,
    pub samples: u64,
    /// Rows the loader left out (`skip_bad_rows`) and its notes on them.
    pub loader_skipped_rows: u64,
    pub loader_notes: Vec<String>,
    /// Generation prompts (trailing assistant turns dropped), in tokens.
    pub prompt_tokens: Option<Stats>,
    /// Whole conversations of the samples that end with an assistant turn
    /// (what SFT trains on), in tokens.
    pub conversation_tokens: Option<Stats>,
    pub samples_with_images: u64,
    pub image_count: u64,
    pub without_answer: u64,
    /// The first samples, rendered.
    pub shown: Vec<ShownSample>,
    /// Samples a run leaves out, by reason.
    pub skipped: Vec<Finding>,
    /// Samples that stop a run when drawn, by reason.
    pub refused: Vec<Finding>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub count: u64,
    pub min: usize,
    pub mean: f64,
    pub max: usize,
}

#[derive(Debug, Serialize)]
pub struct ShownSample {
    pub index: u64,
    pub id: String,
    /// The generation prompt as the chat template renders it, one
    /// `<|image_pad|>` per image (each stands for `tokens` of its image).
    pub prompt: String,
    pub prompt_tokens: usize,
    pub image_tokens: usize,
    pub images: Vec<ImageReport>,
    /// Tokens of the whole conversation, when it ends with an assistant turn.
    pub conversation_tokens: Option<usize>,
    /// The reference answer the rewards compare with.
    pub answer: Option<String>,
    /// The assistant turn(s) the sample carries (what SFT learns).
    pub worked_answer: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ImageReport {
    pub source: String,
    pub width: usize,
    pub height: usize,
    pub resized_width: usize,
    pub resized_height: usize,
    pub tokens: usize,
}

/// One reason, how many samples it covers and the first of them.
#[derive(Debug, Serialize)]
pub struct Finding {
    pub reason: String,
    pub count: usize,
    pub examples: Vec<Example>,
}

#[derive(Debug, Serialize)]
pub struct Example {
    pub index: u64,
    pub id: String,
    pub detail: String,
}

/// Reads every dataset of `exp` (or `opts.dataset`) through its loader and
/// measures it with the model directory's processor.
pub fn report(exp: &Experiment, opts: &Options) -> Result<Report> {
    let names: Vec<String> = match &opts.dataset {
        Some(n) if !exp.datasets.contains_key(n) => anyhow::bail!(
            "--dataset {n}: no dataset of that name in [datasets] (have: {})",
            exp.datasets.keys().cloned().collect::<Vec<_>>().join(", ")
        ),
        Some(n) => vec![n.clone()],
        None => exp.datasets.keys().cloned().collect(),
    };
    let mut processor = Processor::from_dir(&exp.model.path)
        .with_context(|| format!("model.path {}", exp.model.path.display()))?;
    processor
        .set_pixel_bounds(exp.model.min_pixels, exp.model.max_pixels)
        .context("model.min_pixels / model.max_pixels")?;
    let runtime = PluginRuntime::new(RuntimeOptions::default())?;
    let bar = progress(opts.progress);
    let mut datasets = Vec::new();
    for name in &names {
        bar.set_message(name.clone());
        datasets.push(dataset(exp, &runtime, &processor, name, opts, &bar));
    }
    bar.finish_and_clear();
    Ok(Report {
        model: display(&[&exp.model.path]).concat(),
        chat_template: match &processor.chat_template {
            Some(t) => display(&[t.source()]).concat(),
            None => "built-in (Qwen2.5-VL's)".into(),
        },
        max_prompt_tokens: exp.rollout.max_prompt_tokens,
        sft_max_tokens: exp.sft.max_tokens,
        datasets,
    })
}

fn progress(show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    if let Ok(style) =
        ProgressStyle::with_template("{bar:30} {pos}/{len} samples of {msg} [{elapsed_precise}]")
    {
        bar.set_style(style);
    }
    bar
}

/// Paths as absolute, canonical ones where they exist (the file's relative
/// paths are relative to the working directory when the experiment was
/// named by a relative path).
fn display(paths: &[impl AsRef<Path>]) -> Vec<String> {
    paths
        .iter()
        .map(|p| {
            let p = p.as_ref();
            std::fs::canonicalize(p)
                .or_else(|_| std::path::absolute(p))
                .unwrap_or_else(|_| p.to_path_buf())
                .display()
                .to_string()
        })
        .collect()
}

fn dataset(
    exp: &Experiment,
    runtime: &PluginRuntime,
    processor: &Processor,
    name: &str,
    opts: &Options,
    bar: &ProgressBar,
) -> DatasetReport {
    let d = &exp.datasets[name];
    let mut out = DatasetReport {
        name: name.to_string(),
        loader: d.loader.clone(),
        files: display(&d.files),
        images: display(&d.images),
        error: None,
        samples: 0,
        loader_skipped_rows: 0,
        loader_notes: Vec::new(),
        prompt_tokens: None,
        conversation_tokens: None,
        samples_with_images: 0,
        image_count: 0,
        without_answer: 0,
        shown: Vec::new(),
        skipped: Vec::new(),
        refused: Vec::new(),
    };
    let loader = match open_dataset(exp, runtime, name) {
        Ok(l) => l,
        Err(e) => {
            out.error = Some(format!("{e:#}"));
            return out;
        }
    };
    let info = loader.info();
    out.samples = info.len;
    out.loader_skipped_rows = info.skipped_rows;
    out.loader_notes = info.notes.clone();
    if loader.is_empty() {
        out.error = Some(format!(
            "the loader opened it but it has no samples ({} rows skipped): a run refuses it",
            info.skipped_rows
        ));
        return out;
    }
    bar.set_length(loader.len());
    bar.set_position(0);
    let mut scan = Scan::new(exp);
    let mut start = 0;
    while start < loader.len() {
        let end = (start + CHUNK).min(loader.len());
        scan.chunk(&loader, processor, start..end, opts.samples);
        bar.set_position(end);
        start = end;
    }
    scan.finish(&mut out);
    out
}

/// Tallies of one dataset's samples as they are measured.
struct Scan {
    max_prompt_tokens: usize,
    sft_max_tokens: usize,
    prompt: Vec<usize>,
    conversation: Vec<usize>,
    with_images: u64,
    images: u64,
    without_answer: u64,
    shown: Vec<ShownSample>,
    skipped: Vec<Finding>,
    refused: Vec<Finding>,
}

impl Scan {
    fn new(exp: &Experiment) -> Scan {
        Scan {
            max_prompt_tokens: exp.rollout.max_prompt_tokens,
            sft_max_tokens: exp.sft.max_tokens,
            prompt: Vec::new(),
            conversation: Vec::new(),
            with_images: 0,
            images: 0,
            without_answer: 0,
            shown: Vec::new(),
            skipped: Vec::new(),
            refused: Vec::new(),
        }
    }

    fn chunk(
        &mut self,
        loader: &LoaderPlugin,
        processor: &Processor,
        range: std::ops::Range<u64>,
        show: usize,
    ) {
        let indices: Vec<u64> = range.collect();
        match loader.get_many(&indices) {
            Ok(samples) => {
                for (&i, s) in indices.iter().zip(&samples) {
                    self.sample(processor, i, s, (i as usize) < show);
                }
            }
            // One call failed: find the samples it failed on, one by one.
            Err(_) => {
                for &i in &indices {
                    match loader.get(i) {
                        Ok(s) => self.sample(processor, i, &s, (i as usize) < show),
                        Err(e) => note(
                            &mut self.refused,
                            "the loader fails on it",
                            i,
                            "",
                            format!("{e:#}"),
                        ),
                    }
                }
            }
        }
    }

    fn sample(&mut self, processor: &Processor, index: u64, s: &sdk::Sample, show: bool) {
        let n_images = s
            .messages
            .iter()
            .flat_map(|m| &m.content)
            .filter(|p| matches!(p, sdk::ContentPart::Image(_)))
            .count() as u64;
        self.images += n_images;
        self.with_images += u64::from(n_images > 0);
        self.without_answer += u64::from(s.answer.as_deref().is_none_or(str::is_empty));
        let refuse = |scan: &mut Scan, reason: &str, detail: String| {
            note(&mut scan.refused, reason, index, &s.id, detail)
        };
        if let Some(missing) = missing_images(s) {
            return refuse(self, "image file missing", missing);
        }
        let prompt = match prompt_conversation(s) {
            Ok(c) => c,
            Err(e) => return refuse(self, "no prompt", format!("{e:#}")),
        };
        let measured = match measure(processor, index, &prompt, true) {
            Ok(m) => m,
            Err(e) => return refuse(self, "cannot be encoded", e),
        };
        self.prompt.push(measured.tokens);
        if measured.tokens > self.max_prompt_tokens {
            let reason = format!(
                "GRPO stages skip it: prompt longer than rollout.max_prompt_tokens = {}",
                self.max_prompt_tokens
            );
            note(
                &mut self.skipped,
                &reason,
                index,
                &s.id,
                format!("{} tokens", measured.tokens),
            );
        }
        let ends_with_answer = s.messages.last().is_some_and(|m| m.role == "assistant");
        let mut conversation_tokens = None;
        if ends_with_answer {
            match sft_conversation(s)
                .map_err(|e| format!("{e:#}"))
                .and_then(|c| measure(processor, index, &c, false))
            {
                Ok(m) => {
                    self.conversation.push(m.tokens);
                    conversation_tokens = Some(m.tokens);
                    if m.tokens > self.sft_max_tokens {
                        let reason = format!(
                            "SFT stages skip it: conversation longer than sft.max_tokens = {}",
                            self.sft_max_tokens
                        );
                        note(
                            &mut self.skipped,
                            &reason,
                            index,
                            &s.id,
                            format!("{} tokens", m.tokens),
                        );
                    }
                }
                Err(e) => return refuse(self, "cannot be encoded", e),
            }
        }
        if show {
            // The shown samples' images are decoded and resized in full, as
            // a step does; the rest are measured from their headers.
            if let Err(e) = processor.encode(std::slice::from_ref(&prompt), true) {
                return refuse(self, "cannot be encoded", format!("{e:#}"));
            }
            self.shown
                .push(shown(index, s, measured, conversation_tokens));
        }
    }

    fn finish(self, out: &mut DatasetReport) {
        out.prompt_tokens = stats(&self.prompt);
        out.conversation_tokens = stats(&self.conversation);
        out.samples_with_images = self.with_images;
        out.image_count = self.images;
        out.without_answer = self.without_answer;
        out.shown = self.shown;
        out.skipped = self.skipped;
        out.refused = self.refused;
    }
}

/// The first image path of `s` that does not exist, described.
fn missing_images(s: &sdk::Sample) -> Option<String> {
    let mut i = 0;
    for part in s.messages.iter().flat_map(|m| &m.content) {
        if let sdk::ContentPart::Image(img) = part {
            if let sdk::ImageSource::Path(p) = img {
                if !Path::new(p).exists() {
                    return Some(format!("image {i}: {p} does not exist"));
                }
            }
            i += 1;
        }
    }
    None
}

/// The processor's measure, its error without the sample index (the
/// example names the sample).
fn measure(
    processor: &Processor,
    index: u64,
    conv: &Conversation,
    generation_prompt: bool,
) -> std::result::Result<Measured, String> {
    processor
        .measure(index as usize, conv, generation_prompt)
        .map_err(|e| format!("{e:#}"))
}

fn shown(
    index: u64,
    s: &sdk::Sample,
    m: Measured,
    conversation_tokens: Option<usize>,
) -> ShownSample {
    let worked: Vec<String> = s
        .messages
        .iter()
        .rev()
        .take_while(|m| m.role == "assistant")
        .map(text_of)
        .collect();
    ShownSample {
        index,
        id: s.id.clone(),
        prompt_tokens: m.tokens,
        image_tokens: m.image_tokens(),
        images: m
            .images
            .into_iter()
            .map(|i| ImageReport {
                source: i.source,
                width: i.width,
                height: i.height,
                resized_width: i.resized_width,
                resized_height: i.resized_height,
                tokens: i.tokens,
            })
            .collect(),
        prompt: m.text,
        conversation_tokens,
        answer: s.answer.clone(),
        worked_answer: (!worked.is_empty())
            .then(|| worked.into_iter().rev().collect::<Vec<_>>().join("\n")),
    }
}

fn text_of(m: &sdk::Message) -> String {
    m.content
        .iter()
        .map(|p| match p {
            sdk::ContentPart::Text(t) => t.as_str(),
            sdk::ContentPart::Image(_) => "<image>",
        })
        .collect()
}

fn note(findings: &mut Vec<Finding>, reason: &str, index: u64, id: &str, detail: String) {
    let f = match findings.iter_mut().position(|f| f.reason == reason) {
        Some(i) => &mut findings[i],
        None => {
            findings.push(Finding {
                reason: reason.to_string(),
                count: 0,
                examples: Vec::new(),
            });
            findings.last_mut().expect("just pushed")
        }
    };
    f.count += 1;
    if f.examples.len() < EXAMPLES {
        f.examples.push(Example {
            index,
            id: id.to_string(),
            detail,
        });
    }
}

fn stats(v: &[usize]) -> Option<Stats> {
    let (min, max) = (v.iter().min()?, v.iter().max()?);
    Some(Stats {
        count: v.len() as u64,
        min: *min,
        mean: v.iter().sum::<usize>() as f64 / v.len() as f64,
        max: *max,
    })
}
