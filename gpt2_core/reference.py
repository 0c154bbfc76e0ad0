"""The NumPy reference forward pass: GPT-2's math as short pure functions.

Float64 by default, so it is the oracle every backend is compared against. Dimension names:
B batch, T new tokens, S = past + T keys, C n_embd, nh heads, hs head_dim, V vocab, L layers.

Conventions every backend follows:
- `attention_mask` (B, S) covers past and new tokens; 1 = attend, 0 = padding.
- `position_ids` default: with a mask, `cumsum(mask) - 1` (pads get 1, as in Hugging Face's
  `generate`), so a left-padded row gets the same logits as the unpadded row; without a mask,
  `past_len + arange(T)`.
- masked scores are set (not added) to `mask_value(dtype)`; rows of an all-padding query are
  uniform, finite, and meaningless.
- `hidden_states` has L + 1 entries: the embeddings, each block's output, and the last block's
  output after `ln_f` in place of the raw one (as Hugging Face).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from gpt2_core.activations import ACTIVATIONS
from gpt2_core.checks import check_label_range, check_past_shapes
from gpt2_core.config import GPT2Config
from gpt2_core.constants import IGNORE_INDEX, mask_value

KV = tuple[np.ndarray, np.ndarray]


@dataclasses.dataclass
class ForwardOutput:
    logits: np.ndarray                      # (B, T, V)
    past_key_values: tuple[KV, ...]         # L x ((B, nh, S, hs), (B, nh, S, hs))
    hidden_states: tuple[np.ndarray, ...]   # L + 1 x (B, T, C)
    attentions: tuple[np.ndarray, ...]      # L x (B, nh, T, S)
    loss: float | None = None


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)  # biased variance, as torch.nn.LayerNorm
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def split_heads(x: np.ndarray, n_head: int) -> np.ndarray:
    B, T, C = x.shape
    return x.reshape(B, T, n_head, C // n_head).transpose(0, 2, 1, 3)  # (B, nh, T, hs)


def merge_heads(x: np.ndarray) -> np.ndarray:
    B, nh, T, hs = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, T, nh * hs)


def attention_allowed(past_len: int, T: int, attention_mask: np.ndarray | None,
                      B: int) -> np.ndarray:
    """(B, 1, T, S) boolean: query t (absolute position past_len + t) may see key s."""
    S = past_len + T
    causal = np.arange(S)[None, :] <= (past_len + np.arange(T))[:, None]  # (T, S)
    allowed = np.broadcast_to(causal, (B, 1, T, S))
    if attention_mask is not None:
        allowed = allowed & (attention_mask[:, None, None, :] != 0)
    return allowed


def attention(config: GPT2Config, p: Mapping[str, np.ndarray], prefix: str, layer_idx: int,
              x: np.ndarray, allowed: np.ndarray, past: KV | None,
              head_mask: np.ndarray | None) -> tuple[np.ndarray, KV, np.ndarray]:
    qkv = x @ p[prefix + "c_attn.weight"] + p[prefix + "c_attn.bias"]  # (B, T, 3C)
    q, k, v = (split_heads(t, config.n_head) for t in np.split(qkv, 3, axis=-1))
    if past is not None:
        k = np.concatenate([past[0], k], axis=2)  # (B, nh, S, hs)
        v = np.concatenate([past[1], v], axis=2)
    scores = (q @ k.transpose(0, 1, 3, 2)) * config.attn_scale(layer_idx)  # (B, nh, T, S)
    scores = np.where(allowed, scores, mask_value(x.dtype))
    probs = softmax(scores)
    if head_mask is not None:
        probs = probs * head_mask[:, None, None]
    y = merge_heads(probs @ v)  # (B, T, C)
    y = y @ p[prefix + "c_proj.weight"] + p[prefix + "c_proj.bias"]
    return y, (k, v), probs


def mlp(config: GPT2Config, p: Mapping[str, np.ndarray], prefix: str, x: np.ndarray) -> np.ndarray:
    h = ACTIVATIONS[config.activation_function](x @ p[prefix + "c_fc.weight"] + p[prefix + "c_fc.bias"])
    return h @ p[prefix + "c_proj.weight"] + p[prefix + "c_proj.bias"]


def block(config: GPT2Config, p: Mapping[str, np.ndarray], i: int, x: np.ndarray,
          allowed: np.ndarray, past: KV | None,
          head_mask: np.ndarray | None) -> tuple[np.ndarray, KV, np.ndarray]:
    pre = f"h.{i}."
    eps = config.layer_norm_epsilon
    a, present, probs = attention(
        config, p, pre + "attn.", i,
        layer_norm(x, p[pre + "ln_1.weight"], p[pre + "ln_1.bias"], eps),
        allowed, past, head_mask,
    )
    x = x + a
    x = x + mlp(config, p, pre + "mlp.", layer_norm(x, p[pre + "ln_2.weight"], p[pre + "ln_2.bias"], eps))
    return x, present, probs


def default_position_ids(attention_mask: np.ndarray | None, past_len: int, B: int,
                         T: int) -> np.ndarray:
    """(B, T) positions: from the mask when given (pads at 1), else `past_len + arange(T)`."""
    if attention_mask is None:
        return np.broadcast_to(np.arange(past_len, past_len + T), (B, T))
    positions = np.cumsum(attention_mask, axis=-1) - 1
    positions = np.where(attention_mask == 0, 1, positions)
    return positions[:, past_len:]


def causal_lm_loss(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean cross-entropy of logits[:, t] against labels[:, t + 1], skipping `-100` labels.
    All labels ignored gives NaN (0 / 0), as in Hugging Face."""
    shift_logits = logits[:, :-1].reshape(-1, logits.shape[-1]).astype(np.float64)
    shift_labels = labels[:, 1:].reshape(-1)
    keep = shift_labels != IGNORE_INDEX
    logz = np.log(np.exp(shift_logits - shift_logits.max(-1, keepdims=True)).sum(-1)) + shift_logits.max(-1)
    picked = shift_logits[np.arange(len(shift_labels)), np.where(keep, shift_labels, 0)]
    nll = (logz - picked)[keep]
    return float(nll.sum() / keep.sum()) if keep.any() else float("nan")


def check_inputs(config: GPT2Config, input_ids: np.ndarray, attention_mask: np.ndarray | None,
                 position_ids: np.ndarray | None, token_type_ids: np.ndarray | None,
                 past_len: int, labels: np.ndarray | None) -> None:
    """Raise `ValueError`/`TypeError` naming the argument for every input GPT-2 cannot take."""
    if input_ids.ndim != 2:
        raise ValueError(f"`input_ids` must have shape (batch, seq). Received shape "
                         f"{input_ids.shape}.")
    if not np.issubdtype(input_ids.dtype, np.integer):
        raise TypeError(f"`input_ids` must hold integers. Received dtype {input_ids.dtype}.")
    B, T = input_ids.shape
    if input_ids.size and (input_ids.min() < 0 or input_ids.max() >= config.vocab_size):
        bad = input_ids[(input_ids < 0) | (input_ids >= config.vocab_size)]
        raise ValueError(f"`input_ids` must lie in [0, vocab_size={config.vocab_size}). "
                         f"Received out-of-range ids {sorted(set(bad.tolist()))[:5]}.")
    if past_len + T > config.n_positions:
        raise ValueError(
            f"The sequence is longer than the model's `n_positions`={config.n_positions}: "
            f"past length {past_len} + input length {T} = {past_len + T}. Truncate the input "
            "or drop the oldest cache entries."
        )
    if attention_mask is not None and attention_mask.shape != (B, past_len + T):
        raise ValueError(
            f"`attention_mask` must have shape (batch, past + seq) = ({B}, {past_len + T}). "
            f"Received shape {attention_mask.shape}."
        )
    for name, arr in (("position_ids", position_ids), ("token_type_ids", token_type_ids),
                      ("labels", labels)):
        if arr is not None and arr.shape != (B, T):
            raise ValueError(f"`{name}` must have the shape of `input_ids` ({B}, {T}). "
                             f"Received shape {arr.shape}.")
    if position_ids is not None and position_ids.size and (
            position_ids.min() < 0 or position_ids.max() >= config.n_positions):
        raise ValueError(f"`position_ids` must lie in [0, n_positions={config.n_positions}). "
                         f"Received range [{position_ids.min()}, {position_ids.max()}].")
    if token_type_ids is not None and token_type_ids.size and (
            token_type_ids.min() < 0 or token_type_ids.max() >= config.vocab_size):
        raise ValueError(f"`token_type_ids` must lie in [0, vocab_size={config.vocab_size}).")


def forward(config: GPT2Config, params: Mapping[str, np.ndarray], input_ids,
            attention_mask=None, position_ids=None, token_type_ids=None,
            past_key_values: Sequence[KV] | None = None, labels=None, head_mask=None,
            dtype: type = np.float64) -> ForwardOutput:
    """GPT-2 forward pass with the LM head.

    Shapes: input_ids (B, T) -> logits (B, T, V); past_key_values L x 2 x (B, nh, S_past, hs).

    Args:
        head_mask: (L, nh) multipliers of each head's attention probabilities, or None.
        dtype: float64 (default, the oracle) or float32.
    """
    input_ids = np.asarray(input_ids)
    p = {k: np.asarray(v, dtype=dtype) for k, v in params.items()}
    rows = input_ids.shape[0] if input_ids.ndim == 2 else None  # check_inputs names a bad ndim
    past_len = 0 if not past_key_values else check_past_shapes(config, past_key_values, rows)
    arrs = [None if a is None else np.asarray(a) for a in (attention_mask, position_ids,
                                                            token_type_ids, labels)]
    attention_mask, position_ids, token_type_ids, labels = arrs
    check_inputs(config, input_ids, attention_mask, position_ids, token_type_ids, past_len, labels)
    check_label_range(labels, config.vocab_size)
    B, T = input_ids.shape
    if position_ids is None:
        position_ids = default_position_ids(attention_mask, past_len, B, T)
    x = p["wte.weight"][input_ids] + p["wpe.weight"][position_ids]
    if token_type_ids is not None:
        x = x + p["wte.weight"][token_type_ids]  # GPT-2 embeds token types with `wte`
    allowed = attention_allowed(past_len, T, attention_mask, B)
    hidden, presents, attentions = [x], [], []
    for i in range(config.n_layer):
        past = None if not past_key_values else tuple(np.asarray(t, dtype) for t in past_key_values[i])
        hm = None if head_mask is None else np.asarray(head_mask, dtype)[i]
        x, present, probs = block(config, p, i, x, allowed, past, hm)
        presents.append(present)
        attentions.append(probs)
        hidden.append(x)
    x = layer_norm(x, p["ln_f.weight"], p["ln_f.bias"], config.layer_norm_epsilon)
    hidden[-1] = x
    head = p["wte.weight"] if config.tie_word_embeddings else p["lm_head.weight"]
    logits = x @ head.T
    loss = None if labels is None else causal_lm_loss(logits, labels)
    return ForwardOutput(logits, tuple(presents), tuple(hidden), tuple(attentions), loss)
