//! `summary.json`: the final and best value of every metric of a run.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::StepRecord;

/// Whether larger or smaller values of a metric are better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricGoal {
    Maximize,
    Minimize,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The last value of each metric (eval metrics by their `.post` names, and `loss`).
    #[serde(rename = "final")]
    pub final_: BTreeMap<String, f64>,
    pub best: BTreeMap<String, f64>,
    /// The step at which each best value was reached.
    pub best_step: BTreeMap<String, u64>,
    /// The eval metrics before the first training step, for a before/after comparison.
    pub initial: BTreeMap<String, f64>,
    pub steps: u64,
    pub wall_s: f64,
    pub peak_rss_bytes: u64,
    /// Set when the run stopped early (a non-finite loss, training that cannot learn), with
    /// the reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    /// What the run reported without stopping (e.g. tied rewards in every group).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Summarise `records`; `goals` says per eval metric whether higher is better (default: higher).
pub fn summarize(
    records: &[StepRecord],
    goals: &BTreeMap<String, MetricGoal>,
    wall_s: f64,
    peak_rss_bytes: u64,
) -> Summary {
    let mut s = Summary {
        wall_s,
        peak_rss_bytes,
        ..Summary::default()
    };
    let consider = |s: &mut Summary, name: &str, v: f64, step: u64, goal: MetricGoal| {
        if !v.is_finite() {
            return;
        }
        s.final_.insert(name.to_string(), v);
        let better = match s.best.get(name) {
            None => true,
            Some(&b) => match goal {
                MetricGoal::Maximize => v > b,
                MetricGoal::Minimize => v < b,
            },
        };
        if better {
            s.best.insert(name.to_string(), v);
            s.best_step.insert(name.to_string(), step);
        }
    };
    for r in records {
        s.steps = s.steps.max(r.step);
        if let Some(l) = r.loss {
            consider(&mut s, "loss", l, r.step, MetricGoal::Minimize);
        }
        for (k, &v) in &r.eval {
            if !s.initial.contains_key(k) {
                s.initial.insert(k.clone(), v);
            }
            let goal = goals.get(k).copied().unwrap_or(MetricGoal::Maximize);
            consider(&mut s, k, v, r.step, goal);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_best_initial() {
        let rec = |step, loss: Option<f64>, acc: Option<f64>| StepRecord {
            step,
            loss,
            eval: acc
                .map(|a| BTreeMap::from([("accuracy".to_string(), a)]))
                .unwrap_or_default(),
            ..StepRecord::default()
        };
        let rs = vec![
            rec(0, None, Some(0.0)),
            rec(1, Some(2.0), None),
            rec(2, Some(1.0), Some(0.6)),
            rec(3, Some(1.5), Some(0.4)),
        ];
        let s = summarize(&rs, &BTreeMap::new(), 1.0, 10);
        assert_eq!(s.final_["accuracy"], 0.4);
        assert_eq!(s.best["accuracy"], 0.6);
        assert_eq!(s.best_step["accuracy"], 2);
        assert_eq!(s.initial["accuracy"], 0.0);
        assert_eq!(s.best["loss"], 1.0);
        assert_eq!(s.final_["loss"], 1.5);
        let json = serde_json::to_value(&s).unwrap();
        assert!(json.get("final").is_some());
    }
}
