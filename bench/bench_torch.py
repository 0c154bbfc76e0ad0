"""gpt2_torch vs transformers, side by side in one process, same random GPT-2 small weights.

Measures prefill, greedy decode (identical tokens asserted), eager and with `compile=True`
(compile time reported apart, excluded from tokens/s), a training step (AdamW) and peak RSS
while loading (each loader in its own subprocess). Prints a table with ratios.

    python bench/bench_torch.py [--quick] [--threads 2] [--device cuda --dtype bfloat16]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _results import emit, load_rss  # noqa: E402

CLOCK = time.perf_counter


def time_pair(ours, theirs, repeats: int, sync) -> tuple[float, float]:
    """Best-of-`repeats` seconds for each, interleaved (ours, theirs, ours, ...) so that load
    from other processes hits both alike."""
    fns = (ours, theirs)
    for fn in fns:  # warm-up
        fn()
    sync()
    best = [float("inf"), float("inf")]
    for _ in range(repeats):
        for j, fn in enumerate(fns):
            t0 = CLOCK()
            fn()
            sync()
            best[j] = min(best[j], CLOCK() - t0)
    return best[0], best[1]


def make_checkpoint(path: str, preset: str) -> None:
    import gpt2_core

    config = gpt2_core.GPT2Config.from_preset(preset)
    gpt2_core.save_pretrained(path, config, gpt2_core.init_params(config, seed=0))


def load_models(path: str, device: str, dtype: torch.dtype):
    import transformers

    from gpt2_torch import GPT2LMHeadModel

    ours = GPT2LMHeadModel.from_pretrained(path, torch_dtype=dtype, device=device).eval()
    hf = transformers.GPT2LMHeadModel.from_pretrained(path, attn_implementation="sdpa",
                                                      dtype=dtype).to(device).eval()
    return ours, hf


def bench_prefill(ours, hf, shape, repeats, sync, device):
    ids = torch.randint(0, 50000, shape, device=device)
    with torch.inference_mode():
        t_ours, t_hf = time_pair(lambda: ours(ids, use_cache=False),
                                 lambda: hf(ids, use_cache=False), repeats, sync)
    n = shape[0] * shape[1]
    return n / t_ours, n / t_hf


def bench_decode(ours, hf, batch, prompt, new, repeats, sync, device, compile=False):
    """New tokens/s of each, and for `compile=True` the seconds the first call spent compiling
    (its time minus a steady-state call's), which the tokens/s exclude."""
    ids = torch.randint(0, 50000, (batch, prompt), device=device)

    def run_ours():
        return ours.generate(ids, max_new_tokens=new, eos_token_id=[], compile=compile)

    def run_hf():
        return hf.generate(ids, max_new_tokens=new, do_sample=False, min_new_tokens=new,
                           pad_token_id=50256)

    with torch.inference_mode():
        t0 = time.perf_counter()
        a = run_ours()
        sync()
        first = time.perf_counter() - t0
        b = run_hf()
    if not torch.equal(a, b):
        raise AssertionError(f"greedy tokens differ at batch {batch} (compile={compile})")
    with torch.inference_mode():
        t_ours, t_hf = time_pair(run_ours, run_hf, repeats, sync)
    n = batch * new
    return n / t_ours, n / t_hf, max(first - t_ours, 0.0)


def bench_train(ours, hf, shape, steps, sync, device):
    ids = torch.randint(0, 50000, shape, device=device)
    steps_fns = []
    for model in (ours, hf):
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)

        def step(model=model, opt=opt):
            loss = model(ids, labels=ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        steps_fns.append(step)
    t_ours, t_hf = time_pair(*steps_fns, steps, sync)
    for model in (ours, hf):
        model.eval()
    n = shape[0] * shape[1]
    return n / t_ours, n / t_hf


LOAD_SNIPPET = """
import json, sys
import torch
torch.set_num_threads(1)
which, path = sys.argv[1], sys.argv[2]
if which == 'ours':
    from gpt2_torch import GPT2LMHeadModel as cls
else:
    from transformers import GPT2LMHeadModel as cls
base = peak_kb()  # after imports: measure loading only
m = cls.from_pretrained(path)
nbytes = sum(p.numel() * p.element_size() for p in m.parameters())
print(json.dumps({'peak_kb': peak_kb() - base, 'weights': nbytes}))
"""



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer repeats and tokens (~3 min)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--preset", default="gpt2")
    ap.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                    help="cpu: this thread's CPU time (needs --threads 1); steadier than wall "
                         "time on a machine shared with other jobs")
    args = ap.parse_args()
    if args.clock == "cpu":
        if args.threads != 1 or args.device != "cpu":
            ap.error("--clock cpu measures one thread: use it with --threads 1 on the CPU")
        global CLOCK
        CLOCK = time.thread_time
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    reps = 2 if args.quick else 3
    new = 32 if args.quick else 128
    rows = []
    with tempfile.TemporaryDirectory() as path:
        make_checkpoint(path, args.preset)
        ours, hf = load_models(path, args.device, dtype)
        for shape in ((1, 128), (4, 512)):
            o, h = bench_prefill(ours, hf, shape, reps, sync, args.device)
            rows.append((f"prefill {shape[0]}x{shape[1]} (tok/s)", o, h, 1.2))
        for batch in (1, 8):
            o, h, _ = bench_decode(ours, hf, batch, 32, new, reps, sync, args.device)
            rows.append((f"greedy decode b={batch}, 32+{new} (new tok/s)", o, h, 2.0))
        compile_s = []
        for batch in (1, 8):
            o, h, c = bench_decode(ours, hf, batch, 32, new, reps, sync, args.device, compile=True)
            rows.append((f"greedy decode b={batch}, 32+{new}, compile=True", o, h, 2.0))
            compile_s.append(f"b={batch} {c:.1f} s")
        if args.dtype == "float32" or args.device != "cpu":
            o, h = bench_train(ours, hf, (4, 256), 2 if args.quick else 3, sync, args.device)
            rows.append(("train step 4x256 AdamW (tok/s)", o, h, 1.0))
        del ours, hf
        ro, weights = load_rss(LOAD_SNIPPET, path, "ours")
        rh, _ = load_rss(LOAD_SNIPPET, path, "hf")
    print(f"\ndevice={args.device} dtype={args.dtype} threads={args.threads} preset={args.preset} "
          f"clock={args.clock} torch={torch.__version__}")
    print(f"{'measure':44s} {'gpt2_torch':>12s} {'transformers':>13s} {'ratio':>7s} {'target':>7s}")
    for name, o, h, target in rows:
        flag = "ok" if o / h >= target else "MISS"
        print(f"{name:44s} {o:12.1f} {h:13.1f} {o / h:7.2f} {target:>6.1f}x {flag}")
    print(f"{'load peak RSS / weight bytes':44s} {ro:12.2f} {rh:13.2f} {'':7s} {'<1.3':>7s} "
          f"{'ok' if ro < 1.3 else 'MISS'}  ({weights / 2**20:.0f} MiB weights)")
    print(f"compile=True: first-call compile time (excluded from its rows): {', '.join(compile_s)}")
    emit(f"torch: GPT-2 small, {args.device} {args.dtype}, {args.threads} threads", "gpt2_torch",
         "transformers", rows, notes=f"load peak RSS / weight bytes: {ro:.2f} (target < 1.3); "
         f"compile=True compile time (excluded): {', '.join(compile_s)}")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
