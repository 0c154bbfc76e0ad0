"""gpt2_flax vs transformers (torch, CPU float32, 2 threads), same run, same weights.

GPT-2 small with GPT-2-init random weights. Reports compile time separately, then steady-state
greedy decode (32-token prompt, 128 new tokens; identical tokens asserted) at batch 1 and 8,
and prefill (1 x 128). Usage: python bench/bench_flax.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer repeats, batch 1 decode only")
    args = parser.parse_args()
    import torch
    torch.set_num_threads(2)
    import jax
    import transformers

    import gpt2_core
    from gpt2_flax import GPT2LMHeadModel

    config = gpt2_core.GPT2Config.from_preset("gpt2", eos_token_id=None, bos_token_id=None)
    path = tempfile.mkdtemp()
    gpt2_core.save_pretrained(path, config, gpt2_core.init_params(config, 0))
    model = GPT2LMHeadModel.from_pretrained(path)
    hf = transformers.GPT2LMHeadModel.from_pretrained(path, attn_implementation="eager").eval()
    print(f"{'case':<28}{'gpt2_flax':>12}{'transformers':>14}{'ratio':>8}{'compile s':>11}")

    rows, compiles = [], []

    def report(name, ours, theirs, comp, target):  # row by row: a cut-short run shows its rows
        print(f"{name:<28}{ours:>12.1f}{theirs:>14.1f}{ours / theirs:>7.2f}x{comp:>11.2f}",
              flush=True)
        rows.append((name, ours, theirs, target))
        compiles.append(f"{name}: {comp:.1f} s")
    repeats = 1 if args.quick else 3
    new = 128
    for batch in ([1] if args.quick else [1, 8]):
        ids = np.random.default_rng(batch).integers(0, config.vocab_size, (batch, 32))
        t = time.perf_counter()
        ours = model.generate(ids, max_new_tokens=new, eos_token_id=[])
        compile_s = time.perf_counter() - t
        with torch.no_grad():
            theirs = hf.generate(torch.tensor(ids), max_new_tokens=new, min_new_tokens=new,
                                 do_sample=False, pad_token_id=0)
        assert np.array_equal(ours, theirs.numpy()), "greedy tokens differ"
        t_ours = best_of(lambda ids=ids: model.generate(ids, max_new_tokens=new, eos_token_id=[]),
                         repeats)
        with torch.no_grad():
            t_hf = best_of(lambda ids=ids: hf.generate(
                torch.tensor(ids), max_new_tokens=new, min_new_tokens=new, do_sample=False,
                pad_token_id=0), repeats)
        report(f"decode B={batch} (new tok/s)", batch * new / t_ours, batch * new / t_hf,
               compile_s, 2.2 if batch == 1 else 3.0)
    ids = np.random.default_rng(0).integers(0, config.vocab_size, (1, 128))
    # the public call (compiled once per shape by nnx.jit); full (1, 128, V) logits on both
    # sides. A jax.jit closure over `model` would bake 500 MB of weights in as constants.
    def forward(x):
        return model(x, use_cache=False).logits
    t = time.perf_counter()
    forward(ids).block_until_ready()
    compile_s = time.perf_counter() - t
    t_ours = best_of(lambda: forward(ids).block_until_ready(), repeats * 3)
    with torch.no_grad():
        t_hf = best_of(lambda: hf(torch.tensor(ids), use_cache=False), repeats * 3)
    report("prefill 1x128 (tok/s)", 128 / t_ours, 128 / t_hf, compile_s, 1.3)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _results import emit

    emit("flax: GPT-2 small, CPU float32, greedy 32 + 128 tokens", "gpt2_flax", "transformers",
         rows, notes="compile (first call, excluded from the rates): " + "; ".join(compiles))
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads. Shared machine: numbers are noisy.")


if __name__ == "__main__":
    main()
