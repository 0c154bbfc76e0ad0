"""Native Keras serialization and mixed precision, on any Keras backend."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras_test_helpers import CONFIGS, assert_close, batch, to_np

import gpt2_core
import gpt2_keras


@pytest.mark.parametrize("cls", ["GPT2LMHeadModel", "GPT2ForSequenceClassification"])
def test_keras_file_round_trip_keeps_config_and_weights(tmp_path, cls):
    config = CONFIGS["untied_scaled"].replace(num_labels=3)
    head = "lm" if cls == "GPT2LMHeadModel" else "sequence_classification"
    model = getattr(gpt2_keras, cls).from_params(config, gpt2_core.random_params(config, 2, head=head))
    ids, mask = batch(config)
    ids = np.where(mask == 1, ids, config.pad_token_id).astype(np.int32)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is type(model) and loaded.config == config
    got, want = loaded(input_ids=ids, attention_mask=mask), model(input_ids=ids, attention_mask=mask)
    np.testing.assert_array_equal(to_np(got.logits), to_np(want.logits))


def test_get_config_from_config_round_trip():
    config = CONFIGS["base"]
    model = gpt2_keras.GPT2LMHeadModel(config, name="tiny")
    clone = gpt2_keras.GPT2LMHeadModel.from_config(model.get_config())
    assert clone.config == config and clone.name == "tiny"


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_is_close_to_float32(policy):
    config = CONFIGS["base"]
    params = gpt2_core.random_params(config, seed=1, scale=0.05)
    ref = gpt2_keras.GPT2LMHeadModel.from_params(config, params)
    half = gpt2_keras.GPT2LMHeadModel.from_params(config, params, dtype=policy)
    assert half.transformer.h[0].attn.c_attn.compute_dtype == policy.split("_")[1]
    assert keras.backend.standardize_dtype(half.transformer.ln_f.weight.dtype) == "float32"
    ids, mask = batch(config)
    got = half(input_ids=ids, attention_mask=mask)
    want = to_np(ref(input_ids=ids, attention_mask=mask).logits)
    assert keras.backend.standardize_dtype(got.logits.dtype) == "float32"
    # half precision keeps 8 (bf16) or 11 (fp16) mantissa bits through 2 layers: logits of
    # magnitude ~1 agree to a few 1e-2 (bf16) / 1e-3 (fp16); the tolerance is a loose bound.
    atol = 0.1 if policy == "mixed_bfloat16" else 0.02
    keep = mask[:, :, None] == 1
    assert_close("half logits", to_np(got.logits) * keep, want * keep, atol)
