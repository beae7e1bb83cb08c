//! Does a model compare the colour it sees with the colour a SynthPOPE question asks about?
//!
//! For ROWS yes/no rows, the chat prompt is followed by a forced worked observation, and
//! the model's next-token logits of "Yes" and "No" are read (one prefill each, no
//! generation). The rows are the first ROWS benchmark rows of SynthPOPE and SynthBasicPOPE
//! (seed SEED, with their images), or with `--in-words` ROWS text-only SynthWordsPOPE rows
//! (`synth --in-words`, seed SEED: the scene in words, no image). Observations forced:
//!
//! - `truth`: the row's own observation when the asked shape is there ("The cross is
//!   orange."), `no such shape` when it is not ("There is no star.");
//! - `other colour`: when the asked shape is there, "The S is C." for every colour C but
//!   the one it has (the question's own colour among them when that is not the one seen).
//!
//! Each line groups them by kind and by whether the colour named is the one asked about
//! (`named = asked`). A model that compares says "Yes" exactly on the `yes` lines; one
//! that answers from "The S is" alone says the same on every line. Usage:
//!
//! ```sh
//! cargo run --release --example yes_no_verdict -- MODEL_DIR [--rows 30] [--seed 42] [--in-words]
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use image::DynamicImage;
use interlace::model::{KvSlot, Model, ModelInputs};
use interlace::processor::{Message, Processor};
use interlace::synth::draw::COLOURS;
use interlace::synth::{example, in_words, prompt, tasks::Family, Split};

/// One yes/no question: the user text, its image (none for SynthWordsPOPE), the asked
/// colour and the row's own worked observation.
struct Question {
    family: String,
    user: String,
    image: Option<DynamicImage>,
    asked: String,
    truth: String,
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut dir, mut rows, mut seed, mut words) = (None, 30usize, 42u64, false);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rows" => rows = args.next().context("--rows N")?.parse().context("--rows")?,
            "--seed" => seed = args.next().context("--seed S")?.parse().context("--seed")?,
            "--in-words" => words = true,
            _ if dir.is_none() && !a.starts_with("--") => dir = Some(PathBuf::from(a)),
            _ => bail!("usage: yes_no_verdict MODEL_DIR [--rows N] [--seed S] [--in-words]"),
        }
    }
    let dir = dir.context("usage: yes_no_verdict MODEL_DIR [--rows N] [--seed S] [--in-words]")?;
    let dev = Device::Cpu;
    let proc = Processor::from_dir(&dir)?;
    let model = Model::load(&dir, DType::F32, &dev)?;
    let colours: Vec<&str> = COLOURS.iter().map(|(name, _)| *name).collect();
    let asked_in = |q: &str| -> Result<String> {
        colours
            .iter()
            .find(|c| q.contains(&format!(" {c} ")))
            .map(|c| c.to_string())
            .with_context(|| format!("no colour in {q:?}"))
    };

    let mut questions = Vec::new();
    if words {
        for i in 0..rows {
            let turns = in_words(seed, i, 0, true);
            let (user, answer) = &turns[0];
            let (truth, _) = answer.rsplit_once(". ").context("a worked answer")?;
            questions.push(Question {
                family: "SynthWordsPOPE".into(),
                asked: asked_in(user.lines().last().unwrap_or_default())?,
                user: user.clone(),
                image: None,
                truth: truth.to_string(),
            });
        }
    } else {
        for family in [Family::Pope, Family::BasicPope] {
            for i in 0..rows {
                let ex = example(seed, family, Split::Bench, i);
                questions.push(Question {
                    family: family.name().into(),
                    asked: asked_in(&ex.question)?,
                    user: prompt(family, &ex),
                    image: Some(image::load_from_memory(&ex.image.to_png()?)?),
                    truth: ex.worked.clone().context("a worked observation")?,
                });
            }
        }
    }

    // The verdict as it follows an observation in a worked answer ("... orange. Yes"):
    // after "." when this tokenizer merges the space into the word, else after ". ".
    let after = |word: &str| proc.encode_text(&format!(". {word}"));
    let (y, n) = (after("Yes")?, after("No")?);
    let (dot, dot_space) = (proc.encode_text(".")?, proc.encode_text(". ")?);
    let one_after =
        |ids: &[u32], prefix: &[u32]| ids.len() == prefix.len() + 1 && ids.starts_with(prefix);
    let gap = if one_after(&y, &dot) && one_after(&n, &dot) {
        ""
    } else if one_after(&y, &dot_space) && one_after(&n, &dot_space) {
        " "
    } else {
        bail!("\"Yes\" and \"No\" are not single tokens after \". \": {y:?} {n:?}");
    };
    let (yes, no) = (y[y.len() - 1], n[n.len() - 1]);

    // (family, kind, named = asked) -> (n, says yes, sum of logit(Yes) - logit(No))
    let mut stats: BTreeMap<(String, &str, bool), (usize, usize, f64)> = BTreeMap::new();
    for q in &questions {
        let kind = if q.truth.starts_with("There is no ") {
            "no such shape"
        } else {
            "truth"
        };
        let mut forced = vec![(q.truth.clone(), kind)];
        if let Some((shape, seen)) = q
            .truth
            .strip_prefix("The ")
            .and_then(|r| r.split_once(" is "))
        {
            for c in colours.iter().filter(|c| **c != seen) {
                forced.push((format!("The {shape} is {c}"), "other colour"));
            }
        }
        let images: Vec<DynamicImage> = q.image.iter().cloned().collect();
        let user = Message::user_with_images(images.len(), q.user.clone());
        let rendered = proc.render(&[user], true)?;
        for (observation, kind) in forced {
            let named_is_asked = observation.ends_with(&format!(" {}", q.asked));
            let enc = proc.encode_prompt(format!("{rendered}{observation}.{gap}"), &images)?;
            let inputs = ModelInputs::from_encoded(&enc, &dev)?;
            let emb = model.embed(&inputs, Default::default())?;
            let mut cache: Vec<KvSlot> = Vec::new();
            let logits = model
                .prefill(&emb, &mut cache)?
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            let d = (logits[yes as usize] - logits[no as usize]) as f64;
            let e = stats
                .entry((q.family.clone(), kind, named_is_asked))
                .or_default();
            e.0 += 1;
            e.1 += usize::from(d > 0.0);
            e.2 += d;
        }
    }
    println!(
        "{:<15} {:<14} {:<13} {:>4} {:>9} {:>16}",
        "family", "observation", "named = asked", "n", "says Yes", "mean logit Y-N"
    );
    for ((family, kind, same), (n, y, d)) in stats {
        println!(
            "{family:<15} {kind:<14} {:<13} {n:>4} {y:>9} {:>16.2}",
            if same { "yes" } else { "no" },
            d / n as f64
        );
    }
    Ok(())
}
