//! Per-benchmark scores of several models as a grouped bar chart (plain SVG, no plotting
//! dependency): one group per benchmark, one bar per model, and the benchmark's chance
//! level as a dashed line when it is known.

use std::fmt::Write as _;

use crate::svg::{esc, svg_frame};

const PALETTE: [&str; 8] = [
    "#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c",
];
const BAR_W: f64 = 18.0;
const GAP: f64 = 22.0;
const LEFT: f64 = 56.0;
const TOP: f64 = 44.0;
const PLOT_H: f64 = 260.0;
const BOTTOM: f64 = 96.0;

/// One model's scores (percent), in the order of the benchmarks, with an interval per
/// score drawn as a whisker (`intervals` empty: none).
pub struct Series {
    pub name: String,
    pub scores: Vec<Option<f64>>,
    pub intervals: Vec<Option<(f64, f64)>>,
}

/// `benchmarks` names the groups; `chance` (percent) has one entry per benchmark or is empty.
pub fn grouped_bars_svg(
    title: &str,
    y_label: &str,
    benchmarks: &[String],
    series: &[Series],
    chance: &[Option<f64>],
) -> String {
    let k = series.len().max(1) as f64;
    let group_w = k * BAR_W + GAP;
    let plot_w = group_w * benchmarks.len().max(1) as f64;
    let legend_w = 190.0;
    let w = LEFT + plot_w + legend_w;
    let h = TOP + PLOT_H + BOTTOM;
    // The axis runs to 100, or to the next multiple of 20 above the highest value.
    let top_value = series
        .iter()
        .flat_map(|s| {
            s.scores
                .iter()
                .flatten()
                .copied()
                .chain(s.intervals.iter().flatten().map(|i| i.1))
        })
        .fold(100.0_f64, f64::max);
    let y_max = (top_value / 20.0).ceil() * 20.0;
    let y = |v: f64| TOP + PLOT_H * (1.0 - v.clamp(0.0, y_max) / y_max);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0}" height="{h:.0}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="white"/>
<text x="{LEFT}" y="22" font-size="14" font-weight="bold">{}</text>
"#,
        esc(title)
    );
    for tick in (0..=y_max as usize).step_by(20) {
        let ty = y(tick as f64);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{ty:.1}" x2="{:.1}" y2="{ty:.1}" stroke="#e0e0e0"/><text x="{:.1}" y="{:.1}" text-anchor="end">{tick}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            ty + 4.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="14" y="{:.1}" transform="rotate(-90 14 {:.1})" text-anchor="middle">{}</text>"#,
        TOP + PLOT_H / 2.0,
        TOP + PLOT_H / 2.0,
        esc(y_label)
    );
    for (g, name) in benchmarks.iter().enumerate() {
        let x0 = LEFT + GAP / 2.0 + g as f64 * group_w;
        for (i, ser) in series.iter().enumerate() {
            let Some(v) = ser.scores.get(g).copied().flatten() else {
                continue;
            };
            let x = x0 + i as f64 * BAR_W;
            let top = y(v);
            let _ = writeln!(
                s,
                r#"<rect x="{x:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}: {} {v:.1}</title></rect>"#,
                BAR_W - 2.0,
                TOP + PLOT_H - top,
                PALETTE[i % PALETTE.len()],
                esc(&ser.name),
                esc(name)
            );
            if let Some((lo, hi)) = ser.intervals.get(g).copied().flatten() {
                let cx = x + (BAR_W - 2.0) / 2.0;
                let (ylo, yhi) = (y(lo), y(hi));
                let _ = writeln!(
                    s,
                    r##"<path d="M{cx:.1} {ylo:.1}V{yhi:.1}M{:.1} {ylo:.1}h6M{:.1} {yhi:.1}h6" stroke="#222" fill="none"><title>{}: {} 95 % interval {lo:.1} to {hi:.1}</title></path>"##,
                    cx - 3.0,
                    cx - 3.0,
                    esc(&ser.name),
                    esc(name)
                );
            }
        }
        if let Some(c) = chance.get(g).copied().flatten() {
            let cy = y(c);
            let _ = writeln!(
                s,
                r##"<line x1="{:.1}" y1="{cy:.1}" x2="{:.1}" y2="{cy:.1}" stroke="#222" stroke-dasharray="4 3"><title>chance {c:.1}</title></line>"##,
                x0 - 3.0,
                x0 + k * BAR_W + 1.0
            );
        }
        let lx = x0 + k * BAR_W / 2.0;
        let ly = TOP + PLOT_H + 14.0;
        let _ = writeln!(
            s,
            r#"<text x="{lx:.1}" y="{ly:.1}" transform="rotate(30 {lx:.1} {ly:.1})">{}</text>"#,
            esc(name)
        );
    }
    let _ = writeln!(
        s,
        r##"<line x1="{LEFT}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#444"/>"##,
        TOP + PLOT_H,
        LEFT + plot_w,
        TOP + PLOT_H
    );
    let lx = LEFT + plot_w + 16.0;
    for (i, ser) in series.iter().enumerate() {
        let ly = TOP + 8.0 + i as f64 * 18.0;
        let _ = writeln!(
            s,
            r#"<rect x="{lx:.1}" y="{:.1}" width="12" height="12" fill="{}"/><text x="{:.1}" y="{ly:.1}" dominant-baseline="middle">{}</text>"#,
            ly - 6.0,
            PALETTE[i % PALETTE.len()],
            lx + 18.0,
            esc(&ser.name)
        );
    }
    if chance.iter().any(Option::is_some) {
        let ly = TOP + 8.0 + series.len() as f64 * 18.0;
        let _ = writeln!(
            s,
            r##"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="#222" stroke-dasharray="4 3"/><text x="{:.1}" y="{ly:.1}" dominant-baseline="middle">chance</text>"##,
            lx + 12.0,
            lx + 18.0
        );
    }
    s.push_str("</svg>\n");
    s
}

/// One named line of points `(x, y, label)` for [`xy_chart_svg`].
pub struct Line {
    pub name: String,
    pub points: Vec<(f64, f64, String)>,
}

/// Lines of labelled points on linear axes (plain SVG): e.g. quality against time to first
/// token, one point per pruning ratio.
pub fn xy_chart_svg(title: &str, x_label: &str, y_label: &str, lines: &[Line]) -> String {
    let (w, h, left, right, top, bottom) = (720.0, 420.0, 64.0, 200.0, 44.0, 52.0);
    let all: Vec<(f64, f64)> = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| (p.0, p.1)))
        .filter(|p| p.0.is_finite() && p.1.is_finite())
        .collect();
    let span = |v: &mut dyn Iterator<Item = f64>| {
        let (lo, hi) = v.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), x| {
            (l.min(x), h.max(x))
        });
        if !lo.is_finite() {
            (0.0, 1.0)
        } else {
            let pad = ((hi - lo) * 0.08).max(1e-9);
            (lo - pad, hi + pad)
        }
    };
    let (x0, x1) = span(&mut all.iter().map(|p| p.0));
    let (y0, y1) = span(&mut all.iter().map(|p| p.1));
    let (pw, ph) = (w - left - right, h - top - bottom);
    let x = |v: f64| left + (v - x0) / (x1 - x0) * pw;
    let y = |v: f64| top + (1.0 - (v - y0) / (y1 - y0)) * ph;
    let mut s = svg_frame((w, h), (left + pw / 2.0, 24.0), title, (left, top, pw, ph));
    for k in 0..=4 {
        let f = k as f64 / 4.0;
        let (xv, yv) = (x0 + (x1 - x0) * f, y0 + (y1 - y0) * f);
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end">{yv:.1}</text><text x="{:.1}" y="{:.1}" text-anchor="middle">{xv:.1}</text><line x1="{left}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#eee"/>"##,
            left - 6.0,
            y(yv) + 4.0,
            x(xv),
            top + ph + 16.0,
            left + pw,
            y(yv),
            y(yv)
        );
    }
    let _ = writeln!(
        s,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text><text x="16" y="{:.1}" transform="rotate(-90 16 {:.1})" text-anchor="middle">{}</text>"##,
        left + pw / 2.0,
        h - 12.0,
        esc(x_label),
        top + ph / 2.0,
        top + ph / 2.0,
        esc(y_label)
    );
    for (i, line) in lines.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let pts: Vec<&(f64, f64, String)> = line
            .points
            .iter()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .collect();
        let d: String = pts
            .iter()
            .enumerate()
            .map(|(k, p)| {
                format!(
                    "{}{:.1},{:.1}",
                    if k == 0 { "M" } else { " L" },
                    x(p.0),
                    y(p.1)
                )
            })
            .collect();
        if pts.len() > 1 {
            let _ = writeln!(
                s,
                r##"<path d="{d}" fill="none" stroke="{color}" stroke-width="2"/>"##
            );
        }
        for p in &pts {
            let _ = writeln!(
                s,
                r##"<circle cx="{:.1}" cy="{:.1}" r="4" fill="{color}"/><text x="{:.1}" y="{:.1}" font-size="10">{}</text>"##,
                x(p.0),
                y(p.1),
                x(p.0) + 6.0,
                y(p.1) - 6.0,
                esc(&p.2)
            );
        }
        let ly = top + 16.0 + 20.0 * i as f64;
        let _ = writeln!(
            s,
            r##"<rect x="{:.1}" y="{:.1}" width="12" height="12" fill="{color}"/><text x="{:.1}" y="{:.1}">{}</text>"##,
            w - right + 16.0,
            ly - 10.0,
            w - right + 34.0,
            ly,
            esc(&line.name)
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_plot_and_escape_names() {
        let svg = grouped_bars_svg(
            "a <b>",
            "score (%)",
            &["X".into(), "Y&Z".into()],
            &[
                Series {
                    name: "dense".into(),
                    scores: vec![Some(100.0), Some(50.0)],
                    intervals: vec![],
                },
                Series {
                    name: "pruned".into(),
                    scores: vec![None, Some(0.0)],
                    intervals: vec![None, Some((0.0, 20.0))],
                },
            ],
            &[Some(25.0), None],
        );
        assert!(svg.contains("a &lt;b&gt;") && svg.contains("Y&amp;Z"));
        // A 100 % bar spans the whole plot height, a 50 % bar half of it.
        assert!(svg.contains(&format!("height=\"{PLOT_H:.1}\"")));
        assert!(svg.contains(&format!("height=\"{:.1}\"", PLOT_H / 2.0)));
        // Three bars drawn (one score is missing) and the one whisker, one chance line plus
        // the legend's.
        assert_eq!(svg.matches("<title>dense").count(), 2);
        assert_eq!(svg.matches("<title>pruned").count(), 2);
        assert_eq!(svg.matches("<title>chance").count(), 1);
        // One whisker, from 0 (the axis) to 20 % of the plot height.
        assert_eq!(svg.matches("95 % interval 0.0 to 20.0").count(), 1);
        let (bottom, top) = (TOP + PLOT_H, TOP + PLOT_H * 0.8);
        assert!(svg.contains(&format!("V{top:.1}")) && svg.contains(&format!(" {bottom:.1}V")));
    }

    #[test]
    fn the_axis_grows_past_100_for_higher_values() {
        let svg = grouped_bars_svg(
            "t",
            "relative (%)",
            &["X".into()],
            &[Series {
                name: "m".into(),
                scores: vec![Some(90.0)],
                intervals: vec![Some((80.0, 104.0))],
            }],
            &[],
        );
        assert!(svg.contains(">relative (%)</text>"));
        // Ticks to 120; a 90 % bar is 90/120 of the plot.
        assert!(svg.contains(">120</text>") && !svg.contains(">140</text>"));
        assert!(svg.contains(&format!("height=\"{:.1}\"", PLOT_H * 0.75)));
    }
}
