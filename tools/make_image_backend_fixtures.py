#!/usr/bin/env python3
"""Fixtures for the two image backends of transformers' Qwen2-VL image processor.

Development tool only (CI has no Python). Writes tests/fixtures/image_backends/ (and nothing
else; tools/make_fixtures.py owns tests/fixtures/{images,processor,...} and rewrites them):

- images/: a few extra images (seeded) that resize up, down, and up in one direction while down
  in the other, plus a gray+alpha PNG and a large JPEG;
- <model>__<stem>.safetensors for every image of images/ (those of tests/fixtures/images have
  both backends' output in tests/fixtures/processor already), for both tiny checkpoints: `pixel_values_torchvision` (AutoImageProcessor backend="torchvision", the
  default), `pixel_values_pil` (backend="pil") and `image_grid_thw`;
- resize_sweep.safetensors: seeded random uint8 RGB images and torchvision's
  `F.resize(.., BICUBIC, antialias=True)` of them (the call transformers makes), `in_<i>` and
  `out_<i>` as [H, W, 3] uint8, over many size pairs;
- variants.json + variants.safetensors: rescale/normalise settings (no rescale, no normalise,
  neither, another rescale factor, CLIP mean/std) through both backends on one image;
- default_backend.json: which image processor class AutoImageProcessor / AutoProcessor load
  by default for preprocessor_config.json variants (Fast / Pil / base type, use_fast: false);
- README.md describing the files and the versions used.

Usage (from the repository root):

    /tmp/venv/bin/python tools/make_image_backend_fixtures.py
"""

from __future__ import annotations

import json
import platform
import shutil
import tempfile
from pathlib import Path

import numpy as np
import PIL
import torch
import torchvision
import transformers
from PIL import Image
from safetensors.torch import save_file
from torchvision.transforms.v2 import functional as tvF
from transformers import AutoImageProcessor, AutoProcessor

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"
OUT = FIX / "image_backends"
MODELS = ["tiny-a", "tiny-b"]
SEED = 31

transformers.logging.set_verbosity_error()

# name, width, height, kind
EXTRA_IMAGES = [
    ("up_5x7.png", 5, 7, "rgb"),  # upscaled in both directions
    ("mixed_300x20.png", 300, 20, "rgb"),  # width shrinks, height grows
    ("la_33x77.png", 33, 77, "la"),  # gray + alpha, composited onto white
    ("big_400x300.jpg", 400, 300, "jpeg"),  # strong downscale of a decoded JPEG
]


def smooth_noise(rng: np.random.Generator, w: int, h: int, c: int) -> np.ndarray:
    """Gradients plus noise: values over the whole 0..255 range, with edges that ring."""
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), ((x + y) * 7) % 256], -1)
    noise = rng.integers(-60, 61, size=(h, w, 3))
    img = np.clip(base + noise, 0, 255).astype(np.uint8)
    img[h // 3 : h // 2, w // 4 : w // 2] = 255  # a flat block with sharp edges
    return img[..., :c]


def write_images() -> list[Path]:
    rng = np.random.default_rng(SEED)
    d = OUT / "images"
    d.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, w, h, kind in EXTRA_IMAGES:
        rgb = smooth_noise(rng, w, h, 3)
        if kind == "rgb":
            Image.fromarray(rgb, "RGB").save(d / name)
        elif kind == "la":
            gray = rgb[..., 0]
            alpha = rng.integers(0, 256, size=(h, w), dtype=np.uint8)
            Image.fromarray(np.stack([gray, alpha], -1), "LA").save(d / name)
        elif kind == "jpeg":
            Image.fromarray(rgb, "RGB").save(d / name, quality=85)
        paths.append(d / name)
    return paths


def open_image(path: Path) -> Image.Image:
    """As tools/make_fixtures.py feeds images: PIL.Image.open, loaded, mode kept."""
    img = Image.open(path)
    img.load()
    return img


def processors(model: str) -> dict:
    mdir = FIX / "models" / model
    return {b: AutoImageProcessor.from_pretrained(str(mdir), backend=b) for b in ("torchvision", "pil")}


def st_save(tensors: dict, path: Path, metadata: dict | None = None) -> None:
    clean = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    md = {"fixture": json.dumps(metadata, sort_keys=True)} if metadata else None
    save_file(clean, str(path), metadata=md)


def pixel_fixtures(images: list[Path], findings: dict) -> None:
    for model in MODELS:
        procs = processors(model)
        assert type(procs["torchvision"]).__name__ == "Qwen2VLImageProcessor"
        assert type(procs["pil"]).__name__ == "Qwen2VLImageProcessorPil"
        for path in images:
            out = {b: p(images=[open_image(path)], return_tensors="pt") for b, p in procs.items()}
            assert torch.equal(out["torchvision"]["image_grid_thw"], out["pil"]["image_grid_thw"])
            tv = out["torchvision"]["pixel_values"]
            pil = out["pil"]["pixel_values"]
            assert tv.dtype == torch.float32 and pil.dtype == torch.float32
            st_save(
                {
                    "pixel_values_torchvision": tv,
                    "pixel_values_pil": pil,
                    "image_grid_thw": out["pil"]["image_grid_thw"].to(torch.int64),
                },
                OUT / f"{model}__{path.stem}.safetensors",
                metadata={"image": str(path.relative_to(FIX)), "model": model},
            )
            g = out["pil"]["image_grid_thw"][0].tolist()
            p = procs["pil"].patch_size
            findings.setdefault("pixels", []).append(
                {
                    "file": f"{model}__{path.stem}",
                    "resize": f"{Image.open(path).width}x{Image.open(path).height} -> {g[2] * p}x{g[1] * p}",
                    "max_abs_tv_minus_pil": float((tv - pil).abs().max()),
                }
            )


def sweep_sizes() -> list[tuple[int, int, int, int]]:
    """(in_h, in_w, out_h, out_w): up, down, mixed, odd, thin, and strong downscales where
    PyTorch's int16 weight precision reaches its 22-bit cap."""
    rng = np.random.default_rng(SEED + 1)
    cases = [
        (9, 13, 64, 64),
        (12, 150, 32, 160),
        (170, 11, 192, 32),
        (61, 97, 32, 64),
        (45, 70, 32, 48),
        (7, 5, 32, 32),
        (20, 300, 32, 288),
        (150, 200, 24, 40),
        (3, 600, 2, 2),  # 300x down: weights below 2^-8, precision capped at 22
        (1, 1, 5, 3),
        (2, 3, 1, 2),
        (64, 64, 64, 32),  # width only
        (64, 64, 32, 64),  # height only
        (33, 77, 33, 80),  # width grows a little, height kept
        (100, 100, 99, 101),
        (256, 4, 16, 16),
    ]
    for _ in range(24):
        ih, iw = (int(v) for v in rng.integers(1, 90, size=2))
        oh, ow = (int(v) for v in rng.integers(1, 90, size=2))
        cases.append((ih, iw, oh, ow))
    return cases


def resize_sweep(findings: dict) -> None:
    rng = np.random.default_rng(SEED + 2)
    tensors = {}
    cases = sweep_sizes()
    for i, (ih, iw, oh, ow) in enumerate(cases):
        img = rng.integers(0, 256, size=(ih, iw, 3), dtype=np.uint8)
        if i % 3 == 0:  # some smooth inputs too, not only white noise
            img = smooth_noise(rng, iw, ih, 3)
        x = torch.from_numpy(img).permute(2, 0, 1).contiguous()[None]
        try:
            y = tvF.resize(x, [oh, ow], interpolation=tvF.InterpolationMode.BICUBIC, antialias=True)
        except RuntimeError as e:  # PyTorch's AVX kernel asserts on a 1x1 output
            findings.setdefault("sweep_errors", []).append(f"{iw}x{ih} -> {ow}x{oh}: {str(e).splitlines()[0][:80]}")
            continue
        assert y.dtype == torch.uint8
        tensors[f"in_{i}"] = torch.from_numpy(img)
        tensors[f"out_{i}"] = y[0].permute(1, 2, 0).contiguous()
    st_save(tensors, OUT / "resize_sweep.safetensors", metadata={"cases": len(cases)})
    findings["sweep_cases"] = len(tensors) // 2


VARIANTS = {
    "no_rescale": {"do_rescale": False},
    "no_normalize": {"do_normalize": False},
    "neither": {"do_rescale": False, "do_normalize": False},
    "rescale_0.0039": {"rescale_factor": 0.0039},
    "clip_mean_std": {
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
    },
}
VARIANT_IMAGE = FIX / "images" / "photo_83x57.jpg"


def variants() -> None:
    tensors = {}
    for name, kw in VARIANTS.items():
        for b, proc in processors("tiny-b").items():
            out = proc(images=[open_image(VARIANT_IMAGE)], return_tensors="pt", **kw)
            tensors[f"{name}.{b}"] = out["pixel_values"].to(torch.float32)
    st_save(tensors, OUT / "variants.safetensors")
    (OUT / "variants.json").write_text(
        json.dumps(
            {"model": "tiny-b", "image": str(VARIANT_IMAGE.relative_to(FIX)), "variants": VARIANTS}, indent=2
        )
        + "\n"
    )


CONFIG_VARIANTS = {
    "as tiny-b (image_processor_type Qwen2VLImageProcessor)": {},
    "image_processor_type Qwen2VLImageProcessorFast": {"image_processor_type": "Qwen2VLImageProcessorFast"},
    "image_processor_type Qwen2VLImageProcessorPil": {"image_processor_type": "Qwen2VLImageProcessorPil"},
    "use_fast false": {"use_fast": False},
    "image_processor_type Qwen2VLImageProcessor and use_fast true": {"use_fast": True},
    "no image_processor_type": {"image_processor_type": None},
}


def default_backend() -> None:
    base = json.loads((FIX / "models" / "tiny-b" / "preprocessor_config.json").read_text())
    out = {}
    for name, upd in CONFIG_VARIANTS.items():
        cfg = {**base, **upd}
        cfg = {k: v for k, v in cfg.items() if v is not None}
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            for f in (FIX / "models" / "tiny-b").iterdir():
                if f.is_file() and f.suffix != ".safetensors":
                    shutil.copy(f, d / f.name)
            (d / "preprocessor_config.json").write_text(json.dumps(cfg, indent=2))
            out[name] = {
                "preprocessor_config": cfg,
                "AutoImageProcessor": type(AutoImageProcessor.from_pretrained(str(d))).__name__,
                "AutoProcessor": type(AutoProcessor.from_pretrained(str(d)).image_processor).__name__,
            }
    (OUT / "default_backend.json").write_text(json.dumps(out, indent=2) + "\n")


def readme(findings: dict) -> None:
    rows = "\n".join(
        f"| {r['file']} | {r['resize']} | {r['max_abs_tv_minus_pil']:.6f} |" for r in findings["pixels"]
    )
    text = f"""# Image backend fixtures

Made by `tools/make_image_backend_fixtures.py` with transformers {transformers.__version__},
torch {torch.__version__} (CPU capability {torch.backends.cpu.get_cpu_capability()}), torchvision
{torchvision.__version__}, Pillow {PIL.__version__}, numpy {np.__version__}, Python
{platform.python_version()}. Expected values all come from transformers / torchvision.

- `images/`: extra inputs (up_5x7 grows both ways, mixed_300x20 shrinks in width and grows in
  height, la_33x77 is gray + alpha, big_400x300.jpg shrinks about 5x).
- `<model>__<stem>.safetensors`: for the images of `images/` (those of `../images/` have both
  backends' output in `../processor/`: `pixel_values` is PIL's, `pixel_values_fast` torchvision's),
  `pixel_values_torchvision` from `AutoImageProcessor.from_pretrained(model, backend="torchvision")`
  (`Qwen2VLImageProcessor`, transformers' default), `pixel_values_pil` from `backend="pil"`
  (`Qwen2VLImageProcessorPil`), both F32, and `image_grid_thw` I64. Images are given as
  `PIL.Image.open(path)` with the mode kept, as in `../processor/`.
- `resize_sweep.safetensors`: {findings['sweep_cases']} cases `in_<i>` / `out_<i>` ([H, W, 3] uint8) of
  `torchvision.transforms.v2.functional.resize(x[None], [h, w], BICUBIC, antialias=True)` on a
  uint8 `[1, 3, H, W]` tensor, the call transformers' torchvision backend makes.
- `variants.json` / `variants.safetensors`: `<variant>.<backend>` pixel values of
  `{VARIANT_IMAGE.name}` through tiny-b's processors with the call-time settings of the JSON.
- `default_backend.json`: the class `AutoImageProcessor.from_pretrained(dir)` and
  `AutoProcessor.from_pretrained(dir)` load for variants of tiny-b's `preprocessor_config.json`.
  All are the torchvision `Qwen2VLImageProcessor`: the file's `image_processor_type` suffix
  (`Fast`, `Pil`) and `use_fast` keys do not choose the backend in transformers 5; only the
  call's `backend=` / `use_fast=` arguments do.

{"".join(f"Skipped sweep case (torchvision raises): {e}" + chr(10) for e in findings.get("sweep_errors", []))}
Largest difference between the two backends per file (in normalised units; one 8-bit level is
{1 / 127.5:.6f} with mean = std = 0.5):

| file | resize (W x H) | max abs(torchvision - pil) |
|---|---|---|
{rows}
"""
    (OUT / "README.md").write_text(text)


def main() -> None:
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    extra = write_images()
    findings: dict = {}
    pixel_fixtures(extra, findings)
    resize_sweep(findings)
    variants()
    default_backend()
    readme(findings)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
