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
    """Each ceiling from `bench_floor.py` against every speed row it bounds: ours, the peer's,
    and what the row's target asks for, each as a share of the ceiling."""
    lines = ["## What this machine allows", "",
             "`bench_floor.py` times only GPT-2 small's matrix products (the faster of oneDNN "
             "and MKL, float32, 2 threads). Batch-1 decode streams all 497 MB of weights per "
             "token, so memory bandwidth sets that ceiling; prefill and training are "
             "compute-bound. Attention, LayerNorm, GELU and sampling come on top, so no "
             "implementation reaches 100%. Where a ratio target asks for (target x the peer's "
             "speed) near or above the ceiling, the peer is already close to what the hardware "
             "allows and the target cannot be met on this machine.", "",
             "| ceiling, tok/s | row | ours (share) | peer (share) | target asks (share) |",
             "|---|---|---|---|---|"]
    for f in floors:
        ceiling = f["tokens_per_s"]
        for r in records:
            if not all(m in r["measure"].lower() for m in f["match"]):
                continue
            asks = r["target"] * r["peer"]
            lines.append(
                f"| {f['measure']}: {ceiling:.0f} | {r['suite'].split(':')[0]}, {r['measure']} | "
                f"{r['ours_name']} {r['ours']:.0f} ({r['ours'] / ceiling:.0%}) | "
                f"{r['peer_name']} {r['peer']:.0f} ({r['peer'] / ceiling:.0%}) | "
                f"{asks:.0f} ({asks / ceiling:.0%}) |")
    return lines + [""]


def markdown(run: dict) -> str:
    """`bench/README.md` from a run as `results.json` holds it."""
    records, floors = run["records"], run["floors"]
    lines = ["# Benchmarks", "", f"Latest run: `python bench/run_all.py` on {run['machine']}, "
             f"{run['date']}, {run['minutes']:.0f} min. Each script measures this "
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
    ap.add_argument("--write", action="store_true",
                    help="update bench/README.md, ratios.png and results.json (the raw rows)")
    ap.add_argument("--rewrite", action="store_true",
                    help="rebuild bench/README.md and ratios.png from results.json; run nothing")
    args = ap.parse_args()
    if args.rewrite:
        with open(os.path.join(HERE, "results.json")) as f:
            write_pages(json.load(f))
        return 0
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        results = os.path.join(tmp, "results.json")
        floors_path = os.path.join(tmp, "floors.json")
        env = {**os.environ, "GPT2_BENCH_JSON": results, "GPT2_BENCH_FLOORS_JSON": floors_path,
               "TF_CPP_MIN_LOG_LEVEL": "2"}
        status = 0
        names = list(args.names)
        if "floor" in names and len(names) > 1:
            names.append("floor")  # again at the end: each ceiling keeps its higher measurement
        for name in names:
            cmd = [sys.executable, os.path.join(HERE, f"bench_{name}.py")]
            if args.quick and name in ("torch", "keras", "flax"):
                cmd.append("--quick")
            print(f"== {' '.join(cmd)}", flush=True)
            status = subprocess.call(cmd, env=env) or status
        records = json.load(open(results)) if os.path.exists(results) else []
        floors = json.load(open(floors_path)) if os.path.exists(floors_path) else []
    if args.write and records:
        run = {"machine": machine(), "date": time.strftime("%Y-%m-%d"),
               "minutes": (time.time() - start) / 60, "records": records, "floors": floors}
        with open(os.path.join(HERE, "results.json"), "w") as f:
            json.dump(run, f, indent=1)
        write_pages(run)
    return status


def write_pages(run: dict) -> None:
    with open(os.path.join(HERE, "README.md"), "w") as f:
        f.write(markdown(run))
    bar_chart(run["records"], os.path.join(HERE, "ratios.png"))


if __name__ == "__main__":
    sys.exit(main())
