//! Training curves as SVG, drawn with `plotters` (SVG backend only, no system fonts): the loss
//! per step on top, each eval metric below, both against the global step, with round tick
//! values, labelled axes and a legend. Any browser opens the file.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{StepRecord, write_atomic};

const W: f64 = 720.0;
const PANEL_H: f64 = 240.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 150.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 36.0;
const COLORS: [RGBColor; 6] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x8c, 0x56, 0x4b),
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
    let height = (TOP + PANEL_H * panels.len().max(1) as f64) as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W as u32, height)).into_drawing_area();
        // Drawing into a String cannot fail for I/O reasons; a plotting error leaves a partial
        // picture rather than failing the run.
        let _ = draw(&root, title, panels, x_max);
        let _ = root.present();
    }
    svg
}

fn draw(
    root: &DrawingArea<SVGBackend, Shift>,
    title: &str,
    panels: &[(&str, &Series)],
    x_max: f64,
) -> Result<(), Box<dyn std::error::Error>> {
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 16).into_font().style(FontStyle::Bold))?;
    let areas = root.split_evenly((panels.len().max(1), 1));
    for ((name, series), area) in panels.iter().zip(&areas) {
        panel(area, name, series, x_max)?;
    }
    Ok(())
}

fn panel(
    area: &DrawingArea<SVGBackend, Shift>,
    name: &str,
    series: &Series,
    x_max: f64,
) -> Result<(), Box<dyn std::error::Error>> {
    let vals = series.values().flatten().map(|p| p.1);
    let (mut lo, mut hi) = vals.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    if !lo.is_finite() || !hi.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    if (hi - lo).abs() < 1e-12 {
        lo -= 0.5;
        hi += 0.5;
    }
    let pad = (hi - lo) * 0.05;
    let (lo, hi) = (lo - pad, hi + pad);
    let mut chart = ChartBuilder::on(area)
        .caption(name, ("sans-serif", 13))
        .margin(8)
        .margin_right(RIGHT as u32 / 6)
        .x_label_area_size(BOTTOM as u32)
        .y_label_area_size(LEFT as u32)
        .build_cartesian_2d(0f64..x_max, lo..hi)?;
    chart
        .configure_mesh()
        .light_line_style(RGBColor(238, 238, 238))
        .bold_line_style(RGBColor(221, 221, 221))
        .x_desc("step")
        .y_desc(if name == "training loss" {
            "loss"
        } else {
            "value"
        })
        .x_labels(8)
        .y_labels(6)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| fmt_num(*y))
        .label_style(("sans-serif", 11))
        .draw()?;
    for (i, (label, pts)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?
            .label(label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
        if pts.len() <= 40 {
            chart.draw_series(
                pts.iter()
                    .map(|&(x, y)| Circle::new((x, y), 2, color.filled())),
            )?;
        }
    }
    // The legend goes where the curves end lower (a falling loss: top right; a rising
    // accuracy: bottom right), so it rarely covers them.
    let ends_high = series
        .values()
        .filter_map(|p| p.last())
        .any(|&(_, y)| y > (lo + hi) / 2.0);
    chart
        .configure_series_labels()
        .position(if ends_high {
            SeriesLabelPosition::LowerRight
        } else {
            SeriesLabelPosition::UpperRight
        })
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(170, 170, 170))
        .label_font(("sans-serif", 11))
        .draw()?;
    Ok(())
}

/// A tick label: as few digits as the tick step needs (plotters picks round tick values).
fn fmt_num(v: f64) -> String {
    let s = if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        let t = format!("{v:.4}");
        t.trim_end_matches('0').trim_end_matches('.').to_string()
    };
    if s == "-0" { "0".into() } else { s }
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
        // One line per panel, and its legend mark (the axes and grid are other colours).
        assert_eq!(
            svg.matches(r##"<polyline fill="none" opacity="1" stroke="#1F77B4""##)
                .count(),
            4
        );
        assert!(svg.contains("\nstep\n"), "the x axis is labelled");
    }

    #[test]
    fn ticks_are_round_numbers() {
        assert_eq!(fmt_num(0.2), "0.2");
        assert_eq!(fmt_num(-0.0), "0");
        assert_eq!(fmt_num(250.0), "250");
        let rs: Vec<StepRecord> = (0..=30)
            .map(|i| StepRecord {
                step: i * 10,
                loss: Some(2.0 / (1.0 + i as f64)),
                eval: BTreeMap::from([("accuracy".to_string(), 0.94 * i as f64 / 30.0)]),
                ..StepRecord::default()
            })
            .collect();
        let svg = render("curves", &rs);
        if let Ok(p) = std::env::var("POST_PLOT_SAMPLE") {
            std::fs::write(p, &svg).unwrap();
        }
        // The accuracy axis ticks at round values (0.2, 0.4, ...), not at fractions of the span.
        let ticks: Vec<&str> = svg.lines().filter(|l| l.parse::<f64>().is_ok()).collect();
        assert!(
            ticks.contains(&"0.4") && ticks.contains(&"0.8"),
            "{ticks:?}"
        );
        assert!(ticks.iter().all(|t| t.len() <= 4), "{ticks:?}");
    }
}
