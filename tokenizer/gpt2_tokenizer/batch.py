"""`BatchEncoding`, padding, truncation and tensor conversion for `GPT2Tokenizer.__call__`.

Frameworks are imported inside `to_tensors`, only when asked for, so importing
`gpt2_tokenizer` never loads torch, tensorflow or jax.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

__all__ = ["BatchEncoding", "Row", "pad_rows", "resolve_limit", "to_tensors"]

Row = dict[str, list[Any]]  # one example: input_ids, attention_mask, maybe offset_mapping

TRUNCATE = (True, "longest_first", "only_first")
NO_TRUNCATE = (False, "do_not_truncate")
_FRAMEWORK_EXTRA = {"pt": ("torch", "torch"), "tf": ("tensorflow", "keras"),
                    "jax": ("jax", "flax")}


class BatchEncoding(dict):  # type: ignore[type-arg]
    """The output of `GPT2Tokenizer.__call__`: a dict with attribute access.

    Keys: `input_ids`, `attention_mask` (unless `return_attention_mask=False`) and
    `offset_mapping` (when `return_offsets_mapping=True`).

    >>> enc = BatchEncoding({"input_ids": [15496, 995]})
    >>> enc.input_ids == enc["input_ids"]
    True
    """

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(
                f"This BatchEncoding has no `{name}`; it holds {sorted(self)}."
            ) from None


def resolve_limit(
    truncation: bool | str | None,
    max_length: int | None,
    model_max_length: int,
    padding: bool | str,
) -> int | None:
    """The length rows are cut to, or None for no cut (see `GPT2Tokenizer.__call__`)."""
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int)
                                   or max_length < 0):
        raise ValueError(
            f"`max_length` must be a non-negative int or None. Received: max_length={max_length!r}."
        )
    if truncation in TRUNCATE:
        return max_length if max_length is not None else model_max_length
    if truncation is None:
        # HF: an explicit max_length truncates by default, unless it is there for padding.
        return max_length if padding in (False, "do_not_pad") else None
    if truncation in NO_TRUNCATE:
        return None
    raise ValueError(
        "`truncation` must be True, False, None, 'longest_first', 'only_first' or "
        f"'do_not_truncate'. Received: truncation={truncation!r}."
    )


def pad_rows(
    rows: list[Row],
    padding: bool | str,
    max_length: int | None,
    model_max_length: int,
    pad_token_id: int | None,
    padding_side: Literal["right", "left"],
) -> None:
    """Pads rows in place to the longest row or to `max_length`."""
    if padding in (False, "do_not_pad"):
        return
    if padding in (True, "longest"):
        target = max((len(r["input_ids"]) for r in rows), default=0)
    elif padding == "max_length":
        target = max_length if max_length is not None else model_max_length
    else:
        raise ValueError(
            "`padding` must be True, False, 'longest', 'max_length' or 'do_not_pad'. "
            f"Received: padding={padding!r}."
        )
    if pad_token_id is None:
        raise ValueError(
            "Asking to pad, but this tokenizer has no `pad_token` (GPT-2 has none). Set one "
            "first, e.g. `tok.pad_token = tok.eos_token`, or "
            "`tok.add_special_tokens({'pad_token': '[PAD]'})`. Received: pad_token=None."
        )
    fill = {"input_ids": pad_token_id, "attention_mask": 0, "offset_mapping": (0, 0)}
    for row in rows:
        missing = target - len(row["input_ids"])
        if missing <= 0:
            continue
        for key, values in row.items():
            pad = [fill[key]] * missing
            row[key] = pad + values if padding_side == "left" else values + pad


def to_tensors(key: str, rows: list[list[Any]], return_tensors: str) -> Any:
    """Stacks equal-length rows into an array of the requested framework (imported lazily)."""
    lengths = sorted({len(r) for r in rows})
    if len(lengths) > 1:
        raise ValueError(
            f"return_tensors={return_tensors!r} needs rows of one length, but `{key}` rows have "
            f"lengths {lengths[:2]}...; pass padding=True (and set `tok.pad_token`) or "
            "return_tensors=None."
        )
    array = np.asarray(rows, dtype=np.int64)
    if key == "offset_mapping":
        array = array.reshape(len(rows), -1, 2)
    if return_tensors == "np":
        return array
    if return_tensors not in _FRAMEWORK_EXTRA:
        raise ValueError(
            "`return_tensors` must be None, 'np', 'pt', 'tf' or 'jax'. "
            f"Received: return_tensors={return_tensors!r}."
        )
    module, extra = _FRAMEWORK_EXTRA[return_tensors]
    try:
        if return_tensors == "pt":
            import torch

            return torch.from_numpy(array)  # int64, as transformers returns.
        if return_tensors == "tf":
            import tensorflow as tf

            return tf.constant(array.astype(np.int32))  # int32, as transformers returns.
        import jax.numpy as jnp

        return jnp.asarray(array.astype(np.int32))  # int32: jax's default without x64.
    except ImportError as e:
        raise ImportError(
            f"return_tensors={return_tensors!r} needs `{module}`, which is not installed. "
            f"Install it (e.g. `pip install gpt2-anywhere[{extra}]`) or pass return_tensors='np'."
        ) from e
