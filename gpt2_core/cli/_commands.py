"""The subcommands. Each takes the parsed arguments and returns the exit status."""

from __future__ import annotations

import argparse
import atexit
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from gpt2_core.checkpoint import resolve_model_path
from gpt2_core.cli._backends import GenerateOptions, load_runner
from gpt2_core.cli._progress import Progress

DEFAULT_MODEL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             "assets", "default_model")


def model_path(name: str | None, allow_pickle: bool = False) -> str:
    """The model folder for `--model`; with `allow_pickle`, a folder whose only weights are
    `pytorch_model.bin` is read once (plain tensors only) into a temporary safetensors copy."""
    path = _model_path(name)
    return _pickle_as_safetensors(path) if allow_pickle else path


def _pickle_as_safetensors(path: str) -> str:
    from gpt2_core import checkpoint

    if (any(os.path.isfile(os.path.join(path, n)) for n in (checkpoint.SAFE_WEIGHTS, checkpoint.SAFE_INDEX))
            or not os.path.isfile(os.path.join(path, checkpoint.PICKLE_WEIGHTS))):
        return path
    config, params = checkpoint.load_pretrained(path, allow_pickle=True)
    extra = {}
    for name in ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json", "generation_config.json"):
        if os.path.isfile(os.path.join(path, name)):
            with open(os.path.join(path, name), "rb") as f:
                extra[name] = f.read()
    tmp = tempfile.mkdtemp(prefix="gpt2-pickle-")
    atexit.register(shutil.rmtree, tmp, True)
    out = os.path.join(tmp, "model")
    checkpoint.save_pretrained(out, config, params, extra_files=extra)
    return out


def _model_path(name: str | None) -> str:
    if name is None:
        if not os.path.isfile(os.path.join(DEFAULT_MODEL, "model.safetensors")):
            raise FileNotFoundError(
                f"The bundled default model is missing from {DEFAULT_MODEL!r}. Reinstall the "
                "package, or pass --model DIR (a Hugging Face GPT-2 directory).")
        return DEFAULT_MODEL
    try:
        return resolve_model_path(name)
    except FileNotFoundError as missing:
        downloaded = _hub_download(name)
        if downloaded is None:
            raise
        if isinstance(downloaded, Exception):
            raise FileNotFoundError(f"{missing} (A download from the Hugging Face Hub was tried "
                                    f"and failed: {downloaded})") from downloaded
        return downloaded


HUB_FILES = ["config.json", "*.safetensors", "model.safetensors.index.json", "vocab.json",
             "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]


def _hub_download(name: str) -> str | Exception | None:
    """A hub id fetched with `huggingface_hub` when it is installed; None when it is not, or
    when `name` is a path. Set HF_HUB_OFFLINE=1 to never try."""
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        return None
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return None
    try:
        return snapshot_download(name, allow_patterns=HUB_FILES)
    except Exception as e:  # offline, unknown repo, gated: all end in the same advice
        return e


def tokenizer_for(path: str):
    """The model directory's own tokenizer files when present, else the bundled GPT-2 one."""
    from gpt2_tokenizer import GPT2Tokenizer

    own = any(os.path.isfile(os.path.join(path, f)) for f in ("vocab.json", "tokenizer.json"))
    return GPT2Tokenizer.from_pretrained(path if own else None)


class _Utf8Stream:
    """Prints decoded text as bytes arrive, holding back an incomplete UTF-8 sequence."""

    def __init__(self, tok, out):
        self.tok, self.out, self.pending = tok, out, b""

    def write(self, ids: list[int]) -> None:
        self.pending += self.tok.decode_bytes(ids)
        text, cut = _valid_prefix(self.pending)
        self.pending = self.pending[cut:]
        self.out.write(text)
        self.out.flush()

    def close(self) -> None:
        self.out.write(self.pending.decode("utf-8", errors="replace"))
        self.out.flush()


def _valid_prefix(data: bytes) -> tuple[str, int]:
    for cut in range(len(data), max(len(data) - 4, -1), -1):
        try:
            return data[:cut].decode("utf-8"), cut
        except UnicodeDecodeError as e:
            if e.reason != "unexpected end of data":
                return data[:cut].decode("utf-8", errors="replace"), cut
    return "", 0


def generate(args: argparse.Namespace) -> int:
    path = model_path(args.model, args.allow_pickle)
    runner = load_runner(args.backend)
    tok = tokenizer_for(path)
    prompt_ids = tok.encode_ordinary(args.prompt)
    if not prompt_ids:
        raise ValueError("`PROMPT` is empty. Give some text to continue, e.g. 'def fibonacci(n):'.")
    from gpt2_core.config import GPT2Config

    config = GPT2Config.from_json(path)
    options = GenerateOptions(
        max_new_tokens=args.max_new_tokens, do_sample=not args.greedy and args.num_beams == 1,
        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
        repetition_penalty=args.repetition_penalty, num_beams=args.num_beams, seed=args.seed,
        eos_token_ids=config.eos_token_ids)
    model = runner.load(path, args.dtype)
    sys.stdout.write(args.prompt)
    stream = _Utf8Stream(tok, sys.stdout)
    start, count = time.perf_counter(), 0
    for ids in runner.generate(model, prompt_ids, options):
        stream.write(list(ids))
        count += len(ids)
    stream.close()
    elapsed = time.perf_counter() - start
    sys.stdout.write("\n")
    print(f"[{count} tokens in {elapsed:.2f} s: {count / max(elapsed, 1e-9):.1f} tokens/s, "
          f"backend {args.backend}]", file=sys.stderr)
    return 0


def read_text(path: str) -> str:
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path!r} is a folder; pass a UTF-8 text file.")
    with open(path, "rb") as f:
        data = f.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{path!r} is not UTF-8 text: byte 0x{data[e.start]:02x} at offset {e.start} is "
            "invalid. Convert it first (e.g. `iconv -f latin1 -t utf-8`).") from e


def windows(ids: np.ndarray, block: int) -> list[np.ndarray]:
    """Non-overlapping windows of `block` tokens (the last one may be shorter)."""
    return [ids[i:i + block] for i in range(0, max(len(ids) - 1, 1), block) if len(ids[i:i + block]) > 1]


def score(args: argparse.Namespace) -> int:
    path = model_path(args.model, args.allow_pickle)
    text = read_text(args.file)
    tok = tokenizer_for(path)
    ids = np.asarray(tok.encode_ordinary(text), np.int64)
    if len(ids) < 2:
        raise ValueError(f"{args.file!r} holds {len(ids)} token(s); scoring needs at least 2.")
    from gpt2_core.config import GPT2Config

    block = GPT2Config.from_json(path).n_positions
    runner = load_runner(args.backend)
    model = runner.load(path, None)
    total, count = 0.0, 0
    chunks = windows(ids, block)
    progress = Progress(len(ids), "scoring", "tok")
    for i in range(0, len(chunks), args.batch_size):
        for w in chunks[i:i + args.batch_size]:  # windows differ in length only at the end
            nll, n = runner.nll(model, w[None])
            total, count = total + nll, count + n
            progress.update(len(w))
    progress.close()
    loss = total / count
    print(f"{args.file}: {count} predicted tokens, loss {loss:.4f} nats/token, "
          f"perplexity {math.exp(loss):.2f}")
    return 0


def convert(args: argparse.Namespace) -> int:
    from gpt2_core.cli._convert import convert as run

    for name, digest in run(args.src, args.dst, dtype=args.dtype, max_shard_size=args.max_shard_size,
                            allow_pickle=args.allow_pickle):
        print(f"{digest}  {name}")
    return 0


def train(args: argparse.Namespace) -> int:
    from gpt2_core.cli._train import run

    return run(args)


def conformance(args: argparse.Namespace) -> int:
    from gpt2_conformance.__main__ import main as run

    argv = []
    if args.model:
        argv += ["--model", args.model]
    if args.report:
        argv += ["--report", args.report]
    if args.backends:
        argv += ["--backends", args.backends]
    return run(argv)


def bench(args: argparse.Namespace) -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    bench_dir = os.path.join(root, "bench")
    if not os.path.isdir(bench_dir):
        raise FileNotFoundError(
            "`gpt2 bench` runs the scripts under bench/ of a source checkout, which this "
            f"installation lacks (looked in {bench_dir!r}). Clone the repository and install it "
            "with `pip install -e .`.")
    cmd = [sys.executable, os.path.join(bench_dir, "run_all.py"), *args.names]
    if args.quick:
        cmd.append("--quick")
    return subprocess.call(cmd)
