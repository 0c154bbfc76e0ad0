"""Fine-tune a GPT-2 on a small text file with a plain PyTorch loop, and show the loss falls.

    python bench/finetune_torch.py --text some.txt [--model DIR] [--steps 60]

Without --model it trains a small random GPT-2 (byte-level ids, so no tokenizer is needed);
with --model DIR it loads that checkpoint and, if `gpt2_tokenizer` is importable, its BPE.
Dropout is active (`model.train()`); `--checkpointing` turns on gradient checkpointing.
"""

from __future__ import annotations

import argparse
import math

import torch

from gpt2_core import GPT2Config
from gpt2_torch import GPT2LMHeadModel

SAMPLE = ("GPT-2 is specified once in NumPy and run in PyTorch, Keras and Flax. " * 40)


def encode(text: str, model_dir: str | None) -> list[int]:
    if model_dir:
        try:
            from gpt2_tokenizer import GPT2Tokenizer

            return GPT2Tokenizer.from_pretrained(model_dir).encode(text)
        except ImportError:
            pass
    return list(text.encode("utf-8"))


def batches(ids: torch.Tensor, batch: int, block: int, gen: torch.Generator):
    while True:
        starts = torch.randint(0, len(ids) - block - 1, (batch,), generator=gen)
        yield torch.stack([ids[s:s + block] for s in starts])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--text", help="a UTF-8 text file (default: a built-in sample)")
    ap.add_argument("--model", help="a GPT-2 directory to fine-tune (default: small random model)")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--block", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--checkpointing", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    text = open(args.text, encoding="utf-8").read() if args.text else SAMPLE
    if args.model:
        model = GPT2LMHeadModel.from_pretrained(args.model)
    else:
        config = GPT2Config(vocab_size=256, n_positions=args.block, n_embd=128, n_layer=4, n_head=4)
        model = GPT2LMHeadModel(config)
    ids = torch.tensor(encode(text, args.model))
    if args.checkpointing:
        model.gradient_checkpointing_enable()
    model.train()  # dropout on
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    data = batches(ids, args.batch, args.block, torch.Generator().manual_seed(0))
    first = last = math.nan
    for step in range(args.steps):
        x = next(data)
        loss = model(x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        first = loss.item() if step == 0 else first
        last = loss.item()
        if step % 10 == 0 or step == args.steps - 1:
            print(f"step {step:4d}  loss {last:.4f}")
    print(f"loss {first:.3f} -> {last:.3f} ({'decreased' if last < first else 'did NOT decrease'})")


if __name__ == "__main__":
    main()
