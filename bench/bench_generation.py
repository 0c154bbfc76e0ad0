"""Decode speed before and after the generation spec, and sampling against greedy, per backend.

GPT-2 small with random weights (`gpt2_core.random_params`, written once to a temp folder),
prompt 16 tokens, 64 new tokens, eos off (`eos_token_id=[]`). Rows: greedy decode at batch 1
and 8, and sampled decode at batch 1 (`do_sample=True, seed=0`, default top_k=50, and
`top_k=0`). Backends: torch eager, keras on TensorFlow (XLA), flax (`jax.jit`).

With `--before REV` the greedy rows also run on a `git worktree` of REV (its source roots first
on the subprocess's PYTHONPATH). Every (backend, version) is one long-lived subprocess, so
frameworks never share a process and each compiles once; one warm-up call per row is excluded.
The parent then asks for one call at a time, interleaved: each repetition runs every row on old
and new back to back, the order alternating between repetitions, so load from other processes
hits both alike. Reported: the median tokens/s of the repetitions, their min-max, new/old and
sampled/greedy ratios of the medians.

    python bench/bench_generation.py [--before fad6402] [--repeats 7] [--backends torch keras flax]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from _results import cpu_flags, machine  # noqa: E402

PROMPT, NEW = 16, 64
MARK = "@@ "  # worker replies start with this, so stray library prints on stdout are ignored
# name -> (batch, generate keywords beyond max_new_tokens / eos_token_id); "sample" rows need
# the spec's `seed=` and run on the new code only
ROWS = {
    "greedy b=1": (1, {}),
    "greedy b=8": (8, {}),
    "sample b=1 top_k=50": (1, {"do_sample": True, "seed": 0}),
    "sample b=1 top_k=0": (1, {"do_sample": True, "seed": 0, "top_k": 0}),
}
GREEDY = [name for name in ROWS if name.startswith("greedy")]
TARGET_NEW_OLD, TARGET_SAMPLE_GREEDY = 0.97, 0.90


# ---------------------------------------------------------------- worker (one framework)

def load(backend: str, path: str):
    """The model, and a `call(ids, **kw) -> np.ndarray` that returns once the tokens are on the
    host (flax may hand back device arrays: reading them waits for the computation)."""
    import numpy as np

    if backend == "torch":
        import torch

        from gpt2_torch import GPT2LMHeadModel
        torch.set_num_threads(os.cpu_count() or 1)
        model = GPT2LMHeadModel.from_pretrained(path).eval()

        def call(ids, **kw):
            with torch.inference_mode():
                return model.generate(torch.tensor(ids), **kw).numpy()
        return model, call
    if backend == "keras":
        from gpt2_keras import GPT2LMHeadModel
        model = GPT2LMHeadModel.from_pretrained(path)
        return model, lambda ids, **kw: np.asarray(model.generate(ids, **kw))
    from gpt2_flax import GPT2LMHeadModel
    model = GPT2LMHeadModel.from_pretrained(path)
    return model, lambda ids, **kw: np.asarray(model.generate(ids, **kw))


def worker(backend: str, path: str) -> None:
    """Answer one JSON request per stdin line: `{"row": name}` -> seconds and a token digest."""
    import numpy as np

    import gpt2_core
    mod = __import__(f"gpt2_{backend}")
    model, call = load(backend, path)
    print(MARK + json.dumps({"core": gpt2_core.__file__, "backend": mod.__file__}), flush=True)
    for line in sys.stdin:
        name = json.loads(line)["row"]
        batch, kw = ROWS[name]
        ids = np.random.default_rng(batch).integers(0, model.config.vocab_size, (batch, PROMPT))
        t = time.perf_counter()
        out = call(ids.astype(np.int64), max_new_tokens=NEW, eos_token_id=[], **kw)
        seconds = time.perf_counter() - t
        if out.shape != (batch, PROMPT + NEW):
            raise AssertionError(f"{backend} {name}: output shape {out.shape}")
        digest = hashlib.sha1(np.ascontiguousarray(out, np.int64).tobytes()).hexdigest()[:12]
        print(MARK + json.dumps({"seconds": seconds, "digest": digest}), flush=True)


# ---------------------------------------------------------------- parent

class Worker:
    def __init__(self, backend: str, roots: list[str], path: str):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            roots + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]),
            KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2", TOKENIZERS_PARALLELISM="false")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker", backend, path], env=env,
            cwd=tempfile.gettempdir(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.files = self._reply()

    def _reply(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith(MARK):
                return json.loads(line[len(MARK):])
        raise RuntimeError(f"worker exited with {self.proc.wait()}")

    def run(self, row: str) -> dict:
        self.proc.stdin.write(json.dumps({"row": row}) + "\n")
        self.proc.stdin.flush()
        return self._reply()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def make_checkpoint(path: str) -> None:
    import gpt2_core

    config = gpt2_core.GPT2Config.from_preset("gpt2")
    gpt2_core.save_pretrained(path, config, gpt2_core.random_params(config, seed=0))


def bench_backend(backend: str, path: str, old_roots: list[str] | None, repeats: int) -> dict:
    """{(version, row): [tokens/s per repetition]} and the token digests, interleaved."""
    new_roots = [ROOT, os.path.join(ROOT, "tokenizer"), os.path.join(ROOT, "backends")]
    workers = {"new": Worker(backend, new_roots, path)}
    if old_roots:
        workers["old"] = Worker(backend, old_roots, path)
    for version, w in workers.items():
        print(f"  {backend} {version}: {w.files['backend']}", flush=True)
    plan = [(v, r) for r in ROWS for v in workers if v == "new" or r in GREEDY]
    digests = {key: workers[key[0]].run(key[1])["digest"] for key in plan}  # warm-up, excluded
    rates: dict = {key: [] for key in plan}
    for rep in range(repeats):
        for v, r in plan if rep % 2 == 0 else plan[::-1]:
            reply = workers[v].run(r)
            rates[v, r].append(ROWS[r][0] * NEW / reply["seconds"])
            print(f"  rep {rep}: {backend} {v} {r}: {reply['seconds']:.2f} s", file=sys.stderr,
                  flush=True)
            if reply["digest"] != digests[v, r]:
                print(f"  note: {backend} {v} {r}: tokens changed between calls", flush=True)
    for w in workers.values():
        w.close()
    same = {r: digests["old", r] == digests["new", r] for r in GREEDY if ("old", r) in digests}
    return {"rates": rates, "same": same}


def report(results: dict, repeats: int) -> list[str]:
    """The table (markdown), and the lines of every target missed."""
    def cell(xs):
        return f"{statistics.median(xs):.1f} ({min(xs):.1f}-{max(xs):.1f})" if xs else "-"
    lines = ["| backend | row | old tok/s, median (min-max) | new tok/s, median (min-max) "
             "| ratio | target |", "|---|---|---|---|---|---|"]
    misses = []
    for backend, res in results.items():
        rates = res["rates"]
        greedy1 = statistics.median(rates["new", "greedy b=1"])
        for r in ROWS:
            old, new = rates.get(("old", r), []), rates["new", r]
            if r in GREEDY:
                if not old:
                    lines.append(f"| {backend} | {r} | - | {cell(new)} | | |")
                    continue
                ratio, target, what = (statistics.median(new) / statistics.median(old),
                                       TARGET_NEW_OLD, "new/old")
                if not res["same"][r]:
                    what += ", tokens differ"
            else:
                ratio, target, what = (statistics.median(new) / greedy1, TARGET_SAMPLE_GREEDY,
                                       "/ greedy b=1")
            flag = "ok" if ratio >= target else "MISS"
            lines.append(f"| {backend} | {r} | {cell(old)} | {cell(new)} | {ratio:.3f} {what} "
                         f"| >= {target:.2f} {flag} |")
            if flag == "MISS":
                misses.append(f"{backend} {r}: {ratio:.3f} {what} (target >= {target:.2f})")
    lines.append(f"\n{repeats} interleaved repetitions per row, one warm-up call excluded; "
                 f"prompt {PROMPT}, {NEW} new tokens, eos off.")
    return lines + ([""] + ["MISS " + m for m in misses] if misses else [])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", default="fad6402", help="revision to compare against ('' skips)")
    ap.add_argument("--repeats", type=int, default=7, help="interleaved repetitions (>= 5)")
    ap.add_argument("--backends", nargs="+", default=["torch", "keras", "flax"],
                    choices=["torch", "keras", "flax"])
    ap.add_argument("--worker", nargs=2, metavar=("BACKEND", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(*args.worker)
    if args.repeats < 5:
        ap.error("--repeats must be at least 5 (a median of fewer runs is noise on a shared CPU)")
    head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()
    print(f"{machine()}\nCPU flags: {cpu_flags()}\nnew = {head}, old = {args.before or '-'}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        path, tree = os.path.join(tmp, "gpt2-random"), os.path.join(tmp, "before")
        make_checkpoint(path)
        old_roots = None
        if args.before:
            subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", "--quiet", tree,
                            args.before], check=True)
            old_roots = [tree, os.path.join(tree, "tokenizer"), os.path.join(tree, "backends")]
        results = {}
        try:
            for b in args.backends:  # each backend's rows as soon as it is done
                results[b] = bench_backend(b, path, old_roots, args.repeats)
                print("\n".join(report({b: results[b]}, args.repeats)), flush=True)
        finally:
            if args.before:
                subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", tree])
    print("\nAll backends\n" + "\n".join(report(results, args.repeats)))


if __name__ == "__main__":
    main()
