//! End-to-end flows behind the subcommands. Everything below them knows nothing of the CLI.

pub mod eval;
pub mod finetune;
pub mod forward;
pub mod generate;
pub mod inspect;
pub mod latency;
pub mod placement;
pub mod plan;
pub mod pretrain;
pub mod prune;
pub mod run;
pub mod similarity;
pub mod synth;

/// Default of `--max-length` for the commands that run the model on a user's input: the
/// attention scores of one layer take heads × length² × 4 bytes, so an unbounded input
/// (a 100 000-character prompt) would ask for hundreds of GB and abort.
pub const DEFAULT_MAX_LENGTH: usize = 8192;

/// Refuses a sequence of `prompt` tokens that would grow by `new` more when the total
/// exceeds `--max-length` (`flag`) or the model's `max_position_embeddings`.
pub fn check_length(
    prompt: usize,
    new: usize,
    flag: usize,
    config: &crate::model::Qwen3VlConfig,
) -> anyhow::Result<()> {
    let model_max = config.text.max_position_embeddings;
    let (limit, why) = if flag <= model_max {
        (flag, "--max-length".to_string())
    } else {
        (model_max, "the model's max_position_embeddings".to_string())
    };
    if prompt + new > limit {
        let plus = if new > 0 {
            format!(" + {new} to generate")
        } else {
            String::new()
        };
        anyhow::bail!(
            "the input is {prompt} tokens{plus}, more than the {limit} that {why} allows"
        );
    }
    Ok(())
}
