//! sim.json, the similarity scores `interlace plan` reads, then a plan chosen from them.
#![no_main]

use interlace::prune::{select, SelectOptions, SimilarityScores, Strategy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(scores) = SimilarityScores::from_json_str(text, "sim.json") {
        let _ = scores.to_json_string();
        for strategy in [
            Strategy::Interlace,
            Strategy::ShortGpt,
            Strategy::Consecutive,
        ] {
            if let Ok(plan) = select(&scores, strategy, 0.25, &SelectOptions::default()) {
                let _ = interlace::prune::role_table(&plan, Some(&scores));
            }
        }
    }
});
