"""The `gpt2` command: generate, score, convert, train, conformance, bench.

Imports a deep-learning framework only when a command asks for its backend.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from gpt2_core.cli import _commands


def _add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help="a Hugging Face GPT-2 directory, or a name in the local Hugging Face "
                        "cache (e.g. gpt2); default: the small model bundled with the package")
    p.add_argument("--backend", default="torch", help="torch, keras or flax (default torch)")
    p.add_argument("--allow-pickle", action="store_true",
                   help="also read a model folder's pytorch_model.bin (plain tensors only)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpt2", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error instead of one line")
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="continue a prompt, streaming the text")
    g.add_argument("prompt")
    _add_model(g)
    g.add_argument("--max-new-tokens", type=int, default=64)
    g.add_argument("--greedy", action="store_true", help="argmax decoding (same text on every backend)")
    g.add_argument("--temperature", type=float, default=1.0)
    g.add_argument("--top-k", type=int, default=50)
    g.add_argument("--top-p", type=float, default=None)
    g.add_argument("--repetition-penalty", type=float, default=None)
    g.add_argument("--num-beams", type=int, default=1)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--dtype", default=None, help="float32 (default), float16 or bfloat16")

    s = sub.add_parser("score", help="loss and perplexity of a UTF-8 text file")
    s.add_argument("file")
    _add_model(s)
    s.add_argument("--batch-size", type=int, default=4)

    c = sub.add_parser("convert", help="any GPT-2 checkpoint layout -> Hugging Face safetensors")
    c.add_argument("src", help="a Hugging Face directory (hub, save_pretrained or sharded layout, "
                               "or pytorch_model.bin) or OpenAI's TensorFlow release directory "
                               "(hparams.json + model.ckpt.*)")
    c.add_argument("dst")
    c.add_argument("--dtype", default=None, help="float32, float16 or bfloat16 (default: as stored)")
    c.add_argument("--max-shard-size", type=int, default=None, help="bytes per shard")
    c.add_argument("--allow-pickle", action="store_true", help="read pytorch_model.bin (tensors only)")

    t = sub.add_parser("train", help="train from scratch or fine-tune on text files")
    t.add_argument("files", nargs="*", help="UTF-8 text files")
    t.add_argument("--stdlib", action="store_true",
                   help="also train on the Python standard library's top-level modules")
    t.add_argument("--out", required=True)
    t.add_argument("--backend", default="torch")
    t.add_argument("--model", default=None, help="fine-tune this model (default: train from scratch)")
    t.add_argument("--allow-pickle", action="store_true",
                   help="also read the --model folder's pytorch_model.bin (plain tensors only)")
    t.add_argument("--n-layer", type=int, default=4)
    t.add_argument("--n-embd", type=int, default=128)
    t.add_argument("--n-head", type=int, default=4)
    t.add_argument("--n-positions", type=int, default=256)
    t.add_argument("--block-size", type=int, default=128)
    t.add_argument("--batch-size", type=int, default=16)
    t.add_argument("--epochs", type=int, default=1)
    t.add_argument("--max-steps", type=int, default=None)
    t.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (cosine schedule)")
    t.add_argument("--warmup-steps", type=int, default=20)
    t.add_argument("--weight-decay", type=float, default=0.1)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--val-fraction", type=float, default=0.05)
    t.add_argument("--save-every", type=int, default=100, help="checkpoint every N steps")
    t.add_argument("--save-dtype", default="float32", help="dtype of the final weights")
    t.add_argument("--stop-after", type=int, default=None, help=argparse.SUPPRESS)

    k = sub.add_parser("conformance", help="the cross-backend conformance matrix")
    k.add_argument("--model", default=None)
    k.add_argument("--report", default=None)
    k.add_argument("--backends", default=None)

    b = sub.add_parser("bench", help="run the benchmarks under bench/ (from a source checkout)")
    b.add_argument("names", nargs="*",
                   help="which (default: all): floor, tokenizer, keras_tokenizer, torch, keras, "
                        "flax")
    b.add_argument("--quick", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        return getattr(_commands, args.command)(args)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError, TypeError) as e:
        # A user's mistake (a wrong path, a corrupt or foreign file, a bad option) gets one line;
        # --debug shows where it came from.
        if args.debug:
            raise
        print(f"gpt2 {args.command}: error: {one_line(e)}", file=sys.stderr)
        return 2


def one_line(e: BaseException) -> str:
    """The error's message on one line (a checkpoint's list of problems joined by `; `)."""
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        text = f"{e.strerror}: {e.filename!r}"
    else:
        text = str(e) or type(e).__name__
    lines = [line.strip().removeprefix("- ") for line in text.splitlines() if line.strip()]
    return (lines[0] + " " + "; ".join(lines[1:])).strip() if len(lines) > 1 else "".join(lines)


if __name__ == "__main__":
    sys.exit(main())
