#!/usr/bin/env python3
"""Greedy generations by transformers (development tool; CI has no Python).

For tiny-a, tiny-b and tiny-b with decoder layers 1 and 4 deleted (what `interlace prune`
with drop [1, 4] produces), three prompts: text only, one image, two images. Each is one
user message holding the images first, then the text, rendered with the chat template and
the generation prompt; images are given by path (transformers' `load_image`).
`model.generate(do_sample=False, max_new_tokens=N)` is recorded with the smallest gap
between the best and second-best logit over the generated steps (how robust the greedy
path is to rounding).

    /tmp/venv/bin/python tools/make_generate_fixtures.py
"""

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import FIX, load_processor  # noqa: E402
from transformers import Qwen3VLForConditionalGeneration  # noqa: E402
from transformers.image_utils import load_image  # noqa: E402

CASES = {
    "text": ([], "Tell me a short story about a red square."),
    "one_image": (["photo_83x57.jpg"], "What is in this picture?"),
    "two_images": (["odd_97x61.png", "gray_70x45.png"], "Compare the two images."),
}
MAX_NEW = 24


def models():
    for name in ["tiny-a", "tiny-b"]:
        yield name, name, None
    yield "tiny-b-drop-1-4", "tiny-b", [1, 4]


def drop_layers(model, drop):
    """Deletes decoder layers `drop` as a pruned checkpoint loads: layers renumbered (the KV
    cache is indexed by them), num_hidden_layers and layer_types updated."""
    if not drop:
        return model
    lm = model.model.language_model
    lm.layers = torch.nn.ModuleList([l for i, l in enumerate(lm.layers) if i not in drop])
    model.config.text_config.num_hidden_layers = len(lm.layers)
    for i, layer in enumerate(lm.layers):
        layer.self_attn.layer_idx = i
    lt = getattr(model.config.text_config, "layer_types", None)
    if lt:
        model.config.text_config.layer_types = [t for i, t in enumerate(lt) if i not in drop]
    return model


def generate_case(model, processor, images, prompt):
    """Greedy generation of one prompt: (prompt length, new tokens, top-2 gap per step)."""
    content = [{"type": "image"} for _ in images] + [{"type": "text", "text": prompt}]
    messages = [{"role": "user", "content": content}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    imgs = [load_image(str(FIX / "images" / i)) for i in images]
    inputs = processor(text=[text], images=imgs or None, return_tensors="pt").to(model.device)
    with torch.no_grad():
        gen = model.generate(**inputs, do_sample=False, max_new_tokens=MAX_NEW,
                             output_scores=True, return_dict_in_generate=True)
    new = gen.sequences[0, inputs["input_ids"].shape[1]:].tolist()
    gaps = []
    for s in gen.scores:
        top = torch.topk(s[0].float(), 2).values
        gaps.append(float(top[0] - top[1]))
    return int(inputs["input_ids"].shape[1]), new, gaps


def main():
    out = {"max_new_tokens": MAX_NEW, "cases": {}}
    for label, src, drop in models():
        mdir = FIX / "models" / src
        processor = load_processor(mdir, "pil")
        model = Qwen3VLForConditionalGeneration.from_pretrained(str(mdir), dtype=torch.float32).eval()
        drop_layers(model, drop)
        out["cases"][label] = {"model": src, "drop": drop or [], "cases": {}}
        for case, (images, prompt) in CASES.items():
            prompt_len, new, gaps = generate_case(model, processor, images, prompt)
            out["cases"][label]["cases"][case] = {
                "images": images, "prompt": prompt, "prompt_len": prompt_len,
                "tokens": new, "min_gap": min(gaps), "text": processor.decode(new, skip_special_tokens=True)}
            print(label, case, len(new), "min gap", min(gaps))
    (FIX / "generate.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
