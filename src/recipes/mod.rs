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

/// A subcommand's arguments as its command line defines them: `required` (the flags it
/// cannot do without, as (flag, value) pairs) and every other flag at its default. Lets
/// `run` compose the other commands from their own definitions instead of restating their
/// defaults.
pub fn defaults<A: clap::Args>(required: &[(&str, &std::ffi::OsStr)]) -> anyhow::Result<A> {
    let cmd = A::augment_args(clap::Command::new("interlace"));
    let mut argv: Vec<std::ffi::OsString> = vec!["interlace".into()];
    for (flag, value) in required {
        argv.push(format!("--{flag}").into());
        argv.push(value.into());
    }
    let matches = cmd.try_get_matches_from(argv)?;
    Ok(A::from_arg_matches(&matches)?)
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    #[test]
    fn defaults_come_from_the_command_line_definition() {
        let args: super::finetune::FinetuneArgs = super::defaults(&[
            ("model", OsStr::new("/m")),
            ("data", OsStr::new("/d.json")),
            ("out", OsStr::new("/o")),
        ])
        .unwrap();
        // As `interlace finetune --help` states them.
        assert_eq!((args.lr, args.batch_size, args.grad_accum), (1e-5, 16, 2));
        assert_eq!(
            (args.max_pixels, args.min_pixels, args.max_length),
            (50176, 784, 8192)
        );
        assert_eq!((args.max_grad_norm, args.weight_decay), (1.0, 0.0));
        assert_eq!(args.save_every, None);
        assert_eq!(args.model, std::path::PathBuf::from("/m"));
        // A required flag left out is an error, not a silent default.
        let missing: anyhow::Result<super::finetune::FinetuneArgs> =
            super::defaults(&[("model", OsStr::new("/m"))]);
        assert!(missing.is_err());
    }
}
