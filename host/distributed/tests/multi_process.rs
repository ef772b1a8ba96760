//! Real rank processes: this test binary runs as the driver, and re-executed
//! with LMMHOST_DIST_TEST_SCENARIO set, as each rank. Covers the launcher
//! (torchrun variables, exit codes, stopping the rest), `Distributed::from_env`
//! and what happens when a rank dies mid-run.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use lmmhost_distributed::launch::{LaunchError, LocalLaunch};
use lmmhost_distributed::{BackendChoice, DistOptions, Distributed, ReduceOp};
use tch::{Device, Kind, Tensor};

const SCENARIO: &str = "LMMHOST_DIST_TEST_SCENARIO";
/// Collective timeout of the ranks in the kill scenarios.
const KILL_TIMEOUT: Duration = Duration::from_secs(3);
/// Exit code of a survivor that saw the expected failure in time.
const SAW_FAILURE: i32 = 42;

type Case = (&'static str, fn() -> Result<()>);

fn main() {
    if let Ok(scenario) = std::env::var(SCENARIO) {
        let code = match rank_main(&scenario) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("rank {}: {e:#}", std::env::var("RANK").unwrap_or_default());
                1
            }
        };
        std::process::exit(code);
    }
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let cases: [Case; 6] = [
        (
            "launcher_runs_collectives_on_2_and_3_ranks",
            launcher_runs_collectives,
        ),
        (
            "launcher_propagates_the_first_failure",
            launcher_propagates_the_first_failure,
        ),
        ("nested_launch_is_refused", nested_launch_is_refused),
        (
            "a_killed_rank_fails_the_others_within_the_timeout",
            a_killed_rank_fails_the_others,
        ),
        (
            "a_killed_store_host_fails_the_others_within_the_timeout",
            a_killed_store_host_fails_the_others,
        ),
        (
            "a_hung_rank_fails_the_others_at_the_timeout",
            a_hung_rank_fails_the_others,
        ),
    ];
    let (mut passed, mut failed) = (0, 0);
    for (name, case) in cases {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let start = Instant::now();
        match case() {
            Ok(()) => {
                passed += 1;
                println!("test {name} ... ok ({:.1?})", start.elapsed());
            }
            Err(e) => {
                failed += 1;
                println!("test {name} ... FAILED\n{e:#}");
            }
        }
    }
    println!("\n{passed} passed, {failed} failed");
    std::process::exit(i32::from(failed > 0));
}

// ---- driver side ----

fn launch(nproc: usize, scenario: &str) -> Result<LocalLaunch> {
    let mut l = LocalLaunch::current_exe(nproc, Vec::new())?;
    l.env.push((SCENARIO.into(), scenario.into()));
    l.grace = Duration::from_secs(2);
    Ok(l)
}

fn launcher_runs_collectives() -> Result<()> {
    for nproc in [2, 3] {
        launch(nproc, "collectives")?
            .run()
            .with_context(|| format!("{nproc} ranks"))?;
    }
    Ok(())
}

fn launcher_propagates_the_first_failure() -> Result<()> {
    let start = Instant::now();
    match launch(3, "fail")?.run() {
        Err(e @ LaunchError::RankFailed { rank: 1, .. }) => {
            ensure!(e.exit_code() == 3, "exit code {} ({e})", e.exit_code());
            ensure!(
                e.to_string() == "rank 1 exited with code 3; the other ranks were stopped",
                "{e}"
            );
        }
        other => bail!("expected rank 1 to fail with code 3, got {other:?}"),
    }
    // The others sleep for a minute: they were stopped, not waited for.
    ensure!(
        start.elapsed() < Duration::from_secs(20),
        "took {:?}",
        start.elapsed()
    );
    match launch(2, "signal")?.run() {
        Err(e @ LaunchError::RankFailed { rank: 0, .. }) => {
            ensure!(
                e.exit_code() == 128 + 9,
                "exit code {} ({e})",
                e.exit_code()
            );
        }
        other => bail!("expected rank 0 to die of SIGKILL, got {other:?}"),
    }
    Ok(())
}

fn nested_launch_is_refused() -> Result<()> {
    launch(1, "nested")?
        .run()
        .context("the rank did not see its nested launch refused")?;
    Ok(())
}

/// Starts the ranks without the launcher (which would stop the survivors
/// at once) and collects each one's exit status and stderr; `victim` is
/// waited for last and killed first if it is still there (stopped).
fn spawn_ranks(world: usize, scenario: &str, victim: usize) -> Result<Vec<Output>> {
    let port = std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port();
    let exe = std::env::current_exe()?;
    let mut children = (0..world)
        .map(|rank| {
            Command::new(&exe)
                .env(SCENARIO, scenario)
                .env("RANK", rank.to_string())
                .env("LOCAL_RANK", rank.to_string())
                .env("WORLD_SIZE", world.to_string())
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", port.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .map(Some)
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    let mut outputs: Vec<Option<Output>> = (0..world).map(|_| None).collect();
    for rank in (0..world).filter(|&r| r != victim) {
        let child = children[rank].take().expect("spawned");
        outputs[rank] = Some(child.wait_with_output()?);
    }
    let mut last = children[victim].take().expect("spawned");
    let _ = last.kill();
    outputs[victim] = Some(last.wait_with_output()?);
    Ok(outputs.into_iter().map(|o| o.expect("collected")).collect())
}

fn check_survivors(outputs: &[Output], killed: usize, also: &str) -> Result<()> {
    let world = outputs.len();
    for (rank, out) in outputs.iter().enumerate() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        if rank == killed {
            // Killed by its own SIGKILL, or by the driver's after SIGSTOP.
            ensure!(
                out.status.signal() == Some(9),
                "rank {rank} should have been killed: {:?}",
                out.status
            );
            continue;
        }
        ensure!(
            out.status.code() == Some(SAW_FAILURE),
            "rank {rank} did not fail in time: {:?}\n{stderr}",
            out.status
        );
        let want = format!("all_reduce (sum) on rank {rank} of {world} (gloo) failed");
        ensure!(
            stderr.contains(&want),
            "rank {rank}'s error lacks {want:?}:\n{stderr}"
        );
        ensure!(
            stderr.contains(also),
            "rank {rank}'s error lacks {also:?}:\n{stderr}"
        );
    }
    Ok(())
}

fn a_killed_rank_fails_the_others() -> Result<()> {
    check_survivors(&spawn_ranks(3, "kill-1", 1)?, 1, "")
}

fn a_killed_store_host_fails_the_others() -> Result<()> {
    check_survivors(&spawn_ranks(2, "kill-0", 0)?, 0, "")
}

/// A rank that hangs (stopped, its sockets still open) rather than dies:
/// only the timeout can end the others' wait.
fn a_hung_rank_fails_the_others() -> Result<()> {
    let start = Instant::now();
    check_survivors(&spawn_ranks(2, "stop-1", 1)?, 1, "at the 3s timeout")?;
    ensure!(
        start.elapsed() >= KILL_TIMEOUT,
        "failed before the timeout: {:?}",
        start.elapsed()
    );
    Ok(())
}

// ---- rank side ----

fn rank_main(scenario: &str) -> Result<i32> {
    let rank: usize = std::env::var("RANK")?.parse()?;
    match scenario {
        "collectives" => collectives(rank).map(|()| 0),
        "fail" => {
            if rank == 1 {
                std::thread::sleep(Duration::from_millis(200));
                return Ok(3);
            }
            std::thread::sleep(Duration::from_secs(60));
            Ok(0)
        }
        "signal" => {
            if rank == 0 {
                // SAFETY: signalling this very process.
                unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_secs(60));
            Ok(0)
        }
        "nested" => match LocalLaunch::current_exe(2, Vec::new())?.run() {
            Err(LaunchError::AlreadyARank) => Ok(0),
            other => bail!("a launch from inside a rank was not refused: {other:?}"),
        },
        "kill-0" => kill_one(rank, 0, libc::SIGKILL),
        "kill-1" => kill_one(rank, 1, libc::SIGKILL),
        "stop-1" => kill_one(rank, 1, libc::SIGSTOP),
        other => bail!("unknown scenario {other}"),
    }
}

fn options(timeout: Duration) -> DistOptions {
    DistOptions {
        backend: BackendChoice::Gloo,
        timeout,
        group_of_one: false,
    }
}

fn collectives(rank: usize) -> Result<()> {
    let dist = Distributed::from_env(&options(Duration::from_secs(30)))?;
    let world = dist.world_size();
    ensure!(dist.rank() == rank && dist.local_rank() == rank && dist.device() == Device::Cpu);
    ensure!(world == std::env::var("WORLD_SIZE")?.parse::<usize>()?);
    let triangle = (world * (world + 1) / 2) as f64;
    for kind in [Kind::Float, Kind::Double, Kind::BFloat16] {
        let t = Tensor::full([5], (rank + 1) as f64, (kind, Device::Cpu));
        dist.all_reduce(&t, ReduceOp::Sum)?;
        ensure!(
            f64::try_from(t.sum(Kind::Double))? == 5.0 * triangle,
            "{kind:?} sum: {t}"
        );
        let gathered = dist.all_gather(&Tensor::full([2], rank as f64, (kind, Device::Cpu)))?;
        let want: Vec<f64> = (0..world).flat_map(|r| [r as f64; 2]).collect();
        ensure!(
            Vec::<f64>::try_from(&gathered.to_kind(Kind::Double))? == want,
            "{kind:?} gather: {gathered}"
        );
    }
    let mut seed = Tensor::zeros([3], (Kind::Float, Device::Cpu));
    if dist.is_main() {
        seed = Tensor::from_slice(&[4.0f32, 5.0, 6.0]);
    }
    dist.broadcast(&seed, 0)?;
    ensure!(Vec::<f32>::try_from(&seed)? == vec![4.0, 5.0, 6.0]);
    dist.barrier()?;
    Ok(())
}

/// Every rank does one all-reduce; then `victim` gets `signal` and the
/// others try a second one, which must fail within the timeout.
fn kill_one(rank: usize, victim: usize, signal: libc::c_int) -> Result<i32> {
    let dist = Distributed::from_env(&options(KILL_TIMEOUT))?;
    let t = Tensor::ones([1000], (Kind::Float, Device::Cpu));
    dist.all_reduce(&t, ReduceOp::Sum)?;
    dist.barrier()?;
    if rank == victim {
        // SAFETY: signalling this very process.
        unsafe { libc::kill(libc::getpid(), signal) };
    }
    let start = Instant::now();
    let result = dist.all_reduce(&t, ReduceOp::Sum);
    let elapsed = start.elapsed();
    match result {
        Ok(()) => bail!("the all_reduce succeeded without rank {victim}"),
        Err(e) if elapsed <= KILL_TIMEOUT + Duration::from_secs(2) => {
            eprintln!("failed after {elapsed:.1?}: {e:#}");
            Ok(SAW_FAILURE)
        }
        Err(e) => bail!("failed only after {elapsed:.1?} (timeout {KILL_TIMEOUT:?}): {e:#}"),
    }
}
