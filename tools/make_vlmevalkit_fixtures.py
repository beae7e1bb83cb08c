#!/usr/bin/env python3
"""Expected verdicts of VLMEvalKit's own scoring functions on probe predictions, written to
tests/fixtures/vlmevalkit/verdicts.json for tests/vlmevalkit_rules.rs.

Development tool only (CI has no Python). Needs pandas and numpy, and a checkout of
open-compass/VLMEvalKit (the functions are loaded from its source files, not
reimplemented):

    git clone https://github.com/open-compass/VLMEvalKit /tmp/vlmevalkit
    /tmp/venv/bin/python tools/make_vlmevalkit_fixtures.py --vlmevalkit /tmp/vlmevalkit

What is called:
- `can_infer` of vlmeval/utils/matching_util.py (the whole module, with a stub logger), as
  `extract_answer_from_item` calls it under `exact_matching` (False becomes option "Z");
- the body of `CountBenchQA.evaluate` (vlmeval/dataset/image_vqa.py): `ans in pred` on the
  str() of both;
- `POPE_rating` of vlmeval/dataset/utils/yorn.py (the function's source, executed with
  pandas, numpy and a `load` that returns the probe table);
- the xlsx round trip of predictions (`dump_xlsx` of vlmeval/smp/file.py: xlsxwriter with
  strings_to_formulas off, then `pd.read_excel`) and the `str(x)` every evaluator applies:
  what a prediction is when it is scored (needs openpyxl and xlsxwriter);
- a predictions file as VLMEvalKit's inference leaves it, written by its own `dump`
  (vlmeval/smp/file.py) as probe_AI2D_TEST.xlsx and probe_AI2D_TEST.tsv, read back by its
  own `load`: the `str()` of every cell, and each row's option under exact matching
  (`build_choices` of dataset/utils/multiple_choice.py, then `can_infer`, 'Z' when none),
  written to predictions_file.json;
- circular evaluation: `mcq_circular_eval` of dataset/utils/multiple_choice.py (exact
  matching: no judge model), on two predictions files written by `dump`: MMBench-style
  indices (rotation k of question i has index i + k * 1 000 000) and a `g_index` column;
  each question's hit and the mean, also in predictions_file.json.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import io
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "vlmevalkit" / "verdicts.json"


def load_matching_util(repo: Path):
    # matching_util imports only `vlmeval.smp.log.get_logger`; stub that package path.
    import logging

    for name in ["vlmeval", "vlmeval.smp", "vlmeval.smp.log"]:
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["vlmeval.smp.log"].get_logger = logging.getLogger
    path = repo / "vlmeval" / "utils" / "matching_util.py"
    spec = importlib.util.spec_from_file_location("matching_util", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def function_from_source(path: Path, name: str, namespace: dict):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == name:
            code = ast.get_source_segment(path.read_text(), node)
            exec(code, namespace)  # noqa: S102 -- VLMEvalKit's own function
            return namespace[name]
    raise SystemExit(f"{path}: no function {name}")


CHOICES = [
    {"A": "circle", "B": "square", "C": "triangle", "D": "star"},
    {"A": "red", "B": "blue"},
    {"A": "12", "B": "7", "C": "3"},
    {"A": "the left one", "B": "the right one", "C": "neither", "D": "both of them"},
]

PREDICTIONS = [
    "A",
    "B.",
    "(C)",
    "Answer: D",
    "A is the correct answer because the star is the largest of all shapes shown",
    "The correct answer is A",
    "I think the correct answer is **C**, not A or D",
    "The answer is b",
    "the answer is a cat",
    "Answer is: B",
    "answer   is\tC because",
    "A or B",
    "Option B is right, not C",
    "circle",
    "It is a circle.",
    "square and circle",
    "It looks like a very large blue square drawn in the middle of the picture, I am sure",
    "blue",
    "Blue!",
    "red or blue",
    "7",
    "3 or 12",
    "Z",
    "None of these, Z",
    "Cannot determine the answer",
    "I can't process this file.",
    "Failed to obtain answer via API",
    "",
    "  ",
    "B) square",
    "**B**",
    "Option: C",
    "The answer is E",
    "CORRECT ANSWER IS D",
    "The correct answer is: A",
    "So the answer is **D**. The others are wrong: A, B and C.",
    "D D",
    "A B C D",
    "I would say that the answer here is B",
    "It is B, I think. Final.",
    "B, because it is blue and the other one is red",
    "neither",
    "both of them, the left one and the right one",
    "the right one",
]

COUNTS = [
    ("2", "2"),
    ("There are 12 stars", "2"),
    ("There are 12 stars", "12"),
    ("2 or 3", "3"),
    ("three", "3"),
    ("3.", "3"),
    ("30", "3"),
    ("", "0"),
    ("I count 4 circles and 1 square", "1"),
    ("zero", "0"),
]

# POPE probe: (category, answer, extracted) rows; comma-joined categories count once per
# split in VLMEvalKit.
POPE = [
    ("adversarial,popular,random", "Yes", "Yes"),
    ("adversarial", "No", "Yes"),
    ("popular,random", "Yes", "No"),
    ("random", "No", "No"),
    ("adversarial,random", "Yes", "Yes"),
    ("popular", "No", "No"),
]


# Values for a mixed (object) column of the predictions file: what pandas and openpyxl
# make of each kind of cell.
PROBE_VALUES = [
    "text", 3, 0.5, 1e-05, 2.0, True, False, None, "  spaced  ", "line\nbreak",
    "tab\there", "ünïcödé ✓", "=1+1", "None", "#N/A", 12345678901234567890, -0.0, 1.5e16,
    "\x01ctrl", "_x0041_", "a\r\nb", 123.456, -7, "3", "1.0", 1.5e-7, "", " ",
]


def predictions_file(repo: Path, mu) -> dict:
    """probe_AI2D_TEST.{xlsx,tsv} written by VLMEvalKit's `dump`, and what its `load` and
    exact matching make of them."""
    import csv
    import logging
    import pickle

    ns = {"pd": pd, "np": np, "csv": csv, "json": json, "pickle": pickle,
          "logger": logging.getLogger("vlmeval"), "NumpyEncoder": json.JSONEncoder}
    file_py = repo / "vlmeval" / "smp" / "file.py"
    dump = function_from_source(file_py, "dump", ns)
    validators = types.ModuleType("validators")
    validators.url = lambda _: False
    sys.modules["validators"] = validators
    load = function_from_source(file_py, "load", ns)
    import string
    ns_mc = {"pd": pd, "string": string}
    build_choices = function_from_source(
        repo / "vlmeval" / "dataset" / "utils" / "multiple_choice.py", "build_choices", ns_mc
    )
    rows = []
    for i, pred in enumerate(PREDICTIONS):
        choices = CHOICES[i % len(CHOICES)]
        row = {"index": i + 1, "question": f"Probe question {i + 1}?"}
        for letter in "ABCD":
            row[letter] = choices.get(letter)
        row["answer"] = "ABCD"[i % len(choices)] if i % 3 else "B"
        row["category"] = ["shapes", "colours", "numbers", "places"][i % len(CHOICES)]
        row["probe"] = PROBE_VALUES[i % len(PROBE_VALUES)]
        row["prediction"] = pred
        rows.append(row)
    table = pd.DataFrame(rows)
    out_dir = OUT.parent
    written = {}
    for ext in ["xlsx", "tsv"]:
        path = out_dir / f"probe_AI2D_TEST.{ext}"
        dump(table, str(path))
        back = load(str(path))
        cells = [[str(back.iloc[r][c]) for c in back.columns] for r in range(len(back))]
        options = []
        for r in range(len(back)):
            item = back.iloc[r]
            got = mu.can_infer(item["prediction"], build_choices(item))
            options.append(got or "Z")
        written[ext] = {
            "file": path.name,
            "columns": [str(c) for c in back.columns],
            "cells": cells,
            "options": options,
            "correct": [o == str(back.iloc[r]["answer"]) for r, o in enumerate(options)],
        }
    written["circular"] = [circular_probe(repo, mu, dump, load, g) for g in (False, True)]
    return written


# Circular probe: (options, answer, predictions of the rotations). Rotation k shifts the
# option texts by k places, so the right letter moves with them; in a prediction "{R}" is
# the right letter of that rotation and "{W}" a wrong one.
CIRCULAR = [
    (["circle", "square", "triangle", "star"], "B", ["{R}", "{R}", "{R}", "{R}"]),  # all right
    (["circle", "square", "triangle", "star"], "A", ["{R}", "{R}", "{R}", "{W}"]),  # last wrong
    (["red", "blue"], "A", ["{R}", "({R})"]),
    (["red", "blue"], "B", ["The answer is {R}", "I cannot tell"]),  # unreadable rotation
    (["12", "7", "3"], "C", ["3", "3", "3"]),  # the option text
    (["12", "7", "3"], "A", ["A", "A", "A"]),  # always the same letter
    (["yes", "no", "maybe"], "C", ["{R}", "{W}", "{R}"]),
    (["left", "right", "both", "neither"], "D", ["Answer: {R}", "{R}", "{R}.", "**{R}**"]),
]


def circular_probe(repo: Path, mu, dump, load, g_index: bool):
    """A circular predictions table, written by `dump` and scored by VLMEvalKit's
    `mcq_circular_eval` from its source (exact matching)."""
    import logging
    import os
    import string
    import tempfile

    from datetime import datetime

    rows = []
    for q, (options, answer, preds) in enumerate(CIRCULAR):
        main = 100 + q if g_index else q + 1
        n = len(options)
        for k, pred in enumerate(preds):
            rotated = options[k:] + options[:k]
            letter = "ABCD"[(("ABCD".index(answer)) - k) % n]
            # g_index: any indices, grouped by the column; else VLMEvalKit's own numbering.
            if g_index:
                index = main * 10 + k if k else main
            else:
                index = main + k * 1_000_000
            row = {"index": index, "question": f"Circular probe {q + 1}?"}
            for i, letter_name in enumerate("ABCD"):
                row[letter_name] = rotated[i] if i < n else None
            row["answer"] = letter
            row["category"] = f"q{q + 1}"
            if g_index:
                row["g_index"] = main
            wrong = "ABCD"[("ABCD".index(letter) + 1) % n]
            row["prediction"] = pred.format(R=letter, W=wrong)
            rows.append(row)
    name = "probe_circular.tsv" if g_index else "probe_MMBench_DEV_EN.tsv"
    path = OUT.parent / name
    dump(pd.DataFrame(rows), str(path))
    data = load(str(path))
    meta = data.drop(columns=["prediction"])
    src = repo / "vlmeval" / "dataset" / "utils" / "multiple_choice.py"
    ns = {
        "pd": pd, "np": np, "osp": os.path, "string": string, "load": load, "dump": dump,
        "istype": lambda s, t: isinstance(s, t) or isinstance(s, np.integer) and t is int,
        "logger": logging.getLogger("vlmeval"), "can_infer": mu.can_infer,
        "get_pred_file_format": lambda: "xlsx",
        "timestr": lambda: datetime.now().strftime("%Y%m%d%H%M%S%f"),
    }
    for fn in ["build_choices", "prefetch_answer", "prefetch_circular_group", "mcq_circular_eval"]:
        function_from_source(src, fn, ns)
    with tempfile.TemporaryDirectory() as tmp:
        scored = ns["mcq_circular_eval"](None, data.copy(), meta, 1, os.path.join(tmp, "r.pkl"))
    hits = {f"q{q + 1}": int(h) for q, h in enumerate(scored.sort_values("index")["hit"])}
    return {"file": name, "hits": hits, "accuracy": float(np.mean(list(hits.values())))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vlmevalkit", type=Path, required=True, help="a VLMEvalKit checkout")
    ap.add_argument("--commit", default="", help="its commit, when it is not a git checkout")
    args = ap.parse_args()
    repo = args.vlmevalkit
    mu = load_matching_util(repo)
    mcq = []
    for choices in CHOICES:
        for pred in PREDICTIONS:
            got = mu.can_infer(pred, dict(choices))
            mcq.append({"prediction": pred, "choices": choices, "option": got or "Z"})

    counts = [{"prediction": p, "answer": a, "correct": str(a) in str(p)} for p, a in COUNTS]

    ns = {"np": np, "pd": pd}
    table = pd.DataFrame(
        {
            "category": [c for c, _, _ in POPE],
            "answer": [a for _, a, _ in POPE],
            "extracted": [e for _, _, e in POPE],
        }
    )
    table["score"] = (table["answer"] == table["extracted"]).astype(float)
    ns["load"] = lambda _: table.copy()
    pope_rating = function_from_source(
        repo / "vlmeval" / "dataset" / "utils" / "yorn.py", "POPE_rating", ns
    )
    res = pope_rating("probe")
    pope = {
        "rows": [{"category": c, "answer": a, "extracted": e} for c, a, e in POPE],
        # Sorted: VLMEvalKit lists the splits in set order, which varies between runs.
        "splits": dict(sorted({
            str(s): {"F1": float(f), "acc": float(acc), "precision": float(p), "recall": float(r)}
            for s, f, acc, p, r in zip(
                res["split"], res["Overall"], res["acc"], res["precision"], res["recall"]
            )
        }.items())),
    }
    probes = [
        "None", "NA", "", " ", "nan", "NaN", "null", "N/A", "n/a", "<NA>", "#N/A", "A",
        "None of the above", "none", " None", "3", "1.0", "TRUE", "True", "=1+1", "-nan",
        "NULL", "#NA", "#N/A N/A", "-1.#IND", "1.#QNAN", "-NaN", "Yes", "No",
    ]
    buf = io.BytesIO()
    with pd.ExcelWriter(
        buf, engine="xlsxwriter", engine_kwargs={"options": {"strings_to_formulas": False}}
    ) as writer:
        pd.DataFrame({"prediction": probes}).to_excel(writer, index=False)
    buf.seek(0)
    back = pd.read_excel(buf)
    xlsx = [{"written": p, "scored": str(x)} for p, x in zip(probes, back["prediction"])]
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        commit = ""
    commit = commit or args.commit
    meta = {
        "generated_by": "tools/make_vlmevalkit_fixtures.py",
        "vlmevalkit_commit": commit or "(not a git checkout)",
        "mcq": mcq,
        "count": counts,
        "pope": pope,
        "xlsx_round_trip": xlsx,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n")
    files = predictions_file(repo, mu)
    files["vlmevalkit_commit"] = meta["vlmevalkit_commit"]
    (OUT.parent / "predictions_file.json").write_text(
        json.dumps(files, indent=1, ensure_ascii=False) + "\n"
    )
    print(f"{OUT}: {len(mcq)} MCQ, {len(counts)} counting probes, POPE splits {list(pope['splits'])}")


if __name__ == "__main__":
    main()
