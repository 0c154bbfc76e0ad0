"""Each encoding path on its own: ASCII words, chunks of mixed text, id merges, string merges."""

from __future__ import annotations

import re

import pytest
import regex
from conftest import NOT_WHITESPACE, WHITESPACE_KINDS, adversarial_strings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpt2_tokenizer import PRETOKENIZE_PATTERN, BytePairEncoding, GPT2Tokenizer, bytes_to_unicode
from gpt2_tokenizer import bpe as bpe_module
from gpt2_tokenizer import pretokenizer as pre

_BYTE_OF = {c: b for b, c in bytes_to_unicode().items()}

_ASCII_PARTS = st.sampled_from(
    [" ", "  ", "   ", "\n", "\r\n", "\t", "\x0b", "\x0c", "\x1c", "\x00", "'", "'s", "'t", "'re",
     "'ve", "'m", "'ll", "'d", "'S", "a", "Zq", "1", "42", ".", "!?", "-", "_", "x'sy", "\x7f"]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.lists(_ASCII_PARTS, max_size=40).map("".join),
                 st.text(st.characters(max_codepoint=127), max_size=80)))
def test_reordered_ascii_regex_splits_like_the_original_pattern(text):
    # The ASCII regex reorders the alternatives and makes runs possessive for speed.
    assert pre.ascii_words(text) == regex.findall(PRETOKENIZE_PATTERN, text)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(_ASCII_PARTS, st.sampled_from(["é", "中", "\u3000", "\xa0", "😀"])),
                max_size=40).map("".join),
       st.integers(min_value=1, max_value=8))
def test_chunks_pretokenize_as_in_context(text, size):
    chunks = pre.split_chunks(text, size=size)
    assert "".join(chunks) == text and "" not in chunks
    assert [w for c in chunks for w in pre.pretokenize(c)] == pre.pretokenize(text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(_ASCII_PARTS, st.sampled_from(WHITESPACE_KINDS + NOT_WHITESPACE + ["é", "中"])),
                max_size=40).map("".join),
       st.integers(min_value=1, max_value=8))
def test_space_cuts_found_by_str_find_are_the_regex_cuts(text, size):
    # `split_chunks` looks for its cuts with str.find and str.isspace instead of `_SPLIT_RE`.
    cuts = []
    start = 0
    while start < len(text):
        found = pre._SPLIT_RE.search(text, start + size)
        end = found.start() if found else len(text)
        cuts.append(text[start:end])
        start = end
    assert pre.split_chunks(text, size=size) == cuts


def test_chunks_are_cut_only_before_a_space_after_non_space():
    # Not after whitespace ("\n ", "\u3000 "), where the space may join the run before it.
    assert pre.split_chunks("ab  cd\n ef\u3000 g h", size=1) == ["ab", "  cd\n ef\u3000 g", " h"]
    assert pre.split_chunks("", size=1) == [] and pre.split_chunks("x" * 10, size=3) == ["x" * 10]


@pytest.fixture(scope="module")
def small_chunks(monkeypatch_module):
    # Chunks of ~16 characters, non-ASCII ones cut again at ~4: every mixed text alternates
    # ASCII and Unicode chunks at both levels.
    monkeypatch_module.setattr(pre.split_chunks, "__defaults__", (16,))
    monkeypatch_module.setattr(bpe_module, "_FINE_CHUNK_CHARS", 4)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_mixed_text_in_small_chunks_matches_tiktoken(small_chunks, tok, tiktoken_enc):
    fresh = type(tok.bpe)(tok.encoder, tok.merges, whole_word_fast_path=True)
    hard = adversarial_strings()
    for text in (" ".join(hard), "\n".join(hard[::-1]), "héllo wörld " * 20 + "plain ascii " * 20):
        assert fresh.encode_ordinary(text) == tiktoken_enc.encode_ordinary(text)
    assert len(pre.split_chunks(" ".join(hard))) > 100


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(_ASCII_PARTS, st.sampled_from(["é", "中", "\u3000", "\xa0", "😀", "٣"]),
                          st.text(st.characters(exclude_categories=("Cs",)), max_size=5)),
                max_size=60).map("".join))
def test_property_small_chunks_match_tiktoken(small_chunks, small_cache, tiktoken_enc, text):
    assert small_cache.encode_ordinary(text) == tiktoken_enc.encode_ordinary(text)


@pytest.fixture(scope="module")
def small_cache(tok):
    # 16 entries: the caches clear often, so most words are encoded afresh.
    return type(tok.bpe)(tok.encoder, tok.merges, whole_word_fast_path=True, max_cache_entries=16)


def test_id_merge_equals_string_merge_for_every_length(tok):
    # Short words take the id loop, words over 48 bytes the id heap; both equal `merge`.
    bpe = tok.bpe
    words = ["ab", "Ġthe", "Ġtokenizer", "Ġuncharacteristically", "ĠĠĠĠĠĠĠ", "1234567890",
             "ðŁĺĢðŁĺĢ", "Ġ" + "ab" * 23, "Ġ" + "ab" * 24, "a" * 97]
    for word in words:
        expected = [tok.encoder[s] for s in bpe.merge(word)]
        raw = bytes(_BYTE_OF[c] for c in word)
        assert bpe._merge_ids([bpe._byte_ids[b] for b in raw]) == expected, word
        assert bpe._merge_ids_heap([bpe._byte_ids[b] for b in raw]) == expected, word
        assert list(bpe._encode_word(raw.decode("utf-8"))) == expected, word


def test_merged_ids_out_of_rank_order_keep_rank_order():
    # Merged ids that do not rise with rank: the pair table stores rank << 32 | id instead.
    base = {c: i for i, c in enumerate(bytes_to_unicode().values())}
    encoder = {**base, "bc": 300, "ab": 299, "abc": 298}
    merges = [("b", "c"), ("a", "b"), ("a", "bc")]
    bpe = BytePairEncoding(encoder, merges, whole_word_fast_path=False)
    assert bpe._pair_ids[base["b"] << 20 | base["c"]] == 0 << 32 | 300
    for text, expected in (("abc", [298]), ("ab", [299]), ("abcab", [298, 299]), ("cab", [base["c"], 299])):
        assert bpe.encode_ordinary(text) == expected, text
        assert bpe.merge(text) == [s for i in expected for s, j in encoder.items() if i == j]


def test_whole_word_fast_path_skips_non_byte_tokens():
    # A token spelled with characters outside the byte table must not shadow real bytes.
    base = {c: i for i, c in enumerate(bytes_to_unicode().values())}
    encoder = {**base, "ab": 256, "[CLS]x": 257, "中": 258}
    bpe = BytePairEncoding(encoder, [("a", "b")], whole_word_fast_path=True)
    assert bpe.encode_ordinary("ab") == [256]
    assert bpe.encode_ordinary("中") == [base[c] for c in "ä¸Ń"]


def test_vocabulary_without_every_byte_uses_the_string_merge():
    encoder = {"a": 0, "b": 1, "ab": 2, "Ġ": 3, "Ġab": 4}
    bpe = BytePairEncoding(encoder, [("a", "b"), ("Ġ", "ab")], whole_word_fast_path=False)
    assert bpe._byte_ids is None
    assert bpe.encode_ordinary("ab abab") == [2, 4, 2]
    with pytest.raises(KeyError):
        bpe.encode_ordinary("c")


def test_word_cache_keeps_short_words_only():
    tok = GPT2Tokenizer.from_pretrained()
    text = "x" * 300 + " short"
    assert tok.encode_ordinary(text) == tok.encode_ordinary(text)
    assert " short" in tok.bpe._word_cache and "x" * 300 not in tok.bpe._word_cache
    assert re.fullmatch(r"[\x00-\x7f]*", text)  # The ASCII path, no chunks.


def test_workers_start_with_the_parent_caches_and_return_compact_arrays():
    from gpt2_tokenizer import tokenizer as tokenizer_module

    parent = GPT2Tokenizer.from_pretrained()
    texts = ["Hello world", "", "héllo 😀", "x" * 300, " 50256 <|endoftext"]
    expected = [parent.encode(t) for t in texts]
    worker = GPT2Tokenizer.from_pretrained()
    tokenizer_module._worker_init(worker, parent.bpe.cache_contents())
    try:
        assert dict(worker.bpe._word_cache) == dict(parent.bpe._word_cache)
        assert dict(worker.bpe._piece_cache) == dict(parent.bpe._piece_cache)
        ids, lengths = tokenizer_module._worker_encode(texts, parent._special_policy((), "all"))
    finally:
        tokenizer_module._WORKER = None
    assert ids.itemsize >= 4 and list(lengths) == [len(e) for e in expected]
    assert ids.tolist() == [i for e in expected for i in e]


def test_filled_caches_stay_bounded():
    tok = GPT2Tokenizer.from_pretrained()
    small = BytePairEncoding(tok.encoder, tok.merges, whole_word_fast_path=True, max_cache_entries=5)
    words = {f" w{i}": (i,) for i in range(4)}
    small.fill_caches(words, {})
    small.fill_caches(words, {})  # 4 + 4 > 5: cleared, then filled again.
    assert len(small._word_cache) == 4
    small.fill_caches({f" v{i}": (i,) for i in range(3)}, {})  # 4 + 3 > 5: cleared first.
    assert len(small._word_cache) == 3


@pytest.mark.parametrize("where", ["first", "last"])
def test_parallel_batch_raises_from_either_process(monkeypatch, where):
    # The pool takes chunks from the front and the calling process from the back: a
    # disallowed special token must raise wherever its chunk is encoded.
    from gpt2_tokenizer import tokenizer as tokenizer_module

    monkeypatch.setattr(tokenizer_module, "_PARALLEL_MIN_CHARS", 0)
    tok = GPT2Tokenizer.from_pretrained()
    texts = [f"text {i}" for i in range(64)]
    texts[0 if where == "first" else -1] = "<|endoftext|>"
    try:
        with pytest.raises(ValueError, match=r"disallowed special token '<\|endoftext\|>'"):
            tok.encode_batch(texts, num_threads=2)
        texts[0 if where == "first" else -1] = "fine"
        assert tok.encode_batch(texts, num_threads=2) == [tok.encode(t) for t in texts]
    finally:
        tok.close()


_BASE64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(
    st.text(st.sampled_from(_BASE64), min_size=40, max_size=3000),
    st.text(st.sampled_from("etaoinshrdlucmfwypvbgkqjxz"), min_size=40, max_size=3000),
    st.lists(st.sampled_from(["the", "of", "token", "izer", "ing", "a", "aa", "é", ".", "'s", "1"]),
             min_size=10, max_size=600).map("".join),
))
def test_property_long_space_free_text_matches_tiktoken(small_cache, tiktoken_enc, text):
    # Long pre-tokens take the heap merge and text without spaces the word-end chunk cuts.
    assert small_cache.encode_ordinary(text) == tiktoken_enc.encode_ordinary(text)


def test_space_free_text_with_a_few_non_ascii_chars_stays_mostly_ascii():
    text = ("Eachlineisoftheform:FeatureName" * 200 + "é") * 5
    chunks = list(bpe_module._ascii_and_other_chunks(text))
    assert "".join(chunks) == text and max(map(len, chunks)) < 1000
    assert sum(map(len, filter(str.isascii, chunks))) > 0.9 * len(text)
