//! Reads who this process is from the variables torchrun (and `lmmhost run
//! --nproc`) set, with Slurm's as fallbacks.

use anyhow::{bail, Result};

/// The default rendezvous port, as torchrun's.
pub const DEFAULT_MASTER_PORT: u16 = 29500;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchEnv {
    pub rank: usize,
    pub world_size: usize,
    pub local_rank: usize,
    /// Ranks on this node (LOCAL_WORLD_SIZE or SLURM_NTASKS_PER_NODE), if known.
    pub local_world_size: Option<usize>,
    pub master_addr: String,
    pub master_port: u16,
    /// Where the values came from: "torchrun" or "slurm".
    pub source: &'static str,
    /// torchrun's agent already hosts the store at MASTER_PORT
    /// (TORCHELASTIC_USE_AGENT_STORE=True): rank 0 connects to it instead of
    /// hosting one.
    pub agent_store: bool,
    /// torchrun's restart count (TORCHELASTIC_RESTART_COUNT, else 0): a
    /// restarted world's keys in the agent's store are kept apart from the
    /// failed one's.
    pub attempt: u32,
}

fn parse_count(name: &str, value: &str) -> Result<usize> {
    value
        .trim()
        .parse::<usize>()
        .map_err(|_| anyhow::anyhow!("{name}={value:?} is not a non-negative integer"))
}

impl LaunchEnv {
    /// From this process's environment; `None` when neither torchrun's RANK
    /// nor Slurm's SLURM_PROCID is set (a plain single-process run).
    pub fn from_env() -> Result<Option<LaunchEnv>> {
        LaunchEnv::from_lookup(|name| std::env::var(name).ok())
    }

    /// As `from_env`, with variables looked up through `get`.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Option<LaunchEnv>> {
        let torchrun = get("RANK").is_some();
        let (source, rank_var, world_var, local_var) = if torchrun {
            ("torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK")
        } else if get("SLURM_PROCID").is_some() {
            ("slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID")
        } else {
            return Ok(None);
        };
        let required = |name: &str| -> Result<String> {
            match get(name) {
                Some(v) => Ok(v),
                None => bail!("{rank_var} is set but {name} is not: a {source} launch sets both"),
            }
        };
        let rank = parse_count(rank_var, &required(rank_var)?)?;
        let world_size = parse_count(world_var, &required(world_var)?)?;
        if world_size == 0 {
            bail!("{world_var}=0: there must be at least one rank");
        }
        if rank >= world_size {
            bail!("{rank_var}={rank} is not below {world_var}={world_size}");
        }
        let local_rank = parse_count(local_var, &required(local_var)?)?;
        let local_world_size = match get(if torchrun {
            "LOCAL_WORLD_SIZE"
        } else {
            "SLURM_NTASKS_PER_NODE"
        }) {
            // Slurm writes e.g. "4(x2)" for heterogeneous layouts: keep the first count.
            Some(v) => v
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|d| d.parse().ok()),
            None => None,
        };
        if let Some(n) = local_world_size {
            if local_rank >= n {
                bail!("{local_var}={local_rank} is not below the {n} ranks on this node");
            }
        }
        let master_addr = match get("MASTER_ADDR") {
            Some(addr) if !addr.trim().is_empty() => addr.trim().to_owned(),
            _ if world_size == 1 => "127.0.0.1".to_owned(),
            _ if !torchrun => match get("SLURM_JOB_NODELIST").or_else(|| get("SLURM_NODELIST")) {
                Some(list) => first_slurm_host(&list)?,
                None => bail!(
                    "MASTER_ADDR is not set and neither is SLURM_JOB_NODELIST to take the first node from"
                ),
            },
            _ => bail!("{world_var}={world_size} but MASTER_ADDR is not set: the address of rank 0's node"),
        };
        let master_port = match get("MASTER_PORT") {
            Some(port) => port.trim().parse::<u16>().map_err(|_| {
                anyhow::anyhow!("MASTER_PORT={port:?} is not a port number (1-65535)")
            })?,
            None => DEFAULT_MASTER_PORT,
        };
        if master_port == 0 {
            bail!("MASTER_PORT=0: rank 0 listens on it, so it must be a fixed port");
        }
        let agent_store = get("TORCHELASTIC_USE_AGENT_STORE")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
            && torchrun;
        let attempt = match get("TORCHELASTIC_RESTART_COUNT") {
            Some(v) if torchrun => parse_count("TORCHELASTIC_RESTART_COUNT", &v)? as u32,
            _ => 0,
        };
        Ok(Some(LaunchEnv {
            rank,
            world_size,
            local_rank,
            local_world_size,
            master_addr,
            master_port,
            source,
            agent_store,
            attempt,
        }))
    }
}

/// The first host of a Slurm node list such as `gpu[03-05,9],cpu1` (gpu03).
pub fn first_slurm_host(list: &str) -> Result<String> {
    let list = list.trim();
    let first_item_end = {
        let mut depth = 0;
        let mut end = list.len();
        for (i, c) in list.char_indices() {
            match c {
                '[' => depth += 1,
                ']' => depth -= 1,
                ',' if depth == 0 => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        end
    };
    let item = &list[..first_item_end];
    let host = match item.find('[') {
        None => item.to_owned(),
        Some(open) => {
            let Some(close) = item[open..].find(']') else {
                bail!("SLURM_JOB_NODELIST={list:?}: unbalanced '['");
            };
            let range = &item[open + 1..open + close];
            let first = range.split([',', '-']).next().unwrap_or("");
            format!("{}{}{}", &item[..open], first, &item[open + close + 1..])
        }
    };
    if host.is_empty() {
        bail!("SLURM_JOB_NODELIST={list:?} names no host");
    }
    Ok(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<Option<LaunchEnv>> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        LaunchEnv::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn torchrun_variables() {
        let e = env(&[
            ("RANK", "3"),
            ("WORLD_SIZE", "8"),
            ("LOCAL_RANK", "1"),
            ("LOCAL_WORLD_SIZE", "2"),
            ("MASTER_ADDR", "node0"),
            ("MASTER_PORT", "1234"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            (e.rank, e.world_size, e.local_rank, e.local_world_size),
            (3, 8, 1, Some(2))
        );
        assert_eq!(
            (e.master_addr.as_str(), e.master_port, e.source),
            ("node0", 1234, "torchrun")
        );
    }

    /// Under torchrun's agent store rank 0 connects instead of hosting, and
    /// a restart's keys are its own; neither applies to Slurm.
    #[test]
    fn torchrun_agent_store_and_restarts() {
        let base = [
            ("RANK", "0"),
            ("WORLD_SIZE", "2"),
            ("LOCAL_RANK", "0"),
            ("MASTER_ADDR", "node0"),
        ];
        let plain = env(&base).unwrap().unwrap();
        assert_eq!((plain.agent_store, plain.attempt), (false, 0));
        let mut vars = base.to_vec();
        vars.extend([
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
            ("TORCHELASTIC_RESTART_COUNT", "2"),
        ]);
        let agent = env(&vars).unwrap().unwrap();
        assert_eq!((agent.agent_store, agent.attempt), (true, 2));
        let slurm = env(&[
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "2"),
            ("SLURM_LOCALID", "0"),
            ("MASTER_ADDR", "node0"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
            ("TORCHELASTIC_RESTART_COUNT", "2"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!((slurm.agent_store, slurm.attempt), (false, 0));
    }

    #[test]
    fn slurm_fallbacks_take_the_first_node() {
        let e = env(&[
            ("SLURM_PROCID", "5"),
            ("SLURM_NTASKS", "8"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_NTASKS_PER_NODE", "4(x2)"),
            ("SLURM_JOB_NODELIST", "gpu[07-08]"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            (e.rank, e.world_size, e.local_rank, e.local_world_size),
            (5, 8, 1, Some(4))
        );
        assert_eq!(
            (e.master_addr.as_str(), e.master_port, e.source),
            ("gpu07", DEFAULT_MASTER_PORT, "slurm")
        );
    }

    #[test]
    fn torchrun_wins_over_slurm() {
        let e = env(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "2"),
            ("LOCAL_RANK", "0"),
            ("MASTER_ADDR", "a"),
            ("SLURM_PROCID", "7"),
            ("SLURM_NTASKS", "9"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!((e.rank, e.world_size, e.source), (0, 2, "torchrun"));
    }

    #[test]
    fn no_launcher_is_a_single_process() {
        assert_eq!(env(&[]).unwrap(), None);
    }

    #[test]
    fn errors_name_the_variable() {
        let msg = |pairs: &[(&str, &str)]| env(pairs).unwrap_err().to_string();
        assert!(
            msg(&[("RANK", "x"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "0")]).contains("RANK=\"x\"")
        );
        assert!(
            msg(&[("RANK", "2"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "0")])
                .contains("RANK=2 is not below WORLD_SIZE=2")
        );
        assert!(msg(&[("RANK", "0"), ("LOCAL_RANK", "0")]).contains("WORLD_SIZE is not"));
        assert!(
            msg(&[("RANK", "0"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "0")]).contains("MASTER_ADDR")
        );
        assert!(msg(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "2"),
            ("LOCAL_RANK", "0"),
            ("MASTER_ADDR", "h"),
            ("MASTER_PORT", "70000")
        ])
        .contains("MASTER_PORT=\"70000\""));
        assert!(msg(&[
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "2"),
            ("SLURM_LOCALID", "0")
        ])
        .contains("SLURM_JOB_NODELIST"));
    }

    #[test]
    fn slurm_node_lists() {
        assert_eq!(first_slurm_host("node1").unwrap(), "node1");
        assert_eq!(first_slurm_host("gpu[03-05,9],cpu1").unwrap(), "gpu03");
        assert_eq!(first_slurm_host("a[1,4]-ib,b2").unwrap(), "a1-ib");
        assert_eq!(first_slurm_host("c1,c2").unwrap(), "c1");
        assert!(first_slurm_host("x[1-2").is_err());
    }
}
