"""Tokenizer speed and memory, side by side on one ~5 MB corpus from this machine.

Run: `PYTHONPATH=tokenizer python bench/bench_tokenizer.py [--mb 5] [--repeat 3]`.
`--no-spaces` times hostile text instead: 1 MB of seeded random base64 and 1 MB of English prose
(docstrings of the Python standard library) with its whitespace removed, next to 1 MB of the
ordinary corpus; the median of 5 cold-cache runs, one thread, against tiktoken. Add
`--before DIR` to time another checkout's `tokenizer` folder too (e.g. from
`git worktree add /tmp/tok-before HEAD~1`), interleaved with this one in subprocesses.

Compares `gpt2_tokenizer` (cold and warm caches, one thread, and `encode_batch` on 2
processes: the caller and one worker) with tiktoken `encode_ordinary` (built offline from the
bundled ranks) and Hugging Face `tokenizers` (Rust). Asserts that every implementation returns
the same ids. Each figure is the best of `--repeat` runs; on a shared machine the spread between
runs is large.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

if "--no-spaces-worker" not in sys.argv:  # A worker times the tree on its PYTHONPATH.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tokenizer"))

from gpt2_tokenizer import GPT2Tokenizer, bytes_to_unicode  # noqa: E402
from gpt2_tokenizer.files import ASSETS_DIR, load_bundled_vocab  # noqa: E402
from gpt2_tokenizer.pretokenizer import _PINNED  # noqa: E402

ORIGINAL_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def build_corpus(megabytes: float) -> str:
    """Python stdlib sources (60%) and English prose from /usr/share/doc and docstrings."""
    limit = int(megabytes * 1_000_000)
    code, prose = [], []
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        if sum(map(len, code)) > 0.6 * limit:
            break
        try:
            code.append(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            pass
    docs = sorted(Path("/usr/share/doc").rglob("*"))
    docs += sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("LICENSE*"))
    for path in docs:
        if sum(map(len, code + prose)) > limit:
            break
        if path.is_file() and path.suffix not in (".gz", ".png", ".jpg"):
            try:
                prose.append(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError):
                pass
    return "".join(code + prose)


def space_free_prose(megabytes: float) -> str:
    """Docstrings of the Python standard library, each once, with every whitespace removed."""
    limit = int(megabytes * 1_000_000)
    docstring = re.compile(r'"""(.*?)"""', re.S)
    seen: dict[str, None] = {}
    size = 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        for doc in docstring.findall(source):
            if doc not in seen:
                seen[doc] = None
                size += len(doc)
        if size > 1.3 * limit:
            break
    return "".join("".join(doc.split()) for doc in seen)[:limit]


def random_base64(megabytes: float, seed: int = 0) -> str:
    limit = int(megabytes * 1_000_000)
    return base64.b64encode(random.Random(seed).randbytes(limit * 3 // 4 + 3)).decode()[:limit]


def tiktoken_gpt2():
    """tiktoken's encoder built offline from the bundled ranks (no download)."""
    import tiktoken

    encoder, _ = load_bundled_vocab()
    byte_of = {c: b for b, c in bytes_to_unicode().items()}
    ranks = {bytes(byte_of[c] for c in t): i for t, i in encoder.items() if i != 50256}
    return tiktoken.Encoding(name="gpt2_bench", pat_str=ORIGINAL_PATTERN, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": 50256})


def no_spaces_texts() -> dict[str, str]:
    return {"random base64": random_base64(1.0), "prose, no whitespace": space_free_prose(1.0),
            "ordinary corpus": build_corpus(1.0)}


def no_spaces_run(texts: dict[str, str]) -> dict[str, dict[str, float]]:
    """One repetition: tiktoken, ours with fresh caches, ours warm; wall and CPU seconds each."""
    tok = GPT2Tokenizer.from_pretrained()
    _PINNED.build()
    tik = tiktoken_gpt2()
    out: dict[str, dict[str, float]] = {}
    for name, text in texts.items():
        expected = tik.encode_ordinary(text)
        times = {}
        for label, encode in (("tik", tik.encode_ordinary), ("cold", tok.encode_ordinary),
                              ("warm", tok.encode_ordinary)):
            if label == "cold":
                tok.bpe.clear_cache()
            wall, cpu = time.perf_counter(), time.process_time()
            ids = encode(text)
            times[label], times[label + "_cpu"] = time.perf_counter() - wall, time.process_time() - cpu
            assert ids == expected, f"{name}: ids differ from tiktoken"
        out[name] = times
    return out


def main_no_spaces(repeat: int, before: str | None) -> None:
    """Hostile text: interleaved runs, median of `repeat`, fresh caches for every run of ours.

    With `before` (the `tokenizer` folder of another checkout, e.g. a `git worktree` of an older
    commit), each repetition runs both trees in subprocesses, alternating which goes first.
    """
    trees = {"now": str(Path(__file__).resolve().parents[1] / "tokenizer")}
    if before:
        trees = {"before": str(Path(before).resolve()), **trees}
    runs: dict[str, list[dict[str, dict[str, float]]]] = {tree: [] for tree in trees}
    if not before:
        texts = no_spaces_texts()
        runs["now"] = [no_spaces_run(texts) for _ in range(repeat)]
    for k in range(repeat if before else 0):
        for tree in (list(trees) if k % 2 == 0 else list(trees)[::-1]):
            done = subprocess.run([sys.executable, __file__, "--no-spaces-worker"], check=True,
                                  capture_output=True, text=True,
                                  env={**os.environ, "PYTHONPATH": trees[tree]})
            runs[tree].append(json.loads(done.stdout.splitlines()[-1]))
    print(cpu_model(), "| ratio: ours / tiktoken, median of", repeat,
          "runs (wall clock; CPU time in brackets)")
    print(f"{'text (1 MB)':24} {'tree':7} {'tiktoken s':>10} {'ours cold s':>11} {'ours warm s':>11}"
          f" {'cold/tik':>15} {'warm/tik':>15}")
    for name in runs["now"][0]:
        for tree, results in runs.items():
            rows = [r[name] for r in results]
            seconds = [statistics.median(r[k] for r in rows) for k in ("tik", "cold", "warm")]
            ratios = [statistics.median(r[k] / r["tik" + k[4:]] for r in rows)
                      for k in ("cold", "cold_cpu", "warm", "warm_cpu")]
            print(f"{name:24} {tree:7} {seconds[0]:10.3f} {seconds[1]:11.3f} {seconds[2]:11.3f} "
                  f"{ratios[0]:6.2f}x ({ratios[1]:4.2f}x) {ratios[2]:6.2f}x ({ratios[3]:4.2f}x)")
    sys.path.insert(0, os.path.dirname(__file__))
    from _results import emit

    rows = []
    for name in ("random base64", "prose, no whitespace"):
        results = [r[name] for r in runs["now"]]
        tik_s = statistics.median(r["tik"] for r in results)
        cold_s = statistics.median(r["cold"] for r in results)
        rows.append((f"{name}, fresh caches, MB/s", 1 / cold_s, 1 / tik_s, 0.5))
    emit("tokenizer, hostile text (1 MB, 1 thread)", "gpt2_tokenizer", "tiktoken", rows,
         notes=f"bench_tokenizer.py --no-spaces: median of {repeat} interleaved runs; "
               "target: within 2x of tiktoken.")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def best_of(repeat: int, fn, setup=None) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        if setup:
            setup()
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def rss_of_loaded_tokenizer() -> float:
    """MB of resident memory a fresh interpreter gains by loading the tokenizer."""
    code = (
        "import sys, gpt2_tokenizer\n"
        "def rss():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmRSS'): return int(line.split()[1]) / 1024\n"
        "before = rss(); t = gpt2_tokenizer.GPT2Tokenizer.from_pretrained(); t.encode('x')\n"
        "print(rss() - before)"
    )
    env_path = str(Path(__file__).resolve().parents[1] / "tokenizer")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={"PYTHONPATH": env_path})
    return float(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-spaces", action="store_true",
                        help="time random base64 and space-free prose instead (median of 5)")
    parser.add_argument("--before", metavar="TOKENIZER_DIR",
                        help="with --no-spaces: also time this tokenizer tree, interleaved")
    parser.add_argument("--no-spaces-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.no_spaces_worker:  # One repetition for `main_no_spaces`, in the tree on PYTHONPATH.
        print(json.dumps(no_spaces_run(no_spaces_texts())))
        return
    if args.no_spaces:
        main_no_spaces(max(args.repeat, 5), args.before)
        return

    text = build_corpus(args.mb)
    size_mb = len(text.encode("utf-8")) / 1e6
    print(f"corpus: {size_mb:.2f} MB UTF-8, {len(text):,} chars, "
          f"{sum(not c.isascii() for c in text):,} non-ASCII chars")

    tok = GPT2Tokenizer.from_pretrained()
    _PINNED.build()  # One-time Unicode 16 set-up, timed separately below.
    rows: list[tuple[str, float]] = []

    cold, ids = best_of(args.repeat, lambda: tok.encode_ordinary(text), tok.bpe.clear_cache)
    rows.append(("gpt2_tokenizer cold cache", cold))
    warm, warm_ids = best_of(args.repeat, lambda: tok.encode_ordinary(text))
    assert warm_ids == ids
    rows.append(("gpt2_tokenizer warm cache", warm))

    tik = tiktoken_gpt2()
    tik_time, tik_ids = best_of(args.repeat, lambda: tik.encode_ordinary(text))
    assert tik_ids == ids, "tiktoken ids differ"
    rows.append(("tiktoken encode_ordinary", tik_time))

    from tokenizers import Tokenizer, models, pre_tokenizers

    hf = Tokenizer(models.BPE.from_file(str(ASSETS_DIR / "vocab.json"),
                                        str(ASSETS_DIR / "merges.txt")))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf_time, hf_enc = best_of(args.repeat, lambda: hf.encode(text, add_special_tokens=False))
    assert hf_enc.ids == ids, "HF tokenizers ids differ"
    rows.append(("HF tokenizers (Rust)", hf_time))

    docs = text.split("\n\n")
    serial, serial_ids = best_of(1, lambda: tok.encode_batch(docs))
    tok.encode_batch(docs, num_threads=2)  # Starts the worker pool; not timed.
    parallel, par_ids = best_of(args.repeat, lambda: tok.encode_batch(docs, num_threads=2))
    tok.close()
    assert par_ids == serial_ids
    rows.append(("gpt2_tokenizer encode_batch, 1 process (warm)", serial))
    rows.append(("gpt2_tokenizer encode_batch, 2 processes", parallel))

    print(f"\n{'implementation':48} {'MB/s':>8} {'vs tiktoken':>12}")
    for name, seconds in rows:
        print(f"{name:48} {size_mb / seconds:8.2f} {tik_time / seconds:11.2f}x")
    print("transformers' slow GPT2Tokenizer: not in transformers 5 (GPT2Tokenizer is the Rust one)")

    start = time.perf_counter()
    type(_PINNED)().build()
    print(f"one-time Unicode 16 set-up on first non-ASCII text: {time.perf_counter() - start:.3f} s")
    rss = rss_of_loaded_tokenizer()
    print(f"loaded tokenizer RSS over the interpreter: {rss:.1f} MB")

    sys.path.insert(0, os.path.dirname(__file__))
    from _results import emit

    tik_mbps = size_mb / tik_time
    emit("tokenizer (5 MB, 1 thread)", "gpt2_tokenizer", "tiktoken", [
        ("warm cache, MB/s", size_mb / warm, tik_mbps, 1.0),
        ("cold cache (fresh caches), MB/s", size_mb / cold, tik_mbps, 0.6),
        ("encode_batch, 2 processes, MB/s", size_mb / parallel, tik_mbps, 1.0),
    ], notes=f"Loaded tokenizer RSS {rss:.1f} MB over the interpreter (budget 50 MB). "
             "tiktoken is one thread in every row.")
    print()
    main_no_spaces(5, None)  # The hostile-text rows too, for bench/README.md.


if __name__ == "__main__":
    main()
