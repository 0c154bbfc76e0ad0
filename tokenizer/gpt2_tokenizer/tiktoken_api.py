"""tiktoken's API on `GPT2Tokenizer` (`TiktokenMixin`): what `tiktoken.Encoding` has
beyond `encode`/`decode`, with its results and its `KeyError`s."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    from gpt2_tokenizer.tokenizer import GPT2Tokenizer

__all__ = ["TiktokenMixin"]


class TiktokenMixin:
    """The rest of `tiktoken.Encoding`: single tokens, byte values, batches and sizes.

    Errors follow tiktoken: an unknown token (bytes or id) raises `KeyError`.
    """

    @property
    def max_token_value(self: GPT2Tokenizer) -> int:
        """The largest token id (50256 for GPT-2)."""
        return len(self._id_to_bytes) - 1

    @property
    def n_vocab(self: GPT2Tokenizer) -> int:
        """`max_token_value + 1` (50257 for GPT-2), as tiktoken."""
        return len(self._id_to_bytes)

    @property
    def eot_token(self: GPT2Tokenizer) -> int:
        """The id of '<|endoftext|>' (50256), else of `eos_token`."""
        found = self._special.get("<|endoftext|>", self.eos_token_id)
        if found is None:
            raise KeyError("This tokenizer has neither '<|endoftext|>' nor an `eos_token`.")
        return found

    @property
    def special_tokens_set(self: GPT2Tokenizer) -> set[str]:
        """The special tokens `encode`'s `allowed_special` can name ({'<|endoftext|>'})."""
        return {t for t in self._special if t not in self._plain}

    def is_special_token(self: GPT2Tokenizer, token: int) -> bool:
        """Whether an id is a special token's."""
        return token in {self._special[t] for t in self.special_tokens_set}

    def _bytes_to_id(self: GPT2Tokenizer) -> dict[bytes, int]:
        key = (len(self._id_to_bytes), len(self._special))
        cached = self.__dict__.get("_bytes_to_id_cache")
        if cached is not None and cached[0] == key:
            return cached[1]
        table = {b: i for i, b in enumerate(self._id_to_bytes) if b is not None}
        table.update({t.encode("utf-8"): i for t, i in self._special.items()})
        self.__dict__["_bytes_to_id_cache"] = (key, table)
        return table

    def encode_single_token(self: GPT2Tokenizer, text_or_bytes: str | bytes) -> int:
        """The id of text (or bytes) that is exactly one token, special tokens included.

        Raises:
            KeyError: It is not one token (tiktoken's error).

        >>> from gpt2_tokenizer import GPT2Tokenizer
        >>> GPT2Tokenizer.from_pretrained().encode_single_token("hello")
        31373
        """
        if isinstance(text_or_bytes, str):
            text_or_bytes = text_or_bytes.encode("utf-8")
        elif not isinstance(text_or_bytes, (bytes, bytearray)):
            raise TypeError(
                "`text_or_bytes` must be str or bytes. Received: "
                f"{type(text_or_bytes).__name__}."
            )
        try:
            return self._bytes_to_id()[bytes(text_or_bytes)]
        except KeyError:
            raise KeyError(bytes(text_or_bytes)) from None

    def decode_single_token_bytes(self: GPT2Tokenizer, token: int) -> bytes:
        """The bytes of one token id, special tokens included.

        Raises:
            KeyError: No token has this id (tiktoken's error).

        >>> from gpt2_tokenizer import GPT2Tokenizer
        >>> GPT2Tokenizer.from_pretrained().decode_single_token_bytes(31373)
        b'hello'
        """
        if isinstance(token, bool) or not isinstance(token, (int, np.integer)):
            raise TypeError(f"`token` must be an int id. Received: {token!r:.60}.")
        found = self._id_to_bytes[token] if 0 <= token < len(self._id_to_bytes) else None
        if found is None:
            raise KeyError(int(token))
        return found

    def decode_tokens_bytes(self: GPT2Tokenizer, tokens: Iterable[int]) -> list[bytes]:
        """The bytes of each token, e.g. [b'hello', b' world']."""
        return [self.decode_single_token_bytes(t) for t in self._check_ids(tokens)]

    def decode_with_offsets(self: GPT2Tokenizer, tokens: Iterable[int]) -> tuple[str, list[int]]:
        """The text and each token's start character, as tiktoken (strict UTF-8).

        A token starting inside a character starts at that character.
        """
        token_bytes = self.decode_tokens_bytes(tokens)
        text_len, offsets = 0, []
        for token in token_bytes:
            offsets.append(max(0, text_len - (0x80 <= token[0] < 0xC0)))
            text_len += sum(1 for c in token if not 0x80 <= c < 0xC0)
        return b"".join(token_bytes).decode("utf-8", errors="strict"), offsets

    def token_byte_values(self: GPT2Tokenizer) -> list[bytes]:
        """The bytes of every BPE token (special tokens excluded), sorted, as tiktoken."""
        specials = set(self._special.values())
        return sorted(b for i, b in enumerate(self._id_to_bytes)
                      if b is not None and i not in specials)

    def encode_ordinary_batch(
        self: GPT2Tokenizer, text: Sequence[str], *, num_threads: int = 1
    ) -> list[list[int]]:
        """`encode_ordinary` of each text (`num_threads` as in `encode_batch`)."""
        if self._plain and not isinstance(text, str) and isinstance(text, Sequence):
            # `encode_batch` would match the tokens from `add_tokens`; ordinary text must not.
            return [self.encode_ordinary(t) for t in text]
        return self.encode_batch(text, num_threads=num_threads, disallowed_special=())

    def encode_to_numpy(
        self: GPT2Tokenizer,
        text: str,
        *,
        allowed_special: Collection[str] | Literal["all"] = frozenset(),
        disallowed_special: Collection[str] | Literal["all"] = "all",
    ) -> np.ndarray:
        """`encode` as a uint32 numpy array, as tiktoken."""
        ids = self.encode(text, allowed_special=allowed_special,
                          disallowed_special=disallowed_special)
        return np.asarray(ids, dtype=np.uint32)

    def decode_batch(
        self: GPT2Tokenizer,
        batch: Iterable[Iterable[int]],
        *,
        errors: str = "replace",
        num_threads: int = 1,
    ) -> list[str]:
        """`decode` of each sequence (tiktoken's name; `num_threads` is accepted, unused)."""
        del num_threads  # Decoding is a join of bytes: a pool would cost more than it saves.
        return [self.decode(ids, errors=errors) for ids in batch]

    def decode_bytes_batch(
        self: GPT2Tokenizer, batch: Iterable[Iterable[int]], *, num_threads: int = 1
    ) -> list[bytes]:
        """`decode_bytes` of each sequence."""
        del num_threads
        return [self.decode_bytes(ids) for ids in batch]
