"""transformers' tokenizer API on `GPT2Tokenizer` (`HFTokenizerMixin`), and the pair and
padding helpers of its `__call__`.

`HFTokenizerMixin` gives the methods transformers' own tools call on a tokenizer
(`DataCollatorForLanguageModeling`, `DataCollatorWithPadding`, pipelines): `pad`, `tokenize`,
`convert_tokens_to_ids`, `convert_ids_to_tokens`, `convert_tokens_to_string`, `get_vocab`,
`add_tokens` and the `*_token_id` properties, with the results of `GPT2TokenizerFast` built
from the same files. No framework is imported here: `pad(return_tensors="pt")` imports torch
when it is called, as transformers does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from gpt2_tokenizer import batch as _batch
from gpt2_tokenizer.bpe import bytes_to_unicode

if TYPE_CHECKING:
    from gpt2_tokenizer.tokenizer import GPT2Tokenizer

__all__ = ["HFTokenizerMixin", "check_pairs", "join_pair", "pad_rows", "round_padding"]

_BYTE_OF_CHAR = {c: b for b, c in bytes_to_unicode().items()}
# The keys `pad` pads, with their fill values, as transformers pads them; others pass through.
_PAD_FILL = {"attention_mask": 0, "token_type_ids": 0, "special_tokens_mask": 1}
_TENSOR_KINDS = ("pt", "np", "tf", "jax")


def _token_content(token: Any, name: str) -> tuple[str, bool | None]:
    """(content, special flag or None) of a str or a `tokenizers.AddedToken`-like object."""
    if isinstance(token, str):
        return token, None
    content = getattr(token, "content", None)
    if not isinstance(content, str):
        raise TypeError(
            f"`{name}` must be a str or a `tokenizers.AddedToken`. Received: {token!r:.60} of "
            f"type {type(token).__name__}."
        )
    options = [o for o in ("lstrip", "rstrip", "single_word") if getattr(token, o, False)]
    if options:
        raise ValueError(
            f"`{name}` asks for {options}, which this tokenizer does not implement: added tokens "
            f"match their exact text. Received: {token!r:.80}. Pass the plain string instead."
        )
    special = getattr(token, "special", None)
    return content, None if special is None else bool(special)


class HFTokenizerMixin:
    """transformers' `PreTrainedTokenizerBase` methods that its tools call (see module doc)."""

    model_input_names = ["input_ids", "attention_mask"]
    pad_token_type_id = 0
    is_fast = True  # Offsets come from the tokenizer itself, as with a `tokenizers` backend.
    truncation_side = "right"

    # ----------------------------------------------------------------- special tokens
    sep_token = property(lambda self: self._roles["sep_token"], doc="None for GPT-2.")
    cls_token = property(lambda self: self._roles["cls_token"], doc="None for GPT-2.")
    mask_token = property(lambda self: self._roles["mask_token"], doc="None for GPT-2.")
    sep_token_id = property(lambda self: self._role_id("sep_token"), doc="None for GPT-2.")
    cls_token_id = property(lambda self: self._role_id("cls_token"), doc="None for GPT-2.")
    mask_token_id = property(lambda self: self._role_id("mask_token"), doc="None for GPT-2.")
    unk_token_id = property(lambda self: self._role_id("unk_token"), doc="50256 for GPT-2.")

    @property
    def additional_special_tokens(self: GPT2Tokenizer) -> list[str]:
        """Special tokens added without a role."""
        return list(self._additional)

    @property
    def all_special_tokens(self: GPT2Tokenizer) -> list[str]:
        """The role tokens and the additional special tokens, each once (['<|endoftext|>'])."""
        tokens = [t for t in self._roles.values() if t is not None] + self._additional
        return list(dict.fromkeys(tokens))

    @property
    def all_special_ids(self: GPT2Tokenizer) -> list[int]:
        """Ids of `all_special_tokens` ([50256] for GPT-2)."""
        return [self.token_to_id(t) for t in self.all_special_tokens]

    @property
    def added_tokens_encoder(self: GPT2Tokenizer) -> dict[str, int]:
        """Every added token (special or not) -> id, in id order, as in transformers."""
        return dict(sorted(self._special.items(), key=lambda item: item[1]))

    @property
    def added_tokens_decoder(self: GPT2Tokenizer) -> dict[int, str]:
        """Id -> added token content (transformers gives `AddedToken` objects here)."""
        return {i: t for t, i in self.added_tokens_encoder.items()}

    def get_special_tokens_mask(
        self: GPT2Tokenizer,
        token_ids_0: Sequence[int],
        token_ids_1: Sequence[int] | None = None,
        already_has_special_tokens: bool = False,
    ) -> list[int]:
        """1 where a special token is (or would be added), 0 elsewhere, as in transformers."""
        if already_has_special_tokens:
            special = set(self.all_special_ids)
            return [int(i in special) for i in [*token_ids_0, *(token_ids_1 or [])]]
        bos = [1] * (self.add_bos_token and self.bos_token_id is not None)
        mask = bos + [0] * len(token_ids_0)
        return mask if token_ids_1 is None else mask + bos + [0] * len(token_ids_1)

    def _special_ids(self: GPT2Tokenizer) -> set[int]:
        return {i for t, i in self._special.items() if t not in self._plain}

    # ----------------------------------------------------------------- vocabulary
    def get_vocab(self: GPT2Tokenizer) -> dict[str, int]:
        """Token string -> id for the whole vocabulary, added tokens included.

        >>> from gpt2_tokenizer import GPT2Tokenizer
        >>> vocab = GPT2Tokenizer.from_pretrained().get_vocab()
        >>> len(vocab), vocab["ĠHello"]
        (50257, 18435)
        """
        vocab = dict(self.bpe.encoder)
        vocab.update(self._special)
        return vocab

    def _id_to_token(self: GPT2Tokenizer) -> list[str | None]:
        """Id -> token string, rebuilt when tokens are added."""
        key = (len(self._id_to_bytes), len(self._special))
        cached = self.__dict__.get("_id_to_token_cache")
        if cached is not None and cached[0] == key:
            return cached[1]
        table: list[str | None] = [None] * len(self._id_to_bytes)
        for token, i in self.get_vocab().items():
            table[i] = token
        self.__dict__["_id_to_token_cache"] = (key, table)
        return table

    def convert_tokens_to_ids(self: GPT2Tokenizer, tokens: str | Iterable[str]) -> Any:
        """Token string(s) -> id(s); unknown strings give `unk_token_id`, as in transformers.

        >>> from gpt2_tokenizer import GPT2Tokenizer
        >>> GPT2Tokenizer.from_pretrained().convert_tokens_to_ids(["ĠHello", "Ġworld"])
        [18435, 995]
        """
        if isinstance(tokens, str):
            return self._token_id_or_unk(tokens)
        if not isinstance(tokens, Iterable):
            raise TypeError(
                "`tokens` must be a token string or a list of them. Received: "
                f"{tokens!r:.60} of type {type(tokens).__name__}."
            )
        return [self._token_id_or_unk(t) for t in tokens]

    def _token_id_or_unk(self: GPT2Tokenizer, token: str) -> int | None:
        if not isinstance(token, str):
            raise TypeError(f"`tokens` must hold str. Received: {token!r:.60}.")
        found = self._special.get(token, self.bpe.encoder.get(token))
        return self.unk_token_id if found is None else found

    def convert_ids_to_tokens(
        self: GPT2Tokenizer, ids: int | Iterable[int], skip_special_tokens: bool = False
    ) -> Any:
        """Id(s) -> token string(s) (byte-level spelling: 'ĠHello'); None for an unused id.

        >>> from gpt2_tokenizer import GPT2Tokenizer
        >>> GPT2Tokenizer.from_pretrained().convert_ids_to_tokens([15496, 995, 50256])
        ['Hello', 'Ġworld', '<|endoftext|>']
        """
        table = self._id_to_token()
        if isinstance(ids, (int, np.integer)) and not isinstance(ids, bool):
            return table[ids] if 0 <= ids < len(table) else None
        ids = self._check_ids_shape(ids)
        skip = self._special_ids() if skip_special_tokens else set()
        return [table[i] if 0 <= i < len(table) else None for i in ids if i not in skip]

    def _check_ids_shape(self, ids: Any) -> list[int]:
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
            raise TypeError(
                f"`ids` must be an int or a sequence of ints. Received: {ids!r:.60} of type "
                f"{type(ids).__name__}."
            )
        ids = list(ids)
        for i in ids:
            if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
                raise TypeError(f"`ids` must hold ints. Received: {i!r:.60}.")
        return [int(i) for i in ids]

    def convert_tokens_to_string(self, tokens: Iterable[str]) -> str:
        """Joins token strings back into text (invalid UTF-8 becomes U+FFFD).

        Each character maps back to its byte; a character outside the byte alphabet (in an
        added token) stands for its own UTF-8 bytes, as in `tokenizers`' ByteLevel decoder.

        >>> from gpt2_tokenizer import GPT2Tokenizer
        >>> GPT2Tokenizer.from_pretrained().convert_tokens_to_string(["Hello", "Ġworld"])
        'Hello world'
        """
        if isinstance(tokens, str):
            raise TypeError(
                f"`tokens` must be a list of token strings, not one str. Received: {tokens!r:.60}."
                " Wrap it in a list."
            )
        out = bytearray()
        for token in tokens:
            for char in token:
                byte = _BYTE_OF_CHAR.get(char)
                out += char.encode("utf-8") if byte is None else bytes((byte,))
        return out.decode("utf-8", errors="replace")

    def tokenize(
        self: GPT2Tokenizer,
        text: str,
        pair: str | None = None,
        add_special_tokens: bool = False,
        *,
        is_split_into_words: bool = False,
        add_prefix_space: bool | None = None,
        split_special_tokens: bool = False,
    ) -> list[str]:
        """Token strings of a text (and a pair), as transformers' `tokenize`; no length limit.

        >>> from gpt2_tokenizer import GPT2Tokenizer
        >>> GPT2Tokenizer.from_pretrained().tokenize("Hello world<|endoftext|>")
        ['Hello', 'Ġworld', '<|endoftext|>']
        """
        prefix = self.add_prefix_space if add_prefix_space is None else bool(add_prefix_space)
        parts = []
        for name, value in [("text", text)] + [("pair", pair)] * (pair is not None):
            batched, examples = self._call_examples(value, is_split_into_words, prefix)
            if batched:
                raise TypeError(
                    f"`{name}` must be one text (a str, or a list of words with "
                    f"is_split_into_words=True), not a batch. Received: {len(examples)} texts. "
                    "Call `tokenize` once per text."
                )
            parts.append(examples[0])
        ids: list[int] = []
        for part in parts:
            row = self._encode_row(part, prefix, is_split_into_words, split_special_tokens,
                                   add_special_tokens)
            ids += row["input_ids"]
        return self.convert_ids_to_tokens(ids)

    def add_tokens(self: GPT2Tokenizer, new_tokens: Any, special_tokens: bool = False) -> int:
        """Adds tokens to the vocabulary, as transformers does; new ids follow the last id.

        Added tokens match their exact text in `__call__`, `tokenize` and `encode` before the
        BPE runs. Special ones (`special_tokens=True`) follow the special-token rules:
        `skip_special_tokens` drops them, `split_special_tokens` and `encode`'s
        `allowed_special` policy apply to them; the others are always matched and always kept.

        Args:
            new_tokens: A str or `tokenizers.AddedToken`, or a list of them.
            special_tokens: Add them as special tokens.

        Returns:
            How many tokens were not yet added tokens (a string already in the BPE vocabulary
            keeps its id and counts, as in transformers).

        >>> from gpt2_tokenizer import GPT2Tokenizer
        >>> tok = GPT2Tokenizer.from_pretrained()
        >>> tok.add_tokens(["<think>"]), tok("a<think>").input_ids, len(tok)
        (1, [64, 50257], 50258)
        """
        if isinstance(new_tokens, str) or hasattr(new_tokens, "content"):
            new_tokens = [new_tokens]
        if not isinstance(new_tokens, (list, tuple)):
            raise TypeError(
                "`new_tokens` must be a str, an AddedToken or a list of them. Received: "
                f"{new_tokens!r:.60} of type {type(new_tokens).__name__}."
            )
        added = 0
        for i, token in enumerate(new_tokens):
            content, flag = _token_content(token, f"new_tokens[{i}]")
            special = bool(special_tokens) if flag is None else flag or bool(special_tokens)
            if not content or content in self._special:
                continue
            existing = self.bpe.encoder.get(content)
            self._register(content, len(self) if existing is None else existing)
            if not special:
                self._plain.add(content)
            added += 1
        return added

    # ----------------------------------------------------------------- padding
    def pad(
        self: GPT2Tokenizer,
        encoded_inputs: Any,
        padding: bool | str = True,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        padding_side: Literal["right", "left"] | None = None,
        return_attention_mask: bool | None = None,
        return_tensors: str | None = None,
        verbose: bool = True,
    ) -> _batch.BatchEncoding:
        """Pads encoded rows, as transformers' `pad` (what its data collators call).

        `input_ids` is padded with `pad_token_id`, `attention_mask` with 0 (and created when
        missing), `token_type_ids` with 0, `special_tokens_mask` with 1; other keys (`labels`)
        pass through unpadded. Rows longer than the target are kept whole.

        Args:
            encoded_inputs: One row or a batch: a dict of lists (or of lists of lists), a list
                of such dicts, or the same holding numpy arrays or torch tensors (then the
                result is of that kind unless `return_tensors` says otherwise).
            padding: True/"longest", "max_length" (to `max_length`, default
                `model_max_length`) or False/"do_not_pad".
            max_length: Target length for padding="max_length".
            pad_to_multiple_of: Round the target length up to a multiple of this.
            padding_side: "right" or "left"; default `self.padding_side`.
            return_attention_mask: Pad (or create) `attention_mask`; default True.
            return_tensors: None (lists), "pt", "np", "tf" or "jax" (imported when asked).
            verbose: Accepted for transformers' signature; nothing is printed.

        Returns:
            A `BatchEncoding` with every key of the input.

        Raises:
            ValueError: No `input_ids`, no `pad_token` while padding, ragged rows for tensors.

        >>> from gpt2_tokenizer import GPT2Tokenizer
        >>> tok = GPT2Tokenizer.from_pretrained()
        >>> tok.pad_token = tok.eos_token
        >>> tok.pad([{"input_ids": [1, 2]}, {"input_ids": [3]}]).input_ids
        [[1, 2], [3, 50256]]
        """
        del verbose
        if isinstance(encoded_inputs, (list, tuple)) and encoded_inputs and isinstance(
                encoded_inputs[0], Mapping):
            keys = list(encoded_inputs[0].keys())
            encoded_inputs = {k: [example[k] for example in encoded_inputs] for k in keys}
        if not isinstance(encoded_inputs, Mapping):
            raise TypeError(
                "`encoded_inputs` must be a dict of lists or a list of dicts (what `tok(...)` "
                f"returns). Received: {type(encoded_inputs).__name__}."
            )
        inputs = dict(encoded_inputs)
        if "input_ids" not in inputs:
            raise ValueError(
                "`encoded_inputs` must hold `input_ids`, the rows to pad. Received keys: "
                f"{list(inputs)}."
            )
        ids = inputs["input_ids"]
        if ids is None or (hasattr(ids, "__len__") and len(ids) == 0):
            if return_attention_mask:
                inputs["attention_mask"] = []
            return _batch.BatchEncoding(inputs)
        return_tensors = _tensor_kind_of(ids, return_tensors)
        inputs = {k: v.tolist() if hasattr(v, "tolist") else _rows_to_lists(v)
                  for k, v in inputs.items()}
        target = self._pad_target(padding, max_length)
        mask = True if return_attention_mask is None else bool(return_attention_mask)
        side = self.padding_side if padding_side is None else padding_side
        if side not in ("right", "left"):
            raise ValueError(f"`padding_side` must be 'right' or 'left'. Received: {side!r}.")
        rows_ids = inputs["input_ids"]
        batched = bool(rows_ids) and isinstance(rows_ids[0], (list, tuple))
        if not batched:
            inputs = {k: [v] for k, v in inputs.items()}
        elif target == "longest":
            target = max(len(r) for r in inputs["input_ids"])
        n = len(inputs["input_ids"])
        bad = [k for k, v in inputs.items() if len(v) != n]
        if batched and bad:
            raise ValueError(
                f"Every key of `encoded_inputs` must hold one entry per row ({n} rows of "
                f"`input_ids`). Received: {[(k, len(inputs[k])) for k in bad]}."
            )
        rows = [{k: v[i] for k, v in inputs.items()} for i in range(n)]
        for row in rows:
            self._pad_row(row, target, pad_to_multiple_of, mask, side)
        out = _batch.BatchEncoding()
        for key in rows[0]:
            values = [row[key] for row in rows]
            values = values if batched else values[0]
            out[key] = values if return_tensors is None else _as_tensor(key, values, return_tensors)
        return out

    def _pad_target(self: GPT2Tokenizer, padding: Any, max_length: int | None) -> Any:
        """The padding target: None (no padding), "longest" or a length."""
        if padding in (False, "do_not_pad"):
            return None
        if padding in (True, "longest"):
            target: Any = "longest"
        elif padding == "max_length":
            target = self.model_max_length if max_length is None else max_length
        else:
            raise ValueError(
                "`padding` must be True, False, 'longest', 'max_length' or 'do_not_pad'. "
                f"Received: padding={padding!r}."
            )
        if self.pad_token_id is None:
            raise ValueError(
                "Asking to pad, but this tokenizer has no `pad_token` (GPT-2 has none). Set one "
                "first, e.g. `tok.pad_token = tok.eos_token`, or "
                "`tok.add_special_tokens({'pad_token': '[PAD]'})`. Received: pad_token=None."
            )
        return target

    def _pad_row(
        self: GPT2Tokenizer,
        row: dict[str, Any],
        target: Any,
        multiple: int | None,
        mask: bool,
        side: str,
    ) -> None:
        ids = row["input_ids"]
        length = len(ids) if target == "longest" else target
        if length is not None and multiple is not None:
            if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
                raise ValueError(
                    f"`pad_to_multiple_of` must be a positive int. Received: {multiple!r}."
                )
            length = -(-length // multiple) * multiple
        if mask and "attention_mask" not in row:
            row["attention_mask"] = [1] * len(ids)
        missing = 0 if length is None else length - len(ids)
        if missing <= 0:
            return
        fills = {"input_ids": self.pad_token_id, **_PAD_FILL}
        for key in [k for k in fills if k in row and (k != "attention_mask" or mask)]:
            pad = [fills[key]] * missing
            row[key] = pad + list(row[key]) if side == "left" else list(row[key]) + pad


def _rows_to_lists(value: Any) -> Any:
    """A list of per-row arrays (numpy, torch) as lists, so rows can be padded."""
    if isinstance(value, (list, tuple)):
        return [v.tolist() if hasattr(v, "tolist") else v for v in value]
    return value


def _tensor_kind_of(ids: Any, requested: str | None) -> str | None:
    """`return_tensors`, or the kind of the input's arrays when it is None, as transformers."""
    if requested is not None:
        if str(requested) not in _TENSOR_KINDS:
            raise ValueError(
                f"`return_tensors` must be None, 'pt', 'np', 'tf' or 'jax'. Received: "
                f"return_tensors={requested!r}."
            )
        return str(requested)
    first = ids[0] if isinstance(ids, (list, tuple)) else ids
    if isinstance(first, (list, tuple)):
        first = next((row[0] for row in ids if len(row)), None)
    module = type(first).__module__.split(".")[0]
    if isinstance(first, np.ndarray):
        return "np"
    return "pt" if module == "torch" else None


def _as_tensor(key: str, values: Any, kind: str) -> Any:
    """One key's values as a tensor of `kind`; the framework is imported here, when asked."""
    try:
        array = np.asarray(values)
        if array.dtype == object:
            raise ValueError("ragged")
    except ValueError:
        raise ValueError(
            f"return_tensors={kind!r} needs rows of one length, but `{key}` rows differ in "
            "length; pass padding=True (and set `tok.pad_token`) or return_tensors=None."
        ) from None
    if kind == "np":
        return array
    if kind == "pt":
        import torch

        return torch.tensor(values)  # int64 / float32, as transformers builds them.
    if kind == "tf":
        import tensorflow as tf

        return tf.constant(values)
    import jax.numpy as jnp

    return jnp.asarray(array)


# --------------------------------------------------------------------- `__call__` helpers
def check_pairs(text_pair: Any, batched: bool, n: int, parsed: tuple[bool, list[Any]]) -> list:
    """The pair examples, one per example of `text`, as transformers checks them."""
    pair_batched, pairs = parsed
    if batched and not pair_batched:
        raise TypeError(
            "When `text` is a batch, `text_pair` must be a list of the same length. Received: "
            f"text_pair of type {type(text_pair).__name__}."
        )
    if not batched and pair_batched:
        raise TypeError(
            "When `text` is one text, `text_pair` must be one text too. Received: a list of "
            f"{len(pairs)}. Pass lists for both to encode a batch of pairs."
        )
    if len(pairs) != n:
        raise ValueError(
            f"`text` and `text_pair` must have the same batch length. Received: {n} texts and "
            f"{len(pairs)} pairs."
        )
    return pairs


def _pair_lengths(n1: int, n2: int, limit: int, truncation: Any) -> tuple[int, int]:
    """Lengths a pair is cut to, as `tokenizers` cuts them."""
    if truncation == "only_first":
        if n2 >= limit:
            raise ValueError(
                f"truncation='only_first' cannot fit this pair in max_length={limit}: the second "
                f"text alone has {n2} tokens. Use truncation=True (longest first) or a larger "
                "max_length."
            )
        return limit - n2, n2
    # Longest first: the shorter text keeps up to half; a tie counts the second as longer.
    if n1 > n2:
        short = min(n2, limit // 2)
        return min(n1, limit - short), short
    short = min(n1, limit // 2)
    return short, min(n2, limit - short)


def join_pair(first: _batch.Row, second: _batch.Row, limit: int | None, truncation: Any) -> _batch.Row:
    """One row from a pair: cut (longest first, as transformers), then joined; type ids 0/1."""
    n1, n2 = len(first["input_ids"]), len(second["input_ids"])
    if limit is not None and n1 + n2 > limit:
        n1, n2 = _pair_lengths(n1, n2, limit, truncation)
    second["token_type_ids"] = [1] * len(second["input_ids"])
    return {key: first[key][:n1] + second[key][:n2] for key in first}


def round_padding(
    rows: list[_batch.Row],
    padding: Any,
    max_length: int | None,
    model_max_length: int,
    multiple: int | None,
) -> tuple[Any, int | None]:
    """(padding, max_length) with the target rounded up to `pad_to_multiple_of`."""
    if multiple is None or padding in (False, "do_not_pad"):
        return padding, max_length
    if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
        raise ValueError(f"`pad_to_multiple_of` must be a positive int. Received: {multiple!r}.")
    if padding in (True, "longest"):
        target = max((len(r["input_ids"]) for r in rows), default=0)
    elif padding == "max_length":
        target = model_max_length if max_length is None else max_length
    else:
        return padding, max_length  # `pad_rows` names the bad value.
    return "max_length", -(-target // multiple) * multiple


def pad_rows(rows: list[_batch.Row], *args: Any, side: str) -> None:
    """`batch.pad_rows`, with `token_type_ids` (0) and `special_tokens_mask` (1) padded too."""
    extra = {key: [row.pop(key) for row in rows] for key in ("token_type_ids", "special_tokens_mask")}
    _batch.pad_rows(rows, *args, side)  # type: ignore[arg-type]
    for key, columns in extra.items():
        for row, values in zip(rows, columns):
            pad = [_PAD_FILL[key]] * (len(row["input_ids"]) - len(values))
            row[key] = pad + values if side == "left" else values + pad
