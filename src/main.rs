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
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Inspect { model } => {
            print!("{}", interlace::recipes::inspect::describe(&model)?);
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the chain of contexts joined, starting with the file at fault.
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}
