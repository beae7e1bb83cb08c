//! bf16 on the CPU against transformers' own bf16 run (tests/fixtures/bf16, by
//! tools/make_bf16_fixtures.py): the precision a GPU runs in, checked where every machine
//! can run it.
//!
//! Tolerances. bf16 keeps 8 significant bits; the two implementations round in different
//! places (our attention scores are rounded to bf16 before an f32 softmax, as in
//! transformers' eager attention; its SDPA kernel keeps them in f32; fused kernels against separate ops), and on these
//! tiny random models transformers' own bf16 hidden states are 2-3 % (of the largest
//! value) away from its f32 ones. So two checks, each of which a wrong op fails by far:
//! - ours against transformers' bf16: within 6e-2 relative (seen: at most 3.4e-2 for a
//!   hidden state, 2.8e-2 for logits);
//! - ours against transformers' f32 at most twice as far as transformers' bf16 is from its
//!   f32 (seen: at most 1.45 times): bf16 costs us at most twice the precision it costs transformers.

mod common;

use candle_core::{DType, Device};
use common::*;
use interlace::model::device::Placement;

/// Worst hidden state, relative to its largest value; and the logits.
const TOL: f32 = 6e-2;
/// Our bf16 error against f32 may be at most this many times transformers' own.
const PRECISION_RATIO: f32 = 2.0;
/// Greedy tokens must agree while transformers' best logit leads the second by this much.
const MIN_GAP: f64 = 0.1;

#[test]
fn bf16_hidden_states_and_logits_match_transformers_bf16() {
    assert_bf16_forward_matches(&Device::Cpu, &bf16_reference(false), TOL, PRECISION_RATIO);
}

#[test]
fn bf16_greedy_generation_follows_transformers_bf16() {
    let expected = fixture_json("bf16/generate.json");
    let placement = Placement {
        device: Device::Cpu,
        dtype: DType::BF16,
    };
    for batched in [false, true] {
        let (cases, tokens) = check_generations(&expected, &placement, MIN_GAP, batched);
        eprintln!("bf16 greedy (batched: {batched}): {tokens} tokens of {cases} cases identical");
        assert!(tokens > cases * 4, "too few tokens compared: {tokens}");
    }
}
