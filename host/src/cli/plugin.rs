//! `lmmhost plugin check|score` and `lmmhost bench reward`.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use lmmhost_bundle::{check_wit_compatible, host_speaks, inspect_component};
use lmmhost_plugin_host::{
    ItemOutcome, OnError, PluginRuntime, PluginSpec, RewardPlugin, RuntimeOptions,
};
use lmmhost_sdk as sdk;

#[derive(Subcommand)]
pub enum PluginCommand {
    /// Show a component's world, WIT version, imports, exports, size and hash.
    Check {
        /// The .wasm component.
        file: PathBuf,
    },
    /// Score completions offline with a reward plugin; prints a table and writes JSONL.
    Score(ScoreArgs),
}

#[derive(Args)]
pub struct ScoreArgs {
    /// The reward component (.wasm).
    reward: PathBuf,
    /// The plugin's config: a TOML file (its top-level table is passed through).
    #[arg(long)]
    config: Option<PathBuf>,
    /// JSONL input: one completion per line, either the SDK's Completion shape
    /// or {"id", "prompt", "response", "answer"}.
    #[arg(long)]
    input: PathBuf,
    /// Where to write one JSON score per line (default: <input>.scores.jsonl).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Per-call time budget in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// Score failing items 0 instead of stopping.
    #[arg(long)]
    zero_on_error: bool,
}

#[derive(Args)]
pub struct BenchRewardArgs {
    /// The reward component; its rule must be the SDK's math accuracy rule.
    #[arg(long, default_value = "target/plugins/reward-math.wasm")]
    plugin: PathBuf,
    /// Completions to score.
    #[arg(long, default_value_t = 100_000)]
    completions: usize,
    /// Characters per response.
    #[arg(long, default_value_t = 300)]
    chars: usize,
    /// Responses per sample, as a GRPO step samples them (the papers use
    /// 8, 10 and 16); the plugin receives each sample once per group.
    #[arg(long, default_value_t = 8)]
    group: usize,
    /// Completions per call, as a training step scores its rollouts (512
    /// prompts x 8 responses in ReVisual-R1 and RL-with-cold-start).
    #[arg(long, default_value_t = 4096)]
    batch: usize,
    /// Threads (native) and instances (Wasm).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Timed rounds of both paths, alternating which runs first; medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

pub fn run(cmd: PluginCommand) -> Result<()> {
    match cmd {
        PluginCommand::Check { file } => check(&file),
        PluginCommand::Score(args) => score(args),
    }
}

fn check(file: &PathBuf) -> Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let facts = inspect_component(&bytes)
        .with_context(|| format!("{} is not a usable component", file.display()))?;
    println!("file:         {}", file.display());
    println!(
        "world:        {}",
        facts
            .world
            .map(|w| w.name().to_string())
            .unwrap_or_else(|| "none (no lmmhost:plugin export)".into())
    );
    println!(
        "wit version:  {}",
        facts.wit_version.as_deref().unwrap_or("-")
    );
    let compatible = check_wit_compatible(&facts);
    match &compatible {
        Ok(()) => println!(
            "compatible:   yes (host speaks lmmhost:plugin {})",
            host_speaks()
        ),
        Err(why) => println!("compatible:   NO: {why}"),
    }
    println!("size:         {} bytes", facts.size_bytes);
    println!("sha256:       {}", facts.sha256);
    println!("exports:");
    for e in &facts.exports {
        println!("  {e}");
    }
    println!("imports:");
    for i in &facts.imports {
        println!("  {i}");
    }
    // Scripts check the exit code: an incompatible plugin is a failed check.
    if compatible.is_err() {
        bail!(
            "{} is not compatible with this host (lmmhost:plugin {})",
            file.display(),
            host_speaks()
        );
    }
    Ok(())
}

/// The convenience input shape of `plugin score`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Flat {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    prompt: String,
    response: String,
    #[serde(default)]
    answer: Option<String>,
    #[serde(default)]
    metadata: std::collections::BTreeMap<String, String>,
}

fn parse_line(line: &str, n: usize) -> Result<sdk::Completion> {
    let value: serde_json::Value = serde_json::from_str(line).context("invalid JSON")?;
    // A `sample` key means the Completion shape: report its own error, not
    // the flat shape's "unknown field `sample`".
    if value.get("sample").is_some() {
        return serde_json::from_value::<sdk::Completion>(value)
            .context("not a valid Completion ({\"sample\", \"response\", \"response_tokens\"})");
    }
    let f: Flat = serde_json::from_value(value)
        .context("expected a Completion object or {\"prompt\", \"response\", \"answer\"}")?;
    Ok(sdk::Completion {
        sample: sdk::Sample {
            id: f.id.unwrap_or_else(|| format!("line-{n}")),
            messages: vec![sdk::Message {
                role: "user".into(),
                content: vec![sdk::ContentPart::Text(f.prompt)],
            }],
            answer: f.answer,
            metadata: f.metadata.into_iter().collect(),
        },
        response_tokens: f.response.split_whitespace().count() as u32,
        response: f.response,
    })
}

fn score(args: ScoreArgs) -> Result<()> {
    let config = match &args.config {
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("cannot read config {}", p.display()))?,
        None => String::new(),
    };
    let file = std::fs::File::open(&args.input)
        .with_context(|| format!("cannot open {}", args.input.display()))?;
    let mut batch = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line =
            line.with_context(|| format!("{}:{}: cannot read", args.input.display(), i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        batch.push(
            parse_line(&line, i + 1)
                .with_context(|| format!("{}:{}", args.input.display(), i + 1))?,
        );
    }
    if batch.is_empty() {
        bail!("{} holds no completions", args.input.display());
    }
    let name = args
        .reward
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "reward".into());
    let mut spec = PluginSpec::from_file(&name, &args.reward, &config)?;
    spec.limits.call_timeout_ms = args.timeout_ms;
    spec.on_error = if args.zero_on_error {
        OnError::Zero
    } else {
        OnError::Abort
    };
    let runtime = PluginRuntime::new(RuntimeOptions::default())?;
    let plugin = RewardPlugin::new(&runtime, spec)?;
    let outcomes = plugin.score_batch(&batch)?;

    let out_path = args
        .out
        .clone()
        .unwrap_or_else(|| args.input.with_extension("scores.jsonl"));
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&out_path)
            .with_context(|| format!("cannot create {}", out_path.display()))?,
    );
    let mut names: Vec<String> = Vec::new();
    let mut sums: Vec<f64> = Vec::new();
    let mut total = 0.0;
    let mut failed = 0;
    println!("{:<24} {:>8}  components", "id", "total");
    for (c, o) in batch.iter().zip(&outcomes) {
        let line = match o {
            ItemOutcome::Scored(s) => {
                total += s.total;
                for (k, v) in &s.components {
                    match names.iter().position(|n| n == k) {
                        Some(j) => sums[j] += v,
                        None => {
                            names.push(k.clone());
                            sums.push(*v);
                        }
                    }
                }
                let comps: Vec<String> = s
                    .components
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                println!("{:<24} {:>8.3}  {}", c.sample.id, s.total, comps.join(" "));
                serde_json::json!({ "id": c.sample.id, "score": s })
            }
            ItemOutcome::Failed { error, .. } => {
                failed += 1;
                println!("{:<24} {:>8}  error: {error}", c.sample.id, "0 (err)");
                serde_json::json!({ "id": c.sample.id, "error": error })
            }
        };
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    let n = batch.len() as f64;
    println!(
        "\n{} completions, {failed} failed; mean total {:.4}",
        batch.len(),
        total / n
    );
    for (k, s) in names.iter().zip(&sums) {
        println!("  mean {k}: {:.4}", s / n);
    }
    println!("scores written to {}", out_path.display());
    Ok(())
}

pub fn bench_reward(args: BenchRewardArgs) -> Result<()> {
    let config = "format = \"r1\"\n";
    let native =
        <sdk::rules::math::MathAccuracy as sdk::Reward>::new(config).map_err(anyhow::Error::msg)?;
    let spec = PluginSpec::from_file("reward-math", &args.plugin, config)?;
    let load_before = load_average();
    let size = lmmhost_plugin_host::bench::BenchSize {
        completions: args.completions,
        chars: args.chars,
        group: args.group.max(1),
        batch: args.batch.max(1),
        threads: args.threads.max(1),
        rounds: args.rounds.max(1),
    };
    let r = lmmhost_plugin_host::bench::bench_reward(spec, &native, size)?;
    println!(
        "reward benchmark: math accuracy + R1 format, {} completions of {} characters \
         ({} per sample, {} per call), {} threads",
        r.completions, args.chars, r.group, r.batch, r.threads
    );
    println!(
        "  compile (cold, no cache):  {:>10.1} ms",
        r.compile.as_secs_f64() * 1e3
    );
    println!(
        "  cached load + instantiate ({}): {:>5.1} ms",
        r.threads,
        r.instantiate.as_secs_f64() * 1e3
    );
    for (i, round) in r.rounds.iter().enumerate() {
        let cpu = match (round.wasm_per_cpu_sec, round.native_per_cpu_sec) {
            (Some(w), Some(n)) => format!(
                "; per CPU second wasm {w:.0}/s, native {n:.0}/s, ratio {:.2}x",
                w / n
            ),
            _ => String::new(),
        };
        let faults = match (round.wasm_page_faults, round.native_page_faults) {
            (Some(w), Some(n)) => format!("; page faults wasm {w}, native {n}"),
            _ => String::new(),
        };
        println!(
            "  round {} ({} first): wasm {:.0}/s, native {:.0}/s, ratio {:.2}x{cpu}{faults}",
            i + 1,
            if round.native_first { "native" } else { "wasm" },
            round.wasm_per_sec,
            round.native_per_sec,
            round.wasm_per_sec / round.native_per_sec,
        );
    }
    println!("  medians over {} rounds:", r.rounds.len());
    println!(
        "  wasm:                      {:>10.0} completions/s",
        r.wasm_per_sec
    );
    println!(
        "  native:                    {:>10.0} completions/s",
        r.native_per_sec
    );
    println!(
        "  wasm / native:             {:>10.2}x",
        r.wasm_per_sec / r.native_per_sec
    );
    if let (Some(w), Some(n)) = (r.wasm_per_cpu_sec, r.native_per_cpu_sec) {
        // CPU time is steadier than wall time when other jobs share the cores.
        println!(
            "  per CPU second: wasm {w:.0}/s, native {n:.0}/s, ratio {:.2}x",
            w / n
        );
    }
    println!(
        "  mean total reward:         {:>10.4} (identical on both paths)",
        r.mean_total
    );
    // Other jobs on the machine skew every figure: say how busy it was.
    if let (Some(a), Some(b)) = (load_before, load_average()) {
        println!("  load average (1 min):      {a} before, {b} after");
    }
    Ok(())
}

/// The 1-minute load average from `/proc/loadavg` (Linux), as printed there.
fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next().map(str::to_owned)
}
