"""What the `gpt2` command needs from the Flax backend (see `gpt2_core.cli._backends`)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from gpt2_core import GPT2Config
from gpt2_core.cli._backends import until_eos
from gpt2_flax.models import GPT2LMHeadModel
from gpt2_flax.training import train_step


def load(path: str, dtype: str | None) -> GPT2LMHeadModel:
    return GPT2LMHeadModel.from_pretrained(path, dtype=dtype or "float32")


class _QueueStreamer:
    """A streamer (`put`/`end`) that hands each step's tokens to another thread; the prompt,
    which `put` receives first, is skipped. None marks the end."""

    def __init__(self) -> None:
        self.queue: queue.Queue[list[int] | None] = queue.Queue()
        self._seen_prompt = False

    def put(self, value: np.ndarray) -> None:
        if not self._seen_prompt:
            self._seen_prompt = True
            return
        self.queue.put(np.asarray(value).reshape(-1).tolist())

    def end(self) -> None:
        self.queue.put(None)


def _generate_kwargs(options) -> dict:
    # the CLI's None means "off"; for GenerationConfig None means "unset" (top_k 50 when sampling)
    return dict(max_new_tokens=options.max_new_tokens, do_sample=options.do_sample,
                temperature=options.temperature, top_k=options.top_k or 0, top_p=options.top_p,
                repetition_penalty=options.repetition_penalty, num_beams=options.num_beams,
                eos_token_id=list(options.eos_token_ids), seed=options.seed)


def generate(model: GPT2LMHeadModel, prompt_ids: list[int], options) -> Iterator[list[int]]:
    ids = np.asarray([prompt_ids], np.int32)
    if options.num_beams > 1:  # beams are reordered until the end: one chunk
        out = model.generate(ids, **_generate_kwargs(options))
        yield until_eos(np.asarray(out)[0, len(prompt_ids):].tolist(), options.eos_token_ids)
        return
    # the compiled loop streams each step through a callback; a worker thread runs it so that
    # this generator can yield tokens while the loop is still going
    streamer, errors = _QueueStreamer(), []

    def work() -> None:
        try:
            model.generate(ids, streamer=streamer, **_generate_kwargs(options))
        except Exception as e:  # re-raised in the caller's thread below
            errors.append(e)
            streamer.queue.put(None)

    worker = threading.Thread(target=work, name="gpt2_flax-generate", daemon=True)
    worker.start()
    try:
        while (tokens := streamer.queue.get()) is not None:
            kept = until_eos(tokens, options.eos_token_ids)
            if kept:
                yield kept
            if len(kept) < len(tokens):
                break
    finally:
        worker.join()
    if errors:
        raise errors[0]


def nll(model: GPT2LMHeadModel, ids: np.ndarray) -> tuple[float, int]:
    ids = jnp.asarray(ids, jnp.int32)
    count = ids.shape[0] * (ids.shape[1] - 1)
    return float(model(ids, labels=ids, use_cache=False).loss) * count, count


class Trainer:
    """AdamW on the causal-LM loss; dropout reseeded from (seed, step) so a resumed run draws
    the same masks as an uninterrupted one."""

    def __init__(self, config: GPT2Config, params: dict[str, np.ndarray], options):
        self.model = GPT2LMHeadModel.from_params(config, params)
        b1, b2 = options.betas
        # inject_hyperparams makes the learning rate optimizer state, set before each step.
        adamw = optax.inject_hyperparams(optax.adamw)(
            learning_rate=options.learning_rate, b1=b1, b2=b2, weight_decay=options.weight_decay)
        self.optimizer = nnx.Optimizer(self.model, adamw, wrt=nnx.Param)
        self.seed, self.step = options.seed, 0
        self.dropout = options.dropout

    def train_step(self, ids: np.ndarray, learning_rate: float) -> float:
        self.optimizer.opt_state.hyperparams["learning_rate"].value = jnp.asarray(
            learning_rate, jnp.float32)
        self.model.train() if self.dropout else self.model.eval()
        nnx.reseed(self.model, dropout=self.seed * 1_000_003 + self.step)
        ids = jnp.asarray(ids, jnp.int32)
        loss = train_step(self.model, self.optimizer, ids, ids)
        self.step += 1
        return float(loss)

    def eval_loss(self, ids: np.ndarray) -> tuple[float, int]:
        self.model.eval()
        return nll(self.model, ids)

    def params(self) -> dict[str, np.ndarray]:
        return self.model.to_params()

    def optimizer_state(self) -> dict[str, np.ndarray]:
        leaves, _ = jax.tree_util.tree_flatten_with_path(nnx.state(self.optimizer))
        state = {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}
        state["trainer.step"] = np.asarray(self.step, np.int64)
        return state

    def load_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
        current = nnx.state(self.optimizer)
        leaves, treedef = jax.tree_util.tree_flatten_with_path(current)
        missing = [jax.tree_util.keystr(p) for p, _ in leaves if jax.tree_util.keystr(p) not in state]
        if missing:
            raise ValueError(f"The optimizer checkpoint lacks {missing[:3]}: it was written by "
                             "another backend or model. Resume with the backend that wrote it.")
        restored = [jnp.asarray(state[jax.tree_util.keystr(p)], dtype=leaf.dtype) for p, leaf in leaves]
        nnx.update(self.optimizer, jax.tree_util.tree_unflatten(treedef, restored))
        self.step = int(state["trainer.step"])


def trainer(config: GPT2Config, params: dict[str, np.ndarray], options) -> Trainer:
    return Trainer(config, params, options)
