//! Runs a closure as every rank of a small Gloo world, one thread per rank,
//! each with its own store connection and process group.

#![allow(dead_code)]

use std::net::TcpListener;
use std::time::Duration;

use anyhow::Result;
use lmmhost_distributed::{BackendChoice, DistOptions, Distributed, LaunchEnv};

pub fn free_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free local port")
}

pub fn launch_env(rank: usize, world_size: usize, port: u16) -> LaunchEnv {
    LaunchEnv {
        rank,
        world_size,
        local_rank: rank,
        local_world_size: Some(world_size),
        master_addr: "127.0.0.1".to_owned(),
        master_port: port,
        source: "test",
        agent_store: false,
        attempt: 0,
    }
}

pub fn gloo(timeout: Duration) -> DistOptions {
    DistOptions {
        backend: BackendChoice::Gloo,
        timeout,
        group_of_one: false,
    }
}

/// `f(dist)` on each of `world_size` ranks; the results in rank order.
pub fn on_ranks<R: Send + 'static>(
    world_size: usize,
    f: impl Fn(&Distributed) -> Result<R> + Send + Sync + 'static,
) -> Vec<R> {
    let port = free_port();
    let f = std::sync::Arc::new(f);
    let handles: Vec<_> = (0..world_size)
        .map(|rank| {
            let f = f.clone();
            std::thread::spawn(move || -> Result<R> {
                let dist = Distributed::join(
                    &launch_env(rank, world_size, port),
                    &gloo(Duration::from_secs(20)),
                )?;
                f(&dist)
            })
        })
        .collect();
    handles
        .into_iter()
        .enumerate()
        .map(|(rank, h)| match h.join().expect("rank thread panicked") {
            Ok(r) => r,
            Err(e) => panic!("rank {rank}: {e:#}"),
        })
        .collect()
}
