"""Tokenizer speed and memory, side by side on one ~5 MB corpus from this machine.

Run: `PYTHONPATH=tokenizer python bench/bench_tokenizer.py [--mb 5] [--repeat 3]`.
`--no-spaces` times hostile text instead: 1 MB of seeded random base64 and 1 MB of English prose
(docstrings of the Python standard library) with its whitespace removed, next to 1 MB of the
ordinary corpus; the median of 5 cold-cache runs, one thread, against tiktoken.

Compares `gpt2_tokenizer` (cold and warm caches, one thread, and `encode_batch` on 2
processes: the caller and one worker) with tiktoken `encode_ordinary` (built offline from the
bundled ranks) and Hugging Face `tokenizers` (Rust). Asserts that every implementation returns
the same ids. Each figure is the best of `--repeat` runs; on a shared machine the spread between
runs is large.
"""

from __future__ import annotations

import argparse
import base64
import os
import random
import re
import statistics
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

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


def main_no_spaces(repeat: int) -> None:
    """Hostile text: interleaved runs, median of `repeat`, fresh caches for every run of ours."""
    texts = {"random base64": random_base64(1.0), "prose, no whitespace": space_free_prose(1.0),
             "ordinary corpus": build_corpus(1.0)}
    tok = GPT2Tokenizer.from_pretrained()
    _PINNED.build()
    tik = tiktoken_gpt2()
    print(f"{'text (1 MB)':24} {'tiktoken s':>10} {'ours cold s':>11} {'ours warm s':>11} {'cold/tik':>9}")
    for name, text in texts.items():
        runs: dict[str, list[float]] = {"tik": [], "cold": [], "warm": []}
        expected = tik.encode_ordinary(text)
        for _ in range(repeat):
            for label, encode in (("tik", tik.encode_ordinary), ("cold", tok.encode_ordinary),
                                  ("warm", tok.encode_ordinary)):
                if label == "cold":
                    tok.bpe.clear_cache()
                start = time.perf_counter()
                ids = encode(text)
                runs[label].append(time.perf_counter() - start)
                assert ids == expected, f"{name}: ids differ from tiktoken"
        tik_s, cold, warm = (statistics.median(runs[k]) for k in ("tik", "cold", "warm"))
        print(f"{name:24} {tik_s:10.3f} {cold:11.3f} {warm:11.3f} {cold / tik_s:8.2f}x")


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
    args = parser.parse_args()
    if args.no_spaces:
        main_no_spaces(max(args.repeat, 5))
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


if __name__ == "__main__":
    main()
