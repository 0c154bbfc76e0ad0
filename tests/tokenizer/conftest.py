"""Shared fixtures: our tokenizer, the two oracles built offline, a corpus and hard strings."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import pytest

from gpt2_tokenizer import GPT2Tokenizer, bytes_to_unicode
from gpt2_tokenizer.files import ASSETS_DIR, load_bundled_vocab

ORIGINAL_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

# Every White_Space character, the C0 separators Python calls spaces but GPT-2 does not, and
# look-alikes that are not whitespace at all (ZWSP, ZWNJ, ZWJ, word joiner, BOM).
WHITESPACE_KINDS = [chr(c) for c in (*range(9, 14), 32, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B),
                                     0x2028, 0x2029, 0x202F, 0x205F, 0x3000)]
NOT_WHITESPACE = ["\x1c", "\x1d", "\x1e", "\x1f", "\u200b", "\u200c", "\u200d", "\u2060", "\ufeff"]


def adversarial_strings() -> list[str]:
    """Hand-made hard cases, one list shared by the oracle and offset tests."""
    ws = WHITESPACE_KINDS + NOT_WHITESPACE
    out = ["", " ", "  ", "\n", "Hello world", " Hello world", "\r\n", "a\r\nb\r\n\r\n  c",
           "\x00", "a\x00b\x00\x00 \x00", "".join(map(chr, range(32))) + "\x7f",
           "it's I'M they'LL we've you'd 'S 's's ''s '", "x'sy 'll'll '  's",
           "e\u0301 e\u0301\u0301\u0301 \u0301x", "Z\u0351\u036b\u0343\u036a\u0302\u036b",
           "👨‍👩‍👧‍👦 family 🏳️‍🌈 flag 👍🏽 ok ❤️", "🤖🤖🤖 🇯🇵🇫🇷",
           "中文字符测试 日本語のテキスト 한국어 텍스트", "漢字かなカナ123",
           "مرحبا بالعالم 123 ٤٥٦", "שלום עולם", "\u202eRTL override\u202c",
           "٠١٢٣٤٥٦٧٨٩ ०१२३ ０１２３ ⅫⅣ ½¾ ²³ 𝟘𝟙𝟚", "x²+y³=z⁴ 10⁻³",
           "def f(x):\n    return x  # comment\n\n\n\tpass\n", "<|endoftext|>",
           "a<|endoftext|>b", "<|endoftext", "\ufffd\ufffe\uffff", "\U0010ffff\U000e0001",
           "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝓂𝒶𝓉𝒽", "Ⅷ ㊿ ⓵", "\u058b\u0c5c\ua7ce new in Unicode 16/17",
           "a" * 5000, " " + "b" * 5000, "7" * 5000, "." * 5000, "😀" * 2000, "中" * 5000,
           " " * 5000, "\n" * 5000, " \n" * 2500, "\t" * 4999 + "x", " " * 5000 + "end",
           "x" + "\u0301" * 3000, "ab" * 2500, "é" * 5000]
    for w in ws:
        for run in (w, w * 2, w * 3 + " ", " " + w * 2, w + "\n" + w):
            out += [f"a{run}b", f"{run}x", f"x{run}", f"1{run}2", f".{run}!", run,
                    f"x{run} y", f"'s{run}'t"]
    for a in ws:
        out.append(f"p{a} {a}q{a}{a}r {a}")
    return out


def build_tiktoken():
    """tiktoken's `Encoding` from the bundled ranks and the original GPT-2 regex (offline)."""
    tiktoken = pytest.importorskip("tiktoken")
    encoder, _ = load_bundled_vocab()
    byte_of = {c: b for b, c in bytes_to_unicode().items()}
    ranks = {bytes(byte_of[c] for c in token): i for token, i in encoder.items() if i != 50256}
    return tiktoken.Encoding(name="gpt2_bundled", pat_str=ORIGINAL_PATTERN,
                             mergeable_ranks=ranks, special_tokens={"<|endoftext|>": 50256})


def build_hf_tokenizers():
    """HF `tokenizers` BPE from the bundled files, ByteLevel with add_prefix_space=False."""
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import decoders, models, pre_tokenizers

    tok = tokenizers.Tokenizer(models.BPE.from_file(str(ASSETS_DIR / "vocab.json"),
                                                    str(ASSETS_DIR / "merges.txt")))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def stdlib_corpus(limit_chars: int) -> str:
    """Python sources and docs found on this machine, decoded as UTF-8, up to a size."""
    parts, size = [], 0
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(Path("/usr/share/doc").glob("*/copyright"))[:150]
    files += sorted(stdlib.glob("*.py")) + sorted(stdlib.glob("email/*.py"))
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        parts.append(text)
        size += len(text)
        if size >= limit_chars:
            break
    return "".join(parts)


@pytest.fixture(scope="session")
def tok() -> GPT2Tokenizer:
    return GPT2Tokenizer.from_pretrained()


@pytest.fixture(scope="session")
def tiktoken_enc():
    return build_tiktoken()


@pytest.fixture(scope="session")
def hf_tokenizers():
    return build_hf_tokenizers()


@pytest.fixture(scope="session")
def hf_fast():
    """transformers' GPT2TokenizerFast loaded from the bundled files (offline)."""
    transformers = pytest.importorskip("transformers")
    return transformers.GPT2TokenizerFast.from_pretrained(str(ASSETS_DIR))


@pytest.fixture(scope="session")
def corpus() -> str:
    return stdlib_corpus(600_000)
