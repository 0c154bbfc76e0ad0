"""`GPT2Tokenizer`: tiktoken's `encode`/`decode` contract plus a Hugging Face style `__call__`.

Special tokens follow two documented policies:

* `encode` (tiktoken): text that contains a special token raises `ValueError` unless the token
  is passed in `allowed_special`; `encode_ordinary` treats everything as text.
* `__call__` (Hugging Face `GPT2TokenizerFast`): special tokens in the text map to their ids,
  unless `split_special_tokens=True`.

Lone surrogates (`"\\ud800"`) cannot be encoded as UTF-8 and raise `ValueError` (tiktoken
silently replaces them with U+FFFD; HF raises a bare `TypeError`).
"""

from __future__ import annotations

import json
import os
import time
import weakref
from array import array
from collections.abc import Collection, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from itertools import chain
from pathlib import Path
from typing import Any, Literal

import numpy as np
import regex

from gpt2_tokenizer import batch as _batch
from gpt2_tokenizer import files as _files
from gpt2_tokenizer import hf_api as _hf_api
from gpt2_tokenizer.bpe import BytePairEncoding
from gpt2_tokenizer.hf_api import HFTokenizerMixin
from gpt2_tokenizer.tiktoken_api import TiktokenMixin

__all__ = ["GPT2Tokenizer"]

ENDOFTEXT = "<|endoftext|>"
_PARALLEL_MIN_CHARS = 1_000_000  # Below this a process pool costs more than it saves.
_PAUSE_EVERY_CHARS = 16_384  # About a millisecond of encoding (see `_encode_yielding`).
_SURROGATE_RE = regex.compile(r"[\ud800-\udfff]")


def _check_str(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(
            f"`{name}` must be a str. Received: {name} of type {type(value).__name__} "
            f"({value!r:.60}). Decode bytes first (e.g. `data.decode('utf-8')`)."
        )
    return value


def _surrogate_error(text: str, name: str) -> ValueError:
    match = _SURROGATE_RE.search(text)
    where = f"U+{ord(match.group()):04X} at index {match.start()}" if match else "a surrogate"
    return ValueError(
        f"`{name}` must be valid Unicode, but it holds the lone surrogate {where}, which has no "
        "UTF-8 encoding. Clean it first, e.g. `text.encode('utf-16', 'surrogatepass')"
        ".decode('utf-16', 'replace')` (what tiktoken does silently)."
    )


def _check_special_collection(value: Any, name: str) -> None:
    """A str other than "all" would be read character by character: refuse it."""
    if isinstance(value, str) and value != "all":
        raise TypeError(
            f'`{name}` must be a set of special tokens or "all", not a single str. '
            f"Received: {name}={value!r:.60}. Pass a set, e.g. `{name}={{{value!r:.60}}}`."
        )


class GPT2Tokenizer(HFTokenizerMixin, TiktokenMixin):
    """GPT-2's byte-level BPE tokenizer, ids identical to tiktoken and Hugging Face.

    Build it with `GPT2Tokenizer.from_pretrained()` (bundled GPT-2 vocabulary, offline) or
    `GPT2Tokenizer.from_pretrained(folder)` (any Hugging Face folder of this kind). The rest of
    transformers' tokenizer API (`pad`, `tokenize`, `add_tokens`, ...) comes from
    `hf_api.HFTokenizerMixin`, the rest of tiktoken's from `tiktoken_api.TiktokenMixin`.

    Attributes:
        bpe: The vocabulary, merges and caches (`encoder`, `bpe_ranks`, `merges`).
        add_prefix_space: `__call__` prepends a space to text that does not start with one.
        add_bos_token: `__call__` prepends `bos_token_id`.
        model_max_length: Longest sequence `__call__` returns without `truncation`.
        padding_side: Default side for padding, "right" or "left".

    >>> tok = GPT2Tokenizer.from_pretrained()
    >>> tok.encode("Hello world"), tok.encode(" Hello world")
    ([15496, 995], [18435, 995])
    >>> tok.decode([15496, 995])
    'Hello world'
    """

    def __init__(
        self,
        files: _files.TokenizerFiles,
        *,
        whole_word_fast_path: bool,
        add_prefix_space: bool = False,
        add_bos_token: bool = False,
        model_max_length: int = 1024,
    ) -> None:
        self._files = files
        self.bpe = BytePairEncoding(
            files.encoder, files.merges, whole_word_fast_path=whole_word_fast_path
        )
        self.add_prefix_space = bool(add_prefix_space)
        self.add_bos_token = bool(add_bos_token)
        self.model_max_length = int(model_max_length)
        self.padding_side: Literal["right", "left"] = "right"
        self._id_to_bytes: list[bytes | None] = list(self.bpe.id_to_bytes)
        self._special: dict[str, int] = {}
        self._roles: dict[str, str | None] = {key: None for key in _files.SPECIAL_TOKEN_KEYS}
        self._additional: list[str] = []
        self._plain: set[str] = set()  # Added tokens that are not special (`add_tokens`).
        self._special_re: regex.Pattern[str] | None = None
        self._pool: ProcessPoolExecutor | None = None
        for content, token_id, special in files.added_tokens:
            self._register(content, token_id)
            if not special:
                self._plain.add(content)
        config = files.config
        for key in _files.SPECIAL_TOKEN_KEYS:
            value = config.get(key, ENDOFTEXT if key in ("bos_token", "eos_token", "unk_token")
                               else None)
            if value is not None and value not in self._special:
                if value not in self.bpe.encoder:
                    continue  # A role naming a token this vocabulary lacks: leave it unset.
                self._register(value, self.bpe.encoder[value])
            self._roles[key] = value
        self._additional = list(config.get("additional_special_tokens") or [])

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        add_prefix_space: bool | None = None,
        add_bos_token: bool | None = None,
        model_max_length: int | None = None,
    ) -> GPT2Tokenizer:
        """Loads the bundled GPT-2 tokenizer, or a Hugging Face tokenizer folder.

        Args:
            path: None for the bundled GPT-2 vocabulary (sha256-checked, offline). Else a folder
                with `tokenizer.json` or `vocab.json` + `merges.txt` of the GPT-2 byte-level BPE
                kind; `tokenizer_config.json`, `special_tokens_map.json` and `added_tokens.json`
                are read when present. Other kinds (WordPiece, SentencePiece, ...) are refused.
            add_prefix_space: Overrides the folder's setting (default False).
            add_bos_token: Overrides the folder's setting (default False).
            model_max_length: Overrides the folder's setting (default 1024).

        Returns:
            The tokenizer.

        Raises:
            FileNotFoundError: `path` is not a tokenizer folder.
            ValueError: The folder holds another tokenizer kind or damaged files.
        """
        if path is None:
            encoder, merges = _files.load_bundled_vocab()
            files = _files.TokenizerFiles(encoder, merges, [(ENDOFTEXT, 50256, True)], {})
            fast = True  # Every GPT-2 vocabulary entry merges back to itself (tested).
        else:
            files = _files.load_directory(path)
            fast = bool(files.config.get("ignore_merges")) or _is_gpt2_vocab(files)
        config = files.config
        return cls(
            files,
            whole_word_fast_path=fast,
            add_prefix_space=_pick(add_prefix_space, config.get("add_prefix_space"), False),
            add_bos_token=_pick(add_bos_token, config.get("add_bos_token"), False),
            model_max_length=_pick(model_max_length, config.get("model_max_length"), 1024),
        )

    def _register(self, content: str, token_id: int) -> None:
        self._special[content] = token_id
        if token_id >= len(self._id_to_bytes):
            self._id_to_bytes.extend([None] * (token_id + 1 - len(self._id_to_bytes)))
        self._id_to_bytes[token_id] = content.encode("utf-8")
        self._special_re = None

    # ----------------------------------------------------------------- vocabulary facts
    @property
    def encoder(self) -> dict[str, int]:
        """The BPE vocabulary, token string (byte-to-unicode characters) -> id."""
        return self.bpe.encoder

    @property
    def bpe_ranks(self) -> dict[tuple[str, str], int]:
        """Merge pair -> priority (lower merges first)."""
        return self.bpe.bpe_ranks

    @property
    def merges(self) -> list[tuple[str, str]]:
        """Merge rules in priority order."""
        return self.bpe.merges

    @property
    def vocab_size(self) -> int:
        """Size of the base vocabulary (50257 for GPT-2), without added tokens, as in HF."""
        return len(self.bpe.encoder)

    def __len__(self) -> int:
        """Size of the full vocabulary, added tokens included, as in HF."""
        return len(self._id_to_bytes)

    @property
    def special_tokens(self) -> dict[str, int]:
        """Every special (added) token string -> id."""
        return dict(self._special)

    @property
    def special_tokens_map(self) -> dict[str, Any]:
        """Role -> token string for the roles that are set, as in HF."""
        out: dict[str, Any] = {k: v for k, v in self._roles.items() if v is not None}
        if self._additional:
            out["additional_special_tokens"] = list(self._additional)
        return out

    def _role_id(self, role: str) -> int | None:
        token = self._roles[role]
        return None if token is None else self.token_to_id(token)

    def token_to_id(self, token: str) -> int:
        """The id of a token string (vocabulary spelling, e.g. 'Ġworld', or a special token)."""
        if token in self._special:
            return self._special[token]
        if token in self.bpe.encoder:
            return self.bpe.encoder[token]
        raise KeyError(f"`token` is not in the vocabulary. Received: token={token!r}.")

    bos_token = property(lambda self: self._roles["bos_token"], doc="'<|endoftext|>' for GPT-2.")
    eos_token = property(lambda self: self._roles["eos_token"], doc="'<|endoftext|>' for GPT-2.")
    unk_token = property(lambda self: self._roles["unk_token"], doc="'<|endoftext|>' for GPT-2.")
    bos_token_id = property(lambda self: self._role_id("bos_token"), doc="50256 for GPT-2.")
    eos_token_id = property(lambda self: self._role_id("eos_token"), doc="50256 for GPT-2.")
    pad_token_id = property(lambda self: self._role_id("pad_token"), doc="None until set.")

    @property
    def pad_token(self) -> str | None:
        """None for GPT-2; set it before padding, e.g. `tok.pad_token = tok.eos_token`."""
        return self._roles["pad_token"]

    @pad_token.setter
    def pad_token(self, value: str | None) -> None:
        if value is not None:
            _check_str(value, "pad_token")
            if value not in self._special and value not in self.bpe.encoder:
                raise ValueError(
                    f"`pad_token` must be a token of the vocabulary. Received: pad_token={value!r}."
                    f" Add it first: `tok.add_special_tokens({{'pad_token': {value!r}}})`."
                )
        self._roles["pad_token"] = value

    def add_special_tokens(
        self,
        tokens: dict[str, Any],
        replace_extra_special_tokens: bool = True,
        *,
        replace_additional_special_tokens: bool | None = None,
    ) -> int:
        """Adds special tokens, as HF does; new ids follow the current last id.

        Args:
            tokens: Role -> token (roles: bos/eos/unk/sep/pad/cls/mask_token), and optionally
                `additional_special_tokens` -> list of tokens; a token is a str or a
                `tokenizers.AddedToken`.
            replace_extra_special_tokens: The list given replaces `additional_special_tokens`
                (its old tokens stay in the vocabulary), as in HF; False extends it.
            replace_additional_special_tokens: transformers 4's name for the same option.

        Returns:
            How many tokens were not yet added tokens (as HF counts them).

        >>> tok = GPT2Tokenizer.from_pretrained()
        >>> tok.add_special_tokens({"cls_token": "[CLS]"}), tok.token_to_id("[CLS]"), len(tok)
        (1, 50257, 50258)
        """
        if replace_additional_special_tokens is not None:
            replace_extra_special_tokens = replace_additional_special_tokens
        added = 0
        for role, value in tokens.items():
            if role == "additional_special_tokens":
                if isinstance(value, str) or not isinstance(value, (list, tuple)):
                    raise TypeError("`additional_special_tokens` must be a list of str. "
                                    f"Received: {value!r:.60}; wrap it in a list.")
                values = [_hf_api._token_content(v, f"tokens[{role!r}][{i}]")[0]
                          for i, v in enumerate(value)]
            elif role in self._roles:
                values = [_hf_api._token_content(value, f"tokens[{role!r}]")[0]]
            else:
                raise ValueError(
                    f"`tokens` keys must be among {list(self._roles)} or "
                    f"'additional_special_tokens'. Received: {role!r}."
                )
            for token in values:
                if not token:
                    raise ValueError(f"Special tokens must be non-empty. Received: {role}=''.")
                if token not in self._special:
                    existing = self.bpe.encoder.get(token)
                    added += 1
                    self._register(token, len(self) if existing is None else existing)
                self._plain.discard(token)
            if role != "additional_special_tokens":
                self._roles[role] = values[0]
            elif replace_extra_special_tokens:
                self._additional = list(dict.fromkeys(values))
            else:
                self._additional.extend(t for t in values if t not in self._additional)
        return added

    # ----------------------------------------------------------------- encoding
    def encode_ordinary(self, text: str) -> list[int]:
        """Encodes text, treating special-token text as ordinary text (tiktoken's name).

        >>> GPT2Tokenizer.from_pretrained().encode_ordinary("<|endoftext|>")[:3]
        [27, 91, 437]
        """
        _check_str(text, "text")
        try:
            return self.bpe.encode_ordinary(text)
        except UnicodeEncodeError:
            raise _surrogate_error(text, "text") from None

    def encode(
        self,
        text: str,
        *,
        allowed_special: Collection[str] | Literal["all"] = frozenset(),
        disallowed_special: Collection[str] | Literal["all"] = "all",
    ) -> list[int]:
        """Encodes text with tiktoken's special-token policy.

        Args:
            text: The text.
            allowed_special: Special tokens to encode as their ids when they occur in the text,
                or "all".
            disallowed_special: Special tokens whose text raises `ValueError`, or "all" (every
                special token not allowed). Pass `()` to encode them as ordinary text.

        Returns:
            Token ids.

        Raises:
            ValueError: The text holds a disallowed special token, or a lone surrogate.

        >>> tok = GPT2Tokenizer.from_pretrained()
        >>> tok.encode("Hi<|endoftext|>", allowed_special={"<|endoftext|>"})
        [17250, 50256]
        """
        _check_str(text, "text")
        return self._encode_checked(text, *self._special_policy(allowed_special, disallowed_special))

    def _special_policy(
        self,
        allowed_special: Collection[str] | Literal["all"],
        disallowed_special: Collection[str] | Literal["all"],
    ) -> tuple[set[str], tuple[str, ...]]:
        """`encode`'s arguments checked once: (allowed, disallowed) special tokens."""
        _check_special_collection(allowed_special, "allowed_special")
        _check_special_collection(disallowed_special, "disallowed_special")
        specials = self.special_tokens_set
        allowed = specials if allowed_special == "all" else set(allowed_special)
        unknown = [t for t in allowed if t not in specials]
        if unknown:
            raise ValueError(
                f"`allowed_special` may only name special tokens ({sorted(specials)}). "
                f"Received unknown: {sorted(unknown)}. Add them with `tok.add_special_tokens`."
            )
        # Tokens added with `add_tokens` are not special: always matched, never refused.
        if disallowed_special == "all":
            return allowed | self._plain, tuple(t for t in specials if t not in allowed)
        return allowed | self._plain, tuple(disallowed_special)

    def _encode_checked(self, text: str, allowed: set[str], disallowed: tuple[str, ...]) -> list[int]:
        """`encode` of a checked `str` under a checked policy (the per-text part of a batch)."""
        for token in disallowed:
            if token in text:
                raise ValueError(
                    f"Encountered text corresponding to disallowed special token {token!r}. "
                    f"To encode it as its special token, pass `allowed_special={{{token!r}}}` "
                    "(or 'all'); to encode it as normal text, pass "
                    f"`disallowed_special=()` or use `encode_ordinary`."
                )
        if allowed:
            return self._encode_with_specials(text, allowed)
        try:
            return self.bpe.encode_ordinary(text)
        except UnicodeEncodeError:
            raise _surrogate_error(text, "text") from None

    def _encode_with_specials(self, text: str, allowed: set[str]) -> list[int]:
        ids: list[int] = []
        for segment, special in self._split_special(text, allowed):
            if special:
                ids.append(self._special[segment])
            elif segment:
                ids.extend(self.encode_ordinary(segment))
        return ids

    def _split_special(self, text: str, allowed: set[str]) -> list[tuple[str, bool]]:
        """Cuts text into (segment, is_special), leftmost-longest matches first, as HF does."""
        if allowed == set(self._special):
            if self._special_re is None:
                self._special_re = _special_regex(self._special)
            pattern = self._special_re
        else:
            pattern = _special_regex(allowed)
        out, start = [], 0
        for match in pattern.finditer(text):
            out.append((text[start:match.start()], False))
            out.append((match.group(), True))
            start = match.end()
        out.append((text[start:], False))
        return out

    def encode_batch(
        self,
        texts: Sequence[str],
        *,
        num_threads: int = 1,
        allowed_special: Collection[str] | Literal["all"] = frozenset(),
        disallowed_special: Collection[str] | Literal["all"] = "all",
    ) -> list[list[int]]:
        """Encodes many texts; `encode`'s special-token policy applies to each.

        Pure Python holds the GIL, so threads would not scale: with `num_threads > 1` and over
        about 1M characters in total, the texts are shared among `num_threads` *processes*
        (the name matches tiktoken's): this one and a pool of `num_threads - 1` workers, which
        start with copies of this tokenizer's caches. The pool starts on first use (about a
        second, `forkserver` start method: scripts need an `if __name__ == "__main__":` guard)
        and is kept for later calls until `close()`.

        Args:
            texts: The texts.
            num_threads: Processes to use for large batches, this one included.
            allowed_special: As in `encode`.
            disallowed_special: As in `encode`.

        Returns:
            One list of ids per text.
        """
        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise TypeError(
                "`texts` must be a list of str. Received: texts of type "
                f"{type(texts).__name__}; for one text use `encode`."
            )
        for i, text in enumerate(texts):
            _check_str(text, f"texts[{i}]")
        if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
            raise ValueError(f"`num_threads` must be an int >= 1. Received: {num_threads!r}.")
        policy = self._special_policy(allowed_special, disallowed_special)
        if num_threads == 1 or sum(map(len, texts)) < _PARALLEL_MIN_CHARS:
            return [self._encode_checked(t, *policy) for t in texts]
        return self._encode_parallel(list(texts), num_threads, policy)

    def _encode_parallel(
        self, texts: list[str], processes: int, policy: tuple[set[str], tuple[str, ...]]
    ) -> list[list[int]]:
        """Workers take chunks from the front; this process takes them from the back by
        cancelling futures the pool has not started, so both finish at about the same time."""
        pool = self._process_pool(processes - 1)
        size = max(1, -(-len(texts) // (processes * 8)))
        chunks = [texts[i:i + size] for i in range(0, len(texts), size)]
        futures = [pool.submit(_worker_encode, chunk, policy) for chunk in chunks]
        done_here: dict[int, list[list[int]]] = {}
        try:
            for k in reversed(range(len(chunks))):
                if not futures[k].cancel():
                    break
                done_here[k] = self._encode_yielding(chunks[k], policy)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        out: list[list[int]] = []
        for k, future in enumerate(futures):
            if k in done_here:
                out += done_here[k]
                continue
            ids, lengths = future.result()
            flat = ids.tolist()
            start = 0
            for n in lengths:
                out.append(flat[start:start + n])
                start += n
        return out

    def _encode_yielding(
        self, texts: list[str], policy: tuple[set[str], tuple[str, ...]]
    ) -> list[list[int]]:
        """Encodes texts, letting other threads run every ~16K characters.

        The executor's threads, which hand chunks to the workers and take results back, need the
        GIL; without a pause this loop holds it for the whole 5 ms switch interval, and the
        workers measurably wait between chunks (~25% idle).
        """
        out = []
        since_pause = 0
        for text in texts:
            out.append(self._encode_checked(text, *policy))
            since_pause += len(text)
            if since_pause > _PAUSE_EVERY_CHARS:
                time.sleep(0)
                since_pause = 0
        return out

    def _process_pool(self, workers: int) -> ProcessPoolExecutor:
        if self._pool is not None and self._pool._max_workers == workers:  # type: ignore[attr-defined]
            return self._pool
        self.close()
        import multiprocessing

        method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        self._pool = ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context(method),
            # The workers start with copies of this process's caches (warm on texts it has seen).
            initializer=_worker_init, initargs=(self, self.bpe.cache_contents()),
        )
        weakref.finalize(self, self._pool.shutdown, wait=False, cancel_futures=True)
        return self._pool

    def close(self) -> None:
        """Stops the worker processes of `encode_batch`, if any were started."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __getstate__(self) -> dict[str, Any]:
        # Lookup tables the API mixins cache (`*_cache`) are rebuilt on demand, not pickled.
        state = {k: v for k, v in self.__dict__.items()
                 if k not in ("bpe", "_pool") and not k.endswith("_cache")}
        state["_fast_path"] = self.bpe.whole_word_fast_path
        state["_special_re"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        fast = state.pop("_fast_path")
        self.__dict__.update(state)
        files = self._files
        self.bpe = BytePairEncoding(files.encoder, files.merges, whole_word_fast_path=fast)
        self._pool = None

    # ----------------------------------------------------------------- decoding
    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The raw bytes of ids (a token may end inside a multi-byte character).

        >>> GPT2Tokenizer.from_pretrained().decode_bytes([47249])
        b'\\xf0\\x9f\\x98'
        """
        ids = self._check_ids(ids)
        return b"".join(map(self._id_to_bytes.__getitem__, ids))  # type: ignore[arg-type]

    def decode(
        self,
        ids: Iterable[int],
        *,
        errors: str = "replace",
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
    ) -> str:
        """Decodes ids to text, byte-exact: `decode(encode(s)) == s` for every valid `s`.

        No spaces are cleaned up. Bytes that are not valid UTF-8 (a sequence cut inside a
        character) follow `errors`: "replace" (default, U+FFFD, as tiktoken and HF) or
        "strict" (raises `UnicodeDecodeError`); any `bytes.decode` handler works.

        Args:
            ids: Token ids (ints, or a 1-D numpy/torch array).
            errors: Policy for invalid UTF-8.
            skip_special_tokens: Drop special-token ids first (HF's option); tokens added with
                `add_tokens` are kept, as in HF.
            clean_up_tokenization_spaces: Accepted as pipelines pass it, and ignored, as
                transformers ignores it for byte-level BPE (the clean-up would delete spaces
                before punctuation: the text would no longer be what was encoded).

        Returns:
            The text.

        >>> tok = GPT2Tokenizer.from_pretrained()
        >>> tok.decode([47249]), tok.decode([47249, 222])
        ('�', '😀')
        """
        ids = self._check_ids(ids)
        del clean_up_tokenization_spaces
        if skip_special_tokens:
            specials = self._special_ids()
            ids = [i for i in ids if i not in specials]
        return self.decode_bytes(ids).decode("utf-8", errors=errors)

    def batch_decode(self, sequences: Iterable[Iterable[int]], **options: Any) -> list[str]:
        """`decode` for each sequence (options as in `decode`)."""
        return [self.decode(ids, **options) for ids in sequences]

    def _check_ids(self, ids: Iterable[int]) -> list[int]:
        if hasattr(ids, "tolist"):  # numpy, torch, tf (via numpy()), jax arrays
            ids = ids.tolist()  # type: ignore[union-attr]
        if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
            raise TypeError(
                f"`ids` must be a sequence of int token ids. Received: {type(ids).__name__} "
                f"({ids!r:.60})."
            )
        ids = list(ids)
        if not all(type(i) is int or isinstance(i, (int, np.integer)) for i in ids):
            bad = next(i for i in ids if not isinstance(i, (int, np.integer)))
            raise TypeError(
                f"`ids` must hold ints. Received: {bad!r} of type {type(bad).__name__}."
                + (" For a batch use `batch_decode`." if isinstance(bad, list) else "")
            )
        if ids:
            n = len(self._id_to_bytes)
            low, high = min(ids), max(ids)
            if low < 0 or high >= n:
                bad = low if low < 0 else high
                raise ValueError(
                    f"`ids` must be in [0, {n - 1}] (this vocabulary has {n} ids). Received: "
                    f"id {bad} at index {ids.index(bad)}. Check that the ids come from this "
                    "tokenizer (a model's vocab_size can exceed the tokenizer's)."
                )
            # Per id, not `None in self._id_to_bytes`: that scan of the vocabulary cost ~3 ms.
            missing = [i for i in ids if self._id_to_bytes[i] is None]
            if missing:
                raise ValueError(f"`ids` holds id {missing[0]}, which no token has.")
        return [int(i) for i in ids]

    # ----------------------------------------------------------------- HF-style call
    def __call__(
        self,
        text: str | Sequence[str] | Sequence[Sequence[str]],
        text_pair: str | Sequence[str] | Sequence[Sequence[str]] | None = None,
        *,
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        padding_side: Literal["right", "left"] | None = None,
        return_tensors: str | None = None,
        return_token_type_ids: bool | None = None,
        return_attention_mask: bool | None = None,
        return_offsets_mapping: bool = False,
        return_special_tokens_mask: bool = False,
        return_length: bool = False,
        add_prefix_space: bool | None = None,
        is_split_into_words: bool = False,
        split_special_tokens: bool = False,
        verbose: bool = True,
    ) -> _batch.BatchEncoding:
        """Tokenizes like `transformers.GPT2TokenizerFast.__call__` (same ids and offsets).

        Special tokens in the text map to their ids, as in HF (`split_special_tokens=True`
        encodes them as text). Unlike HF, which only warns, a row longer than
        `model_max_length` raises `ValueError` unless it is truncated; use `encode` for long
        texts (it has no limit).

        Args:
            text: A str, a list of str, or with `is_split_into_words` a list of words (or a list
                of such lists).
            text_pair: A second text (or list of texts) encoded after `text` in the same row,
                as HF does for pairs (GPT-2 puts nothing between them).
            add_special_tokens: With `add_bos_token`, prepend `bos_token_id` (to each text of
                a pair, as HF); GPT-2 adds nothing otherwise.
            padding: False/"do_not_pad", True/"longest" or "max_length". Needs `pad_token`.
            truncation: True/"longest_first" cuts rows to `max_length` (default
                `model_max_length`), for a pair from the longer text first, as HF;
                "only_first" cuts the first text only; None cuts to `max_length` when one is
                given without `padding` (HF's default); False/"do_not_truncate" never cuts.
            max_length: Length for truncation and for padding="max_length".
            pad_to_multiple_of: Round the padded length up to a multiple of this.
            padding_side: "right" or "left"; default `self.padding_side`.
            return_tensors: None (lists), "np", "pt", "tf" or "jax" (framework imported now).
            return_token_type_ids: Include `token_type_ids` (0 for `text`, 1 for `text_pair`).
            return_attention_mask: Include `attention_mask` (default True).
            return_offsets_mapping: Include `offset_mapping`: (start, end) character spans into
                the input; a token's leading space belongs to it, and a token holding part of a
                multi-byte character spans that whole character (as HF fast does).
            return_special_tokens_mask: Include `special_tokens_mask`: 1 for the tokens this
                call adds (`bos_token` with `add_bos_token`, padding), 0 for the text's own.
            return_length: Include `length`, each row's length after padding.
            add_prefix_space: Overrides `self.add_prefix_space` for this call.
            is_split_into_words: The input is pre-split words; each is encoded on its own with
                a leading space, so it needs `add_prefix_space` (HF's GPT2TokenizerFast refuses
                it otherwise), and offsets are within the word.
            split_special_tokens: Encode special-token text as ordinary text.
            verbose: Accepted for HF's signature; nothing is printed.

        Returns:
            A `BatchEncoding` with `input_ids` and `attention_mask` (and `offset_mapping`):
            flat lists for one text, lists of lists for a batch; tensors are always batched.

        Shapes:
            With `return_tensors`: input_ids (B, T), attention_mask (B, T),
            offset_mapping (B, T, 2).

        >>> tok = GPT2Tokenizer.from_pretrained()
        >>> tok("Hello world")["input_ids"], tok(["Hello", " world"]).input_ids
        ([15496, 995], [[15496], [995]])
        >>> tok("Hello", " world", return_token_type_ids=True).token_type_ids
        [0, 1]
        """
        del verbose
        prefix = self.add_prefix_space if add_prefix_space is None else bool(add_prefix_space)
        batched, examples = self._call_examples(text, is_split_into_words, prefix)
        options = (prefix, is_split_into_words, split_special_tokens, add_special_tokens)
        rows = [self._encode_row(example, *options) for example in examples]
        limit = _batch.resolve_limit(truncation, max_length, self.model_max_length, padding)
        if text_pair is not None:
            pairs = _hf_api.check_pairs(text_pair, batched, len(examples),
                                        self._call_examples(text_pair, is_split_into_words,
                                                            prefix))
            rows = [_hf_api.join_pair(row, self._encode_row(pair, *options), limit, truncation)
                    for row, pair in zip(rows, pairs)]
        for i, row in enumerate(rows):
            if limit is not None:
                for key in row:
                    del row[key][limit:]
            elif len(row["input_ids"]) > self.model_max_length:
                raise ValueError(
                    f"Row {i} has {len(row['input_ids'])} tokens, more than model_max_length="
                    f"{self.model_max_length}. Pass truncation=True (and max_length=...) to cut "
                    "it, raise `tok.model_max_length`, or use `tok.encode` for long texts."
                )
        side = self.padding_side if padding_side is None else padding_side
        if side not in ("right", "left"):
            raise ValueError(f"`padding_side` must be 'right' or 'left'. Received: {side!r}.")
        padding, max_length = _hf_api.round_padding(rows, padding, max_length,
                                                    self.model_max_length, pad_to_multiple_of)
        _hf_api.pad_rows(rows, padding, max_length, self.model_max_length, self.pad_token_id,
                         side=side)
        keys = ["input_ids"] + ["token_type_ids"] * bool(return_token_type_ids)
        keys += ["attention_mask"] * (return_attention_mask is not False)
        keys += ["offset_mapping"] * bool(return_offsets_mapping)
        keys += ["special_tokens_mask"] * bool(return_special_tokens_mask)
        out = _batch.BatchEncoding()
        for key in keys:
            values = [row[key] for row in rows]
            if return_tensors is not None:
                out[key] = _batch.to_tensors(key, values, return_tensors)
            else:
                out[key] = values if batched else values[0]
        if return_length:  # One length per row, a list even for one text, as in HF.
            lengths = [len(row["input_ids"]) for row in rows]
            out["length"] = lengths if return_tensors is None else _hf_api._as_tensor(
                "length", lengths, return_tensors)
        return out

    def _call_examples(self, text: Any, split_words: bool, prefix: bool) -> tuple[bool, list]:
        parsed = _examples(text, split_words)
        if split_words and not prefix:
            raise ValueError(
                "is_split_into_words=True needs add_prefix_space=True: each word is encoded "
                "after a space ('world' -> 'Ġworld'), and without it the words would be glued "
                "together. Received: add_prefix_space=False. Pass add_prefix_space=True (here or "
                "to `from_pretrained`), as transformers' GPT2TokenizerFast requires."
            )
        return parsed

    def _encode_row(
        self,
        example: Any,
        prefix: bool,
        split_words: bool,
        split_special: bool,
        add_special_tokens: bool = True,
    ) -> _batch.Row:
        ids: list[int] = []
        spans: list[tuple[int, int]] = []
        if add_special_tokens and self.add_bos_token and self.bos_token_id is not None:
            ids.append(self.bos_token_id)
            spans.append((0, 0))
        added = len(ids)
        for piece in example if split_words else [example]:
            allowed = set(self._plain) if split_special else set(self._special)
            for segment, special, start in _with_starts(self._split_special(piece, allowed)):
                if special:
                    ids.append(self._special[segment])
                    spans.append((start, start + len(segment)))
                elif segment:
                    seg_ids, seg_spans = self._encode_segment(segment, prefix)
                    ids += seg_ids
                    spans += [(a + start, b + start) for a, b in seg_spans]
        return {"input_ids": ids, "token_type_ids": [0] * len(ids),
                "attention_mask": [1] * len(ids), "offset_mapping": spans,
                "special_tokens_mask": [1] * added + [0] * (len(ids) - added)}

    def _encode_segment(self, segment: str, prefix: bool) -> tuple[list[int], list[tuple]]:
        shifted = prefix and not segment.startswith(" ")
        text = " " + segment if shifted else segment
        ids = self.encode_ordinary(text)
        spans = _char_spans(text, [len(self._id_to_bytes[i]) for i in ids])  # type: ignore[arg-type]
        if shifted:  # The added space aligns with the first real character, as in HF.
            spans = [(max(a - 1, 0), max(b - 2, 0) + 1) for a, b in spans]
        return ids, spans

    # ----------------------------------------------------------------- saving
    def save_pretrained(self, folder: str | os.PathLike[str]) -> tuple[str, ...]:
        """Writes a folder `transformers.GPT2TokenizerFast.from_pretrained` loads identically.

        Files: vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json and, when
        tokens were added, added_tokens.json. Each is written to a temporary file in the same
        folder and renamed into place.

        Args:
            folder: Created if missing.

        Returns:
            The paths written.
        """
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        # Tokens from `add_tokens` (not special) are only in `added_tokens_decoder`, which says so.
        added = {t: i for t, i in self._special.items()
                 if self.bpe.encoder.get(t) != i and t not in self._plain}
        decoder = {
            str(i): {"content": t, "lstrip": False, "normalized": False,
                     "rstrip": False, "single_word": False, "special": t not in self._plain}
            for t, i in sorted(self._special.items(), key=lambda item: item[1])
        }
        config = {
            "tokenizer_class": "GPT2Tokenizer",
            "add_prefix_space": self.add_prefix_space,
            "add_bos_token": self.add_bos_token,
            "model_max_length": self.model_max_length,
            "errors": "replace",
            "clean_up_tokenization_spaces": False,
            **self.special_tokens_map,
            "added_tokens_decoder": decoder,
        }
        texts = {
            "vocab.json": json.dumps(self.bpe.encoder),
            "merges.txt": "\n".join([_files.MERGES_HEADER, *map(" ".join, self.merges)]) + "\n",
            "tokenizer_config.json": json.dumps(config, indent=2, ensure_ascii=False) + "\n",
            "special_tokens_map.json": json.dumps(self.special_tokens_map, indent=2,
                                                  ensure_ascii=False) + "\n",
        }
        if added:
            texts["added_tokens.json"] = json.dumps(added, indent=2, ensure_ascii=False) + "\n"
        for name, content in texts.items():
            _files.atomic_write_text(path / name, content)
        return tuple(str(path / name) for name in texts)

    def __repr__(self) -> str:
        return (
            f"GPT2Tokenizer(vocab_size={self.vocab_size}, len={len(self)}, "
            f"model_max_length={self.model_max_length}, add_prefix_space={self.add_prefix_space}"
            f", special_tokens={self.special_tokens_map})"
        )


def _pick(override: Any, configured: Any, default: Any) -> Any:
    return override if override is not None else configured if configured is not None else default


def _special_regex(tokens: Iterable[str]) -> regex.Pattern[str]:
    ordered = sorted(tokens, key=len, reverse=True)
    if not ordered:
        return regex.compile(r"(?!)")
    return regex.compile("|".join(regex.escape(t) for t in ordered))


def _with_starts(parts: list[tuple[str, bool]]) -> Iterable[tuple[str, bool, int]]:
    start = 0
    for segment, special in parts:
        yield segment, special, start
        start += len(segment)


def _char_spans(text: str, byte_lengths: list[int]) -> list[tuple[int, int]]:
    """Character spans of consecutive byte runs; partial characters count whole, as in HF."""
    ends = np.cumsum(byte_lengths, dtype=np.int64)
    starts = ends - np.asarray(byte_lengths, dtype=np.int64)
    if text.isascii():
        return list(zip(starts.tolist(), ends.tolist()))
    raw = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    char_of_byte = np.cumsum((raw & 0xC0) != 0x80) - 1
    return list(zip(char_of_byte[starts].tolist(), (char_of_byte[ends - 1] + 1).tolist()))


def _examples(text: Any, split_words: bool) -> tuple[bool, list[Any]]:
    """(is_batch, examples) with every string checked."""
    def words(value: Any, name: str) -> list[str]:
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise TypeError(
                f"With is_split_into_words=True, `{name}` must be a list of str words. "
                f"Received: {type(value).__name__}."
            )
        return [_check_str(w, f"{name}[{j}]") for j, w in enumerate(value)]

    if split_words:
        if isinstance(text, (list, tuple)) and text and isinstance(text[0], (list, tuple)):
            return True, [words(ex, f"text[{i}]") for i, ex in enumerate(text)]
        return False, [words(text, "text")]
    if isinstance(text, str):
        return False, [text]
    if isinstance(text, (list, tuple)):
        return True, [_check_str(t, f"text[{i}]") for i, t in enumerate(text)]
    raise TypeError(
        f"`text` must be a str or a list of str. Received: text of type {type(text).__name__} "
        f"({text!r:.60})."
    )


def _is_gpt2_vocab(files: _files.TokenizerFiles) -> bool:
    """True when a folder holds GPT-2's own vocabulary and merges (enables the fast path)."""
    if len(files.merges) != 50000 or len(files.encoder) != 50257:
        return False
    encoder, merges = _files.load_bundled_vocab()
    return files.merges == merges and files.encoder == encoder


_WORKER: GPT2Tokenizer | None = None
_ID_TYPECODE = "I" if array("I").itemsize >= 4 else "L"  # Unsigned, at least 32 bits.


def _worker_init(tokenizer: GPT2Tokenizer, caches: tuple[dict[str, tuple[int, ...]], ...]) -> None:
    global _WORKER
    _WORKER = tokenizer
    tokenizer.bpe.fill_caches(*caches)


def _worker_encode(texts: list[str], policy: tuple[set[str], tuple[str, ...]]) -> tuple[array, array]:
    """All ids in one array and each text's length in another: they pickle as raw bytes, which
    costs both processes far less than lists of Python ints."""
    rows = [_WORKER._encode_checked(t, *policy) for t in texts]  # type: ignore[union-attr]
    return array(_ID_TYPECODE, chain.from_iterable(rows)), array(_ID_TYPECODE, map(len, rows))
