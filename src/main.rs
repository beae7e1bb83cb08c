//! The `interlace` command-line program: thin subcommands over the library's recipes.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "interlace",
    version,
    about = "Shrink vision-language models by removing whole decoder layers, then recover them by fine-tuning a few survivors (INTERLACE).",
    long_about = None
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Describe a checkpoint: architecture, layers, parameter counts, dtype, image settings.
    Inspect {
        /// Hugging Face model directory (config.json, safetensors, tokenizer, ...).
        #[arg(long)]
        model: PathBuf,
    },
    /// Run one forward pass: how much each decoder layer changes the hidden state
    /// (mean cosine between its input and output) and the most likely next tokens.
    Forward {
        /// Hugging Face model directory.
        #[arg(long)]
        model: PathBuf,
        /// An image to put before the prompt (repeat for several, in order).
        #[arg(long = "image", value_name = "PATH")]
        images: Vec<PathBuf>,
        /// The user's text.
        #[arg(long)]
        prompt: String,
        /// How many next-token candidates to show.
        #[arg(long, default_value_t = 5)]
        top_k: usize,
    },
    /// Score how much each pack of 1, 2, 3 consecutive decoder layers changes the hidden
    /// state (mean cosine over tokens between the pack's input and output), averaged over a
    /// calibration sample of the data: one forward pass per sample that stops before the
    /// last layer. Writes sim.json for `interlace plan`.
    Similarity {
        /// Hugging Face model directory.
        #[arg(long)]
        model: PathBuf,
        /// LLaVA-style JSON or JSONL (image paths relative to the file).
        #[arg(long, value_name = "FILE")]
        data: PathBuf,
        /// Share of the samples to use, chosen at random with --seed.
        #[arg(long, default_value_t = 0.1)]
        portion: f64,
        /// Use this many samples instead of --portion.
        #[arg(long, value_name = "N")]
        samples: Option<usize>,
        /// Seed of the sample choice.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Largest pack size to score.
        #[arg(long, default_value_t = 3)]
        max_pack: usize,
        /// Where to write sim.json.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Choose the layers to drop and to fine-tune from similarity scores, write plan.json
    /// and print every layer's role with its scores s1, s2, s3.
    ///
    /// INTERLACE walks layer triplets by s3 (most redundant first), drops the more
    /// redundant of the first two layers, fine-tunes the other and freezes the third as an
    /// anchor; pairs by s2 fill in when triplets run out.
    Plan {
        /// sim.json from `interlace similarity`.
        #[arg(long, value_name = "FILE")]
        similarity: Option<PathBuf>,
        /// Reference scripts' pack-1 score file (instead of --similarity).
        #[arg(long, value_name = "FILE")]
        pack1: Option<PathBuf>,
        /// Reference scripts' pack-2 score file.
        #[arg(long, value_name = "FILE", requires = "pack1")]
        pack2: Option<PathBuf>,
        /// Reference scripts' pack-3 score file.
        #[arg(long, value_name = "FILE", requires = "pack2")]
        pack3: Option<PathBuf>,
        /// Share of decoder layers to drop: floor(layers x ratio) layers, 0 <= ratio < 1.
        #[arg(long, default_value_t = 0.25)]
        ratio: f64,
        /// interlace | interlace-oa | interlace-tn | random | consecutive | shortgpt | sleb
        #[arg(long, default_value = "interlace")]
        strategy: interlace::prune::Strategy,
        /// Which kept layers to fine-tune: paired (the strategy's own), next (the layer after
        /// each dropped one), all, none.
        #[arg(long, default_value = "paired")]
        finetune_policy: interlace::prune::FinetunePolicy,
        /// Seed of the random strategy.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Where to write plan.json.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Delete the plan's dropped decoder layers from a checkpoint and write the smaller
    /// checkpoint (layers renumbered, num_hidden_layers updated, every other file copied,
    /// the plan recorded as interlace_plan.json). Pruning a pruned checkpoint composes.
    Prune {
        /// Hugging Face model directory to prune.
        #[arg(long)]
        model: PathBuf,
        /// plan.json from `interlace plan`, in the layer numbering of --model.
        #[arg(long, value_name = "FILE")]
        plan: PathBuf,
        /// Output directory (must not exist yet).
        #[arg(long)]
        out: PathBuf,
    },
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Inspect { model } => {
            print!("{}", interlace::recipes::inspect::describe(&model)?);
        }
        Command::Forward {
            model,
            images,
            prompt,
            top_k,
        } => {
            let args = interlace::recipes::forward::ForwardArgs {
                model,
                images,
                prompt,
                top_k,
            };
            print!("{}", interlace::recipes::forward::run(&args)?);
        }
        Command::Similarity {
            model,
            data,
            portion,
            samples,
            seed,
            max_pack,
            out,
        } => {
            let args = interlace::recipes::similarity::SimilarityArgs {
                model,
                data,
                portion,
                samples,
                seed,
                max_pack,
                out,
            };
            print!("{}", interlace::recipes::similarity::run(&args)?);
        }
        Command::Plan {
            similarity,
            pack1,
            pack2,
            pack3,
            ratio,
            strategy,
            finetune_policy,
            seed,
            out,
        } => {
            let args = interlace::recipes::plan::PlanArgs {
                similarity,
                pack_files: [pack1, pack2, pack3].into_iter().flatten().collect(),
                ratio,
                strategy,
                finetune_policy,
                seed,
                out,
            };
            print!("{}", interlace::recipes::plan::run(&args)?);
        }
        Command::Prune { model, plan, out } => {
            print!("{}", interlace::recipes::prune::run(&model, &plan, &out)?);
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", interlace::error_line(&e));
            ExitCode::FAILURE
        }
    }
}
