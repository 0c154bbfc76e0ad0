"""The public surface: special-token policies, decoding, `__call__` parity with HF, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import adversarial_strings

from gpt2_tokenizer import GPT2Tokenizer
from gpt2_tokenizer import tokenizer as tokenizer_module

EOT = "<|endoftext|>"


# ------------------------------------------------------------------ special tokens
def test_special_tokens_follow_tiktoken_policy(tok, tiktoken_enc):
    text = f"a{EOT}b"
    with pytest.raises(ValueError, match=r"disallowed special token '<\|endoftext\|>'.*allowed_special"):
        tok.encode(text)
    assert tok.encode(text, allowed_special="all") == [64, 50256, 65]
    assert tok.encode(text, allowed_special={EOT}) == tiktoken_enc.encode(text, allowed_special="all")
    assert tok.encode(text, disallowed_special=()) == tiktoken_enc.encode(text, disallowed_special=())
    assert tok.encode_ordinary(text) == tiktoken_enc.encode_ordinary(text)
    assert 50256 not in tok.encode_ordinary(text)


def test_unknown_allowed_special_is_refused(tok):
    with pytest.raises(ValueError, match=r"allowed_special.*\[CLS\]"):
        tok.encode("x", allowed_special={"[CLS]"})


def test_roles_and_sizes(tok):
    assert (tok.eos_token, tok.eos_token_id, tok.bos_token_id) == (EOT, 50256, 50256)
    assert tok.pad_token is None and tok.pad_token_id is None
    assert tok.vocab_size == 50257 and len(tok) == 50257
    assert tok.model_max_length == 1024


def test_add_special_tokens_appends_ids_and_matches_hf(hf_fast):
    ours = GPT2Tokenizer.from_pretrained()
    assert ours.add_special_tokens({"cls_token": "[CLS]", "additional_special_tokens": ["<x>"]}) == 2
    assert ours.add_special_tokens({"cls_token": "[CLS]"}) == 0
    assert (ours.token_to_id("[CLS]"), ours.token_to_id("<x>"), len(ours)) == (50257, 50258, 50259)
    text = f"a[CLS]b<x> {EOT}c"
    assert ours(text).input_ids == [64, 50257, 65, 50258, 220, 50256, 66]
    assert ours.encode(text, allowed_special="all") == ours(text).input_ids
    assert ours.decode(ours(text).input_ids) == text
    with pytest.raises(ValueError, match="keys must be among"):
        ours.add_special_tokens({"weird_token": "[W]"})


# ------------------------------------------------------------------ decoding
def test_decode_is_byte_exact_and_has_an_error_policy(tok):
    for text in adversarial_strings()[:200]:
        assert tok.decode(tok.encode_ordinary(text)) == text
    assert tok.decode([47249]) == "\ufffd"  # A token ending inside a character.
    assert tok.decode_bytes([47249]) == b"\xf0\x9f\x98"
    with pytest.raises(UnicodeDecodeError):
        tok.decode([47249], errors="strict")
    assert tok.decode([15496, 50256, 995], skip_special_tokens=True) == "Hello world"
    assert tok.decode(np.array([15496, 995])) == "Hello world"


@pytest.mark.parametrize(
    ("ids", "error", "match"),
    [
        ([15496, -1], ValueError, r"`ids` must be in \[0, 50256\].*id -1 at index 1"),
        ([50257], ValueError, r"`ids` must be in \[0, 50256\].*id 50257 at index 0"),
        ([1.5], TypeError, r"`ids` must hold ints.*1\.5 of type float"),
        ([[1, 2]], TypeError, r"must hold ints.*batch_decode"),
        ("hello", TypeError, r"`ids` must be a sequence of int.*str"),
        (None, TypeError, r"`ids` must be a sequence of int.*NoneType"),
    ],
)
def test_bad_ids_are_refused(tok, ids, error, match):
    with pytest.raises(error, match=match):
        tok.decode(ids)


# ------------------------------------------------------------------ bad text
@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda t: t.encode(b"bytes"), r"`text` must be a str. Received: text of type bytes"),
        (lambda t: t.encode_ordinary(None), r"`text` must be a str.*NoneType"),
        (lambda t: t(["ok", None]), r"`text\[1\]` must be a str.*NoneType"),
        (lambda t: t(42), r"`text` must be a str or a list of str.*int"),
        (lambda t: t.encode_batch("one text"), r"`texts` must be a list of str.*use `encode`"),
        (lambda t: t.encode_batch(["a", 3]), r"`texts\[1\]` must be a str.*int"),
        (lambda t: t(["a", "b"], is_split_into_words=True, add_prefix_space=True) and t("x",
                    is_split_into_words=True, add_prefix_space=True), r"list of str words"),
    ],
)
def test_non_str_input_raises_type_error(tok, call, match):
    with pytest.raises(TypeError, match=match):
        call(tok)


def test_lone_surrogates_raise_with_position(tok):
    with pytest.raises(ValueError, match=r"lone surrogate U\+D800 at index 2.*surrogatepass"):
        tok.encode("ab\ud800c")
    with pytest.raises(ValueError, match=r"lone surrogate U\+DC00 at index 0"):
        tok(["ok", "\udc00"])
    assert tok.encode("ok") == [482]  # The failure left no poisoned cache entry.


# ------------------------------------------------------------------ HF-style call
def _hf_rows(hf, texts, **kwargs):
    enc = hf(texts, return_offsets_mapping=True, **kwargs)
    return enc["input_ids"], [[tuple(span) for span in row] for row in enc["offset_mapping"]]


@pytest.mark.parametrize("add_prefix_space", [False, True])
def test_call_ids_and_offsets_match_hf_fast(tok, hf_fast, add_prefix_space):
    texts = [t for t in adversarial_strings() if len(t) < 200] + [f"a {EOT} b{EOT}", f"{EOT}x"]
    hf = hf_fast
    if add_prefix_space:
        import transformers

        hf = transformers.GPT2TokenizerFast.from_pretrained(
            str(tokenizer_module._files.ASSETS_DIR), add_prefix_space=True)
    ours = tok(texts, return_offsets_mapping=True, add_prefix_space=add_prefix_space)
    ids, offsets = _hf_rows(hf, texts)
    for i, text in enumerate(texts):
        assert ours.input_ids[i] == ids[i], f"ids differ on {text[:30]!r}"
        assert ours.offset_mapping[i] == offsets[i], f"offsets differ on {text[:30]!r}"
        assert ours.attention_mask[i] == [1] * len(ids[i])


def test_split_into_words_matches_hf(tok):
    import transformers

    hf = transformers.GPT2TokenizerFast.from_pretrained(
        str(tokenizer_module._files.ASSETS_DIR), add_prefix_space=True)
    batch = [["héllo", "wörld  x"], ["a", "😀b", EOT]]
    ours = tok(batch, is_split_into_words=True, return_offsets_mapping=True, add_prefix_space=True)
    ids, offsets = _hf_rows(hf, batch, is_split_into_words=True)
    assert ours.input_ids == ids and ours.offset_mapping == offsets


def test_split_special_tokens_encodes_them_as_text(tok):
    assert tok(EOT).input_ids == [50256]
    assert tok(EOT, split_special_tokens=True).input_ids == tok.encode_ordinary(EOT)


def test_padding_needs_a_pad_token():
    tok = GPT2Tokenizer.from_pretrained()
    with pytest.raises(ValueError, match=r"no `pad_token`.*tok.pad_token = tok.eos_token"):
        tok(["a b", "c"], padding=True)
    with pytest.raises(ValueError, match=r"`pad_token` must be a token.*add_special_tokens"):
        tok.pad_token = "[PAD]"


@pytest.mark.parametrize("side", ["right", "left"])
def test_padding_truncation_and_tensors_match_hf(hf_fast, side):
    import transformers

    tok = GPT2Tokenizer.from_pretrained()
    tok.pad_token = tok.eos_token
    hf = transformers.GPT2TokenizerFast.from_pretrained(str(tokenizer_module._files.ASSETS_DIR))
    hf.pad_token = hf.eos_token
    texts = ["a b c d e f", "d", "Hello world"]
    for kwargs in ({"padding": True}, {"padding": "max_length", "max_length": 5, "truncation": True},
                   {"max_length": 3, "padding": "max_length", "truncation": "longest_first"},
                   {"padding": "longest", "truncation": True, "max_length": 2}):
        ours = tok(texts, padding_side=side, return_tensors="np", **kwargs)
        theirs = hf(texts, padding_side=side, return_tensors="np", **kwargs)
        np.testing.assert_array_equal(ours.input_ids, theirs["input_ids"], err_msg=str(kwargs))
        np.testing.assert_array_equal(ours["attention_mask"], theirs["attention_mask"])
        assert ours.input_ids.dtype == np.int64


def test_max_length_alone_truncates_but_not_when_padding(tok):
    assert tok("a b c d e f", max_length=3).input_ids == [64, 275, 269]
    padder = GPT2Tokenizer.from_pretrained()
    padder.pad_token = padder.eos_token
    enc = padder(["a b c d e f", "d"], max_length=3, padding="max_length")
    assert enc.input_ids == [[64, 275, 269, 288, 304, 277], [67, 50256, 50256]]


def test_model_max_length_is_enforced(tok):
    long_text = "hello" + " hello" * 1099
    with pytest.raises(ValueError, match=r"1100 tokens, more than model_max_length=1024.*truncation=True"):
        tok(long_text)
    assert len(tok(long_text, truncation=True).input_ids) == 1024
    assert len(tok.encode(long_text)) == 1100  # encode has no limit.


def test_ragged_tensors_and_bad_options_are_refused(tok):
    with pytest.raises(ValueError, match=r"needs rows of one length.*padding=True"):
        tok(["a b", "c"], return_tensors="np")
    with pytest.raises(ValueError, match=r"`return_tensors` must be.*Received: return_tensors='torch'"):
        tok(["a"], return_tensors="torch")
    with pytest.raises(ValueError, match=r"`padding` must be.*Received: padding='most'"):
        tok(["a"], padding="most")
    with pytest.raises(ValueError, match=r"`truncation` must be.*Received: truncation='yes'"):
        tok(["a"], truncation="yes")
    with pytest.raises(ValueError, match=r"`padding_side` must be 'right' or 'left'"):
        tok(["a"], padding_side="middle")


def test_batch_encoding_access_and_single_text_shape(tok):
    enc = tok("Hello world", return_tensors="np")
    assert enc.input_ids.shape == (1, 2) and enc["attention_mask"].tolist() == [[1, 1]]
    with pytest.raises(AttributeError, match="has no `token_type_ids`"):
        _ = enc.token_type_ids
    assert "attention_mask" not in tok("x", return_attention_mask=False)


def test_framework_tensors_when_installed(tok):
    torch = pytest.importorskip("torch")
    out = tok(["Hello world"], return_tensors="pt")
    assert out.input_ids.dtype == torch.int64 and out.input_ids.tolist() == [[15496, 995]]


def test_missing_framework_error_says_how_to_install(tok, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "jax.numpy" or name.startswith("jax"):
            raise ImportError("No module named 'jax'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match=r"return_tensors='jax' needs `jax`.*pip install"):
        tok(["a"], return_tensors="jax")


def test_add_bos_token_prepends_with_empty_offset():
    tok = GPT2Tokenizer.from_pretrained(add_bos_token=True)
    enc = tok("Hello world", return_offsets_mapping=True)
    assert enc.input_ids == [50256, 15496, 995]
    assert enc.offset_mapping == [(0, 0), (0, 5), (5, 11)]


# ------------------------------------------------------------------ batches
def test_encode_batch_process_pool_matches_serial(tok, monkeypatch, corpus):
    texts = corpus[:200_000].split("\n\n")
    serial = tok.encode_batch(texts)
    monkeypatch.setattr(tokenizer_module, "_PARALLEL_MIN_CHARS", 0)
    worker_tok = GPT2Tokenizer.from_pretrained()
    try:
        assert worker_tok.encode_batch(texts, num_threads=2) == serial
        with pytest.raises(ValueError, match=r"disallowed special token"):
            worker_tok.encode_batch(["x", EOT] * 4, num_threads=2)
    finally:
        worker_tok.close()
    with pytest.raises(ValueError, match=r"`num_threads` must be an int >= 1. Received: 0"):
        tok.encode_batch(["a"], num_threads=0)


@pytest.mark.parametrize("name", ["allowed_special", "disallowed_special"])
def test_special_policy_as_a_single_string_is_refused(tok, name):
    # A str is a collection of characters: each would be reported as an unknown special token.
    with pytest.raises(TypeError, match=rf"`{name}` must be a set .*{name}='<\|endoftext\|>'.*Pass a set"):
        tok.encode("Hi<|endoftext|>", **{name: "<|endoftext|>"})
    with pytest.raises(TypeError, match=name):
        tok.encode_batch(["Hi"], **{name: "<|endoftext|>"})


def test_special_policy_all_is_still_accepted(tok):
    assert tok.encode("Hi<|endoftext|>", allowed_special="all") == [17250, 50256]
    assert tok.encode("Hi<|endoftext|>", allowed_special="all", disallowed_special="all") == [17250, 50256]
    assert tok.encode("Hi<|endoftext|>", allowed_special={"<|endoftext|>"}) == [17250, 50256]
