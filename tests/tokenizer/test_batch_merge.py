"""The batched NumPy merge (`bpe_batch.BatchMerger`) and the flat mode of `encode_ordinary`."""

from __future__ import annotations

import base64
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpt2_tokenizer import BytePairEncoding, bpe_batch, bytes_to_unicode
from gpt2_tokenizer import bpe as bpe_module

_BASE64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_PROSE = ["the", "of", "token", "izer", "ing", "a", "aa", "aaa", "ll", "ee", "ss", "ab", ".", ",",
          "'s", "'t", "'re", "1", "42", "2024", "(", ")", ":", "-", "\"", "Return", "value"]


@pytest.fixture
def batched(tok, monkeypatch):
    # Flat mode from the first few words, small batches and probes, and NumPy rounds down to
    # the last word: every text switches modes often.
    monkeypatch.setattr(bpe_module, "_WINDOW_CHARS", 8)
    monkeypatch.setattr(bpe_module, "_BATCH_CHARS", 64)
    monkeypatch.setattr(bpe_module, "_PROBE_CHARS", 4)
    monkeypatch.setattr(bpe_batch, "_TAIL_WORDS", 0)
    return type(tok.bpe)(tok.encoder, tok.merges, whole_word_fast_path=True)


def _merger_and_words(bpe, words):
    """The flat merge of the words, and the per-word merge of each, laid end to end."""
    merger = bpe._batch_merger()
    raw = [w.encode("utf-8") for w in words]
    expected = [i for r in raw for i in bpe._merge_any([bpe._byte_ids[b] for b in r])]
    got = merger.encode(b"".join(raw), np.array([len(r) for r in raw], np.intp))
    assert got.dtype == np.int32
    return got.tolist(), expected


def test_gpt2_merges_rank_after_their_parts(tok):
    assert bpe_batch.BatchMerger.applies(tok.bpe._pair_ids, 20)
    assert tok.bpe._batch_merger() is not None


def test_merges_ranked_before_their_parts_keep_the_per_word_path():
    base = {c: i for i, c in enumerate(bytes_to_unicode().values())}
    encoder = {**base, "abc": 256, "ab": 257}
    bpe = BytePairEncoding(encoder, [("ab", "c"), ("a", "b")], whole_word_fast_path=False)
    assert not bpe_batch.BatchMerger.applies(bpe._pair_ids, 20)
    assert bpe._batch_merger() is None
    assert bpe.encode_ordinary("abc" * 5000) == [256] * 5000  # Long chunk, batch mode refused.


def test_batched_merge_follows_ranks_when_merged_ids_do_not_rise(monkeypatch):
    # Pair values are rank << 32 | id here: the merger ranks by value, not by merged id.
    monkeypatch.setattr(bpe_batch, "_TAIL_WORDS", 0)
    base = {c: i for i, c in enumerate(bytes_to_unicode().values())}
    encoder = {**base, "bc": 300, "ab": 299, "abc": 298}
    bpe = BytePairEncoding(encoder, [("b", "c"), ("a", "b"), ("a", "bc")], whole_word_fast_path=False)
    got, expected = _merger_and_words(bpe, ["abc", "ab", "abcab", "cab", "bcbc", "aabcc"])
    assert got == expected


def test_batched_merge_equals_the_per_word_merge(tok, monkeypatch):
    monkeypatch.setattr(bpe_batch, "_TAIL_WORDS", 0)
    words = ["a", "ab", "aaa", "aaaa", "a" * 97, "ab" * 40, "Ġthe", "Ġtokenizer", "1234567890",
             "ðŁĺĢ", "😀😀😀", "中文字符", "é" * 30, "x" * 300, "\x00\x01", "ll" * 9 + "l"]
    got, expected = _merger_and_words(tok.bpe, words)
    assert got == expected


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.text(st.sampled_from(_BASE64), min_size=1, max_size=60),
                          st.text(st.sampled_from("aelst"), min_size=1, max_size=40),
                          st.text(min_size=1, max_size=12).filter(lambda t: t.encode("utf-8", "ignore") == t.encode("utf-8", "surrogatepass")),
                          st.binary(min_size=1, max_size=20).map(lambda b: b.decode("latin-1"))),
                min_size=1, max_size=40))
def test_property_batched_merge_equals_the_per_word_merge(tok, words):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bpe_batch, "_TAIL_WORDS", 0)
        got, expected = _merger_and_words(tok.bpe, words)
    assert got == expected


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.one_of(
    st.text(st.sampled_from(_BASE64), min_size=1, max_size=4000),
    st.lists(st.sampled_from(_PROSE), min_size=1, max_size=800).map("".join),
    st.lists(st.one_of(st.sampled_from(_PROSE), st.sampled_from(["é", "中", "😀", "٣", "\u3000"])),
             min_size=1, max_size=300).map("".join),
    st.text(st.sampled_from("0123456789"), min_size=1, max_size=500),
    st.lists(st.text(st.sampled_from("abcxyz.1"), min_size=1, max_size=3), max_size=500).map("".join),
    st.text(st.characters(max_codepoint=127), min_size=1, max_size=2000),
))
def test_property_batch_mode_matches_tiktoken(batched, tiktoken_enc, text):
    batched.clear_cache()
    assert batched.encode_ordinary(text) == tiktoken_enc.encode_ordinary(text)
    assert batched.encode_ordinary(text) == tiktoken_enc.encode_ordinary(text)  # Warm.


def test_hostile_megabyte_matches_tiktoken_in_flat_mode(tok, tiktoken_enc):
    bpe = type(tok.bpe)(tok.encoder, tok.merges, whole_word_fast_path=True)
    rng = random.Random(1)
    text = base64.b64encode(rng.randbytes(300_000)).decode()
    text += "".join(rng.choice(_PROSE) for _ in range(60_000)) + "x" * 3000 + " end"
    expected = tiktoken_enc.encode_ordinary(text)
    assert bpe.encode_ordinary(text) == expected
    assert len(bpe._word_cache) < 15_000  # Flat mode kept the base64 words (~40,000) out.
    assert bpe.encode_ordinary(text) == expected  # The same with what the caches kept.


def test_flat_mode_leaves_for_text_whose_words_the_cache_holds(tok, tiktoken_enc, monkeypatch):
    monkeypatch.setattr(bpe_module, "_BATCH_CHARS", 16_384)
    bpe = type(tok.bpe)(tok.encoder, tok.merges, whole_word_fast_path=True)
    ordinary = "".join(f" the value of item {i} is returned to the caller." for i in range(4000))
    hostile = base64.b64encode(random.Random(3).randbytes(150_000)).decode()
    bpe.encode_ordinary(ordinary)
    flat_chars = []
    encode_flat = bpe._encode_flat
    monkeypatch.setattr(bpe, "_encode_flat",
                        lambda chunks, extend: (flat_chars.append(sum(map(len, chunks))), encode_flat(chunks, extend)))
    text = hostile + ordinary + hostile
    assert bpe.encode_ordinary(text) == tiktoken_enc.encode_ordinary(text)
    # Each hostile part but its first window (8192 characters) went flat; the ordinary did not.
    assert 2 * len(hostile) - 40_000 < sum(flat_chars) < 2 * len(hostile) + 40_000 < len(text)


def test_flat_mode_is_entered_only_where_the_cache_misses(tok, monkeypatch):
    bpe = type(tok.bpe)(tok.encoder, tok.merges, whole_word_fast_path=True)
    calls = []
    monkeypatch.setattr(bpe, "_encode_flat", lambda chunks, extend: calls.append(chunks))
    bpe.encode_ordinary("def f(x):\n    return x + 1\n" * 20_000)
    assert not calls
    bpe.encode_ordinary(base64.b64encode(random.Random(2).randbytes(100_000)).decode())
    assert calls and sum(map(len, calls[0])) > 50_000


@pytest.mark.parametrize("seed", range(4))
def test_space_free_text_with_unicode_matches_tiktoken(tok, tiktoken_enc, seed):
    # Spaceless ASCII with scattered non-ASCII words: the non-ASCII chunks join the flat
    # batches (pre-tokenized by `pretokenize`, lengths in UTF-8 bytes).
    bpe = type(tok.bpe)(tok.encoder, tok.merges, whole_word_fast_path=True)
    rng = random.Random(seed)
    parts = [*_PROSE, "é", "ü", "中文", "😀", "\u3000", "٣٤", "ﬁ", "Ω", "\xa0", "\n", "\t", "x" * 70,
             "=" * 20, "aaaa", "é" * 40]
    text = "".join(rng.choice(parts) if rng.random() < 0.9 else rng.choice(_BASE64) * 9
                   for _ in range(120_000))
    assert bpe.encode_ordinary(text) == tiktoken_enc.encode_ordinary(text)


@pytest.mark.parametrize("seed", range(3))
def test_random_base64_matches_tiktoken(tok, tiktoken_enc, seed):
    bpe = type(tok.bpe)(tok.encoder, tok.merges, whole_word_fast_path=True)
    text = base64.b64encode(random.Random(10 + seed).randbytes(400_000)).decode()
    text = text[: 200_000] + "\n".join(text[200_000 + i:200_000 + i + 76] for i in range(0, 300_000, 76))
    assert bpe.encode_ordinary(text) == tiktoken_enc.encode_ordinary(text)
