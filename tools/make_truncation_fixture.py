#!/usr/bin/env python3
"""Write tests/fixtures/truncated/: small JPEG and PNG files and, for every prefix of each file,
whether Pillow decodes it (`Image.open(...).load()` with LOAD_TRUNCATED_IMAGES off, Pillow's
default) -- the expected verdicts for the test that cuts the same files at every length.

Development tool only (CI has no Python). Deterministic: two runs give byte-identical files.

Usage (from the repository root):

    /tmp/venv/bin/python tools/make_truncation_fixture.py
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import PIL
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "truncated"


def pil_accepts(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
        return True
    except Exception:  # noqa: BLE001 -- any refusal counts
        return False


def main() -> None:
    rng = np.random.default_rng(0)
    # Smooth gradients plus noise, so the entropy-coded data is neither trivial nor huge.
    y, x = np.mgrid[0:23, 0:37]
    base = np.stack([x * 6, y * 10, (x + y) * 4], axis=-1).astype(np.float64)
    rgb = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
    files = {
        "baseline_420.jpg": (Image.fromarray(rgb), dict(format="JPEG", quality=90)),
        "progressive.jpg": (
            Image.fromarray(rgb),
            dict(format="JPEG", quality=90, progressive=True),
        ),
        "gray.jpg": (Image.fromarray(rgb[:, :, 0]), dict(format="JPEG", quality=80)),
        "restarts.jpg": (
            Image.fromarray(rgb),
            dict(format="JPEG", quality=90, subsampling=0, restart_marker_blocks=2),
        ),
        "rgb.png": (Image.fromarray(rgb), dict(format="PNG")),
    }
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    verdicts = {}
    for name, (im, kw) in files.items():
        buf = io.BytesIO()
        im.save(buf, **kw)
        data = buf.getvalue()
        (OUT / name).write_bytes(data)
        accepted = [n for n in range(len(data) + 1) if pil_accepts(data[:n])]
        verdicts[name] = {"len": len(data), "pillow_accepts": accepted}
        print(f"{name}: {len(data)} bytes, Pillow accepts prefixes of length {accepted}")
    meta = {
        "generated_by": "tools/make_truncation_fixture.py",
        "pillow": PIL.__version__,
        "files": verdicts,
    }
    (OUT / "verdicts.json").write_text(json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    main()
