//! Rank 0 hosts the TCPStore (under torchrun, its agent does); every rank
//! connects, registers its WORLD_SIZE and waits for the others, so a wrong
//! launch fails with the variable to fix instead of c10d's later, vaguer
//! timeout.

use std::time::Duration;

use anyhow::{anyhow, bail, Result};

use crate::launch_env::LaunchEnv;
use crate::store::Store;

/// The keys of one attempt (a torchrun restart gets fresh ones).
fn key(env: &LaunchEnv, what: &str, rank: usize) -> String {
    format!("lmmhost/{}/rendezvous/{what}/{rank}", env.attempt)
}

/// The connected store, once all WORLD_SIZE ranks have joined and agree on it.
pub fn rendezvous(env: &LaunchEnv, timeout: Duration) -> Result<Store> {
    let (rank, world) = (env.rank, env.world_size);
    let where_ = format!(
        "MASTER_ADDR={} MASTER_PORT={}",
        env.master_addr, env.master_port
    );
    let host = rank == 0 && !env.agent_store;
    let store = Store::connect(&env.master_addr, env.master_port, host, timeout).map_err(|e| {
        if host {
            anyhow!("rank 0 could not host the rendezvous store at {where_}: {e}")
        } else {
            anyhow!(
                "rank {rank} of {world} could not reach the rendezvous store at {where_} within {:.0?} \
                 (is rank 0 running, and do all ranks have the same MASTER_ADDR and MASTER_PORT?): {e}",
                timeout
            )
        }
    })?;

    let claims = store.add(&key(env, "claims", rank), 1)?;
    if claims > 1 {
        bail!("RANK={rank} is used by more than one process (each rank needs its own RANK)");
    }
    store.set(&key(env, "world_size", rank), world.to_string().as_bytes())?;

    let keys: Vec<String> = (0..world).map(|r| key(env, "world_size", r)).collect();
    if let Err(wait_error) = store.wait(&keys, timeout) {
        let mut joined = Vec::new();
        let mut disagree = Vec::new();
        for (r, key) in keys.iter().enumerate() {
            if store.check(key).unwrap_or(false) {
                joined.push(r.to_string());
                if let Some(theirs) = read_world(env, &store, r) {
                    if theirs != world {
                        disagree.push(format!("rank {r} has WORLD_SIZE={theirs}"));
                    }
                }
            }
        }
        let extra = if disagree.is_empty() {
            String::new()
        } else {
            format!("; {}", disagree.join(", "))
        };
        bail!(
            "rank {rank}: only {} of WORLD_SIZE={world} ranks joined the rendezvous at {where_} within {:.0?} \
             (joined: {}){extra}: {wait_error}",
            joined.len(),
            timeout,
            joined.join(", ")
        );
    }
    for r in 0..world {
        match read_world(env, &store, r) {
            Some(theirs) if theirs == world => {}
            Some(theirs) => bail!(
                "WORLD_SIZE mismatch: rank {rank} has WORLD_SIZE={world}, rank {r} has WORLD_SIZE={theirs} \
                 (every rank must be launched with the same WORLD_SIZE)"
            ),
            None => bail!("rank {rank}: rank {r} registered an unreadable WORLD_SIZE"),
        }
    }
    Ok(store)
}

fn read_world(env: &LaunchEnv, store: &Store, rank: usize) -> Option<usize> {
    let bytes = store.get(&key(env, "world_size", rank)).ok()?;
    String::from_utf8(bytes).ok()?.parse().ok()
}
