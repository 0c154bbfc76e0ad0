"""`GPT2TokenizerLayer` against tiktoken and `gpt2_tokenizer`: ids, pieces, specials, padding,
detokenize, tf.function / tf.data / SavedModel, config round trip and bad inputs."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
import keras  # noqa: E402
import regex  # noqa: E402
import tiktoken  # noqa: E402

from gpt2_keras import _bpe_graph  # noqa: E402
from gpt2_keras.tokenizer_layer import GPT2TokenizerLayer  # noqa: E402

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

# Inputs where in-graph GPT-2 tokenizers are known to go wrong (KerasHub merges "\n\n", cuts at
# NUL, hardcodes a few spaces and drops "६"; RE2's `\s` is ASCII-only).
CASES = {
    "hello": "Hello world",
    "double_newline": "a\n\nb\n\n\n c\n\n",
    "crlf": "line one\r\nline two\r\n\r\n",
    "nul_and_controls": "a\x00b\x00\x00 c\x01\x07\x1b[0m\x7f\x1c\x1f d\x0b\x0c",
    "nbsp": "a\u00a0b \u00a0 c\u00a0\u00a0d",
    "en_quad_to_hair": "x" + "".join(chr(c) + "y" + chr(c) * 2 + " z" for c in range(0x2000, 0x200b)),
    "ideographic_space": "日本\u3000\u3000語 \u3000x",
    "nel_ls_ps": "a\u0085b\u2028c\u2029d\u0085\u0085 e",
    "other_spaces": "a\u1680b\u202fc\u205fd \u202f e\u180ef",
    "trailing_ws": "end   ",
    "leading_ws": "   start",
    "only_ws": " \t\n \u3000 ",
    "tabs_code": "def f(x):\n\treturn x  # note\n\n\n    pass\n",
    "contractions": "it's don't we're you've I'm we'll he'd",
    "upper_contractions": "IT'S DON'T WE'RE YOU'VE I'M WE'LL HE'D 'S",
    "spaced_contractions": "x 's  't   're",
    "cjk": "中文字符测试。日本語のテキスト、한국어 텍스트",
    "emoji_zwj": "👩‍👩‍👧‍👦 family 🏳️‍🌈 flag 👍🏽 ok 😀😀",
    "combining": "e\u0301 n\u0303 a\u030a\u0323 Z\u0351\u0352\u0353",
    "rtl": "שלום עולם مرحبا بالعالم",
    "non_ascii_digits": "٠١٢٣ ३४५ ६ 一二三 ⅷ ² ½ 12345",
    "devanagari_six": "६ ६६ a६b",
    "special_text": "<|endoftext|> and <|endoftext|>x",
    "replacement_char": "\ufffd\ufffd x",
    "long_word": "abcdefghij" * 500,
    "long_ws_run": " " * 2000 + "x" + "\n" * 1500 + "y" + "\u3000" * 500,
    "empty": "",
}


@pytest.fixture(scope="module")
def layer():
    return GPT2TokenizerLayer()


@pytest.fixture(scope="module")
def vocab_and_merges():
    return _bpe_graph.bundled_vocabulary()


def tiktoken_encoding(vocabulary: dict[str, int], name: str = "gpt2") -> tiktoken.Encoding:
    u2b = {c: b for b, c in _bpe_graph.bytes_to_unicode().items()}
    ranks = {bytes(u2b[c] for c in t): i for t, i in vocabulary.items() if t != "<|endoftext|>"}
    specials = {"<|endoftext|>": vocabulary["<|endoftext|>"]} if "<|endoftext|>" in vocabulary else {}
    return tiktoken.Encoding(name=name, pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens=specials)


@pytest.fixture(scope="module")
def enc(vocab_and_merges):
    return tiktoken_encoding(vocab_and_merges[0])


def random_texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    alphabet = list("abcXYZ019 '.,-\n\r\t\x0b\x0c\x00\x01\x1c\x1f\x7f") + [
        "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL", "  ", "\n\n", "\r\n", "\u00a0",
        "\u2000", "\u200a", "\u3000", "\u0085", "\u2028", "\u2029", "\u202f", "\u1680", "日本",
        "한국어", "👩‍👩‍👧", "🏳️‍🌈", "e\u0301", "\u0663\u0664", "שלום", "مرحبا", "६", "\ufffd",
        "<|endoftext|>", "<|", "|>", "ⅷ", "²", "ǅ", "ﬁ", "x" * 30]
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(n)]


def assert_same_ids(texts: list[str], got: list[list[int]], expected: list[list[int]]) -> None:
    bad = [(t, g, e) for t, g, e in zip(texts, got, expected) if g != e]
    assert not bad, f"{len(bad)} of {len(texts)} differ; first: {bad[0][0]!r}: {bad[0][1][:20]} " \
                    f"!= {bad[0][2][:20]}"


def test_reference_ids(layer):
    out = layer(tf.constant(["Hello world", " Hello world"]))
    assert out.to_list() == [[15496, 995], [18435, 995]]
    assert out.dtype == tf.int32


@pytest.mark.parametrize("name", list(CASES))
def test_cases_match_tiktoken(layer, enc, name):
    text = CASES[name]
    assert layer(tf.constant([text])).to_list()[0] == enc.encode_ordinary(text)


def test_random_texts_match_tiktoken(layer, enc):
    texts = random_texts(3000, seed=0)
    assert_same_ids(texts, layer(tf.constant(texts)).to_list(),
                    [enc.encode_ordinary(t) for t in texts])


def test_allowed_special_all_matches_tiktoken(enc):
    special = GPT2TokenizerLayer(allowed_special="all")
    texts = random_texts(1000, seed=1) + ["<|endoftext|>", "a  <|endoftext|>  b", "<|endoftext|>'s"]
    assert_same_ids(texts, special(tf.constant(texts)).to_list(),
                    [enc.encode(t, allowed_special="all") for t in texts])
    assert GPT2TokenizerLayer(allowed_special={"<|endoftext|>"}).allowed_special == ("<|endoftext|>",)


def test_special_tokens_are_text_by_default(layer, enc):
    ids = layer(tf.constant(["<|endoftext|>"])).to_list()[0]
    assert ids == enc.encode_ordinary("<|endoftext|>") and 50256 not in ids


def test_matches_gpt2_tokenizer(layer):
    from gpt2_tokenizer import GPT2Tokenizer

    tok = GPT2Tokenizer.from_pretrained()
    texts = list(CASES.values()) + random_texts(1000, seed=2)
    assert_same_ids(texts, layer(tf.constant(texts)).to_list(),
                    [tok.encode_ordinary(t) for t in texts])
    special = GPT2TokenizerLayer(allowed_special="all")
    assert_same_ids(texts, special(tf.constant(texts)).to_list(),
                    [tok.encode(t, allowed_special="all") for t in texts])


def test_whole_word_lookup_equals_bpe(vocab_and_merges, layer):
    # The layer looks whole pre-tokens up first (as tiktoken does); exact only when every token
    # is its own BPE result, which this runs the merge loop on every GPT-2 token to check.
    tables = _bpe_graph.BPETables(*vocab_and_merges)
    tokens = [(t, i) for t, i in vocab_and_merges[0].items() if t != "<|endoftext|>"]
    words = tf.constant([tables.id_bytes[i] for _, i in tokens])
    merged = _bpe_graph.bpe(words, layer._byte_ids, layer._pair_table, layer._merged_ids,
                            layer.vocabulary_size)
    assert merged.to_list() == [[i] for _, i in tokens]


def test_whitespace_class_equals_oracle():
    from gpt2_tokenizer import WHITESPACE_CLASS

    every = "".join(map(chr, range(0x110000)))
    oracle = {m.start() for m in regex.finditer(f"[{WHITESPACE_CLASS}]", every)}
    ours = {m.start() for m in regex.finditer(r"\s", every)}  # regex's \s = Unicode White_Space
    assert oracle == ours == set(_ranges(_bpe_graph.WHITESPACE_RANGES))


def _ranges(ranges: str) -> list[int]:
    out = []
    for item in ranges.split():
        lo, _, hi = item.partition("-")
        out.extend(range(int(lo, 16), int(hi or lo, 16) + 1))
    return out


@pytest.mark.parametrize("which", ["whitespace", "letters", "numbers"])
def test_re2_classes_exhaustive(which):
    # Every code point but surrogates: RE2 must read our explicit class as exactly the pinned
    # set (RE2's own `\s` is ASCII-only and its `\p{L}`/`\p{N}` use an older Unicode).
    from gpt2_tokenizer import _unicode16

    ranges = {"whitespace": _bpe_graph.WHITESPACE_RANGES, "letters": _unicode16.LETTER_RANGES,
              "numbers": _unicode16.NUMBER_RANGES}[which]
    points = np.array([c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF])
    chars = tf.strings.unicode_encode(tf.constant(points[:, None], tf.int32), "UTF-8")
    got = tf.strings.regex_full_match(chars, f"[{_bpe_graph.re2_class(ranges)}]").numpy()
    expected = np.isin(points, _ranges(ranges))
    assert np.array_equal(got, expected), [hex(c) for c in points[got != expected][:10]]


def test_pretokens_match_oracle_on_code_points():
    # Each sampled code point in every role (run, after a letter/digit/space, before whitespace);
    # pre-tokens are compared directly, since BPE output can hide a class difference.
    from gpt2_tokenizer import _unicode16, pretokenize

    edges = set()
    for ranges in (_unicode16.LETTER_RANGES, _unicode16.NUMBER_RANGES, _bpe_graph.WHITESPACE_RANGES):
        for item in ranges.split():
            lo, _, hi = item.partition("-")
            edges.update({int(lo, 16) - 1, int(lo, 16), int(hi or lo, 16), int(hi or lo, 16) + 1})
    points = sorted({c for c in edges | set(range(0, 0x110000, 13)) if 0 <= c < 0x110000
                     and not 0xD800 <= c <= 0xDFFF})
    texts = ["".join(f"{chr(c)}a{chr(c)}{chr(c)} {chr(c)}1 {chr(c)}\u3000{chr(c)}\n"
                     for c in points[i:i + 512]) for i in range(0, len(points), 512)]
    boundary, piece = _bpe_graph.patterns()
    got = _bpe_graph.pretokenize(tf.constant([t.encode() for t in texts]), boundary, piece,
                                 []).to_list()
    for text, pieces in zip(texts, got):
        assert pieces == [p.encode() for p in pretokenize(text)]


def test_invalid_utf8_cannot_fake_marks(layer, enc):
    # 0xFF/0xFE are the layer's internal marks; raw invalid bytes become U+FFFD first.
    out = layer(tf.constant([b"a\xffb \xfe\xfe c\xff"])).to_list()[0]
    assert out == enc.encode_ordinary("a\ufffdb \ufffd\ufffd c\ufffd")


def test_detokenize_is_byte_exact(layer):
    texts = list(CASES.values()) + random_texts(300, seed=3)
    ids = layer(tf.constant(texts))
    assert layer.detokenize(ids).numpy().tolist() == [t.encode() for t in texts]
    assert layer.detokenize(tf.constant([15496, 995])).numpy() == b"Hello world"
    assert layer.detokenize([[31373, 50256]]).numpy().tolist() == [b"hello<|endoftext|>"]


def test_padding_right_left_and_truncation(enc):
    texts = ["Hello world, this is GPT-2.", "a", ""]
    full = [enc.encode_ordinary(t) for t in texts]
    for side in ("right", "left"):
        out = GPT2TokenizerLayer(sequence_length=4, padding_side=side, pad_token_id=7)(
            tf.constant(texts))
        ids, mask = out["input_ids"].numpy(), out["attention_mask"].numpy()
        for row, m, ref in zip(ids, mask, full):
            kept = ref[:4]
            pads = [7] * (4 - len(kept))
            assert row.tolist() == (kept + pads if side == "right" else pads + kept)
            assert m.tolist() == ([1] * len(kept) + [0] * len(pads) if side == "right"
                                  else [0] * len(pads) + [1] * len(kept))
    eos_pad = GPT2TokenizerLayer(sequence_length=3)(tf.constant("a"))
    assert eos_pad["input_ids"].numpy().tolist() == [64, 50256, 50256]
    back = GPT2TokenizerLayer().detokenize(out["input_ids"], attention_mask=out["attention_mask"])
    assert back.numpy().tolist() == [enc.decode_bytes(r[:4]) for r in full]


def test_scalar_input(layer):
    out = layer(tf.constant("Hello world"))
    assert isinstance(out, tf.Tensor) and out.numpy().tolist() == [15496, 995]
    assert layer("Hello world").numpy().tolist() == [15496, 995]


def test_tf_function_and_tf_data(layer, enc):
    texts = random_texts(64, seed=4) + list(CASES.values())[:10]
    expected = [enc.encode_ordinary(t) for t in texts]

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def tokenize(x):
        return layer(x)

    assert_same_ids(texts, tokenize(tf.constant(texts)).to_list(), expected)
    ds = tf.data.Dataset.from_tensor_slices(texts).batch(8).map(layer)
    got = [row for batch in ds for row in batch.to_list()]
    assert_same_ids(texts, got, expected)
    padded = GPT2TokenizerLayer(sequence_length=16, padding_side="left")
    ds = tf.data.Dataset.from_tensor_slices(texts).map(padded)  # scalar elements
    first = next(iter(ds))
    assert first["input_ids"].shape == (16,)


def test_saved_model_loads_without_package(tmp_path, layer, enc):
    class Exported(tf.Module):
        def __init__(self, tok):
            super().__init__()
            self.tok = tok

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def tokenize(self, texts):
            ids = self.tok(texts)
            return {"values": ids.flat_values, "row_splits": ids.row_splits}

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32)])
        def detokenize(self, ids):
            return self.tok.detokenize(ids)

    tf.saved_model.save(Exported(layer), str(tmp_path / "tok"))
    texts = list(CASES.values()) + random_texts(50, seed=5)
    (tmp_path / "texts.json").write_text(json.dumps(texts))
    script = textwrap.dedent(f"""
        import json, sys
        import tensorflow as tf
        m = tf.saved_model.load({str(tmp_path / "tok")!r})
        texts = json.load(open({str(tmp_path / "texts.json")!r}))
        out = m.tokenize(tf.constant(texts))
        ids = tf.RaggedTensor.from_row_splits(out["values"], out["row_splits"]).to_list()
        back = m.detokenize(tf.constant([[15496, 995]])).numpy().tolist()
        assert not any(k.startswith("gpt2") for k in sys.modules), "package was imported"
        print(json.dumps({{"ids": ids, "back": [b.decode() for b in back]}}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, cwd=tmp_path,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert_same_ids(texts, result["ids"], [enc.encode_ordinary(t) for t in texts])
    assert result["back"] == ["Hello world"]


def tiny_vocabulary() -> tuple[dict[str, int], list[str]]:
    """Byte-level vocab: byte b -> id b, merge r -> id 256 + r, `<|endoftext|>` last."""
    b2u = _bpe_graph.bytes_to_unicode()
    vocab = {b2u[b]: b for b in range(256)}
    merges = ["h e", "l l", "he ll", "hell o", "Ġ w", "Ġw o", "r l", "Ġwo rl", "a a", "aa aa"]
    for r, m in enumerate(merges):
        vocab[m.replace(" ", "")] = 256 + r
    vocab["<|endoftext|>"] = 256 + len(merges)
    return vocab, merges


def test_custom_vocabulary_from_files_and_config_round_trip(tmp_path):
    vocab, merges = tiny_vocabulary()
    (tmp_path / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n",
                                         encoding="utf-8")
    tok = GPT2TokenizerLayer(vocabulary=str(tmp_path / "vocab.json"),
                             merges=str(tmp_path / "merges.txt"), allowed_special="all")
    texts = ["hello world", "aaaaaaa hello", "hellohello<|endoftext|> worl", "x \n\n  y"]
    ref = tiktoken_encoding(vocab, name="tiny")
    expected = [ref.encode(t, allowed_special="all") for t in texts]
    assert tok(tf.constant(texts)).to_list() == expected
    (tmp_path / "layer.json").write_text(json.dumps(keras.saving.serialize_keras_object(tok)))
    os.remove(tmp_path / "vocab.json")  # the vocabulary must travel with the config
    os.remove(tmp_path / "merges.txt")
    script = textwrap.dedent(f"""
        import json
        import keras, tensorflow as tf
        import gpt2_keras.tokenizer_layer
        tok = keras.saving.deserialize_keras_object(json.load(open({str(tmp_path / "layer.json")!r})))
        print(json.dumps(tok(tf.constant({texts!r})).to_list()))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
                               "KERAS_BACKEND": "tensorflow"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == expected


def test_bundled_config_round_trip(layer):
    config = layer.get_config()
    assert config["vocabulary"] is None and config["merges"] is None
    clone = GPT2TokenizerLayer.from_config(config)
    assert clone(tf.constant(["Hello world"])).to_list() == [[15496, 995]]


def test_bad_inputs(layer):
    with pytest.raises(TypeError, match=r"`inputs` must be a tf.string.*dtype int32"):
        layer(tf.constant([1, 2], tf.int32))
    with pytest.raises(TypeError, match=r"`inputs` must be a tf.string.*dtype float32"):
        layer(np.zeros((2,), np.float32))
    with pytest.raises(ValueError, match=r"`inputs` must have shape \(B,\) or \(\).*\(2, 1\)"):
        layer(tf.constant([["a"], ["b"]]))
    with pytest.raises(TypeError, match=r"`ids` must be an integer tensor.*float32"):
        layer.detokenize(tf.constant([[1.0]]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"`ids` must be in \[0, 50257\)"):
        layer.detokenize(tf.constant([[50257]]))
    with pytest.raises(ValueError, match=r"Pass both `vocabulary` and `merges`"):
        GPT2TokenizerLayer(vocabulary={"a": 0})
    with pytest.raises(TypeError, match=r"`vocabulary` must be a dict.*int"):
        GPT2TokenizerLayer(vocabulary=3, merges=[])
    vocab, merges = tiny_vocabulary()
    with pytest.raises(ValueError, match=r"merges\[1\]='l zz'"):
        GPT2TokenizerLayer(vocabulary=vocab, merges=["h e", "l zz"])
    with pytest.raises(ValueError, match=r"`padding_side` must be 'right' or 'left'.*'top'"):
        GPT2TokenizerLayer(padding_side="top")
    with pytest.raises(ValueError, match=r"`sequence_length` must be a positive int.*0"):
        GPT2TokenizerLayer(sequence_length=0)
    with pytest.raises(ValueError, match=r"`allowed_special` holds tokens.*<\|im_start\|>"):
        GPT2TokenizerLayer(allowed_special={"<|im_start|>"})


@pytest.mark.parametrize("inputs", ["a\ud800b", ["ok", "a\ud800b"], np.array(["ok", "x\udfffy"])])
def test_lone_surrogate_is_a_clear_error(layer, inputs):
    message = r"`inputs` must be valid UTF-8 .* lone surrogate U\+D[89A-F][0-9A-F]{2} .*Clean it"
    with pytest.raises(ValueError, match=message):
        layer(inputs)
