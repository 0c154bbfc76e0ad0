"""What this machine allows GPT-2 small at all: the matrix products alone, timed.

Every GPT-2 forward is dominated by products with the same 49 weight matrices (per block
`c_attn` 768x2304, `attn.c_proj` 768x768, `c_fc` 768x3072, `mlp.c_proj` 3072x768; and the
tied LM head 768x50257). Timing only those products, in PyTorch's fastest CPU path (oneDNN or
MKL, whichever is faster; float32, 2 threads), gives a ceiling no implementation of GPT-2 can
pass on this machine:

- decode at batch 1 multiplies one row by every matrix: it streams all 497 MB of weights from
  memory for each token, so its ceiling is set by memory bandwidth;
- decode at batch 8 reads the weights once for 8 rows;
- prefill and training are compute-bound: 128 (or 4x256) rows per pass, training about three
  times the forward's products.

The ceilings leave out attention, LayerNorm, GELU, sampling and framework overhead, so real
implementations reach a fraction of them; `run_all.py` prints each measured speed as that
fraction, which says how much room a speed target leaves. The machine's memory bandwidth
drifts by about 10% over minutes, so `run_all.py` measures the ceilings before and after the
other benchmarks and keeps the higher of each.

    python bench/bench_floor.py [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

N_EMBD, N_LAYER, VOCAB = 768, 12, 50257

# Both CPU GEMM paths torch has; each pass keeps the faster (MKL's generic path is about half
# oneDNN's speed on AMD CPUs, see backends/gpt2_torch/linear.py).
LINEARS = [torch.nn.functional.linear]
if torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise"):
    LINEARS.append(lambda x, w: torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], ""))


def gpt2_small_matrices() -> list[torch.Tensor]:
    """GPT-2 small's weight matrices as `nn.Linear` holds them, [out, in], random (the values
    do not change the timing)."""
    g = torch.Generator().manual_seed(0)
    shapes = [(3 * N_EMBD, N_EMBD), (N_EMBD, N_EMBD), (4 * N_EMBD, N_EMBD), (N_EMBD, 4 * N_EMBD)]
    mats = [torch.randn(s, generator=g) * 0.02 for _ in range(N_LAYER) for s in shapes]
    return mats + [torch.randn(VOCAB, N_EMBD, generator=g) * 0.02]


def products(mats: list[torch.Tensor], rows: int, head_rows: int, repeats: int) -> float:
    """Best-of-`repeats` seconds for one pass of `rows` rows through every matrix, the LM
    head applied to `head_rows` of them (generation needs only the last position's logits)."""
    x = {k: torch.randn(rows, k) for k in (N_EMBD, 4 * N_EMBD)}
    head_in = torch.randn(head_rows, N_EMBD)
    best = float("inf")
    for linear in LINEARS:
        def one_pass(linear=linear) -> None:
            for m in mats[:-1]:
                linear(x[m.shape[1]], m)
            linear(head_in, mats[-1])

        one_pass()
        for _ in range(repeats):
            t0 = time.perf_counter()
            one_pass()
            best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    mats = gpt2_small_matrices()
    weight_bytes = sum(m.numel() * m.element_size() for m in mats)
    with torch.inference_mode():
        b1 = 1 / products(mats, 1, 1, 30)
        b8 = 8 / products(mats, 8, 8, 30)
        prefill = 128 / products(mats, 128, 1, 10)
        train = 1024 / (3 * products(mats, 1024, 1024, 3))
    floors = [
        # (measure, tokens/s, substrings that pick the benchmark rows it bounds)
        ("decode b=1: weights streamed once per token", b1, ["decode", "b=1"]),
        ("decode b=8: weights read once per 8 tokens", b8, ["decode", "b=8"]),
        ("prefill 1x128: products only, last-position logits", prefill, ["prefill 1x128"]),
        ("training 4x256: 3x the forward's products", train, ["4x256"]),
    ]
    print(f"GPT-2 small matrix products, torch {torch.__version__} float32, {args.threads} threads, "
          f"{weight_bytes / 1e6:.0f} MB of weights")
    for name, tps, _ in floors:
        print(f"{name:54s} {tps:9.1f} tok/s")
    print(f"implied read bandwidth at batch 1: {b1 * weight_bytes / 1e9:.1f} GB/s")
    path = os.environ.get("GPT2_BENCH_FLOORS_JSON")
    if path:  # a ceiling is the best the machine did: keep the higher of this and earlier runs
        earlier = {}
        if os.path.exists(path):
            with open(path) as f:
                earlier = {r["measure"]: r["tokens_per_s"] for r in json.load(f)}
        with open(path, "w") as f:
            json.dump([{"measure": n, "tokens_per_s": max(t, earlier.get(n, 0.0)), "match": m}
                       for n, t, m in floors], f)


if __name__ == "__main__":
    sys.exit(main())
