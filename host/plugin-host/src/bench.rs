//! `lmmhost bench reward`: completions scored per second by a reward plugin
//! through Wasm (the instance pool) versus the same Rust rule called
//! natively on the same number of threads. Every figure is measured here.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use lmmhost_sdk as sdk;
use sdk::Reward;

use crate::reward::{ItemOutcome, RewardPlugin};
use crate::runtime::{PluginRuntime, PluginSpec, RuntimeOptions};

/// A deterministic set of math completions with `chars`-character responses
/// in the R1 format, a third of them wrong, answers of several shapes.
pub fn synthetic_completions(n: usize, chars: usize) -> Vec<sdk::Completion> {
    let answers = [
        "42",
        "\\frac{3}{4}",
        "2\\sqrt{3}",
        "0.25",
        "x^2-1",
        "(1, 2)",
        "12\\%",
        "7",
    ];
    let wrongs = [
        "41",
        "\\frac{4}{3}",
        "3\\sqrt{2}",
        "0.3",
        "x^2+1",
        "(2, 1)",
        "13\\%",
        "8",
    ];
    (0..n)
        .map(|i| {
            let k = i % answers.len();
            let given = if i % 3 == 0 { wrongs[k] } else { answers[k] };
            let head =
                format!("<think>Step {i}: we compute the quantity carefully, checking each term. ");
            let tail = format!("</think><answer>The answer is \\boxed{{{given}}}</answer>");
            let filler = "Then we simplify and verify the result against the constraints. ";
            let mut body = head;
            while body.len() + tail.len() < chars {
                body.push_str(filler);
            }
            body.truncate(chars.saturating_sub(tail.len()).max(1));
            let response = body + &tail;
            sdk::Completion {
                sample: sdk::Sample {
                    id: format!("bench-{i}"),
                    messages: vec![sdk::Message {
                        role: "user".into(),
                        content: vec![sdk::ContentPart::Text(format!(
                            "Problem {i}: compute the value."
                        ))],
                    }],
                    answer: Some(answers[k].to_string()),
                    metadata: vec![],
                },
                response,
                response_tokens: (chars / 4) as u32,
            }
        })
        .collect()
}

pub struct RewardBench {
    pub completions: usize,
    pub threads: usize,
    pub compile: Duration,
    pub instantiate: Duration,
    pub wasm_per_sec: f64,
    pub native_per_sec: f64,
    /// Completions per second of CPU time (all threads of the process), when
    /// the OS reports it (Linux): steadier than wall time on a shared machine.
    pub wasm_per_cpu_sec: Option<f64>,
    pub native_per_cpu_sec: Option<f64>,
    /// Mean total reward, equal for both paths (checked).
    pub mean_total: f64,
}

/// Runs the benchmark: `spec` is the plugin (its config must match `native`).
pub fn bench_reward<R: Reward + Sync>(
    spec: PluginSpec,
    native: &R,
    n: usize,
    chars: usize,
    threads: usize,
) -> Result<RewardBench> {
    let batch = synthetic_completions(n, chars);
    // Cold compile into an empty on-disk cache, then a second load that hits
    // the cache and instantiates (and initialises) every pool instance.
    let cache = tempfile::tempdir()?;
    let runtime = PluginRuntime::new(RuntimeOptions {
        cache_dir: Some(cache.path().to_path_buf()),
    })?;
    let mut spec = spec;
    spec.limits.instances = threads;
    let t = Instant::now();
    let (component, _) = runtime.prepare(&spec, lmmhost_bundle::World::Reward)?;
    let compile = t.elapsed();
    drop(component);
    let t = Instant::now();
    let plugin = RewardPlugin::new(&runtime, spec)?;
    let instantiate = t.elapsed();

    // Warm up both paths, then time the whole batch.
    plugin.score_batch(&batch[..batch.len().min(256)])?;
    let (t, cpu) = (Instant::now(), process_cpu_secs());
    let wasm = plugin.score_batch(&batch)?;
    let wasm_secs = t.elapsed().as_secs_f64();
    let wasm_cpu = cpu_since(cpu);

    let chunk = n.div_ceil(threads);
    let (t, cpu) = (Instant::now(), process_cpu_secs());
    let native_scores: Vec<Result<sdk::Score, String>> = std::thread::scope(|s| {
        let hs: Vec<_> = batch
            .chunks(chunk)
            .map(|part| s.spawn(move || native.score_batch(part)))
            .collect();
        hs.into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let native_secs = t.elapsed().as_secs_f64();
    let native_cpu = cpu_since(cpu);

    let mut sum = 0.0;
    for (i, (w, nat)) in wasm.iter().zip(&native_scores).enumerate() {
        match (w, nat) {
            (ItemOutcome::Scored(a), Ok(b)) if (a.total - b.total).abs() < 1e-12 => sum += a.total,
            _ => {
                return Err(anyhow!(
                    "item {i}: Wasm and native scores differ: {w:?} vs {nat:?}"
                ))
            }
        }
    }
    Ok(RewardBench {
        completions: n,
        threads,
        compile,
        instantiate,
        wasm_per_sec: n as f64 / wasm_secs,
        native_per_sec: n as f64 / native_secs,
        wasm_per_cpu_sec: wasm_cpu.map(|c| n as f64 / c),
        native_per_cpu_sec: native_cpu.map(|c| n as f64 / c),
        mean_total: sum / n as f64,
    })
}

/// User + system CPU time of this process so far, from `/proc/self/stat`
/// (clock ticks of 10 ms); `None` where there is no such file.
fn process_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the line, the 12th and 13th after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// CPU seconds spent since `start` (at least one tick, so rates stay finite).
fn cpu_since(start: Option<f64>) -> Option<f64> {
    Some((process_cpu_secs()? - start?).max(0.01))
}
