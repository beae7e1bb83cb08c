#!/usr/bin/env python3
"""Draws the fine-tuning budget sweep (tools/demo_budget_sweep.sh's sweep.tsv) as an SVG
line chart: relative performance against optimizer steps, one line per learning rate,
the pruned model's level dashed; the rows of the file's first seed only. Standard
library only.

    python3 tools/plot_budget_sweep.py SWEEP.tsv demo/budget_sweep.svg
"""

import csv
import sys
from collections import defaultdict


def main() -> None:
    src, dst = sys.argv[1], sys.argv[2]
    rows = list(csv.DictReader(open(src), delimiter="\t"))
    # The curve of the first seed in the file (other seeds are checks at single points).
    rows = [r for r in rows if r["seed"] == rows[0]["seed"]]
    by_lr = defaultdict(list)
    for r in rows:
        by_lr[r["lr"]].append((int(r["steps"]), float(r["finetuned_rel"])))
    pruned = float(rows[0]["pruned_rel"])
    steps = sorted({int(r["steps"]) for r in rows} | {0})
    values = [v for pts in by_lr.values() for _, v in pts] + [pruned]
    y0, y1 = min(values) - 2, max(values) + 2
    W, H, L, R, T, B = 640, 380, 60, 150, 40, 50
    pw, ph = W - L - R, H - T - B
    x = lambda s: L + s / max(steps) * pw
    y = lambda v: T + (1 - (v - y0) / (y1 - y0)) * ph
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="{L + pw / 2}" y="22" text-anchor="middle" font-size="14">Pruned demo model (12 → 9 layers): fine-tuning budget sweep</text>',
        f'<rect x="{L}" y="{T}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>',
    ]
    for k in range(5):
        v = y0 + (y1 - y0) * k / 4
        out.append(f'<text x="{L - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.0f}</text>')
        out.append(f'<line x1="{L}" x2="{L + pw}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#eee"/>')
    for s in steps:
        out.append(f'<text x="{x(s):.1f}" y="{T + ph + 16}" text-anchor="middle">{s}</text>')
    out.append(f'<text x="{L + pw / 2}" y="{H - 12}" text-anchor="middle">optimizer steps (32 conversations each)</text>')
    out.append(f'<text x="16" y="{T + ph / 2}" transform="rotate(-90 16 {T + ph / 2})" text-anchor="middle">relative to dense (%)</text>')
    out.append(f'<line x1="{L}" x2="{L + pw}" y1="{y(pruned):.1f}" y2="{y(pruned):.1f}" stroke="#888" stroke-dasharray="5 4"/>')
    out.append(f'<text x="{L + pw + 8}" y="{y(pruned) + 4:.1f}" fill="#888">pruned {pruned:.1f}</text>')
    colors = ["#4c72b0", "#dd8452", "#55a868", "#c44e52"]
    for i, (lr, pts) in enumerate(sorted(by_lr.items(), key=lambda kv: float(kv[0]))):
        pts = [(0, pruned)] + sorted(pts)
        d = " ".join(f"{'M' if j == 0 else 'L'}{x(s):.1f},{y(v):.1f}" for j, (s, v) in enumerate(pts))
        c = colors[i % len(colors)]
        out.append(f'<path d="{d}" fill="none" stroke="{c}" stroke-width="2"/>')
        for s, v in pts[1:]:
            out.append(f'<circle cx="{x(s):.1f}" cy="{y(v):.1f}" r="3.5" fill="{c}"/>')
        ly = T + 60 + 20 * i
        out.append(f'<rect x="{L + pw + 10}" y="{ly - 10}" width="12" height="12" fill="{c}"/>')
        out.append(f'<text x="{L + pw + 28}" y="{ly}">lr {lr}</text>')
    out.append("</svg>")
    open(dst, "w").write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
