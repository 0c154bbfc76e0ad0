"""In-graph GPT-2 tokenizer throughput through `tf.data`: `GPT2TokenizerLayer` vs KerasHub's
`GPT2Tokenizer` (built from the same files, no presets) vs tiktoken (single thread).

Corpus: about 5 MB from this machine (Python stdlib sources + vim's prose help files), cut into
documents of at most 16 KB at line breaks. Ids are checked against tiktoken: ours must match
exactly (the run fails otherwise); KerasHub's mismatching documents are counted.

    python bench/bench_keras_tokenizer.py [--mb 5] [--batch 32] [--repeats 2]

Times are wall-clock on a possibly shared machine: compare the ratios within one run.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import sysconfig
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import tensorflow as tf  # noqa: E402
import tiktoken  # noqa: E402

from gpt2_keras import _bpe_graph  # noqa: E402
from gpt2_keras.tokenizer_layer import GPT2TokenizerLayer  # noqa: E402

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
DOC_BYTES = 16 * 1024


def read_files(paths: list[str], budget: int) -> list[str]:
    docs, used = [], 0
    for path in paths:
        if used >= budget:
            break
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (UnicodeDecodeError, OSError):
            continue
        chunk: list[str] = []
        size = 0
        for line in text.splitlines(keepends=True):
            if size + len(line.encode()) > DOC_BYTES and chunk:
                docs.append("".join(chunk))
                chunk, size = [], 0
            chunk.append(line)
            size += len(line.encode())
        if chunk:
            docs.append("".join(chunk))
        used += len(text.encode())
    return docs


def build_corpus(megabytes: float) -> list[str]:
    total = int(megabytes * 1e6)
    stdlib = sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "**", "*.py"),
                              recursive=True))
    prose = sorted(glob.glob("/usr/share/vim/vim*/doc/*.txt")
                   + glob.glob("/usr/share/common-licenses/*"))
    return read_files(stdlib, int(total * 0.8)) + read_files(prose, int(total * 0.2))


def tiktoken_gpt2(vocab: dict[str, int]) -> tiktoken.Encoding:
    u2b = {c: b for b, c in _bpe_graph.bytes_to_unicode().items()}
    ranks = {bytes(u2b[c] for c in t): i for t, i in vocab.items() if t != "<|endoftext|>"}
    return tiktoken.Encoding(name="gpt2_bench", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": vocab["<|endoftext|>"]})


def run_tf_data(tokenizer, docs: list[str], batch: int) -> tuple[float, list[list[int]]]:
    ds = (tf.data.Dataset.from_tensor_slices(docs).batch(batch).map(tokenizer)
          .prefetch(tf.data.AUTOTUNE))
    start = time.perf_counter()
    rows = [row for out in ds for row in out.to_list()]
    return time.perf_counter() - start, rows


def best_of(repeats: int, fn):
    results = [fn() for _ in range(repeats)]
    return min(r[0] for r in results), results[0][1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=5.0)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-keras-hub", action="store_true")
    args = parser.parse_args()

    docs = build_corpus(args.mb)
    size_mb = sum(len(d.encode()) for d in docs) / 1e6
    print(f"corpus: {len(docs)} documents, {size_mb:.2f} MB; tf.data batch {args.batch}; "
          f"best of {args.repeats}; TF {tf.__version__}")
    vocab, merges = _bpe_graph.bundled_vocabulary()
    enc = tiktoken_gpt2(vocab)

    start = time.perf_counter()
    expected = [enc.encode_ordinary(d) for d in docs]
    t_tiktoken = time.perf_counter() - start

    ours = GPT2TokenizerLayer()
    run_tf_data(ours, docs[: args.batch], args.batch)  # trace once
    t_ours, got = best_of(args.repeats, lambda: run_tf_data(ours, docs, args.batch))
    bad = sum(g != e for g, e in zip(got, expected))
    if bad:
        raise SystemExit(f"GPT2TokenizerLayer differs from tiktoken on {bad} documents")

    rows = [("tiktoken (1 thread, Python loop)", t_tiktoken, 0),
            ("gpt2_keras GPT2TokenizerLayer (tf.data)", t_ours, bad)]
    if not args.skip_keras_hub:
        import keras_hub

        with tempfile.TemporaryDirectory() as tmp:
            with open(os.path.join(tmp, "vocab.json"), "w", encoding="utf-8") as f:
                json.dump(vocab, f)
            with open(os.path.join(tmp, "merges.txt"), "w", encoding="utf-8") as f:
                f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
            hub = keras_hub.tokenizers.GPT2Tokenizer(vocabulary=os.path.join(tmp, "vocab.json"),
                                                     merges=os.path.join(tmp, "merges.txt"))
        run_tf_data(hub, docs[: args.batch], args.batch)
        t_hub, hub_rows = best_of(args.repeats, lambda: run_tf_data(hub, docs, args.batch))
        hub_bad = sum(g != e for g, e in zip(hub_rows, expected))
        rows.append(("keras_hub GPT2Tokenizer (tf.data)", t_hub, hub_bad))

    print(f"{'tokenizer':44s} {'s':>7s} {'MB/s':>7s} {'docs != tiktoken':>17s}")
    for name, seconds, mismatches in rows:
        print(f"{name:44s} {seconds:7.2f} {size_mb / seconds:7.2f} {mismatches:>17d}")
    if not args.skip_keras_hub:
        print(f"ratio ours / keras_hub: {t_hub / t_ours:.2f}x")
    print(f"ratio ours / tiktoken:  {t_tiktoken / t_ours:.2f}x")
    if not args.skip_keras_hub:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from _results import emit

        emit("in-graph tokenizer through tf.data (5 MB)", "GPT2TokenizerLayer", "keras_hub",
             [("throughput (MB/s)", size_mb / t_ours, size_mb / t_hub, 2.0)],
             notes=f"tiktoken single thread: {size_mb / t_tiktoken:.2f} MB/s; documents whose "
                   f"ids differ from tiktoken: ours {bad}, keras_hub {hub_bad}")
    print("note: wall-clock on a shared, noisy machine; re-measure on a quiet one.")


if __name__ == "__main__":
    main()
