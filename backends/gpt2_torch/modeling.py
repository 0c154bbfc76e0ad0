"""The GPT-2 transformer in PyTorch, nanoGPT-shaped: `Attention` (fused `c_attn`), `MLP`, `Block`
and `GPT2Model`. Attribute names equal the canonical checkpoint names (`h.0.attn.c_attn.weight`).
The projections are `nn.Linear`s (`gpt2_torch.linear.Linear`, `[out, in]`) whose state dict keeps
GPT-2's Conv1D layout `[in, out]`, so `state_dict()` keys and shapes ARE the canonical ones.

Dimension names: B batch, T new tokens, S = past + T keys, C n_embd, nh heads, hs head_dim,
V vocab, L layers.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from gpt2_core import GPT2Config
from gpt2_core.activations import (
    ACTIVATION_KIND,
    GELU_FAST_SQRT_2_OVER_PI,
    GELU_TANH_COEFF,
    QUICK_GELU_ALPHA,
    SQRT_2_OVER_PI,
)
from gpt2_torch import inputs
from gpt2_torch.linear import Linear
from gpt2_torch.loading import GPT2PreTrainedModel
from gpt2_torch.outputs import KV, BaseModelOutputWithPast

ATTN_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2")


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    # torch's tanh-GELU is one fused kernel built on the same constants as the spec
    # (sqrt(2/pi), 0.044715); tests check it against the explicit formula below.
    return F.gelu(x, approximate="tanh")


def gelu_tanh_explicit(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.tanh(SQRT_2_OVER_PI * (x + GELU_TANH_COEFF * x.pow(3))))


def _gelu_fast(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.tanh(x * GELU_FAST_SQRT_2_OVER_PI * (1.0 + GELU_TANH_COEFF * x * x)))


ACT_FNS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu_tanh": _gelu_tanh,
    "gelu_fast": _gelu_fast,
    "gelu_exact": lambda x: F.gelu(x, approximate="none"),
    "quick_gelu": lambda x: x * torch.sigmoid(QUICK_GELU_ALPHA * x),
    "relu": F.relu,
    "silu": F.silu,
    "tanh": torch.tanh,
}


class AttnMask(NamedTuple):
    """Which keys each query sees, built once per forward and shared by every layer.

    `allowed` (B, 1, T, S) bool, or None when only causality applies; `bias` is the same as an
    additive float mask (0 or the dtype's min) for SDPA; `causal` says whether a None mask still
    needs the causal triangle (T > 1 without past); `dead` (B, 1, T, 1) marks query rows that see
    no key at all (left-padding queries), or is None when there are none."""

    allowed: torch.Tensor | None
    bias: torch.Tensor | None
    causal: bool
    dead: torch.Tensor | None = None


def build_mask(attention_mask: torch.Tensor | None, past_len: int, T: int, B: int,
               bias_dtype: torch.dtype, device: torch.device) -> AttnMask:
    """Shapes: attention_mask (B, past + T) -> AttnMask of (B, 1, T, S).

    While `torch.compile`/`torch.export` trace, nothing here reads the mask's values: the
    additive bias is always built from it (dead rows handled as in eager), so one graph serves
    padded and unpadded batches, and `causal` stays a Python bool on symbolic shapes."""
    tracing = inputs.is_tracing()
    if attention_mask is not None and not tracing and bool(attention_mask.all()):
        attention_mask = None  # no padding: causality alone
    if attention_mask is None:
        if type(past_len) is int and past_len == 0:  # a symbolic past length builds the mask
            return AttnMask(None, None, T > 1 if type(T) is int else True)
        if type(T) is int and T == 1:
            return AttnMask(None, None, False)
    S = past_len + T
    q_pos = torch.arange(past_len, S, device=device)
    allowed = (torch.arange(S, device=device)[None, :] <= q_pos[:, None])[None, None]  # (1, 1, T, S)
    if attention_mask is not None:
        allowed = allowed & attention_mask.bool()[:, None, None, :]
    allowed = allowed.expand(B, 1, T, S)
    # Masked scores get the dtype's min (gpt2_core.constants.mask_value), never -inf: rows of
    # padding queries stay finite (uniform) instead of NaN.
    bias = torch.zeros((), dtype=bias_dtype, device=device).masked_fill(
        ~allowed, torch.finfo(bias_dtype).min)
    dead = ~allowed.any(-1, keepdim=True)  # (B, 1, T, 1)
    if not tracing and not bool(dead.any()):
        return AttnMask(allowed, bias, False)
    # SDPA's CPU backward disagrees with its own forward on rows whose every key is masked. For
    # those rows the SDPA path zeroes the query and unmasks the bias: scores of exactly 0
    # everywhere, the same uniform softmax as the spec's all-`min` row, and the same gradients.
    return AttnMask(allowed, bias.masked_fill(dead, 0.0), False, dead)


def eager_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: AttnMask,
                    scale: float, dropout: nn.Dropout,
                    head_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Shapes: q (B, nh, T, hs), k/v (B, nh, S, hs) -> y (B, nh, T, hs), probs (B, nh, T, S)."""
    att = (q @ k.transpose(-2, -1)) * scale  # (B, nh, T, S)
    allowed = mask.allowed
    if allowed is None and mask.causal:
        T, S = att.shape[-2:]
        allowed = torch.ones(T, S, dtype=torch.bool, device=att.device).tril(S - T)
    if allowed is not None:
        att = att.masked_fill(~allowed, torch.finfo(att.dtype).min)  # set, not add (spec)
    probs = F.softmax(att, dim=-1).to(v.dtype)
    probs = dropout(probs)
    if head_mask is not None:
        probs = probs * head_mask.to(probs.dtype)
    return probs @ v, probs


class Attention(nn.Module):
    def __init__(self, config: GPT2Config, layer_idx: int, device=None, dtype=None) -> None:
        super().__init__()
        C = config.n_embd
        self.c_attn = Linear(C, 3 * C, device=device, dtype=dtype)
        self.c_proj = Linear(C, C, device=device, dtype=dtype)
        self.attn_dropout = nn.Dropout(config.attn_pdrop)
        self.resid_dropout = nn.Dropout(config.resid_pdrop)
        self.n_head = config.n_head
        self.scale = config.attn_scale(layer_idx)  # both scaling flags, on every path
        self.upcast = config.reorder_and_upcast_attn
        self.attn_implementation = "sdpa"

    def forward(self, x: torch.Tensor, mask: AttnMask, past: KV | None = None,
                static: tuple[torch.Tensor, torch.Tensor, int | torch.Tensor] | None = None,
                head_mask: torch.Tensor | None = None, need_weights: bool = False,
                ) -> tuple[torch.Tensor, KV, torch.Tensor | None]:
        """Shapes: x (B, T, C) -> y (B, T, C), present 2 x (B, nh, S, hs), probs (B, nh, T, S).

        `static` = (key buffer, value buffer, write position) of a preallocated cache: an int
        writes at that slot and attends over the filled prefix; a (T,) LongTensor writes with
        `index_copy_` and attends over the whole buffer (static shapes, for `torch.compile`;
        the mask must hide unfilled slots)."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        if static is not None:
            k, v = _write_static(static, k, v)
        elif past is not None:
            k = torch.cat([past[0].to(k.dtype), k], dim=2)  # (B, nh, S, hs)
            v = torch.cat([past[1].to(v.dtype), v], dim=2)
        present = (k, v)
        y, probs = self._attend(q, k, v, mask, head_mask, need_weights)
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.resid_dropout(self.c_proj(y)), present, probs

    def _attend(self, q, k, v, mask: AttnMask, head_mask, need_weights):
        out_dtype = v.dtype
        if self.upcast:  # reorder_and_upcast_attn: scores and softmax in float32 on every path
            q, k, v = q.float(), k.float(), v.float()
        # Attention weights and head masks exist only on the eager path: fall back to it for
        # this call rather than ignore the request.
        if self.attn_implementation == "eager" or need_weights or head_mask is not None:
            y, probs = eager_attention(q, k, v, mask, self.scale, self.attn_dropout, head_mask)
            return y.to(out_dtype), probs
        if self.attn_implementation == "flash_attention_2" and mask.bias is None and not self.upcast:
            return _flash_attention(q, k, v, mask.causal or q.shape[2] > 1, self.scale,
                                    self.attn_dropout.p if self.training else 0.0), None
        bias = mask.bias
        if mask.dead is not None:  # see build_mask: no gradient through a dead row's scores
            q = q.masked_fill(mask.dead, 0.0)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, is_causal=bias is None and mask.causal,
            dropout_p=self.attn_dropout.p if self.training else 0.0, scale=self.scale)
        return y.to(out_dtype), None


def _write_static(static, k: torch.Tensor, v: torch.Tensor) -> KV:
    """Write the new keys/values (B, nh, T, hs) into one layer's preallocated buffers
    (B, nh, S, hs) and return what attention reads: the filled prefix (int position) or the
    whole buffer (tensor position, static shapes)."""
    k_buf, v_buf, pos = static
    if isinstance(pos, int):
        end = pos + k.shape[2]
        k_buf[:, :, pos:end] = k
        v_buf[:, :, pos:end] = v
        return k_buf[:, :, :end], v_buf[:, :, :end]
    k_buf.index_copy_(2, pos, k)
    v_buf.index_copy_(2, pos, v)
    return k_buf, v_buf


def _flash_attention(q, k, v, causal: bool, scale: float, dropout_p: float) -> torch.Tensor:
    from flash_attn import flash_attn_func  # checked importable in `set_attn_implementation`

    y = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                        dropout_p=dropout_p, softmax_scale=scale, causal=causal)
    return y.transpose(1, 2)  # (B, nh, T, hs)


class MLP(nn.Module):
    def __init__(self, config: GPT2Config, device=None, dtype=None) -> None:
        super().__init__()
        self.c_fc = Linear(config.n_embd, config.inner_dim, device=device, dtype=dtype)
        self.c_proj = Linear(config.inner_dim, config.n_embd, device=device, dtype=dtype)
        self.act = ACT_FNS[ACTIVATION_KIND[config.activation_function]]
        self.dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPT2Config, layer_idx: int, device=None, dtype=None) -> None:
        super().__init__()
        C, eps = config.n_embd, config.layer_norm_epsilon  # eps from the config, never the default
        self.ln_1 = nn.LayerNorm(C, eps=eps, device=device, dtype=dtype)
        self.attn = Attention(config, layer_idx, device, dtype)
        self.ln_2 = nn.LayerNorm(C, eps=eps, device=device, dtype=dtype)
        self.mlp = MLP(config, device, dtype)

    def forward(self, x: torch.Tensor, mask: AttnMask, past: KV | None = None, static=None,
                head_mask: torch.Tensor | None = None, need_weights: bool = False,
                ) -> tuple[torch.Tensor, KV, torch.Tensor | None]:
        a, present, probs = self.attn(self.ln_1(x), mask, past, static, head_mask, need_weights)
        x = x + a
        x = x + self.mlp(self.ln_2(x))
        return x, present, probs


def _embedding(n: int, C: int, device, dtype) -> nn.Embedding:
    # An uninitialised table (`init_weights` or the checkpoint fills it): nn.Embedding's own
    # `normal_` init on the meta device imports torch's Python reference ops, 75 MB of RSS and a
    # second of `from_pretrained`.
    return nn.Embedding(n, C, _weight=torch.empty(n, C, device=device, dtype=dtype))


class GPT2Model(GPT2PreTrainedModel):
    """The bare transformer: embeddings, `n_layer` blocks, final LayerNorm."""

    head = "base"

    def __init__(self, config: GPT2Config, *, attn_implementation: str = "sdpa",
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__(config)
        config = self.config  # (converted from a transformers config)
        self.wte = _embedding(config.vocab_size, config.n_embd, device, dtype)
        self.wpe = _embedding(config.n_positions, config.n_embd, device, dtype)
        self.drop = nn.Dropout(config.embd_pdrop)
        self.h = nn.ModuleList(Block(config, i, device, dtype) for i in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon, device=device,
                                 dtype=dtype)
        # `gradient_checkpointing_enable` (hf_protocol) sets these three
        self.gradient_checkpointing = False
        self.checkpoint_fn = functools.partial(checkpoint, use_reentrant=False)
        self.checkpoint_every = 1
        self.set_attn_implementation(attn_implementation)
        if self.wte.weight.device.type != "meta":
            self.init_weights()

    def forward(self, input_ids=None, past_key_values: Sequence[KV] | None = None,
                attention_mask=None, token_type_ids=None, position_ids=None, head_mask=None,
                inputs_embeds: torch.Tensor | None = None, use_cache: bool | None = None,
                output_attentions: bool | None = None, output_hidden_states: bool | None = None,
                return_dict: bool | None = None) -> BaseModelOutputWithPast | tuple:
        """Shapes: input_ids (B, T) -> last_hidden_state (B, T, C).

        Args:
            past_key_values: per layer `(key, value)`, each (B, nh, S_past, hs).
            attention_mask: (B, S_past + T), 1 = attend, 0 = padding (left or right).
            position_ids: (B, T); derived from `attention_mask` when absent, so a left-padded
                row gives the logits of the unpadded row.
            head_mask: (L, nh) or (nh,) multipliers of attention probabilities (eager path).
            output_attentions: per-layer probabilities (this call runs the eager path).
            use_cache, output_attentions, output_hidden_states, return_dict: None takes the
                config's value (`config.use_cache = False` as transformers' Trainer sets it).
        """
        args = inputs.prepare(self.config, self.device, input_ids, inputs_embeds, past_key_values,
                              attention_mask, token_type_ids, position_ids, head_mask)
        cfg = self.config
        out = self.run(
            args, use_cache=cfg.use_cache if use_cache is None else use_cache,
            output_attentions=cfg.output_attentions if output_attentions is None else output_attentions,
            output_hidden_states=(cfg.output_hidden_states if output_hidden_states is None
                                  else output_hidden_states))
        return out if self._return_dict(return_dict) else out.to_tuple()

    def embed(self, args: inputs.Inputs) -> torch.Tensor:
        x = args.inputs_embeds if args.inputs_embeds is not None else self.wte(args.input_ids)
        x = x + self.wpe(args.position_ids)
        if args.token_type_ids is not None:
            x = x + self.wte(args.token_type_ids)  # GPT-2 embeds token types with `wte`
        return self.drop(x)

    def run(self, args: inputs.Inputs, *, use_cache: bool = True, output_attentions: bool = False,
            output_hidden_states: bool = False,
            static_cache: tuple[Sequence[torch.Tensor], Sequence[torch.Tensor]] | None = None,
            static_pos: int | torch.Tensor | None = None,
            mask: AttnMask | None = None) -> BaseModelOutputWithPast:
        """The forward pass on validated inputs (no checks: `generate` and compiled steps call
        this directly).

        `static_cache` = (keys, values) buffers of a `KVCache` (L x (B, nh, S, hs) each), written
        in place at `static_pos` (see `Attention.forward`); the caller advances its record."""
        x = self.embed(args)
        B, T = x.shape[:2]
        if mask is None:
            mask = build_mask(args.attention_mask, args.past_len, T, B, self.bias_dtype, x.device)
        hidden, presents, attentions = [x], [], []
        for i, block in enumerate(self.h):
            past = args.past_key_values[i] if args.past_key_values else None
            static = None if static_cache is None else (
                static_cache[0][i], static_cache[1][i], static_pos)
            hm = None if args.head_mask is None else args.head_mask[i]
            if self.gradient_checkpointing and self.training and i % self.checkpoint_every == 0:
                x, present, probs = self.checkpoint_fn(block, x, mask, past, static, hm,
                                                       output_attentions)
            else:
                x, present, probs = block(x, mask, past, static, hm, output_attentions)
            presents.append(present)
            attentions.append(probs)
            hidden.append(x)
        x = self.ln_f(x)
        hidden[-1] = x
        return BaseModelOutputWithPast(
            last_hidden_state=x,
            past_key_values=tuple(presents) if use_cache and static_cache is None else None,
            hidden_states=tuple(hidden) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
        )

    @property
    def bias_dtype(self) -> torch.dtype:
        # upcast layers compute scores in float32, so their additive mask must be float32 too
        return torch.float32 if self.config.reorder_and_upcast_attn else self.wte.weight.dtype

    def set_attn_implementation(self, name: str) -> None:
        """Switch every layer to `"eager"`, `"sdpa"` or `"flash_attention_2"`.

        FlashAttention-2 needs the `flash_attn` package and a CUDA device; calls it cannot serve
        (padding masks, `reorder_and_upcast_attn`) use SDPA; attention weights and head masks
        always use eager.
        """
        if name not in ATTN_IMPLEMENTATIONS:
            raise ValueError(f"`attn_implementation` must be one of {ATTN_IMPLEMENTATIONS}. "
                             f"Received: attn_implementation={name!r}.")
        if name == "flash_attention_2":
            _check_flash_attention()
        for block in self.h:
            block.attn.attn_implementation = name
        self.attn_implementation = name


def _check_flash_attention() -> None:
    try:
        import flash_attn  # noqa: F401
    except ImportError as e:
        raise ImportError(
            "attn_implementation='flash_attention_2' needs the `flash_attn` package, which is not "
            "installed. Install it on a CUDA machine (`pip install flash-attn`), or use "
            "attn_implementation='sdpa'."
        ) from e
    if not torch.cuda.is_available():
        raise ValueError("attn_implementation='flash_attention_2' needs a CUDA device; none is "
                         "available. Use attn_implementation='sdpa'.")
