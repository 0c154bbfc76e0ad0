"""What the `gpt2` command needs from the PyTorch backend (see `gpt2_core.cli._backends`)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from gpt2_core import GPT2Config
from gpt2_core.cli._backends import until_eos
from gpt2_torch.heads import GPT2LMHeadModel
from gpt2_torch.linear import Linear
from gpt2_torch.loading import canonical_name


def load(path: str, dtype: str | None) -> GPT2LMHeadModel:
    return GPT2LMHeadModel.from_pretrained(path, torch_dtype=dtype or "float32")


def generate(model: GPT2LMHeadModel, prompt_ids: list[int], options) -> Iterator[list[int]]:
    ids = torch.tensor([prompt_ids])
    common = dict(max_new_tokens=options.max_new_tokens, do_sample=options.do_sample,
                  eos_token_id=list(options.eos_token_ids) or None, seed=options.seed)
    if options.do_sample:  # None means "off" here; the spec's off values are 0 and 1.0
        common.update(temperature=options.temperature, top_k=options.top_k or 0,
                      top_p=1.0 if options.top_p is None else options.top_p)
    if options.repetition_penalty is not None:
        common["repetition_penalty"] = options.repetition_penalty
    if options.num_beams > 1:
        out = model.generate(ids, num_beams=options.num_beams, **common)[0, len(prompt_ids):]
        yield until_eos(out.tolist(), options.eos_token_ids)
        return
    for step in model.stream_generate(ids, **common):
        token = int(step.token_ids[0])
        if token in options.eos_token_ids:
            return
        yield [token]


def nll(model: GPT2LMHeadModel, ids: np.ndarray) -> tuple[float, int]:
    ids_t = torch.as_tensor(ids, dtype=torch.long)
    count = ids_t.shape[0] * (ids_t.shape[1] - 1)
    with torch.inference_mode():
        return float(model(input_ids=ids_t, labels=ids_t, use_cache=False).loss) * count, count


class Trainer:
    """AdamW on the causal-LM loss. Dropout draws from a generator reseeded from (seed, step), so
    a resumed run draws the same masks as an uninterrupted one."""

    def __init__(self, config: GPT2Config, params: dict[str, np.ndarray], options):
        self.model = GPT2LMHeadModel(config)
        state = {k: torch.from_numpy(np.array(params[canonical_name(k)], np.float32))
                 for k in self.model.state_dict()}
        self.model.load_state_dict(state)
        self.names = [canonical_name(k) for k, _ in self.model.named_parameters()]
        # The projections hold [out, in]; their moments are saved in the checkpoint's [in, out]
        # like the weights, so optimizer files keep one layout.
        projections = {id(m.weight) for m in self.model.modules() if isinstance(m, Linear)}
        self.transposed = [id(p) in projections for p in self.model.parameters()]
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=options.learning_rate,
                                           betas=options.betas, weight_decay=options.weight_decay)
        self.seed, self.step, self.dropout = options.seed, 0, options.dropout

    def train_step(self, ids: np.ndarray, learning_rate: float) -> float:
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate
        self.model.train(self.dropout)
        torch.manual_seed(self.seed * 1_000_003 + self.step)
        ids_t = torch.as_tensor(ids, dtype=torch.long)
        loss = self.model(input_ids=ids_t, labels=ids_t, use_cache=False).loss
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        return float(loss.detach())

    def _moment(self, index: int, value: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.array(value))
        return t.t().contiguous() if self.transposed[index] and t.ndim == 2 else t

    def eval_loss(self, ids: np.ndarray) -> tuple[float, int]:
        self.model.eval()
        return nll(self.model, ids)

    def params(self) -> dict[str, np.ndarray]:
        return {k: v.detach().numpy().copy() for k, v in self.model.canonical_state().items()}

    def optimizer_state(self) -> dict[str, np.ndarray]:
        out = {"trainer.step": np.asarray(self.step, np.int64)}
        for index, state in self.optimizer.state_dict()["state"].items():
            for key, value in state.items():
                value = torch.as_tensor(value).detach()
                if self.transposed[index] and value.ndim == 2:
                    value = value.t()
                out[f"{self.names[index]}.{key}"] = value.numpy().copy()
        return out

    def load_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
        current = self.optimizer.state_dict()
        restored = {}
        for index, name in enumerate(self.names):
            keys = [k[len(name) + 1:] for k in state if k.startswith(name + ".")
                    and k[len(name) + 1:] in ("step", "exp_avg", "exp_avg_sq")]
            if not keys:
                raise ValueError(f"The optimizer checkpoint lacks the state of `{name}`: it was "
                                 "written by another backend or model. Resume with the backend "
                                 "that wrote it.")
            restored[index] = {k: self._moment(index, state[f"{name}.{k}"]) for k in keys}
        current["state"] = restored
        self.optimizer.load_state_dict(current)
        self.step = int(state["trainer.step"])


def trainer(config: GPT2Config, params: dict[str, np.ndarray], options) -> Trainer:
    return Trainer(config, params, options)
