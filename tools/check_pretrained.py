#!/usr/bin/env python3
"""Load a checkpoint written by `interlace pretrain` in transformers and print its logits for one
image + text prompt (development tool; compare with `interlace forward` on the same input).

    /tmp/venv/bin/python tools/check_pretrained.py DIR [--image PATH] [--prompt TEXT]

Prints the token ids, the shape of the logits, the last position's top-5 tokens with their
logits and probabilities (as `interlace forward` prints them), and the first values of the last position's logits, in f32.
"""

import argparse
import json
import warnings

import torch
from PIL import Image
from transformers import AutoProcessor, Qwen3VLForConditionalGeneration

warnings.filterwarnings("ignore")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--image", default="tests/fixtures/images/odd_97x61.png")
    ap.add_argument("--prompt", default="Describe the picture.")
    ap.add_argument("--max-new-tokens", type=int, default=8)
    args = ap.parse_args()
    processor = AutoProcessor.from_pretrained(args.dir)
    model = Qwen3VLForConditionalGeneration.from_pretrained(args.dir, dtype=torch.float32).eval()
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": args.prompt}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    image = Image.open(args.image).convert("RGB")
    inputs = processor(text=[text], images=[image], return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs, use_cache=False).logits[0].float()
        gen = model.generate(**inputs, max_new_tokens=args.max_new_tokens, do_sample=False)
    last = logits[-1]
    top = torch.topk(last, 5)
    probs = torch.softmax(last, -1)
    new = gen[0, inputs["input_ids"].shape[1]:].tolist()
    print(json.dumps({
        "input_ids": inputs["input_ids"][0].tolist(),
        "image_grid_thw": inputs["image_grid_thw"].tolist(),
        "logits_shape": list(logits.shape),
        "last_top5": [[int(i), float(v), float(probs[i]), processor.tokenizer.decode([int(i)])]
                      for v, i in zip(top.values, top.indices)],
        "last_logits_first8": [float(x) for x in last[:8]],
        "generated_ids": new,
        "generated_text": processor.tokenizer.decode(new, skip_special_tokens=True),
    }, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
