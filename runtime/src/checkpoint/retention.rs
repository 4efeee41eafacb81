//! Retention: after a checkpoint is in place (renamed and named by `latest`), keep the newest
//! `keep` checkpoints of the run plus the best one by the first eval metric, and delete the
//! rest.
//!
//! Crash safety: pruning runs only after the new checkpoint and `latest` are durable, never
//! touches the checkpoint `latest` names, and deletes a checkpoint by first renaming it to a
//! temporary name (`.step-N.pruned.tmp-<pid>`, which the next run removes, see
//! [`crate::rundir`]) so that a crash mid-deletion never leaves a half-deleted `step-N`.
//! Checkpoints numbered past the current step belong to an abandoned continuation (a resume
//! that fell back to an earlier checkpoint) and are not kept.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::{CheckpointError, io_err};
use crate::output::MetricGoal;

/// The global step of a checkpoint directory name (`step-000012` -> 12).
pub fn step_of(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("step-")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Every checkpoint directory under `root`, newest (highest step) first.
pub fn list(root: &Path) -> Result<Vec<(u64, PathBuf)>, CheckpointError> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_err(root, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io_err(root, e))?;
        let p = entry.path();
        if let Some(step) = entry.file_name().to_str().and_then(step_of)
            && p.is_dir()
        {
            out.push((step, p));
        }
    }
    out.sort_by_key(|b| std::cmp::Reverse(b.0));
    Ok(out)
}

/// The step whose value is best; ties go to the earliest step (the first to reach it), as in
/// the summary's `best`. Non-finite values never count.
pub fn best_step(scores: &[(u64, f64)], goal: MetricGoal) -> Option<u64> {
    let mut best: Option<(u64, f64)> = None;
    for &(step, v) in scores {
        if !v.is_finite() {
            continue;
        }
        let better = match best {
            None => true,
            Some((bs, bv)) => match goal {
                MetricGoal::Maximize => v > bv || (v == bv && step < bs),
                MetricGoal::Minimize => v < bv || (v == bv && step < bs),
            },
        };
        if better {
            best = Some((step, v));
        }
    }
    best.map(|(s, _)| s)
}

/// Which checkpoints (by step) to keep: the one `latest` names, the newest `keep` at or
/// before `current`, and `best`.
pub fn kept(
    steps: &[u64],
    keep: usize,
    current: u64,
    latest: Option<u64>,
    best: Option<u64>,
) -> BTreeSet<u64> {
    let mut ordered: Vec<u64> = steps.iter().copied().filter(|&s| s <= current).collect();
    ordered.sort_unstable_by_key(|s| std::cmp::Reverse(*s));
    let mut out: BTreeSet<u64> = ordered.into_iter().take(keep).collect();
    out.extend(latest);
    out.extend(best.filter(|b| steps.contains(b)));
    out
}

/// Delete every checkpoint under `root` that [`kept`] does not keep; returns the deleted
/// directories. `latest`'s checkpoint is read from the `latest` file here, not trusted from
/// the caller.
pub fn prune(
    root: &Path,
    keep: usize,
    current: u64,
    best: Option<u64>,
) -> Result<Vec<PathBuf>, CheckpointError> {
    let latest_file = root.join("latest");
    let latest = match std::fs::read_to_string(&latest_file) {
        Ok(name) => Some(step_of(name.trim()).ok_or_else(|| {
            CheckpointError::Invalid(format!(
                "{} names `{}`, not a checkpoint: nothing pruned",
                latest_file.display(),
                name.trim()
            ))
        })?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_err(&latest_file, e)),
    };
    let all = list(root)?;
    let steps: Vec<u64> = all.iter().map(|(s, _)| *s).collect();
    let keep_set = kept(&steps, keep.max(1), current, latest, best);
    let mut deleted = Vec::new();
    for (step, dir) in all {
        if keep_set.contains(&step) {
            continue;
        }
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let doomed = root.join(format!(".{name}.pruned.tmp-{}", std::process::id()));
        std::fs::rename(&dir, &doomed).map_err(|e| io_err(&dir, e))?;
        std::fs::remove_dir_all(&doomed).map_err(|e| io_err(&doomed, e))?;
        deleted.push(dir);
    }
    if !deleted.is_empty() {
        crate::output::sync_dir(root);
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_strictly() {
        assert_eq!(step_of("step-000012"), Some(12));
        assert_eq!(step_of("step-"), None);
        assert_eq!(step_of("step-12a"), None);
        assert_eq!(step_of(".step-000012.tmp-5"), None);
        assert_eq!(step_of("latest"), None);
    }

    #[test]
    fn best_prefers_the_goal_then_the_earliest() {
        let s = [(2, 0.5), (4, 0.7), (6, 0.7), (8, f64::NAN), (10, 0.1)];
        assert_eq!(best_step(&s, MetricGoal::Maximize), Some(4));
        assert_eq!(best_step(&s, MetricGoal::Minimize), Some(10));
        assert_eq!(best_step(&[], MetricGoal::Maximize), None);
    }

    #[test]
    fn keeps_the_newest_the_latest_and_the_best() {
        let steps = [2, 4, 6, 8, 10, 12];
        let k = kept(&steps, 2, 12, Some(12), Some(4));
        assert_eq!(k.into_iter().collect::<Vec<_>>(), vec![4, 10, 12]);
        // After a fallback to 6: 8..12 are an abandoned continuation, except what latest names.
        let k = kept(&steps, 2, 7, Some(6), None);
        assert_eq!(k.into_iter().collect::<Vec<_>>(), vec![4, 6]);
        // A best that no longer exists is not invented.
        let k = kept(&steps, 1, 12, Some(12), Some(3));
        assert_eq!(k.into_iter().collect::<Vec<_>>(), vec![12]);
    }

    #[test]
    fn prune_deletes_the_rest_and_never_latest() {
        let root = std::env::temp_dir().join(format!("post-prune-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for s in [1, 2, 3, 4, 5] {
            std::fs::create_dir_all(root.join(super::super::dir_name(s))).unwrap();
        }
        std::fs::create_dir_all(root.join(".step-000009.tmp-1")).unwrap();
        // `latest` names step 2 (say, a resume fell back to it); the run is now at step 3.
        std::fs::write(root.join("latest"), "step-000002").unwrap();
        let deleted = prune(&root, 1, 3, Some(1)).unwrap();
        let mut left: Vec<u64> = list(&root).unwrap().into_iter().map(|(s, _)| s).collect();
        left.sort_unstable();
        assert_eq!(left, vec![1, 2, 3]);
        assert_eq!(deleted.len(), 2);
        // Other files and temporaries are not pruning's business.
        assert!(root.join(".step-000009.tmp-1").is_dir());
        std::fs::write(root.join("latest"), "garbage").unwrap();
        assert!(prune(&root, 1, 3, None).is_err());
        assert_eq!(list(&root).unwrap().len(), 3);
        let _ = std::fs::remove_dir_all(&root);
    }
}
