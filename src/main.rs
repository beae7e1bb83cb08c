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
