//! Drawing for the synthetic tasks: an RGB canvas, filled shapes rasterised by
//! point-in-shape tests (no anti-aliasing, so every shape is one exact colour), a 5×7
//! bitmap font, and PNG encoding.

use anyhow::{anyhow, Result};

pub type Rgb = [u8; 3];

/// An RGB image, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canvas {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u8>,
}

impl Canvas {
    pub fn new(width: u32, height: u32, background: Rgb) -> Self {
        let mut pixels = Vec::with_capacity((width * height * 3) as usize);
        for _ in 0..width * height {
            pixels.extend_from_slice(&background);
        }
        Self {
            width,
            height,
            pixels,
        }
    }

    pub fn get(&self, x: u32, y: u32) -> Rgb {
        let i = ((y * self.width + x) * 3) as usize;
        [self.pixels[i], self.pixels[i + 1], self.pixels[i + 2]]
    }

    pub fn set(&mut self, x: i64, y: i64, c: Rgb) {
        if x < 0 || y < 0 || x >= self.width as i64 || y >= self.height as i64 {
            return;
        }
        let i = ((y as u32 * self.width + x as u32) * 3) as usize;
        self.pixels[i..i + 3].copy_from_slice(&c);
    }

    /// Fills the rectangle [x0, x1) × [y0, y1) (clipped).
    pub fn fill_rect(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, c: Rgb) {
        for y in y0.max(0)..y1.min(self.height as i64) {
            for x in x0.max(0)..x1.min(self.width as i64) {
                self.set(x, y, c);
            }
        }
    }

    /// Draws `shape` centred at (cx, cy) with half-size `r`: a pixel is painted when its
    /// centre lies inside the shape and it belongs to the largest 4-connected region of such
    /// pixels (sharp star tips would otherwise leave stray pixels, which read as extra
    /// objects). Everything painted lies in [cx-r, cx+r]².
    pub fn draw_shape(&mut self, shape: Shape, cx: f64, cy: f64, r: f64, c: Rgb) {
        let x0 = (cx - r).floor() as i64;
        let y0 = (cy - r).floor() as i64;
        let w = ((cx + r).ceil() as i64 - x0).max(0) as usize;
        let h = ((cy + r).ceil() as i64 - y0).max(0) as usize;
        let mut inside = vec![false; w * h];
        for y in 0..h {
            for x in 0..w {
                let dx = (x0 + x as i64) as f64 + 0.5 - cx;
                let dy = (y0 + y as i64) as f64 + 0.5 - cy;
                inside[y * w + x] = shape.contains(dx, dy, r);
            }
        }
        // Label 4-connected regions; keep the largest (the first of equal ones).
        let mut label = vec![usize::MAX; w * h];
        let mut sizes = Vec::new();
        for start in 0..w * h {
            if !inside[start] || label[start] != usize::MAX {
                continue;
            }
            let id = sizes.len();
            let mut stack = vec![start];
            label[start] = id;
            let mut n = 0;
            while let Some(i) = stack.pop() {
                n += 1;
                let (x, y) = (i % w, i / w);
                let mut visit = |j: usize| {
                    if inside[j] && label[j] == usize::MAX {
                        label[j] = id;
                        stack.push(j);
                    }
                };
                if x > 0 {
                    visit(i - 1);
                }
                if x + 1 < w {
                    visit(i + 1);
                }
                if y > 0 {
                    visit(i - w);
                }
                if y + 1 < h {
                    visit(i + w);
                }
            }
            sizes.push(n);
        }
        let Some(keep) = (0..sizes.len()).max_by_key(|&i| (sizes[i], std::cmp::Reverse(i))) else {
            return;
        };
        for (i, &l) in label.iter().enumerate() {
            if l == keep {
                self.set(x0 + (i % w) as i64, y0 + (i / w) as i64, c);
            }
        }
    }

    /// Writes `text` (upper-case letters, digits, spaces) with the 5×7 font, each font
    /// pixel a `scale`×`scale` block, glyphs 6 font pixels apart; (x, y) is the top left.
    pub fn draw_text(&mut self, text: &str, x: i64, y: i64, scale: i64, c: Rgb) {
        for (k, ch) in text.chars().enumerate() {
            let Some(rows) = glyph(ch) else { continue };
            let gx = x + k as i64 * GLYPH_ADVANCE * scale;
            for (row, bits) in rows.iter().enumerate() {
                for col in 0..5 {
                    if bits & (0x10 >> col) != 0 {
                        let px = gx + col * scale;
                        let py = y + row as i64 * scale;
                        self.fill_rect(px, py, px + scale, py + scale, c);
                    }
                }
            }
        }
    }

    /// PNG bytes (8-bit RGB). Deterministic: same pixels, same bytes.
    pub fn to_png(&self) -> Result<Vec<u8>> {
        use image::ImageEncoder;
        let mut out = Vec::new();
        image::codecs::png::PngEncoder::new(&mut out)
            .write_image(
                &self.pixels,
                self.width,
                self.height,
                image::ExtendedColorType::Rgb8,
            )
            .map_err(|e| anyhow!("cannot encode PNG: {e}"))?;
        Ok(out)
    }
}

/// Width of a text of `n` glyphs at `scale`, in pixels (no trailing gap).
pub fn text_width(n: usize, scale: i64) -> i64 {
    if n == 0 {
        0
    } else {
        (n as i64 * GLYPH_ADVANCE - 1) * scale
    }
}

/// Font pixels from one glyph's left edge to the next one's.
pub const GLYPH_ADVANCE: i64 = 6;
/// Font pixels per glyph row and column.
pub const GLYPH_HEIGHT: i64 = 7;

/// The shapes of the scenes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Circle,
    Square,
    Triangle,
    Star,
    Cross,
}

impl Shape {
    pub const ALL: [Shape; 5] = [
        Shape::Circle,
        Shape::Square,
        Shape::Triangle,
        Shape::Star,
        Shape::Cross,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Shape::Circle => "circle",
            Shape::Square => "square",
            Shape::Triangle => "triangle",
            Shape::Star => "star",
            Shape::Cross => "cross",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            Shape::Cross => "crosses",
            s => match s {
                Shape::Circle => "circles",
                Shape::Square => "squares",
                Shape::Triangle => "triangles",
                _ => "stars",
            },
        }
    }

    /// Whether the point (dx, dy) from the centre is inside the shape of half-size r.
    pub fn contains(self, dx: f64, dy: f64, r: f64) -> bool {
        match self {
            Shape::Circle => dx * dx + dy * dy <= r * r,
            Shape::Square => dx.abs() <= 0.85 * r && dy.abs() <= 0.85 * r,
            Shape::Triangle => {
                // Apex (0, -0.9r), base at y = 0.8r with half-width 0.95r.
                let top = -0.9 * r;
                let bottom = 0.8 * r;
                dy >= top && dy <= bottom && dx.abs() <= 0.95 * r * (dy - top) / (bottom - top)
            }
            Shape::Star => in_star(dx, dy, r),
            Shape::Cross => {
                let w = 0.3 * r;
                let l = 0.9 * r;
                (dx.abs() <= w && dy.abs() <= l) || (dy.abs() <= w && dx.abs() <= l)
            }
        }
    }
}

/// Five-pointed star, first point up, inner radius 0.45 r (even-odd polygon test).
fn in_star(dx: f64, dy: f64, r: f64) -> bool {
    let mut pts = [(0.0f64, 0.0f64); 10];
    for (k, p) in pts.iter_mut().enumerate() {
        let rad = if k % 2 == 0 { r } else { 0.45 * r };
        let a = std::f64::consts::PI * (k as f64) / 5.0;
        *p = (rad * a.sin(), -rad * a.cos());
    }
    let mut inside = false;
    let mut j = pts.len() - 1;
    for i in 0..pts.len() {
        let (xi, yi) = pts[i];
        let (xj, yj) = pts[j];
        if (yi > dy) != (yj > dy) && dx < (xj - xi) * (dy - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
}

/// The six named colours of the scenes.
pub const COLOURS: [(&str, Rgb); 6] = [
    ("red", [220, 40, 40]),
    ("green", [40, 160, 60]),
    ("blue", [40, 80, 220]),
    ("yellow", [235, 200, 30]),
    ("purple", [150, 60, 190]),
    ("orange", [245, 140, 20]),
];

/// Plain light backgrounds of the scenes.
pub const BACKGROUNDS: [Rgb; 4] = [
    [255, 255, 255],
    [236, 236, 236],
    [250, 245, 230],
    [230, 240, 250],
];

/// The 5×7 glyph of an upper-case letter or digit: 7 rows, bit 4 the leftmost column.
/// Every letter touches the top and the bottom row.
pub fn glyph(c: char) -> Option<[u8; 7]> {
    let g: [u8; 7] = match c {
        'A' => [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        _ => return None,
    };
    Some(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_shapes_stay_in_their_box_and_fill_as_expected() {
        // Fill ratio of each shape's painted pixels in a 41×41 box (r = 20): known areas
        // (circle π/4, square 0.85² of the box, triangle ½·1.9·1.7/4, cross, star).
        for (shape, lo, hi) in [
            (Shape::Circle, 0.76, 0.81),
            (Shape::Square, 0.70, 0.75),
            (Shape::Triangle, 0.38, 0.43),
            (Shape::Cross, 0.43, 0.47),
            (Shape::Star, 0.31, 0.35),
        ] {
            let mut c = Canvas::new(60, 60, [255; 3]);
            c.draw_shape(shape, 30.0, 30.0, 20.0, [0, 0, 0]);
            let mut n = 0;
            for y in 0..60 {
                for x in 0..60 {
                    if c.get(x, y) == [0, 0, 0] {
                        n += 1;
                        assert!((10..50).contains(&x) && (10..50).contains(&y), "{shape:?}");
                    }
                }
            }
            let ratio = n as f64 / 1600.0;
            assert!((lo..hi).contains(&ratio), "{shape:?}: {ratio}");
        }
    }

    #[test]
    fn synthetic_glyphs_are_distinct_and_full_height() {
        let chars: Vec<char> = ('A'..='Z').chain('0'..='9').collect();
        for (i, a) in chars.iter().enumerate() {
            let g = glyph(*a).unwrap();
            if a.is_ascii_uppercase() {
                assert!(g[0] != 0 && g[6] != 0, "{a}");
            }
            for b in &chars[i + 1..] {
                assert_ne!(g, glyph(*b).unwrap(), "{a} {b}");
            }
        }
        assert!(glyph('a').is_none());
    }
}
