#!/usr/bin/env bash
# GPU check for optdisco.kernels, one command on a CUDA machine:
#   bash benchmarks/gpu_check.sh [--quick]
# 1. the kernel tests with Triton compiled for the GPU (not interpreted): every catalog rule,
#    bf16 parameters, random programs, noise and stochastic rounding, on CUDA tensors;
# 2. the benchmark (GPU table, then CPU table); arguments go to bench_kernels.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python
unset TRITON_INTERPRET
"$PY" - <<'PYEOF'
import torch, triton
assert torch.cuda.is_available(), "gpu_check.sh needs a CUDA device (torch sees none)"
print("device:", torch.cuda.get_device_name(), "| torch", torch.__version__, "| triton", triton.__version__)
PYEOF
"$PY" -m pytest -q tests/kernels
"$PY" benchmarks/bench_kernels.py "$@"
