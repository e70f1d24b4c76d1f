#!/usr/bin/env bash
# GPU check for optdisco, one command on a CUDA machine (about 10 minutes in all):
#   bash benchmarks/gpu_check.sh [--quick]
# 1. the kernel tests with Triton compiled for the GPU (not interpreted): every catalog rule,
#    bf16 parameters, random programs, noise and stochastic rounding, on CUDA tensors;
# 2. the kernel benchmark (GPU table, then CPU table); arguments go to bench_kernels.py;
# 3. a short `optdisco validate` at gpu scale of AdamW, Lion and the best found rule (Lion
#    again when the catalog has no found rule) on the GPT-style LM, the ResNet and the
#    MLP-mixer, bf16 with the Triton kernels, cut off after $VALIDATE_SECONDS (it resumes
#    from gpu_check.results.jsonl when rerun);
# then a table of the steps and, last, validate's summary table (report: runs/gpu_check.html;
# delete runs/gpu_check.* for a fresh validation instead of a resumed one).
# tests/evaluators/test_validate_cli.py runs VALIDATE_ARGS below at cpu scale.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python
unset TRITON_INTERPRET
VALIDATE_ARGS=(--task ho_char_lm --task ho_resnet --task ho_mixer --seeds 2 --budget 0.1)
VALIDATE_SECONDS="${VALIDATE_SECONDS:-300}"
OUT="${GPU_CHECK_OUT:-runs/gpu_check.html}"
"$PY" - <<'PYEOF' || exit 1
import torch, triton
assert torch.cuda.is_available(), "gpu_check.sh needs a CUDA device (torch sees none)"
print("device:", torch.cuda.get_device_name(), "| torch", torch.__version__, "| triton", triton.__version__)
PYEOF
declare -a STEPS=()
step() {  # step NAME COMMAND...: run it, remember its status and time
  local name="$1"; shift
  local t0=$SECONDS
  "$@"; local rc=$?
  local status="FAILED($rc)"
  [ $rc -eq 0 ] && status=ok
  [ $rc -eq 124 ] && status="cut off (rerun resumes)"
  STEPS+=("$(printf '%-14s %5ds  %s' "$name" $((SECONDS - t0)) "$status")")
}
step "kernel tests" "$PY" -m pytest -q tests/kernels
step "kernel bench" "$PY" benchmarks/bench_kernels.py "$@"
BEST=$("$PY" -c "from optdisco.validation.targets import best_found_rule; print(best_found_rule() or 'lion')")
echo "validate: adamw, lion, best found rule: $BEST"
step "validate" timeout "$VALIDATE_SECONDS" "$PY" -m optdisco.cli validate "$BEST" --scale gpu "${VALIDATE_ARGS[@]}" -o "$OUT"
echo
echo "gpu_check summary"
printf '%s\n' "${STEPS[@]}"
# Last: validate's table from its results file (trains nothing; partial if it was cut off).
COLUMNS="${COLUMNS:-150}" "$PY" -m optdisco.cli validate "$BEST" --scale gpu "${VALIDATE_ARGS[@]}" -o "$OUT" --report-only
