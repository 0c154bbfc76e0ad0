#!/usr/bin/env bash
# Conformance and benchmarks on one CUDA GPU, unattended, in at most 5 minutes.
#
#   bash bench/gpu.sh RESULTS_DIR              # on a machine with a CUDA GPU
#   bash bench/gpu.sh RESULTS_DIR --rehearse   # the same steps on the CPU, small shapes
#
# Needs torch with CUDA, transformers, and (for its rows) jax with its CUDA plugin and flax;
# runs from this checkout, installed or not. Steps, each under its own time limit and within
# one overall budget, each writing its results into RESULTS_DIR as it goes:
#   1. the conformance suite (tiny configs: float32 with TF32 off, plus the bfloat16 and float16
#      rows) for torch and flax on the GPU -> conformance.md, conformance.json
#   2. GPT-2 small, bfloat16: prefill 1x512 and 8x512, greedy decode of 128 tokens at batch 1
#      and 32, against transformers' eager `generate` in the same run, tokens compared:
#      torch eager and compile=True -> torch.json; flax -> flax.json
#   3. if time is left: the CUDA-graphs check of compile=True -> cuda_graphs.json; GPT-2
#      medium, batch-1 decode -> medium.json
#   4. gpu.json and gpu.md: every part's rows in one table.
# A missing package skips its step with a note; a failing row is recorded and the rest go on.
set -uo pipefail
OUT_DIR=${1:?usage: bash bench/gpu.sh RESULTS_DIR [--rehearse]}
MODE=${2:-gpu}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT_DIR"
export PYTHONPATH="$ROOT:$ROOT/tokenizer:$ROOT/backends:$ROOT/conformance${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
# Several processes share the GPU (conformance workers, torch and JAX in one bench process):
# JAX would otherwise take 75% of its memory at start.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
PY=${PYTHON:-python3}
BUDGET=${GPU_SH_BUDGET:-300}
START=$SECONDS

# Run "$@" for at most min(cap, time left) seconds; note a timeout or a failure and go on.
step() {
  local name=$1 cap=$2; shift 2
  local left=$((BUDGET - (SECONDS - START)))
  local limit=$((cap < left ? cap : left))
  if ((limit < 15)); then echo "== $name: skipped (budget spent)"; return; fi
  echo "== $name (limit ${limit}s, $((SECONDS - START))s elapsed)"
  timeout --kill-after=5 "$limit" "$@"
  local rc=$?
  if ((rc == 124 || rc == 137)); then echo "== $name: timed out after ${limit}s"
  elif ((rc != 0)); then echo "== $name: failed (exit $rc)"; fi
}

has() { "$PY" -c "import $1" 2>/dev/null; }

if [[ $MODE == --rehearse ]]; then
  DEV=(--device cpu --quick --dtype float32) CONF=(--only "tiny.base.float32.forward,tiny.base.bfloat16,generation.greedy")
else
  "$PY" - <<'PY' || exit 1
import sys, torch
if not torch.cuda.is_available():
    sys.exit("bench/gpu.sh needs a CUDA GPU and a CUDA build of torch; this torch is "
             f"{torch.__version__} and sees no GPU. `--rehearse` runs the steps on the CPU.")
PY
  DEV=() CONF=()
fi
"$PY" - <<'PY'
import importlib, platform
print("python", platform.python_version())
for name in ("torch", "jax", "flax", "transformers", "numpy", "safetensors", "tiktoken"):
    try:
        print(name, importlib.import_module(name).__version__)
    except Exception as exc:  # noqa: BLE001
        print(name, "missing:", type(exc).__name__)
import torch
if torch.cuda.is_available():
    print("gpu", torch.cuda.get_device_name(0), "cuda", torch.version.cuda)
PY
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,clocks.sm,memory.used --format=csv

BACKENDS=torch
if has jax && has flax; then BACKENDS=torch,flax; else echo "== flax: jax or flax missing, its rows are skipped"; fi
has transformers || echo "== transformers missing: the benchmark rows need it as the peer"

step conformance 110 "$PY" -m gpt2_conformance --backends "$BACKENDS" --suite tiny --jobs 4 \
  --report "$OUT_DIR" ${CONF[@]+"${CONF[@]}"}
if has transformers; then
  step "bench torch" 130 "$PY" "$ROOT/bench/bench_gpu.py" torch "$OUT_DIR" ${DEV[@]+"${DEV[@]}"}
  [[ $BACKENDS == *flax* ]] && step "bench flax" 70 "$PY" "$ROOT/bench/bench_gpu.py" flax "$OUT_DIR" ${DEV[@]+"${DEV[@]}"}
  # compile=True as CUDA graphs: tokens against eager for sampling and beams, graph skips, no
  # re-recording on a later call (tests/torch/cuda_graphs_check.py -> cuda_graphs.json)
  [[ $MODE != --rehearse ]] && step "cuda graphs check" 90 "$PY" "$ROOT/tests/torch/cuda_graphs_check.py" "$OUT_DIR"
  [[ $MODE != --rehearse ]] && step "bench medium" 45 "$PY" "$ROOT/bench/bench_gpu.py" medium "$OUT_DIR"
  "$PY" "$ROOT/bench/bench_gpu.py" collect "$OUT_DIR"
fi
echo "== done in $((SECONDS - START))s; results in $OUT_DIR"
