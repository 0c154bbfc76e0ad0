"""Token ids equal tiktoken's and Hugging Face `tokenizers`' on a corpus and hard strings."""

from __future__ import annotations

import pytest
from conftest import adversarial_strings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpt2_tokenizer import bytes_to_unicode, pretokenize
from gpt2_tokenizer.pretokenizer import split_pieces

ADVERSARIAL = adversarial_strings()


def _first_difference(ours: list[int], theirs: list[int]) -> str:
    i = next((k for k, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours),
                                                                            len(theirs)))
    return f"first difference at id index {i}: ours {ours[i:i + 5]} vs {theirs[i:i + 5]}"


def test_reference_ids(tok):
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.encode(" Hello world") == [18435, 995]


def test_corpus_matches_tiktoken_and_hf(tok, tiktoken_enc, hf_tokenizers, corpus):
    # Line-sized documents plus the whole corpus at once: both paths through the caches.
    docs = corpus.splitlines(keepends=True)[:3000] + [corpus]
    ours = [tok.encode_ordinary(d) for d in docs]
    assert ours == tiktoken_enc.encode_ordinary_batch(docs, num_threads=1)
    hf = [e.ids for e in hf_tokenizers.encode_batch(docs, add_special_tokens=False)]
    for i, (a, b) in enumerate(zip(ours, hf)):
        assert a == b, f"doc {i} {docs[i][:40]!r}: {_first_difference(a, b)}"


@pytest.mark.parametrize("index", range(0, len(ADVERSARIAL), 40))
def test_adversarial_match_both_oracles(tok, tiktoken_enc, hf_tokenizers, index):
    for text in ADVERSARIAL[index:index + 40]:
        ours = tok.encode_ordinary(text)
        assert ours == tiktoken_enc.encode_ordinary(text), f"tiktoken differs on {text[:30]!r}"
        hf = hf_tokenizers.encode(text, add_special_tokens=False).ids
        assert ours == hf, f"HF differs on {text[:30]!r}: {_first_difference(ours, hf)}"
        assert tok.decode(ours) == text


def test_every_code_point_pretokenized_like_hf(hf_tokenizers):
    # Catches Unicode-version drift: the `regex` module may know newer characters than the
    # Unicode 16.0 the oracles use. Compares pre-tokens (HF's ByteLevel pre-tokenizer is the
    # oracle; BPE on top is covered above), one text per plane to keep failures local.
    table = {b: ord(c) for b, c in bytes_to_unicode().items()}
    template = "x{c}1{c}.{c} {c}\n"
    for start in range(0, 0x110000, 0x10000):
        # Planes 4-13, 15, 16 hold no letters or numbers in any version yet: sample them.
        step = 1 if start >> 16 in (0, 1, 2, 3, 14) else 257
        chars = (chr(c) for c in range(start, start + 0x10000, step) if not 0xD800 <= c <= 0xDFFF)
        text = "|".join(template.format(c=c) for c in chars)
        ours = [p.encode("utf-8").decode("latin-1").translate(table)
                for piece in split_pieces(text) for p in pretokenize(piece)]
        theirs = [p for p, _ in hf_tokenizers.pre_tokenizer.pre_tokenize_str(text)]
        first = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), None)
        assert ours == theirs, f"plane {start >> 16}, pre-token {first}: " + (
            f"{ours[first:first + 3]} vs {theirs[first:first + 3]}" if first is not None
            else f"lengths {len(ours)} vs {len(theirs)}")


def test_cached_encoding_equals_fresh_encoding(tok, tiktoken_enc):
    # Same pieces in different contexts must not pick up a wrong cached answer.
    texts = ["a  b", "a \nb", "a\n\n  b", " \t x", "x \t  y", "end  ", "end \n", "x"]
    joined = "".join(texts * 3)
    for text in [*texts, joined]:
        assert tok.encode_ordinary(text) == tiktoken_enc.encode_ordinary(text)


_INTERESTING = st.sampled_from(
    [" ", "  ", "\n", "\r\n", "\t", "\u3000", "\xa0", "\x1c", "\u200b", "'", "'s", "'ll", "a",
     "Z", "é", "e\u0301", "1", "٣", "½", ".", "!?", "中", "😀", "\u200d", "🏽", "\x00", "-", "_"]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(
    st.lists(_INTERESTING, max_size=30).map("".join),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=60),
))
def test_property_round_trip_and_oracles(tok, tiktoken_enc, hf_tokenizers, text):
    ours = tok.encode_ordinary(text)
    assert tok.decode(ours) == text
    assert tok.decode_bytes(ours) == text.encode("utf-8")
    assert "".join(pretokenize(text)) == text
    assert ours == tiktoken_enc.encode_ordinary(text)
    assert ours == hf_tokenizers.encode(text, add_special_tokens=False).ids


@pytest.fixture(scope="module")
def tiny_cache_bpe(tok):
    # A bound of 8 entries: most calls overflow it, so the caches clear mid-call often.
    return type(tok.bpe)(tok.encoder, tok.merges, whole_word_fast_path=True, max_cache_entries=8)


def test_fresh_caches_on_joined_hard_strings_match_tiktoken(tok, tiktoken_enc):
    # The hard strings joined in several ways put every kind of cached piece next to every
    # other, starting from empty caches.
    fresh = type(tok.bpe)(tok.encoder, tok.merges, whole_word_fast_path=True)
    long_piece = "x" * 300 + "\n" + "é" * 300  # Longer than the cache keeps.
    for text in (" ".join(ADVERSARIAL), "".join(ADVERSARIAL), "\n".join(ADVERSARIAL),
                 " ".join(ADVERSARIAL[::-1]), f"a {long_piece} b {long_piece}"):
        assert fresh.encode_ordinary(text) == tiktoken_enc.encode_ordinary(text)
    assert all(len(f) <= 256 for f in fresh._piece_cache)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(
    st.lists(_INTERESTING, max_size=12).map("".join),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=20),
), max_size=12).map(" ".join))
def test_property_small_cache_matches_tiktoken(tiny_cache_bpe, tiktoken_enc, text):
    assert tiny_cache_bpe.encode_ordinary(text) == tiktoken_enc.encode_ordinary(text)
    assert len(tiny_cache_bpe._piece_cache) <= 8
