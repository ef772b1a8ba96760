//! Checkpoint directories written atomically: everything goes into a hidden
//! temporary directory first, which is renamed to `step-NNNNNNNN` only once
//! complete, and the `latest` pointer is replaced by rename too. A crash
//! mid-write leaves the previous checkpoint and pointer intact; the leftover
//! temporary directory is removed at the next save.
//!
//! A checkpoint is removed (pruned, or replaced by a re-save of its step) by
//! renaming it to a hidden name first: `remove_dir_all` is not atomic, and a
//! crash in the middle of it must not leave a `step-NNNNNNNN` directory that
//! looks complete but lacks files.
//!
//! Older checkpoints are pruned only after the new one is in place, so
//! `keep_last = k` needs room for k + 1 checkpoints at the moment of a save.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

pub struct CheckpointStore {
    dir: PathBuf,
    keep_last: usize,
}

const LATEST: &str = "latest";
const TMP_PREFIX: &str = ".incomplete-";

impl CheckpointStore {
    pub fn new(dir: impl Into<PathBuf>, keep_last: usize) -> CheckpointStore {
        CheckpointStore {
            dir: dir.into(),
            keep_last: keep_last.max(1),
        }
    }

    pub fn step_dir(&self, step: u64) -> PathBuf {
        self.dir.join(format!("step-{step:08}"))
    }

    /// Where checkpoint `step` is written before it is complete: under
    /// ZeRO every rank writes its optimizer shards there, while rank 0's
    /// `save` waits for them before renaming it.
    pub fn incomplete_dir(&self, step: u64) -> PathBuf {
        self.dir.join(format!("{TMP_PREFIX}step-{step:08}"))
    }

    /// Writes checkpoint `step`: `write` fills the directory it is given.
    pub fn save(&self, step: u64, write: impl FnOnce(&Path) -> Result<()>) -> Result<PathBuf> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create checkpoint dir {}", self.dir.display()))?;
        self.remove_incomplete()?;
        let tmp = self.incomplete_dir(step);
        std::fs::create_dir_all(&tmp).with_context(|| {
            format!(
                "cannot create {} for the checkpoint of step {step}",
                tmp.display()
            )
        })?;
        write(&tmp)
            .and_then(|()| sync_dir(&tmp))
            .map_err(|e| {
                // A partial write is never read, and on a full disk its space
                // is what a user needs back before resuming.
                let _ = std::fs::remove_dir_all(&tmp);
                self.explain_full_disk(e)
            })
            .with_context(|| {
                format!("writing checkpoint for step {step} into {}", tmp.display())
            })?;
        let final_dir = self.step_dir(step);
        // Re-saving a step (e.g. after resume) replaces it; `latest`
        // restores the old one if a crash comes between the two renames.
        replace_dir(&tmp, &final_dir, &self.replaced_dir(&final_dir))?;
        let pointer_tmp = self.dir.join(format!("{TMP_PREFIX}{LATEST}"));
        std::fs::write(&pointer_tmp, format!("step-{step:08}\n"))
            .with_context(|| format!("cannot write {}", pointer_tmp.display()))?;
        std::fs::rename(&pointer_tmp, self.dir.join(LATEST))
            .context("cannot update the latest pointer")?;
        sync_dir(&self.dir)?;
        self.prune()?;
        Ok(final_dir)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Adds what to do to an error that is a full disk.
    fn explain_full_disk(&self, e: anyhow::Error) -> anyhow::Error {
        let full = e.chain().any(|c| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::StorageFull)
                || c.to_string().contains("No space left on device")
        });
        if !full {
            return e;
        }
        let last = match self.latest() {
            Ok(Some(d)) => format!("the last complete checkpoint is {}", d.display()),
            _ => "there is no complete checkpoint yet".to_string(),
        };
        e.context(format!(
            "the disk holding {} is full ({last}; checkpoint.keep_last = {} needs room for {} checkpoints while a new one is written): free space, then resume with --resume",
            self.dir.display(),
            self.keep_last,
            self.keep_last + 1
        ))
    }

    /// The checkpoint `latest` points to, if any.
    pub fn latest(&self) -> Result<Option<PathBuf>> {
        let pointer = self.dir.join(LATEST);
        if !pointer.exists() {
            return Ok(None);
        }
        let name = std::fs::read_to_string(&pointer)
            .with_context(|| format!("cannot read {}", pointer.display()))?;
        let name = name.trim();
        let remedy = || {
            match self.list() {
            Ok(all) if !all.is_empty() => format!(
                "write the name of a complete checkpoint into it (here: {}), or remove it to start over",
                all.iter()
                    .map(|(s, _)| format!("step-{s:08}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            _ => "remove it to start over".to_string(),
        }
        };
        let is_step = name
            .strip_prefix("step-")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if !is_step {
            bail!(
                "{} should name a checkpoint directory (step-NNNNNNNN) but holds {:?}: {}",
                pointer.display(),
                name,
                remedy()
            );
        }
        let dir = self.dir.join(name);
        let replaced = self.replaced_dir(&dir);
        if !dir.is_dir() && replaced.is_dir() {
            std::fs::rename(&replaced, &dir).with_context(|| {
                format!(
                    "cannot restore {} (moved aside by a re-save that did not finish)",
                    dir.display()
                )
            })?;
        }
        if !dir.is_dir() {
            bail!(
                "{} points to {}, which does not exist: {}",
                pointer.display(),
                dir.display(),
                remedy()
            );
        }
        Ok(Some(dir))
    }

    /// Fails unless checkpoints can be written here: the directory exists
    /// or can be created, and a file can be written into it and removed.
    pub fn check_writable(&self) -> Result<()> {
        check_writable(&self.dir)
    }

    /// Complete checkpoints, oldest first.
    pub fn list(&self) -> Result<Vec<(u64, PathBuf)>> {
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Ok(out);
        };
        for e in entries {
            let e = e.with_context(|| format!("cannot list {}", self.dir.display()))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(step) = name
                .strip_prefix("step-")
                .and_then(|s| s.parse::<u64>().ok())
            {
                out.push((step, e.path()));
            }
        }
        out.sort();
        Ok(out)
    }

    fn prune(&self) -> Result<()> {
        let all = self.list()?;
        let excess = all.len().saturating_sub(self.keep_last);
        for (step, dir) in &all[..excess] {
            let doomed = self.dir.join(format!("{TMP_PREFIX}pruned-step-{step:08}"));
            std::fs::rename(dir, &doomed)
                .and_then(|()| std::fs::remove_dir_all(&doomed))
                .with_context(|| format!("cannot remove old checkpoint {}", dir.display()))?;
        }
        Ok(())
    }

    /// Where the checkpoint directory `dir` waits while a re-save of its
    /// step replaces it.
    fn replaced_dir(&self, dir: &Path) -> PathBuf {
        let name = dir.file_name().unwrap_or_default().to_string_lossy();
        self.dir.join(format!("{TMP_PREFIX}replaced-{name}"))
    }

    fn remove_incomplete(&self) -> Result<()> {
        for e in std::fs::read_dir(&self.dir)
            .with_context(|| format!("cannot list {}", self.dir.display()))?
        {
            let e = e?;
            if e.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                let p = e.path();
                if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                }
                .with_context(|| format!("cannot remove incomplete checkpoint {}", p.display()))?;
            }
        }
        Ok(())
    }
}

/// Fails unless `dir` exists or can be created and a file can be written
/// into it, synced and removed. Run before training, so that a directory
/// under a regular file or on a read-only mount is found before any compute.
pub fn check_writable(dir: &Path) -> Result<()> {
    if let Some(file) = dir.ancestors().find(|a| a.is_file()) {
        bail!(
            "cannot create {}: {} is a file, not a directory",
            dir.display(),
            file.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let probe = dir.join(format!("{TMP_PREFIX}write-check-{}", std::process::id()));
    let written = std::fs::File::create(&probe)
        .and_then(|mut f| {
            use std::io::Write;
            f.write_all(b"lmmhost write check\n")?;
            f.sync_all()
        })
        .with_context(|| format!("{} is not writable", dir.display()));
    let removed = std::fs::remove_file(&probe);
    written?;
    removed.with_context(|| format!("cannot remove {}", probe.display()))
}

/// Moves the complete directory `new` to `dir`, replacing what is there. The
/// old `dir` is moved to `aside` first and removed last: a crash inside a
/// removal must not leave `dir` in place but lacking files.
pub fn replace_dir(new: &Path, dir: &Path, aside: &Path) -> Result<()> {
    if aside.exists() {
        std::fs::remove_dir_all(aside)
            .with_context(|| format!("cannot remove {}", aside.display()))?;
    }
    if dir.exists() {
        std::fs::rename(dir, aside).with_context(|| format!("cannot replace {}", dir.display()))?;
    }
    std::fs::rename(new, dir)
        .with_context(|| format!("cannot move {} to {}", new.display(), dir.display()))?;
    if aside.exists() {
        std::fs::remove_dir_all(aside)
            .with_context(|| format!("cannot remove {}", aside.display()))?;
    }
    Ok(())
}

/// Flushes a directory's entries (and its files and folders) to disk.
fn sync_dir(dir: &Path) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let p = e?.path();
        if p.is_dir() {
            sync_dir(&p)?;
        } else if p.is_file() {
            std::fs::File::open(&p)
                .and_then(|f| f.sync_all())
                .with_context(|| format!("cannot sync {}", p.display()))?;
        }
    }
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot sync {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_last_k_and_points_to_latest() {
        let d = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(d.path(), 2);
        for step in [10, 20, 30] {
            store
                .save(step, |dir| {
                    Ok(std::fs::write(dir.join("state.json"), format!("{step}"))?)
                })
                .unwrap();
        }
        let steps: Vec<u64> = store.list().unwrap().into_iter().map(|(s, _)| s).collect();
        assert_eq!(steps, vec![20, 30]);
        let latest = store.latest().unwrap().unwrap();
        assert_eq!(
            std::fs::read_to_string(latest.join("state.json")).unwrap(),
            "30"
        );
    }

    /// The states a kill -9 can leave while a checkpoint is being removed.
    #[test]
    fn a_crash_while_removing_a_checkpoint_leaves_none_half_removed() {
        let d = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(d.path(), 2);
        let save = |step: u64, text: &str| {
            store
                .save(step, |dir| {
                    Ok(std::fs::write(dir.join("state.json"), text)?)
                })
                .unwrap()
        };
        save(1, "1");
        save(2, "2");
        // Killed in the middle of pruning step 1: what is left of it is
        // hidden, never listed, and gone at the next save.
        let pruned = d.path().join(".incomplete-pruned-step-00000001");
        std::fs::rename(store.step_dir(1), &pruned).unwrap();
        std::fs::remove_file(pruned.join("state.json")).unwrap();
        let steps: Vec<u64> = store.list().unwrap().into_iter().map(|(s, _)| s).collect();
        assert_eq!(steps, vec![2]);
        save(3, "3");
        assert!(!pruned.exists());
        // Killed between moving step 3 aside for a re-save and moving the
        // new one in: `latest` still names step 3 and gets it back.
        std::fs::rename(store.step_dir(3), store.replaced_dir(&store.step_dir(3))).unwrap();
        let latest = store.latest().unwrap().unwrap();
        assert_eq!(
            std::fs::read_to_string(latest.join("state.json")).unwrap(),
            "3"
        );
        // A re-save that finishes replaces the contents and leaves nothing aside.
        save(3, "3 again");
        assert_eq!(
            std::fs::read_to_string(store.step_dir(3).join("state.json")).unwrap(),
            "3 again"
        );
        assert!(!store.replaced_dir(&store.step_dir(3)).exists());
    }

    #[test]
    fn a_failed_write_leaves_the_previous_checkpoint() {
        let d = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(d.path(), 3);
        store
            .save(1, |dir| Ok(std::fs::write(dir.join("a"), "1")?))
            .unwrap();
        let err = store
            .save(2, |dir| {
                std::fs::write(dir.join("a"), "half")?;
                bail!("disk full")
            })
            .unwrap_err();
        assert!(format!("{err:#}").contains("disk full"));
        assert_eq!(store.latest().unwrap().unwrap(), store.step_dir(1));
        assert_eq!(store.list().unwrap().len(), 1);
        let leftovers = || -> Vec<String> {
            std::fs::read_dir(d.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(TMP_PREFIX))
                .collect()
        };
        // The partial write is removed at once (its space is freed).
        assert_eq!(leftovers(), Vec::<String>::new());
        // One a killed process left behind is removed at the next save.
        std::fs::create_dir(d.path().join(format!("{TMP_PREFIX}step-00000003"))).unwrap();
        store
            .save(3, |dir| Ok(std::fs::write(dir.join("a"), "3")?))
            .unwrap();
        assert_eq!(leftovers(), Vec::<String>::new());
    }

    #[test]
    fn a_bad_latest_pointer_names_the_checkpoints_there() {
        let d = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(d.path(), 3);
        for step in [4, 8] {
            store
                .save(step, |dir| Ok(std::fs::write(dir.join("a"), "x")?))
                .unwrap();
        }
        let pointer = d.path().join(LATEST);
        for (content, what) in [("", "holds \"\""), ("../etc", "holds \"../etc\"")] {
            std::fs::write(&pointer, content).unwrap();
            let msg = format!("{:#}", store.latest().unwrap_err());
            assert!(
                msg.contains(&format!(
                    "{} should name a checkpoint directory",
                    pointer.display()
                )) && msg.contains(what)
                    && msg.contains("(here: step-00000004, step-00000008)"),
                "{msg}"
            );
        }
        std::fs::write(&pointer, "step-00000009").unwrap();
        let msg = format!("{:#}", store.latest().unwrap_err());
        assert!(
            msg.contains("step-00000009, which does not exist")
                && msg.contains("step-00000004, step-00000008"),
            "{msg}"
        );
    }

    #[test]
    fn a_full_disk_names_the_directory_and_the_last_checkpoint() {
        let d = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(d.path(), 2);
        store
            .save(1, |dir| Ok(std::fs::write(dir.join("a"), "1")?))
            .unwrap();
        let err = store
            .save(2, |_| {
                Err(std::io::Error::from(std::io::ErrorKind::StorageFull))
                    .context("cannot write model.safetensors")
            })
            .unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains(&format!("the disk holding {} is full", d.path().display()))
                && msg.contains(&format!(
                    "the last complete checkpoint is {}",
                    store.step_dir(1).display()
                ))
                && msg.contains("keep_last = 2 needs room for 3 checkpoints")
                && msg.contains("resume with --resume"),
            "{msg}"
        );
    }

    #[test]
    fn a_directory_under_a_file_is_not_writable() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let msg = format!("{:#}", check_writable(&file.join("ckpt")).unwrap_err());
        assert!(
            msg.contains(&format!("{} is a file", file.display())),
            "{msg}"
        );
        check_writable(&d.path().join("new/dir")).unwrap();
        assert_eq!(
            std::fs::read_dir(d.path().join("new/dir")).unwrap().count(),
            0
        );
    }
}
