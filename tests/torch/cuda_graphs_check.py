"""`compile=True` as CUDA graphs, checked on a CUDA device (a script, not a pytest module: CI has
no GPU). About 2-3 minutes on one GPU, most of it compiling.

    python tests/torch/cuda_graphs_check.py OUT_DIR [--device cpu]   # cpu: a rehearsal

Writes OUT_DIR/cuda_graphs.json as it goes, one entry per part:
  - tokens of `compile=True` against eager decoding (float32, TF32 off): greedy batch 1, a
    left-padded batch 2 with sampling, beam search; on a 2-layer model;
  - `counters["inductor"]["cudagraph_skips"]` (0 when every compiled step runs as a graph) and
    the CUDA graphs cudagraph trees recorded (one per compiled step shape, none again for a
    second call: the cache buffers are lent again at the same addresses);
  - GPT-2 small (random weights) in bfloat16, greedy batch 1: per-step time eager and
    compiled, and the profiler's `cudaGraphLaunch` and kernel-launch counts per step.
Exits 1 when tokens differ, a graph was skipped, or a step is not one graph replay.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
for p in (ROOT, os.path.join(ROOT, "tokenizer"), os.path.join(ROOT, "backends")):
    sys.path.insert(0, p)

import torch  # noqa: E402
from torch._dynamo.utils import counters  # noqa: E402

import gpt2_core  # noqa: E402
from gpt2_torch import GPT2LMHeadModel  # noqa: E402
from gpt2_torch import generation as gen  # noqa: E402

RESULTS: dict = {}
FAILURES: list[str] = []


def write(out_dir: str) -> None:
    with open(os.path.join(out_dir, "cuda_graphs.json"), "w") as f:
        json.dump({"results": RESULTS, "failures": FAILURES}, f, indent=1)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def recorded_graphs(device: torch.device) -> int | None:
    """CUDA graphs recorded by cudagraph trees on `device` (None when there is no manager)."""
    if device.type != "cuda":
        return None
    from torch._inductor import cudagraph_trees

    manager = cudagraph_trees.get_manager(device.index or 0, create_if_none_exists=False)
    if manager is None:
        return 0
    nodes, n = list(manager.get_roots()), 0
    while nodes:
        node = nodes.pop()
        n += 1
        for children in node.children.values():
            nodes.extend(children)
    return n


def model_at(path: str, cfg, device, dtype, init=gpt2_core.init_params) -> GPT2LMHeadModel:
    gpt2_core.save_pretrained(path, cfg, init(cfg, seed=0))
    return GPT2LMHeadModel.from_pretrained(path).to(device=device, dtype=dtype).eval()


def check_tokens(tmp: str, device: torch.device) -> None:
    cfg = gpt2_core.GPT2Config(vocab_size=1000, n_embd=128, n_layer=2, n_head=4, n_positions=256,
                               bos_token_id=1, eos_token_id=2)
    # random_params: larger weights than GPT-2's init, so the tokens vary (init_params repeats one)
    model = model_at(os.path.join(tmp, "tiny"), cfg, device, torch.float32, gpt2_core.random_params)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 1000, (2, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    cases = {
        "greedy b1": (ids[:1], None, dict(max_new_tokens=40, eos_token_id=[])),
        "sample b2 left-padded": (ids, mask, dict(max_new_tokens=40, eos_token_id=[], do_sample=True,
                                                  seed=3, pad_token_id=0)),
        "beams 2 b2": (ids, mask, dict(max_new_tokens=20, num_beams=2, pad_token_id=0)),
    }
    for name, (x, m, kw) in cases.items():
        x, m = x.to(device), None if m is None else m.to(device)
        want = model.generate(x, attention_mask=m, **kw)
        got = [model.generate(x, attention_mask=m, compile=True, **kw) for _ in range(2)]
        before = recorded_graphs(device)
        got.append(model.generate(x, attention_mask=m, compile=True, **kw))
        same = all(torch.equal(g_, want) for g_ in got)
        RESULTS[f"tokens {name}"] = {"identical": same, "eager": want[0, -8:].tolist(),
                                     "compiled": [g_[0, -8:].tolist() for g_ in got],
                                     "graphs recorded by a third call":
                                         None if before is None else recorded_graphs(device) - before}
        if not same:
            FAILURES.append(f"tokens differ: {name}")
        if before is not None and recorded_graphs(device) != before:
            FAILURES.append(f"a third call recorded graphs again: {name}")
    steps = gen._COMPILED_STEPS[model]
    RESULTS["compiled step shapes"] = len(steps)
    RESULTS["graphs recorded (2-layer model)"] = recorded_graphs(device)
    RESULTS["buffers lent again"] = all(not s.lent for s in steps.values())
    RESULTS["cudagraph_skips"] = counters["inductor"]["cudagraph_skips"]
    if device.type == "cuda":
        if counters["inductor"]["cudagraph_skips"]:
            FAILURES.append("a compiled step was skipped by cudagraphs")


def launches(prof) -> dict[str, int]:
    names = {"cudaGraphLaunch": 0, "kernel launches": 0}
    for e in prof.key_averages():
        if e.key == "cudaGraphLaunch":
            names["cudaGraphLaunch"] += e.count
        elif e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernelEx"):
            names["kernel launches"] += e.count
    return names


def check_small(tmp: str, device: torch.device, small: bool) -> None:
    from torch.profiler import ProfilerActivity, profile

    cfg = gpt2_core.GPT2Config() if small else gpt2_core.GPT2Config(n_layer=2, n_embd=128, n_head=4)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = model_at(os.path.join(tmp, "small"), cfg, device, dtype)
    ids = torch.randint(0, 50257, (1, 16), generator=torch.Generator().manual_seed(1)).to(device)
    n = 128
    kw = dict(max_new_tokens=n, eos_token_id=[])
    t = time.perf_counter()
    compiled = model.generate(ids, compile=True, **kw)
    model.generate(ids, compile=True, **kw)
    sync(device)
    RESULTS["gpt2 compile + record (s)"] = round(time.perf_counter() - t, 1)
    eager = model.generate(ids, **kw)
    times: dict[str, list[float]] = {"eager": [], "compile": []}
    for _ in range(5):
        for mode in times:
            sync(device)
            t = time.perf_counter()
            model.generate(ids, compile=mode == "compile", **kw)
            sync(device)
            times[mode].append(time.perf_counter() - t)
    med = {m: statistics.median(v) for m, v in times.items()}
    RESULTS["gpt2 greedy b1"] = {
        "dtype": str(dtype), "new tokens": n,
        "ms per token eager": round(1e3 * med["eager"] / n, 3),
        "ms per token compile": round(1e3 * med["compile"] / n, 3),
        "compile speedup": round(med["eager"] / med["compile"], 2),
        "tokens identical": bool(torch.equal(compiled, eager)),
        "first difference": None if torch.equal(compiled, eager) else
        int((compiled != eager).int().argmax()),
    }
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    per_step = {}
    for mode in ("eager", "compile"):
        with profile(activities=acts) as prof:
            model.generate(ids, compile=mode == "compile", **kw)
            sync(device)
        per_step[mode] = {k: round(v / (n - 1), 2) for k, v in launches(prof).items()}
    RESULTS["gpt2 launches per step"] = per_step
    if device.type == "cuda" and per_step["compile"]["cudaGraphLaunch"] != 1.0:
        FAILURES.append(f"compiled step is not one graph replay: {per_step['compile']}")


def main() -> int:
    out_dir = sys.argv[1]
    device = torch.device(sys.argv[3] if sys.argv[2:3] == ["--device"] else "cuda")
    os.makedirs(out_dir, exist_ok=True)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    RESULTS["torch"] = torch.__version__
    RESULTS["device"] = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    RESULTS["compile options"] = gen._compile_options(device)
    with tempfile.TemporaryDirectory() as tmp:
        for part, fn in (("tokens", lambda: check_tokens(tmp, device)),
                         ("gpt2", lambda: check_small(tmp, device, device.type == "cuda"))):
            t = time.perf_counter()
            try:
                fn()
            except Exception:
                RESULTS[f"{part} error"] = traceback.format_exc()
                FAILURES.append(f"{part}: raised")
            RESULTS[f"{part} seconds"] = round(time.perf_counter() - t, 1)
            write(out_dir)
            print(json.dumps(RESULTS)[-4000:], flush=True)
    print("FAILURES:", FAILURES, flush=True)
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
