//! Rollout bookkeeping kernels: group reward statistics and advantages, all-fail flags, and the
//! index maps and loss masks of branched (expert-prefix) rollouts.
//!
//! Groups are contiguous: sequences `[g * n, (g + 1) * n)` are the `n` completions of prompt `g`.

use candle_core::{Result, bail};

/// Per-group mean and sample standard deviation (n - 1 denominator, 0 for groups of one), the
/// same definitions as `Reduce::GroupMean` / `Reduce::GroupStd`.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupStats {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

fn check_groups(len: usize, group_size: usize) -> Result<usize> {
    if group_size == 0 {
        bail!("rollout: group size must be positive")
    }
    if !len.is_multiple_of(group_size) {
        bail!("rollout: {len} rewards do not split into groups of {group_size}")
    }
    Ok(len / group_size)
}

/// Mean and standard deviation of each group, accumulated in f64.
pub fn group_stats(rewards: &[f32], group_size: usize) -> Result<GroupStats> {
    check_groups(rewards.len(), group_size)?;
    let mut mean = Vec::new();
    let mut std = Vec::new();
    for g in rewards.chunks(group_size) {
        let n = g.len() as f64;
        let m = g.iter().map(|&r| r as f64).sum::<f64>() / n;
        let var = if g.len() > 1 {
            g.iter().map(|&r| (r as f64 - m).powi(2)).sum::<f64>() / (n - 1.0)
        } else {
            0.0
        };
        mean.push(m as f32);
        std.push(var.sqrt() as f32);
    }
    Ok(GroupStats { mean, std })
}

/// GRPO advantages `(r - mean_group) / (std_group + eps)`; with `scale_by_std = false` (Dr.GRPO)
/// only the mean is subtracted.
pub fn group_advantages(
    rewards: &[f32],
    group_size: usize,
    eps: f32,
    scale_by_std: bool,
) -> Result<Vec<f32>> {
    let st = group_stats(rewards, group_size)?;
    Ok(rewards
        .iter()
        .enumerate()
        .map(|(i, &r)| {
            let g = i / group_size;
            let c = r - st.mean[g];
            if scale_by_std {
                c / (st.std[g] + eps)
            } else {
                c
            }
        })
        .collect())
}

/// One flag per group: true when no completion of the group has a reward above
/// `success_threshold` (the groups BREAD re-rolls with an expert prefix).
pub fn all_fail_flags(
    rewards: &[f32],
    group_size: usize,
    success_threshold: f32,
) -> Result<Vec<bool>> {
    check_groups(rewards.len(), group_size)?;
    Ok(rewards
        .chunks(group_size)
        .map(|g| {
            g.iter()
                .all(|r| r.partial_cmp(&success_threshold) != Some(std::cmp::Ordering::Greater))
        })
        .collect())
}

/// One sequence of a branched rollout: `prompt_len` prompt tokens, then `prefix_len` tokens of the
/// expert trace (context, no loss), then `completion_len` sampled tokens (the loss-carrying part).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Branch {
    /// The prompt (group) this branch belongs to.
    pub group: usize,
    pub prompt_len: usize,
    pub prefix_len: usize,
    pub completion_len: usize,
}

/// The padded batch layout of branched sequences (`rows x width`, right-padded).
#[derive(Debug, Clone, PartialEq)]
pub struct BranchedLayout {
    pub rows: usize,
    pub width: usize,
    /// `[rows * width]`: 1 on sampled completion tokens, 0 on prompt, expert prefix and padding.
    pub loss_mask: Vec<f32>,
    /// `[rows * width]`: 1 on every real token (prompt, prefix, completion), 0 on padding.
    pub attention_mask: Vec<f32>,
    /// Flat positions (`row * width + col`) of every loss-carrying token, row-major: gathers the
    /// packed per-token values of the loss out of a padded `[rows, width]` tensor.
    pub loss_index: Vec<u32>,
    /// For each row, the group it belongs to.
    pub group_of_row: Vec<u32>,
    /// CSR offsets into `rows_by_group`: group `g`'s rows are
    /// `rows_by_group[group_offsets[g]..group_offsets[g + 1]]`.
    pub group_offsets: Vec<u32>,
    pub rows_by_group: Vec<u32>,
}

/// Builds the layout of a batch of branches; `width` 0 means "the longest branch".
pub fn branched_layout(branches: &[Branch], width: usize) -> Result<BranchedLayout> {
    let longest = branches
        .iter()
        .map(|b| b.prompt_len + b.prefix_len + b.completion_len)
        .max()
        .unwrap_or(0);
    let width = if width == 0 { longest } else { width };
    if longest > width {
        bail!("branched_layout: a branch of {longest} tokens does not fit a width of {width}")
    }
    let rows = branches.len();
    if rows * width > u32::MAX as usize {
        bail!("branched_layout: {rows} x {width} positions do not fit u32 indices")
    }
    let groups = branches.iter().map(|b| b.group + 1).max().unwrap_or(0);
    let mut loss_mask = vec![0.0f32; rows * width];
    let mut attention_mask = vec![0.0f32; rows * width];
    let mut loss_index = Vec::new();
    let mut counts = vec![0u32; groups + 1];
    for (r, b) in branches.iter().enumerate() {
        let start = b.prompt_len + b.prefix_len;
        let end = start + b.completion_len;
        let row = r * width;
        attention_mask[row..row + end].fill(1.0);
        loss_mask[row + start..row + end].fill(1.0);
        loss_index.extend((row + start..row + end).map(|p| p as u32));
        counts[b.group + 1] += 1;
    }
    for g in 0..groups {
        counts[g + 1] += counts[g];
    }
    let group_offsets = counts.clone();
    let mut next = counts;
    let mut rows_by_group = vec![0u32; rows];
    for (r, b) in branches.iter().enumerate() {
        rows_by_group[next[b.group] as usize] = r as u32;
        next[b.group] += 1;
    }
    Ok(BranchedLayout {
        rows,
        width,
        loss_mask,
        attention_mask,
        loss_index,
        group_of_row: branches.iter().map(|b| b.group as u32).collect(),
        group_offsets,
        rows_by_group,
    })
}
