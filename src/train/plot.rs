//! The loss curve of a run as a plain SVG line chart (loss per optimizer step, with the
//! learning rate on a second axis).

use std::fmt::Write as _;

const W: f64 = 720.0;
const H: f64 = 360.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 72.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 48.0;

fn path(points: &[(f64, f64)], x: impl Fn(f64) -> f64, y: impl Fn(f64) -> f64) -> String {
    points
        .iter()
        .enumerate()
        .map(|(i, &(a, b))| format!("{}{:.1},{:.1}", if i == 0 { "M" } else { " L" }, x(a), y(b)))
        .collect()
}

fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
        (l.min(v), h.max(v))
    });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-12 {
        (lo - 0.5, hi + 0.5)
    } else {
        (lo, hi)
    }
}

/// `steps`: (step, loss, lr) per optimizer step.
pub fn loss_curve_svg(title: &str, steps: &[(usize, f64, f64)]) -> String {
    let (x0, x1) = range(steps.iter().map(|s| s.0 as f64));
    let (l0, l1) = range(steps.iter().map(|s| s.1));
    let (_, r1) = range(steps.iter().map(|s| s.2));
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let x = |v: f64| LEFT + (v - x0) / (x1 - x0).max(1e-12) * pw;
    let y = |v: f64| TOP + (1.0 - (v - l0) / (l1 - l0)) * ph;
    let yr = |v: f64| TOP + (1.0 - v / r1.max(1e-30)) * ph;
    let mut s = crate::svg::svg_frame((W, H), (W / 2.0, 22.0), title, (LEFT, TOP, pw, ph));
    for k in 0..=4 {
        let f = k as f64 / 4.0;
        let lv = l0 + (l1 - l0) * f;
        let rv = r1 * f;
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#1f77b4">{lv:.4}</text><text x="{:.1}" y="{:.1}" fill="#ff7f0e">{rv:.2e}</text>"##,
            LEFT - 6.0,
            y(lv) + 4.0,
            W - RIGHT + 6.0,
            yr(rv) + 4.0
        );
    }
    let _ = writeln!(
        s,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">optimizer step ({} to {})</text>"##,
        LEFT + pw / 2.0,
        H - 14.0,
        x0,
        x1
    );
    let loss: Vec<(f64, f64)> = steps.iter().map(|s| (s.0 as f64, s.1)).collect();
    let lr: Vec<(f64, f64)> = steps.iter().map(|s| (s.0 as f64, s.2)).collect();
    let _ = writeln!(
        s,
        r##"<path d="{}" fill="none" stroke="#ff7f0e" stroke-width="1" stroke-dasharray="4 3"/>"##,
        path(&lr, x, yr)
    );
    let _ = writeln!(
        s,
        r##"<path d="{}" fill="none" stroke="#1f77b4" stroke-width="2"/>"##,
        path(&loss, x, y)
    );
    let _ = writeln!(
        s,
        r##"<text x="{LEFT}" y="{:.1}" fill="#1f77b4">loss</text><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#ff7f0e">learning rate</text>"##,
        TOP - 6.0,
        W - 8.0,
        TOP - 6.0
    );
    s.push_str("</svg>\n");
    s
}
