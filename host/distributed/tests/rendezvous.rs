//! A wrong launch fails within the timeout, naming the variable to fix.

mod common;

use std::time::{Duration, Instant};

use common::{free_port, gloo, launch_env};
use lmmhost_distributed::{Distributed, LaunchEnv};

const TIMEOUT: Duration = Duration::from_secs(2);

/// Joins every env on its own thread; the error message of each (or "ok").
fn join_all(envs: Vec<LaunchEnv>) -> Vec<String> {
    let handles: Vec<_> = envs
        .into_iter()
        .map(|env| {
            std::thread::spawn(move || match Distributed::join(&env, &gloo(TIMEOUT)) {
                Ok(_) => "ok".to_owned(),
                Err(e) => format!("{e:#}"),
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("rank thread"))
        .collect()
}

#[test]
fn mismatched_world_size_names_world_size() {
    let port = free_port();
    let start = Instant::now();
    let errors = join_all(vec![launch_env(0, 3, port), launch_env(1, 2, port)]);
    assert!(start.elapsed() < TIMEOUT * 3, "took {:?}", start.elapsed());
    // Rank 0 waited for a third rank that never came, and saw rank 1 disagree.
    assert!(
        errors[0].contains("only 2 of WORLD_SIZE=3 ranks joined")
            && errors[0].contains("rank 1 has WORLD_SIZE=2"),
        "{}",
        errors[0]
    );
    // Rank 1 found all the ranks it expected, then rank 0's different count.
    assert!(
        errors[1].contains("WORLD_SIZE mismatch: rank 1 has WORLD_SIZE=2, rank 0 has WORLD_SIZE=3"),
        "{}",
        errors[1]
    );
}

#[test]
fn unreachable_master_names_master_addr_and_port() {
    // Nobody hosts the store: only rank 1 of 2 is started.
    let port = free_port();
    let start = Instant::now();
    let errors = join_all(vec![launch_env(1, 2, port)]);
    let elapsed = start.elapsed();
    assert!(
        elapsed < TIMEOUT + Duration::from_secs(1),
        "took {elapsed:?}"
    );
    let want = format!("rank 1 of 2 could not reach the rendezvous store at MASTER_ADDR=127.0.0.1 MASTER_PORT={port}");
    assert!(errors[0].contains(&want), "{}", errors[0]);
}

#[test]
fn a_rank_used_twice_is_refused() {
    let port = free_port();
    let errors = join_all(vec![launch_env(0, 2, port), launch_env(0, 2, port)]);
    // One of the two rank-0 processes hosts the store; the other cannot bind
    // the port, or (if it came second to the same store) is refused by the claim.
    assert!(
        errors
            .iter()
            .any(|e| e.contains("RANK=0 is used by more than one process")
                || e.contains(
                    "rank 0 could not host the rendezvous store at MASTER_ADDR=127.0.0.1"
                )),
        "{errors:?}"
    );
    let port = free_port();
    let errors = join_all(vec![
        launch_env(0, 3, port),
        launch_env(1, 3, port),
        launch_env(1, 3, port),
    ]);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("RANK=1 is used by more than one process")),
        "{errors:?}"
    );
    assert!(
        errors[0].contains("only 2 of WORLD_SIZE=3 ranks joined"),
        "{}",
        errors[0]
    );
}

#[test]
fn world_size_one_needs_no_store() {
    // No store is hosted or reached: the port is never opened.
    let dist = Distributed::join(&launch_env(0, 1, 1), &gloo(TIMEOUT)).unwrap();
    assert_eq!((dist.world_size(), dist.device()), (1, tch::Device::Cpu));
    assert!(dist.group().is_none());
}

#[test]
fn world_size_one_picks_the_device_without_a_backend() {
    use lmmhost_distributed::{BackendChoice, DistOptions};
    let with = |backend| {
        Distributed::join(
            &launch_env(0, 1, 1),
            &DistOptions {
                backend,
                timeout: TIMEOUT,
                group_of_one: false,
            },
        )
    };
    let auto = with(BackendChoice::Auto).unwrap();
    let nccl = with(BackendChoice::Nccl);
    if tch::Cuda::is_available() {
        assert_eq!(auto.device(), tch::Device::Cuda(0));
        assert_eq!(nccl.unwrap().device(), tch::Device::Cuda(0));
    } else {
        assert_eq!(auto.device(), tch::Device::Cpu);
        let err = nccl.err().expect("no CUDA here").to_string();
        assert!(err.contains("no CUDA device is available"), "{err}");
    }
}
