#!/usr/bin/env bash
# GPU checks in one run (under 10 minutes): the CUDA tests, then the real training loops
# (benchmarks/gpu_loops.py: throughput and MFU, UF1 fp32 vs fast path, the MEGC-sized run,
# bf16 prior learning, packing); the training-step grid (gpu_bench.py) with STEP_BENCH=1, the
# MFU tries (gpu_bench.py --tries) with MFU_TRIES=1.
#
#   bash benchmarks/gpu.sh            # from the repository root, on a machine with a CUDA GPU
#
# Writes gpu.log, gpu_tests.xml and gpu_loops.json (gpu_bench.json) to $OUT (benchmarks/ when OUT is unset).
# The key-frame stage of the UF1 part needs decord2 and openpyxl: on a machine without a package
# registry, install their wheels first (benchmarks/README.md, "GPU").
# The tests and the step benchmark need torch with CUDA, pytest and numpy (they import only
# mer.train.models and mer.train.losses); the loops need requirements.txt, installed here when missing. When torch is missing or CPU-only it tries
# `pip install torch==2.13.0` (PyPI's default Linux wheel is the CUDA build) and says so.
# Dry run on a CPU machine (no install; tests skip; benchmarks at tiny sizes, no compile; CI
# runs it, tests/test_benchmarks_smoke.py):
#   SMOKE=1 PYTHON=.venv/bin/python bash benchmarks/gpu.sh
set -u
cd "$(dirname "$0")/.."
DEST=${OUT:-benchmarks}
mkdir -p "$DEST"
export PYTHONUNBUFFERED=1
exec > >(tee "$DEST/gpu.log") 2>&1

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for candidate in python3 python; do
    if command -v "$candidate" >/dev/null && "$candidate" -c "import torch" 2>/dev/null; then
      PY=$candidate
      break
    fi
  done
  PY=${PY:-python3}
fi
echo "== $(date -u +%FT%TZ) $(hostname); python: $(command -v "$PY") ($("$PY" --version 2>&1))"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 \
  || echo "nvidia-smi: not available"

torch_status() {
  "$PY" -c "import torch; print(torch.__version__, torch.cuda.is_available())" 2>&1 | tail -1
}
found=$(torch_status)
echo "== torch found: $found"
SMOKE=${SMOKE:-0}
case "$SMOKE/$found" in
  1/* | */*" True") ;;
  *)
    echo "== torch is missing or has no CUDA here; trying: $PY -m pip install torch==2.13.0"
    if timeout 180 "$PY" -m pip install -q torch==2.13.0; then
      found=$(torch_status)
      echo "== torch after pip install: $found"
    else
      echo "== pip install torch==2.13.0 failed (no package registry reachable?)"
    fi
    ;;
esac
case "$SMOKE/$found" in
  1/* | */*" True") ;;
  *) echo "== no CUDA-capable torch: the GPU checks cannot run here"; exit 2 ;;
esac
"$PY" -c "import pytest, numpy" 2>/dev/null || timeout 60 "$PY" -m pip install -q pytest numpy

# The MFU tries (gpu_bench.py --tries: the loops' fast path, then one change per row), with
# MFU_TRIES=1; TRIES_BUDGET seconds (default 200), compiled rows bounded at 100 s each.
tries() {
  local tb=${TRIES_BUDGET:-200}
  local flags=(--tries --budget "$tb" --compile-timeout 100 --max-timed-s 5)
  [ "$SMOKE" = 1 ] && flags=(--tries --cpu-smoke --no-compile)
  echo "== MFU tries: $PY benchmarks/gpu_bench.py ${flags[*]}"
  timeout $((tb + 60)) "$PY" benchmarks/gpu_bench.py --out "$DEST/gpu_tries.json" "${flags[@]}"
}

# The 68-fold protocol with shared priors instead of the checks below (one call's worth):
#   PROTOCOL_GROUPS=8 bash benchmarks/gpu.sh      # writes gpu_protocol.json (benchmarks/README.md)
#   PROTOCOL_GROUPS=8 PROTOCOL_BUDGET=300 MFU_TRIES=1 bash benchmarks/gpu.sh   # then the tries
if [ -n "${PROTOCOL_GROUPS:-}" ]; then
  budget=${PROTOCOL_BUDGET:-520}
  protocol_flags=(--groups "$PROTOCOL_GROUPS" --budget "$budget" --out "$DEST/gpu_protocol.json")
  [ "$SMOKE" = 1 ] && protocol_flags+=(--cpu-smoke)
  [ "${PRIOR_AMP:-0}" = 1 ] && protocol_flags+=(--prior-amp)
  echo "== protocol: $PY benchmarks/gpu_protocol.py ${protocol_flags[*]}"
  timeout $((budget + 60)) "$PY" benchmarks/gpu_protocol.py "${protocol_flags[@]}"
  rc=$?
  tries_rc=0
  if [ "${MFU_TRIES:-0}" = 1 ]; then
    tries
    tries_rc=$?
  fi
  echo "== done: protocol exit $rc, MFU tries exit $tries_rc"
  [ "$rc" -eq 0 ] && [ "$tries_rc" -eq 0 ]
  exit $?
fi

echo "== tests: $PY -m pytest -q -m gpu tests/test_gpu.py"
timeout 90 "$PY" -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider \
  --junitxml="$DEST/gpu_tests.xml"
tests_rc=$?

bench_rc=0
if [ "${STEP_BENCH:-0}" = 1 ]; then
  echo "== benchmark: $PY benchmarks/gpu_bench.py"
  bench_flags=(--budget 170)
  [ "$SMOKE" = 1 ] && bench_flags=(--cpu-smoke --no-compile)
  timeout 210 "$PY" benchmarks/gpu_bench.py --out "$DEST/gpu_bench.json" "${bench_flags[@]}"
  bench_rc=$?
fi
tries_rc=0
if [ "${MFU_TRIES:-0}" = 1 ]; then
  tries
  tries_rc=$?
fi

# The real loops need the whole runtime (pandas, pyarrow, cv2 for the synthetic set).
"$PY" -c "import pandas, pyarrow, cv2, scipy, sklearn" 2>/dev/null \
  || timeout 240 "$PY" -m pip install -q -r requirements.txt
echo "== loops: $PY benchmarks/gpu_loops.py"
budget=${LOOPS_BUDGET:-440}
loops_flags=(--budget "$budget")
# A key-frame table of the simple set built elsewhere (the image's OpenCV may lack the cascades).
[ -n "${SIMPLE_KEYFRAMES:-}" ] && loops_flags+=(--simple-keyframes "$SIMPLE_KEYFRAMES")
[ "$SMOKE" = 1 ] && loops_flags+=(--cpu-smoke)
timeout $((budget + 90)) "$PY" benchmarks/gpu_loops.py --out "$DEST/gpu_loops.json" "${loops_flags[@]}"
loops_rc=$?

# The key-frame stage with the interpolator on the GPU (keyframes.gpus) needs OpenCV's Haar
# cascades, which OpenCV 5 wheels lack: carry opencv-python-headless 4.x where they are missing.
kf_rc=0
if "$PY" -c "import cv2, openpyxl; cv2.CascadeClassifier" 2>/dev/null; then
  echo "== key-frame stage per interpolation: $PY benchmarks/keyframes_adaconv.py"
  kf_flags=(--rounds 2)
  [ "$SMOKE" = 1 ] && kf_flags=(--smoke)
  timeout 150 "$PY" benchmarks/keyframes_adaconv.py --out "$DEST/keyframes_adaconv.json" "${kf_flags[@]}"
  kf_rc=$?
else
  echo "== skipped benchmarks/keyframes_adaconv.py: this OpenCV has no Haar cascades (or no openpyxl)"
fi

echo "== done: tests exit $tests_rc, benchmark exit $bench_rc, MFU tries exit $tries_rc, loops exit $loops_rc, key frames exit $kf_rc"
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ] && [ "$tries_rc" -eq 0 ] && [ "$loops_rc" -eq 0 ] \
  && [ "$kf_rc" -eq 0 ]
