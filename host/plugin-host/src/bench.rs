//! `lmmhost bench reward`: completions scored per second by a reward plugin
//! through Wasm (the instance pool) versus the same Rust rule called
//! natively on the same number of threads. Every figure is measured here.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use lmmhost_sdk as sdk;
use sdk::Reward;

use crate::reward::RewardPlugin;
use crate::runtime::{PluginRuntime, RuntimeOptions};
use crate::spec::PluginSpec;

/// One timed pass of each path over the whole batch.
#[derive(Debug, Clone, Copy)]
pub struct BenchRound {
    /// Whether the native pass ran first in this round (rounds alternate).
    pub native_first: bool,
    pub wasm_per_sec: f64,
    pub native_per_sec: f64,
    /// Completions per second of CPU time (all threads of the process), when
    /// the OS reports it (Linux): steadier than wall time on a shared machine.
    pub wasm_per_cpu_sec: Option<f64>,
    pub native_per_cpu_sec: Option<f64>,
    /// Minor page faults during each pass: fresh zeroed pages from the OS,
    /// i.e. an allocator giving memory back and taking it again (which
    /// `lmmhost bench reward`'s malloc settings prevent on both paths).
    pub wasm_page_faults: Option<u64>,
    pub native_page_faults: Option<u64>,
}

pub struct RewardBench {
    pub completions: usize,
    /// Responses per sample.
    pub group: usize,
    /// Completions per call.
    pub batch: usize,
    pub threads: usize,
    pub compile: Duration,
    pub instantiate: Duration,
    /// Each round, in the order run.
    pub rounds: Vec<BenchRound>,
    /// Medians over the rounds.
    pub wasm_per_sec: f64,
    pub native_per_sec: f64,
    pub wasm_per_cpu_sec: Option<f64>,
    pub native_per_cpu_sec: Option<f64>,
    /// Mean total reward, equal for both paths (checked).
    pub mean_total: f64,
}

/// What to score and how often.
#[derive(Debug, Clone, Copy)]
pub struct BenchSize {
    pub completions: usize,
    /// Characters per response.
    pub chars: usize,
    /// Responses per sample (the GRPO group size).
    pub group: usize,
    /// Completions per call (a training step's rollout batch): both paths
    /// score the completions in calls of this many, as the trainer does.
    pub batch: usize,
    pub threads: usize,
    pub rounds: usize,
}

/// Runs the benchmark: `spec` is the plugin (its config must match
/// `native`). Each round times both paths over the whole batch, the native
/// one first in odd rounds, so neither always runs on a warmer (or busier)
/// machine. Each path starts from the batch in its own ready form, built
/// before the clock starts: the native rule borrows the completions, the
/// plugin gets them grouped by sample (as the trainer hands them over).
pub fn bench_reward<R: Reward + Sync>(
    spec: PluginSpec,
    native: &R,
    size: BenchSize,
) -> Result<RewardBench> {
    let BenchSize {
        completions: n,
        chars,
        group,
        batch: per_call,
        threads,
        rounds,
    } = size;
    // The inputs of the SDK's in-guest ceiling measurement too
    // (`sdk/examples/rule_ceiling.rs`).
    let batch = sdk::bench::synthetic_completions(n, chars, group);
    // Calls hold whole groups: round the call size to a multiple of the group.
    let per_call = per_call.max(group).div_ceil(group) * group;
    let calls: Vec<(&[sdk::Completion], Vec<sdk::Group>)> = batch
        .chunks(per_call)
        .map(|c| (c, sdk::Group::from_completions(c)))
        .collect();
    // Cold compile into an empty on-disk cache, then a second load that hits
    // the cache and instantiates (and initialises) every pool instance.
    let cache = tempfile::tempdir()?;
    let runtime = PluginRuntime::new(RuntimeOptions {
        cache_dir: Some(cache.path().to_path_buf()),
    })?;
    let mut spec = spec;
    spec.limits.instances = Some(threads);
    let t = Instant::now();
    let (component, _, _) = runtime.prepare(&spec, lmmhost_bundle::World::Reward)?;
    let compile = t.elapsed();
    drop(component);
    let t = Instant::now();
    let plugin = RewardPlugin::new(&runtime, spec)?;
    let instantiate = t.elapsed();

    // Warm up both paths, then check that they agree on every item.
    let score_wasm = || -> Result<Vec<sdk::ScoreTable>> {
        calls.iter().map(|(_, g)| plugin.score_groups(g)).collect()
    };
    let score_native = || -> Vec<Vec<Result<sdk::Score, String>>> {
        calls
            .iter()
            .map(|(c, _)| score_native(native, c, threads))
            .collect()
    };
    let wasm = score_wasm()?;
    let native_scores = score_native();
    let mut sum = 0.0;
    for (k, (w, nat)) in wasm.iter().zip(&native_scores).enumerate() {
        for (i, nat) in nat.iter().enumerate() {
            let item = w.item(i);
            if item != *nat {
                return Err(anyhow!(
                    "item {}: Wasm and native scores differ: {item:?} vs {nat:?}",
                    k * per_call + i
                ));
            }
            sum += w.total(i);
        }
    }
    drop((wasm, native_scores));

    let mut timed = Vec::new();
    for round in 0..rounds.max(1) {
        let native_first = round % 2 == 1;
        let mut w = None;
        let mut nat = None;
        for native_turn in [native_first, !native_first] {
            let (t, usage) = (Instant::now(), Usage::now());
            if native_turn {
                drop(std::hint::black_box(score_native()));
                nat = Some((t.elapsed().as_secs_f64(), Usage::since(usage)));
            } else {
                drop(std::hint::black_box(score_wasm()?));
                w = Some((t.elapsed().as_secs_f64(), Usage::since(usage)));
            }
        }
        let ((ws, wu), (ns, nu)) = (w.unwrap_or_default(), nat.unwrap_or_default());
        timed.push(BenchRound {
            native_first,
            wasm_per_sec: n as f64 / ws,
            native_per_sec: n as f64 / ns,
            wasm_per_cpu_sec: wu.map(|u| n as f64 / u.cpu_secs),
            native_per_cpu_sec: nu.map(|u| n as f64 / u.cpu_secs),
            wasm_page_faults: wu.map(|u| u.page_faults),
            native_page_faults: nu.map(|u| u.page_faults),
        });
    }
    let median = |f: &dyn Fn(&BenchRound) -> Option<f64>| -> Option<f64> {
        let mut v: Vec<f64> = timed.iter().filter_map(f).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    };
    Ok(RewardBench {
        completions: n,
        group,
        batch: per_call,
        threads,
        compile,
        instantiate,
        wasm_per_sec: median(&|r| Some(r.wasm_per_sec)).unwrap_or(0.0),
        native_per_sec: median(&|r| Some(r.native_per_sec)).unwrap_or(0.0),
        wasm_per_cpu_sec: median(&|r| r.wasm_per_cpu_sec),
        native_per_cpu_sec: median(&|r| r.native_per_cpu_sec),
        rounds: timed,
        mean_total: sum / n as f64,
    })
}

/// The native path: the same rule on the same completions, borrowed, each
/// thread scoring an equal share (as the Wasm pool splits the batch across
/// its instances).
fn score_native<R: Reward + Sync>(
    native: &R,
    batch: &[sdk::Completion],
    threads: usize,
) -> Vec<Result<sdk::Score, String>> {
    let chunk = batch.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|s| {
        let hs: Vec<_> = batch
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().map(|c| native.score(c)).collect::<Vec<_>>()))
            .collect();
        hs.into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

/// CPU time (user + system, all threads) and minor page faults of this
/// process, from `getrusage`: microseconds, where `/proc/self/stat` counts
/// 10 ms ticks (a few percent of a round).
#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    cpu_secs: f64,
    page_faults: u64,
}

impl Usage {
    #[cfg(not(unix))]
    fn now() -> Option<Usage> {
        None
    }

    #[cfg(unix)]
    fn now() -> Option<Usage> {
        // SAFETY: getrusage only writes the struct it is given.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
            return None;
        }
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
        Some(Usage {
            cpu_secs: secs(u.ru_utime) + secs(u.ru_stime),
            page_faults: u.ru_minflt as u64,
        })
    }

    /// What was spent since `start` (CPU time at least a microsecond, so
    /// rates stay finite).
    fn since(start: Option<Usage>) -> Option<Usage> {
        let (end, start) = (Usage::now()?, start?);
        Some(Usage {
            cpu_secs: (end.cpu_secs - start.cpu_secs).max(1e-6),
            page_faults: end.page_faults.saturating_sub(start.page_faults),
        })
    }
}
