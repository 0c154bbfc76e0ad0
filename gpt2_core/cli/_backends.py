"""What the command line needs from a backend, and how it finds one.

Each backend ships a `runner` module (`gpt2_torch.runner`, `gpt2_keras.runner`,
`gpt2_flax.runner`) with the functions below. The command line imports only the backend asked
for, so `gpt2 generate --backend flax` never loads torch or TensorFlow.

    load(path: str, dtype: str | None) -> model
    generate(model, prompt_ids: list[int], options: GenerateOptions) -> Iterator[list[int]]
        yields new token ids as they are produced (compiled loops may yield them all at once)
    nll(model, ids: np.ndarray) -> tuple[float, int]
        summed next-token negative log-likelihood of (B, T) windows, and the number of targets
    trainer(config, params, options: TrainOptions) -> Trainer

    class Trainer:
        train_step(ids: np.ndarray, learning_rate: float) -> float
                                                    # one AdamW step on (B, T) windows; the loss
        eval_loss(ids: np.ndarray) -> tuple[float, int]  # summed loss and target count, no update
        params() -> dict[str, np.ndarray]           # canonical names (gpt2_core.layout)
        optimizer_state() -> dict[str, np.ndarray]
        load_optimizer_state(state: dict[str, np.ndarray]) -> None
"""

from __future__ import annotations

import dataclasses
import importlib
from types import ModuleType

BACKENDS = {"torch": ("gpt2_torch.runner", "torch"), "keras": ("gpt2_keras.runner", "keras"),
            "flax": ("gpt2_flax.runner", "flax")}


@dataclasses.dataclass(frozen=True)
class GenerateOptions:
    max_new_tokens: int = 64
    do_sample: bool = True
    temperature: float = 1.0
    top_k: int | None = 50
    top_p: float | None = None
    repetition_penalty: float | None = None
    num_beams: int = 1
    seed: int = 0
    eos_token_ids: tuple[int, ...] = (50256,)


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    learning_rate: float = 1e-3  # the peak; the driver passes each step's rate to train_step
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    seed: int = 0
    dropout: bool = True


def until_eos(ids: list[int], eos_token_ids: tuple[int, ...]) -> list[int]:
    """`ids` up to, not including, the first end-of-sequence token."""
    eos = set(eos_token_ids)
    return ids[:next((i for i, t in enumerate(ids) if t in eos), len(ids))]


def load_runner(name: str) -> ModuleType:
    if name not in BACKENDS:
        raise ValueError(f"Unknown backend {name!r}. Expected one of {sorted(BACKENDS)} "
                         "(`--backend torch|keras|flax`).")
    module, extra = BACKENDS[name]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] in ("torch", "tensorflow", "keras", "jax", "flax", "optax"):
            raise RuntimeError(
                f"The {name} backend needs `{e.name.split('.')[0]}`, which is not installed. "
                f"Install it with: pip install 'gpt2-anywhere[{extra}]'"
            ) from e
        raise
