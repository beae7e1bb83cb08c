//! The `interlace` command-line program: thin subcommands over the library's recipes.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// `interlace --version`: the version and the backends this binary was built with.
#[cfg(feature = "cuda")]
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (backends: cpu, cuda; CUDA kernels for compute capability ",
    env!("INTERLACE_CUDA_COMPUTE_CAP"),
    ")"
);
#[cfg(not(feature = "cuda"))]
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (backends: cpu)");

#[derive(Parser)]
#[command(
    name = "interlace",
    version = VERSION,
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
        /// Hugging Face model directory (config.json, safetensors, tokenizer, ...), or a
        /// Hub repository id in the local cache (Org/Name[@revision]).
        #[arg(long, value_parser = interlace::hub::model_arg)]
        model: PathBuf,
    },
    /// Run one forward pass: how much each decoder layer changes the hidden state
    /// (mean cosine between its input and output) and the most likely next tokens.
    Forward(interlace::recipes::forward::ForwardArgs),
    /// Score how much each pack of 1, 2, 3 consecutive decoder layers changes the hidden
    /// state (mean cosine over tokens between the pack's input and output), averaged over a
    /// calibration sample of the data: one forward pass per sample that stops before the
    /// last layer. Writes sim.json for `interlace plan`.
    Similarity(interlace::recipes::similarity::SimilarityArgs),
    /// Choose the layers to drop and to fine-tune from similarity scores, write plan.json
    /// and print every layer's role with its scores s1, s2, s3.
    ///
    /// INTERLACE walks layer triplets by s3 (most redundant first), drops the more
    /// redundant of the first two layers, fine-tunes the other and freezes the third as an
    /// anchor; pairs by s2 fill in when triplets run out.
    Plan(interlace::recipes::plan::PlanArgs),
    /// Delete the plan's dropped decoder layers from a checkpoint and write the smaller
    /// checkpoint (layers renumbered, num_hidden_layers updated, every other file copied,
    /// the plan recorded as interlace_plan.json). Pruning a pruned checkpoint composes.
    Prune {
        /// Hugging Face model directory to prune, or a Hub repository id in the local cache
        /// (Org/Name[@revision]).
        #[arg(long, value_parser = interlace::hub::model_arg)]
        model: PathBuf,
        /// plan.json from `interlace plan`, in the layer numbering of --model.
        #[arg(long, value_name = "FILE")]
        plan: PathBuf,
        /// Output directory (must not exist yet).
        #[arg(long)]
        out: PathBuf,
    },
    /// Fine-tune exactly the plan's fine-tune layers (everything else frozen) on a small
    /// share of the data: next-token cross-entropy on the assistant turns, AdamW with a
    /// cosine schedule and linear warm-up, gradient clipping and accumulation.
    ///
    /// Writes a complete checkpoint with interlace_plan.json, training_log.jsonl (one line
    /// per optimizer step) and loss.svg. With --save-every N, a run that is killed can be
    /// continued with --resume (same flags).
    Finetune(interlace::recipes::finetune::FinetuneArgs),
    /// Answer one prompt greedily (KV cache): the images come first in one user message,
    /// then the text, rendered with the chat template. Prints only the generated text.
    Generate(interlace::recipes::generate::GenerateArgs),
    /// Time to first token (vision tower + prefill) and decoding tokens/s, medians over
    /// several runs; with --compare DIR also a second model (e.g. the pruned one) and the
    /// best speed-up its removed layers allow.
    Latency(interlace::recipes::latency::LatencyArgs),
    /// Score a model on benchmarks in VLMEvalKit's TSV format, the way VLMEvalKit scores
    /// Qwen3-VL without an LLM judge, and write report.json and report.md.
    ///
    /// Each row's images and question go into one user message (images first) with
    /// Qwen3-VL's VLMEvalKit prompt: multiple choice ends with "Answer with the option letter
    /// only.", yes/no questions with " Please answer yes or no.", open questions with
    /// "\nPlease answer concisely with short words or phrases when possible.". Answers are
    /// decoded greedily and scored by VLMEvalKit's rules: option letter or option text
    /// (MMBench and CCBench circularly), yes/no extraction with accuracy, precision, recall
    /// and F1 (POPE's score is F1), VQA accuracy over the human answers, ChartQA relaxed
    /// accuracy (5 %), OCRBench containment, and counting (first number equals the answer).
    ///
    /// Rows that cannot be evaluated (no answer, an answer letter that is not an option, bad
    /// base64, an undecodable image, ...) are reported and counted; the rest still run. With
    /// --baseline, the report adds each score ÷ the baseline's and their mean.
    ///
    /// Example:
    ///   interlace eval --model Qwen3-VL-2B-pruned --bench MMBench_DEV_EN.tsv --bench POPE.tsv
    ///       --bench my_counts.tsv:count --baseline dense/report.json --out pruned/report.json
    #[command(verbatim_doc_comment)]
    Eval(interlace::recipes::eval::EvalArgs),
    /// The whole pipeline in one command: similarity -> plan -> prune -> fine-tune ->
    /// evaluation of the dense, pruned and fine-tuned models -> a report directory
    /// (report.md/.json, sim.svg heat-map, plan.svg, loss.svg, scores.svg).
    ///
    /// Without flags it runs on the built-in demo model (demo/model) with the synthetic data
    /// set of `interlace synth` (generated into OUT/data). Every stage writes into --out and
    /// is skipped when its output is already there: run the same command again to continue
    /// a stopped run. Fine-tuning runs 200 steps of 32 conversations at lr 2e-4 on the demo
    /// (what heals it, demo/README.md), the paper's 1 % of every source at 1e-5 with --data.
    /// With --compare it adds the paper's comparison (Dense, Dense-FT, SLEB, SLEB-FT,
    /// ShortGPT, consecutive, random, interlace-oa, interlace-tn, INTERLACE at 25 % and
    /// 10 %), with the same fine-tuning data for every fine-tuned row; --sweep measures
    /// quality against time to first token over ratios; --distill and --rounds heal by
    /// distillation from the dense model and in several rounds.
    ///
    /// Examples:
    ///   interlace run
    ///   interlace run --compare --out demo-compare
    ///   interlace run --sweep 0.1,0.2,0.25,0.34 --out demo-sweep
    ///   interlace run --distill --rounds 3 --out demo-healing
    ///   interlace run --model Qwen3-VL-2B-Instruct --data FineVision/ --bench MMBench_DEV_EN.tsv
    ///       --bench POPE.tsv --out qwen2b-run
    #[command(verbatim_doc_comment)]
    Run(interlace::recipes::run::RunArgs),
    /// Generate synthetic images and questions for pretraining and evaluating tiny VLMs:
    /// eight task families (word reading, bar charts, shape/colour VQA, multiple choice on
    /// position/size/colour, POPE-style yes/no, a small target in clutter, counting, and
    /// hint-plus-image reasoning), each as a FineVision training source
    /// (OUT/train/<Family>/part-00000.parquet) and a VLMEvalKit benchmark
    /// (OUT/bench/<Family>.tsv), with OUT/synth.json listing them (task, category, chance).
    ///
    /// Training prompts are exactly the prompts `interlace eval` shows, answers exactly what
    /// its scorer expects. Deterministic: the same --seed gives byte-identical files.
    ///
    /// Example:
    ///   interlace synth --out synth --train-rows 4000 --bench-rows 100
    ///   interlace eval --model M --bench synth/bench/SynthPOPE.tsv --out report.json
    #[command(verbatim_doc_comment)]
    Synth(interlace::recipes::synth::SynthArgs),
    /// Train a small Qwen3-VL from scratch with every tensor trainable: a byte-level BPE
    /// tokenizer learnt from the data, a checkpoint of the chosen shape (`demo`: about 12 M
    /// parameters) initialised from --seed, then AdamW with weight decay, cosine schedule,
    /// clipping. Writes a complete checkpoint (bf16 by default) that every other command and
    /// transformers load, with training_log.jsonl and loss.svg; --save-every/--resume as for
    /// finetune.
    Pretrain(interlace::recipes::pretrain::PretrainArgs),
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Inspect { model } => {
            print!("{}", interlace::recipes::inspect::describe(&model)?);
        }
        Command::Forward(args) => print!("{}", interlace::recipes::forward::run(&args)?),
        Command::Similarity(args) => print!("{}", interlace::recipes::similarity::run(&args)?),
        Command::Plan(args) => print!("{}", interlace::recipes::plan::run(&args)?),
        Command::Finetune(args) => print!("{}", interlace::recipes::finetune::run(&args)?),
        Command::Generate(args) => print!("{}", interlace::recipes::generate::run(&args)?),
        Command::Latency(args) => print!("{}", interlace::recipes::latency::run(&args)?),
        Command::Eval(args) => print!("{}", interlace::recipes::eval::run(&args)?),
        Command::Run(args) => print!("{}", interlace::recipes::run::run(&args)?),
        Command::Synth(args) => print!("{}", interlace::recipes::synth::run(&args)?),
        Command::Pretrain(args) => print!("{}", interlace::recipes::pretrain::run(&args)?),
        Command::Prune { model, plan, out } => {
            print!("{}", interlace::recipes::prune::run(&model, &plan, &out)?);
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    interlace::tune_process();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // A value a parser refused (a model or data set not found, say) already names the
        // argument and the problem: one line, without clap's usage hint.
        Err(e) if e.kind() == clap::error::ErrorKind::ValueValidation => {
            let text = e.render().to_string();
            eprintln!("{}", text.lines().next().unwrap_or_default());
            return ExitCode::from(2);
        }
        Err(e) => e.exit(),
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", interlace::error_line(&e));
            ExitCode::FAILURE
        }
    }
}
