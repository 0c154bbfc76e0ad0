"""Bad arguments at gpt2_keras' public boundary: each error names the argument. Runs under every
Keras backend (KERAS_BACKEND=tensorflow, jax or torch, each its own process)."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest
from keras_test_helpers import to_np

from gpt2_core import GPT2Config, random_params, reference
from gpt2_keras import (
    GPT2DoubleHeadsModel,
    GPT2ForQuestionAnswering,
    GPT2ForSequenceClassification,
    GPT2ForTokenClassification,
    GPT2LMHeadModel,
)

CONFIG = GPT2Config(vocab_size=97, n_positions=24, n_embd=32, n_layer=2, n_head=4)
HEADS_CONFIG = dataclasses.replace(CONFIG, num_labels=3, pad_token_id=0)
PARAMS = random_params(CONFIG, seed=1)
IDS = np.array([[5, 6, 7, 8], [9, 10, 11, 12]])


@pytest.fixture(scope="module")
def model_and_past():
    model = GPT2LMHeadModel.from_params(CONFIG, PARAMS)
    past = model(np.random.default_rng(0).integers(0, 97, (2, 5)), use_cache=True).past_key_values
    return model, [(to_np(k), to_np(v)) for k, v in past]


def _head(cls, head):
    return cls.from_params(HEADS_CONFIG, random_params(HEADS_CONFIG, seed=2, head=head))


def _call(model, past, T=1):
    return model(np.zeros((2, T), np.int32), past_key_values=past)


@pytest.mark.parametrize("bad", [97, -1, 1000])
def test_labels_outside_vocab_are_refused(model_and_past, bad):
    model, _ = model_and_past
    labels = IDS.copy()
    labels[1, 2] = bad
    with pytest.raises(ValueError, match=rf"`labels` must lie in \[0, vocab_size=97\) or be -100.*"
                       rf"Received out-of-range values \[{bad}\]"):
        model(IDS, labels=labels)


def test_labels_minus_100_and_in_range_keep_their_loss(model_and_past):
    model, _ = model_and_past
    labels = np.array([[5, -100, 96, 0], [-100, 10, 11, -100]])
    loss = float(to_np(model(IDS, labels=labels).loss))
    ref = reference.forward(CONFIG, PARAMS, IDS, labels=labels).loss
    np.testing.assert_allclose(loss, ref, rtol=1e-5)


def _traced(fn):
    """`fn` compiled by this Keras backend's own tracer, where label values cannot be read."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf
        return tf.function(fn, jit_compile=True)
    import jax
    return jax.jit(fn)


# The Keras torch backend runs eagerly (no tracer of its own), so there the test does not exist
# rather than skip.
if keras.backend.backend() in ("tensorflow", "jax"):
    def test_labels_check_keeps_traced_calls_working(model_and_past):
        model, _ = model_and_past
        labels = IDS.copy()
        eager = float(to_np(model(IDS, labels=labels).loss))
        traced = _traced(lambda ids, lab: model(input_ids=ids, labels=lab).loss)
        np.testing.assert_allclose(float(to_np(traced(IDS, labels))), eager, rtol=1e-5)


def test_double_heads_labels_and_mc_labels_out_of_range():
    model = _head(GPT2DoubleHeadsModel, "double_heads")
    ids = np.broadcast_to(IDS[None], (2, 2, 4))  # (B, nc, T)
    with pytest.raises(ValueError, match=r"`labels` must lie in \[0, vocab_size=97\).*\[97\]"):
        model(ids, labels=np.full((2, 2, 4), 97))
    with pytest.raises(ValueError, match=r"`mc_labels` must lie in \[0, num_choices=2\).*\[2\]"):
        model(ids, mc_labels=np.array([0, 2]))
    out = model(ids, mc_labels=np.array([1, -100]))  # -100 skipped, as CrossEntropyLoss()
    mc = to_np(out.mc_logits).astype(np.float64)
    expected = np.log(np.exp(mc[0]).sum()) - mc[0, 1]
    np.testing.assert_allclose(float(to_np(out.mc_loss)), expected, rtol=1e-5)


def test_sequence_classification_labels_out_of_range():
    model = _head(GPT2ForSequenceClassification, "sequence_classification")
    with pytest.raises(ValueError, match=r"`labels` must lie in \[0, num_labels=3\).*\[3\].*num_labels"):
        model(IDS, labels=np.array([0, 3]))
    # float targets (multi-label) have no range to check
    assert np.isfinite(to_np(model(IDS, labels=np.array([[0.0, 5.0, 1.0]] * 2, np.float32)).loss))


def test_token_classification_labels_out_of_range():
    model = _head(GPT2ForTokenClassification, "token_classification")
    with pytest.raises(ValueError, match=r"`labels` must lie in \[0, num_labels=3\).*\[-7, 3\]"):
        model(IDS, labels=np.array([[0, 1, 2, 3], [-100, -7, 0, 0]]))
    labels = np.array([[0, 1, 2, -100], [-100, 2, 0, 0]])
    out = model(IDS, labels=labels)
    logits, keep = to_np(out.logits).astype(np.float64), labels != -100
    nll = np.log(np.exp(logits).sum(-1)) - np.take_along_axis(logits, np.maximum(labels, 0)[..., None],
                                                              -1)[..., 0]
    np.testing.assert_allclose(float(to_np(out.loss)), nll[keep].mean(), rtol=1e-5)


def test_question_answering_positions_outside_input_are_ignored_as_transformers():
    model = _head(GPT2ForQuestionAnswering, "question_answering")
    out = model(IDS, start_positions=np.array([1, 50]), end_positions=np.array([2, 50]))
    s, e = to_np(out.start_logits).astype(np.float64), to_np(out.end_logits).astype(np.float64)
    expected = (np.log(np.exp(s[0]).sum()) - s[0, 1] + np.log(np.exp(e[0]).sum()) - e[0, 2]) / 2
    np.testing.assert_allclose(float(to_np(out.loss)), expected, rtol=1e-5)


def test_past_key_values_value_length_must_equal_key_length(model_and_past):
    model, past = model_and_past
    bad = list(past)
    bad[1] = (past[1][0], past[1][1][:, :, :3])
    with pytest.raises(ValueError, match=r"`past_key_values\[1\]` value must have shape .*past=5.*"
                       r"Received shape \(2, 4, 3, 8\)"):
        _call(model, bad)


@pytest.mark.parametrize("index,shape", [(0, (1, 4, 5, 8)), (1, (2, 2, 5, 8)), (0, (2, 4, 5, 4))])
def test_past_key_values_batch_heads_head_dim(model_and_past, index, shape):
    model, past = model_and_past
    bad = list(past)
    bad[index] = (np.zeros(shape, np.float32), np.zeros(shape, np.float32))
    with pytest.raises(ValueError, match=rf"`past_key_values\[{index}\]` key must have shape .*"
                       rf"Received shape \({', '.join(map(str, shape))}\)"):
        _call(model, bad)


def test_past_key_values_layers_and_length(model_and_past):
    model, past = model_and_past
    with pytest.raises(ValueError, match=r"`past_key_values` must hold one \(key, value\) pair per layer "
                       r"\(n_layer=2\). Received 1 entries"):
        _call(model, past[:1])
    with pytest.raises(ValueError, match=r"longer than the model's `n_positions`=24: past length 5"):
        _call(model, past, T=20)


@pytest.mark.parametrize("bad,match", [
    (lambda past: 5, r"`past_key_values` must be a sequence of per-layer \(key, value\) pairs"),
    (lambda past: [past[0], (past[1][0],)], r"`past_key_values\[1\]` must be a \(key, value\) pair"),
])
def test_past_key_values_structure(model_and_past, bad, match):
    model, past = model_and_past
    with pytest.raises(ValueError, match=match):
        _call(model, bad(past))


def test_past_key_values_checked_on_keras_dict_path(model_and_past):
    model, past = model_and_past
    bad = [past[0], (past[1][0], past[1][1][:, :, :3])]
    with pytest.raises(ValueError, match=r"`past_key_values\[1\]` value must have shape"):
        model({"input_ids": np.zeros((2, 1), np.int32), "past_key_values": tuple(bad)})
