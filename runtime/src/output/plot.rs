//! Training curves as a hand-written SVG: the loss per step on top, each eval metric below,
//! both against the global step. No plotting dependency; any browser opens the file.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use super::{StepRecord, write_atomic};

const W: f64 = 720.0;
const PANEL_H: f64 = 240.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 150.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 36.0;
const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];

type Series = BTreeMap<String, Vec<(f64, f64)>>;

/// Write `curves.svg` for `records` to `path`.
pub fn write_plot(path: &Path, title: &str, records: &[StepRecord]) -> std::io::Result<()> {
    write_atomic(path, render(title, records).as_bytes())
}

pub fn render(title: &str, records: &[StepRecord]) -> String {
    let mut train: Series = BTreeMap::new();
    let mut eval: Series = BTreeMap::new();
    for r in records {
        let x = r.step as f64;
        if let Some(l) = r.loss.filter(|l| l.is_finite()) {
            train.entry("loss".into()).or_default().push((x, l));
        }
        for (key, label) in [
            ("rollout/reward_mean", "train reward"),
            ("rollout/expert_token_frac", "expert tokens used"),
        ] {
            if let Some(v) = r.extra.get(key).filter(|v| v.is_finite()) {
                eval.entry(label.into()).or_default().push((x, *v));
            }
        }
        for (k, v) in &r.eval {
            if v.is_finite() {
                eval.entry(k.clone()).or_default().push((x, *v));
            }
        }
    }
    let x_max = records.iter().map(|r| r.step).max().unwrap_or(1).max(1) as f64;
    let panels: Vec<(&str, &Series)> = [("training loss", &train), ("evaluation", &eval)]
        .into_iter()
        .filter(|(_, s)| !s.is_empty())
        .collect();
    document(title, &panels, x_max)
}

/// One panel of named series against steps (`post compare`: one line per run).
pub fn render_series(title: &str, panel_name: &str, series: &Series) -> String {
    let x_max = series.values().flatten().map(|p| p.0).fold(1.0, f64::max);
    document(title, &[(panel_name, series)], x_max)
}

fn document(title: &str, panels: &[(&str, &Series)], x_max: f64) -> String {
    let height = TOP + PANEL_H * panels.len().max(1) as f64;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" viewBox="0 0 {W} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="18" font-size="14" font-weight="bold">{}</text>"#,
        escape(title)
    );
    for (i, (name, series)) in panels.iter().enumerate() {
        panel(&mut svg, TOP + PANEL_H * i as f64, name, series, x_max);
    }
    svg.push_str("</svg>\n");
    svg
}

fn panel(svg: &mut String, y0: f64, name: &str, series: &Series, x_max: f64) {
    let (plot_w, plot_h) = (W - LEFT - RIGHT, PANEL_H - BOTTOM - 12.0);
    let top = y0 + 12.0;
    let vals = series.values().flatten().map(|p| p.1);
    let (mut lo, mut hi) = vals.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    if (hi - lo).abs() < 1e-12 {
        lo -= 0.5;
        hi += 0.5;
    }
    let pad = (hi - lo) * 0.05;
    let (lo, hi) = (lo - pad, hi + pad);
    let px = |x: f64| LEFT + plot_w * x / x_max;
    let py = |y: f64| top + plot_h * (1.0 - (y - lo) / (hi - lo));
    let _ = writeln!(
        svg,
        r##"<rect x="{LEFT}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#888"/>"##
    );
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">{name}</text>"#,
        LEFT + plot_w / 2.0,
        top - 2.0
    );
    for k in 0..=4 {
        let v = lo + (hi - lo) * k as f64 / 4.0;
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" x2="{}" y1="{y}" y2="{y}" stroke="#eee"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
            LEFT + plot_w,
            LEFT - 4.0,
            py(v) + 4.0,
            fmt_num(v),
            y = py(v)
        );
        let s = x_max * k as f64 / 4.0;
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            px(s),
            top + plot_h + 14.0,
            s.round()
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">step</text>"#,
        LEFT + plot_w / 2.0,
        top + plot_h + 28.0
    );
    for (i, (label, pts)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points: Vec<String> = pts
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
            points.join(" ")
        );
        if pts.len() <= 40 {
            for p in &points {
                let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
                let _ = writeln!(svg, r#"<circle cx="{x}" cy="{y}" r="2.5" fill="{color}"/>"#);
            }
        }
        let ly = top + 14.0 + 16.0 * i as f64;
        let _ = writeln!(
            svg,
            r#"<line x1="{}" x2="{}" y1="{ly}" y2="{ly}" stroke="{color}" stroke-width="2"/><text x="{}" y="{}">{}</text>"#,
            W - RIGHT + 10.0,
            W - RIGHT + 26.0,
            W - RIGHT + 30.0,
            ly + 4.0,
            escape(label)
        );
    }
}

fn fmt_num(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_both_panels() {
        let rs: Vec<StepRecord> = (0..5)
            .map(|i| StepRecord {
                step: i,
                loss: (i > 0).then_some(3.0 / (i as f64)),
                eval: BTreeMap::from([("accuracy".to_string(), i as f64 / 5.0)]),
                ..StepRecord::default()
            })
            .collect();
        let svg = render("run <x>", &rs);
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("training loss") && svg.contains("accuracy"));
        assert!(svg.contains("run &lt;x&gt;"));
        assert_eq!(svg.matches("<polyline").count(), 2);
    }
}
