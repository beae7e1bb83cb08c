//! How fast the vision tower alone learns what a question needs: trains a model's tower
//! (patch embedding, blocks, merger; not the DeepStack mergers, which these heads do not
//! reach) with small classification heads in place of the language model. Each question
//! kind (the colour or the shape of one large object, the word written, the colour of the
//! small star, ...) gets an attention pooling over the image's merged tokens (each scaled
//! to unit root-mean-square) and a linear layer over the answers. It prints the held-out
//! accuracy of every kind as it goes (rows of the benchmark split of --seed), and with
//! --out writes a copy of MODEL with the trained tower.
//!
//! Besides `synth` families, `--letters MODE` trains on one white letter A–Z on mid-grey
//! (which the processor maps to about 0): 26 images in all, the same at every step, a pure
//! memorisation test. `one-patch`: a 10×14-pixel letter inside the 16-pixel patch at
//! column 3, row 3 of a 128×128 image; `one-token`: 20×28 pixels, inside one 2×2 group
//! of patches (one merged token); `whole-image`: 80×112 pixels. `loose:SCALE` is not a
//! memorisation test: every training image is a random letter, 5·SCALE × 7·SCALE pixels,
//! at a random place (`:grid`: its top left on the patch grid), white on mid-grey or
//! (`:colours`) in two random colours of contrasting luminance, and the held-out rows
//! (`--eval-rows`) are such images drawn from a stream of their own (not the training
//! stream; with few possible images, as with `:grid`, some will equal training images). `shape[:colours]` is the same with one of the
//! five shapes at SynthBasic's sizes instead of a letter. `--letters` and `--families` may
//! be repeated and combined.
//!
//! ```sh
//! cargo run --release --example vision_probe -- --model demo/model \
//!     [--families Basic,BasicText,Text,BasicHR,HR] \
//!     [--letters one-patch|one-token|whole-image|loose:SCALE[:colours][:grid]|shape[:colours]] \
//!     [--fresh] [--steps 300] [--batch 32] [--lr 3e-3] [--seed 70] \
//!     [--eval-every 50] [--eval-rows 64] [--concat-tokens N] [--out DIR]
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use interlace::model::loss::cross_entropy_sum;
use interlace::model::ops::{self, Grad};
use interlace::model::Model;
use interlace::processor::image::ImageProcessor;
use interlace::processor::DynamicImage;
use interlace::synth::draw::{Canvas, Shape};
use interlace::synth::tasks::{Example, Family};
use interlace::synth::{example, Split};
use interlace::train::adamw::{update_moments, AdamWConfig, Moments};
use interlace::train::schedule::{warmup_steps, CosineSchedule};
use interlace::train::trainer::clip_coef;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Answer classes the heads share (the families' colours, shapes and 100 words fit).
const CLASSES: usize = 128;

/// Where the training and held-out rows come from.
#[derive(Clone, Copy)]
enum Source {
    Family(Family),
    /// One letter, `scale` pixels per font pixel, its top left at `at`.
    Letter {
        scale: i64,
        at: (i64, i64),
    },
    /// One letter, `scale` pixels per font pixel, at a random place, white on mid-grey or
    /// (`colours`) in two random colours that differ in luminance by at least 110; the
    /// held-out rows come from a stream of their own, not the training stream.
    /// With `grid`, the letter's top left is on the 16-pixel patch grid.
    Loose {
        scale: i64,
        colours: bool,
        grid: bool,
    },
    /// One of SynthBasic's five shapes (half-size 28–44 pixels, as SynthBasic's) at a
    /// random place, white on mid-grey or (`colours`) in two random colours as `Loose`.
    Shape {
        colours: bool,
    },
}

struct Args {
    model: PathBuf,
    out: Option<PathBuf>,
    steps: usize,
    batch: usize,
    lr: f64,
    seed: u64,
    sources: Vec<Source>,
    eval_every: usize,
    eval_rows: usize,
    fresh: bool,
    /// Heads read every merged token (concatenated) instead of an attention pooling of
    /// them: no dilution of a detail that lies in one token; every image must then give
    /// this many tokens.
    concat: Option<usize>,
}

fn parse_args() -> Result<Args> {
    let usage = "usage: vision_probe --model DIR [--families A,B,..] \
                 [--letters one-patch|one-token|whole-image|loose:SCALE[:colours][:grid]|shape[:colours]] \
                 [--fresh] [--steps N] [--batch N] [--lr X] [--seed S] [--eval-every N] \
                 [--eval-rows N] [--concat-tokens N] [--out DIR]";
    let mut a = Args {
        model: PathBuf::new(),
        out: None,
        steps: 300,
        batch: 32,
        lr: 3e-3,
        seed: 70,
        sources: Vec::new(),
        eval_every: 50,
        eval_rows: 64,
        fresh: false,
        concat: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().context(usage);
        match flag.as_str() {
            "--model" => a.model = PathBuf::from(val()?),
            "--out" => a.out = Some(PathBuf::from(val()?)),
            "--steps" => a.steps = val()?.parse().context("--steps")?,
            "--batch" => a.batch = val()?.parse().context("--batch")?,
            "--lr" => a.lr = val()?.parse().context("--lr")?,
            "--seed" => a.seed = val()?.parse().context("--seed")?,
            "--eval-every" => a.eval_every = val()?.parse().context("--eval-every")?,
            "--eval-rows" => a.eval_rows = val()?.parse().context("--eval-rows")?,
            "--fresh" => a.fresh = true,
            "--concat-tokens" => a.concat = Some(val()?.parse().context("--concat-tokens")?),
            "--letters" => {
                let chosen = match val()?.as_str() {
                    "one-patch" => vec![ONE_PATCH],
                    "one-token" => vec![ONE_TOKEN],
                    "whole-image" => vec![WHOLE_IMAGE],
                    "shape" => vec![Source::Shape { colours: false }],
                    "shape:colours" => vec![Source::Shape { colours: true }],
                    other => match other.strip_prefix("loose:") {
                        Some(rest) => {
                            let mut parts = rest.split(':');
                            let scale = parts.next().unwrap_or("");
                            let (mut colours, mut grid) = (false, false);
                            for p in parts {
                                match p {
                                    "colours" => colours = true,
                                    "grid" => grid = true,
                                    _ => bail!("--letters loose:SCALE[:colours][:grid]"),
                                }
                            }
                            let scale: i64 = scale.parse().context("--letters loose:SCALE")?;
                            if !(1..=16).contains(&scale) {
                                bail!("--letters loose:SCALE: SCALE must be 1 to 16");
                            }
                            vec![Source::Loose {
                                scale,
                                colours,
                                grid,
                            }]
                        }
                        None => bail!(
                            "--letters {other}: one-patch, one-token, whole-image, loose:SCALE[:colours][:grid] or shape[:colours]"
                        ),
                    },
                };
                a.sources.extend(chosen);
            }
            "--families" => {
                let chosen: Vec<Source> = val()?
                    .split(',')
                    .map(|n| {
                        let name = if n.starts_with("Synth") {
                            n.to_string()
                        } else {
                            format!("Synth{n}")
                        };
                        Family::by_name(&name)
                            .map(Source::Family)
                            .with_context(|| format!("no family {n}"))
                    })
                    .collect::<Result<_>>()?;
                a.sources.extend(chosen);
            }
            _ => bail!(usage),
        }
    }
    if a.sources.is_empty() {
        a.sources = [
            Family::Basic,
            Family::BasicText,
            Family::Text,
            Family::BasicHr,
            Family::Hr,
        ]
        .map(Source::Family)
        .to_vec();
    }
    if a.model.as_os_str().is_empty() || a.steps == 0 || a.batch == 0 || a.eval_every == 0 {
        bail!(usage);
    }
    if let Some(out) = &a.out {
        if out.exists() {
            bail!("{}: already exists", out.display());
        }
    }
    Ok(a)
}

impl Source {
    fn name(self) -> String {
        match self {
            Source::Family(f) => f.name().to_string(),
            Source::Letter { scale: 2, .. } => "letter (one patch)".into(),
            Source::Letter { scale: 4, .. } => "letter (one token)".into(),
            Source::Letter { .. } => "letter (whole image)".into(),
            Source::Loose {
                scale,
                colours,
                grid,
            } => format!(
                "letter ({}×{} px at a random place{}{})",
                5 * scale,
                7 * scale,
                if grid { " on the patch grid" } else { "" },
                if colours { ", random colours" } else { "" }
            ),
            Source::Shape { colours } => format!(
                "shape (random place{})",
                if colours { ", random colours" } else { "" }
            ),
        }
    }

    /// Row `row` of `split`: a `synth` row, or letter `row` mod 26 (held out) or a random
    /// letter (training).
    fn row(self, seed: u64, split: Split, row: usize, rng: &mut ChaCha8Rng) -> Example {
        match self {
            Source::Family(f) => example(seed, f, split, row),
            Source::Letter { scale, at } => {
                let k = match split {
                    Split::Bench => (row % 26) as u8,
                    Split::Train => rng.random_range(0..26u8),
                };
                let letter = ((b'A' + k) as char).to_string();
                let mut img = Canvas::new(128, 128, [128, 128, 128]);
                img.draw_text(&letter, at.0, at.1, scale, [250, 250, 250]);
                plain_example(img, "What letter is this?", letter, "letter", 26)
            }
            Source::Loose {
                scale,
                colours,
                grid,
            } => {
                // Held-out rows from a stream of their own; an image may still by chance
                // equal a training one (often so with `grid`: few possible images).
                let mut held;
                let rng = match split {
                    Split::Bench => {
                        held = ChaCha8Rng::seed_from_u64(
                            seed ^ 0x5eed_0000 ^ (scale as u64) << 20 ^ row as u64,
                        );
                        &mut held
                    }
                    Split::Train => rng,
                };
                let k = rng.random_range(0..26u8);
                let (bg, fg) = two_colours(rng, colours);
                let (w, h) = (5 * scale, 7 * scale);
                let (mut x, mut y) = (rng.random_range(0..=128 - w), rng.random_range(0..=128 - h));
                if grid {
                    (x, y) = (x / 16 * 16, y / 16 * 16);
                }
                let letter = ((b'A' + k) as char).to_string();
                let mut img = Canvas::new(128, 128, bg);
                img.draw_text(&letter, x, y, scale, fg);
                plain_example(img, "What letter is this?", letter, "letter", 26)
            }
            Source::Shape { colours } => {
                let mut held;
                let rng = match split {
                    Split::Bench => {
                        held = ChaCha8Rng::seed_from_u64(seed ^ 0x5a4e_0000 ^ row as u64);
                        &mut held
                    }
                    Split::Train => rng,
                };
                let shape = Shape::ALL[rng.random_range(0..Shape::ALL.len())];
                let (bg, fg) = two_colours(rng, colours);
                let r = rng.random_range(28..=44) as f64;
                let cx = rng.random_range(r..=128.0 - r);
                let cy = rng.random_range(r..=128.0 - r);
                let mut img = Canvas::new(128, 128, bg);
                img.draw_shape(shape, cx, cy, r, fg);
                let name = shape.name().to_string();
                plain_example(img, "What shape is this?", name, "shape", Shape::ALL.len())
            }
        }
    }
}

/// A short-answer row: `answer` (also its caption) is one of `classes` equally likely.
fn plain_example(
    image: Canvas,
    question: &str,
    answer: String,
    kind: &'static str,
    classes: usize,
) -> Example {
    Example {
        image,
        question: question.to_string(),
        hint: None,
        options: vec![],
        answer: answer.clone(),
        kind,
        chance: 1.0 / classes as f64,
        caption: answer,
        worked: None,
    }
}

/// Background and foreground: mid-grey and white, or (`random`) two random colours whose
/// luminance differs by at least 110 (as SynthText's).
fn two_colours(rng: &mut ChaCha8Rng, random: bool) -> ([u8; 3], [u8; 3]) {
    if !random {
        return ([128, 128, 128], [250, 250, 250]);
    }
    let lum = |c: [u8; 3]| 0.299 * c[0] as f64 + 0.587 * c[1] as f64 + 0.114 * c[2] as f64;
    loop {
        let a: [u8; 3] = [rng.random(), rng.random(), rng.random()];
        let b: [u8; 3] = [rng.random(), rng.random(), rng.random()];
        if (lum(a) - lum(b)).abs() >= 110.0 {
            return (a, b);
        }
    }
}

/// A 10×14-pixel letter centred in the 16-pixel patch at column 3, row 3.
const ONE_PATCH: Source = Source::Letter {
    scale: 2,
    at: (3 * 16 + 3, 3 * 16 + 1),
};
/// A 20×28-pixel letter centred in the 2×2 patches (one merged token) at column 1, row 1.
const ONE_TOKEN: Source = Source::Letter {
    scale: 4,
    at: (32 + 6, 32 + 2),
};
/// An 80×112-pixel letter across the image.
const WHOLE_IMAGE: Source = Source::Letter {
    scale: 16,
    at: (24, 8),
};

/// `n` draws from a normal distribution of standard deviation 0.02 (Box-Muller).
fn normal(n: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let (u, v): (f64, f64) = (rng.random(), rng.random());
            (0.02 * (-2.0 * (1.0 - u).ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
        })
        .collect()
}

/// One head: attention pooling (a query vector) and a linear layer.
struct Head {
    query: Var,
    weight: Var,
    bias: Var,
}

impl Head {
    /// A head over `dim`-wide pooled features, or over `concat` tokens side by side.
    fn new(dim: usize, concat: Option<usize>, rng: &mut ChaCha8Rng) -> Result<Self> {
        let width = dim * concat.unwrap_or(1);
        let dev = Device::Cpu;
        Ok(Self {
            query: Var::from_tensor(&Tensor::from_vec(normal(dim, rng), (dim, 1), &dev)?)?,
            weight: Var::from_tensor(&Tensor::from_vec(
                normal(CLASSES * width, rng),
                (CLASSES, width),
                &dev,
            )?)?,
            bias: Var::from_tensor(&Tensor::zeros(CLASSES, DType::F32, &dev)?)?,
        })
    }

    /// Logits (1, CLASSES) of one image's merged tokens `feats` (tokens, dim).
    fn logits(&self, feats: &Tensor) -> Result<Tensor> {
        // Each token scaled to unit root-mean-square first: the merger's outputs are sized
        // for the language model, not for this head.
        let rms = feats.sqr()?.mean_keepdim(1)?.affine(1.0, 1e-6)?.sqrt()?;
        let feats = feats.broadcast_div(&rms)?;
        let (n, d) = feats.dims2()?;
        let pooled = if self.weight.dim(1)? == d {
            let scores = feats.matmul(self.query.as_tensor())?.t()?.contiguous()?; // (1, n)
            ops::softmax_last_dim(&scores, Grad::Track)?.matmul(&feats)?
        } else if self.weight.dim(1)? == n * d {
            feats.reshape((1, n * d))?
        } else {
            bail!(
                "the head reads {} values, the image gives {n} tokens of {d}",
                self.weight.dim(1)?
            );
        };
        Ok(pooled
            .matmul(&self.weight.as_tensor().t()?)?
            .broadcast_add(self.bias.as_tensor())?)
    }
}

/// The heads by question kind, and the answer classes they share.
struct Heads {
    by_kind: HashMap<&'static str, Head>,
    classes: HashMap<String, u32>,
}

impl Heads {
    /// The class of `ex`'s answer (the option's text for multiple choice).
    fn class(&mut self, ex: &Example) -> Result<u32> {
        let n = self.classes.len() as u32;
        let id = *self.classes.entry(ex.worked_answer()).or_insert(n);
        if id as usize >= CLASSES {
            bail!("more than {CLASSES} answer classes");
        }
        Ok(id)
    }
}

/// The images through the tower: per image, its merged tokens (n_i, dim).
fn tower(model: &Model, proc: &ImageProcessor, exs: &[Example], grad: Grad) -> Result<Vec<Tensor>> {
    let (mut pixels, mut grids, mut counts, mut patch_dim) =
        (Vec::new(), Vec::new(), Vec::new(), 0);
    let merge = model.config.vision.as_ref().unwrap().spatial_merge_size();
    for ex in exs {
        let c = &ex.image;
        let img = image::RgbImage::from_raw(c.width, c.height, c.pixels.clone())
            .context("canvas size")?;
        let p = proc.preprocess(&DynamicImage::ImageRgb8(img))?;
        patch_dim = p.patch_dim;
        counts.push(p.num_tokens(merge));
        grids.push(p.grid_thw);
        pixels.extend(p.pixel_values);
    }
    let rows = pixels.len() / patch_dim.max(1);
    let pv = Tensor::from_vec(pixels, (rows, patch_dim), &Device::Cpu)?;
    let out = model.image_features(&pv, &grids, grad)?;
    let mut start = 0;
    counts
        .into_iter()
        .map(|n| {
            let t = out.image_embeds.narrow(0, start, n)?;
            start += n;
            Ok(t)
        })
        .collect()
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let dev = Device::Cpu;
    let mut model = Model::load(&args.model, DType::F32, &dev)?;
    let proc = ImageProcessor::from_dir(&args.model)?;
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    // The tower's tensors become variables; --fresh draws them anew (weights normal with
    // standard deviation 0.02, biases 0, norm weights 1).
    let mut tower_vars: Vec<(String, Var)> = Vec::new();
    for (name, t) in model.params_mut() {
        if !name.starts_with("model.visual.") || name.contains("deepstack") {
            continue;
        }
        let var = Var::from_tensor(&t.to_dtype(DType::F32)?)?;
        if args.fresh {
            let n = var.elem_count();
            let v = if name.contains("norm") && name.ends_with(".weight") {
                vec![1.0; n]
            } else if name.ends_with(".bias") {
                vec![0.0; n]
            } else {
                normal(n, &mut rng)
            };
            var.set(&Tensor::from_vec(v, var.shape(), &dev)?)?;
        }
        *t = var.as_tensor().clone();
        tower_vars.push((name, var));
    }
    let dim = model.config.vision.as_ref().unwrap().out_hidden_size();
    // Held-out rows; one head per question kind among them.
    let mut held: Vec<(Source, Example)> = Vec::new();
    for &s in &args.sources {
        for r in 0..args.eval_rows {
            held.push((s, s.row(args.seed, Split::Bench, r, &mut rng)));
        }
    }
    let mut heads = Heads {
        by_kind: HashMap::new(),
        classes: HashMap::new(),
    };
    let mut kinds: Vec<&'static str> = held.iter().map(|(_, e)| e.kind).collect();
    kinds.sort_unstable();
    kinds.dedup();
    for &k in &kinds {
        heads
            .by_kind
            .insert(k, Head::new(dim, args.concat, &mut rng)?);
    }
    for (_, ex) in &held {
        heads.class(ex)?;
    }
    let mut vars: Vec<Var> = tower_vars.iter().map(|(_, v)| v.clone()).collect();
    for k in &kinds {
        let h = &heads.by_kind[k];
        vars.extend([h.query.clone(), h.weight.clone(), h.bias.clone()]);
    }
    let config = AdamWConfig {
        weight_decay: 0.01,
        ..AdamWConfig::default()
    };
    let mut moments: Vec<Moments> = vars
        .iter()
        .map(|v| Moments::Zeros(v.elem_count()))
        .collect();
    let sched = CosineSchedule {
        base_lr: args.lr,
        warmup: warmup_steps(args.steps, 0.03),
        total: args.steps,
    };
    let mut next_row = vec![0usize; args.sources.len()];
    let t0 = std::time::Instant::now();
    let mut loss_sum = 0.0;
    for step in 0..args.steps {
        let mut exs = Vec::with_capacity(args.batch);
        for _ in 0..args.batch {
            let i = rng.random_range(0..args.sources.len());
            exs.push(args.sources[i].row(args.seed, Split::Train, next_row[i], &mut rng));
            next_row[i] += 1;
        }
        let labels = exs
            .iter()
            .map(|ex| heads.class(ex))
            .collect::<Result<Vec<_>>>()?;
        let feats = tower(&model, &proc, &exs, Grad::Track)?;
        let logits = exs
            .iter()
            .zip(&feats)
            .map(|(ex, x)| {
                heads
                    .by_kind
                    .get(ex.kind)
                    .with_context(|| format!("no held-out row asks about {}", ex.kind))?
                    .logits(x)
            })
            .collect::<Result<Vec<_>>>()?;
        let loss = (cross_entropy_sum(&Tensor::cat(&logits, 0)?, &labels)? / args.batch as f64)?;
        let grads = loss.backward()?;
        let mut gs = vars
            .iter()
            .map(|v| match grads.get(v.as_tensor()) {
                Some(g) => Ok(g.flatten_all()?.to_vec1::<f32>()?),
                None => Ok(vec![0.0; v.elem_count()]),
            })
            .collect::<Result<Vec<_>>>()?;
        let norm = gs
            .iter()
            .flatten()
            .map(|&x| (x as f64) * (x as f64))
            .sum::<f64>()
            .sqrt();
        let l = loss.to_scalar::<f32>()? as f64;
        if !l.is_finite() || !norm.is_finite() {
            bail!("step {}: loss {l}, gradient norm {norm}", step + 1);
        }
        let coef = clip_coef(norm, 1.0);
        let lr = sched.lr(step);
        for ((v, g), m) in vars.iter().zip(gs.iter_mut()).zip(moments.iter_mut()) {
            if let Some(c) = coef {
                g.iter_mut().for_each(|x| *x *= c);
            }
            let mut p = v.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            update_moments(config, step as u64 + 1, m, &mut p, g, lr)?;
            v.set(&Tensor::from_vec(p, v.shape(), &dev)?)?;
        }
        loss_sum += l;
        let s = step + 1;
        if s % args.eval_every == 0 || s == args.steps {
            eprintln!(
                "step {s}: mean loss {:.4} since the last report, {:.2} s/step; held-out: {}",
                loss_sum / ((s - 1) % args.eval_every + 1) as f64,
                t0.elapsed().as_secs_f64() / s as f64,
                evaluate(&model, &proc, &heads, &held)?
            );
            loss_sum = 0.0;
        }
    }
    match &args.out {
        Some(out) => save(&args.model, out, &model, &tower_vars),
        None => Ok(()),
    }
}

/// Right answers per source and kind on the held-out rows.
fn evaluate(
    model: &Model,
    proc: &ImageProcessor,
    heads: &Heads,
    held: &[(Source, Example)],
) -> Result<String> {
    let mut right: Vec<(String, usize, usize)> = Vec::new();
    for chunk in held.chunks(64) {
        let exs: Vec<Example> = chunk.iter().map(|(_, e)| e.clone()).collect();
        let feats = tower(model, proc, &exs, Grad::None)?;
        for ((source, ex), x) in chunk.iter().zip(&feats) {
            let logits = heads.by_kind[ex.kind].logits(x)?.squeeze(0)?;
            let ok = logits.argmax(0)?.to_scalar::<u32>()? == heads.classes[&ex.worked_answer()];
            let key = format!("{} {}", source.name(), ex.kind);
            match right.iter_mut().find(|r| r.0 == key) {
                Some(r) => {
                    r.1 += usize::from(ok);
                    r.2 += 1;
                }
                None => right.push((key, usize::from(ok), 1)),
            }
        }
    }
    Ok(right
        .iter()
        .map(|(k, r, n)| format!("{k} {r}/{n}"))
        .collect::<Vec<_>>()
        .join(", "))
}

/// OUT: MODEL's files with the tower's tensors replaced (in the dtype stored), written
/// under a temporary name and renamed when complete.
fn save(from: &Path, out: &Path, model: &Model, vars: &[(String, Var)]) -> Result<()> {
    let src = from.join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&src, &Device::Cpu)
        .with_context(|| format!("{}: cannot read", src.display()))?;
    for (name, var) in vars {
        let old = tensors
            .get(name)
            .with_context(|| format!("{}: no tensor {name}", src.display()))?;
        let shape = model.stored_shape(name, var.dims());
        let t = var.as_tensor().reshape(shape)?.to_dtype(old.dtype())?;
        tensors.insert(name.clone(), t);
    }
    let tmp = out.with_extension("tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_name() != "model.safetensors" && entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), tmp.join(entry.file_name()))?;
        }
    }
    interlace::model::weights::save_tensors(&tmp.join("model.safetensors"), &tensors)?;
    std::fs::rename(&tmp, out)?;
    eprintln!("wrote {}", out.display());
    Ok(())
}
