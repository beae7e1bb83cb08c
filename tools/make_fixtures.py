#!/usr/bin/env python3
"""Generate the test fixtures of `interlace` under tests/fixtures/.

Development tool only (CI has no Python). Everything is built locally and
deterministically: a byte-level BPE tokenizer trained on text embedded below,
two tiny randomly initialised Qwen3-VL checkpoints in Hugging Face layout,
images of awkward sizes, and transformers' outputs for them (image
preprocessing, token ids, M-RoPE position ids, hidden states, logits, vision
tower outputs, greedy generations).

Usage (from the repository root):

    /tmp/venv/bin/python tools/make_fixtures.py

It deletes and rewrites tests/fixtures/{models,images,processor,cases,tokenizer}
and tests/fixtures/README.md. See that README for the layout and findings.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import PIL
import torch
import torch.nn as nn
from PIL import Image
from safetensors.torch import load_file, save_file

import tokenizers
import transformers
from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors, trainers
from tokenizers.models import BPE
from transformers.image_transforms import convert_to_rgb
from transformers import (
    AutoImageProcessor,
    AutoProcessor,
    AutoTokenizer,
    GenerationConfig,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
)

warnings.filterwarnings("ignore")
transformers.logging.set_verbosity_error()

T0 = time.time()
ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"
TEMPLATE_PATH = ROOT / "tools" / "qwen3_vl_chat_template.jinja"
SEED = 1234

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------

# Qwen2 pre-tokenizer regex, identical to transformers.models.qwen2.tokenization_qwen2.PRETOKENIZE_REGEX
# and to the `Split` pattern in published Qwen2/2.5/3(-VL) tokenizer.json files.
PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

CORPUS = """\
The picture shows a small red boat resting on a quiet lake. Behind the boat there are tall green trees,
and the sky above them is pale blue with a few white clouds. A person in a yellow jacket sits near the
front of the boat, holding a fishing rod, and looks toward the far shore.

Describe the image in one sentence. What is in the top left corner of this picture? How many objects can
you count, and what colors are they? Please answer briefly, then explain your reasoning step by step.

You are a helpful assistant. You look at images carefully and answer questions about them. When a
question cannot be answered from the image, you say so instead of guessing. Keep your answers short.

A chart on the wall compares the sales of three shops over twelve months. The first shop sold 120 items
in January and 245 items in December; the second shop grew from 80 to 310; the third stayed near 150.
The numbers 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 appear along the bottom axis, and the title reads "Sales 2024".

In the second image a cat is sleeping on a wooden table next to an open book and a cup of tea. Light
comes through the window on the right side, so the left side of the room is darker. The cat's fur is
grey with black stripes, and its tail hangs over the edge of the table.

Layer pruning removes whole decoder layers from a large model, then fine-tunes a few of the layers that
remain. The hidden states of neighbouring layers are often very similar, which means some layers change
the representation only a little. Those layers are good candidates for removal. Isn't that interesting?
We'll see: it's what they've shown, and I'd say you're right, I'm sure.

  Indented text, tabs\tand    runs of spaces, line breaks\r\nand punctuation!? (parentheses) [brackets]
{braces} <angle> "quotes" 'single' -- dashes ... ellipsis; colon: semicolon; 3.14159 + 2.71828 = 5.85987
Unicode too: café, naïve, Zürich, São Paulo, 東京, Москва, emoji 🙂 and accents like é vs e\u0301.
"""

VOCAB_TARGET = 400  # BPE vocabulary before added tokens (256 byte symbols + merges)

# Added tokens, in the order (and with the `special` flags) of published Qwen2.5/Qwen3-VL tokenizers,
# so that <|image_pad|> etc. get ids at the end of the vocabulary exactly as in the real files.
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
NON_SPECIAL_ADDED = ["<tool_call>", "</tool_call>", "<think>", "</think>"]


def build_tokenizer() -> Tokenizer:
    tok = Tokenizer(
        BPE(
            unk_token=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
            byte_fallback=False,
        )
    )
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_TARGET,
        min_frequency=2,
        show_progress=False,
        special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([CORPUS] * 3, trainer=trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in NON_SPECIAL_ADDED])
    return tok


def write_tokenizer_files(tok: Tokenizer, out: Path, model_max_length: int, with_vocab_merges: bool) -> None:
    tok.save(str(out / "tokenizer.json"))
    added_decoder = {}
    for t in SPECIAL_TOKENS + NON_SPECIAL_ADDED:
        added_decoder[str(tok.token_to_id(t))] = {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": t in SPECIAL_TOKENS,
        }
    # Same keys as the tokenizer_config.json of published Qwen3-VL checkpoints.
    cfg = {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": added_decoder,
        "additional_special_tokens": [
            "<|im_start|>",
            "<|im_end|>",
            "<|object_ref_start|>",
            "<|object_ref_end|>",
            "<|box_start|>",
            "<|box_end|>",
            "<|quad_start|>",
            "<|quad_end|>",
            "<|vision_start|>",
            "<|vision_end|>",
            "<|vision_pad|>",
            "<|image_pad|>",
            "<|video_pad|>",
        ],
        "bos_token": None,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": model_max_length,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    dump_json(cfg, out / "tokenizer_config.json")
    if with_vocab_merges:
        tj = json.loads(tok.to_str())
        dump_json(tj["model"]["vocab"], out / "vocab.json", indent=None)
        with open(out / "merges.txt", "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n")
            for m in tj["model"]["merges"]:
                f.write((" ".join(m) if isinstance(m, list) else m) + "\n")


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------


def make_image_array(w: int, h: int, rng: np.random.Generator, channels: int = 3) -> np.ndarray:
    """Gradients + noise + a few hard-edged shapes, uint8 [h, w, channels]."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    u = xx / max(w - 1, 1)
    v = yy / max(h - 1, 1)
    base = np.stack(
        [
            255 * u,
            255 * v,
            255 * (0.5 + 0.5 * np.sin(2 * math.pi * (u * 1.7 + v * 2.3))),
        ],
        axis=-1,
    )
    base += rng.normal(0, 18, size=base.shape)
    # a filled circle and a rectangle with saturated colours (sharp edges stress the resampler)
    cx, cy, r = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h, max(2.0, 0.3 * min(w, h))
    disk = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    base[disk] = rng.uniform(0, 255, size=3)
    x0, y0 = int(rng.integers(0, max(1, w // 2))), int(rng.integers(0, max(1, h // 2)))
    base[y0 : y0 + max(1, h // 3), x0 : x0 + max(1, w // 4)] = [250, 10, 40]
    # a one-pixel checkerboard strip
    base[:, : max(1, w // 10)][((xx + yy) % 2 == 0)[:, : max(1, w // 10)]] = 0
    img = np.clip(np.rint(base), 0, 255).astype(np.uint8)
    if channels == 1:
        img = np.clip(np.rint(0.299 * img[..., 0] + 0.587 * img[..., 1] + 0.114 * img[..., 2]), 0, 255).astype(
            np.uint8
        )
    return img


# (file name, width, height, kind)
IMAGES = [
    ("tiny_13x9.png", 13, 9, "rgb"),
    ("wide_150x12.png", 150, 12, "rgb"),
    ("tall_11x170.png", 11, 170, "rgb"),
    ("odd_97x61.png", 97, 61, "rgb"),
    ("rgba_45x38.png", 45, 38, "rgba"),
    ("gray_70x45.png", 70, 45, "gray"),
    ("photo_83x57.jpg", 83, 57, "jpeg"),
]


def write_images(out: Path) -> None:
    rng = np.random.default_rng(SEED)
    for name, w, h, kind in IMAGES:
        if kind == "gray":
            Image.fromarray(make_image_array(w, h, rng, channels=1), mode="L").save(out / name, optimize=False)
        elif kind == "rgba":
            rgb = make_image_array(w, h, rng)
            yy, xx = np.mgrid[0:h, 0:w]
            alpha = np.clip(255 * (xx / (w - 1)) * 0.8 + 40 * ((yy // 6) % 2), 0, 255).astype(np.uint8)
            alpha[:, :3] = 0  # fully transparent columns
            alpha[:, -3:] = 255  # fully opaque columns
            Image.fromarray(np.dstack([rgb, alpha]), mode="RGBA").save(out / name, optimize=False)
        elif kind == "jpeg":
            Image.fromarray(make_image_array(w, h, rng), mode="RGB").save(
                out / name, quality=90, subsampling=2, optimize=False
            )
        else:
            Image.fromarray(make_image_array(w, h, rng), mode="RGB").save(out / name, optimize=False)


def open_image(path: Path) -> Image.Image:
    """How the fixtures feed images to the processor: PIL.Image.open, pixels loaded, mode kept (RGBA, L, ...).

    The image processor itself then converts to RGB (`convert_to_rgb`: alpha composited onto white,
    grayscale replicated)."""
    img = Image.open(path)
    img.load()
    return img


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------

MODELS = {
    "tiny-a": dict(
        text=dict(
            hidden_size=64,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            intermediate_size=96,
            rope_theta=5000.0,
            mrope_section=[4, 2, 2],
            rms_norm_eps=1e-6,
            max_position_embeddings=4096,
            vocab_pad_to=32,  # vocab_size = tokenizer length rounded up (published checkpoints pad too)
        ),
        vision=dict(
            depth=3,
            hidden_size=32,
            num_heads=2,
            intermediate_size=64,
            patch_size=16,
            temporal_patch_size=2,
            spatial_merge_size=2,
            num_position_embeddings=64,
            deepstack_visual_indexes=[0, 1],
        ),
        tie_word_embeddings=True,
        rope_style="legacy",  # rope_scaling + rope_theta, exactly as published Qwen3-VL config.json files
        shard_size=None,
        # preprocessor_config.json in the published Qwen3-VL style: `size` dict, "...Fast" class name
        image_processor_type="Qwen2VLImageProcessorFast",
        pixels_style="size",
        min_pixels=32 * 32 * 2,
        max_pixels=32 * 32 * 5,
        chat_template_location="chat_template.jinja",
        tokenizer_vocab_merges=True,
        model_max_length=262144,
        generation=dict(
            do_sample=True, temperature=0.7, top_k=20, top_p=0.8, repetition_penalty=1.0, eos="list"
        ),
        weight_gain=1.0,
        # tied: a smaller embedding std keeps the input token from dominating its own logit (with
        # N(0, 1) greedy generation just repeats one token)
        embed_std=0.25,
    ),
    "tiny-b": dict(
        text=dict(
            hidden_size=48,
            num_hidden_layers=6,
            num_attention_heads=6,
            num_key_value_heads=1,
            head_dim=24,  # != hidden_size / num_attention_heads (= 8)
            intermediate_size=72,
            rope_theta=20000.0,
            mrope_section=[6, 3, 3],
            rms_norm_eps=1e-5,
            max_position_embeddings=2048,
            vocab_pad_to=1,  # vocab_size == tokenizer length
        ),
        vision=dict(
            depth=4,
            hidden_size=24,
            num_heads=3,
            intermediate_size=56,
            patch_size=8,
            temporal_patch_size=2,
            spatial_merge_size=2,
            num_position_embeddings=144,
            deepstack_visual_indexes=[1, 2, 3],
        ),
        tie_word_embeddings=False,
        rope_style="rope_parameters",  # what the installed transformers writes
        shard_size="600KB",
        # preprocessor_config.json in the Qwen2/2.5-VL style: top-level min_pixels / max_pixels, no `size`
        image_processor_type="Qwen2VLImageProcessor",
        pixels_style="min_max_pixels",
        min_pixels=16 * 16 * 2,
        max_pixels=16 * 16 * 8,
        chat_template_location="chat_template.json",
        tokenizer_vocab_merges=False,
        model_max_length=32768,
        generation=dict(do_sample=False, eos="int"),
        weight_gain=1.0,
        embed_std=1.0,
    ),
}


def dump_json(obj, path: Path, indent=2) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=indent, ensure_ascii=False)
        f.write("\n")


def token_ids(tok: Tokenizer) -> dict:
    return {t: tok.token_to_id(t) for t in SPECIAL_TOKENS + NON_SPECIAL_ADDED}


def build_config(spec: dict, tok: Tokenizer) -> Qwen3VLConfig:
    t, v = spec["text"], spec["vision"]
    ids = token_ids(tok)
    n_tok = tok.get_vocab_size(with_added_tokens=True)
    pad = t["vocab_pad_to"]
    vocab_size = ((n_tok + pad - 1) // pad) * pad
    text_config = dict(
        vocab_size=vocab_size,
        hidden_size=t["hidden_size"],
        intermediate_size=t["intermediate_size"],
        num_hidden_layers=t["num_hidden_layers"],
        num_attention_heads=t["num_attention_heads"],
        num_key_value_heads=t["num_key_value_heads"],
        head_dim=t["head_dim"],
        hidden_act="silu",
        max_position_embeddings=t["max_position_embeddings"],
        rms_norm_eps=t["rms_norm_eps"],
        attention_bias=False,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": t["rope_theta"],
            "mrope_section": list(t["mrope_section"]),
            "mrope_interleaved": True,
        },
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
    )
    vision_config = dict(
        depth=v["depth"],
        hidden_size=v["hidden_size"],
        hidden_act="gelu_pytorch_tanh",
        intermediate_size=v["intermediate_size"],
        num_heads=v["num_heads"],
        in_channels=3,
        patch_size=v["patch_size"],
        spatial_merge_size=v["spatial_merge_size"],
        temporal_patch_size=v["temporal_patch_size"],
        out_hidden_size=t["hidden_size"],
        num_position_embeddings=v["num_position_embeddings"],
        deepstack_visual_indexes=list(v["deepstack_visual_indexes"]),
    )
    cfg = Qwen3VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=spec["tie_word_embeddings"],
    )
    cfg.text_config.tie_word_embeddings = spec["tie_word_embeddings"]
    return cfg


@torch.no_grad()
def reinit_weights(model: nn.Module, gain: float, embed_std: float) -> None:
    """Replace the default init (std 0.02, norms = 1, which makes every layer a near no-op) by
    O(1)-scale weights so that every layer substantially changes the residual stream."""
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    for name, mod in model.named_modules():
        if tied and name == "lm_head":
            continue  # shares its weight with embed_tokens (initialised below as an embedding)
        if isinstance(mod, (nn.Linear, nn.Conv3d)):
            fan_in = mod.weight[0].numel()
            mod.weight.normal_(0.0, gain / math.sqrt(fan_in))
            if mod.bias is not None:
                mod.bias.normal_(0.0, 0.1)
        elif isinstance(mod, nn.Embedding):
            if name.endswith("pos_embed"):
                mod.weight.normal_(0.0, 0.5)
            else:
                mod.weight.normal_(0.0, embed_std)
        elif isinstance(mod, nn.LayerNorm):
            mod.weight.copy_(1.0 + 0.2 * torch.randn_like(mod.weight))
            mod.bias.normal_(0.0, 0.1)
        elif hasattr(mod, "weight") and isinstance(getattr(mod, "weight"), nn.Parameter) and mod.weight.ndim == 1:
            # RMSNorm (input/post-attention/final norm, q_norm, k_norm)
            mod.weight.copy_(1.0 + 0.2 * torch.randn_like(mod.weight))
    if tied:
        model.tie_weights()
        assert model.lm_head.weight.data_ptr() == model.model.language_model.embed_tokens.weight.data_ptr()


def published_style_config(cfg_json: dict) -> dict:
    """Rewrite a config.json written by the installed transformers into the layout of published
    Qwen3-VL checkpoints (transformers 4.57): RoPE as text_config.rope_scaling + rope_theta, the
    vision sub-config carrying model_type "qwen3_vl", `torch_dtype` / `dtype` keys."""
    text = dict(cfg_json["text_config"])
    rp = text.pop("rope_parameters")
    text["rope_scaling"] = {
        "mrope_interleaved": rp["mrope_interleaved"],
        "mrope_section": rp["mrope_section"],
        "rope_type": rp["rope_type"],
    }
    text["rope_theta"] = rp["rope_theta"]
    keep_text = [
        "attention_bias",
        "attention_dropout",
        "bos_token_id",
        "dtype",
        "eos_token_id",
        "head_dim",
        "hidden_act",
        "hidden_size",
        "initializer_range",
        "intermediate_size",
        "max_position_embeddings",
        "model_type",
        "num_attention_heads",
        "num_hidden_layers",
        "num_key_value_heads",
        "rms_norm_eps",
        "rope_scaling",
        "rope_theta",
        "tie_word_embeddings",
        "use_cache",
        "vocab_size",
    ]
    text["dtype"] = "float32"
    text["tie_word_embeddings"] = cfg_json.get("tie_word_embeddings", True)
    text = {k: text[k] for k in keep_text if k in text}
    vis = dict(cfg_json["vision_config"])
    keep_vis = [
        "deepstack_visual_indexes",
        "depth",
        "hidden_act",
        "hidden_size",
        "in_channels",
        "initializer_range",
        "intermediate_size",
        "model_type",
        "num_heads",
        "num_position_embeddings",
        "out_hidden_size",
        "patch_size",
        "spatial_merge_size",
        "temporal_patch_size",
    ]
    vis["model_type"] = "qwen3_vl"  # sic: published files use the parent model_type here
    vis = {k: vis[k] for k in keep_vis if k in vis}
    return {
        "architectures": ["Qwen3VLForConditionalGeneration"],
        "image_token_id": cfg_json["image_token_id"],
        "model_type": "qwen3_vl",
        "text_config": text,
        "tie_word_embeddings": cfg_json.get("tie_word_embeddings", True),
        "torch_dtype": "float32",
        "transformers_version": "4.57.0",
        "video_token_id": cfg_json["video_token_id"],
        "vision_config": vis,
        "vision_end_token_id": cfg_json["vision_end_token_id"],
        "vision_start_token_id": cfg_json["vision_start_token_id"],
    }


def write_processor_files(spec: dict, out: Path, template: str) -> None:
    v = spec["vision"]
    pre = {}
    if spec["pixels_style"] == "size":
        pre["size"] = {"longest_edge": spec["max_pixels"], "shortest_edge": spec["min_pixels"]}
    else:
        pre["min_pixels"] = spec["min_pixels"]
        pre["max_pixels"] = spec["max_pixels"]
    pre.update(
        {
            "patch_size": v["patch_size"],
            "temporal_patch_size": v["temporal_patch_size"],
            "merge_size": v["spatial_merge_size"],
            "image_mean": [0.5, 0.5, 0.5],
            "image_std": [0.5, 0.5, 0.5],
            "processor_class": "Qwen3VLProcessor",
            "image_processor_type": spec["image_processor_type"],
        }
    )
    dump_json(pre, out / "preprocessor_config.json")
    f = v["patch_size"] * v["spatial_merge_size"]
    dump_json(
        {
            "size": {"longest_edge": f * f * 4 * 24, "shortest_edge": f * f * 4},
            "patch_size": v["patch_size"],
            "temporal_patch_size": v["temporal_patch_size"],
            "merge_size": v["spatial_merge_size"],
            "image_mean": [0.5, 0.5, 0.5],
            "image_std": [0.5, 0.5, 0.5],
            "processor_class": "Qwen3VLProcessor",
            "video_processor_type": "Qwen3VLVideoProcessor",
        },
        out / "video_preprocessor_config.json",
    )
    if spec["chat_template_location"] == "chat_template.jinja":
        with open(out / "chat_template.jinja", "w", encoding="utf-8") as fh:
            fh.write(template)
    elif spec["chat_template_location"] == "chat_template.json":
        dump_json({"chat_template": template}, out / "chat_template.json")
    else:
        raise ValueError(spec["chat_template_location"])


def write_generation_config(spec: dict, tok: Tokenizer, out: Path) -> None:
    ids = token_ids(tok)
    g = spec["generation"]
    eos = [ids["<|im_end|>"], ids["<|endoftext|>"]] if g["eos"] == "list" else ids["<|im_end|>"]
    kw = {k: val for k, val in g.items() if k != "eos"}
    gc = GenerationConfig(bos_token_id=ids["<|endoftext|>"], pad_token_id=ids["<|endoftext|>"], eos_token_id=eos, **kw)
    gc.save_pretrained(out)


def build_model_dir(name: str, spec: dict, tok: Tokenizer, template: str) -> Path:
    out = FIX / "models" / name
    out.mkdir(parents=True, exist_ok=True)
    cfg = build_config(spec, tok)
    torch.manual_seed(SEED + (0 if name == "tiny-a" else 1))
    model = Qwen3VLForConditionalGeneration(cfg).to(torch.float32).eval()
    reinit_weights(model, spec["weight_gain"], spec["embed_std"])
    kwargs = {}
    if spec["shard_size"]:
        kwargs["max_shard_size"] = spec["shard_size"]
    model.save_pretrained(out, **kwargs)
    # generation_config.json: written explicitly (published-like values), replacing the derived one
    write_generation_config(spec, tok, out)
    if spec["rope_style"] == "legacy":
        with open(out / "config.json", encoding="utf-8") as f:
            cj = json.load(f)
        dump_json(published_style_config(cj), out / "config.json")
    write_tokenizer_files(tok, out, spec["model_max_length"], spec["tokenizer_vocab_merges"])
    write_processor_files(spec, out, template)
    return out


# --------------------------------------------------------------------------------------------
# Fixture helpers
# --------------------------------------------------------------------------------------------


def st_save(tensors: dict, path: Path, metadata: dict | None = None) -> None:
    clean = {}
    for k, val in tensors.items():
        val = val.detach().cpu().contiguous()
        if val.dtype in (torch.int32, torch.int16, torch.int8):
            val = val.to(torch.int64)
        clean[k] = val
    # a single metadata key: safetensors orders several keys non-deterministically (Rust HashMap)
    md = {"fixture": json.dumps(metadata, sort_keys=True)} if metadata else None
    save_file(clean, str(path), metadata=md)


def load_processor(model_dir: Path, backend: str):
    """AutoProcessor with an explicit image-processor backend ('pil' = slow, 'torchvision' = fast).

    `AutoProcessor.from_pretrained(dir, backend="pil")` does not work: the `backend` kwarg is also
    forwarded to the video processor, which only has a torchvision implementation. (`use_fast=False`
    works but is deprecated.) So the image processor is loaded on its own and swapped in."""
    proc = AutoProcessor.from_pretrained(str(model_dir))
    proc.image_processor = AutoImageProcessor.from_pretrained(str(model_dir), backend=backend)
    return proc


def cos_rows(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1).mean().item()


# --------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------

SYSTEM = "You are a helpful assistant."


def cases_for(model_name: str) -> dict:
    # images differ per model and per case so that many sizes go through both models
    if model_name == "tiny-a":
        one = "images/tiny_13x9.png"
        two = ["images/rgba_45x38.png", "images/wide_150x12.png"]
        multi = ["images/gray_70x45.png", "images/photo_83x57.jpg"]
    else:
        one = "images/photo_83x57.jpg"
        two = ["images/tall_11x170.png", "images/gray_70x45.png"]
        multi = ["images/odd_97x61.png", "images/rgba_45x38.png"]
    return {
        "text": [
            {"role": "system", "content": SYSTEM},
            {
                "role": "user",
                "content": "Which shop grew the most?",
            },
        ],
        "one_image": [
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": one},
                    {"type": "text", "text": "Describe the image in one sentence."},
                ],
            }
        ],
        "two_images": [
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": two[0]},
                    {"type": "image", "image": two[1]},
                    {"type": "text", "text": "What colors are they?"},
                ],
            }
        ],
        "two_images_multiturn": [
            {"role": "system", "content": SYSTEM},
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": multi[0]},
                    {"type": "text", "text": "What is this?"},
                ],
            },
            {"role": "assistant", "content": "A red boat."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "And this? "},
                    {"type": "image", "image": multi[1]},
                    {"type": "text", "text": "Answer briefly."},
                ],
            },
        ],
    }


def message_images(messages: list) -> list[str]:
    out = []
    for m in messages:
        if isinstance(m["content"], list):
            for c in m["content"]:
                if c.get("type") == "image":
                    out.append(c["image"])
    return out


class LayerRecorder:
    """Forward hooks on the decoder layers: the input each layer receives and the output it returns."""

    def __init__(self, layers):
        self.inputs, self.outputs, self.handles = {}, {}, []
        for i, layer in enumerate(layers):
            self.handles.append(layer.register_forward_pre_hook(self._pre(i), with_kwargs=True))
            self.handles.append(layer.register_forward_hook(self._post(i)))

    def _pre(self, i):
        def hook(mod, args, kwargs):
            x = args[0] if args else kwargs["hidden_states"]
            self.inputs[i] = x.detach().clone()

        return hook

    def _post(self, i):
        def hook(mod, args, out):
            x = out[0] if isinstance(out, tuple) else out
            self.outputs[i] = x.detach().clone()

        return hook

    def remove(self):
        for h in self.handles:
            h.remove()


def run_case(model, processor, model_name: str, case: str, messages: list, out_dir: Path, findings: dict) -> dict:
    prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    img_paths = message_images(messages)
    images = [open_image(FIX / p) for p in img_paths]
    inputs = processor(text=[prompt], images=images if images else None, return_tensors="pt")
    model.model.rope_deltas = None
    input_ids = inputs["input_ids"]
    mm = inputs.get("mm_token_type_ids")
    if mm is None:
        mm = torch.zeros_like(input_ids)
    position_ids, rope_deltas = model.model.get_rope_index(
        input_ids,
        mm_token_type_ids=mm,
        image_grid_thw=inputs.get("image_grid_thw"),
        attention_mask=inputs.get("attention_mask"),
    )
    model.model.rope_deltas = None

    L = model.config.text_config.num_hidden_layers
    rec = LayerRecorder(model.model.language_model.layers)
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True, use_cache=False)
    rec.remove()
    hs = out.hidden_states
    assert len(hs) == L + 1, (len(hs), L)

    tensors = {"input_ids": input_ids[0], "position_ids": position_ids[:, 0, :], "rope_deltas": rope_deltas.reshape(1)}
    if "mm_token_type_ids" in inputs:
        tensors["mm_token_type_ids"] = inputs["mm_token_type_ids"][0]
    if "attention_mask" in inputs:
        assert bool(inputs["attention_mask"].all())
    if images:
        tensors["pixel_values"] = inputs["pixel_values"]
        tensors["image_grid_thw"] = inputs["image_grid_thw"]
    for i, h in enumerate(hs):
        tensors[f"hidden_state.{i}"] = h[0]
    tensors["logits"] = out.logits[0]

    # ---- verify what output_hidden_states contains (documented in the README) ----
    check = {}
    check["h0_is_input_of_layer0"] = torch.equal(hs[0], rec.inputs[0])
    check["hi_is_raw_output_of_layer_i_minus_1"] = all(torch.equal(hs[i], rec.outputs[i - 1]) for i in range(1, L))
    lm = model.model.language_model
    n_ds = len(model.config.vision_config.deepstack_visual_indexes) if images else 0
    last = rec.outputs[L - 1]
    if images and L - 1 < n_ds:
        last = None  # (not the case for our models)
    if last is not None:
        with torch.no_grad():
            check["hL_is_final_norm_of_last_layer_output"] = torch.equal(hs[L], lm.norm(last))
    # the input of layer i (i >= 1) differs from hs[i] exactly where DeepStack features were added
    if images:
        vis = input_ids[0] == model.config.image_token_id
        diffs = []
        for i in range(1, L):
            d = (rec.inputs[i] - hs[i])[0]
            changed_visual = bool((d[vis].abs().amax() > 0).item())
            changed_text = bool((d[~vis].abs().amax() > 0).item()) if (~vis).any() else False
            diffs.append({"layer_input": i, "visual_rows_changed": changed_visual, "text_rows_changed": changed_text})
        check["layer_input_minus_hidden_state"] = diffs
        check["num_deepstack"] = n_ds
    findings.setdefault("hidden_state_checks", {})[f"{model_name}/{case}"] = check

    # vision tower outputs for the single-image case
    if case == "one_image":
        with torch.no_grad():
            vo = model.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"], return_dict=True)
        tensors["image_embeds"] = torch.cat(list(vo.pooler_output), dim=0)
        for j, feat in enumerate(vo.deepstack_features):
            tensors[f"deepstack.{j}"] = torch.cat(list(feat), dim=0)
        # the embeddings placed into h0 at the image positions are exactly image_embeds
        vis = input_ids[0] == model.config.image_token_id
        assert torch.equal(hs[0][0][vis], tensors["image_embeds"]), "image embeds mismatch"

    # greedy generation (do_sample=False overrides generation_config.json)
    gen_meta = None
    if case in ("text", "one_image"):
        model.model.rope_deltas = None
        with torch.no_grad():
            g = model.generate(**inputs, max_new_tokens=12, do_sample=False, top_k=None, top_p=None, temperature=None)
        model.model.rope_deltas = None
        new = g[0, input_ids.shape[1] :]
        tensors["generated_ids"] = new
        gen_meta = {"max_new_tokens": 12, "do_sample": False, "num_generated": int(new.numel())}

    st_save(tensors, out_dir / f"{case}.safetensors")
    meta = {
        "messages": messages,
        "add_generation_prompt": True,
        "prompt": prompt,
        "images": img_paths,
        "image_loading": "PIL.Image.open(path) (mode kept) passed to the processor, which converts to RGB",
        "image_processor": "slow",
        "image_processor_class": type(processor.image_processor).__name__,
        "attn_implementation": model.config._attn_implementation,
        "dtype": "float32",
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "seq_len": int(input_ids.shape[1]),
        "num_hidden_states": len(hs),
        "tensors": {k: f"{str(v.dtype).replace('torch.', '')}{list(v.shape)}" for k, v in sorted(tensors.items())},
    }
    if gen_meta:
        meta["generation"] = gen_meta
    dump_json(meta, out_dir / f"{case}.json")
    cos = [cos_rows(hs[i][0], hs[i + 1][0]) for i in range(L)]
    return {"seq_len": int(input_ids.shape[1]), "cos": cos, "logits": out.logits[0]}


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


def main() -> None:
    for sub in ["models", "images", "processor", "cases", "tokenizer"]:
        shutil.rmtree(FIX / sub, ignore_errors=True)
        (FIX / sub).mkdir(parents=True, exist_ok=True)
    template = TEMPLATE_PATH.read_text(encoding="utf-8")
    findings: dict = {}

    # tokenizer
    tok = build_tokenizer()
    n_tok = tok.get_vocab_size(with_added_tokens=True)
    print(f"tokenizer: {n_tok} tokens ({VOCAB_TARGET} BPE + {len(SPECIAL_TOKENS) + len(NON_SPECIAL_ADDED)} added)")

    write_images(FIX / "images")

    summary = {}
    for name, spec in MODELS.items():
        mdir = build_model_dir(name, spec, tok, template)
        # ---------- reload everything from disk, the way a user would ----------
        model = Qwen3VLForConditionalGeneration.from_pretrained(str(mdir), dtype=torch.float32).eval()
        # sanity: config round-trip
        tc = model.config.text_config
        st = spec["text"]
        assert tc.rope_parameters["rope_theta"] == st["rope_theta"], tc.rope_parameters
        assert list(tc.rope_parameters["mrope_section"]) == st["mrope_section"], tc.rope_parameters
        assert tc.head_dim == st["head_dim"] and tc.num_key_value_heads == st["num_key_value_heads"]
        assert model.config.tie_word_embeddings == spec["tie_word_embeddings"]
        if spec["tie_word_embeddings"]:
            assert model.lm_head.weight.data_ptr() == model.model.language_model.embed_tokens.weight.data_ptr()
        else:
            assert not torch.equal(model.lm_head.weight, model.model.language_model.embed_tokens.weight)
        findings.setdefault("rope", {})[name] = {
            "config_json_text_keys": sorted(
                k
                for k in json.load(open(mdir / "config.json"))["text_config"]
                if k.startswith("rope") or k == "mrope_section"
            ),
            "loaded_rope_parameters": dict(tc.rope_parameters),
            "vision_rope_parameters": dict(model.config.vision_config.rope_parameters or {}),
        }
        rot = model.model.language_model.rotary_emb
        half = rot.inv_freq.numel()
        tagged = torch.arange(3, dtype=torch.float32).view(3, 1, 1, 1).expand(3, 1, 1, half).clone()
        findings.setdefault("mrope_axes", {})[name] = rot.recomposition_frequencies(tagged)[0, 0, :half].long().tolist()

        # ---------- processors ----------
        proc_default = AutoProcessor.from_pretrained(str(mdir))
        ip_default = AutoImageProcessor.from_pretrained(str(mdir))
        proc_slow = load_processor(mdir, "pil")
        proc_fast = load_processor(mdir, "torchvision")
        probes = {}
        for label, kw in [("use_fast=False", dict(use_fast=False)), ("backend='pil'", dict(backend="pil"))]:
            try:
                probes[label] = type(AutoProcessor.from_pretrained(str(mdir), **kw).image_processor).__name__
            except Exception as e:  # noqa: BLE001 - recorded in the README
                probes[label] = f"{type(e).__name__}: {str(e).splitlines()[0][:90]}"
        findings.setdefault("autoprocessor_kwargs", {})[name] = probes
        findings.setdefault("default_image_processor", {})[name] = {
            "AutoProcessor": type(proc_default.image_processor).__name__,
            "AutoImageProcessor": type(ip_default).__name__,
            "slow (backend='pil')": type(proc_slow.image_processor).__name__,
            "fast (backend='torchvision')": type(proc_fast.image_processor).__name__,
            "chat_template_loaded": proc_default.chat_template == template,
        }
        assert proc_slow.chat_template == template, "chat template not picked up"
        ip = proc_slow.image_processor
        assert ip.patch_size == spec["vision"]["patch_size"]
        assert ip.size["shortest_edge"] == spec["min_pixels"] and ip.size["longest_edge"] == spec["max_pixels"]

        # tokenizer loaded by transformers == the tokenizers object we trained
        htok = proc_slow.tokenizer
        probe = [
            CORPUS[:400],
            "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Hi<|im_end|>\n<think>\n</think>",
            "  spaces\t\ttabs\r\n\n\nnewlines 12345 café e\u0301 東京 🙂 don't WE'LL",
        ]
        for s in probe:
            a = htok(s, add_special_tokens=True)["input_ids"]
            b = tok.encode(s).ids
            assert a == b, (s, a, b)
        assert htok.eos_token == "<|im_end|>" and htok.pad_token == "<|endoftext|>"

        # ---------- processor fixtures: every image through the slow and the fast processor ----------
        pdir = FIX / "processor"
        for fname, w, h, kind in IMAGES:
            stem = Path(fname).stem
            img = open_image(FIX / "images" / fname)
            slow = proc_slow.image_processor(images=[img], return_tensors="pt")
            fast = proc_fast.image_processor(images=[open_image(FIX / "images" / fname)], return_tensors="pt")
            assert torch.equal(slow["image_grid_thw"], fast["image_grid_thw"])
            rgb = torch.from_numpy(np.ascontiguousarray(convert_to_rgb(open_image(FIX / "images" / fname), return_numpy=True)))
            tensors = {
                "pixel_values": slow["pixel_values"].to(torch.float32),
                "image_grid_thw": slow["image_grid_thw"].to(torch.int64),
                "pixel_values_fast": fast["pixel_values"].to(torch.float32),
                "rgb_u8": rgb,
            }
            st_save(
                tensors,
                pdir / f"{name}__{stem}.safetensors",
                metadata={
                    "image": f"images/{fname}",
                    "slow": type(proc_slow.image_processor).__name__,
                    "fast": type(proc_fast.image_processor).__name__,
                    "transformers_version": transformers.__version__,
                },
            )
            d = (slow["pixel_values"] - fast["pixel_values"]).abs()
            g = slow["image_grid_thw"][0].tolist()
            rh, rw = g[1] * ip.patch_size, g[2] * ip.patch_size
            findings.setdefault("slow_vs_fast", {})[f"{name}__{stem}"] = {
                "grid_thw": g,
                "resized": f"{w}x{h} -> {rw}x{rh}" + (" (> max_pixels)" if rh * rw > spec["max_pixels"] else "")
                + (" (< min_pixels)" if rh * rw < spec["min_pixels"] else ""),
                "max_abs_diff": round(float(d.max()), 6),
                "mean_abs_diff": round(float(d.mean()), 6),
            }

        # RGBA: PIL image (composited onto white) vs path (alpha dropped) through the slow processor
        rgba = FIX / "images" / "rgba_45x38.png"
        pv_pil = proc_slow.image_processor(images=[open_image(rgba)], return_tensors="pt")["pixel_values"]
        pv_path = proc_slow.image_processor(images=[str(rgba)], return_tensors="pt")["pixel_values"]
        pv_conv = proc_slow.image_processor(images=[open_image(rgba).convert("RGB")], return_tensors="pt")[
            "pixel_values"
        ]
        findings.setdefault("rgba_loading", {})[name] = {
            "max_abs(PIL RGBA - path)": float((pv_pil - pv_path).abs().max()),
            "max_abs(path - PIL .convert('RGB'))": float((pv_path - pv_conv).abs().max()),
        }

        # ---------- model cases ----------
        cdir = FIX / "cases" / name
        cdir.mkdir(parents=True, exist_ok=True)
        res = {}
        for case, messages in cases_for(name).items():
            res[case] = run_case(model, proc_slow, name, case, messages, cdir, findings)
        summary[name] = res
        # how far eager attention is from the stored (sdpa) outputs, for the longest case
        eager = Qwen3VLForConditionalGeneration.from_pretrained(
            str(mdir), dtype=torch.float32, attn_implementation="eager"
        ).eval()
        d = load_file(str(cdir / "two_images_multiturn.safetensors"))
        with torch.no_grad():
            o = eager(
                input_ids=d["input_ids"][None],
                mm_token_type_ids=d["mm_token_type_ids"][None],
                pixel_values=d["pixel_values"],
                image_grid_thw=d["image_grid_thw"],
                output_hidden_states=True,
                use_cache=False,
            )
        rel_h = max(
            float((h[0] - d[f"hidden_state.{i}"]).abs().max() / d[f"hidden_state.{i}"].abs().max())
            for i, h in enumerate(o.hidden_states)
        )
        rel_l = float((o.logits[0] - d["logits"]).abs().max() / d["logits"].abs().max())
        findings.setdefault("eager_vs_sdpa", {})[name] = (rel_h, rel_l)
        del eager

        # a check that the default (fast) AutoProcessor gives the same token ids for one case
        msgs = cases_for(name)["two_images"]
        p = proc_default.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        ids_default = proc_default(
            text=[p], images=[open_image(FIX / q) for q in message_images(msgs)], return_tensors="pt"
        )["input_ids"][0]
        ids_saved = load_file(str(cdir / "two_images.safetensors"))["input_ids"]
        assert torch.equal(ids_default, ids_saved)

    # tokenizer fixture: a few strings and their ids (both models share the tokenizer)
    tok_cases = [
        "Hello world!",
        "The picture shows a small red boat resting on a quiet lake.",
        "  leading spaces, trailing spaces   ",
        "line one\nline two\r\n\n\ttabbed",
        "numbers 1234567 and 3.14159, 2024-01-31",
        "Unicode: café naïve e\u0301 Zürich 東京 Москва 🙂",
        "contractions: don't, WE'LL, it's, they've, I'd",
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|image_pad|><|image_pad|><|vision_end|>What is this?<|im_end|>\n<|im_start|>assistant\n",
        "<think>\nreasoning\n</think>\n\n<tool_call>\n{\"name\": \"f\"}\n</tool_call>",
        "<|endoftext|><|endoftext|>text after eos",
    ]
    tok_out = {
        "tokenizer": "models/tiny-a/tokenizer.json (tiny-b has the same tokenizer.json)",
        "add_special_tokens": "default (Qwen2Tokenizer adds no BOS/EOS)",
        "cases": [],
    }
    htok = AutoTokenizer.from_pretrained(str(FIX / "models" / "tiny-a"))
    for s in tok_cases:
        ids = htok(s)["input_ids"]
        tok_out["cases"].append(
            {
                "text": s,
                "ids": ids,
                "tokens": htok.convert_ids_to_tokens(ids),
                "decoded": htok.decode(ids, skip_special_tokens=False),
                "decoded_skip_special": htok.decode(ids, skip_special_tokens=True),
            }
        )
    dump_json(tok_out, FIX / "tokenizer" / "encodings.json")

    write_readme(tok, findings, summary)
    print_summary(summary, findings)


# --------------------------------------------------------------------------------------------
# README + summary
# --------------------------------------------------------------------------------------------


def dir_size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def print_summary(summary: dict, findings: dict) -> None:
    print()
    for sub in ["models/tiny-a", "models/tiny-b", "images", "processor", "cases", "tokenizer"]:
        print(f"  {sub:16s} {dir_size(FIX / sub) / 1024:8.1f} KiB")
    print(f"  {'total':16s} {dir_size(FIX) / 1024:8.1f} KiB")
    for name, res in summary.items():
        for case, r in res.items():
            lg = r["logits"]
            print(
                f"{name}/{case}: seq {r['seq_len']:3d}  cos(h_i, h_i+1) = "
                + " ".join(f"{c:.3f}" for c in r["cos"])
                + f"  logits [{lg.min():.2f}, {lg.max():.2f}] std {lg.std():.2f}"
            )
    print("default image processor:", json.dumps(findings["default_image_processor"]))
    print(f"done in {time.time() - T0:.1f}s")


def write_readme(tok: Tokenizer, findings: dict, summary: dict) -> None:
    ids = token_ids(tok)
    n_tok = tok.get_vocab_size(with_added_tokens=True)
    lines = []
    w = lines.append
    w("# Test fixtures (generated — do not edit by hand)")
    w("")
    w("Everything under this directory, this README included, is written by")
    w("`tools/make_fixtures.py`. Regenerate with (from the repository root):")
    w("")
    w("```")
    w("/tmp/venv/bin/python tools/make_fixtures.py")
    w("```")
    w("")
    w("The script is deterministic (fixed seeds; two runs give byte-identical files), needs no network, and takes well under two minutes on")
    w("two CPU cores. It deletes and rewrites `models/`, `images/`, `processor/`, `cases/`, `tokenizer/`")
    w("and this README.")
    w("")
    w("Generated with: " + ", ".join(
        f"{n} {v}" for n, v in [
            ("python", platform.python_version()),
            ("transformers", transformers.__version__),
            ("torch", torch.__version__),
            ("tokenizers", tokenizers.__version__),
            ("pillow", PIL.__version__),
            ("numpy", np.__version__),
        ]
    ) + ".")
    try:
        import torchvision

        w(f"torchvision {torchvision.__version__} (fast image processor).")
    except Exception:
        pass
    w("")
    w("## Layout")
    w("")
    total = sum(p.stat().st_size for p in FIX.rglob("*") if p.is_file() and p.name != "README.md")
    w(f"Total {total / 1e6:.2f} MB (the tensors are float32; pixel values compress ~4x in git).")
    w("")
    w("```")
    for p in sorted(FIX.rglob("*")):
        if p.is_file() and p.name != "README.md":
            w(f"{str(p.relative_to(FIX)):60s} {p.stat().st_size:>9d} B")
    w("```")
    w("")
    w("### Tokenizer (shared by both models)")
    w("")
    w(f"Byte-level BPE trained with the `tokenizers` library on the English text embedded in the script:")
    w(f"{VOCAB_TARGET} BPE entries (256 byte symbols + merges), then the added tokens of published Qwen")
    w(f"checkpoints appended in Qwen's order, {n_tok} tokens in all. Pipeline identical to Qwen2/Qwen3-VL")
    w("`tokenizer.json`: NFC normalizer; pre-tokenizer `Sequence[Split(Qwen2 regex, isolated), ByteLevel(")
    w("add_prefix_space=false, use_regex=false)]`; ByteLevel post-processor and decoder. The script asserts")
    w("that the transformers tokenizer loaded from each model directory gives the same ids as the raw")
    w("`tokenizers` object (transformers 5 *rebuilds* a `Qwen2Tokenizer` from vocab/merges with its own")
    w("pipeline, so this is a real check). Added-token ids:")
    w("")
    w("| token | id | special |")
    w("|---|---|---|")
    for t in SPECIAL_TOKENS + NON_SPECIAL_ADDED:
        w(f"| `{t}` | {ids[t]} | {'yes' if t in SPECIAL_TOKENS else 'no'} |")
    w("")
    w("`tokenizer_config.json`: `tokenizer_class` Qwen2Tokenizer, eos `<|im_end|>`, pad `<|endoftext|>`,")
    w("bos/unk null, `add_bos_token` false. `tokenizer/encodings.json` holds ids, tokens and decodings of a")
    w("few strings (whitespace runs, CRLF, digits, NFC, CJK, emoji, contractions, special and non-special")
    w("added tokens).")
    w("")
    w("### Models")
    w("")
    w("Two random `Qwen3VLForConditionalGeneration` checkpoints, float32, that differ in every shape:")
    w("")
    w("| | tiny-a | tiny-b |")
    w("|---|---|---|")
    ca = json.load(open(FIX / "models/tiny-a/config.json"))
    cb = json.load(open(FIX / "models/tiny-b/config.json"))
    rows = [
        ("text hidden_size", "hidden_size", "t"),
        ("decoder layers", "num_hidden_layers", "t"),
        ("attention heads", "num_attention_heads", "t"),
        ("KV heads", "num_key_value_heads", "t"),
        ("head_dim", "head_dim", "t"),
        ("intermediate_size", "intermediate_size", "t"),
        ("rms_norm_eps", "rms_norm_eps", "t"),
        ("vocab_size", "vocab_size", "t"),
        ("vision depth", "depth", "v"),
        ("vision hidden_size", "hidden_size", "v"),
        ("vision heads", "num_heads", "v"),
        ("vision intermediate_size", "intermediate_size", "v"),
        ("patch_size", "patch_size", "v"),
        ("temporal_patch_size", "temporal_patch_size", "v"),
        ("spatial_merge_size", "spatial_merge_size", "v"),
        ("num_position_embeddings", "num_position_embeddings", "v"),
        ("deepstack_visual_indexes", "deepstack_visual_indexes", "v"),
        ("out_hidden_size", "out_hidden_size", "v"),
    ]
    for label, key, part in rows:
        sub = "text_config" if part == "t" else "vision_config"
        w(f"| {label} | {ca[sub].get(key)} | {cb[sub].get(key)} |")
    ra, rb = findings["rope"]["tiny-a"], findings["rope"]["tiny-b"]
    w(f"| RoPE (text) | theta {ra['loaded_rope_parameters']['rope_theta']}, mrope_section "
      f"{ra['loaded_rope_parameters']['mrope_section']} | theta {rb['loaded_rope_parameters']['rope_theta']}, "
      f"mrope_section {rb['loaded_rope_parameters']['mrope_section']} |")
    w(f"| tie_word_embeddings | {ca['tie_word_embeddings']} | {cb['tie_word_embeddings']} |")
    w("| weights | single `model.safetensors` | sharded `model-0000i-of-0000n.safetensors` + `model.safetensors.index.json` |")
    w("| chat template | `chat_template.jinja` | `chat_template.json` (`{\"chat_template\": ...}`) |")
    w("| preprocessor_config.json | `size: {shortest_edge, longest_edge}`, type `Qwen2VLImageProcessorFast` (published Qwen3-VL style) | top-level `min_pixels` / `max_pixels`, no `size`, type `Qwen2VLImageProcessor` (Qwen2/2.5-VL style) |")
    w(f"| min / max pixels | {MODELS['tiny-a']['min_pixels']} / {MODELS['tiny-a']['max_pixels']} | {MODELS['tiny-b']['min_pixels']} / {MODELS['tiny-b']['max_pixels']} |")
    w("| vocab.json + merges.txt | yes (as published) | no (tokenizer.json only) |")
    w("| generation_config.json | published-like: do_sample true, temperature 0.7, top_k 20, top_p 0.8, eos [im_end, endoftext] | do_sample false, eos im_end (int) |")
    w("")
    w("Both share the tokenizer and `tools/qwen3_vl_chat_template.jinja`. Token ids in `config.json`")
    w(f"(`image_token_id` {ids['<|image_pad|>']}, `video_token_id` {ids['<|video_pad|>']}, "
      f"`vision_start_token_id` {ids['<|vision_start|>']}, `vision_end_token_id` {ids['<|vision_end|>']},")
    w(f"text `bos_token_id` {ids['<|endoftext|>']}, `eos_token_id` {ids['<|im_end|>']}) match the tokenizer. Both also")
    w("carry `video_preprocessor_config.json` (Qwen3VLVideoProcessor, as published); no `processor_config.json`.")
    w("")
    w("**RoPE keys in config.json.** tiny-a is written exactly like published Qwen3-VL checkpoints")
    w("(transformers 4.57): `text_config.rope_scaling = {\"mrope_interleaved\": true, \"mrope_section\": [...],")
    w("\"rope_type\": \"default\"}` plus `text_config.rope_theta`; also `vision_config.model_type` is")
    w("`\"qwen3_vl\"` (sic, as published), `torch_dtype` at top level and `dtype` in `text_config`, and")
    w("`tie_word_embeddings` both at top level and in `text_config`. tiny-b's config.json is exactly what")
    w(f"transformers {transformers.__version__} writes: `text_config.rope_parameters = "
      + json.dumps(json.load(open(FIX / 'models/tiny-b/config.json'))["text_config"].get("rope_parameters"))
      + "` (no `rope_theta`/`rope_scaling` keys), and `vision_config.rope_parameters = "
      + json.dumps(json.load(open(FIX / 'models/tiny-b/config.json'))["vision_config"].get("rope_parameters"))
      + "`. Loaded back, tiny-a gives `rope_parameters` "
      + json.dumps(ra["loaded_rope_parameters"]) + " and vision " + json.dumps(ra["vision_rope_parameters"]) + ".")
    w("")
    w("**mrope_section.** transformers' interleaved M-RoPE (`Qwen3VLTextRotaryEmbedding.recomposition_frequencies`)")
    w("starts from the T frequencies and overwrites frequency indices `1, 4, 7, ... < 3*mrope_section[1]` with")
    w("H and `2, 5, 8, ... < 3*mrope_section[2]` with W (indices >= head_dim/2 are silently dropped); the")
    w("head_dim/2 angles are then duplicated (`cat(f, f)`, rotate_half layout). The sections here are")
    w("well-formed like the published [24, 20, 20]. Axis used by each frequency index, obtained by running")
    w("the installed `recomposition_frequencies` on axis-tagged input (0 = T, 1 = H, 2 = W):")
    w("")
    for name, axes in findings["mrope_axes"].items():
        w(f"- {name}: mrope_section {findings['rope'][name]['loaded_rope_parameters']['mrope_section']}, "
          f"{len(axes)} frequencies -> `{axes}`")
    w("")
    w("(A section like [2, 3, 3] on 8 frequencies would silently give W only two frequencies.)")
    w("`mrope_interleaved` is not read by this transformers version: Qwen3-VL is always interleaved.")
    w("")
    w("**Weights.** Re-initialised after construction (seeded): Linear/Conv3d weights ~ N(0, 1/fan_in),")
    w("biases ~ N(0, 0.1²), token embeddings ~ N(0, 1) (tiny-a, tied: N(0, 0.25²)), vision `pos_embed` ~ N(0, 0.5²), every RMSNorm/LayerNorm")
    w("weight (incl. q_norm/k_norm, merger norms) 1 + N(0, 0.2²), LayerNorm biases N(0, 0.1²). tiny-a's")
    w("`lm_head` is tied to the embeddings (no `lm_head.weight` in the file). All fixtures are computed from")
    w("the checkpoints *reloaded from disk* with `from_pretrained`, so they reflect what transformers reads.")
    w("")
    w("### Images (`images/`)")
    w("")
    w("Deterministic numpy drawings (gradients + Gaussian noise + a disk, a rectangle and a checkerboard")
    w("strip, so resampling is exercised): " + ", ".join(f"`{n}`" for n, *_ in IMAGES) + ".")
    w("`rgba_45x38.png` has a varying alpha channel (fully transparent and fully opaque columns),")
    w("`gray_70x45.png` is mode L, `photo_83x57.jpg` is a 4:2:0 JPEG (quality 90).")
    w("")
    w("### Processor expectations (`processor/<model>__<image-stem>.safetensors`)")
    w("")
    w("One file per image and model (pixel budgets and patch sizes differ). Tensors (no batch dim):")
    w("")
    w("- `pixel_values` F32 [n_patches, 3*temporal_patch*patch*patch] from the **slow** image processor,")
    w("  i.e. `Qwen2VLImageProcessorPil` (transformers 5 naming; PIL bicubic resize of the uint8 image,")
    w("  then rescale 1/255, normalize with mean/std 0.5, patchify; the single frame is repeated")
    w("  `temporal_patch_size` times), configured from the model's preprocessor_config.json;")
    w("- `image_grid_thw` I64 [1, 3];")
    w("- `pixel_values_fast` F32, same shape, from the **fast** torchvision processor (`Qwen2VLImageProcessor`")
    w("  in transformers 5); grids are always identical, pixel values differ (resampling);")
    w("- `rgb_u8` U8 [H, W, 3]: the decoded image after transformers' `convert_to_rgb` (RGBA composited onto")
    w("  white, L replicated to 3 channels), so decoding and resizing can be tested separately.")
    w("")
    w("| file | grid_thw | resize (W x H) | max abs(slow - fast) | mean abs |")
    w("|---|---|---|---|---|")
    for k, v in findings["slow_vs_fast"].items():
        w(f"| {k} | {v['grid_thw']} | {v['resized']} | {v['max_abs_diff']} | {v['mean_abs_diff']} |")
    w("")
    w("Note `smart_resize`'s `max(factor, ...)` clamp: very thin images end up *above* max_pixels.")
    w("")
    w("**Which image processor does `AutoProcessor.from_pretrained(dir)` use?** In transformers 5 the class")
    w("names changed: `Qwen2VLImageProcessor` is the torchvision (\"fast\") implementation and")
    w("`Qwen2VLImageProcessorPil` the PIL (\"slow\") one; `use_fast` is deprecated in favour of")
    w("`backend=\"pil\" | \"torchvision\"`. With no argument the torchvision backend is chosen whenever")
    w("torchvision is installed, both for `image_processor_type` `Qwen2VLImageProcessor` (tiny-b) and for the")
    w("published `Qwen2VLImageProcessorFast` (tiny-a; a legacy `...Fast` suffix maps to the base name).")
    w("Observed:")
    w("")
    for name, v in findings["default_image_processor"].items():
        w(f"- {name}: " + ", ".join(f"{k} -> `{val}`" for k, val in v.items()))
    w("")
    w("The case fixtures below use the slow (PIL) image processor. Asking AutoProcessor for it:")
    w("")
    for name, v in findings["autoprocessor_kwargs"].items():
        w(f"- {name}: " + ", ".join(f"`AutoProcessor.from_pretrained(dir, {k})` -> {val}" for k, val in v.items()))
    w("")
    w("(`backend` is forwarded to the video processor too, which only has a torchvision implementation;")
    w("`use_fast` is deprecated.) The script loads `AutoProcessor.from_pretrained(dir)` and replaces its")
    w("`image_processor` with `AutoImageProcessor.from_pretrained(dir, backend=\"pil\")`, which is the same")
    w("class `use_fast=False` gives.")
    w("")
    w("### Model cases (`cases/<model>/<case>.{json,safetensors}`)")
    w("")
    w("Cases: `text` (system + user text), `one_image`, `two_images` (two images of different sizes, then")
    w("text), `two_images_multiturn` (system, user with image 1, assistant answer, user with text + image 2")
    w("+ text). All with `add_generation_prompt=True`. Each is processed as a transformers user would:")
    w("")
    w("```python")
    w("prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)")
    w("images = [PIL.Image.open(p) for p in image_paths]        # mode kept; processor converts to RGB")
    w("inputs = processor(text=[prompt], images=images or None, return_tensors=\"pt\")")
    w("out = model(**inputs, output_hidden_states=True, use_cache=False)   # f32, torch.no_grad(), sdpa")
    w("position_ids, rope_deltas = model.model.get_rope_index(input_ids, mm_token_type_ids=...,")
    w("                                                       image_grid_thw=..., attention_mask=...)")
    w("```")
    w("")
    w("JSON: `messages` (image paths relative to `tests/fixtures`), `add_generation_prompt`, `prompt` (the")
    w("rendered template before placeholder expansion: one `<|image_pad|>` per image), `images`,")
    w("`image_processor` (\"slow\"), versions, `seq_len`, and the list of tensors with dtype/shape.")
    w("")
    w("Safetensors (no batch dim): `input_ids` I64 [seq]; `mm_token_type_ids` I64 [seq] (0 text, 1 image,")
    w("2 video; the processor always returns it); `position_ids` I64 [3, seq] (T/H/W rows, from")
    w("`get_rope_index`); `rope_deltas` I64 [1]; `pixel_values` F32 and `image_grid_thw` I64 [k, 3] (image")
    w("cases); `hidden_state.{i}` F32 [seq, hidden] for i = 0..=L; `logits` F32 [seq, vocab_size] (vocab_size")
    w("of the config, which for tiny-a is larger than the tokenizer). `one_image` also has `image_embeds`")
    w("F32 [n_merged, out_hidden] (vision merger output = what is scattered into the image positions of")
    w("`hidden_state.0`, asserted) and `deepstack.{j}` F32 [n_merged, out_hidden] for each entry j of")
    w("`deepstack_visual_indexes` (from `model.model.get_image_features(...)`, whose `pooler_output` and")
    w("`deepstack_features` are per-image tuples; concatenated here). `text` and `one_image` also have")
    w("`generated_ids` I64 [n]: `model.generate(**inputs, max_new_tokens=12, do_sample=False)` minus the prompt.")
    w("")
    w("Attention implementation: the default (`sdpa`). Re-running the longest case with")
    w("`attn_implementation=\"eager\"` differs from the stored values by at most (max abs diff / max abs")
    w("value): " + "; ".join(f"{n}: hidden states {h:.1e}, logits {l:.1e}" for n, (h, l) in findings["eager_vs_sdpa"].items()) + ".")
    w("")
    w("| case | seq_len | cos(h_i, h_i+1), i = 0..L-1 |")
    w("|---|---|---|")
    for name, res in summary.items():
        for case, r in res.items():
            w(f"| {name}/{case} | {r['seq_len']} | " + ", ".join(f"{c:.3f}" for c in r["cos"]) + " |")
    w("")
    w("## Findings about the installed transformers")
    w("")
    w("**What `output_hidden_states` returns for Qwen3-VL** (read in `modeling_qwen3_vl.py` +")
    w("`utils/output_capturing.py`, and verified with forward hooks on every decoder layer for every case):")
    w("hidden states are captured by a forward hook on each `Qwen3VLTextDecoderLayer`; there are L + 1 of them.")
    w("")
    w("- `hidden_states[0]` = the input of decoder layer 0 = `inputs_embeds` after the image features were")
    w("  scattered into the `<|image_pad|>` positions;")
    w("- `hidden_states[i]`, 1 <= i <= L-1 = the raw output of decoder layer i-1, **before** the DeepStack")
    w("  addition. DeepStack (`_deepstack_process`) runs in `Qwen3VLTextModel.forward` after the layer")
    w("  returns, for layer_idx < len(deepstack_visual_indexes), adding `deepstack[layer_idx]` to the image")
    w("  rows only. So the *input* of layer i equals `hidden_states[i]` plus the DeepStack features on image")
    w("  rows when i-1 < len(deepstack), and equals `hidden_states[i]` otherwise;")
    w("- `hidden_states[L]` = the final RMSNorm applied to the last layer's output (the last captured entry")
    w("  is replaced by `last_hidden_state`), i.e. the input of `lm_head`.")
    w("")
    w("Hook verification results:")
    w("")
    w("```")
    for k, v in findings["hidden_state_checks"].items():
        w(f"{k}: {json.dumps(v)}")
    w("```")
    w("")
    w("**`get_rope_index` signature** (changed from 4.x): `get_rope_index(input_ids, mm_token_type_ids,")
    w("image_grid_thw=None, video_grid_thw=None, attention_mask=None)` — `mm_token_type_ids` is a required")
    w("positional argument and the text/image/video segmentation is taken from it, not from searching")
    w("`vision_start_token_id` in `input_ids`. Each image group's positions start at the current")
    w("position: T = start, H = start + row, W = start + col (merged grid), and the next text position is")
    w("start + max(grid_h, grid_w) / merge (= largest image position + 1). Returns")
    w("`position_ids` [3, batch, seq] and `rope_deltas` [batch, 1] (= max position + 1 - seq_len). The")
    w("forward pass raises if `image_grid_thw` is given without `mm_token_type_ids`. For text-only input")
    w("the forward pass does not call it at all (positions are `arange`); the fixtures still store")
    w("`get_rope_index` with all-zero `mm_token_type_ids` (= arange, delta 0), which is the same thing.")
    w("The text model internally also accepts 4-row position ids (row 0 = text positions for the causal")
    w("mask, rows 1..3 = T/H/W), as produced during `generate`.")
    w("")
    w("**Vision tower details worth knowing** (transformers " + transformers.__version__ + "): the learned")
    w("position embedding is resampled per image with bilinear interpolation, `align_corners=True`, from the")
    w("sqrt(num_position_embeddings)² table to the (grid_h, grid_w) patch grid, patches in spatial-merge-block")
    w("order; the vision rotary embedding is `rope_type: \"axial\"` (theta from `vision_config.rope_parameters`,")
    w("default 10000), frequencies `1/theta^(arange(0, head_dim/2, 2)/(head_dim/2))` for H and for W,")
    w("concatenated [H, W] and then duplicated to head_dim. Vision attention is per image (cu_seqlens).")
    w("")
    w("**Image loading paths differ for RGBA.** Passing a PIL RGBA image to the processor (what the fixtures")
    w("do) composites it onto white (`image_transforms.convert_to_rgb`). Passing a *path* instead")
    w("(`apply_chat_template(..., tokenize=True)` or `processor(images=[\"x.png\"])`) goes through")
    w("`fetch_images`: `load_image` for the PIL backend (`ImageOps.exif_transpose` + `.convert(\"RGB\")`),")
    w("`load_image_as_tensor` (`torchvision.io.decode_image(mode=RGB)`, EXIF applied) for the torchvision")
    w("backend; both drop alpha without compositing. Measured on `rgba_45x38.png` with the slow processor:")
    w("")
    for name, v in findings["rgba_loading"].items():
        w(f"- {name}: " + ", ".join(f"{k} = {val:.4g}" for k, val in v.items()))
    w("")
    (FIX / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
