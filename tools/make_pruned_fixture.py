#!/usr/bin/env python3
"""Fixture for pruning surgery (development tool; CI has no Python).

transformers' own answer to "what does tiny-b compute with decoder layers 1 and 4 deleted":
the layers are removed from the loaded model (DeepStack then feeds the first layers of the
shortened stack, as it does when transformers loads a pruned checkpoint) and the fixture
cases are run again. Writes tests/fixtures/cases/tiny-b-drop-1-4/<case>.safetensors with
`input_ids`, `hidden_state.{i}`, `logits`.

    /tmp/venv/bin/python tools/make_pruned_fixture.py
    /tmp/venv/bin/python tools/make_pruned_fixture.py --check DIR   # DIR: our pruned checkpoint

`--check` loads a checkpoint written by `interlace prune` with transformers and compares
its logits with the layer-deleted model's (the check that transformers loads our output).
"""

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import FIX, load_processor, message_images, open_image  # noqa: E402
from transformers import Qwen3VLForConditionalGeneration  # noqa: E402

MODEL = "tiny-b"
DROP = [1, 4]
CASES = ["one_image", "two_images_multiturn"]


def run(model, processor, case):
    meta = json.loads((FIX / "cases" / MODEL / f"{case}.json").read_text())
    messages = meta["messages"]
    prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    images = [open_image(FIX / p) for p in message_images(messages)]
    inputs = processor(text=[prompt], images=images or None, return_tensors="pt")
    model.model.rope_deltas = None
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True, use_cache=False)
    return inputs, out


def deleted_layers_model(src: Path):
    model = Qwen3VLForConditionalGeneration.from_pretrained(src, dtype=torch.float32).eval()
    layers = model.model.language_model.layers
    model.model.language_model.layers = torch.nn.ModuleList(
        [layer for i, layer in enumerate(layers) if i not in DROP]
    )
    model.config.text_config.num_hidden_layers = len(model.model.language_model.layers)
    return model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", type=Path, help="a pruned checkpoint written by interlace prune")
    args = ap.parse_args()
    src = FIX / "models" / MODEL
    processor = load_processor(src, "pil")
    reference = deleted_layers_model(src)
    if args.check:
        ours = Qwen3VLForConditionalGeneration.from_pretrained(args.check, dtype=torch.float32).eval()
        assert ours.config.text_config.num_hidden_layers == 6 - len(DROP)
        for case in CASES:
            _, a = run(reference, processor, case)
            _, b = run(ours, processor, case)
            diff = (a.logits - b.logits).abs().max().item()
            print(f"{case}: transformers loads {args.check}; max |logits diff| vs deleted layers = {diff:.3g}")
            assert diff == 0.0 or diff < 1e-6
        return
    out_dir = FIX / "cases" / f"{MODEL}-drop-{'-'.join(map(str, DROP))}"
    out_dir.mkdir(parents=True, exist_ok=True)
    for case in CASES:
        inputs, out = run(reference, processor, case)
        tensors = {"input_ids": inputs["input_ids"][0].contiguous(), "logits": out.logits[0].contiguous()}
        for i, h in enumerate(out.hidden_states):
            tensors[f"hidden_state.{i}"] = h[0].contiguous()
        save_file(tensors, str(out_dir / f"{case}.safetensors"), metadata={"drop": json.dumps(DROP)})
        print(f"wrote {out_dir / (case + '.safetensors')}: {len(out.hidden_states)} hidden states")


if __name__ == "__main__":
    main()
