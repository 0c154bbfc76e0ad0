"""One way for every benchmark to report: a printed table of ratios, and (when `run_all.py`
asks through $GPT2_BENCH_JSON) the same rows as JSON."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def cpu_flags() -> str:
    """The CPU's vector-extension flags from /proc/cpuinfo (what decides the matmul kernels)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next(line.split(":", 1)[1].split() for line in f if line.startswith("flags"))
    except (OSError, StopIteration):
        return "unknown"
    keep = [f for f in flags if f.startswith(("sse4", "avx", "fma", "amx", "f16c"))]
    return " ".join(keep) or "none of sse4/avx/fma/amx"


def emit(suite: str, ours: str, peer: str, rows: list[tuple[str, float, float, float]],
         notes: str = "", higher_is_better: bool = True) -> None:
    """Print `rows` of (measure, ours, peer, target ratio) and append them to $GPT2_BENCH_JSON.

    The ratio is ours / peer when higher is better (throughput), peer / ours otherwise.
    """
    print(f"\n{suite}  ({machine()})" + (f"\n{notes}" if notes else ""))
    print(f"{'measure':46s} {ours:>14s} {peer:>14s} {'ratio':>7s} {'target':>7s}")
    records = []
    for name, a, b, target in rows:
        ratio = (a / b if higher_is_better else b / a) if a and b else float("nan")
        flag = "ok" if ratio >= target else "MISS"
        print(f"{name:46s} {a:14.2f} {b:14.2f} {ratio:7.2f} {target:>6.2f}x {flag}")
        records.append({"suite": suite, "measure": name, "ours": a, "peer": b, "ours_name": ours,
                        "peer_name": peer, "ratio": ratio, "target": target, "notes": notes})
    path = os.environ.get("GPT2_BENCH_JSON")
    if path:
        existing = json.load(open(path)) if os.path.exists(path) else []
        with open(path, "w") as f:
            json.dump(existing + records, f, indent=1)


_PEAK_KB = """
def peak_kb():
    # VmHWM, not getrusage's ru_maxrss: Linux keeps ru_maxrss across fork + exec, so a child of
    # a (multi-GB) benchmark process would report the parent's peak
    with open('/proc/self/status') as f:
        return next(int(line.split()[1]) for line in f if line.startswith('VmHWM'))
"""


def load_rss(snippet: str, path: str, which: str) -> tuple[float, int]:
    """Peak RSS added by loading / the weight bytes, measured in a fresh process.

    `snippet` runs with `sys.argv[1:] == [which, path]` and `peak_kb()` defined; it prints one
    JSON line `{"peak_kb": ..., "weights": ...}` as its last output.
    """
    out = subprocess.run([sys.executable, "-c", _PEAK_KB + snippet, which, path], check=True,
                         capture_output=True, text=True).stdout.strip().splitlines()[-1]
    r = json.loads(out)
    return r["peak_kb"] * 1024 / r["weights"], r["weights"]
