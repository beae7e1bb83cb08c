#!/usr/bin/env python3
"""PyTorch's (MKL's) f32 throughput on one training product shape, to set beside
`examples/sgemm_probe M N K COPIES` (development tool; see BENCHMARKS.md, session 32):
the forward `x @ w.T`, the input gradient `dy @ w` and the weight gradient `dy.T @ x` for
`x` (M, K), `w` (N, K), `dy` (M, N); mean of 10 calls after 3 warm-up calls.

    /tmp/venv/bin/python tools/bench_matmul.py 900 1536 512 [--threads 2]
"""

import argparse
import time

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("m", type=int)
    ap.add_argument("n", type=int)
    ap.add_argument("k", type=int)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    x, w, dy = torch.randn(a.m, a.k), torch.randn(a.n, a.k), torch.randn(a.m, a.n)

    def gflops(f):
        for _ in range(3):
            f()
        t = time.perf_counter()
        for _ in range(10):
            f()
        return 2 * a.m * a.n * a.k / 1e9 / ((time.perf_counter() - t) / 10)

    fwd, dx, dw = gflops(lambda: x @ w.T), gflops(lambda: dy @ w), gflops(lambda: dy.T @ x)
    print(f"PyTorch ({a.m}, {a.n}, {a.k}), {a.threads} threads: x·wᵀ {fwd:.1f}, dy·w {dx:.1f}, "
          f"dyᵀ·x {dw:.1f} GFLOP/s")


if __name__ == "__main__":
    main()
