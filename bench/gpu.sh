#!/usr/bin/env bash
# The GPU variant of the model benchmarks, for one CUDA GPU, in under 10 minutes on an H100.
#
#   bash bench/gpu.sh            # needs a CUDA build of torch (and transformers) in the venv
#
# PyTorch: gpt2_torch vs transformers (SDPA) on GPT-2 small in float32, bfloat16 and float16:
# prefill, greedy decode at batch 1 and 8 (identical tokens asserted), a training step. JAX:
# gpt2_flax vs transformers when jax sees a GPU. Each run has its own time limit, so one slow
# configuration cannot eat the others' time.
set -euo pipefail
cd "$(dirname "$0")"
python - <<'PY'
import sys, torch
if not torch.cuda.is_available():
    sys.exit("bench/gpu.sh needs a CUDA GPU and a CUDA build of torch; this torch is "
             f"{torch.__version__} and sees no GPU. Use bench/run_all.py on a CPU machine.")
print(torch.cuda.get_device_name(0), "torch", torch.__version__)
PY
for dtype in float32 bfloat16 float16; do
  echo "== torch, cuda, $dtype"
  timeout 150 python bench_torch.py --device cuda --dtype "$dtype" || echo "torch $dtype: failed or timed out"
done
if python -c "import jax, sys; sys.exit(jax.default_backend() != 'gpu')" 2>/dev/null; then
  echo "== flax, gpu"
  timeout 150 python bench_flax.py || echo "flax: failed or timed out"
else
  echo "== flax: skipped (jax sees no GPU; install jax[cuda12] to include it)"
fi
