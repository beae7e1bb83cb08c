//! `interlace synth`: determinism, answers and training captions checked against the decoded pixels by rules
//! written here (not the generator's metadata), and our own readers and scorer accepting
//! the output.

mod common;

use common::assert_ok;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use interlace::data::{load_portion, open_sources, ImageSource, Take};
use interlace::eval::benchmarks::{build_prompt, Item};
use interlace::eval::metrics::{can_infer, ocrbench_correct, yorn_extraction};
use interlace::eval::report::judge;
use interlace::eval::{BenchSpec, Benchmark, Task};
use interlace::synth::draw::glyph;
use interlace::synth::{write_synth, SynthManifest, SynthOptions, CAPTION_PROMPT};

const TRAIN: usize = 120;
const BENCH: usize = 100;

fn opts(seed: u64) -> SynthOptions {
    SynthOptions {
        seed,
        train_rows: TRAIN,
        bench_rows: BENCH,
        ..Default::default()
    }
}

/// Every file under `dir`, relative path → bytes.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.insert(
                    p.strip_prefix(base).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    write_synth(&a, &opts(5)).unwrap();
    write_synth(&b, &opts(5)).unwrap();
    write_synth(&c, &opts(6)).unwrap();
    let (fa, fb, fc) = (files(&a), files(&b), files(&c));
    assert_eq!(fa.len(), 8 + 8 + 1, "{:?}", fa.keys().collect::<Vec<_>>());
    assert_eq!(fa.keys().collect::<Vec<_>>(), fb.keys().collect::<Vec<_>>());
    for (k, v) in &fa {
        assert!(fb[k] == *v, "{} differs between two runs", k.display());
        if k.extension().is_some_and(|e| e == "tsv" || e == "parquet") {
            assert!(fc[k] != *v, "{} is the same with another seed", k.display());
        }
    }
    // Nothing left behind but the outputs.
    let mut names: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["a", "b", "c"]);
}

// ---------- an independent reading of the images ----------

type Rgb = [u8; 3];

struct Img {
    w: usize,
    h: usize,
    px: Vec<Rgb>,
}

impl Img {
    fn from(img: &image::DynamicImage) -> Self {
        let rgb = img.to_rgb8();
        Img {
            w: rgb.width() as usize,
            h: rgb.height() as usize,
            px: rgb.pixels().map(|p| p.0).collect(),
        }
    }
    fn at(&self, x: usize, y: usize) -> Rgb {
        self.px[y * self.w + x]
    }
    fn background(&self) -> Rgb {
        let mut n: HashMap<Rgb, usize> = HashMap::new();
        for p in &self.px {
            *n.entry(*p).or_default() += 1;
        }
        n.into_iter().max_by_key(|(_, c)| *c).unwrap().0
    }
}

/// Colour names by hue, with thresholds chosen here.
fn hue_name(c: Rgb) -> &'static str {
    let [r, g, b] = c.map(|v| v as f64 / 255.0);
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    assert!(max - min > 0.3, "not a saturated colour: {c:?}");
    let d = max - min;
    let h = if max == r {
        60.0 * (((g - b) / d).rem_euclid(6.0))
    } else if max == g {
        60.0 * ((b - r) / d + 2.0)
    } else {
        60.0 * ((r - g) / d + 4.0)
    };
    match h {
        h if !(15.0..330.0).contains(&h) => "red",
        h if h < 40.0 => "orange",
        h if h < 70.0 => "yellow",
        h if (90.0..170.0).contains(&h) => "green",
        h if (190.0..250.0).contains(&h) => "blue",
        h if (260.0..330.0).contains(&h) => "purple",
        h => panic!("hue {h} of {c:?} has no name"),
    }
}

#[derive(Debug, Clone)]
struct Comp {
    colour: Rgb,
    area: usize,
    cx: f64,
    cy: f64,
    /// Centre of the bounding box.
    bx: f64,
    by: f64,
    shape: &'static str,
}

impl Comp {
    fn hue(&self) -> &'static str {
        hue_name(self.colour)
    }
    /// Without a hue: red, green and blue equal.
    fn grey(&self) -> bool {
        let [r, g, b] = self.colour;
        r == g && g == b
    }
}

/// 4-connected regions of one exact colour other than the background, each classified by
/// how much of its bounding box it fills and how its area splits between top and bottom.
fn components(img: &Img) -> Vec<Comp> {
    let bg = img.background();
    let mut seen = vec![false; img.w * img.h];
    let mut out = Vec::new();
    for start in 0..img.w * img.h {
        if seen[start] || img.px[start] == bg {
            continue;
        }
        let colour = img.px[start];
        let mut stack = vec![start];
        seen[start] = true;
        let mut pts = Vec::new();
        while let Some(i) = stack.pop() {
            let (x, y) = (i % img.w, i / img.w);
            pts.push((x, y));
            let mut push = |j: usize| {
                if !seen[j] && img.px[j] == colour {
                    seen[j] = true;
                    stack.push(j);
                }
            };
            if x > 0 {
                push(i - 1);
            }
            if x + 1 < img.w {
                push(i + 1);
            }
            if y > 0 {
                push(i - img.w);
            }
            if y + 1 < img.h {
                push(i + img.w);
            }
        }
        let (x0, x1) = (
            pts.iter().map(|p| p.0).min().unwrap(),
            pts.iter().map(|p| p.0).max().unwrap(),
        );
        let (y0, y1) = (
            pts.iter().map(|p| p.1).min().unwrap(),
            pts.iter().map(|p| p.1).max().unwrap(),
        );
        let area = pts.len();
        let fill = area as f64 / ((x1 - x0 + 1) * (y1 - y0 + 1)) as f64;
        let mid = (y0 + y1) as f64 / 2.0;
        let top = pts.iter().filter(|p| (p.1 as f64) < mid).count() as f64;
        let bottom = pts.iter().filter(|p| (p.1 as f64) > mid).count() as f64;
        // A cross (like a circle) fills the whole middle row and column of its box; a
        // triangle (apex up) has much less area above its middle than below; a star neither.
        let (xm, ym) = ((x0 + x1) / 2, (y0 + y1) / 2);
        let full_row = pts.iter().filter(|p| p.1 == ym).count() == x1 - x0 + 1;
        let full_col = pts.iter().filter(|p| p.0 == xm).count() == y1 - y0 + 1;
        let shape = if fill > 0.93 {
            "square"
        } else if fill > 0.68 {
            "circle"
        } else if full_row && full_col {
            "cross"
        } else if top < 0.6 * bottom {
            "triangle"
        } else {
            "star"
        };
        out.push(Comp {
            colour,
            area,
            cx: pts.iter().map(|p| p.0 as f64).sum::<f64>() / area as f64,
            cy: pts.iter().map(|p| p.1 as f64).sum::<f64>() / area as f64,
            bx: (x0 + x1) as f64 / 2.0,
            by: (y0 + y1) as f64 / 2.0,
            shape,
        });
    }
    out
}

fn one<'a>(comps: &'a [Comp], what: &str, f: impl Fn(&Comp) -> bool) -> &'a Comp {
    let found: Vec<&Comp> = comps.iter().filter(|c| f(c)).collect();
    assert_eq!(found.len(), 1, "exactly one {what} in {comps:?}");
    found[0]
}

/// The text of the option `letter`.
fn option(options: &[(char, String)], letter: &str) -> String {
    options
        .iter()
        .find(|(c, _)| c.to_string() == letter)
        .unwrap_or_else(|| panic!("no option {letter} in {options:?}"))
        .1
        .clone()
}

/// Reads the word by matching each 5×7 cell against the font.
fn read_word(img: &Img) -> String {
    let bg = img.background();
    let ink: Vec<(usize, usize)> = (0..img.h)
        .flat_map(|y| (0..img.w).map(move |x| (x, y)))
        .filter(|&(x, y)| img.at(x, y) != bg)
        .collect();
    let x0 = ink.iter().map(|p| p.0).min().unwrap() as i64;
    let x1 = ink.iter().map(|p| p.0).max().unwrap() as i64;
    let y0 = ink.iter().map(|p| p.1).min().unwrap() as i64;
    let y1 = ink.iter().map(|p| p.1).max().unwrap() as i64;
    let scale = (y1 - y0 + 1) / 7;
    assert_eq!((y1 - y0 + 1) % 7, 0, "text height is not 7 font pixels");
    let alphabet: Vec<(char, [u8; 7])> = ('A'..='Z').map(|c| (c, glyph(c).unwrap())).collect();
    // The first glyph may start with empty columns (I, J): try shifting the origin left.
    'shift: for s in 0..3 {
        let ox = x0 - s * scale;
        let n = (x1 + 1 - ox + 6 * scale - 1) / (6 * scale);
        let mut word = String::new();
        for k in 0..n {
            let mut rows = [0u8; 7];
            for (r, row) in rows.iter_mut().enumerate() {
                for c in 0..5 {
                    let x = ox + (k * 6 + c) * scale + scale / 2;
                    let y = y0 + r as i64 * scale + scale / 2;
                    if x >= 0 && (x as usize) < img.w && img.at(x as usize, y as usize) != bg {
                        *row |= 0x10 >> c;
                    }
                }
            }
            match alphabet.iter().find(|(_, g)| *g == rows) {
                Some((ch, _)) => word.push(*ch),
                None => continue 'shift,
            }
        }
        return word;
    }
    panic!("no word found");
}

/// Bar values from pixel heights: the unit is the spacing of the grid lines left of the
/// first bar.
fn read_bars(img: &Img) -> Vec<i64> {
    let saturated = |c: Rgb| {
        let max = *c.iter().max().unwrap() as i32;
        let min = *c.iter().min().unwrap() as i32;
        max - min > 80
    };
    let mut bars: Vec<(usize, usize)> = Vec::new(); // (first column, last column)
    for x in 0..img.w {
        let has = (0..img.h).any(|y| saturated(img.at(x, y)));
        match (has, bars.last_mut()) {
            (true, Some(b)) if b.1 + 1 == x => b.1 = x,
            (true, _) => bars.push((x, x)),
            _ => {}
        }
    }
    let probe = bars[0].0 - 2;
    let grid: Vec<usize> = (0..img.h)
        .filter(|&y| {
            let c = img.at(probe, y);
            c[0] == c[1] && c[1] == c[2] && (150..250).contains(&c[0])
        })
        .collect();
    assert!(grid.len() >= 5, "grid lines {grid:?}");
    let unit = grid[1] - grid[0];
    assert!(grid.windows(2).all(|w| w[1] - w[0] == unit), "{grid:?}");
    bars.iter()
        .map(|&(a, b)| {
            let x = (a + b) / 2;
            let h = (0..img.h).filter(|&y| saturated(img.at(x, y))).count();
            assert_eq!(h % unit, 0, "bar height {h} is not a multiple of {unit}");
            (h / unit) as i64
        })
        .collect()
}

/// Checks one question against its image; `answer` as the scorer reads it.
fn check(
    family: &str,
    question: &str,
    hint: Option<&str>,
    options: &[(char, String)],
    answer: &str,
    image: &image::DynamicImage,
) {
    let img = Img::from(image);
    let ctx = format!("{family}: {question} -> {answer}");
    let w = |s: &str, i: usize| {
        s.split_whitespace()
            .nth(i)
            .unwrap()
            .trim_end_matches('?')
            .to_string()
    };
    match family {
        "SynthText" => {
            // One line of dark ink on a light background, 256×64.
            assert_eq!((img.w, img.h), (256, 64), "{ctx}");
            let lum = |c: Rgb| 0.299 * c[0] as f64 + 0.587 * c[1] as f64 + 0.114 * c[2] as f64;
            let bg = img.background();
            assert!(lum(bg) >= 200.0, "{ctx}: background {bg:?}");
            for p in img.px.iter().filter(|p| **p != bg) {
                assert!(lum(*p) <= 100.0, "{ctx}: ink {p:?}");
            }
            // Letters 42 pixels high (6× the font; every letter touches its top and bottom
            // row), at the start of the line: the top 8–14 pixels down.
            let rows: Vec<usize> = (0..img.h)
                .filter(|&y| (0..img.w).any(|x| img.at(x, y) != bg))
                .collect();
            let (top, bottom) = (rows[0], *rows.last().unwrap());
            assert_eq!(bottom + 1 - top, 42, "{ctx}");
            assert!((8..=14).contains(&top), "{ctx}: top {top}");
            assert_eq!(read_word(&img), answer, "{ctx}");
        }
        "SynthChart" => {
            let v = read_bars(&img);
            if question.starts_with("What is the value of bar ") {
                let bar = w(question, 6).chars().next().unwrap() as usize - 'A' as usize;
                assert_eq!(v[bar].to_string(), answer, "{ctx} {v:?}");
            } else {
                let max = v.iter().max().unwrap();
                assert_eq!(v.iter().filter(|x| *x == max).count(), 1, "{v:?}");
                let i = v.iter().position(|x| x == max).unwrap();
                assert_eq!(
                    ((b'A' + i as u8) as char).to_string(),
                    answer,
                    "{ctx} {v:?}"
                );
            }
        }
        // The warm-ups ask their benchmark's questions of easier images.
        "SynthBasicPOPE" | "SynthBasicCount" | "SynthBasicText" | "SynthBasicChart" => {
            if family == "SynthBasicPOPE" {
                let comps = components(&img);
                assert_eq!(comps.len(), 1, "{ctx}");
                assert!(comps[0].area >= 1000, "{ctx}: {comps:?}");
            }
            let parent = family.replace("Basic", "");
            check(&parent, question, hint, options, answer, image)
        }
        // One large object: its colour or shape, said (SynthBasic) or as an option letter.
        "SynthBasic" | "SynthBasicMCQ" => {
            let comps = components(&img);
            assert_eq!(comps.len(), 1, "{ctx}");
            let truth = if question == "What colour is the object?" {
                comps[0].hue()
            } else {
                assert_eq!(question, "What shape is the object?");
                comps[0].shape
            };
            let said = if family == "SynthBasic" {
                answer.to_string()
            } else {
                option(options, answer)
            };
            assert_eq!(said, truth, "{ctx}");
        }
        "SynthVQA" => {
            let comps = components(&img);
            if question.starts_with("What colour is the ") {
                let s = w(question, 4);
                assert_eq!(one(&comps, &s, |c| c.shape == s).hue(), answer, "{ctx}");
            } else {
                let colour = w(question, 4);
                assert_eq!(
                    one(&comps, &colour, |c| c.hue() == colour).shape,
                    answer,
                    "{ctx}"
                );
            }
        }
        "SynthMMB" => {
            let comps = components(&img);
            let said = option(options, answer);
            if question.starts_with("Where is the ") {
                let find = |colour: String, shape: String| {
                    one(&comps, "object", |c| c.hue() == colour && c.shape == shape).clone()
                };
                let a = find(w(question, 3), w(question, 4));
                let b = find(w(question, 8), w(question, 9));
                let (dx, dy) = (a.cx - b.cx, a.cy - b.cy);
                let truth = if dx.abs() > dy.abs() {
                    if dx < 0.0 {
                        "to the left of"
                    } else {
                        "to the right of"
                    }
                } else if dy < 0.0 {
                    "above"
                } else {
                    "below"
                };
                assert_eq!(said, truth, "{ctx}");
            } else if question == "Which object is the largest?" {
                let big = comps.iter().max_by_key(|c| c.area).unwrap();
                assert_eq!(said, big.shape, "{ctx}");
            } else {
                let s = w(question, 4);
                assert_eq!(said, one(&comps, &s, |c| c.shape == s).hue(), "{ctx}");
            }
        }
        "SynthPOPE" => {
            let comps = components(&img);
            let words: Vec<&str> = question.split_whitespace().collect();
            let (colour, shape) = (words[3], words[4]);
            let present = comps.iter().any(|c| c.hue() == colour && c.shape == shape);
            assert_eq!(answer, if present { "Yes" } else { "No" }, "{ctx}");
        }
        "SynthHR" | "SynthBasicHR" => {
            let comps = components(&img);
            let clutter = if family == "SynthHR" { 12..=20 } else { 4..=8 };
            assert!(clutter.contains(&(comps.len() - 1)), "{ctx}: {comps:?}");
            let star = one(&comps, "coloured object", |c| !c.grey());
            assert_eq!(star.shape, "star", "{ctx}: {comps:?}");
            if family == "SynthHR" {
                assert!(star.area <= 60, "{ctx}: {star:?}");
            }
            assert_eq!(option(options, answer), star.hue(), "{ctx}");
        }
        "SynthCount" => {
            let comps = components(&img);
            let plural = w(question, 2);
            let n = comps
                .iter()
                .filter(|c| format!("{}s", c.shape) == plural || format!("{}es", c.shape) == plural)
                .count();
            assert_eq!(n.to_string(), answer, "{ctx} {comps:?}");
        }
        "SynthSci" => {
            let comps = components(&img);
            assert!(comps.len() >= 2);
            let hint = hint.expect("SynthSci rows have a hint");
            let corners = |s: &str| match s {
                "circle" => 0,
                "triangle" => 3,
                "square" => 4,
                "star" => 10,
                _ => panic!("{s} has no corner count in the hint"),
            };
            let truth = if hint.contains("corners") {
                comps.iter().max_by_key(|c| corners(c.shape)).unwrap().shape
            } else if hint.starts_with("Bigger") {
                comps.iter().max_by_key(|c| c.area).unwrap().shape
            } else if hint.contains("higher") {
                comps
                    .iter()
                    .min_by(|a, b| a.cy.total_cmp(&b.cy))
                    .unwrap()
                    .shape
            } else {
                assert!(hint.starts_with("Red"), "{hint}");
                one(&comps, "red object", |c| c.hue() == "red").shape
            };
            assert_eq!(option(options, answer), truth, "{ctx}");
        }
        other => panic!("unknown family {other}"),
    }
}

/// Row and column (0–2) of a 3×3 grid over a `w`-pixel canvas, or None within `tol` pixels
/// of a grid line (a bounding box's centre is up to 0.1 half-size off the drawn centre).
fn grid_cell(x: f64, y: f64, w: f64, tol: f64) -> Option<(usize, usize)> {
    let third = |v: f64| {
        let t = 3.0 * v / w;
        let near = (t - t.round()).abs() * w / 3.0 <= tol && t.round() > 0.0 && t.round() < 3.0;
        (!near).then_some(t.floor() as usize)
    };
    Some((third(y)?, third(x)?))
}

fn cell_of(place: &str) -> (usize, usize) {
    let names = [
        "top left",
        "top",
        "top right",
        "left",
        "centre",
        "right",
        "bottom left",
        "bottom",
        "bottom right",
    ];
    let i = names
        .iter()
        .position(|n| *n == place)
        .unwrap_or_else(|| panic!("unknown place {place:?}"));
    (i / 3, i % 3)
}

/// Checks a training row's image description against the pixels.
fn check_caption(family: &str, caption: &str, image: &image::DynamicImage) {
    let img = Img::from(image);
    // Warm-ups describe their images as their benchmark's family does.
    let family = match family {
        "SynthBasicText" | "SynthBasicChart" | "SynthBasicCount" => &family.replace("Basic", ""),
        f => f,
    };
    let ctx = format!("{family}: {caption}");
    // "crosses" and "cross" → "cross"; "circles" → "circle".
    let singular = |s: &str| {
        if let Some(b) = s.strip_suffix("sses") {
            format!("{b}ss")
        } else if s.ends_with("ss") {
            s.to_string()
        } else {
            s.strip_suffix('s').unwrap_or(s).to_string()
        }
    };
    match family {
        "SynthText" => {
            let word = read_word(&img);
            let letters: Vec<String> = word.chars().map(|c| c.to_string()).collect();
            let want = format!("The letters {}: the word {word}.", letters.join(" "));
            assert_eq!(caption, want, "{ctx}");
        }
        "SynthChart" => {
            let body = caption
                .strip_prefix("A bar chart: ")
                .and_then(|b| b.strip_suffix('.'))
                .unwrap_or_else(|| panic!("{ctx}"));
            let said: Vec<(String, i64)> = body
                .split(", ")
                .map(|p| {
                    let (l, v) = p.split_once(' ').unwrap();
                    (l.to_string(), v.parse().unwrap())
                })
                .collect();
            let seen: Vec<(String, i64)> = read_bars(&img)
                .into_iter()
                .enumerate()
                .map(|(i, v)| (((b'A' + i as u8) as char).to_string(), v))
                .collect();
            assert_eq!(said, seen, "{ctx}");
        }
        "SynthCount" => {
            let comps = components(&img);
            let body = caption.strip_suffix('.').unwrap();
            let mut total = 0;
            for part in body.split(" and ") {
                let words: Vec<&str> = part.split_whitespace().collect();
                assert_eq!(words.len(), 3, "{ctx}");
                let n: usize = words[0].parse().unwrap();
                let shape = singular(words[2]);
                let found = comps
                    .iter()
                    .filter(|c| c.hue() == words[1] && c.shape == shape)
                    .count();
                assert_eq!(found, n, "{ctx} {comps:?}");
                total += n;
            }
            assert_eq!(total, comps.len(), "{ctx}");
        }
        "SynthHR" | "SynthBasicHR" => {
            let comps = components(&img);
            let small = family == "SynthHR";
            let star = one(&comps, "star", |c| {
                !c.grey() && c.shape == "star" && (!small || c.area <= 60)
            });
            assert_eq!(
                comps.iter().filter(|c| c.grey()).count(),
                comps.len() - 1,
                "{ctx}"
            );
            let rest = caption
                .strip_prefix("Grey circles, squares and crosses around a small ")
                .and_then(|r| r.strip_suffix('.'))
                .unwrap_or_else(|| panic!("{ctx}"));
            let (colour, place) = rest.split_once(" star at the ").unwrap();
            assert_eq!(colour, star.hue(), "{ctx}");
            if let Some(cell) = grid_cell(star.bx, star.by, 224.0, 3.0) {
                assert_eq!(cell_of(place), cell, "{ctx} {star:?}");
            }
        }
        _ => {
            // "a SIZE COLOUR SHAPE at the PLACE; ...": one item per object.
            let comps = components(&img);
            let items: Vec<&str> = caption.split("; ").collect();
            assert_eq!(items.len(), comps.len(), "{ctx} {comps:?}");
            for item in items {
                let words: Vec<&str> = item.splitn(6, ' ').collect();
                assert_eq!((words[0], words[4]), ("a", "at"), "{ctx}");
                let place = words[5].strip_prefix("the ").unwrap();
                let c = one(&comps, item, |c| c.hue() == words[2] && c.shape == words[3]);
                // Half-size from the area: the drawn shapes cover π r² (circle), (1.7 r)²
                // (square), 1.9 r × 1.7 r / 2 (triangle), 5 × r × 0.45 r × sin 36° (star)
                // and 2 × 0.6 r × 1.8 r − (0.6 r)² (cross).
                let factor = match c.shape {
                    "circle" => std::f64::consts::PI,
                    "square" => 1.7 * 1.7,
                    "triangle" => 1.9 * 1.7 / 2.0,
                    "star" => 5.0 * 0.45 * 36f64.to_radians().sin(),
                    _ => 2.0 * 0.6 * 1.8 - 0.36,
                };
                let r = (c.area as f64 / factor).sqrt();
                let ok = match words[1] {
                    "small" => r <= 11.8,
                    "medium" => (11.2..=16.8).contains(&r),
                    "large" => r >= 16.2,
                    other => panic!("size {other} in {ctx}"),
                };
                assert!(ok, "{ctx}: size from area {r:.1}, {c:?}");
                if let Some(cell) = grid_cell(c.bx, c.by, 128.0, 1.0 + 0.12 * r) {
                    assert_eq!(cell_of(place), cell, "{ctx} {c:?}");
                }
            }
        }
    }
}

/// The prediction a perfect model gives for a row.
fn perfect(item: &Item) -> String {
    item.answer.trim().to_string()
}

#[test]
fn benchmarks_read_score_and_match_their_pixels() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("synth");
    let m = write_synth(&out, &opts(11)).unwrap();
    assert_eq!(m, SynthManifest::read(&out).unwrap());
    assert!(m.train.is_absolute() && m.train.ends_with("train"));
    assert_eq!(m.seed, 11);
    assert_eq!(m.benchmarks.len(), 8);
    let categories: std::collections::BTreeSet<&str> =
        m.benchmarks.iter().map(|b| b.category.as_str()).collect();
    assert_eq!(
        categories.into_iter().collect::<Vec<_>>(),
        ["general", "instruction/science", "perception", "text/chart"]
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("synth.json")).unwrap()).unwrap();
    assert_eq!(json["train"], "train");
    assert_eq!(json["families"].as_array().unwrap().len(), 8);
    for b in &m.benchmarks {
        assert!(b.file.is_absolute());
        assert_eq!(b.rows, BENCH);
        // The task comes from the file name alone, as `interlace eval --bench FILE` sees it.
        let bench = Benchmark::open(&BenchSpec::new(&b.file), None).unwrap();
        assert_eq!(bench.task, b.task, "{}", b.name);
        assert_eq!(bench.name, b.name);
        assert_eq!(bench.malformed(), 0, "{}", b.name);
        assert_eq!(bench.rows.len(), BENCH);
        assert!(!bench.circular);
        // Chance as our scorer would give random guessing, by task.
        let expect = match b.task {
            Task::Mcq => 0.25..=0.25,
            Task::Yorn => 0.5..=0.5,
            Task::Count | Task::CountNumber => 1.0 / 6.0..=1.0 / 6.0,
            Task::Ocrbench => 0.01..=0.01,
            Task::Vqa => 1.0 / 6.0..=0.2,
            Task::Chartqa => 1.0 / 9.0..=1.0 / 3.0,
        };
        assert!(
            expect.contains(&b.chance) || (b.chance - expect.start()).abs() < 1e-12,
            "{} chance {}",
            b.name,
            b.chance
        );
        let mut yes = 0;
        let mut kinds = std::collections::BTreeSet::new();
        for row in &bench.rows {
            let item = row.item.as_ref().unwrap();
            kinds.insert(row.category.clone().unwrap());
            assert_eq!(row.l2_category.as_deref(), Some(b.category.as_str()));
            let right = judge(b.task, item, row.category.as_deref(), &perfect(item));
            assert_eq!(right.score, 1.0, "{} row {}", b.name, row.index);
            // A wrong answer scores 0: the verdict depends on the answer.
            let wrong = match b.task {
                Task::Mcq => {
                    let a = item.answer.trim();
                    item.options
                        .iter()
                        .find(|(c, _)| c.to_string() != a)
                        .unwrap()
                        .0
                        .to_string()
                }
                Task::Yorn => if item.answer == "Yes" { "No" } else { "Yes" }.to_string(),
                Task::Count | Task::Chartqa => {
                    if item.answer == "7" { "8" } else { "7" }.to_string()
                }
                _ => "zzzz".to_string(),
            };
            if !(b.task == Task::Chartqa && item.answer.chars().all(|c| c.is_ascii_uppercase())) {
                assert_eq!(judge(b.task, item, None, &wrong).score, 0.0, "{}", b.name);
            }
            if b.task == Task::Yorn && item.answer == "Yes" {
                yes += 1;
            }
            let images = bench.load_images(row).unwrap();
            assert_eq!(images.len(), 1);
            let (iw, ih) = (images[0].width(), images[0].height());
            assert!(iw % 32 == 0 && ih % 32 == 0 && iw * ih <= 50176);
            check(
                &b.name,
                &item.question,
                item.hint.as_deref(),
                &item.options,
                item.answer.trim(),
                &images[0],
            );
        }
        if b.task == Task::Yorn {
            assert_eq!(yes, BENCH / 2);
        }
        // Every kind of question shows up in 100 rows.
        let want = match b.name.as_str() {
            "SynthChart" | "SynthVQA" => 2,
            "SynthMMB" | "SynthPOPE" => 3,
            "SynthSci" => 4,
            _ => 1,
        };
        assert_eq!(kinds.len(), want, "{}: {kinds:?}", b.name);
    }
}

#[test]
fn training_sources_read_back_with_eval_prompts_and_match_their_pixels() {
    check_training_sources(opts(3));
}

/// The benchmark files written with `changed` are the same bytes as with the defaults.
fn assert_same_benchmarks(changed: SynthOptions) {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    write_synth(&a, &opts(5)).unwrap();
    write_synth(&b, &changed).unwrap();
    let (fa, fb) = (files(&a.join("bench")), files(&b.join("bench")));
    assert_eq!(fa.len(), 8);
    assert_eq!(fa, fb);
}

#[test]
fn captioned_training_sources_match_their_pixels_and_keep_the_benchmarks() {
    check_training_sources(SynthOptions {
        captions: true,
        ..opts(3)
    });
    assert_same_benchmarks(SynthOptions {
        captions: true,
        ..opts(5)
    });
}

#[test]
fn worked_answers_score_as_answers_that_match_their_pixels_and_keep_the_benchmarks() {
    check_training_sources(SynthOptions {
        captions: true,
        warm_ups: true,
        worked: true,
        ..opts(3)
    });
    assert_same_benchmarks(SynthOptions {
        worked: true,
        ..opts(5)
    });
}

#[test]
fn yes_no_probes_match_their_pixels_and_change_nothing_else() {
    check_training_sources(SynthOptions {
        captions: true,
        worked: true,
        probes: 3,
        ..opts(3)
    });
    // The probes come from their own random stream: every row's first question and
    // answer, every other family's file and the benchmarks are as without them.
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let worked = SynthOptions {
        captions: true,
        warm_ups: true,
        worked: true,
        ..opts(5)
    };
    let ma = write_synth(&a, &worked).unwrap();
    let mb = write_synth(
        &b,
        &SynthOptions {
            probes: 2,
            ..worked
        },
    )
    .unwrap();
    let yes_no = ["SynthPOPE", "SynthBasicPOPE"];
    let in_yes_no = |p: &Path| {
        yes_no
            .iter()
            .any(|f| p.starts_with(Path::new("train").join(f)))
    };
    let (fa, fb) = (files(&a), files(&b));
    assert_eq!(fa.len(), fb.len());
    for (path, bytes) in &fa {
        if !in_yes_no(path) && path != Path::new("synth.json") {
            assert!(fb[path] == *bytes, "{}", path.display());
        }
    }
    let turns = |m: &SynthManifest| {
        let rows = load_portion(&m.train, 1.0, None, 0, Take::Random).unwrap();
        rows.into_iter()
            .map(|r| r.unwrap())
            .filter(|r| yes_no.iter().any(|f| r.origin.contains(&format!("/{f}/"))))
            .map(|r| r.turns.into_iter().map(|t| t.text).collect::<Vec<_>>())
            .collect::<Vec<_>>()
    };
    let (ta, tb) = (turns(&ma), turns(&mb));
    assert_eq!(ta.len(), 2 * TRAIN);
    for (x, y) in ta.iter().zip(&tb) {
        // Question, answer, two probes (four turns), then the same caption turn.
        assert_eq!((x.len(), y.len()), (4, 8));
        assert_eq!((&x[..2], &x[2..]), (&y[..2], &y[6..]));
        // The first probe has the other verdict than the row's own answer.
        assert_ne!(x[1].ends_with("Yes"), y[3].ends_with("Yes"), "{y:?}");
    }
}

#[test]
fn warm_up_families_match_their_pixels_and_change_nothing_else() {
    check_training_sources(SynthOptions {
        captions: true,
        warm_ups: true,
        ..opts(3)
    });
    // --warm-ups only adds families: the others' files and the benchmarks are the same
    // bytes as without it (so a model trained on `synth --captions` is still reproducible).
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let captions = SynthOptions {
        captions: true,
        ..opts(5)
    };
    write_synth(&a, &captions).unwrap();
    let m = write_synth(
        &b,
        &SynthOptions {
            warm_ups: true,
            ..captions
        },
    )
    .unwrap();
    let (fa, mut fb) = (files(&a), files(&b));
    let added: Vec<String> = m
        .families
        .iter()
        .filter(|f| f.starts_with("SynthBasic") && *f != "SynthBasic")
        .cloned()
        .collect();
    assert_eq!(added.len(), 6, "{:?}", m.families);
    fb.retain(|path, _| {
        !added
            .iter()
            .any(|f| path.starts_with(Path::new("train").join(f)))
    });
    // The manifest lists the families written; everything else is identical.
    assert!(fa.contains_key(Path::new("synth.json")));
    let strip = |mut f: BTreeMap<PathBuf, Vec<u8>>| {
        f.remove(Path::new("synth.json"));
        f
    };
    let (fa, fb) = (strip(fa), strip(fb));
    assert_eq!(
        fa.len(),
        9 + 8,
        "nine training families and eight benchmarks"
    );
    assert_eq!(fa, fb);
    // The warm-ups refuse to come without the captions they are for.
    let err = write_synth(
        &tmp.path().join("c"),
        &SynthOptions {
            warm_ups: true,
            ..opts(5)
        },
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("--warm-ups needs --captions"),
        "{err}"
    );
}

/// Reads every training row back: the prompt is an eval prompt, the answer (and with
/// captions the second turn) is right by the pixels. With `worked`, the answer is first read
/// as the scorer reads it (a multiple-choice answer must be exactly one option's text).
/// With probes, every one of a yes/no row's questions is checked so, half are yes, and every
/// probe asks about a shape that is in the image.
fn check_training_sources(o: SynthOptions) {
    let (captions, warm_ups, worked) = (o.captions, o.warm_ups, o.worked);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("s");
    let m = write_synth(&out, &o).unwrap();
    let sources = open_sources(&m.train).unwrap();
    let names: Vec<String> = sources
        .iter()
        .map(|s| {
            Path::new(s.name())
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let mut families = m.families.clone();
    families.sort();
    assert_eq!(names, families, "one source per family");
    let families_written = match (captions, warm_ups) {
        (true, true) => 15,
        (true, false) => 9,
        _ => 8,
    };
    assert_eq!(names.len(), families_written);
    // The warm-up family has three times as many rows as each benchmark's family.
    let rows_of = |name: &str| {
        if name == "SynthBasic" {
            3 * TRAIN
        } else {
            TRAIN
        }
    };
    assert!(sources
        .iter()
        .zip(&names)
        .all(|(s, n)| s.len() == rows_of(n) && s.is_parquet()));
    let rows = load_portion(&m.train, 1.0, None, 0, Take::Random).unwrap();
    // 8 benchmark families, SynthBasic 3×, six more warm-ups.
    let want_rows = match (captions, warm_ups) {
        (true, true) => 17,
        (true, false) => 11,
        _ => 8,
    };
    assert_eq!(rows.len(), want_rows * TRAIN);
    let tasks: HashMap<&str, Task> = m
        .benchmarks
        .iter()
        .map(|b| (b.name.as_str(), b.task))
        .collect();
    for (k, row) in rows.into_iter().enumerate() {
        let sample = row.unwrap_or_else(|e| panic!("row {k} skipped: {e}"));
        let family = names
            .iter()
            .find(|n| sample.origin.contains(&format!("/{n}/")))
            .unwrap_or_else(|| panic!("row {k}: {} is in no family", sample.origin))
            .as_str();
        // The warm-ups train only; each asks in its benchmark's form (SynthBasic and
        // SynthBasicMCQ: SynthVQA's short answers and SynthMMB's four options).
        let parent = match family {
            "SynthBasic" => "SynthVQA",
            "SynthBasicMCQ" => "SynthMMB",
            f => &f.replace("Basic", ""),
        };
        let task = tasks[parent];
        assert_eq!(sample.images.len(), 1);
        assert!(matches!(sample.images[0], ImageSource::Bytes { .. }));
        let roles: Vec<&str> = sample.turns.iter().map(|t| t.role.as_str()).collect();
        let questions = if task == Task::Yorn { 1 + o.probes } else { 1 };
        let turns = questions + usize::from(captions);
        assert_eq!(roles, ["user", "assistant"].repeat(turns), "{family}");
        if captions {
            assert_eq!(sample.turns[2 * questions].text, CAPTION_PROMPT);
        }
        let image = sample.images[0].load().unwrap();
        let mut yes = 0;
        for q in 0..questions {
            let answer = &sample.turns[2 * q + 1].text;
            yes += usize::from(check_turn(
                family,
                task,
                worked,
                &sample.turns[2 * q].text,
                answer,
                &image,
            ));
            // Every probe asks about a shape that is there (its observation, checked
            // against the pixels above, names the shape's colour).
            if q > 0 && worked {
                assert!(answer.starts_with("The "), "{family} row {k}: {answer}");
            }
        }
        if questions > 1 {
            assert!(
                (2 * yes).abs_diff(questions) <= 1,
                "{family} row {k}: {yes} yes"
            );
        }
        if captions {
            check_caption(family, &sample.turns[2 * questions + 1].text, &image);
        }
    }
}

/// One question and its written answer, right by the pixels of `image`; whether the
/// verdict is yes.
fn check_turn(
    family: &str,
    task: Task,
    worked: bool,
    user: &str,
    written: &str,
    image: &image::DynamicImage,
) -> bool {
    let written = written.to_string();
    // Take the prompt apart as an eval prompt and rebuild it.
    let (question, hint, options) = parse_prompt(task, user);
    assert_eq!(
        build_prompt(task, &question, hint.as_deref(), &options),
        user,
        "{family}"
    );
    let assistant = &match (worked, task) {
        (true, Task::Mcq) => {
            let is_option = options.iter().any(|(_, t)| *t == written);
            assert!(is_option, "{written:?} is no option's text");
            can_infer(&written, &options).unwrap().to_string()
        }
        (true, Task::Ocrbench) => {
            // "The letters C A T. CAT": the word spelled, then said; scored as the word.
            let (spelled, word) = written.rsplit_once(". ").unwrap();
            let spelled = spelled.strip_prefix("The letters ").unwrap();
            assert_eq!(spelled.replace(' ', ""), word, "{written}");
            assert!(ocrbench_correct(&written, &[word.to_string()], None));
            word.to_string()
        }
        (true, Task::Yorn) => {
            let v = yorn_extraction(&written);
            assert!(written.ends_with(v.as_str()), "{written}");
            check_observation(&written, image);
            v.as_str().to_string()
        }
        _ => written,
    };
    match task {
        Task::Mcq => assert!(["A", "B", "C", "D"].contains(&assistant.as_str())),
        Task::Yorn => assert!(assistant == "Yes" || assistant == "No"),
        _ => assert!(!assistant.is_empty() && !assistant.contains('\n')),
    }
    check(
        family,
        &question,
        hint.as_deref(),
        &options,
        assistant,
        image,
    );
    assistant == "Yes"
}

/// A worked yes/no answer's observation against the pixels: "The S is C." names the
/// colour of the one object of shape S; "There is no S." holds when no object has shape S.
fn check_observation(worked: &str, image: &image::DynamicImage) {
    let comps = components(&Img::from(image));
    let seen = worked.rsplit_once(". ").unwrap().0;
    if let Some(shape) = seen.strip_prefix("There is no ") {
        assert!(
            comps.iter().all(|c| c.shape != shape),
            "{worked}: {comps:?}"
        );
    } else {
        let rest = seen.strip_prefix("The ").unwrap();
        let (shape, colour) = rest.split_once(" is ").unwrap();
        assert_eq!(
            one(&comps, shape, |c| c.shape == shape).hue(),
            colour,
            "{worked}"
        );
    }
}

/// Question, hint and options of an eval prompt (the inverse of `build_prompt`).
fn parse_prompt(task: Task, p: &str) -> (String, Option<String>, Vec<(char, String)>) {
    match task {
        Task::Mcq => {
            let mut hint = None;
            let mut question = String::new();
            let mut options = Vec::new();
            for line in p.lines() {
                if let Some(h) = line.strip_prefix("Hint: ") {
                    hint = Some(h.to_string());
                } else if let Some(q) = line.strip_prefix("Question: ") {
                    question = q.to_string();
                } else if line.len() > 3 && &line[1..3] == ". " {
                    options.push((line.chars().next().unwrap(), line[3..].to_string()));
                }
            }
            (question, hint, options)
        }
        Task::Yorn => (
            p.strip_suffix(" Please answer yes or no.")
                .unwrap()
                .to_string(),
            None,
            vec![],
        ),
        _ => (
            p.strip_suffix("\nPlease answer concisely with short words or phrases when possible.")
                .unwrap()
                .to_string(),
            None,
            vec![],
        ),
    }
}

#[test]
fn cli_refuses_a_foreign_directory_and_replaces_a_previous_output() {
    let tmp = tempfile::tempdir().unwrap();
    let foreign = tmp.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("keep.txt"), "mine").unwrap();
    let run = |out: &Path, extra: &[&str]| {
        common::cli()
            .arg("synth")
            .arg("--out")
            .arg(out)
            .args(["--train-rows", "3", "--bench-rows", "2"])
            .args(extra)
            .output()
            .unwrap()
    };
    let o = run(&foreign, &[]);
    common::assert_one_line_error(&o, "neither empty nor a previous synth output");
    assert_eq!(
        std::fs::read_to_string(foreign.join("keep.txt")).unwrap(),
        "mine"
    );

    let out = tmp.path().join("s");
    let o = run(&out, &["--seed", "1"]);
    assert_ok(&o);
    let first = files(&out);
    let o = run(&out, &["--seed", "2"]);
    assert_ok(&o);
    let second = files(&out);
    assert_eq!(first.len(), second.len());
    assert_ne!(first, second);
    assert_eq!(SynthManifest::read(&out).unwrap().seed, 2);

    let o = run(&tmp.path().join("no/such/parent/x"), &[]);
    common::assert_one_line_error(&o, "does not exist");
}

/// `--in-words`: text-only rows whose every verdict is right by the scene description
/// they carry (read here by a rule of its own), half yes, in the eval prompt's form; and
/// nothing else changes.
/// Writes `base` and `changed`, checks that the latter only adds the training source
/// `source` (listed last; every other file the same bytes) and returns its output.
fn only_adds(
    source: &str,
    base: &SynthOptions,
    changed: &SynthOptions,
) -> (tempfile::TempDir, SynthManifest) {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    write_synth(&a, base).unwrap();
    let m = write_synth(&b, changed).unwrap();
    assert_eq!(m.families.last().map(String::as_str), Some(source));
    let dir = Path::new("train").join(source);
    let (fa, mut fb) = (files(&a), files(&b));
    fb.retain(|p, _| !p.starts_with(&dir));
    assert_eq!(fb.len(), fa.len());
    let strip = |mut f: BTreeMap<PathBuf, Vec<u8>>| {
        f.remove(Path::new("synth.json"));
        f
    };
    assert_eq!(strip(fa), strip(fb));
    (tmp, m)
}

#[test]
fn in_words_rows_are_right_by_their_description_and_change_nothing_else() {
    let base = SynthOptions {
        captions: true,
        worked: true,
        probes: 3,
        ..opts(7)
    };
    let changed = SynthOptions {
        in_words: 60,
        ..base.clone()
    };
    let (_tmp, m) = only_adds("SynthWordsPOPE", &base, &changed);

    let rows = load_portion(&m.train.join("SynthWordsPOPE"), 1.0, None, 0, Take::Random).unwrap();
    assert_eq!(rows.len(), 60);
    let (mut yes, mut questions, mut same_shape_no) = (0, 0, 0);
    for (k, row) in rows.into_iter().enumerate() {
        let s = row.unwrap();
        assert!(s.images.is_empty(), "row {k} has an image");
        let roles: Vec<&str> = s.turns.iter().map(|t| t.role.as_str()).collect();
        assert_eq!(roles, ["user", "assistant"].repeat(4), "row {k}");
        // "The image: a large red circle at the top left; a small blue star at the centre."
        let first = &s.turns[0].text;
        let (scene, _) = first.split_once('\n').unwrap();
        let scene = scene
            .strip_prefix("The image: ")
            .and_then(|x| x.strip_suffix('.'))
            .unwrap_or_else(|| panic!("row {k}: {first}"));
        let objects: Vec<(String, String)> = scene
            .split("; ")
            .map(|o| {
                let w: Vec<&str> = o.split(' ').collect();
                assert!(w.len() >= 6 && w[0] == "a" && w[4] == "at", "row {k}: {o}");
                (w[2].to_string(), w[3].to_string())
            })
            .collect();
        for q in 0..4 {
            let user = &s.turns[2 * q].text;
            let question = user.lines().last().unwrap();
            let words: Vec<&str> = question.split(' ').collect();
            assert!(question.starts_with("Is there a"), "row {k}: {question}");
            let asked = &question[..=question.find('?').unwrap()];
            assert_eq!(question, build_prompt(Task::Yorn, asked, None, &[]));
            let (colour, shape) = (words[3], words[4]);
            let there = objects.iter().any(|(c, s)| c == colour && s == shape);
            let answer = &s.turns[2 * q + 1].text;
            let seen = objects.iter().find(|(_, s)| s == shape);
            let observation = match seen {
                Some((c, _)) => format!("The {shape} is {c}."),
                None => format!("There is no {shape}."),
            };
            let verdict = if there { "Yes" } else { "No" };
            assert_eq!(
                answer,
                &format!("{observation} {verdict}"),
                "row {k}: {question}"
            );
            yes += usize::from(there);
            questions += 1;
            same_shape_no += usize::from(!there && seen.is_some());
        }
    }
    assert_eq!(2 * yes, questions);
    // Most negatives (all the probes') name a shape that is there in another colour.
    assert!(
        2 * same_shape_no > questions / 2,
        "{same_shape_no} of {questions}"
    );
}

#[test]
fn shape_questions_match_their_pixels_and_change_nothing_else() {
    let base = SynthOptions {
        captions: true,
        worked: true,
        train_rows: 20,
        ..opts(11)
    };
    let changed = SynthOptions {
        shapes: 80,
        ..base.clone()
    };
    let (_tmp, m) = only_adds("SynthShapesPOPE", &base, &changed);

    let rows = load_portion(&m.train.join("SynthShapesPOPE"), 1.0, None, 0, Take::Random).unwrap();
    assert_eq!(rows.len(), 80);
    let (mut yes, mut questions, mut absent) = (0, 0, 0);
    for (k, row) in rows.into_iter().enumerate() {
        let s = row.unwrap();
        assert_eq!(s.images.len(), 1, "row {k}");
        let roles: Vec<&str> = s.turns.iter().map(|t| t.role.as_str()).collect();
        assert_eq!(roles, ["user", "assistant"].repeat(5), "row {k}");
        assert_eq!(s.turns[8].text, CAPTION_PROMPT);
        let image = s.images[0].load().unwrap();
        let comps = components(&Img::from(&image));
        let mut row_yes = 0;
        for q in 0..4 {
            let (user, answer) = (&s.turns[2 * q].text, &s.turns[2 * q + 1].text);
            // The eval prompt, the verdict and the observation right by the pixels.
            let said_yes = check_turn("SynthPOPE", Task::Yorn, true, user, answer, &image);
            // Every question names a colour that is in the image: only the shape decides.
            let words: Vec<&str> = user.split_whitespace().collect();
            let (colour, shape) = (words[3], words[4]);
            let seen = one(&comps, colour, |c| c.hue() == colour);
            assert_eq!(said_yes, seen.shape == shape, "row {k}: {user} -> {answer}");
            row_yes += usize::from(said_yes);
            absent += usize::from(comps.iter().all(|c| c.shape != shape));
            questions += 1;
        }
        // Alternating verdicts: two of four per row.
        assert_eq!(row_yes, 2, "row {k}");
        yes += row_yes;
        check_caption("SynthPOPE", &s.turns[9].text, &image);
    }
    assert_eq!(2 * yes, questions);
    // Some negatives name a shape that is nowhere in the image ("There is no S. No").
    assert!(absent > questions / 8, "{absent} of {questions}");
}
