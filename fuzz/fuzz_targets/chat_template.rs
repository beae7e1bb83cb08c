//! A chat template (Jinja source), compiled and rendered over a conversation with an image.
#![no_main]

use std::collections::BTreeMap;

use interlace::processor::{ChatTemplate, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(template) = ChatTemplate::new(source) else {
        return;
    };
    let messages = [
        Message::text("system", "Be brief."),
        Message::user_with_images(1, "What is this?"),
        Message::text("assistant", "A cat."),
    ];
    let special: BTreeMap<String, String> =
        [("eos_token".to_string(), "<|im_end|>".to_string())].into();
    let _ = template.render(&messages, true, &special, &BTreeMap::new());
});
