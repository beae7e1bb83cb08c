//! The eight task families: each turns a random stream into one image and one question
//! with its answer in the form our scorer expects.

use rand::seq::{IndexedRandom, SliceRandom};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::draw::{text_width, Canvas, Rgb, Shape, BACKGROUNDS, COLOURS, GLYPH_HEIGHT};
use crate::eval::Task;

/// One generated question.
#[derive(Debug, Clone)]
pub struct Example {
    pub image: Canvas,
    pub question: String,
    pub hint: Option<String>,
    /// Options in letter order (multiple choice only).
    pub options: Vec<(char, String)>,
    /// The reference answer exactly as the scorer reads it and as the model should say it:
    /// an option letter (mcq), `Yes`/`No` (yorn), a word or a number.
    pub answer: String,
    /// The kind of question (the TSV `category` column).
    pub kind: &'static str,
    /// Expected score of random guessing on this question.
    pub chance: f64,
    /// What the image shows, in words (a training row's second turn, see [`CAPTION_PROMPT`]):
    /// dense supervision that ties the image tokens to words.
    pub caption: String,
    /// What the image shows about the question, in words, said before the answer in a worked
    /// training answer ([`Example::worked_answer`]): for yes/no questions the object asked
    /// about, for SynthText the letters one by one.
    pub worked: Option<String>,
}

impl Example {
    /// The training answer with the work shown (`synth --worked`), which our scorer (as
    /// VLMEvalKit's) reads as the same answer: a multiple-choice answer names the option's
    /// text instead of its letter (read by `can_infer_text`), a yes/no answer first says
    /// what the image shows about the question ("The circle is red. Yes", "There is no
    /// star. No"), a word is first spelled ("The letters C A T. CAT", which OCRBench's
    /// containment rule scores as CAT); other answers are unchanged.
    pub fn worked_answer(&self) -> String {
        if let Some((_, text)) = self
            .options
            .iter()
            .find(|(c, _)| c.to_string() == self.answer)
        {
            return text.clone();
        }
        match &self.worked {
            Some(w) => format!("{w}. {}", self.answer),
            None => self.answer.clone(),
        }
    }

    /// The answer a training row gives: [`Self::worked_answer`] with `worked`, else the
    /// scorer's answer.
    pub fn training_answer(&self, worked: bool) -> String {
        if worked {
            self.worked_answer()
        } else {
            self.answer.clone()
        }
    }
}

/// The user text of a training row's second turn, answered by [`Example::caption`].
pub const CAPTION_PROMPT: &str = "Describe the image.";

/// A task family: its name, the benchmark's paper category and our scorer's task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Text,
    Chart,
    Vqa,
    Mmb,
    Pope,
    Hr,
    Count,
    Sci,
    /// Training only (no benchmark): one large object, its colour or shape. The easiest
    /// grounding there is, which a model learning from scratch picks up first.
    Basic,
    /// Training only, the easy form of SynthPOPE: is there a (colour, shape) pair, asked of
    /// one large object.
    BasicPope,
    /// Training only, the four-option answer form on one large object: its colour or shape.
    BasicMcq,
    /// Training only, the easy form of SynthCount: 1–6 large copies of one shape and colour.
    BasicCount,
    /// Training only, the easy form of SynthText: the same words, always at one place.
    BasicText,
    /// Training only, the easy form of SynthChart: two wide bars.
    BasicChart,
    /// Training only, the easy form of SynthHR: a larger star among a few larger objects.
    BasicHr,
}

impl Family {
    pub const ALL: [Family; 8] = [
        Family::Text,
        Family::Chart,
        Family::Vqa,
        Family::Mmb,
        Family::Pope,
        Family::Hr,
        Family::Count,
        Family::Sci,
    ];

    /// The training-only warm-up families: easy forms of the benchmarks' questions, the
    /// first stage of pretraining from scratch (`interlace pretrain --first`).
    pub const WARM_UPS: [Family; 7] = [
        Family::Basic,
        Family::BasicPope,
        Family::BasicMcq,
        Family::BasicCount,
        Family::BasicText,
        Family::BasicChart,
        Family::BasicHr,
    ];

    /// Every training family: the benchmarks' (in [`Family::ALL`]'s order) and then the
    /// warm-ups. The position keys each family's random streams, so new families go last.
    pub const TRAINING: [Family; 15] = {
        let mut all = [Family::Basic; 15];
        let mut i = 0;
        while i < Family::ALL.len() {
            all[i] = Family::ALL[i];
            i += 1;
        }
        while i < all.len() {
            all[i] = Family::WARM_UPS[i - Family::ALL.len()];
            i += 1;
        }
        all
    };

    /// The benchmark family whose questions this one asks (itself for a benchmark's; for
    /// a warm-up, the benchmark it prepares for).
    pub fn benchmark(self) -> Family {
        match self {
            Family::Basic => Family::Vqa,
            Family::BasicPope => Family::Pope,
            Family::BasicMcq => Family::Mmb,
            Family::BasicCount => Family::Count,
            Family::BasicText => Family::Text,
            Family::BasicChart => Family::Chart,
            Family::BasicHr => Family::Hr,
            f => f,
        }
    }

    /// The family named `name` (as [`Family::name`] spells it).
    pub fn by_name(name: &str) -> Option<Family> {
        Family::TRAINING.into_iter().find(|f| f.name() == name)
    }

    /// Training rows of this family for `--train-rows n`: the warm-up family SynthBasic has
    /// 3n, so that a model learning from scratch sees the easiest grounding often.
    pub fn train_rows(self, n: usize) -> usize {
        if self == Family::Basic {
            3 * n
        } else {
            n
        }
    }

    /// Training family directory and benchmark file stem.
    pub fn name(self) -> &'static str {
        match self {
            Family::Text => "SynthText",
            Family::Chart => "SynthChart",
            Family::Vqa => "SynthVQA",
            Family::Mmb => "SynthMMB",
            Family::Pope => "SynthPOPE",
            Family::Hr => "SynthHR",
            Family::Count => "SynthCount",
            Family::Sci => "SynthSci",
            Family::Basic => "SynthBasic",
            Family::BasicPope => "SynthBasicPOPE",
            Family::BasicMcq => "SynthBasicMCQ",
            Family::BasicCount => "SynthBasicCount",
            Family::BasicText => "SynthBasicText",
            Family::BasicChart => "SynthBasicChart",
            Family::BasicHr => "SynthBasicHR",
        }
    }

    pub fn task(self) -> Task {
        match self.benchmark() {
            Family::Text => Task::Ocrbench,
            Family::Chart => Task::Chartqa,
            Family::Mmb | Family::Hr | Family::Sci => Task::Mcq,
            Family::Pope => Task::Yorn,
            Family::Count => Task::CountNumber,
            _ => Task::Vqa,
        }
    }

    /// One of the paper's four benchmark categories.
    pub fn category(self) -> &'static str {
        match self.benchmark() {
            Family::Text | Family::Chart => "text/chart",
            Family::Pope | Family::Hr | Family::Count => "perception",
            Family::Sci => "instruction/science",
            _ => "general",
        }
    }

    /// Generates one example; `row` only balances yes/no answers (even rows: yes).
    pub fn generate(self, rng: &mut ChaCha8Rng, row: usize) -> Example {
        match self {
            Family::Text => text(rng, false),
            Family::Chart => chart(rng, 3..=5),
            Family::Vqa => vqa(rng),
            Family::Mmb => mmb(rng),
            Family::Pope | Family::BasicPope => {
                let (img, objs) = self.yes_no_scene(rng).expect("a yes/no family");
                pope(rng, row.is_multiple_of(2), Negative::Either, img, objs)
            }
            Family::Hr => hr(rng, 12..=20, 4..=6, 6..=12),
            Family::Count => count(rng, 0..=2, 8..=12),
            Family::Sci => sci(rng),
            Family::Basic => basic(rng),
            Family::BasicMcq => basic_mcq(rng),
            Family::BasicCount => count(rng, 0..=0, 12..=16),
            Family::BasicText => text(rng, true),
            Family::BasicChart => chart(rng, 2..=2),
            Family::BasicHr => hr(rng, 4..=8, 8..=9, 10..=14),
        }
    }
}

impl Family {
    /// The scene of a yes/no family's row (SynthPOPE: 1–3 objects; SynthBasicPOPE: one
    /// large object), the first draws of `rng`; `None` for the other families.
    fn yes_no_scene(self, rng: &mut ChaCha8Rng) -> Option<(Canvas, Vec<Obj>)> {
        match self {
            Family::Pope => {
                let k = rng.random_range(1..=3);
                Some(simple_scene(rng, k))
            }
            Family::BasicPope => Some(big_object(rng)),
            _ => None,
        }
    }

    /// Training only: `n` more yes/no questions about the scene of the row whose random
    /// stream is `row_rng` (row number `row`), drawn from `rng`; the first has the other
    /// answer than the row's, then they alternate, so a row and its `n` probes are half yes
    /// and half no for odd `n`. Every probe asks about a shape that is in the image: in its
    /// colour (yes) or in another (no), so that after the worked observation ("The S is
    /// C.") the verdict is even odds and only comparing C with the asked colour decides it.
    /// Empty for a family that is not yes/no.
    pub fn probes(
        self,
        row_rng: &mut ChaCha8Rng,
        row: usize,
        rng: &mut ChaCha8Rng,
        n: usize,
    ) -> Vec<Example> {
        let Some((img, objs)) = self.yes_no_scene(row_rng) else {
            return Vec::new();
        };
        let answers = (1..=n).map(|j| (row + j).is_multiple_of(2));
        questions_about(rng, &img, &objs, Negative::SameShape, answers)
    }

    /// Training only (SynthShapesPOPE): `n` yes/no questions about one SynthPOPE scene
    /// drawn from `rng`, the first with answer yes for even `row`, then alternating. Each
    /// asks about a colour that is there: on its own shape (yes) or on another one ("same
    /// colour", no), so that finding the colour is not enough and only the shape decides.
    pub fn shape_questions(rng: &mut ChaCha8Rng, row: usize, n: usize) -> Vec<Example> {
        let (img, objs) = Family::Pope.yes_no_scene(rng).expect("a yes/no family");
        let answers = (0..n).map(|j| (row + j).is_multiple_of(2));
        questions_about(rng, &img, &objs, Negative::SameColour, answers)
    }
}

/// One yes/no question about the scene (`img`, `objs`) per answer in `answers`, drawn from
/// `rng` in order, its negatives of kind `negative`.
fn questions_about(
    rng: &mut ChaCha8Rng,
    img: &Canvas,
    objs: &[Obj],
    negative: Negative,
    answers: impl Iterator<Item = bool>,
) -> Vec<Example> {
    answers
        .map(|yes| pope(rng, yes, negative, img.clone(), objs.to_vec()))
        .collect()
}

/// The words of SynthText: common 3–5 letter English words.
pub const WORDS: [&str; 100] = [
    "CAT", "DOG", "SUN", "CAR", "BUS", "RED", "BLUE", "TREE", "BOOK", "FISH", "BIRD", "MILK",
    "CAKE", "DOOR", "HAT", "PEN", "CUP", "BOX", "BED", "KEY", "MAP", "EGG", "ICE", "JAM", "LEG",
    "ARM", "EYE", "EAR", "TOY", "ANT", "BEE", "COW", "PIG", "HEN", "FOX", "OWL", "RAT", "BAT",
    "SEA", "SKY", "RAIN", "SNOW", "WIND", "FIRE", "ROCK", "SAND", "LAKE", "HILL", "ROAD", "SHIP",
    "BOAT", "TRAIN", "PLANE", "HOUSE", "CHAIR", "TABLE", "APPLE", "BREAD", "WATER", "LIGHT",
    "MUSIC", "PAPER", "PHONE", "CLOCK", "HORSE", "MOUSE", "SHEEP", "TIGER", "ZEBRA", "LEMON",
    "GRAPE", "PEACH", "STONE", "RIVER", "CLOUD", "STORM", "GREEN", "BLACK", "WHITE", "BROWN",
    "HAPPY", "QUICK", "JUMP", "WALK", "RUN", "SING", "PLAY", "READ", "WORD", "KING", "QUEEN",
    "GOLD", "MOON", "STAR", "NEST", "FROG", "DUCK", "LION", "WOLF", "YAK",
];

fn pick<T: Copy>(rng: &mut ChaCha8Rng, xs: &[T]) -> T {
    *xs.choose(rng).expect("non-empty")
}

/// `k` distinct elements of `xs`, in random order.
fn distinct<T: Copy>(rng: &mut ChaCha8Rng, xs: &[T], k: usize) -> Vec<T> {
    xs.choose_multiple(rng, k)
        .copied()
        .collect::<Vec<_>>()
        .shuffled(rng)
}

trait Shuffled {
    fn shuffled(self, rng: &mut ChaCha8Rng) -> Self;
}

impl<T> Shuffled for Vec<T> {
    fn shuffled(mut self, rng: &mut ChaCha8Rng) -> Self {
        self.shuffle(rng);
        self
    }
}

fn letters(options: Vec<String>) -> Vec<(char, String)> {
    options
        .into_iter()
        .enumerate()
        .map(|(i, o)| ((b'A' + i as u8) as char, o))
        .collect()
}

/// Multiple choice from option texts and the right one: (options with letters, letter).
fn mcq(options: Vec<String>, right: &str) -> (Vec<(char, String)>, String) {
    let opts = letters(options);
    let letter = opts
        .iter()
        .find(|(_, t)| t == right)
        .map(|(c, _)| c.to_string())
        .expect("the right answer is an option");
    (opts, letter)
}

/// `right` plus distinct others from `pool` up to `n` options, shuffled.
fn options_with(rng: &mut ChaCha8Rng, pool: &[&str], right: &str, n: usize) -> Vec<String> {
    let others: Vec<&str> = pool.iter().copied().filter(|p| *p != right).collect();
    let mut opts: Vec<String> = others
        .choose_multiple(rng, n - 1)
        .map(|s| s.to_string())
        .collect();
    opts.push(right.to_string());
    opts.shuffled(rng)
}

/// A placed object.
#[derive(Debug, Clone, Copy)]
struct Obj {
    shape: Shape,
    colour: usize,
    cx: f64,
    cy: f64,
    r: f64,
}

/// Centres for objects of half-sizes `radii` inside a w×h canvas with `margin` pixels to
/// the edges, bounding boxes at least `gap` pixels apart; None after many failed tries.
fn place(
    rng: &mut ChaCha8Rng,
    w: u32,
    h: u32,
    radii: &[f64],
    margin: f64,
    gap: f64,
) -> Option<Vec<(f64, f64)>> {
    'outer: for _ in 0..50 {
        let mut out: Vec<(f64, f64)> = Vec::with_capacity(radii.len());
        for &r in radii {
            let lo = margin + r;
            let (hx, hy) = (w as f64 - margin - r, h as f64 - margin - r);
            if hx <= lo || hy <= lo {
                return None;
            }
            let mut ok = None;
            for _ in 0..200 {
                let x = rng.random_range(lo..hx).round();
                let y = rng.random_range(lo..hy).round();
                let free = out.iter().zip(radii).all(|(&(ox, oy), &or)| {
                    (x - ox).abs() >= r + or + gap || (y - oy).abs() >= r + or + gap
                });
                if free {
                    ok = Some((x, y));
                    break;
                }
            }
            match ok {
                Some(p) => out.push(p),
                None => continue 'outer,
            }
        }
        return Some(out);
    }
    None
}

fn draw_objs(canvas: &mut Canvas, objs: &[Obj]) {
    for o in objs {
        canvas.draw_shape(o.shape, o.cx, o.cy, o.r, COLOURS[o.colour].1);
    }
}

fn colour_name(i: usize) -> &'static str {
    COLOURS[i].0
}

fn background(rng: &mut ChaCha8Rng) -> Rgb {
    pick(rng, &BACKGROUNDS)
}

/// Objects with the given shapes, colours and half-sizes at random free places on a
/// 128×128 canvas (retries with smaller sizes never happen: the sizes used always fit).
fn scene(rng: &mut ChaCha8Rng, shapes: &[Shape], colours: &[usize], radii: &[f64]) -> Vec<Obj> {
    let pos = place(rng, 128, 128, radii, 4.0, 4.0).expect("small scenes always fit");
    shapes
        .iter()
        .zip(colours)
        .zip(radii)
        .zip(pos)
        .map(|(((&shape, &colour), &r), (cx, cy))| Obj {
            shape,
            colour,
            cx,
            cy,
            r,
        })
        .collect()
}

/// Where a point lies on a 3×3 grid over a `w`-pixel square canvas: (row, column).
fn cell(cx: f64, cy: f64, w: f64) -> (usize, usize) {
    let third = |v: f64| ((3.0 * v / w) as usize).min(2);
    (third(cy), third(cx))
}

/// The name of a 3×3 grid cell ("top left", ..., "centre", ...).
pub fn place_name(cx: f64, cy: f64, w: f64) -> &'static str {
    const NAMES: [[&str; 3]; 3] = [
        ["top left", "top", "top right"],
        ["left", "centre", "right"],
        ["bottom left", "bottom", "bottom right"],
    ];
    let (r, c) = cell(cx, cy, w);
    NAMES[r][c]
}

/// Small, medium or large by half-size in pixels.
pub fn size_name(r: f64) -> &'static str {
    if r <= 11.0 {
        "small"
    } else if r >= 17.0 {
        "large"
    } else {
        "medium"
    }
}

/// "a large red circle at the top left; a small blue star at the centre": every object,
/// in reading order of grid cells (left to right within a cell).
fn describe(objs: &[Obj], w: f64) -> String {
    let mut v: Vec<&Obj> = objs.iter().collect();
    v.sort_by(|a, b| {
        (cell(a.cx, a.cy, w).0, a.cx)
            .partial_cmp(&(cell(b.cx, b.cy, w).0, b.cx))
            .expect("finite")
    });
    v.iter()
        .map(|o| {
            format!(
                "a {} {} {} at the {}",
                size_name(o.r),
                colour_name(o.colour),
                o.shape.name(),
                place_name(o.cx, o.cy, w)
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// "The letters C A T": a word read letter by letter, left to right. Said before the word
/// (in SynthText's caption and worked answer), each letter is a prediction from the image
/// and the letters before it, not a copy of a word already said.
fn spelled(word: &str) -> String {
    let letters: Vec<String> = word.chars().map(|c| c.to_string()).collect();
    format!("The letters {}", letters.join(" "))
}

/// "3 red circles and 1 blue star." (SynthCount: `k` of the first kind, `d` distractors.)
fn count_caption(k: usize, d: usize, shapes: &[Shape], colours: &[usize]) -> String {
    let part = |n: usize, t: usize| {
        let name = if n == 1 {
            shapes[t].name()
        } else {
            shapes[t].plural()
        };
        format!("{n} {} {name}", colour_name(colours[t]))
    };
    if d == 0 {
        format!("{}.", part(k, 0))
    } else {
        format!("{} and {}.", part(k, 0), part(d, 1))
    }
}

/// SynthText's canvas: wide and low, like a line of a document (16×4 patches of 16
/// pixels, 16 image tokens after the 2×2 merge, as many as a 128×128 scene).
const TEXT_CANVAS: (i64, i64) = (256, 64);

/// SynthText: a word in the 5×7 bitmap font at 6× (letters 30×42 pixels, one letter
/// every 36 pixels), dark ink on a light background, at the start of a line of the
/// [`TEXT_CANVAS`]: its top left 4–12 pixels from the left edge and 8–14 from the top;
/// `fixed` (SynthBasicText): always at (8, 11).
fn text(rng: &mut ChaCha8Rng, fixed: bool) -> Example {
    let (cw, ch) = TEXT_CANVAS;
    let word = pick(rng, &WORDS);
    let bg = background(rng);
    // Dark ink: every channel at most 80 (luminance at most 80, the backgrounds' at least 230).
    let fg: Rgb = [
        rng.random_range(0..=80),
        rng.random_range(0..=80),
        rng.random_range(0..=80),
    ];
    let scale = 6;
    let (x, y) = if fixed {
        (8, 11)
    } else {
        (rng.random_range(4..=12), rng.random_range(8..=14))
    };
    debug_assert!(x + text_width(word.len(), scale) <= cw - 2);
    debug_assert!(y + GLYPH_HEIGHT * scale <= ch - 2);
    let mut img = Canvas::new(cw as u32, ch as u32, bg);
    img.draw_text(word, x, y, scale, fg);
    Example {
        image: img,
        question: "What word is written in the image?".to_string(),
        hint: None,
        options: vec![],
        answer: word.to_string(),
        kind: "word",
        chance: 1.0 / WORDS.len() as f64,
        caption: format!("{}: the word {word}.", spelled(word)),
        worked: Some(spelled(word)),
    }
}

/// Chart geometry: the value axis' zero line, pixels per unit, plot's horizontal extent.
pub const CHART_BASE_Y: i64 = 110;
pub const CHART_UNIT: i64 = 10;
const CHART_LEFT: i64 = 16;
const CHART_RIGHT: i64 = 124;

/// SynthChart: `bars` bars A.. with integer values 1..9 on a grid, value or tallest bar.
fn chart(rng: &mut ChaCha8Rng, bars: std::ops::RangeInclusive<usize>) -> Example {
    let n = rng.random_range(bars);
    let values: Vec<i64> = loop {
        let v: Vec<i64> = (0..n).map(|_| rng.random_range(1..=9)).collect();
        let max = *v.iter().max().expect("n >= 2");
        if v.iter().filter(|&&x| x == max).count() == 1 {
            break v;
        }
    };
    let colour = COLOURS[rng.random_range(0..COLOURS.len())].1;
    let grid = [215, 215, 215];
    let ink = [40, 40, 40];
    let mut img = Canvas::new(128, 128, [255, 255, 255]);
    for v in 1..=9 {
        let y = CHART_BASE_Y - v * CHART_UNIT;
        img.fill_rect(CHART_LEFT, y, CHART_RIGHT, y + 1, grid);
        img.draw_text(&v.to_string(), 5, y - 3, 1, ink);
    }
    img.fill_rect(
        CHART_LEFT - 1,
        CHART_BASE_Y,
        CHART_RIGHT,
        CHART_BASE_Y + 1,
        ink,
    );
    img.fill_rect(CHART_LEFT - 1, 15, CHART_LEFT, CHART_BASE_Y + 1, ink);
    let slot = (CHART_RIGHT - CHART_LEFT) / n as i64;
    let bar_w = slot * 3 / 5;
    for (i, &v) in values.iter().enumerate() {
        let x0 = CHART_LEFT + i as i64 * slot + (slot - bar_w) / 2;
        img.fill_rect(
            x0,
            CHART_BASE_Y - v * CHART_UNIT,
            x0 + bar_w,
            CHART_BASE_Y,
            colour,
        );
        let label = ((b'A' + i as u8) as char).to_string();
        img.draw_text(&label, x0 + bar_w / 2 - 2, CHART_BASE_Y + 5, 1, ink);
    }
    let label = |i: usize| ((b'A' + i as u8) as char).to_string();
    let caption = format!(
        "A bar chart: {}.",
        values
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{} {v}", label(i)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if rng.random_bool(0.6) {
        let i = rng.random_range(0..n);
        Example {
            image: img,
            question: format!("What is the value of bar {}?", label(i)),
            hint: None,
            options: vec![],
            answer: values[i].to_string(),
            kind: "value",
            chance: 1.0 / 9.0,
            caption,
            worked: None,
        }
    } else {
        let (i, _) = values
            .iter()
            .enumerate()
            .max_by_key(|(_, v)| **v)
            .expect("n >= 2");
        Example {
            image: img,
            question: "Which bar is the tallest?".to_string(),
            hint: None,
            options: vec![],
            answer: label(i),
            kind: "tallest",
            chance: 1.0 / n as f64,
            caption,
            worked: None,
        }
    }
}

fn shape_names() -> Vec<&'static str> {
    Shape::ALL.iter().map(|s| s.name()).collect()
}

fn colour_names() -> Vec<&'static str> {
    COLOURS.iter().map(|c| c.0).collect()
}

/// 1–3 objects of distinct shapes and distinct colours on a plain background.
fn simple_scene(rng: &mut ChaCha8Rng, k: usize) -> (Canvas, Vec<Obj>) {
    let shapes = distinct(rng, &Shape::ALL, k);
    let colours = distinct(rng, &(0..COLOURS.len()).collect::<Vec<_>>(), k);
    let radii: Vec<f64> = (0..k).map(|_| rng.random_range(10..=18) as f64).collect();
    let objs = scene(rng, &shapes, &colours, &radii);
    let mut img = Canvas::new(128, 128, background(rng));
    draw_objs(&mut img, &objs);
    (img, objs)
}

/// SynthVQA: the colour of a named shape, or the shape of a named colour.
fn vqa(rng: &mut ChaCha8Rng) -> Example {
    let k = rng.random_range(1..=3);
    let (img, objs) = simple_scene(rng, k);
    let caption = describe(&objs, 128.0);
    let o = pick(rng, &objs);
    if rng.random_bool(0.5) {
        Example {
            image: img,
            question: format!("What colour is the {}?", o.shape.name()),
            hint: None,
            options: vec![],
            answer: colour_name(o.colour).to_string(),
            kind: "colour",
            chance: 1.0 / COLOURS.len() as f64,
            caption,
            worked: None,
        }
    } else {
        Example {
            image: img,
            question: format!("What shape is the {} object?", colour_name(o.colour)),
            hint: None,
            options: vec![],
            answer: o.shape.name().to_string(),
            kind: "shape",
            chance: 1.0 / Shape::ALL.len() as f64,
            caption,
            worked: None,
        }
    }
}

/// One large object (half-size 28–44 pixels) on a plain 128×128 background.
fn big_object(rng: &mut ChaCha8Rng) -> (Canvas, Vec<Obj>) {
    let shape = pick(rng, &Shape::ALL);
    let colour = rng.random_range(0..COLOURS.len());
    let r = rng.random_range(28..=44) as f64;
    let objs = scene(rng, &[shape], &[colour], &[r]);
    let mut img = Canvas::new(128, 128, background(rng));
    draw_objs(&mut img, &objs);
    (img, objs)
}

/// SynthBasicMCQ (training only): one large object; its colour or its shape, four options.
fn basic_mcq(rng: &mut ChaCha8Rng) -> Example {
    let (img, objs) = big_object(rng);
    let o = objs[0];
    let caption = describe(&objs, 128.0);
    let (question, pool, right, kind) = if rng.random_bool(0.5) {
        (
            "What colour is the object?",
            colour_names(),
            colour_name(o.colour),
            "colour",
        )
    } else {
        (
            "What shape is the object?",
            shape_names(),
            o.shape.name(),
            "shape",
        )
    };
    let (options, answer) = mcq(options_with(rng, &pool, right, 4), right);
    Example {
        image: img,
        question: question.to_string(),
        hint: None,
        options,
        answer,
        kind,
        chance: 0.25,
        caption,
        worked: None,
    }
}

/// SynthBasic (training only): one large object; its colour or its shape.
fn basic(rng: &mut ChaCha8Rng) -> Example {
    let (img, objs) = big_object(rng);
    let (shape, colour) = (objs[0].shape, objs[0].colour);
    let caption = describe(&objs, 128.0);
    let (question, answer, kind, chance) = if rng.random_bool(0.5) {
        (
            "What colour is the object?",
            colour_name(colour),
            "colour",
            1.0 / COLOURS.len() as f64,
        )
    } else {
        (
            "What shape is the object?",
            shape.name(),
            "shape",
            1.0 / Shape::ALL.len() as f64,
        )
    };
    Example {
        image: img,
        question: question.to_string(),
        hint: None,
        options: vec![],
        answer: answer.to_string(),
        kind,
        chance,
        caption,
        worked: None,
    }
}

/// SynthMMB: four-option questions on relative position, size or colour.
fn mmb(rng: &mut ChaCha8Rng) -> Example {
    match rng.random_range(0..3) {
        0 => {
            // Two objects apart along one axis, roughly aligned on the other.
            let shapes = distinct(rng, &Shape::ALL, 2);
            let colours = distinct(rng, &(0..COLOURS.len()).collect::<Vec<_>>(), 2);
            let r = [
                rng.random_range(10..=16) as f64,
                rng.random_range(10..=16) as f64,
            ];
            let relation = rng.random_range(0..4); // left, right, above, below
            let along: f64 = rng.random_range(44..=80) as f64;
            let across: f64 = rng.random_range(-8..=8) as f64;
            let centre = (64.0, 64.0);
            let (dx, dy) = match relation {
                0 => (-along, across),
                1 => (along, across),
                2 => (across, -along),
                _ => (across, along),
            };
            let a = ((centre.0 + dx / 2.0).round(), (centre.1 + dy / 2.0).round());
            let b = ((centre.0 - dx / 2.0).round(), (centre.1 - dy / 2.0).round());
            let objs = [
                Obj {
                    shape: shapes[0],
                    colour: colours[0],
                    cx: a.0,
                    cy: a.1,
                    r: r[0],
                },
                Obj {
                    shape: shapes[1],
                    colour: colours[1],
                    cx: b.0,
                    cy: b.1,
                    r: r[1],
                },
            ];
            let mut img = Canvas::new(128, 128, background(rng));
            draw_objs(&mut img, &objs);
            let names = ["to the left of", "to the right of", "above", "below"];
            let options = names.to_vec().shuffled(rng);
            let (options, answer) = mcq(
                options.iter().map(|s| s.to_string()).collect(),
                names[relation],
            );
            Example {
                image: img,
                question: format!(
                    "Where is the {} {} relative to the {} {}?",
                    colour_name(colours[0]),
                    shapes[0].name(),
                    colour_name(colours[1]),
                    shapes[1].name()
                ),
                hint: None,
                options,
                answer,
                kind: "position",
                chance: 0.25,
                caption: describe(&objs, 128.0),
                worked: None,
            }
        }
        1 => {
            // 2–3 objects, one clearly the largest.
            let k = rng.random_range(2..=3);
            let shapes = distinct(rng, &Shape::ALL, k);
            let colours: Vec<usize> = (0..k).map(|_| rng.random_range(0..COLOURS.len())).collect();
            let mut radii: Vec<f64> = (0..k).map(|_| rng.random_range(7..=11) as f64).collect();
            radii[0] = rng.random_range(19..=24) as f64;
            let objs = scene(rng, &shapes, &colours, &radii);
            let mut img = Canvas::new(128, 128, background(rng));
            draw_objs(&mut img, &objs);
            let mut opts: Vec<String> = shapes.iter().map(|s| s.name().to_string()).collect();
            let absent: Vec<&str> = shape_names()
                .into_iter()
                .filter(|n| !shapes.iter().any(|s| s.name() == *n))
                .collect();
            opts.extend(
                absent
                    .choose_multiple(rng, 4 - k)
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>(),
            );
            let (options, answer) = mcq(opts.shuffled(rng), shapes[0].name());
            Example {
                image: img,
                question: "Which object is the largest?".to_string(),
                hint: None,
                options,
                answer,
                kind: "size",
                chance: 0.25,
                caption: describe(&objs, 128.0),
                worked: None,
            }
        }
        _ => {
            let k = rng.random_range(2..=3);
            let (img, objs) = simple_scene(rng, k);
            let o = objs[0];
            let opts = options_with(rng, &colour_names(), colour_name(o.colour), 4);
            let (options, answer) = mcq(opts, colour_name(o.colour));
            Example {
                image: img,
                question: format!("What colour is the {}?", o.shape.name()),
                hint: None,
                options,
                answer,
                kind: "colour",
                chance: 0.25,
                caption: describe(&objs, 128.0),
                worked: None,
            }
        }
    }
}

/// Which negatives a yes/no question draws (SynthPOPE's own: [`Negative::Either`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Negative {
    /// Half "same shape", half "same colour".
    Either,
    /// A shape that is there, in a colour it does not have.
    SameShape,
    /// A colour that is there, on a shape it does not have.
    SameColour,
}

/// SynthPOPE's question about `objs`: a (colour, shape) pair that is there (`yes`), or one
/// that is not, as `negative` says: a shape that is there in another colour ("same
/// shape"), or a colour that is there on another shape ("same colour").
fn pope(
    rng: &mut ChaCha8Rng,
    yes: bool,
    negative: Negative,
    img: Canvas,
    objs: Vec<Obj>,
) -> Example {
    let o = pick(rng, &objs);
    let present = |s: Shape, c: usize| objs.iter().any(|p| p.shape == s && p.colour == c);
    let (shape, colour, kind) = if yes {
        (o.shape, o.colour, "present")
    } else if match negative {
        Negative::SameShape => true,
        Negative::SameColour => false,
        Negative::Either => rng.random_bool(0.5),
    } {
        let colours: Vec<usize> = (0..COLOURS.len())
            .filter(|&c| !present(o.shape, c))
            .collect();
        (o.shape, pick(rng, &colours), "same shape")
    } else {
        let shapes: Vec<Shape> = Shape::ALL
            .into_iter()
            .filter(|&s| !present(s, o.colour))
            .collect();
        (pick(rng, &shapes), o.colour, "same colour")
    };
    let article = if colour_name(colour).starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    Example {
        image: img,
        question: format!(
            "Is there {article} {} {} in the image?",
            colour_name(colour),
            shape.name()
        ),
        hint: None,
        options: vec![],
        answer: if yes { "Yes" } else { "No" }.to_string(),
        kind,
        chance: 0.5,
        caption: describe(&objs, 128.0),
        worked: Some(match objs.iter().find(|p| p.shape == shape) {
            Some(p) => format!("The {} is {}", shape.name(), colour_name(p.colour)),
            None => format!("There is no {}", shape.name()),
        }),
    }
}

/// SynthHR's clutter: greys, darker than every background and without a hue, so that the
/// one small star is the only coloured thing in the scene.
const HR_GREYS: [Rgb; 4] = [
    [90, 90, 90],
    [120, 120, 120],
    [150, 150, 150],
    [180, 180, 180],
];

/// SynthHR: a 224×224 scene of `clutter` grey circles, squares and crosses (half-sizes
/// `clutter_r`) with one small coloured star (half-size `star_r`); the star's colour, four
/// options. The target covers at most a patch of the 196: finding it is the test.
fn hr(
    rng: &mut ChaCha8Rng,
    clutter: std::ops::RangeInclusive<usize>,
    star_r: std::ops::RangeInclusive<u32>,
    clutter_r: std::ops::RangeInclusive<u32>,
) -> Example {
    let n = rng.random_range(clutter);
    let mut radii: Vec<f64> = vec![rng.random_range(star_r) as f64];
    radii.extend((0..n).map(|_| rng.random_range(clutter_r.clone()) as f64));
    let pos = loop {
        if let Some(p) = place(rng, 224, 224, &radii, 3.0, 3.0) {
            break p;
        }
        radii.pop();
    };
    let colour = rng.random_range(0..COLOURS.len());
    let (star, clutter) = (pos[0], &pos[1..]);
    let mut img = Canvas::new(224, 224, background(rng));
    for (&(cx, cy), &r) in clutter.iter().zip(&radii[1..]) {
        let shape = pick(rng, &[Shape::Circle, Shape::Square, Shape::Cross]);
        img.draw_shape(shape, cx, cy, r, pick(rng, &HR_GREYS));
    }
    img.draw_shape(Shape::Star, star.0, star.1, radii[0], COLOURS[colour].1);
    let right = colour_name(colour);
    let (options, answer) = mcq(options_with(rng, &colour_names(), right, 4), right);
    Example {
        image: img,
        question: "What colour is the small star?".to_string(),
        hint: None,
        options,
        answer,
        kind: "small object colour",
        chance: 0.25,
        caption: format!(
            "Grey circles, squares and crosses around a small {right} star at the {}.",
            place_name(star.0, star.1, 224.0)
        ),
        worked: None,
    }
}

/// SynthCount: 1–6 copies of one shape in one colour, `distractors` more of another shape
/// in another colour, half-sizes `radius` (one pixel smaller, all of them, each time they
/// do not fit).
fn count(
    rng: &mut ChaCha8Rng,
    distractors: std::ops::RangeInclusive<usize>,
    radius: std::ops::RangeInclusive<u32>,
) -> Example {
    let k = rng.random_range(1..=6usize);
    let d = rng.random_range(distractors);
    let shapes = distinct(rng, &Shape::ALL, 2);
    let colours = distinct(rng, &(0..COLOURS.len()).collect::<Vec<_>>(), 2);
    let mut radii: Vec<f64> = (0..k + d)
        .map(|_| rng.random_range(radius.clone()) as f64)
        .collect();
    let pos = loop {
        if let Some(p) = place(rng, 128, 128, &radii, 3.0, 4.0) {
            break p;
        }
        radii.iter_mut().for_each(|r| *r = (*r - 1.0).max(6.0));
    };
    let objs: Vec<Obj> = pos
        .into_iter()
        .zip(&radii)
        .enumerate()
        .map(|(i, ((cx, cy), &r))| {
            let t = usize::from(i >= k);
            Obj {
                shape: shapes[t],
                colour: colours[t],
                cx,
                cy,
                r,
            }
        })
        .collect();
    let mut img = Canvas::new(128, 128, background(rng));
    draw_objs(&mut img, &objs);
    Example {
        image: img,
        question: format!("How many {} are there?", shapes[0].plural()),
        hint: None,
        options: vec![],
        answer: k.to_string(),
        kind: "count",
        chance: 1.0 / 6.0,
        caption: count_caption(k, d, &shapes, &colours),
        worked: None,
    }
}

/// Corners the SynthSci hint gives each shape.
fn corners(s: Shape) -> usize {
    match s {
        Shape::Circle => 0,
        Shape::Triangle => 3,
        Shape::Square => 4,
        Shape::Star => 10,
        Shape::Cross => 12,
    }
}

/// SynthSci: a rule in the hint that must be applied to what the image shows.
fn sci(rng: &mut ChaCha8Rng) -> Example {
    let rule = rng.random_range(0..4);
    let mut img = Canvas::new(128, 128, background(rng));
    let all_colours: Vec<usize> = (0..COLOURS.len()).collect();
    let (hint, question, objs, right, options, kind): (
        &str,
        &str,
        Vec<Obj>,
        Shape,
        Vec<String>,
        &str,
    ) = match rule {
        0 => {
            let pool = [Shape::Circle, Shape::Triangle, Shape::Square, Shape::Star];
            let k = rng.random_range(2..=3);
            let shapes = distinct(rng, &pool, k);
            let colours = distinct(rng, &all_colours, k);
            let radii: Vec<f64> = (0..k).map(|_| rng.random_range(11..=17) as f64).collect();
            let objs = scene(rng, &shapes, &colours, &radii);
            let right = *shapes.iter().max_by_key(|s| corners(**s)).expect("k >= 2");
            let opts = pool
                .iter()
                .map(|s| s.name().to_string())
                .collect::<Vec<_>>();
            (
                    "An object with more corners is heavier. A circle has no corners, a triangle has 3, a square has 4 and a star has 10.",
                    "Which object in the image is the heaviest?",
                    objs,
                    right,
                    opts.shuffled(rng),
                    "corners",
                )
        }
        1 => {
            let shapes = distinct(rng, &Shape::ALL, 3);
            let colours = distinct(rng, &all_colours, 3);
            // Half-sizes 1.75× apart: the bigger object also has the bigger area whatever the
            // shapes (a star covers 0.42 of the area of a circle of the same half-size).
            let mut sizes = [7.0, 12.0, 21.0];
            sizes.shuffle(rng);
            let objs = scene(rng, &shapes, &colours, &sizes);
            let right = objs
                .iter()
                .max_by(|a, b| a.r.total_cmp(&b.r))
                .expect("3")
                .shape;
            let opts = present_plus_absent(rng, &shapes);
            (
                "Bigger objects are heavier.",
                "Which object in the image is the heaviest?",
                objs,
                right,
                opts,
                "size",
            )
        }
        2 => {
            let shapes = distinct(rng, &Shape::ALL, 3);
            let colours = distinct(rng, &all_colours, 3);
            let r: Vec<f64> = (0..3).map(|_| rng.random_range(9..=13) as f64).collect();
            // Three rows 36 px apart, random columns.
            let mut rows = [24.0, 62.0, 100.0];
            rows.shuffle(rng);
            let objs: Vec<Obj> = (0..3)
                .map(|i| Obj {
                    shape: shapes[i],
                    colour: colours[i],
                    cx: rng.random_range(18..=110) as f64,
                    cy: rows[i] + rng.random_range(-3..=3) as f64,
                    r: r[i],
                })
                .collect();
            let right = objs
                .iter()
                .min_by(|a, b| a.cy.total_cmp(&b.cy))
                .expect("3")
                .shape;
            let opts = present_plus_absent(rng, &shapes);
            (
                "The higher an object is in the picture, the more potential energy it has.",
                "Which object has the most potential energy?",
                objs,
                right,
                opts,
                "height",
            )
        }
        _ => {
            let shapes = distinct(rng, &Shape::ALL, 3);
            let others: Vec<usize> = (1..COLOURS.len()).collect();
            let mut colours = vec![0]; // red
            colours.extend(distinct(rng, &others, 2));
            let radii: Vec<f64> = (0..3).map(|_| rng.random_range(10..=15) as f64).collect();
            let objs = scene(rng, &shapes, &colours, &radii);
            let opts = present_plus_absent(rng, &shapes);
            (
                "Red objects are hot; all other objects are cold.",
                "Which object is hot?",
                objs,
                shapes[0],
                opts,
                "colour",
            )
        }
    };
    draw_objs(&mut img, &objs);
    let (options, answer) = mcq(options, right.name());
    Example {
        image: img,
        question: question.to_string(),
        hint: Some(hint.to_string()),
        options,
        answer,
        kind,
        chance: 0.25,
        caption: describe(&objs, 128.0),
        worked: None,
    }
}

/// The names of `shapes` plus absent shapes up to four options, shuffled.
fn present_plus_absent(rng: &mut ChaCha8Rng, shapes: &[Shape]) -> Vec<String> {
    let mut opts: Vec<String> = shapes.iter().map(|s| s.name().to_string()).collect();
    let absent: Vec<&str> = shape_names()
        .into_iter()
        .filter(|n| !shapes.iter().any(|s| s.name() == *n))
        .collect();
    opts.extend(
        absent
            .choose_multiple(rng, 4 - shapes.len())
            .map(|s| s.to_string()),
    );
    opts.shuffled(rng)
}
