"""GPT-2 on one CUDA GPU: gpt2_torch and gpt2_flax against transformers, in one run.

Each part runs in its own process (`bench/gpu.sh` gives each a time limit) and writes its rows
to `DIR/<part>.json` as it goes, so a part cut short keeps what it measured; `collect` merges
the parts into `DIR/gpu.json` and `DIR/gpu.md`.

    python bench/bench_gpu.py torch DIR    # gpt2_torch eager and compile=True vs transformers
    python bench/bench_gpu.py flax DIR     # gpt2_flax (one jax.jit) vs transformers
    python bench/bench_gpu.py medium DIR   # GPT-2 medium, batch-1 decode (optional)
    python bench/bench_gpu.py collect DIR
    python bench/bench_gpu.py torch DIR --device cpu --quick   # a rehearsal without a GPU

The peer is transformers' own `generate` as users run it: the default (dynamic) cache, no
compile, `attn_implementation="sdpa"`, bfloat16, on the same random GPT-2 weights. Rates are
medians of interleaved repetitions (ours, peer, ours, ...) after a warm-up call; compile time
is reported apart and excluded. Greedy tokens are compared with the peer's: identical, or
where a row parts from it, both continuations must be greedy within bfloat16's own error under
a float32 teacher (`check_tokens`), else the part fails.

`compile=True` evidence: the profiler's CUDA-graph launches and kernel launches per decode
step, from the difference between a 128-step and a 112-step generate (the prefill, eager in
both, cancels out; both lengths share one compiled cache bucket).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _results import machine  # noqa: E402

PROMPT = 32  # decode prompt length: random ids
NEW = 128    # new tokens per decode row (eos off on both sides)
TARGETS = {  # (part, measure) -> ours / transformers
    ("torch", "greedy decode b=1, compile=True"): 5.0,
    ("flax", "greedy decode b=1"): 4.0,
    ("torch", "prefill 8x512"): 1.2,
    ("torch", "prefill 8x512, compile=True"): 1.2,
    ("flax", "prefill 8x512"): 1.2,
}


class Rows:
    """The part's rows, rewritten to `path` after each one (a killed part keeps its rows)."""

    def __init__(self, path: str, part: str, meta: dict[str, Any]) -> None:
        self.path, self.part = path, part
        self.doc: dict[str, Any] = {"part": part, "meta": meta, "rows": [], "errors": []}
        self._write()

    def _write(self) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.doc, f, indent=1, default=float)
        os.replace(tmp, self.path)

    def add(self, measure: str, ours: float, peer: float, unit: str, **extra: Any) -> None:
        target = TARGETS.get((self.part, measure))
        row = {"measure": measure, "ours": ours, "peer": peer, "ratio": ours / peer,
               "unit": unit, "target": target, **extra}
        self.doc["rows"].append(row)
        flag = "" if target is None else (" ok" if ours / peer >= target else f" MISS (<{target}x)")
        print(f"  {measure:40s} {ours:12.1f} {peer:12.1f} {unit:10s} {ours / peer:6.2f}x{flag}"
              f"  {extra.get('tokens', '')}", flush=True)
        self._write()

    def note(self, key: str, value: Any) -> None:
        self.doc["meta"][key] = value
        self._write()

    def error(self, measure: str, exc: BaseException) -> None:
        """A row that failed: recorded, and the part goes on to the next row."""
        text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        self.doc["errors"].append({"measure": measure, "error": text[-2000:]})
        print(f"  {measure}: FAILED {text[-600:]}", flush=True)
        traceback.print_exc()
        self._write()


def interleaved(fns: list[Callable[[], Any]], repeats: int, sync: Callable[[], None]
                ) -> list[float]:
    """Median seconds of each function, run in turn `repeats` times after one warm-up each."""
    for fn in fns:
        fn()
    sync()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for j, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            sync()
            times[j].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def make_checkpoint(preset: str) -> str:
    import gpt2_core

    path = tempfile.mkdtemp(prefix=f"gpt2-{preset}-")
    config = gpt2_core.GPT2Config.from_preset(preset)  # GPT-2's init: std 0.02, scaled c_proj
    gpt2_core.save_pretrained(path, config, gpt2_core.init_params(config, seed=0))
    return path


class Teacher:
    """transformers in float32 (TF32 off) on the same weights: the judge of greedy tokens."""

    def __init__(self, path: str, device: str) -> None:
        import torch
        import transformers

        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        self.torch, self.device = torch, device
        self.model = transformers.GPT2LMHeadModel.from_pretrained(
            path, attn_implementation="sdpa", dtype=torch.float32).to(device).eval()

    def logits(self, ids: np.ndarray) -> np.ndarray:
        """float32 logits (B, T, V) of every position."""
        with self.torch.inference_mode():
            x = self.torch.as_tensor(ids, device=self.device)
            return self.model(x, use_cache=False).logits.float().cpu().numpy()


def check_tokens(ours: np.ndarray, peer: np.ndarray, prompt: int, teacher: Callable[[], Teacher],
                 peer_logits: Callable[[np.ndarray], np.ndarray]) -> str:
    """"identical", or why the rows that differ are both right.

    Where a row parts from the peer's, each side's continuation must be greedy within the
    bfloat16 error: at every new position, the float32 teacher's logit of the chosen token is at
    most `slack` below the teacher's best, where `slack` is twice the largest difference
    between the peer's bfloat16 logits and the teacher's on those same sequences. A bug that
    picks wrong tokens (a shifted position, a stale cache) misses by far more. Raises
    AssertionError naming the row and step otherwise.
    """
    if ours.shape != peer.shape:
        raise AssertionError(f"shapes differ: ours {ours.shape}, transformers {peer.shape}")
    if np.array_equal(ours, peer):
        return "identical"
    rows = np.nonzero((ours != peer).any(axis=1))[0]
    first = int(min(np.argmax(ours[r] != peer[r]) for r in rows)) - prompt
    judge = teacher()
    worst = 0.0
    for seqs in (ours[rows], peer[rows]):
        ref = judge.logits(seqs)[:, prompt - 1:-1]                 # (R, NEW, V) float32
        noise = np.abs(peer_logits(seqs)[:, prompt - 1:-1] - ref).max()
        slack = 2.0 * float(noise)
        chosen = np.take_along_axis(ref, seqs[:, prompt:, None], axis=2)[..., 0]
        deficit = ref.max(axis=2) - chosen                          # (R, NEW) >= 0
        if deficit.max() > slack:
            r, s = np.unravel_index(int(deficit.argmax()), deficit.shape)
            raise AssertionError(
                f"row {rows[r]} step {s}: token {seqs[r, prompt + s]} is {deficit[r, s]:.4f} "
                f"below the float32 best, more than bfloat16's error allows ({slack:.4f})")
        worst = max(worst, float(deficit.max() / slack) if slack else 0.0)
    return (f"{len(rows)}/{len(ours)} rows part from transformers' from step {first}; both "
            f"greedy within bf16 error (worst deficit {worst:.2f} of the slack)")


# ----------------------------------------------------------------------------------- torch

def torch_setup(device: str):
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    return torch, sync


def load_torch_pair(path: str, device: str, dtype: str):
    import torch
    import transformers

    from gpt2_torch import GPT2LMHeadModel

    td = getattr(torch, dtype)
    ours = GPT2LMHeadModel.from_pretrained(path, torch_dtype=td, device=device).eval()
    hf = transformers.GPT2LMHeadModel.from_pretrained(
        path, attn_implementation="sdpa", dtype=td).to(device).eval()
    return ours, hf


def hf_generate(hf, ids, new: int):
    import torch

    return hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new,
                       min_new_tokens=new, do_sample=False, pad_token_id=0)


def hf_logits_fn(hf, device: str) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    def run(seqs: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return hf(torch.as_tensor(seqs, device=device), use_cache=False).logits.float().cpu().numpy()
    return run


def launches_per_step(torch, run: Callable[[int], Any], sync, new: int) -> dict[str, float]:
    """CUDA-graph launches and kernel launches per decode step: a `new`-step run minus a
    `new - 16`-step run, over 16 (the prefill and the call's setup cancel out)."""
    from torch.profiler import ProfilerActivity, profile

    def count(n: int) -> dict[str, int]:
        sync()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            run(n)
            sync()
        c = {"graph": 0, "kernel": 0}
        for e in prof.events():
            if e.name in ("cudaGraphLaunch", "cuGraphLaunch"):
                c["graph"] += 1
            elif e.name in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC",
                            "cuLaunchKernelEx"):
                c["kernel"] += 1
        return c

    run(new)  # warm (compile, graph capture)
    a, b = count(new - 16), count(new)
    return {"graph_launches_per_step": (b["graph"] - a["graph"]) / 16,
            "kernel_launches_per_step": (b["kernel"] - a["kernel"]) / 16}


def part_torch(rows: Rows, args) -> None:
    torch, sync = torch_setup(args.device)
    path = make_checkpoint(args.preset)
    ours, hf = load_torch_pair(path, args.device, args.dtype)
    teacher_box: list[Teacher] = []

    def teacher() -> Teacher:
        if not teacher_box:
            teacher_box.append(Teacher(path, args.device))
        return teacher_box[0]

    rng = np.random.default_rng(0)
    V = ours.config.vocab_size
    for B, T in args.prefill:
        name = f"prefill {B}x{T}"
        try:
            ids = torch.as_tensor(rng.integers(0, V, (B, T)), device=args.device)
            with torch.inference_mode():
                t_ours, t_hf = interleaved([lambda ids=ids: ours(ids, use_cache=False),
                                            lambda ids=ids: hf(ids, use_cache=False)], args.repeats, sync)
            rows.add(name, B * T / t_ours, B * T / t_hf, "tok/s")
        except Exception as exc:  # noqa: BLE001 - recorded in the results, the part goes on
            rows.error(name, exc)
    for compile in (False, True):
        for B in args.batches:
            name = f"greedy decode b={B}" + (", compile=True" if compile else "")
            try:
                ids = torch.as_tensor(rng.integers(0, V, (B, PROMPT)), device=args.device)

                def run_ours(n=args.new, ids=ids, compile=compile):
                    return ours.generate(ids, max_new_tokens=n, eos_token_id=[], compile=compile)

                def run_hf(n=args.new, ids=ids):
                    return hf_generate(hf, ids, n)

                with torch.inference_mode():
                    t0 = time.perf_counter()
                    a = run_ours()
                    sync()
                    first = time.perf_counter() - t0
                    b = run_hf()
                    tokens = check_tokens(a.cpu().numpy(), b.cpu().numpy(), PROMPT, teacher,
                                          hf_logits_fn(hf, args.device))
                    t_ours, t_hf = interleaved([run_ours, run_hf], args.repeats, sync)
                extra: dict[str, Any] = {"tokens": tokens,
                                         "ms_per_step_ours": 1e3 * t_ours / args.new,
                                         "ms_per_step_peer": 1e3 * t_hf / args.new}
                if compile:
                    extra["compile_s"] = max(first - t_ours, 0.0)
                if args.device.startswith("cuda") and B == 1:
                    with torch.inference_mode():
                        extra.update(launches_per_step(torch, run_ours, sync, args.new))
                        extra["peer_kernel_launches_per_step"] = launches_per_step(
                            torch, run_hf, sync, args.new)["kernel_launches_per_step"]
                rows.add(name, B * args.new / t_ours, B * args.new / t_hf, "new tok/s", **extra)
            except Exception as exc:  # noqa: BLE001
                rows.error(name, exc)


def part_medium(rows: Rows, args) -> None:
    args.preset, args.prefill, args.batches = "gpt2-medium", [], [1]
    part_torch(rows, args)


# ------------------------------------------------------------------------------------ flax

def part_flax(rows: Rows, args) -> None:
    import jax
    import jax.numpy as jnp

    from gpt2_flax import GPT2LMHeadModel as FlaxLM

    torch, sync = torch_setup(args.device)
    rows.note("jax", f"{jax.__version__} on {jax.devices()[0].platform} ({jax.devices()[0].device_kind})")
    path = make_checkpoint(args.preset)
    model = FlaxLM.from_pretrained(path, dtype=args.dtype, param_dtype=args.dtype)
    hf = load_torch_pair(path, args.device, args.dtype)[1]
    teacher_box: list[Teacher] = []

    def teacher() -> Teacher:
        if not teacher_box:
            teacher_box.append(Teacher(path, args.device))
        return teacher_box[0]

    def jsync(x):
        return jax.block_until_ready(x)

    rng = np.random.default_rng(0)
    V = model.config.vocab_size
    for B, T in args.prefill:
        name = f"prefill {B}x{T}"
        try:
            ids_np = rng.integers(0, V, (B, T))
            ids_j = jnp.asarray(ids_np, jnp.int32)
            ids_t = torch.as_tensor(ids_np, device=args.device)
            t0 = time.perf_counter()
            jsync(model(ids_j, use_cache=False).logits)
            compile_s = time.perf_counter() - t0
            with torch.inference_mode():
                t_ours, t_hf = interleaved([lambda x=ids_j: jsync(model(x, use_cache=False).logits),
                                            lambda x=ids_t: hf(x, use_cache=False)], args.repeats, sync)
            rows.add(name, B * T / t_ours, B * T / t_hf, "tok/s", compile_s=compile_s)
        except Exception as exc:  # noqa: BLE001
            rows.error(name, exc)
    for B in args.batches:
        name = f"greedy decode b={B}"
        try:
            ids_np = rng.integers(0, V, (B, PROMPT))
            ids_t = torch.as_tensor(ids_np, device=args.device)

            def run_ours(ids=ids_np):
                return np.asarray(model.generate(ids, max_new_tokens=args.new, eos_token_id=[]))

            def run_hf(ids=ids_t):
                return hf_generate(hf, ids, args.new)

            t0 = time.perf_counter()
            a = run_ours()
            compile_s = time.perf_counter() - t0
            with torch.inference_mode():
                b = run_hf().cpu().numpy()
                tokens = check_tokens(a, b, PROMPT, teacher, hf_logits_fn(hf, args.device))
                t_ours, t_hf = interleaved([run_ours, run_hf], args.repeats, sync)
            rows.add(name, B * args.new / t_ours, B * args.new / t_hf, "new tok/s",
                     tokens=tokens, compile_s=max(compile_s - t_ours, 0.0),
                     ms_per_step_ours=1e3 * t_ours / args.new,
                     ms_per_step_peer=1e3 * t_hf / args.new)
        except Exception as exc:  # noqa: BLE001
            rows.error(name, exc)


# --------------------------------------------------------------------------------- collect

def collect(folder: str) -> None:
    parts = []
    for name in ("torch", "flax", "medium"):
        p = os.path.join(folder, f"{name}.json")
        if os.path.exists(p):
            with open(p, encoding="utf-8") as f:
                parts.append(json.load(f))
    with open(os.path.join(folder, "gpu.json"), "w", encoding="utf-8") as f:
        json.dump(parts, f, indent=1)
    lines = ["| part | measure | ours | transformers | unit | ratio | target | tokens | notes |",
             "|---|---|---|---|---|---|---|---|---|"]
    for doc in parts:
        for r in doc["rows"]:
            target = "" if r["target"] is None else (
                f"{r['target']}x " + ("ok" if r["ratio"] >= r["target"] else "**missed**"))
            notes = [f"{k}={r[k]:.3g}" for k in ("ms_per_step_ours", "ms_per_step_peer",
                                                 "compile_s", "graph_launches_per_step",
                                                 "kernel_launches_per_step",
                                                 "peer_kernel_launches_per_step") if k in r]
            lines.append(f"| {doc['part']} | {r['measure']} | {r['ours']:.1f} | {r['peer']:.1f} | "
                         f"{r['unit']} | {r['ratio']:.2f}x | {target} | {r.get('tokens', '')} | "
                         f"{', '.join(notes)} |")
        for e in doc["errors"]:
            lines.append(f"| {doc['part']} | {e['measure']} | failed | | | | | | "
                         f"{e['error'].splitlines()[-1][:200]} |")
    metas = [f"- {d['part']}: " + ", ".join(f"{k}: {v}" for k, v in d["meta"].items())
             for d in parts]
    with open(os.path.join(folder, "gpu.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines + [""] + metas) + "\n")
    print("\n".join(lines + [""] + metas))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=["torch", "flax", "medium", "collect"])
    ap.add_argument("out", help="results folder")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--preset", default="gpt2")
    ap.add_argument("--quick", action="store_true", help="small shapes: a CPU rehearsal")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if args.part == "collect":
        collect(args.out)
        return
    if args.quick:
        args.prefill, args.batches, args.new, args.repeats = [(1, 64), (2, 64)], [1, 2], 8, 2
    else:
        args.prefill, args.batches, args.new, args.repeats = [(1, 512), (8, 512)], [1, 32], NEW, 5
    import torch

    meta = {"machine": machine(), "python": platform.python_version(), "torch": torch.__version__,
            "device": (torch.cuda.get_device_name(0) if args.device.startswith("cuda")
                       else args.device),
            "dtype": args.dtype, "preset": args.preset, "date": time.strftime("%Y-%m-%d"),
            "repeats": args.repeats, "decode": f"{PROMPT} + {args.new} tokens, greedy"}
    rows = Rows(os.path.join(args.out, f"{args.part}.json"), args.part, meta)
    print(f"== {args.part}: {meta}", flush=True)
    {"torch": part_torch, "flax": part_flax, "medium": part_medium}[args.part](rows, args)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
