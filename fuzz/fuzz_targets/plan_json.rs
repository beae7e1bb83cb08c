//! plan.json, as `prune` and `finetune` read it.
#![no_main]

use interlace::prune::Plan;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(plan) = Plan::from_json_str(text, "plan.json") {
        let _ = plan.check_num_layers(plan.num_layers);
        let _ = interlace::prune::role_table(&plan, None);
        let _ = plan.to_json_string();
        let kept: Vec<usize> = (0..plan.num_layers.min(64)).collect();
        let _ = plan.in_original_indices(&kept, plan.num_layers.min(64) * 2);
    }
});
