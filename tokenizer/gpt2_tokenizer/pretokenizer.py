"""GPT-2's pre-tokenizer: the original regex, pinned to the Unicode version the oracles use.

GPT-2 splits text with one regex (`PRETOKENIZE_PATTERN`) before BPE. Three compiled forms of it
give identical splits and are picked per piece of text for speed:

* ASCII text: the stdlib `re` with ASCII classes (about twice as fast as `regex`).
* Other text: the `regex` module's `\\p{L}`/`\\p{N}`.
* Text holding a code point whose class differs between the installed `regex` module's Unicode
  version and Unicode 16.0: explicit Unicode 16.0 classes (slow, rarely needed). tiktoken and
  Hugging Face `tokenizers` both classify by Unicode 16.0, so ids stay identical to theirs.

`split_pieces` cuts text at spaces that follow a non-whitespace character. No pre-token can
cross such a cut and the regex's only lookahead, `(?!\\S)`, sees whitespace on both sides of it,
so each piece pre-tokenizes exactly as in context and can be cached as a unit. `split_chunks`
cuts at the same places, but only every few thousand characters, so that mixed text can send
its ASCII chunks to `ascii_words` and only the others to the Unicode forms.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from itertools import chain

import regex

from gpt2_tokenizer import _unicode16

__all__ = [
    "CHUNK_CHARS",
    "PRETOKENIZE_PATTERN",
    "WHITESPACE_CLASS",
    "ascii_words",
    "pretokenize",
    "split_chunks",
    "split_pieces",
    "word_end_cut",
]

PRETOKENIZE_PATTERN = (
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)
"""The pre-tokenizer regex of OpenAI's GPT-2 `encoder.py` (for the `regex` module)."""

WHITESPACE_CLASS = r"\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
"""Unicode White_Space, which is `\\s` in `regex`, Rust `regex` and Oniguruma (not `\\x1c-\\x1f`,
which Python's `str.isspace` includes)."""

_ASCII_WS = r"\t\n\x0b\x0c\r "
# The same alternatives for ASCII, reordered and made possessive for speed (about 10%), with
# identical matches: letters cannot start where a contraction does (those start with "'"),
# nothing follows a possessive run inside its alternative, and the last alternative is only
# reached by one whitespace character before a non-space (longer runs match the one before).
_ASCII_RE = re.compile(
    rf" ?[A-Za-z]++|'(?:[stmd]|re|ve|ll)| ?[0-9]++| ?[^{_ASCII_WS}A-Za-z0-9]++"
    rf"|[{_ASCII_WS}]+(?![^{_ASCII_WS}])|[{_ASCII_WS}]"
)
_UNICODE_RE = regex.compile(PRETOKENIZE_PATTERN)
CHUNK_CHARS = 4096
"""Target chunk length of `split_chunks`: non-ASCII text sends only its own chunks down the
slower Unicode path."""
# The stdlib's `\s` is White_Space plus \x1c-\x1f (tested), so its `\S` only ever cuts
# where the exact rule allows; it is about 25% faster than an explicit class here.
_SPLIT_RE = re.compile(r"(?<=\S)(?= )")
# Text without spaces has no `_SPLIT_RE` cuts. After an ASCII letter or digit, an ASCII character
# of another class always starts a new pre-token (no pre-token holds both, contractions end in a
# letter, and no whitespace lookahead is involved), so such a cut is exact too.
_WORD_END_RE = re.compile(r"(?<=[A-Za-z])(?=[^A-Za-z\x80-\U0010ffff])|(?<=[0-9])(?=[^0-9\x80-\U0010ffff])")


def _ranges_to_class(ranges: str) -> str:
    parts = []
    for item in ranges.split():
        lo, _, hi = item.partition("-")
        parts.append(f"\\U{int(lo, 16):08x}" + (f"-\\U{int(hi, 16):08x}" if hi else ""))
    return "".join(parts)


class _PinnedUnicode:
    """Lazily built state for non-ASCII text (about 0.15 s, paid on the first non-ASCII miss)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.exact_re: regex.Pattern[str] | None = None
        self.drift_re: regex.Pattern[str] | None = None
        self.ready = False

    def build(self) -> None:
        with self._lock:
            if self.ready:
                return
            letters = _ranges_to_class(_unicode16.LETTER_RANGES)
            numbers = _ranges_to_class(_unicode16.NUMBER_RANGES)
            ws = WHITESPACE_CLASS
            self.exact_re = regex.compile(
                rf"'s|'t|'re|'ve|'m|'ll|'d| ?[{letters}]+| ?[{numbers}]+"
                rf"| ?[^{ws}{letters}{numbers}]+|[{ws}]+(?![^{ws}])|[{ws}]+"
            )
            drift = self._drift()
            if drift:
                self.drift_re = regex.compile("[" + _ranges_to_class(_format_ranges(drift)) + "]")
            self.ready = True

    @staticmethod
    def _drift() -> list[tuple[int, int]]:
        """Code point ranges the installed `regex` classifies unlike Unicode 16.0 (L, N, \\s)."""
        every = "".join(map(chr, range(0x110000)))
        drift: list[tuple[int, int]] = []
        for pattern, pinned in (
            (r"\p{L}+", _parse_ranges(_unicode16.LETTER_RANGES)),
            (r"\p{N}+", _parse_ranges(_unicode16.NUMBER_RANGES)),
            (r"\s+", _parse_ranges(_WHITESPACE_RANGES)),
        ):
            found = [(m.start(), m.end() - 1) for m in regex.finditer(pattern, every)]
            drift += _xor_ranges(found, pinned)
        return drift


def _parse_ranges(ranges: str) -> list[tuple[int, int]]:
    out = []
    for item in ranges.split():
        lo, _, hi = item.partition("-")
        out.append((int(lo, 16), int(hi or lo, 16)))
    return out


def _xor_ranges(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Inclusive ranges covered by exactly one of two lists of disjoint inclusive ranges."""
    toggles = Counter(chain.from_iterable((lo, hi + 1) for lo, hi in chain(a, b)))
    edges = sorted(point for point, count in toggles.items() if count % 2)
    return [(edges[i], edges[i + 1] - 1) for i in range(0, len(edges), 2)]


def _format_ranges(ranges: list[tuple[int, int]]) -> str:
    return " ".join(f"{lo:x}-{hi:x}" if hi > lo else f"{lo:x}" for lo, hi in ranges)


_WHITESPACE_RANGES = "9-d 20 85 a0 1680 2000-200a 2028-2029 202f 205f 3000"


_PINNED = _PinnedUnicode()


def pretokenize(text: str) -> list[str]:
    """Splits text into GPT-2 pre-tokens (Unicode 16.0 classes, like tiktoken and HF).

    Args:
        text: Any string.

    Returns:
        The pre-tokens; they concatenate back to `text`.

    >>> pretokenize("Hello world's  end\\n")
    ['Hello', ' world', "'s", ' ', ' end', '\\n']
    """
    if text.isascii():
        return _ASCII_RE.findall(text)
    if not _PINNED.ready:
        _PINNED.build()
    if _PINNED.drift_re is not None and _PINNED.drift_re.search(text):
        return _PINNED.exact_re.findall(text)  # type: ignore[union-attr]
    return _UNICODE_RE.findall(text)


def split_pieces(text: str) -> list[str]:
    """Cuts text before each space that follows non-whitespace (see the module docstring).

    >>> split_pieces("def f(x):\\n    return x")
    ['def', ' f(x):\\n    return', ' x']
    """
    return _SPLIT_RE.split(text)


def ascii_words(text: str) -> list[str]:
    """`pretokenize` for ASCII text (not checked): the stdlib regex, no Unicode set-up.

    >>> ascii_words("it's  ok")
    ['it', "'s", ' ', ' ok']
    """
    return _ASCII_RE.findall(text)


def split_chunks(text: str, size: int = CHUNK_CHARS, *, word_ends: bool = False) -> list[str]:
    """Cuts text into chunks of about `size` characters or more, at `split_pieces` cuts.

    Each chunk pre-tokenizes as in context (see the module docstring), so a mixed text can take
    the ASCII path chunk by chunk.

    Args:
        text: Any string.
        size: Shortest chunk wanted (the last may be shorter); at least 1.
        word_ends: Cut after an ASCII letter or digit run instead, where it meets another ASCII
            class: exact as well, and found in text without spaces.

    >>> split_chunks("ab cd ef", size=1)
    ['ab', ' cd', ' ef']
    >>> split_chunks("ab,cd3é", size=1, word_ends=True)
    ['ab', ',cd', '3é']
    """
    chunks = []
    start = 0
    cut = word_end_cut if word_ends else _space_cut
    while start < len(text):
        end = cut(text, start + size)
        chunks.append(text[start:end])
        start = end
    return chunks


def _space_cut(text: str, pos: int) -> int:
    """The first `_SPLIT_RE` cut at or after `pos` (>= 1), else len(text).

    `str.find` skips ahead at memchr speed: the regex search took 31 ms to cross 1 MB of text
    without spaces. The stdlib's `\\S` is exactly `not str.isspace()` (tested).
    """
    find = text.find
    at = find(" ", pos)
    while at > 0 and text[at - 1].isspace():
        at = find(" ", at + 1)
    return len(text) if at < 0 else at


def word_end_cut(text: str, pos: int) -> int:
    """The first `split_chunks(..., word_ends=True)` cut at or after `pos` (>= 1), else len(text)."""
    found = _WORD_END_RE.search(text, pos)
    return found.start() if found else len(text)
