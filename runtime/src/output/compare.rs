//! Side-by-side comparison of finished runs (`post compare`): an eval metric against steps for
//! every run, the steps each run needed to reach a reference run's final value, wall time and
//! the share of expert-trace tokens each run trained on; as Markdown, JSON and an SVG plot.
//!
//! Everything is read back from what the runs wrote (`metrics.jsonl`, `summary.json`), so a
//! comparison can be made again at any time without rerunning anything.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{StepRecord, Summary, read_metrics, write_atomic};

/// One run as read from its output directory.
#[derive(Debug, Clone)]
pub struct RunData {
    pub name: String,
    pub dir: PathBuf,
    pub records: Vec<StepRecord>,
    pub summary: Summary,
}

/// Why a run directory could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("{path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("run `{run}` has no `{metric}` evaluation in its metrics.jsonl")]
    NoMetric { run: String, metric: String },
    #[error("reference run `{0}` is not among the compared runs")]
    NoReference(String),
}

impl RunData {
    /// Read `dir/metrics.jsonl` and `dir/summary.json`; the run is named after the directory.
    pub fn load(dir: &Path) -> Result<RunData, CompareError> {
        let read_err = |path: &Path, e: &dyn std::fmt::Display| CompareError::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let metrics = dir.join("metrics.jsonl");
        let records = read_metrics(&metrics).map_err(|e| read_err(&metrics, &e))?;
        let summary_path = dir.join("summary.json");
        let text =
            std::fs::read_to_string(&summary_path).map_err(|e| read_err(&summary_path, &e))?;
        let summary: Summary =
            serde_json::from_str(&text).map_err(|e| read_err(&summary_path, &e))?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.display().to_string());
        Ok(RunData {
            name,
            dir: dir.to_path_buf(),
            records,
            summary,
        })
    }
}

/// The comparison of one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRow {
    pub run: String,
    /// `(global step, value)` of every evaluation of the metric, in step order.
    pub curve: Vec<(u64, f64)>,
    pub initial: Option<f64>,
    #[serde(rename = "final")]
    pub final_: f64,
    pub best: f64,
    pub steps: u64,
    pub wall_s: f64,
    /// First evaluated step at which the metric reached the reference run's final value.
    pub steps_to_reference: Option<u64>,
    /// Share of the expert-trace tokens of its problems the run trained on: BREAD's cumulative
    /// `rollout/expert_token_frac`; 1 for a run with a supervised stage (SFT trains on whole
    /// traces), 0 for pure sampling.
    pub expert_token_frac: f64,
}

/// The whole comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    pub metric: String,
    pub reference: Option<String>,
    pub reference_value: Option<f64>,
    pub runs: Vec<RunRow>,
}

/// Compare `runs` on the eval metric `metric`; `reference` names the run whose final value the
/// "steps to reach" column measures against.
pub fn compare(
    runs: &[RunData],
    metric: &str,
    reference: Option<&str>,
) -> Result<Comparison, CompareError> {
    let reference_value = match reference {
        Some(name) => {
            let r = runs
                .iter()
                .find(|r| r.name == name)
                .ok_or_else(|| CompareError::NoReference(name.to_string()))?;
            Some(final_value(r, metric)?)
        }
        None => None,
    };
    let mut rows = Vec::with_capacity(runs.len());
    for r in runs {
        let curve = curve(r, metric);
        let final_ = final_value(r, metric)?;
        let best = curve
            .iter()
            .map(|(_, v)| *v)
            .fold(f64::NEG_INFINITY, f64::max);
        let steps_to_reference = reference_value.and_then(|target| {
            curve
                .iter()
                .find(|(_, v)| *v >= target - 1e-12)
                .map(|(s, _)| *s)
        });
        rows.push(RunRow {
            run: r.name.clone(),
            initial: r.summary.initial.get(metric).copied(),
            final_,
            best,
            steps: r.summary.steps,
            wall_s: r.summary.wall_s,
            steps_to_reference,
            expert_token_frac: expert_token_frac(&r.records),
            curve,
        });
    }
    Ok(Comparison {
        metric: metric.to_string(),
        reference: reference.map(str::to_string),
        reference_value,
        runs: rows,
    })
}

fn curve(r: &RunData, metric: &str) -> Vec<(u64, f64)> {
    let mut out: Vec<(u64, f64)> = Vec::new();
    for rec in &r.records {
        if let Some(v) = rec.eval.get(metric).filter(|v| v.is_finite()) {
            // An eval before a stage's first step repeats the previous stage's last step.
            match out.last_mut() {
                Some(last) if last.0 == rec.step => last.1 = *v,
                _ => out.push((rec.step, *v)),
            }
        }
    }
    out
}

fn final_value(r: &RunData, metric: &str) -> Result<f64, CompareError> {
    r.summary
        .final_
        .get(metric)
        .copied()
        .or_else(|| curve(r, metric).last().map(|(_, v)| *v))
        .ok_or_else(|| CompareError::NoMetric {
            run: r.name.clone(),
            metric: metric.to_string(),
        })
}

fn expert_token_frac(records: &[StepRecord]) -> f64 {
    let supervised = records
        .iter()
        .any(|r| r.loss.is_some() && !r.extra.contains_key("rollout/reward_mean"));
    if supervised {
        return 1.0;
    }
    records
        .iter()
        .rev()
        .find_map(|r| r.extra.get("rollout/expert_token_frac").copied())
        .unwrap_or(0.0)
}

impl Comparison {
    /// The Markdown report: a summary table, then the metric at every evaluated step.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let m = &self.metric;
        let reach = match (&self.reference, self.reference_value) {
            (Some(r), Some(v)) => format!("steps to {m} >= {v:.3} ({r}'s final)"),
            _ => "steps to reference".to_string(),
        };
        let _ = writeln!(
            s,
            "| run | {m} before | final {m} | best {m} | {reach} | steps | wall time | expert tokens used |"
        );
        let _ = writeln!(
            s,
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        );
        for r in &self.runs {
            let _ = writeln!(
                s,
                "| {} | {} | {:.3} | {:.3} | {} | {} | {:.0} s | {:.1}% |",
                r.run,
                r.initial.map_or("-".into(), |v| format!("{v:.3}")),
                r.final_,
                r.best,
                if self.reference.is_some() {
                    r.steps_to_reference
                        .map_or("not reached".into(), |s| s.to_string())
                } else {
                    "-".into()
                },
                r.steps,
                r.wall_s,
                100.0 * r.expert_token_frac,
            );
        }
        let mut steps: Vec<u64> = self
            .runs
            .iter()
            .flat_map(|r| r.curve.iter().map(|(s, _)| *s))
            .collect();
        steps.sort_unstable();
        steps.dedup();
        let _ = writeln!(s, "\n{m} by step:\n");
        let header: Vec<&str> = self.runs.iter().map(|r| r.run.as_str()).collect();
        let _ = writeln!(s, "| step | {} |", header.join(" | "));
        let _ = writeln!(s, "| ---: |{}", " ---: |".repeat(self.runs.len()));
        for step in steps {
            let cells: Vec<String> = self
                .runs
                .iter()
                .map(|r| {
                    r.curve
                        .iter()
                        .find(|(st, _)| *st == step)
                        .map_or("".into(), |(_, v)| format!("{v:.3}"))
                })
                .collect();
            let _ = writeln!(s, "| {step} | {} |", cells.join(" | "));
        }
        s
    }

    /// A plot of the metric against steps, one line per run.
    pub fn svg(&self) -> String {
        let series: BTreeMap<String, Vec<(f64, f64)>> = self
            .runs
            .iter()
            .map(|r| {
                (
                    r.run.clone(),
                    r.curve.iter().map(|(s, v)| (*s as f64, *v)).collect(),
                )
            })
            .collect();
        let title = format!("{} vs steps", self.metric);
        super::plot::render_series(&title, &self.metric, &series)
    }

    /// Write `comparison.md`, `comparison.json` and `comparison.svg` into `dir`.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        write_atomic(&dir.join("comparison.md"), self.markdown().as_bytes())?;
        let json = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        write_atomic(&dir.join("comparison.json"), json.as_bytes())?;
        write_atomic(&dir.join("comparison.svg"), self.svg().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(step: u64, acc: Option<f64>, extra: &[(&str, f64)]) -> StepRecord {
        StepRecord {
            step,
            // An eval before the first step has no loss.
            loss: (step > 0).then_some(1.0),
            eval: acc
                .map(|a| BTreeMap::from([("accuracy".to_string(), a)]))
                .unwrap_or_default(),
            extra: extra.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            ..StepRecord::default()
        }
    }

    fn run(name: &str, records: Vec<StepRecord>) -> RunData {
        let mut summary = Summary::default();
        if let Some(v) = records.iter().rev().find_map(|r| r.eval.get("accuracy")) {
            summary.final_.insert("accuracy".into(), *v);
        }
        summary.steps = records.iter().map(|r| r.step).max().unwrap_or(0);
        RunData {
            name: name.into(),
            dir: PathBuf::from(name),
            records,
            summary,
        }
    }

    #[test]
    fn steps_to_reference_and_expert_tokens() {
        let rl = [("rollout/reward_mean", 0.5)];
        let bread = run(
            "bread",
            vec![
                rec(0, Some(0.0), &[]),
                rec(
                    10,
                    Some(0.3),
                    &[
                        ("rollout/reward_mean", 0.5),
                        ("rollout/expert_token_frac", 0.5),
                    ],
                ),
                rec(
                    20,
                    Some(0.6),
                    &[
                        ("rollout/reward_mean", 0.5),
                        ("rollout/expert_token_frac", 0.3),
                    ],
                ),
            ],
        );
        let sft = run(
            "sft_then_grpo",
            vec![rec(10, Some(0.2), &[]), rec(20, Some(0.5), &rl)],
        );
        let grpo = run(
            "grpo",
            vec![rec(10, Some(0.0), &rl), rec(20, Some(0.0), &rl)],
        );
        let c = compare(&[grpo, sft, bread], "accuracy", Some("sft_then_grpo")).unwrap();
        assert_eq!(c.reference_value, Some(0.5));
        let by = |n: &str| c.runs.iter().find(|r| r.run == n).unwrap().clone();
        assert_eq!(by("bread").steps_to_reference, Some(20));
        assert_eq!(by("sft_then_grpo").steps_to_reference, Some(20));
        assert_eq!(by("grpo").steps_to_reference, None);
        assert_eq!(by("bread").expert_token_frac, 0.3);
        assert_eq!(by("sft_then_grpo").expert_token_frac, 1.0);
        assert_eq!(by("grpo").expert_token_frac, 0.0);
        assert_eq!(by("bread").best, 0.6);
        let md = c.markdown();
        assert!(
            md.contains("| grpo | - | 0.000 | 0.000 | not reached |"),
            "{md}"
        );
        assert!(md.contains("| 20 | 0.000 | 0.500 | 0.600 |"), "{md}");
        assert!(c.svg().contains("<svg"));
    }

    #[test]
    fn missing_metric_and_reference_are_errors() {
        let r = run("a", vec![rec(1, None, &[])]);
        assert!(matches!(
            compare(std::slice::from_ref(&r), "accuracy", None),
            Err(CompareError::NoMetric { .. })
        ));
        let ok = run("b", vec![rec(1, Some(0.1), &[])]);
        assert!(matches!(
            compare(&[ok], "accuracy", Some("zzz")),
            Err(CompareError::NoReference(_))
        ));
    }
}
