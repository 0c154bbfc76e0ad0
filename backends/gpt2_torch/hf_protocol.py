"""The methods transformers' and peft's tools call on a model (Trainer, pipelines, peft's
`PeftModelForCausalLM`, `resize_token_embeddings` after adding tokens), matched by name and
signature: `gpt2_torch` never imports transformers or peft.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from gpt2_core import GPT2Config


def as_config(config: Any) -> GPT2Config:
    """A `GPT2Config`, or anything with `to_dict()` (a `transformers.GPT2Config`) converted
    through `GPT2Config.from_dict` (unknown keys are kept in `extra`)."""
    if isinstance(config, GPT2Config):
        return config
    to_dict = getattr(config, "to_dict", None)
    if not callable(to_dict):
        raise TypeError(
            "`config` must be a gpt2_core.GPT2Config or an object with `to_dict()` (such as a "
            f"transformers.GPT2Config). Received: {type(config).__name__}. Build one with "
            "gpt2_core.GPT2Config(...) or GPT2Config.from_preset('gpt2').")
    return GPT2Config.from_dict(to_dict())


class HFModelProtocol:
    """Helpers with transformers' `PreTrainedModel` names and semantics."""

    config: GPT2Config
    supports_gradient_checkpointing = True
    main_input_name = "input_ids"

    @classmethod
    def from_config(cls, config: Any, **kwargs: Any):
        """A randomly initialised model (GPT-2's init) for `config`, as `AutoModel.from_config`."""
        return cls(as_config(config), **kwargs)

    @classmethod
    def can_generate(cls) -> bool:
        return hasattr(cls, "generate")

    @property
    def _base(self):
        return getattr(self, "transformer", self)

    def get_input_embeddings(self) -> nn.Embedding:
        return self._base.wte

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        """Replace `wte` (a tied LM head follows, since it reads `wte.weight`)."""
        if not isinstance(value, nn.Embedding) or value.embedding_dim != self.config.n_embd:
            raise ValueError(
                f"`value` must be an nn.Embedding of width n_embd={self.config.n_embd}. "
                f"Received: {value!r}.")
        self._base.wte = value
        self._set_vocab_size(value.num_embeddings)

    def get_output_embeddings(self) -> nn.Module | None:
        """The module holding the LM head's (V, C) matrix: `lm_head`, or `wte` itself when the
        head is tied (GPT-2's default); None for models without an LM head."""
        if not hasattr(self, "lm_weight"):
            return None
        return self._base.wte if self.config.tie_word_embeddings else self.lm_head

    def tie_weights(self) -> None:
        """A no-op: a tied head has no matrix of its own; it reads `wte.weight` at each call."""

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        """Parameters counted once each (a tied head is `wte`); `exclude_embeddings` leaves out
        the `wte` and `wpe` tables, as transformers does."""
        skip = set()
        if exclude_embeddings:
            skip = {id(m.weight) for m in self.modules() if isinstance(m, nn.Embedding)}
        return sum(p.numel() for p in self.parameters()
                   if id(p) not in skip and (p.requires_grad or not only_trainable))

    def resize_token_embeddings(self, new_num_tokens: int | None = None,
                                pad_to_multiple_of: int | None = None,
                                mean_resizing: bool = True) -> nn.Embedding:
        """Grow or shrink `wte` (and an untied `lm_head`) to `new_num_tokens` rows, rounded up
        to a multiple of `pad_to_multiple_of`; `config.vocab_size` follows.

        New rows are drawn as transformers draws them: with `mean_resizing`, from a normal with
        the old rows' mean and 1e-9 times their covariance (the mean itself when that covariance
        is not positive definite), so the next-token distribution barely moves; otherwise from
        N(0, initializer_range)."""
        wte = self._base.wte
        if new_num_tokens is None and pad_to_multiple_of is None:
            return wte
        n = wte.num_embeddings if new_num_tokens is None else new_num_tokens
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"`new_num_tokens` must be a positive integer. Received: "
                             f"new_num_tokens={new_num_tokens!r}.")
        if pad_to_multiple_of is not None:
            if isinstance(pad_to_multiple_of, bool) or not isinstance(pad_to_multiple_of, int) \
                    or pad_to_multiple_of < 1:
                raise ValueError("`pad_to_multiple_of` must be a positive integer. Received: "
                                 f"pad_to_multiple_of={pad_to_multiple_of!r}.")
            n = -(-n // pad_to_multiple_of) * pad_to_multiple_of
        new_wte = nn.Embedding(n, self.config.n_embd, _weight=self._resized(wte.weight, n, mean_resizing))
        new_wte.weight.requires_grad_(wte.weight.requires_grad)
        self._base.wte = new_wte
        if not self.config.tie_word_embeddings and hasattr(self, "lm_head"):
            old = self.lm_head
            self.lm_head = nn.Linear(self.config.n_embd, n, bias=False, device=old.weight.device,
                                     dtype=old.weight.dtype)
            with torch.no_grad():
                self.lm_head.weight.copy_(self._resized(old.weight, n, mean_resizing))
        self._set_vocab_size(n)
        return new_wte

    def _resized(self, old: torch.Tensor, n: int, mean_resizing: bool) -> torch.Tensor:
        """(V_old, C) -> (n, C): the first rows kept, new rows drawn (see resize_token_embeddings)."""
        with torch.no_grad():
            V = old.shape[0]
            out = torch.empty(n, old.shape[1], dtype=old.dtype, device=old.device)
            out[:min(V, n)] = old[:min(V, n)]
            if n > V:
                out[V:] = _new_rows(old, n - V, mean_resizing, self.config.initializer_range)
        return out

    def _set_vocab_size(self, n: int) -> None:
        if n == self.config.vocab_size:
            return
        config = self.config.replace(vocab_size=n)
        for m in self.modules():
            if isinstance(getattr(m, "config", None), GPT2Config):
                m.config = config

    # ---- activation checkpointing ---------------------------------------------------------
    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None,
                                      every_n_layers: int = 1, offload: bool = False) -> None:
        """Recompute block activations in the backward pass (training only), as transformers.

        Args:
            gradient_checkpointing_kwargs: passed to `torch.utils.checkpoint.checkpoint`
                (default `{"use_reentrant": False}`).
            every_n_layers: checkpoint blocks 0, n, 2n, ... only.
            offload: keep the saved block inputs in (pinned, on CUDA) host memory.
        """
        if isinstance(every_n_layers, bool) or not isinstance(every_n_layers, int) \
                or every_n_layers < 1:
            raise ValueError("`every_n_layers` must be a positive integer. Received: "
                             f"every_n_layers={every_n_layers!r}.")
        kwargs = {"use_reentrant": False, **(gradient_checkpointing_kwargs or {})}
        fn = functools.partial(checkpoint, **kwargs)
        if offload:
            fn = functools.partial(_offloaded, fn)
        base = self._base
        base.checkpoint_fn, base.checkpoint_every = fn, every_n_layers
        base.gradient_checkpointing = True
        # As transformers: with frozen embeddings (peft) and reentrant checkpointing, no block
        # input would require grad and the adapters would get none.
        self.enable_input_require_grads()

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs: dict | None = None,
                                        every_n_layers: int = 1, offload: bool = False) -> None:
        self.gradient_checkpointing_enable(activation_checkpointing_kwargs, every_n_layers, offload)

    def gradient_checkpointing_disable(self) -> None:
        self._base.gradient_checkpointing = False
        self.disable_input_require_grads()

    activation_checkpointing_disable = gradient_checkpointing_disable

    @property
    def is_gradient_checkpointing(self) -> bool:
        return self._base.gradient_checkpointing

    def enable_input_require_grads(self) -> None:
        """Make the embedding output require grad (peft with frozen embeddings and reentrant
        checkpointing needs it), as transformers does."""
        def hook(module, args, output):
            if torch.is_grad_enabled():  # (generate runs under inference_mode)
                output.requires_grad_(True)
        self.disable_input_require_grads()
        self._require_grads_hook = self.get_input_embeddings().register_forward_hook(hook)

    def disable_input_require_grads(self) -> None:
        handle = self.__dict__.pop("_require_grads_hook", None)
        if handle is not None:
            handle.remove()


def _offloaded(fn, *args, **kwargs):
    pin = torch.cuda.is_available()
    with torch.autograd.graph.save_on_cpu(pin_memory=pin):
        return fn(*args, **kwargs)


def _new_rows(old: torch.Tensor, k: int, mean_resizing: bool, std: float) -> torch.Tensor:
    if not mean_resizing:
        return torch.randn(k, old.shape[1], device=old.device).mul_(std).to(old.dtype)
    w = old.float()
    mean = w.mean(0)
    centered = w - mean
    cov = centered.T @ centered / w.shape[0]
    epsilon = 1e-9  # transformers' factor: new rows stay within a hair of the mean
    if bool(torch.distributions.constraints.positive_definite.check(epsilon * cov).all()):
        dist = torch.distributions.MultivariateNormal(mean, covariance_matrix=epsilon * cov)
        return dist.sample((k,)).to(old.dtype)
    return mean[None].expand(k, -1).to(old.dtype)
