//! Starts N local ranks of a program with torchrun's variables, as
//! `torchrun --standalone --nproc-per-node N` would: the launcher hosts the
//! rendezvous store on a port it holds from the start (torchrun's agent
//! store), the first rank to fail stops the others, and its exit code
//! becomes the launcher's.

use std::ffi::OsString;
use std::fmt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use crate::store::Store;

/// How often the children are polled.
const POLL: Duration = Duration::from_millis(20);

/// How long the launcher's store waits in its own calls (it makes none).
const STORE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
pub struct LocalLaunch {
    pub nproc: usize,
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub master_addr: String,
    /// `None`: the launcher hosts the store on a free port of
    /// `master_addr` (no other process can take the port between its choice
    /// and rank 0's start); `Some`: rank 0 hosts it there.
    pub master_port: Option<u16>,
    /// Extra variables for every rank.
    pub env: Vec<(OsString, OsString)>,
    /// How long the other ranks get between SIGTERM and SIGKILL once one failed.
    pub grace: Duration,
}

#[derive(Debug)]
pub enum LaunchError {
    /// This process already is a rank: launching ranks from it would nest worlds.
    AlreadyARank,
    /// No rank to start (nproc = 0).
    NoRanks,
    /// The launcher could not host the rendezvous store.
    Store(String),
    Spawn {
        rank: usize,
        error: std::io::Error,
    },
    /// `rank` exited unsuccessfully (the first to do so); the others were stopped.
    RankFailed {
        rank: usize,
        status: ExitStatus,
    },
}

impl LaunchError {
    /// The exit code the launcher should end with: the failed rank's, or
    /// 128 + signal when it was killed by one (as a shell reports it).
    pub fn exit_code(&self) -> i32 {
        match self {
            LaunchError::RankFailed { status, .. } => status
                .code()
                .or_else(|| status.signal().map(|s| 128 + s))
                .unwrap_or(1),
            _ => 1,
        }
    }
}

impl fmt::Display for LaunchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LaunchError::AlreadyARank => write!(
                f,
                "RANK is already set: this process was started as a rank (by torchrun, Slurm or --nproc), \
                 so it cannot start ranks itself; drop --nproc"
            ),
            LaunchError::NoRanks => write!(f, "--nproc must be at least 1"),
            LaunchError::Store(e) => {
                write!(f, "could not host the rendezvous store on a free local port: {e}")
            }
            LaunchError::Spawn { rank, error } => write!(f, "could not start rank {rank}: {error}"),
            LaunchError::RankFailed { rank, status } => match (status.code(), status.signal()) {
                (Some(code), _) => write!(f, "rank {rank} exited with code {code}; the other ranks were stopped"),
                (None, Some(sig)) => write!(f, "rank {rank} was killed by signal {sig}; the other ranks were stopped"),
                _ => write!(f, "rank {rank} failed ({status}); the other ranks were stopped"),
            },
        }
    }
}

impl std::error::Error for LaunchError {}

impl LocalLaunch {
    pub fn new(nproc: usize, program: impl Into<PathBuf>, args: Vec<OsString>) -> LocalLaunch {
        LocalLaunch {
            nproc,
            program: program.into(),
            args,
            master_addr: "127.0.0.1".to_owned(),
            master_port: None,
            env: Vec::new(),
            grace: Duration::from_secs(10),
        }
    }

    /// Ranks of the running executable itself, with `args`.
    pub fn current_exe(nproc: usize, args: Vec<OsString>) -> std::io::Result<LocalLaunch> {
        Ok(LocalLaunch::new(nproc, std::env::current_exe()?, args))
    }

    /// Runs the ranks to completion.
    pub fn run(&self) -> Result<(), LaunchError> {
        if std::env::var_os("RANK").is_some() {
            return Err(LaunchError::AlreadyARank);
        }
        if self.nproc == 0 {
            return Err(LaunchError::NoRanks);
        }
        // Held until the ranks end; the ranks connect to it as torchrun's
        // do to its agent's.
        let (agent_store, port) = match self.master_port {
            Some(port) => (None, port),
            None => {
                let store = Store::connect(&self.master_addr, 0, true, STORE_TIMEOUT)
                    .map_err(|e| LaunchError::Store(format!("{e:#}")))?;
                let port = store.port();
                (Some(store), port)
            }
        };
        // As many cores per rank as there are, so N ranks do not each start
        // one thread per core (torchrun sets 1).
        let threads = std::env::var_os("OMP_NUM_THREADS").is_none().then(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            (cores / self.nproc).max(1).to_string()
        });
        let mut children: Vec<Option<Child>> = Vec::with_capacity(self.nproc);
        for rank in 0..self.nproc {
            let mut cmd = Command::new(&self.program);
            cmd.args(&self.args)
                .env("RANK", rank.to_string())
                .env("LOCAL_RANK", rank.to_string())
                .env("WORLD_SIZE", self.nproc.to_string())
                .env("LOCAL_WORLD_SIZE", self.nproc.to_string())
                .env("GROUP_RANK", "0")
                .env("MASTER_ADDR", &self.master_addr)
                .env("MASTER_PORT", port.to_string());
            if let Some(t) = &threads {
                cmd.env("OMP_NUM_THREADS", t);
            }
            if agent_store.is_some() {
                cmd.env("TORCHELASTIC_USE_AGENT_STORE", "True");
            }
            cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
            // SAFETY: prctl is async-signal-safe; it only sets a flag of the child.
            unsafe {
                cmd.pre_exec(|| {
                    // A rank must not outlive its launcher (killed, or crashed).
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            match cmd.spawn() {
                Ok(child) => children.push(Some(child)),
                Err(error) => {
                    stop_all(&mut children, self.grace);
                    return Err(LaunchError::Spawn { rank, error });
                }
            }
        }
        let mut running = self.nproc;
        while running > 0 {
            for rank in 0..children.len() {
                let Some(child) = children[rank].as_mut() else {
                    continue;
                };
                let Ok(Some(status)) = child.try_wait() else {
                    continue;
                };
                children[rank] = None;
                running -= 1;
                if !status.success() {
                    stop_all(&mut children, self.grace);
                    return Err(LaunchError::RankFailed { rank, status });
                }
            }
            std::thread::sleep(POLL);
        }
        Ok(())
    }
}

/// SIGTERM to every child still running, SIGKILL to those left after `grace`.
fn stop_all(children: &mut [Option<Child>], grace: Duration) {
    for child in children.iter().flatten() {
        // SAFETY: signalling our own child, which has not been reaped yet.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    }
    let deadline = Instant::now() + grace;
    loop {
        let mut left = 0;
        for slot in children.iter_mut() {
            if let Some(child) = slot {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => *slot = None,
                    Ok(None) => left += 1,
                }
            }
        }
        if left == 0 {
            return;
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(POLL);
    }
    for child in children.iter_mut().flatten() {
        let _ = child.kill();
        let _ = child.wait();
    }
}
