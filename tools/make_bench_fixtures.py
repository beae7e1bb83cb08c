#!/usr/bin/env python3
"""Writes the small VLMEvalKit-style benchmark files of tests/fixtures/bench/ (development
only; CI reads the committed files).

    /tmp/venv/bin/python tools/make_bench_fixtures.py   # needs Pillow

Files are written the way pandas' `DataFrame.to_csv(sep='\\t', index=False)` writes them
(VLMEvalKit's format): tab-separated, the header first, fields holding a tab, a quote or a
line break wrapped in double quotes with inner quotes doubled. Images are base64 PNGs in the
`image` column (a Python list literal for several images; a short cell naming another row's
index shares that row's image, as in MMBench) or paths in `image_path` relative to the file.

Each file mixes good rows with malformed ones. `expected.json` lists, per file, the rows,
which are malformed and why (a word the error must contain), and whether the problem is
found when the file is read or only when the row is run (bad base64, undecodable image,
missing image file).
"""

import base64
import csv
import io
import json
import os

from PIL import Image

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "bench")


def png_b64(w, h, seed, noise=False):
    img = Image.new("RGB", (w, h))
    px = img.load()
    state = seed
    for y in range(h):
        for x in range(w):
            if noise:
                # A fixed linear congruential sequence: incompressible pixels make a base64
                # cell larger than the 16 KiB that the reader keeps in memory.
                state = (state * 1103515245 + 12345) % (1 << 31)
                px[x, y] = (state % 256, (state >> 8) % 256, (state >> 16) % 256)
            else:
                px[x, y] = ((x * 7 + seed * 31) % 256, (y * 11 + seed * 17) % 256, (x * y + seed) % 256)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def write_tsv(name, header, rows):
    path = os.path.join(OUT, name)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter="\t", quotechar='"', quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
        w.writerow(header)
        for r in rows:
            w.writerow([r.get(h, "") for h in header])
    return path


def main():
    os.makedirs(OUT, exist_ok=True)
    img1 = png_b64(48, 40, 1)
    img2 = png_b64(40, 56, 2)
    img3 = png_b64(120, 100, 3, noise=True)
    # Valid base64, but the bytes are no image.
    garbage = base64.b64encode(b"this is not an image file at all, just text " * 4).decode("ascii")
    bad_b64 = "iVBORw0KGgo*NOT*BASE64*" + "!" * 60
    expected = {}

    # Multiple choice: the task follows from the option columns A and B.
    header = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "l2-category", "image"]
    rows = [
        dict(index=1, question="What colour dominates the picture?", hint="Look at the whole image.",
             A="red", B="green", C="blue", D="grey", answer="B", category="colour", **{"l2-category": "perception"},
             image=img1),
        dict(index=2, question="Which shape is shown?", A="square", B="circle", C="triangle", answer="A",
             category="shape", **{"l2-category": "perception"}, image="1"),
        dict(index=3, question="Compare the two pictures. Which is wider?", A="the first", B="the second",
             C="both the same", answer="C", category="compare", **{"l2-category": "reasoning"},
             image=str([img2, img3])),
        dict(index=4, question="Pick one.", A="yes", B="no", answer="E", category="shape", image=img1),
        dict(index=5, question="Pick one.", A="yes", B="no", answer="", category="shape", image=img1),
        dict(index=6, question="Pick one.", A="yes", B="no", answer="A", category="shape", image=bad_b64),
        dict(index=7, question='A "quoted"\tquestion\non two lines?', A='say "hi"', B="tab\there", C="c",
             D="d", answer="D", category="colour", **{"l2-category": "perception"}, image=img3),
        dict(index=8, question="", A="yes", B="no", answer="A", category="shape", image=img1),
        dict(index=9, question="Pick one.", A="yes", B="no", answer="B", category="shape", image=garbage),
    ]
    write_tsv("mcq_fixture.tsv", header, rows)
    expected["mcq_fixture"] = {
        "task": "mcq",
        "rows": len(rows),
        "malformed": {"4": "options", "5": "no answer", "6": "base64", "8": "no question", "9": "image"},
        "found_when_read": ["4", "5", "8"],
        "images": {"1": 1, "2": 1, "3": 2, "7": 1},
    }

    # Yes/no: the name contains "POPE", so F1 is the headline score and comma-separated
    # categories count for each part.
    header = ["index", "question", "answer", "category", "image"]
    rows = [
        dict(index=1, question="Is there a dog in the image?", answer="yes", category="adversarial", image=img1),
        dict(index=2, question="Is there a car in the image?", answer="no", category="popular", image=img2),
        dict(index=3, question="Is there a tree in the image?", answer="Yes", category="adversarial,random",
             image=img3),
        dict(index=4, question="Is there a cat in the image?", answer="maybe", category="random", image=img1),
        dict(index=5, question="Is there a bus in the image?", answer="no", category="random", image=bad_b64),
        dict(index=6, question="Is there a cup in the image?", answer="", category="random", image=img2),
    ]
    write_tsv("POPE_fixture.tsv", header, rows)
    expected["POPE_fixture"] = {
        "task": "yorn",
        "rows": len(rows),
        "malformed": {"4": "neither yes nor no", "5": "base64", "6": "no answer"},
        "found_when_read": ["4", "6"],
        "images": {"1": 1, "2": 1, "3": 1},
    }

    # Open VQA: no option columns; images as paths relative to the file (the fixture images
    # of tests/fixtures/images); ten human answers as a list literal.
    header = ["index", "question", "answer", "category", "image_path"]
    rows = [
        dict(index=1, question="How many boats are there?",
             answer=str(["two", "2", "2", "two", "three", "2", "2", "2", "two", "2"]), category="counting",
             image_path="../images/photo_83x57.jpg"),
        dict(index=2, question="What animal is shown?", answer="cat", category="objects",
             image_path=str(["../images/gray_70x45.png", "../images/odd_97x61.png"])),
        dict(index=3, question="What is written on the sign?", answer="", category="text",
             image_path="../images/odd_97x61.png"),
        dict(index=4, question="What is this?", answer="a lamp", category="objects",
             image_path="../images/does_not_exist.png"),
        dict(index=5, question="", answer="x", category="objects", image_path="../images/odd_97x61.png"),
    ]
    write_tsv("vqa_fixture.tsv", header, rows)
    expected["vqa_fixture"] = {
        "task": "vqa",
        "rows": len(rows),
        "malformed": {"3": "no answer", "4": "does_not_exist.png", "5": "no question"},
        "found_when_read": ["3", "5"],
        "images": {"1": 1, "2": 2},
    }

    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
        f.write("\n")

    lines = [
        "# Benchmark fixtures (generated by `tools/make_bench_fixtures.py` — do not edit by hand)",
        "",
        "Small files in VLMEvalKit's TSV format for `tests/eval_cli.rs`, written as pandas writes",
        "them. Regenerate with `/tmp/venv/bin/python tools/make_bench_fixtures.py` (deterministic).",
        "",
        "| file | task (how it is found) | rows | malformed rows (index: problem) |",
        "|---|---|---:|---|",
    ]
    how = {
        "mcq_fixture": "mcq (option columns A and B)",
        "POPE_fixture": "yorn (the name contains POPE)",
        "vqa_fixture": "vqa (no option columns)",
    }
    for name in ["mcq_fixture", "POPE_fixture", "vqa_fixture"]:
        e = expected[name]
        bad = "; ".join(f"{k}: {v}" for k, v in sorted(e["malformed"].items(), key=lambda kv: int(kv[0])))
        lines.append(f"| {name}.tsv | {how[name]} | {e['rows']} | {bad} |")
    lines += [
        "",
        "`mcq_fixture.tsv` also has a row whose image cell names another row (shared image), a",
        "row with two images (a list literal of base64 strings), a quoted question with a tab, a",
        "line break and quotes, and one image larger than the reader's 16 KiB in-memory limit.",
        "`vqa_fixture.tsv` names images by path (`image_path`, relative to the file, into",
        "`../images/`) and has ten human answers as a list literal.",
        "`expected.json` holds what the test checks: rows, malformed rows with a word of their",
        "error, which of them are found when the file is read, and the image count of good rows.",
        "",
    ]
    with open(os.path.join(OUT, "README.md"), "w") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    main()
