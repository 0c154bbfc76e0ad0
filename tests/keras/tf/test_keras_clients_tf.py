"""TensorFlow-only Keras clients: `GPT2TokenizerLayer` inside a functional model (`keras.Input`
of strings -> `predict`, `fit`, `export`), `TFGPT2Tokenizer`'s argument names and the
`from_pretrained` / `from_tokenizer` constructors."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras_test_helpers import byte_vocabulary, to_np

import gpt2_core
from gpt2_core import GPT2Config
from gpt2_keras import GPT2LMHeadModel, GPT2TokenizerLayer

transformers = pytest.importorskip("transformers")

VOCAB, MERGES = byte_vocabulary()
EOS = VOCAB["<|endoftext|>"]
TEXTS = ["the cat sat on the mat.", "that hat", "a", "the the the"]


def test_tokenizer_layer_in_a_functional_model_predicts_fits_and_exports(tmp_path):
    config = GPT2Config(vocab_size=len(VOCAB), n_positions=16, n_embd=16, n_layer=1, n_head=2,
                        bos_token_id=EOS, eos_token_id=EOS)
    backbone = GPT2LMHeadModel.from_params(config, gpt2_core.init_params(config, seed=0))
    tok = GPT2TokenizerLayer(VOCAB, MERGES, sequence_length=8)
    text = keras.Input(shape=(), dtype="string")
    model = keras.Model(text, backbone(tok(text))["logits"])
    strings = tf.constant(TEXTS)
    direct = to_np(backbone(**tok(strings)).logits)
    np.testing.assert_array_equal(model.predict(strings, verbose=0), direct)
    # fit from strings: the tokenizer runs inside the model's train step
    labels = tok(strings)["input_ids"]
    model.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=False,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(tf.data.Dataset.from_tensor_slices((strings, labels)).batch(2), epochs=2,
                        verbose=0)
    assert history.history["loss"][1] < history.history["loss"][0]
    trained = model.predict(strings, verbose=0)
    model.export(str(tmp_path / "exported"), format="tf_saved_model", verbose=False)
    reloaded = tf.saved_model.load(str(tmp_path / "exported"))  # Keras' export: keep the object
    served = reloaded.serve(strings)
    np.testing.assert_allclose(served.numpy(), trained, atol=1e-5)


def test_tokenizer_layer_output_spec_on_keras_input():
    text = keras.Input(shape=(), dtype="string")
    ragged = GPT2TokenizerLayer(VOCAB, MERGES)(text)
    assert ragged.ragged and ragged.shape == (None, None) and ragged.dtype == "int32"
    padded = GPT2TokenizerLayer(VOCAB, MERGES, max_length=5)(text)
    assert sorted(padded) == ["attention_mask", "input_ids"]
    assert padded["input_ids"].shape == (None, 5)
    with pytest.raises(ValueError, match=r"takes text: a keras.Input\(shape=\(\), dtype='string'\)"):
        GPT2TokenizerLayer(VOCAB, MERGES)(keras.Input(shape=(3,), dtype="int32"))


def test_tfgpt2tokenizer_argument_names():
    ours = GPT2TokenizerLayer(VOCAB, MERGES, sequence_length=6, pad_token_id=0)
    theirs = GPT2TokenizerLayer(vocab=VOCAB, merges=MERGES, max_length=6, pad_token_id=0)
    for key, value in ours(tf.constant(TEXTS)).items():
        np.testing.assert_array_equal(theirs(tf.constant(TEXTS))[key], value)
    assert theirs.get_config()["sequence_length"] == 6
    with pytest.raises(ValueError, match="`max_length` is another name for `sequence_length`"):
        GPT2TokenizerLayer(sequence_length=4, max_length=4)
    with pytest.raises(ValueError, match="`vocab` is another name for `vocabulary`"):
        GPT2TokenizerLayer(VOCAB, MERGES, vocab=VOCAB)


def test_from_pretrained_and_from_tokenizer_match_transformers(tmp_path):
    (tmp_path / "vocab.json").write_text(json.dumps(VOCAB), encoding="utf-8")
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(MERGES) + "\n",
                                         encoding="utf-8")
    hf = transformers.GPT2Tokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))
    want = [hf.encode(t) for t in TEXTS]
    assert GPT2TokenizerLayer.from_pretrained(tmp_path).tokenize(TEXTS).to_list() == want
    assert GPT2TokenizerLayer.from_tokenizer(hf).tokenize(TEXTS).to_list() == want
    padded = GPT2TokenizerLayer.from_tokenizer(hf, max_length=4)(tf.constant(TEXTS))
    assert padded["input_ids"].shape == (len(TEXTS), 4)
    from gpt2_tokenizer import GPT2Tokenizer

    bundled = GPT2TokenizerLayer.from_tokenizer(GPT2Tokenizer.from_pretrained())
    assert bundled.tokenize(["Hello world"]).to_list() == [[15496, 995]]
    with pytest.raises(TypeError, match="`tokenizer` must be a GPT-2 byte-level BPE tokenizer"):
        GPT2TokenizerLayer.from_tokenizer(object())
