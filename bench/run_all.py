"""Run every benchmark, one process each, and write `bench/README.md`'s table and
`bench/ratios.png` (this project / its peer, with the target marked), and the machine's
ceilings for GPT-2 small (`bench_floor.py`) with each model speed as a fraction of them.

    python bench/run_all.py [--quick] [--write] [NAMES...]
        # names: floor tokenizer keras_tokenizer torch keras flax
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from _results import machine  # noqa: E402

NAMES = ["floor", "tokenizer", "keras_tokenizer", "torch", "keras", "flax"]


def bar_chart(records: list[dict], path: str) -> None:
    """Horizontal bars of each ratio, a grey line at 1x, a red tick at the target."""
    import numpy as np

    from gpt2_core.cli._plot import write_png

    row_h, left, width = 22, 10, 560
    img = np.full((row_h * len(records) + 30, left + width + 20, 3), 255, np.uint8)
    top = max(max(r["ratio"], r["target"]) for r in records if r["ratio"] == r["ratio"]) * 1.1
    px = lambda v: left + int(min(v, top) / top * width)  # noqa: E731
    for i, r in enumerate(records):
        y0, y1 = 10 + i * row_h, 10 + i * row_h + row_h - 6
        ok = r["ratio"] >= r["target"]
        img[y0:y1, left:px(r["ratio"])] = (44, 160, 44) if ok else (214, 39, 40)
        img[y0 - 2:y1 + 2, px(r["target"]) - 1:px(r["target"]) + 1] = (0, 0, 0)
    img[:, px(1.0)] = (128, 128, 128)
    write_png(path, img)


def floor_table(floors: list[dict], records: list[dict]) -> list[str]:
    """Each ceiling from `bench_floor.py`, and every measured speed it bounds as a fraction."""
    lines = ["## What this machine allows", "",
             "`bench_floor.py` times only GPT-2 small's matrix products (oneDNN, float32, 2 "
             "threads): a ceiling no implementation passes here. Batch-1 decode streams all "
             "497 MB of weights per token, so memory bandwidth sets it; prefill and training are "
             "compute-bound. A ratio target whose product with the peer's speed is above the "
             "ceiling cannot be met on this machine.", "",
             "| ceiling | tok/s | measured (share of the ceiling) |", "|---|---|---|"]
    for f in floors:
        bound = [r for r in records if all(m in r["measure"].lower() for m in f["match"])]
        seen, parts = set(), []
        for r in bound:
            for name, value in ((r["ours_name"], r["ours"]), (r["peer_name"], r["peer"])):
                if (name, value) not in seen:
                    seen.add((name, value))
                    parts.append(f"{name} {value:.0f} ({value / f['tokens_per_s']:.0%})")
        lines.append(f"| {f['measure']} | {f['tokens_per_s']:.0f} | {', '.join(parts)} |")
    return lines + [""]


def markdown(records: list[dict], floors: list[dict], seconds: float) -> str:
    lines = ["# Benchmarks", "", f"Latest run: `python bench/run_all.py` on {machine()}, "
             f"{time.strftime('%Y-%m-%d')}, {seconds / 60:.0f} min. Each script measures this "
             "project and its peer in the same process (same weights, identical tokens "
             "asserted), CPU float32. Ratio > 1 means this project is faster.", "",
             "| suite | measure | ours | peer | ratio | target |", "|---|---|---|---|---|---|"]
    for r in records:
        flag = "" if r["ratio"] >= r["target"] else " (missed)"
        lines.append(f"| {r['suite']} | {r['measure']} | {r['ours']:.1f} ({r['ours_name']}) | "
                     f"{r['peer']:.1f} ({r['peer_name']}) | {r['ratio']:.2f}x | "
                     f"{r['target']:.1f}x{flag} |")
    lines += ["", "![ratios](ratios.png)", "",
              "`ratios.png`: one bar per row of the table, in its order; green where the target "
              "is met, red where not; the grey line is 1x, each black tick the row's target.", "",
              "On a CUDA machine, `bash bench/gpu.sh` runs the PyTorch (and, when JAX sees a GPU, "
              "Flax) benchmarks in float32, bfloat16 and float16 in under 10 minutes.", ""]
    if floors:
        lines += floor_table(floors, records)
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("names", nargs="*", default=NAMES)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--write", action="store_true", help="update bench/README.md and ratios.png")
    args = ap.parse_args()
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        results = os.path.join(tmp, "results.json")
        floors_path = os.path.join(tmp, "floors.json")
        env = {**os.environ, "GPT2_BENCH_JSON": results, "GPT2_BENCH_FLOORS_JSON": floors_path,
               "TF_CPP_MIN_LOG_LEVEL": "2"}
        status = 0
        for name in args.names:
            cmd = [sys.executable, os.path.join(HERE, f"bench_{name}.py")]
            if args.quick and name in ("torch", "keras", "flax"):
                cmd.append("--quick")
            print(f"== {' '.join(cmd)}", flush=True)
            status = subprocess.call(cmd, env=env) or status
        records = json.load(open(results)) if os.path.exists(results) else []
        floors = json.load(open(floors_path)) if os.path.exists(floors_path) else []
    if args.write and records:
        with open(os.path.join(HERE, "README.md"), "w") as f:
            f.write(markdown(records, floors, time.time() - start))
        bar_chart(records, os.path.join(HERE, "ratios.png"))
    return status


if __name__ == "__main__":
    sys.exit(main())
