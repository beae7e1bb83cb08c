#!/usr/bin/env python3
"""Generate the FineVision-style Parquet fixtures of `interlace` under tests/fixtures/data/.

Development tool only (CI has no Python). Needs pyarrow (`/tmp/venv/bin/pip install
pyarrow`). Deterministic: two runs give byte-identical files.

Usage (from the repository root):

    /tmp/venv/bin/python tools/make_parquet_fixtures.py

It deletes and rewrites tests/fixtures/data/finevision/, tests/fixtures/data/bad/ and
tests/fixtures/data/finevision_expected.json. The layout and what each file exercises are
described in tests/fixtures/data/README.md (written by hand, not by this script).

The expected contents are taken from pyarrow reading the written files back (not from the
lists this script wrote), so the Rust tests compare our reader with pyarrow's.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
OUT = FIXTURES / "data"
DATASET = OUT / "finevision"
BAD = OUT / "bad"

# The images made by tools/make_fixtures.py, used as encoded bytes as they are.
IMAGES = {
    name: (FIXTURES / "images" / name).read_bytes()
    for name in [
        "photo_83x57.jpg",
        "gray_70x45.png",
        "tall_11x170.png",
        "tiny_13x9.png",
        "wide_150x12.png",
        "rgba_45x38.png",
    ]
}
# Starts like a PNG, then garbage: stored fine, fails to decode.
BROKEN = b"\x89PNG\r\n\x1a\n" + bytes(range(7, 200, 3))

# FineVision's schema (HF datasets `Sequence(Image())` and a list of {user, assistant}),
# plus the kind of extra columns FineVision subsets carry, which readers must ignore.
IMAGE_T = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
TEXT_T = pa.struct([("user", pa.string()), ("assistant", pa.string())])
SCHEMA = pa.schema(
    [
        ("images", pa.list_(IMAGE_T)),
        ("texts", pa.list_(TEXT_T)),
        ("source", pa.string()),
        ("relevance_ratings", pa.list_(pa.int64())),
        ("formatting_min", pa.int64()),
    ]
)


def img(name: str, path: str | None = None) -> dict:
    """An image struct; `path` as HF datasets stores it (often None or empty)."""
    return {"bytes": IMAGES[name], "path": path}


def turns(*pairs: tuple[str | None, str | None]) -> list[dict]:
    return [{"user": u, "assistant": a} for u, a in pairs]


def rows_subset_a_0() -> list[dict]:
    return [
        {"images": [img("photo_83x57.jpg")],
         "texts": turns(("Describe the image in one sentence.", "A small boat on the water."))},
        {"images": [],
         "texts": turns(("What is 2 + 3?", "5."), ("And times 4?", "20."))},
        {"images": [img("gray_70x45.png", ""), img("tall_11x170.png", "")],
         "texts": turns(("Compare the two pictures.", "The first is grey, the second is tall."))},
        {"images": [img("tiny_13x9.png", "charts/tiny.png")],
         "texts": turns(("Read the chart.\nAnswer briefly.", "Nothing to read."),
                        ("Sure?", "Yes."),
                        ("Ünïcødé ✓ 图表", "好的"))},
        {"images": [img("wide_150x12.png")],
         "texts": turns(("What shape is the image?", "Very wide."))},
        {"images": [img("rgba_45x38.png")],
         "texts": turns(("Is there transparency?", "Yes, an alpha channel."))},
        {"images": [{"bytes": BROKEN, "path": "broken.png"}],
         "texts": turns(("What is in this broken picture?", "Cannot tell."))},
    ]


def rows_subset_a_1() -> list[dict]:
    return [
        {"images": [img("photo_83x57.jpg"), img("photo_83x57.jpg")],
         "texts": turns(("Are these the same photo?", "Yes."))},
        {"images": [img("tall_11x170.png")],
         "texts": turns(("How tall is it?", "170 pixels."), ("How wide?", "11 pixels."))},
        # Malformed: a turn without a user text; readers report this row and go on.
        {"images": [img("gray_70x45.png")],
         "texts": turns((None, "An answer without a question."))},
        {"images": [],
         "texts": turns(("Say hello.", "Hello."))},
        {"images": [img("tiny_13x9.png")],
         "texts": turns(("Tiny?", "Tiny."))},
    ]


def rows_subset_b() -> list[dict]:
    rows = []
    names = list(IMAGES)
    for i in range(9):
        if i == 2:
            images = None  # a null list: no images
        elif i % 3 == 1:
            images = [img(names[i % len(names)]), img(names[(i + 2) % len(names)])]
        else:
            images = [img(names[i % len(names)])]
        texts = [(f"Question {i}.{t}: what do you see?", f"Answer {i}.{t}.") for t in range(1 + i % 3)]
        rows.append({"images": images, "texts": turns(*texts)})
    return rows


# subset directory, file name, rows, writer options.
FILES = [
    ("subset_a", "train-00000-of-00002.parquet", rows_subset_a_0(),
     dict(compression="snappy", row_group_size=3)),
    ("subset_a", "train-00001-of-00002.parquet", rows_subset_a_1(),
     dict(compression="zstd", row_group_size=2, data_page_version="2.0")),
    ("subset_b", "train-00000-of-00001.parquet", rows_subset_b(),
     dict(compression="snappy", row_group_size=4, use_dictionary=False)),
]


def table(rows: list[dict], source: str) -> pa.Table:
    cols = {
        "images": [r["images"] for r in rows],
        "texts": [r["texts"] for r in rows],
        "source": [source] * len(rows),
        "relevance_ratings": [[5, 4 + i % 2] for i in range(len(rows))],
        "formatting_min": [4] * len(rows),
    }
    meta = {b"huggingface": json.dumps({"info": {"features": {"images": "..."}}}).encode()}
    return pa.table(cols, schema=SCHEMA.with_metadata(meta))


def write(path: Path, t: pa.Table, **opts) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(t, path, **opts)


# ---------------------------------------------------------------------------------------
# The sampling rule of `interlace::data::choose_portion`, written again here so the tests
# check the Rust code against an independent implementation.

MASK = (1 << 64) - 1


class SplitMix64:
    def __init__(self, seed: int):
        self.state = seed & MASK

    def next_u64(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def below(self, bound: int) -> int:
        threshold = ((1 << 64) - bound) % bound
        while True:
            r = self.next_u64()
            if r >= threshold:
                return r % bound

    def shuffle(self, items: list) -> None:
        for i in range(len(items) - 1, 0, -1):
            j = self.below(i + 1)
            items[i], items[j] = items[j], items[i]


def choose(n: int, portion: float, samples: int | None, seed: int) -> list[int]:
    want = min(samples, n) if samples is not None else min(max(int(n * portion), 1), n)
    idx = list(range(n))
    SplitMix64(seed).shuffle(idx)
    return sorted(idx[:want])


def split_samples(total: int, sizes: list[int]) -> list[int]:
    """`total` samples over sources of `sizes` rows: largest remainder (Hamilton), ties to
    the earlier source; each share at most its source's size."""
    n = sum(sizes)
    if total >= n:
        return list(sizes)
    shares = [total * s // n for s in sizes]
    rema = [total * s % n for s in sizes]
    left = total - sum(shares)
    for i in sorted(range(len(sizes)), key=lambda i: (-rema[i], i))[:left]:
        shares[i] += 1
    return shares


def choose_portion(sizes: list[int], portion: float, samples: int | None, seed: int) -> list[list[int]]:
    if samples is None:
        return [choose(n, portion, None, seed) for n in sizes]
    return [choose(n, portion, k, seed) for n, k in zip(sizes, split_samples(samples, sizes))]


# ---------------------------------------------------------------------------------------


def sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def expected_rows(rel: str, path: Path) -> list[dict]:
    """Each row as pyarrow reads it back."""
    t = pq.read_table(path)
    out = []
    for i, r in enumerate(t.to_pylist()):
        images = [
            {"sha256": sha256(im["bytes"]), "len": len(im["bytes"]), "path": im["path"],
             "decodable": im["bytes"] != BROKEN}
            for im in (r["images"] or [])
        ]
        texts = r["texts"]
        bad = any(x["user"] is None or x["assistant"] is None for x in texts)
        out.append({"file": rel, "row": i, "images": images, "texts": texts, "malformed": bad})
    return out


def main() -> None:
    for d in (DATASET, BAD):
        if d.exists():
            shutil.rmtree(d)
    for subset, name, rows, opts in FILES:
        write(DATASET / subset / name, table(rows, subset), **opts)

    # Files every reader must reject with a clear message.
    ok = table(rows_subset_a_1()[:1], "bad")
    write(BAD / "brotli.parquet", ok, compression="brotli")  # a codec we do not build in
    write(BAD / "no_texts.parquet", ok.drop_columns(["texts"]), compression="snappy")
    write(BAD / "texts_are_strings.parquet",
          pa.table({"images": ok["images"], "texts": pa.array(["just a string"])}),
          compression="snappy")

    sources = []
    rows = []
    for subset in sorted({f[0] for f in FILES}):
        files = []
        for path in sorted((DATASET / subset).glob("*.parquet")):
            rel = path.relative_to(DATASET).as_posix()
            md = pq.ParquetFile(path).metadata
            files.append({
                "file": rel,
                "rows": md.num_rows,
                "row_groups": [md.row_group(g).num_rows for g in range(md.num_row_groups)],
                "compression": md.row_group(0).column(0).compression,
            })
            rows.extend(expected_rows(rel, path))
        sources.append({"name": subset, "files": files, "rows": sum(f["rows"] for f in files)})

    sizes = [s["rows"] for s in sources]
    choices = []
    for portion, samples, seed in [(0.1, 4, 42), (0.5, None, 7), (0.01, None, 42), (0.1, 100, 3), (0.3, 5, 1)]:
        chosen = choose_portion(sizes, portion, samples, seed)
        choices.append({"portion": portion, "samples": samples, "seed": seed,
                        "rows": {s["name"]: c for s, c in zip(sources, chosen)}})

    # The CLI test (`--samples 4`, default seed 42) must meet the undecodable image.
    first = {s["name"]: [r for r in rows if r["file"].startswith(s["name"] + "/")] for s in sources}
    cli = choices[0]
    hit = [first[n][i] for n, idx in cli["rows"].items() for i in idx]
    assert any(not im["decodable"] for r in hit for im in r["images"]), "re-arrange rows"

    expected = {
        "generator": f"tools/make_parquet_fixtures.py, pyarrow {pa.__version__}",
        "sources": sources,
        "rows": rows,
        "choices": choices,
    }
    (OUT / "finevision_expected.json").write_text(json.dumps(expected, indent=1, ensure_ascii=False) + "\n")

    total = 0
    for p in sorted(OUT.rglob("*")):
        if p.is_file():
            total += p.stat().st_size
            print(f"{p.relative_to(OUT).as_posix():60s} {p.stat().st_size:8d} B")
    print(f"total {total} B")


if __name__ == "__main__":
    main()
