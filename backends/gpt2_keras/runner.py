"""What the `gpt2` command needs from the Keras backend (see `gpt2_core.cli._backends`)."""

from __future__ import annotations

from collections.abc import Iterator

import keras
import numpy as np

from gpt2_core import GPT2Config
from gpt2_core.cli._backends import until_eos
from gpt2_keras import generation
from gpt2_keras.modeling import GPT2LMHeadModel


def load(path: str, dtype: str | None) -> GPT2LMHeadModel:
    return GPT2LMHeadModel.from_pretrained(path, dtype=dtype)


def _generation_kwargs(options) -> dict:
    """The command's options as `GenerationConfig` fields (top_k None: no top-k filter)."""
    sampling = dict(temperature=options.temperature, top_k=options.top_k or 0,
                    top_p=options.top_p) if options.do_sample else {}
    return dict(max_new_tokens=options.max_new_tokens, do_sample=options.do_sample,
                repetition_penalty=options.repetition_penalty, num_beams=options.num_beams,
                eos_token_id=list(options.eos_token_ids) or None, seed=options.seed, **sampling)


def generate(model: GPT2LMHeadModel, prompt_ids: list[int], options) -> Iterator[list[int]]:
    ids = np.asarray([prompt_ids], np.int32)
    kwargs = _generation_kwargs(options)
    if options.num_beams > 1:  # beams are reordered until the end: one chunk
        out = model.generate(ids, **kwargs)
        yield until_eos(np.asarray(out)[0, len(prompt_ids):].tolist(), options.eos_token_ids)
        return
    # Token by token: the compiled loop's own prefill and step, with the loop on the host.
    for step in generation.stream_tokens(model, ids, **kwargs):
        token = int(step[0])
        if token in options.eos_token_ids:
            return
        yield [token]


def nll(model: GPT2LMHeadModel, ids: np.ndarray) -> tuple[float, int]:
    ids = np.asarray(ids, np.int32)
    count = ids.shape[0] * (ids.shape[1] - 1)
    loss = model({"input_ids": ids, "labels": ids}, training=False)["loss"]
    return float(keras.ops.convert_to_numpy(loss)) * count, count


class Trainer:
    """AdamW through `train_on_batch` (the model's own loss). Dropout seeds are set from (seed,
    step) before each step, so a resumed run draws the same masks as an uninterrupted one."""

    def __init__(self, config: GPT2Config, params: dict[str, np.ndarray], options):
        self.model = GPT2LMHeadModel.from_params(config, params)
        b1, b2 = options.betas
        self.optimizer = keras.optimizers.AdamW(learning_rate=options.learning_rate, beta_1=b1,
                                                beta_2=b2, weight_decay=options.weight_decay)
        self.model.compile(optimizer=self.optimizer)
        self.optimizer.build(self.model.trainable_variables)
        self.seed, self.step, self.dropout = options.seed, 0, options.dropout
        self.seed_states = [v for v in self.model.non_trainable_variables
                            if "seed_generator_state" in v.path]

    def train_step(self, ids: np.ndarray, learning_rate: float) -> float:
        self.optimizer.learning_rate.assign(learning_rate)
        for i, state in enumerate(self.seed_states):
            state.assign(np.array([self.seed * 1_000_003 + self.step, i], state.dtype))
        ids = np.asarray(ids, np.int32)
        if self.dropout:
            loss = self.model.train_on_batch({"input_ids": ids, "labels": ids}, return_dict=True)
        else:
            raise ValueError("Training without dropout is not offered by the Keras runner.")
        self.step += 1
        return float(loss["loss"])

    def eval_loss(self, ids: np.ndarray) -> tuple[float, int]:
        return nll(self.model, ids)

    def params(self) -> dict[str, np.ndarray]:
        from gpt2_keras.weights import get_params

        return get_params(self.model)

    def _keys(self) -> list[str]:
        # Keras makes optimizer names unique per process (adam_w, adam_w_1, ...): key by
        # position and the path below the optimizer's own name.
        return [f"optimizer.{i}.{v.path.split('/', 1)[-1]}"
                for i, v in enumerate(self.optimizer.variables)]

    def optimizer_state(self) -> dict[str, np.ndarray]:
        out = {"trainer.step": np.asarray(self.step, np.int64)}
        for key, v in zip(self._keys(), self.optimizer.variables, strict=True):
            out[key] = keras.ops.convert_to_numpy(v)
        return out

    def load_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
        keys = [_stored_key(state, i, key) for i, key in enumerate(self._keys())]
        missing = [k for k, found in zip(self._keys(), keys) if found is None]
        if missing:
            raise ValueError(f"The optimizer checkpoint lacks {missing[:3]}: it was written by "
                             "another backend or model. Resume with the backend that wrote it.")
        for key, v in zip(keys, self.optimizer.variables, strict=True):
            if tuple(state[key].shape) != tuple(v.shape):
                raise ValueError(f"The optimizer checkpoint's `{key}` has shape "
                                 f"{list(state[key].shape)}; this model's needs {list(v.shape)}. "
                                 "Resume with the model that wrote it.")
            v.assign(state[key])
        self.step = int(state["trainer.step"])


def _stored_key(state: dict, i: int, key: str) -> str | None:
    """`key`, or the position's key as runs written before the variable paths were unique
    spell it (`optimizer.5.c_attn_weight_momentum`, now `...transformer_h_0_attn_c_attn...`)."""
    if key in state:
        return key
    old = [k for k in state if k.startswith(f"optimizer.{i}.")]
    if len(old) == 1 and key.endswith(old[0].split(".", 2)[-1]):
        return old[0]
    return None


def trainer(config: GPT2Config, params: dict[str, np.ndarray], options) -> Trainer:
    return Trainer(config, params, options)
