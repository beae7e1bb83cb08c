#!/usr/bin/env python3
"""Check `interlace synth` output with pyarrow and PIL (development only; CI has no Python).

Usage: /tmp/venv/bin/python tools/check_synth.py OUT_DIR

- every training file reads with pyarrow and has FineVision's schema
  (images: list<struct<bytes: binary, path: string>>, texts: list<struct<user: string,
  assistant: string>>, source: string);
- decoding as HF `datasets` does for `Sequence(Image())` works: every image's bytes open
  with PIL as a PNG of at most 50176 pixels with sides multiples of 32;
- every benchmark TSV reads with pandas-style parsing (csv module, tab-separated) and its
  base64 images decode as PNGs; the manifest names every file.
"""

import base64
import csv
import io
import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

csv.field_size_limit(1 << 30)


def check_image(data: bytes, what: str) -> None:
    img = Image.open(io.BytesIO(data))
    assert img.format == "PNG", f"{what}: {img.format}"
    img.load()
    w, h = img.size
    assert w % 32 == 0 and h % 32 == 0 and w * h <= 50176, f"{what}: {w}x{h}"


def main(out: Path) -> None:
    manifest = json.loads((out / "synth.json").read_text())
    image_t = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    text_t = pa.struct([("user", pa.string()), ("assistant", pa.string())])
    rows = 0
    for family in manifest["families"]:
        files = sorted((out / manifest["train"] / family).glob("*.parquet"))
        assert files, family
        for f in files:
            table = pq.read_table(f)
            schema = table.schema
            assert schema.field("images").type.value_type == image_t, schema
            assert schema.field("texts").type.value_type == text_t, schema
            assert schema.field("source").type == pa.string(), schema
            assert pa.types.is_list(schema.field("images").type)
            assert pa.types.is_list(schema.field("texts").type)
            meta = pq.ParquetFile(f).metadata
            for i, row in enumerate(table.to_pylist()):
                assert row["source"] == family
                assert len(row["images"]) == 1 and len(row["texts"]) in (1, 2)
                img = row["images"][0]
                assert img["path"] is None
                check_image(img["bytes"], f"{f}#{i}")
                t = row["texts"][0]
                assert t["user"] and t["assistant"], f"{f}#{i}"
                if len(row["texts"]) == 2:  # synth --captions
                    c = row["texts"][1]
                    assert c["user"] == "Describe the image." and c["assistant"], f"{f}#{i}"
                rows += 1
            print(f"{f.relative_to(out)}: {table.num_rows} rows, {meta.num_row_groups} row groups, ok")
    for b in manifest["benchmarks"]:
        path = out / b["file"]
        with open(path, newline="") as fh:
            records = list(csv.DictReader(fh, delimiter="\t"))
        assert len(records) == b["rows"], (path, len(records))
        for r in records:
            check_image(base64.b64decode(r["image"]), f"{path}#{r['index']}")
            assert r["question"] and r["answer"]
        print(f"{b['file']}: {len(records)} rows, task {b['task']}, {b['category']}, chance {b['chance']:.3f}, ok")
    print(f"all good: {rows} training rows")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
