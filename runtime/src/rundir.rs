//! The run directory a run writes (`--out`): claimed before the first step so that no run
//! overwrites another's output and two runs never write the same directory at once.
//!
//! - A directory that already holds a run (metrics, summary, checkpoints or exported models)
//!   is refused unless the run resumes it or `force` replaces it.
//! - A lock file (`.post.lock`, holding the writer's process id) is created with
//!   `create_new`; a lock left by a process that no longer exists (a killed run) is taken over.
//! - Temporary checkpoint directories that killed runs left behind (`.step-N.tmp-PID` under
//!   `checkpoints/`, see [`crate::checkpoint`]) are removed when their process is gone.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The files and folders whose presence means the directory holds a run.
const RUN_OUTPUTS: &[&str] = &[
    "metrics.jsonl",
    "summary.json",
    "curves.svg",
    "checkpoints",
    "models",
];

/// The lock file's name inside the run directory.
pub const LOCK_FILE: &str = ".post.lock";

/// Held while a run writes its directory; the lock file is removed when it drops.
#[derive(Debug)]
pub struct RunDirLock {
    path: PathBuf,
}

impl Drop for RunDirLock {
    fn drop(&mut self) {
        // A lock that cannot be removed is taken over by the next run (its process is gone).
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Why a run directory could not be claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimError {
    /// It holds a run and the new run neither resumes nor replaces it.
    HoldsRun {
        dir: PathBuf,
        what: String,
    },
    /// Another live process holds its lock.
    Locked {
        dir: PathBuf,
        pid: u32,
    },
    Io {
        dir: PathBuf,
        message: String,
    },
}

impl std::fmt::Display for ClaimError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClaimError::HoldsRun { dir, what } => write!(
                f,
                "{} already holds a run ({what}); nothing was overwritten. Continue it with `--resume {}`, write to another `--out`, or pass `--force` to replace it",
                dir.display(),
                dir.display()
            ),
            ClaimError::Locked { dir, pid } => write!(
                f,
                "{} is being written by another run (process {pid}, lock file {}); wait for it or use another `--out`",
                dir.display(),
                dir.join(LOCK_FILE).display()
            ),
            ClaimError::Io { dir, message } => write!(f, "{}: {message}", dir.display()),
        }
    }
}

/// What of a run `dir` holds, if anything (for the refusal message).
fn existing_run(dir: &Path) -> Option<String> {
    let found: Vec<&str> = RUN_OUTPUTS
        .iter()
        .copied()
        .filter(|f| dir.join(f).exists())
        .collect();
    if found.is_empty() {
        return None;
    }
    let finished = dir.join("summary.json").is_file();
    let steps = std::fs::read_to_string(dir.join("metrics.jsonl"))
        .map(|t| t.lines().filter(|l| !l.trim().is_empty()).count())
        .unwrap_or(0);
    Some(format!(
        "{}{steps} logged step(s); {}",
        if finished { "finished, " } else { "" },
        found.join(", ")
    ))
}

/// Whether process `pid` is alive (Linux: its /proc entry; elsewhere assume it is).
fn alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let proc = Path::new("/proc");
    if proc.is_dir() {
        proc.join(pid.to_string()).exists()
    } else {
        true
    }
}

/// Claim `dir` for a run: refuse one that holds a run unless `resume` or `force` (which then
/// removes the old run's outputs), take the lock, and clear temporaries of killed runs.
pub fn claim(dir: &Path, resume: bool, force: bool) -> Result<RunDirLock, ClaimError> {
    let io = |e: std::io::Error| ClaimError::Io {
        dir: dir.to_path_buf(),
        message: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let lock = take_lock(dir)?;
    if !resume && let Some(what) = existing_run(dir) {
        if !force {
            return Err(ClaimError::HoldsRun {
                dir: dir.to_path_buf(),
                what,
            });
        }
        for f in RUN_OUTPUTS {
            let p = dir.join(f);
            if p.is_dir() {
                std::fs::remove_dir_all(&p).map_err(io)?;
            } else if p.exists() {
                std::fs::remove_file(&p).map_err(io)?;
            }
        }
    }
    remove_stale_temporaries(&dir.join("checkpoints"));
    Ok(lock)
}

fn take_lock(dir: &Path) -> Result<RunDirLock, ClaimError> {
    let path = dir.join(LOCK_FILE);
    for _ in 0..2 {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut f) => {
                let _ = write!(f, "{}", std::process::id());
                return Ok(RunDirLock { path });
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let pid = std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|t| t.trim().parse::<u32>().ok());
                match pid {
                    Some(pid) if alive(pid) => {
                        return Err(ClaimError::Locked {
                            dir: dir.to_path_buf(),
                            pid,
                        });
                    }
                    // A killed run's lock (or an unreadable one): take it over.
                    _ => {
                        let _ = std::fs::remove_file(&path);
                    }
                }
            }
            Err(e) => {
                return Err(ClaimError::Io {
                    dir: dir.to_path_buf(),
                    message: e.to_string(),
                });
            }
        }
    }
    Err(ClaimError::Io {
        dir: dir.to_path_buf(),
        message: format!("cannot take the lock {}", path.display()),
    })
}

/// Remove `.<name>.tmp-<pid>` directories whose writer is gone.
fn remove_stale_temporaries(checkpoints: &Path) {
    let Ok(entries) = std::fs::read_dir(checkpoints) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((_, pid)) = name.rsplit_once(".tmp-") else {
            continue;
        };
        if name.starts_with('.')
            && let Ok(pid) = pid.parse::<u32>()
            && !alive(pid)
        {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("post-rundir-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_run_is_never_overwritten_without_resume_or_force() {
        let d = dir("over");
        drop(claim(&d, false, false).expect("an empty directory is claimed"));
        std::fs::write(d.join("metrics.jsonl"), "{}\n{}\n").unwrap();
        let e = claim(&d, false, false).expect_err("refused");
        assert!(e.to_string().contains("--resume"), "{e}");
        assert!(e.to_string().contains("2 logged step(s)"), "{e}");
        assert!(d.join("metrics.jsonl").is_file(), "nothing removed");
        drop(claim(&d, true, false).expect("resuming is allowed"));
        assert!(d.join("metrics.jsonl").is_file());
        drop(claim(&d, false, true).expect("force replaces"));
        assert!(!d.join("metrics.jsonl").exists());
    }

    #[test]
    fn a_live_lock_refuses_and_a_dead_one_is_taken_over() {
        let d = dir("lock");
        let held = claim(&d, false, false).unwrap();
        let e = claim(&d, false, false).expect_err("locked");
        assert!(matches!(e, ClaimError::Locked { .. }), "{e}");
        drop(held);
        assert!(!d.join(LOCK_FILE).exists(), "the lock is released on drop");
        // A lock naming a process that does not exist (pid_max is below 2^22 on Linux).
        std::fs::write(d.join(LOCK_FILE), "4194303").unwrap();
        drop(claim(&d, false, false).expect("a dead run's lock is taken over"));
    }

    #[test]
    fn temporaries_of_killed_runs_are_removed() {
        let d = dir("tmp");
        let stale = d.join("checkpoints/.step-7.tmp-4194303");
        let live = d.join(format!("checkpoints/.step-8.tmp-{}", std::process::id()));
        std::fs::create_dir_all(&stale).unwrap();
        std::fs::create_dir_all(&live).unwrap();
        drop(claim(&d, true, false).unwrap());
        assert!(!stale.exists());
        assert!(live.exists());
    }
}
