#!/usr/bin/env bash
# Prints the line that lets the GPU binary (scripts/build-cuda.sh) find its CUDA libraries
# (libcudart.so.13, libcublas.so.13, libcublasLt.so.13; libcurand.so.10 where there is one):
#
#   eval "$(scripts/cuda-env.sh)"      # then run target-cuda/release/interlace
#
# It looks, in order, in the NVIDIA wheels of the Python on PATH (a PyTorch cu13x install
# has them in site-packages/nvidia/cu13/lib), in torch/lib, and in this repository's .cuda/
# (what scripts/build-cuda.sh installed). libcuda.so.1 is the NVIDIA driver's and comes
# from the system. Prints nothing and exits 1 when no libcublas.so.13 is found.
set -uo pipefail
cd "$(dirname "$0")/.."
found=$("${PYTHON:-python3}" - <<'PY' 2>/dev/null
import glob, os, site, sys
roots = [p for p in sys.path if p and os.path.isdir(p)]
try:
    roots += site.getsitepackages()
except Exception:
    pass
for r in roots:
    for d in sorted(glob.glob(os.path.join(r, "nvidia", "cu13", "lib"))) + sorted(glob.glob(os.path.join(r, "nvidia", "*", "lib"))) + [os.path.join(r, "torch", "lib")]:
        if os.path.exists(os.path.join(d, "libcublas.so.13")):
            print(d)
            raise SystemExit
PY
)
if [ -z "$found" ] && [ -e "$PWD/.cuda/py/nvidia/cu13/lib/libcublas.so.13" ]; then
    found="$PWD/.cuda/py/nvidia/cu13/lib"
fi
[ -n "$found" ] || { echo "cuda-env.sh: no libcublas.so.13 found (install PyTorch cu13x, or run scripts/build-cuda.sh)" >&2; exit 1; }
echo "export LD_LIBRARY_PATH=\"$found\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}\""
