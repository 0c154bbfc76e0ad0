"""tiktoken's API on `GPT2Tokenizer`: tiktoken's own public tests, run against our tokenizer,
and each method checked against `tiktoken.Encoding` built offline from the same vocabulary.

The first part ports the cases of openai/tiktoken `tests/test_encoding.py`, `test_offsets.py`,
`test_pickle.py` and `test_simple_public.py` (release 0.14.0) that use GPT-2's encoding
(`gpt2` / `r50k_base`), with tiktoken's assertions unchanged. The adapter is `make_enc`: our
tokenizer answers tiktoken's method names itself. Left out: `test_hyp_encode_bytes` and
`test_encode_bytes` (they call the private `_encode_bytes`, which encodes bytes that are not
UTF-8; ours takes text only), and the cases for other encodings (cl100k_base, o200k_base),
except `test_special_token` and the offsets cases, whose checks are re-run on GPT-2's vocabulary.
"""

from __future__ import annotations

import pickle

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest
import tiktoken  # noqa: F401  (the oracle below is built with it)
from conftest import adversarial_strings, build_tiktoken

from gpt2_tokenizer import GPT2Tokenizer

MAX_EXAMPLES = 100  # tiktoken's default (TIKTOKEN_MAX_EXAMPLES)
EOT = "<|endoftext|>"


def make_enc() -> GPT2Tokenizer:
    """The adapter: our tokenizer stands where tiktoken's tests call `get_encoding("gpt2")`."""
    return GPT2Tokenizer.from_pretrained()


_ENC = make_enc()  # hypothesis runs a test body many times; build the tokenizer once


# ------------------------------------------------------------------ tiktoken's own tests
def test_simple():
    enc = _ENC
    assert enc.encode("hello world") == [31373, 995]
    assert enc.decode([31373, 995]) == "hello world"
    assert enc.encode("hello <|endoftext|>", allowed_special="all") == [31373, 220, 50256]
    for token in range(min(10_000, enc.max_token_value - 1)):
        assert enc.encode_single_token(enc.decode_single_token_bytes(token)) == token


def test_simple_repeated():
    enc = _ENC
    assert enc.encode("0") == [15]
    assert enc.encode("00") == [405]
    assert enc.encode("000") == [830]
    assert enc.encode("0000") == [2388]
    assert enc.encode("00000") == [20483]
    assert enc.encode("000000") == [10535]
    assert enc.encode("0000000") == [24598]
    assert enc.encode("00000000") == [8269]
    assert enc.encode("000000000") == [10535, 830]
    assert enc.encode("0000000000") == [8269, 405]
    assert enc.encode("00000000000") == [8269, 830]
    assert enc.encode("000000000000") == [8269, 2388]
    assert enc.encode("0000000000000") == [8269, 20483]
    assert enc.encode("00000000000000") == [8269, 10535]
    assert enc.encode("000000000000000") == [8269, 24598]
    assert enc.encode("0000000000000000") == [25645]
    assert enc.encode("00000000000000000") == [8269, 10535, 830]


def test_basic_encode_and_empty():
    assert _ENC.encode("hello world") == [31373, 995]
    assert _ENC.encode("") == []


def test_catastrophically_repetitive():
    enc = _ENC
    for c in ["^", "0", "a", "'s", " ", "\n"]:
        big_value = c * 10_000
        assert big_value == enc.decode(enc.encode(big_value))

        big_value = " " + big_value
        assert big_value == enc.decode(enc.encode(big_value))

        big_value = big_value + "\n"
        assert big_value == enc.decode(enc.encode(big_value))


def test_basic_roundtrip():
    enc = _ENC
    for value in ("hello", "hello ", "hello  ", " hello", " hello ", " hello  ", "hello world",
                  "请考试我的软件！12345"):
        assert value == enc.decode(enc.encode(value))
        assert value == enc.decode(enc.encode_ordinary(value))


# Hypothesis also draws string constants found in the code under test, '<|endoftext|>' among
# them, which `encode` refuses by default (tiktoken's too): such texts are left to the test below.
@hypothesis.given(text=st.text().filter(lambda t: EOT not in t))
@hypothesis.settings(deadline=None, max_examples=MAX_EXAMPLES)
def test_hyp_roundtrip(text):
    assert text == _ENC.decode(_ENC.encode(text))


def test_roundtrip_refuses_special_text_as_tiktoken(oracle):
    for enc in (_ENC, oracle):
        with pytest.raises(ValueError, match="disallowed special token"):
            enc.encode("a" + EOT)


def test_single_token_roundtrip():
    enc = _ENC
    for token in range(enc.n_vocab):
        try:
            token_bytes = enc.decode_single_token_bytes(token)
        except KeyError:
            continue
        assert enc.encode_single_token(token_bytes) == token


def test_special_token():
    """tiktoken's case for cl100k_base, whose FIM tokens GPT-2 gets with `add_special_tokens`."""
    enc = make_enc()
    enc.add_special_tokens({"additional_special_tokens": ["<|fim_prefix|>", "<|fim_middle|>"]})

    eot = enc.encode_single_token("<|endoftext|>")
    assert eot == enc.eot_token
    fip = enc.encode_single_token("<|fim_prefix|>")
    fim = enc.encode_single_token("<|fim_middle|>")

    text = "<|endoftext|> hello <|fim_prefix|>"
    assert eot not in enc.encode(text, disallowed_special=())
    with pytest.raises(ValueError):
        enc.encode(text)
    with pytest.raises(ValueError):
        enc.encode(text, disallowed_special="all")
    with pytest.raises(ValueError):
        enc.encode(text, disallowed_special={"<|endoftext|>"})
    with pytest.raises(ValueError):
        enc.encode(text, disallowed_special={"<|fim_prefix|>"})

    text = "<|endoftext|> hello <|fim_prefix|> there <|fim_middle|>"
    tokens = enc.encode(text, disallowed_special=())
    assert eot not in tokens
    assert fip not in tokens
    assert fim not in tokens

    tokens = enc.encode(text, allowed_special="all", disallowed_special=())
    assert eot in tokens
    assert fip in tokens
    assert fim in tokens

    tokens = enc.encode(text, allowed_special="all", disallowed_special="all")
    assert eot in tokens
    assert fip in tokens
    assert fim in tokens

    tokens = enc.encode(text, allowed_special={"<|fim_prefix|>"}, disallowed_special=())
    assert eot not in tokens
    assert fip in tokens
    assert fim not in tokens

    tokens = enc.encode(text, allowed_special={"<|endoftext|>"}, disallowed_special=())
    assert eot in tokens
    assert fip not in tokens
    assert fim not in tokens

    tokens = enc.encode(text, allowed_special={"<|fim_middle|>"}, disallowed_special=())
    assert eot not in tokens
    assert fip not in tokens
    assert fim in tokens


@hypothesis.given(text=st.text())
@hypothesis.settings(deadline=None, max_examples=MAX_EXAMPLES)
def test_hyp_special_ordinary(text):
    assert _ENC.encode_ordinary(text) == _ENC.encode(text, disallowed_special=())


def test_batch_encode():
    enc = _ENC
    text1 = "hello world"
    text2 = "goodbye world"

    assert enc.encode_batch([text1]) == [enc.encode(text1)]
    assert enc.encode_batch([text1, text2]) == [enc.encode(text1), enc.encode(text2)]

    assert enc.encode_ordinary_batch([text1]) == [enc.encode_ordinary(text1)]
    assert enc.encode_ordinary_batch([text1, text2]) == [
        enc.encode_ordinary(text1),
        enc.encode_ordinary(text2),
    ]


@hypothesis.given(batch=st.lists(st.text()))
@hypothesis.settings(deadline=None, max_examples=MAX_EXAMPLES)
def test_hyp_batch_roundtrip(batch):
    enc = _ENC
    encoded = enc.encode_batch(batch, allowed_special="all")
    assert encoded == [enc.encode(t, allowed_special="all") for t in batch]
    decoded = enc.decode_batch(encoded)
    assert decoded == batch


def _common_prefix_len(a, b):
    i = 0
    while i < len(a) and i < len(b) and a[i] == b[i]:
        i += 1
    return i


def _token_offsets_reference(enc, tokens):
    text = enc.decode(tokens, errors="strict")
    res = []
    for i in range(len(tokens)):
        prefix = enc.decode(tokens[:i], errors="ignore")
        res.append(_common_prefix_len(text, prefix))
    return res


@hypothesis.given(data=st.data())
@hypothesis.settings(deadline=None, max_examples=MAX_EXAMPLES)
def test_hyp_offsets(data):
    enc = _ENC
    # Every GPT-2 id is a mergeable or a special token, so tiktoken's filter keeps them all.
    tokens = data.draw(st.lists(st.integers(0, enc.n_vocab - 1), min_size=1, max_size=20))
    tokens = enc.encode(enc.decode(tokens, errors="ignore"), allowed_special="all")
    assert enc.decode_with_offsets(tokens)[1] == _token_offsets_reference(enc, tokens)


def test_basic_offsets():
    """tiktoken's prompts (its expected offsets are cl100k_base's: checked with the reference)."""
    enc = _ENC
    prompt = "hello world"
    p, o = enc.decode_with_offsets(enc.encode(prompt))
    assert p == prompt
    assert o == [0, 5]
    for prompt in ["hello world<|endoftext|> green cow", "我非常渴望与人工智能一起工作",
                   "நடிகர் சூர்யா", " Ġ除"]:
        tokens = enc.encode(prompt, allowed_special="all")
        p, o = enc.decode_with_offsets(tokens)
        assert p == prompt
        assert o == _token_offsets_reference(enc, tokens)


def test_pickle():
    enc_old = _ENC
    enc_new = pickle.loads(pickle.dumps(enc_old))
    assert enc_old.encode("hello world") == enc_new.encode("hello world")

    enc_old = make_enc()
    enc_old.add_special_tokens({"additional_special_tokens": ["<|pickle|>"]})
    enc_new = pickle.loads(pickle.dumps(enc_old))
    assert enc_old.encode("hello world") == enc_new.encode("hello world")
    assert (
        enc_old.encode("<|pickle|>", allowed_special="all")
        == enc_new.encode("<|pickle|>", allowed_special="all")
        == [50257]
    )


# ------------------------------------------------------------------ against tiktoken itself
@pytest.fixture(scope="module")
def oracle():
    return build_tiktoken()


TEXTS = [t for t in adversarial_strings() if len(t) < 300] + [f"a {EOT} b{EOT}"]


def test_sizes_and_special_tokens_match_tiktoken(oracle):
    assert (_ENC.n_vocab, _ENC.max_token_value) == (oracle.n_vocab, oracle.max_token_value)
    assert (_ENC.eot_token, _ENC.special_tokens_set) == (oracle.eot_token,
                                                         oracle.special_tokens_set)
    for token in (0, 50255, 50256):
        assert _ENC.is_special_token(token) == oracle.is_special_token(token)
    assert _ENC.token_byte_values() == oracle.token_byte_values()


def test_single_tokens_match_tiktoken(oracle):
    for token in range(oracle.n_vocab):
        data = oracle.decode_single_token_bytes(token)
        assert _ENC.decode_single_token_bytes(token) == data
        assert _ENC.encode_single_token(data) == oracle.encode_single_token(data) == token
    assert _ENC.encode_single_token("hello") == oracle.encode_single_token("hello") == 31373
    assert _ENC.encode_single_token(EOT) == oracle.encode_single_token(EOT) == 50256
    for not_one_token in ("hello world", b"\xff\xfe", "", "<|endoftext"):
        with pytest.raises(KeyError):
            oracle.encode_single_token(not_one_token)
        with pytest.raises(KeyError):
            _ENC.encode_single_token(not_one_token)
    for bad_id in (50257, 10**6):
        with pytest.raises(KeyError):
            oracle.decode_single_token_bytes(bad_id)
        with pytest.raises(KeyError):
            _ENC.decode_single_token_bytes(bad_id)
    with pytest.raises(KeyError):
        _ENC.decode_single_token_bytes(-1)
    with pytest.raises(TypeError, match=r"`text_or_bytes` must be str or bytes.*int"):
        _ENC.encode_single_token(5)


def test_batches_offsets_and_arrays_match_tiktoken(oracle):
    ids = oracle.encode_batch(TEXTS, allowed_special="all")
    assert _ENC.encode_batch(TEXTS, allowed_special="all") == ids
    assert _ENC.encode_ordinary_batch(TEXTS) == oracle.encode_ordinary_batch(TEXTS)
    assert _ENC.encode_ordinary_batch(TEXTS, num_threads=2) == oracle.encode_ordinary_batch(TEXTS)
    cut = [row[: max(1, len(row) // 2)] for row in ids]  # some end inside a character
    for errors in ("replace", "ignore"):
        assert _ENC.decode_batch(cut, errors=errors) == oracle.decode_batch(cut, errors=errors)
    assert _ENC.decode_bytes_batch(cut) == oracle.decode_bytes_batch(cut)
    for text, row in zip(TEXTS, ids):
        assert _ENC.decode_tokens_bytes(row) == oracle.decode_tokens_bytes(row)
        assert _ENC.decode_with_offsets(row) == oracle.decode_with_offsets(row), text[:40]
        array = _ENC.encode_to_numpy(text, allowed_special="all")
        expected = oracle.encode_to_numpy(text, allowed_special="all")
        assert array.dtype == expected.dtype == np.uint32
        assert np.array_equal(array, expected)
    with pytest.raises(ValueError, match="disallowed special token"):
        _ENC.encode_to_numpy(EOT)
