"""`gpt2 train`: the backend-independent training driver.

Data: every file is tokenized with the model's tokenizer, followed by `<|endoftext|>`; the
concatenation is cut into non-overlapping windows of `block_size` tokens; the last
`val_fraction` of the windows (after a seeded shuffle of whole files) is held out. Each epoch
visits the training windows in a seeded permutation, so a resumed run sees exactly the batches
an uninterrupted one would.

Checkpoints (`OUT/checkpoint/`): weights, optimizer state and `state.json` (step, losses),
written all or nothing every `--save-every` steps, at each epoch end and on Ctrl-C (not before
the first step: a rerun then simply starts afresh). Running the same command again resumes.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import sysconfig
import tempfile

import numpy as np

from gpt2_core.checkpoint import load_pretrained, resolve_model_path, save_pretrained
from gpt2_core.cli._backends import TrainOptions, load_runner
from gpt2_core.cli._commands import model_path, read_text, tokenizer_for
from gpt2_core.cli._plot import line_chart, png_bytes
from gpt2_core.cli._progress import Progress
from gpt2_core.config import GPT2Config
from gpt2_core.init import init_params
from gpt2_core.safetensors_io import encode, load_file


def stdlib_files() -> list[str]:
    """The standard library's top-level modules: present wherever Python is."""
    return sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py")))


def build_dataset(files: list[str], tok, block: int, val_fraction: float, seed: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(train windows, held-out windows), each (N, block) int32."""
    if not files:
        raise ValueError("No training text: pass TEXT_FILES and/or --stdlib.")
    order = np.random.default_rng(seed).permutation(len(files))
    eot = tok.eos_token_id
    ids = np.concatenate([np.asarray(tok.encode_ordinary(read_text(files[i])) + [eot], np.int32)
                          for i in order])
    n = len(ids) // block
    if n < 2:
        raise ValueError(f"The text has {len(ids)} tokens: too few for two windows of "
                         f"--block-size {block}. Give more text or a smaller --block-size.")
    data = ids[:n * block].reshape(n, block)
    n_val = max(1, int(round(n * val_fraction)))
    return data[:-n_val], data[-n_val:]


def _initial_model(args, tok) -> tuple[GPT2Config, dict[str, np.ndarray]]:
    if args.model:
        config, params = load_pretrained(model_path(args.model), head="lm",
                                         allow_pickle=args.allow_pickle)
        return config, {k: np.array(v, np.float32) for k, v in params.items()}
    config = GPT2Config(vocab_size=len(tok), n_positions=args.n_positions, n_embd=args.n_embd,
                        n_layer=args.n_layer, n_head=args.n_head, bos_token_id=tok.eos_token_id,
                        eos_token_id=tok.eos_token_id)
    return config, init_params(config, seed=args.seed)


def learning_rate(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warmup to `peak`, then cosine decay to peak / 10 at `total` (nanoGPT's schedule).
    A function of the step alone, so a resumed run continues the same curve."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    return peak * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def unigram_baseline(train: np.ndarray, val: np.ndarray, vocab_size: int) -> float:
    """Held-out loss (nats/token) of add-one-smoothed unigram frequencies from the training
    windows: the floor a model must beat to have learned anything beyond token counts. Scored
    on the same targets as the model (every token of a window but its first)."""
    counts = np.bincount(train.reshape(-1), minlength=vocab_size).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    return float(-logp[val[:, 1:].reshape(-1)].mean())


def _evaluate(trainer, val: np.ndarray, batch: int) -> float:
    total, count = 0.0, 0
    for i in range(0, len(val), batch):
        loss, n = trainer.eval_loss(val[i:i + batch])
        total, count = total + loss, count + n
    return total / count


class _Checkpoint:
    """`OUT/checkpoint/`: weights, optimizer state and `state.json`, written in one transaction
    (`gpt2_core.folder_writer`), so an interrupted save leaves the previous checkpoint."""

    def __init__(self, out: str):
        self.dir = os.path.join(out, "checkpoint")

    def _resolved(self) -> str | None:
        try:
            directory = resolve_model_path(self.dir)
        except FileNotFoundError:
            return None
        return directory if os.path.isfile(os.path.join(directory, "state.json")) else None

    def exists(self) -> bool:
        return self._resolved() is not None

    def save(self, config, trainer, state: dict) -> None:
        if state["step"] == 0:
            return  # nothing learned yet: a rerun starts afresh, as this run did
        optimizer = encode(trainer.optimizer_state())
        save_pretrained(self.dir, config, trainer.params(),
                        extra_files={"optimizer.safetensors": optimizer,
                                     "state.json": json.dumps(state, indent=1)})

    def load(self):
        directory = self._resolved() or self.dir
        config, params = load_pretrained(directory, head="lm")
        try:
            with open(os.path.join(directory, "state.json"), encoding="utf-8") as f:
                state = json.load(f)
            optimizer = load_file(os.path.join(directory, "optimizer.safetensors"))
        except (OSError, ValueError) as e:
            raise ValueError(f"The training checkpoint {directory!r} cannot be resumed ({e}). "
                             "Delete it to start afresh.") from e
        return config, {k: np.array(v) for k, v in params.items()}, optimizer, state


def run(args: argparse.Namespace) -> int:
    if args.model:
        tok = tokenizer_for(model_path(args.model))
    else:
        from gpt2_tokenizer import GPT2Tokenizer

        tok = GPT2Tokenizer.from_pretrained()
    files = list(args.files) + (stdlib_files() if args.stdlib else [])
    for f in args.files:
        if not os.path.isfile(f):
            raise FileNotFoundError(f"Training file {f!r} does not exist.")
    train, val = build_dataset(files, tok, args.block_size, args.val_fraction, args.seed)
    runner = load_runner(args.backend)
    ckpt = _Checkpoint(args.out)
    options = TrainOptions(learning_rate=args.lr, weight_decay=args.weight_decay, seed=args.seed)
    state = {"step": 0, "train_loss": [], "val_loss": [], "backend": args.backend}
    resumed = ckpt.load() if ckpt.exists() else None
    if resumed is not None and resumed[3].get("step", 0) > 0:
        config, params, optimizer, state = resumed
        written_by = state.setdefault("backend", args.backend)
        if written_by != args.backend:
            raise ValueError(f"The checkpoint in {ckpt.dir!r} was written by `--backend "
                             f"{written_by}`. Resume with `--backend {written_by}`, or pass another "
                             "`--out` to start afresh.")
        trainer = runner.trainer(config, params, options)
        trainer.load_optimizer_state(optimizer)
        print(f"resuming from step {state['step']} ({ckpt.dir})")
    else:
        config, params = _initial_model(args, tok)
        trainer = runner.trainer(config, params, options)
    if args.block_size > config.n_positions:
        raise ValueError(f"--block-size {args.block_size} exceeds the model's n_positions "
                         f"{config.n_positions}.")
    steps_per_epoch = math.ceil(len(train) / args.batch_size)
    total = steps_per_epoch * args.epochs
    if args.max_steps:
        total = min(total, args.max_steps)
    print(f"{len(train)} training windows x {args.block_size} tokens, {len(val)} held out; "
          f"{total} steps on {args.backend}")
    progress = Progress(total, "training", "steps")
    progress.n = state["step"]
    stop_after = args.stop_after
    try:
        while state["step"] < total:
            if stop_after is not None and state["step"] >= stop_after:
                raise KeyboardInterrupt  # a test's Ctrl-C, at a known step
            step = state["step"]
            epoch, i = divmod(step, steps_per_epoch)
            order = np.random.default_rng([args.seed, epoch]).permutation(len(train))
            batch = train[order[i * args.batch_size:(i + 1) * args.batch_size]]
            lr = learning_rate(step, total, args.lr, args.warmup_steps)
            loss = trainer.train_step(batch, lr)
            state["step"] = step + 1
            state["train_loss"].append([state["step"], loss])
            progress.update(1, f"loss {loss:.3f}")
            end_of_epoch = state["step"] % steps_per_epoch == 0 or state["step"] == total
            if end_of_epoch:
                val_loss = _evaluate(trainer, val, args.batch_size)
                state["val_loss"].append([state["step"], val_loss])
                print(f"\nepoch {epoch + 1}: held-out loss {val_loss:.4f} "
                      f"(perplexity {math.exp(val_loss):.1f})")
            if end_of_epoch or state["step"] % args.save_every == 0:
                ckpt.save(config, trainer, state)
    except KeyboardInterrupt:
        progress.close()
        ckpt.save(config, trainer, state)
        print(f"interrupted at step {state['step']}; checkpoint saved. Run the same command "
              "to resume.")
        return 130
    progress.close()
    state["unigram_val_loss"] = unigram_baseline(train, val, config.vocab_size)
    _finish(args, config, trainer, tok, state)
    return 0


def _tokenizer_files(tok) -> dict[str, bytes]:
    with tempfile.TemporaryDirectory() as tmp:
        tok.save_pretrained(tmp)
        files = {}
        for name in sorted(os.listdir(tmp)):
            with open(os.path.join(tmp, name), "rb") as f:
                files[name] = f.read()
        return files


def _finish(args, config, trainer, tok, state) -> None:
    series = {"train": [tuple(p) for p in state["train_loss"]],
              "held-out": [tuple(p) for p in state["val_loss"]]}
    metrics = {"steps": state["step"], "final_train_loss": state["train_loss"][-1][1],
               "val_loss": state["val_loss"][-1][1] if state["val_loss"] else None,
               "unigram_val_loss": state["unigram_val_loss"], "backend": args.backend}
    # One transaction: the model, its tokenizer, the curve and the metrics appear together.
    save_pretrained(args.out, config, trainer.params(), dtype=args.save_dtype,
                    extra_files={**_tokenizer_files(tok),
                                 "loss.png": png_bytes(line_chart(series)),
                                 "metrics.json": json.dumps(metrics, indent=1) + "\n"})
    print(f"held-out loss {metrics['val_loss']:.4f} vs unigram baseline "
          f"{state['unigram_val_loss']:.4f} nats/token")
    print(f"saved {args.out} (loss curve: {os.path.join(args.out, 'loss.png')})")
