//! `interlace synth`: write the synthetic training sources and benchmarks.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;

use crate::progress::Progress;
use crate::synth::{write_synth_with, Family, SynthOptions, IN_WORDS, SHAPES, SHAPES_QUESTIONS};

#[derive(Debug, Clone, clap::Args)]
pub struct SynthArgs {
    /// Output directory. Written under a temporary name and renamed when complete; if it
    /// exists it must be empty or a previous synth output (holding synth.json), which is
    /// replaced.
    #[arg(long)]
    pub out: PathBuf,
    /// Random seed: the same seed gives byte-identical files.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Training rows per task family (one Parquet source each; the training-only warm-up
    /// family SynthBasic gets three times as many).
    #[arg(long, default_value_t = 4000)]
    pub train_rows: usize,
    /// Rows per benchmark TSV.
    #[arg(long, default_value_t = 100)]
    pub bench_rows: usize,
    /// For pretraining from scratch: give every training row a second turn ("Describe the
    /// image." answered with the scene in words: each object's size, colour, shape and
    /// place; the bars' values; the word spelled out; the counts) and add a training-only
    /// warm-up family, SynthBasic (one large object, 3× --train-rows). Benchmarks are the
    /// same with or without.
    #[arg(long)]
    pub captions: bool,
    /// With --captions: add six more training-only warm-up families, easy forms of the
    /// benchmarks' questions (SynthBasicPOPE: yes/no about one large object; SynthBasicMCQ:
    /// its colour or shape as four options; SynthBasicCount: 1–6 large copies of one shape;
    /// SynthBasicText: the same words, always at one place; SynthBasicChart: two wide
    /// bars; SynthBasicHR: a larger star among a few grey objects), for a curriculum with
    /// `pretrain --first`.
    #[arg(long, requires = "captions")]
    pub warm_ups: bool,
    /// Training answers with the work shown, scored the same by `interlace eval`: a
    /// multiple-choice answer is the option's text ("orange") instead of its letter, a
    /// yes/no answer first says what the image shows ("The circle is red. Yes", "There is no
    /// star. No"), a word is first spelled ("The letters C A T. CAT"). For a small model
    /// that reads the image but has not learned to turn what it sees into an option letter
    /// or a verdict. Benchmarks are unchanged.
    #[arg(long)]
    pub worked: bool,
    /// Training rows of the yes/no families (SynthPOPE, SynthBasicPOPE) ask N more yes/no
    /// questions about the same image, as further turns (the first with the other answer,
    /// then alternating), each about a shape that is in the image, in its own colour or in
    /// another: the verdict comes neither from the question alone nor from which shapes
    /// are there, only from comparing the colour seen with the one asked. Benchmarks are
    /// unchanged.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub probes: usize,
    /// Also write a training-only, text-only source of N rows, SynthWordsPOPE: a SynthPOPE
    /// scene given in words ("The image: a large red circle at the top left; ...") and its
    /// yes/no question (plus --probes more), answered as the other rows are (--worked). No
    /// image, so a row costs a few dozen tokens: for teaching the verdict's last step, the
    /// colour seen against the one asked, from text. Everything else is unchanged.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub in_words: usize,
    /// Also write a training-only source of N rows, SynthShapesPOPE: a SynthPOPE scene
    /// with four yes/no questions, each naming a colour that is there, on its own shape
    /// ("Yes") or on another ("No"): SynthPOPE's "same colour" negatives, which only the
    /// shapes decide. Answered as the other rows are (--worked), with the caption turn
    /// under --captions. Everything else is unchanged.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub shapes: usize,
}

pub fn run(args: &SynthArgs) -> Result<String> {
    let opts = SynthOptions {
        seed: args.seed,
        train_rows: args.train_rows,
        bench_rows: args.bench_rows,
        captions: args.captions,
        warm_ups: args.warm_ups,
        worked: args.worked,
        probes: args.probes,
        in_words: args.in_words,
        shapes: args.shapes,
    };
    let start = Instant::now();
    let total = opts.total_rows();
    let bar = Progress::new("synth", "rows", total);
    let mut last = 0;
    let manifest = write_synth_with(&args.out, &opts, &mut |done, _, family| {
        // Progress logs (off a terminal) at fixed row counts: pass every count on the way.
        for d in last + 1..=done {
            bar.set(d, family);
        }
        last = done;
    })?;
    bar.finish();
    let warmup = if opts.warm_ups {
        format!(
            " and the warm-ups SynthBasic × {} and {} more × {}, with captions,",
            Family::Basic.train_rows(opts.train_rows),
            Family::WARM_UPS.len() - 1,
            opts.train_rows
        )
    } else if opts.captions {
        format!(
            " and the warm-up SynthBasic × {}, with captions,",
            Family::Basic.train_rows(opts.train_rows)
        )
    } else {
        String::new()
    };
    let worked = match (opts.worked, opts.probes) {
        (false, 0) => String::new(),
        (true, 0) => ", worked answers".to_string(),
        (w, n) => format!(
            ",{} {n} more yes/no questions per SynthPOPE and SynthBasicPOPE image",
            if w { " worked answers," } else { "" }
        ),
    };
    let words = if opts.in_words > 0 {
        format!(", {} text-only rows in {IN_WORDS}", opts.in_words)
    } else {
        String::new()
    };
    let shapes = if opts.shapes > 0 {
        format!(
            ", {} rows of {SHAPES_QUESTIONS} shape questions in {SHAPES}",
            opts.shapes
        )
    } else {
        String::new()
    };
    let mut s = format!(
        "{}: {} training families × {} rows{warmup} in {}{worked}{words}{shapes}, {} benchmarks × {} rows ({:.1} s)\n",
        args.out.display(),
        Family::ALL.len(),
        opts.train_rows,
        manifest.train.display(),
        manifest.benchmarks.len(),
        opts.bench_rows,
        start.elapsed().as_secs_f64()
    );
    for b in &manifest.benchmarks {
        s.push_str(&format!(
            "  {:<11} {:<9} {:<20} chance {:.3}  {}\n",
            b.name,
            b.task.name(),
            b.category,
            b.chance,
            b.file.display()
        ));
    }
    Ok(s)
}
