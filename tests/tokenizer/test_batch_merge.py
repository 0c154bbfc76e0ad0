"""The batched NumPy merge (`bpe_batch.BatchMerger`) and the batch mode of `encode_ordinary`."""

from __future__ import annotations

import base64
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpt2_tokenizer import BytePairEncoding, bpe_batch, bytes_to_unicode
from gpt2_tokenizer import bpe as bpe_module

_BASE64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_PROSE = ["the", "of", "token", "izer", "ing", "a", "aa", "aaa", "ll", "ee", "ss", "ab", ".", ",",
          "'s", "'t", "'re", "1", "42", "2024", "(", ")", ":", "-", "\"", "Return", "value"]


@pytest.fixture(scope="module")
def batched(tok, monkeypatch_module):
    # Batch mode from the first few words, small batches, and NumPy rounds down to the last word.
    monkeypatch_module.setattr(bpe_module, "_MISS_WINDOW", 4)
    monkeypatch_module.setattr(bpe_module, "_BATCH_WORDS", 64)
    monkeypatch_module.setattr(bpe_batch, "_TAIL_WORDS", 0)
    return type(tok.bpe)(tok.encoder, tok.merges, whole_word_fast_path=True)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def _merger_and_words(bpe, words):
    merger = bpe._batch_merger()
    raw = [w.encode("utf-8") for w in words]
    expected = [bpe._merge_any([bpe._byte_ids[b] for b in r]) for r in raw]
    return merger.merge_words(b"".join(raw), [len(r) for r in raw]), [tuple(e) for e in expected]


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


def test_hostile_megabyte_matches_tiktoken_and_fills_the_cache(tok, tiktoken_enc):
    bpe = type(tok.bpe)(tok.encoder, tok.merges, whole_word_fast_path=True)
    rng = random.Random(1)
    text = base64.b64encode(rng.randbytes(300_000)).decode()
    text += "".join(rng.choice(_PROSE) for _ in range(60_000)) + "x" * 3000 + " end"
    expected = tiktoken_enc.encode_ordinary(text)
    assert bpe.encode_ordinary(text) == expected
    assert len(bpe._word_cache) > 40_000 and "x" * 3000 not in bpe._word_cache
    assert bpe.encode_ordinary(text) == expected
