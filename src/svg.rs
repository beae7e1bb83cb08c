//! What every chart of the program shares (plain SVG, no plotting dependency): text
//! escaping and the opening of a chart.

/// Text escaped for SVG.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The opening of a chart: the `<svg>` element of `w` × `h`, a white background, the
/// title centred at (`title_x`, `title_y`) and the frame of the plot area.
pub fn svg_frame(
    (w, h): (f64, f64),
    (title_x, title_y): (f64, f64),
    title: &str,
    (left, top, pw, ph): (f64, f64, f64, f64),
) -> String {
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{title_x}" y="{title_y}" text-anchor="middle" font-size="14">{}</text>
<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>
"##,
        esc(title)
    )
}
