//! Heat-map of the similarity scores s_k(i) (layers down, pack sizes across), with each
//! layer's role in a plan when one is given. Plain SVG: viewable in any browser, no
//! plotting dependency.

use std::fmt::Write as _;

use super::plan::{Plan, Role};
use super::scores::SimilarityScores;

const CELL_W: usize = 72;
const CELL_H: usize = 20;
const LABEL_W: usize = 56;
const ROLE_W: usize = 84;

/// A perceptually ordered colour ramp (dark blue -> teal -> yellow) at t in [0, 1].
fn ramp(t: f64) -> (u8, u8, u8) {
    const STOPS: [(f64, f64, f64); 5] = [
        (68.0, 1.0, 84.0),
        (59.0, 82.0, 139.0),
        (33.0, 145.0, 140.0),
        (94.0, 201.0, 98.0),
        (253.0, 231.0, 37.0),
    ];
    let t = t.clamp(0.0, 1.0) * (STOPS.len() - 1) as f64;
    let i = (t.floor() as usize).min(STOPS.len() - 2);
    let f = t - i as f64;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    let mix = |x: f64, y: f64| (x + (y - x) * f).round() as u8;
    (mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

fn role_colour(role: Role) -> &'static str {
    match role {
        Role::Drop => "#d62728",
        Role::Finetune => "#1f77b4",
        Role::Anchor => "#ff7f0e",
        Role::Freeze => "#7f7f7f",
    }
}

/// The SVG document. Colours are scaled between the smallest and largest score shown.
pub fn svg(scores: &SimilarityScores, plan: Option<&Plan>, title: &str) -> String {
    let l = scores.num_layers();
    let packs = scores.max_pack();
    let values: Vec<f64> = (1..=packs)
        .flat_map(|k| scores.means(k).iter().copied())
        .filter(|v| v.is_finite())
        .collect();
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let span = if hi > lo { hi - lo } else { 1.0 };
    let role_w = if plan.is_some() { ROLE_W } else { 0 };
    let width = LABEL_W + packs * CELL_W + role_w + 8;
    let top = 2 * CELL_H + 8;
    let height = top + l * CELL_H + 2 * CELL_H;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="4" y="16" font-weight="bold">{}</text>"#,
        crate::svg::esc(title)
    );
    let _ = writeln!(s, r#"<text x="4" y="{}">layer</text>"#, top - 6);
    for k in 1..=packs {
        let x = LABEL_W + (k - 1) * CELL_W + CELL_W / 2;
        let _ = writeln!(
            s,
            r#"<text x="{x}" y="{}" text-anchor="middle">s{k}</text>"#,
            top - 6
        );
    }
    if plan.is_some() {
        let x = LABEL_W + packs * CELL_W + 6;
        let _ = writeln!(s, r#"<text x="{x}" y="{}">role</text>"#, top - 6);
    }
    for i in 0..l {
        let y = top + i * CELL_H;
        let _ = writeln!(s, r#"<text x="4" y="{}">{i}</text>"#, y + CELL_H - 6);
        for k in 1..=packs {
            let x = LABEL_W + (k - 1) * CELL_W;
            match scores.mean(k, i) {
                Some(v) => {
                    let (r, g, b) = ramp((v - lo) / span);
                    let ink = if (v - lo) / span > 0.6 {
                        "black"
                    } else {
                        "white"
                    };
                    let _ = writeln!(
                        s,
                        r#"<rect x="{x}" y="{y}" width="{CELL_W}" height="{CELL_H}" fill="rgb({r},{g},{b})"><title>s{k}({i}) = {v}</title></rect><text x="{}" y="{}" text-anchor="middle" fill="{ink}">{v:.4}</text>"#,
                        x + CELL_W / 2,
                        y + CELL_H - 6
                    );
                }
                None => {
                    let _ = writeln!(
                        s,
                        r##"<rect x="{x}" y="{y}" width="{CELL_W}" height="{CELL_H}" fill="#eeeeee"/>"##
                    );
                }
            }
        }
        if let Some(role) = plan.and_then(|p| p.role(i)) {
            let x = LABEL_W + packs * CELL_W + 6;
            let _ = writeln!(
                s,
                r#"<rect x="{x}" y="{}" width="{}" height="{}" rx="3" fill="{}"/><text x="{}" y="{}" fill="white">{}</text>"#,
                y + 2,
                ROLE_W - 12,
                CELL_H - 4,
                role_colour(role),
                x + 6,
                y + CELL_H - 6,
                role.name()
            );
        }
    }
    let _ = writeln!(
        s,
        r#"<text x="4" y="{}">s_k(i): mean cosine between h_i and h_(i+k); colour from {lo:.4} (dark) to {hi:.4} (yellow)</text>"#,
        top + l * CELL_H + CELL_H
    );
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramp_ends_and_svg_marks_roles() {
        assert_eq!(ramp(0.0), (68, 1, 84));
        assert_eq!(ramp(1.0), (253, 231, 37));
        let scores =
            SimilarityScores::from_means(4, vec![vec![0.5, 0.9, 0.7], vec![0.4, 0.6], vec![0.3]])
                .unwrap();
        let plan = Plan::from_roles("manual", 0.25, 4, vec![1], vec![0], vec![]).unwrap();
        let out = svg(&scores, Some(&plan), "t <1>");
        assert!(out.starts_with("<svg") && out.trim_end().ends_with("</svg>"));
        assert!(out.contains(">drop<") && out.contains(">finetune<") && out.contains(">freeze<"));
        assert!(out.contains("t &lt;1&gt;"));
        // 3 + 2 + 1 scored cells, the rest of the 4 x 3 grid blank.
        assert_eq!(out.matches("<title>").count(), 6);
        assert_eq!(out.matches("#eeeeee").count(), 6);
    }
}
