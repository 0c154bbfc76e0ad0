"""gpt2_keras models against the float64 NumPy reference and transformers' torch GPT-2, on
whichever Keras backend this process runs (KERAS_BACKEND)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras_test_helpers import CONFIGS, assert_close, batch, to_np

import gpt2_core
from gpt2_core import activations
from gpt2_keras import GPT2LMHeadModel, GPT2Model
from gpt2_keras.layers import activation

# float32 model vs float64 reference, random weights of scale 0.2 in every tensor: observed
# errors are ~2e-6 on logits of magnitude ~10; 1e-4 leaves room for backend kernel order.
ATOL = 1e-4


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def lm(request):
    config = CONFIGS[request.param]
    params = gpt2_core.random_params(config, seed=1)
    return config, params, GPT2LMHeadModel.from_params(config, params)


def test_logits_loss_hidden_attentions_cache_match_reference(lm):
    config, params, model = lm
    ids, mask = batch(config)
    labels = np.where(mask == 1, ids, -100)
    out = model(input_ids=ids, attention_mask=mask, labels=labels, output_hidden_states=True,
                output_attentions=True, use_cache=True)
    ref = gpt2_core.reference.forward(config, params, ids, attention_mask=mask, labels=labels)
    assert_close("logits", out.logits, ref.logits, ATOL)
    assert_close("loss", out.loss, ref.loss, 1e-5)
    assert len(out.hidden_states) == config.n_layer + 1
    for i, (h, r) in enumerate(zip(out.hidden_states, ref.hidden_states)):
        assert_close(f"hidden_states[{i}]", h, r, ATOL)
    for i, (a, r) in enumerate(zip(out.attentions, ref.attentions)):
        assert_close(f"attentions[{i}]", a, r, 1e-5)
    for i, ((k, v), (rk, rv)) in enumerate(zip(out.past_key_values, ref.past_key_values)):
        assert_close(f"key[{i}]", k, rk, ATOL)
        assert_close(f"value[{i}]", v, rv, ATOL)


def test_incremental_decoding_with_past_matches_reference(lm):
    config, params, model = lm
    ids, mask = batch(config, T=8)
    first = model(input_ids=ids[:, :5], attention_mask=mask[:, :5], use_cache=True)
    second = model(input_ids=ids[:, 5:], attention_mask=mask, past_key_values=first.past_key_values,
                   use_cache=True)
    ref = gpt2_core.reference.forward(config, params, ids, attention_mask=mask)
    assert_close("logits after past", second.logits, ref.logits[:, 5:], ATOL)
    assert to_np(second.past_key_values[0][0]).shape == (3, config.n_head, 8, config.head_dim)


def test_token_type_and_position_ids_and_head_mask_match_reference(lm):
    config, params, model = lm
    ids, _ = batch(config, T=6)
    rng = np.random.default_rng(3)
    tt = rng.integers(0, config.vocab_size, ids.shape).astype(np.int32)
    pos = rng.integers(0, config.n_positions, ids.shape).astype(np.int32)
    head_mask = rng.uniform(0, 1, (config.n_layer, config.n_head)).astype(np.float32)
    out = model(input_ids=ids, token_type_ids=tt, position_ids=pos, head_mask=head_mask)
    ref = gpt2_core.reference.forward(config, params, ids, token_type_ids=tt, position_ids=pos,
                                      head_mask=head_mask)
    assert_close("logits", out.logits, ref.logits, ATOL)


def test_keras_dict_call_equals_keyword_call(lm):
    config, _, model = lm
    ids, mask = batch(config)
    raw = model({"input_ids": ids, "attention_mask": mask})
    assert_close("dict path", raw["logits"], to_np(model(input_ids=ids, attention_mask=mask).logits), 0)


def test_base_model_last_hidden_state():
    config = CONFIGS["base"]
    params = gpt2_core.random_params(config, seed=2, head="base")
    model = GPT2Model.from_params(config, params)
    ids, mask = batch(config)
    out = model(input_ids=ids, attention_mask=mask)
    ref = gpt2_core.reference.forward(config, params, ids, attention_mask=mask)
    assert_close("last_hidden_state", out.last_hidden_state, ref.hidden_states[-1], ATOL)


@pytest.mark.parametrize("kind", sorted(set(activations.ACTIVATION_KIND.values())))
def test_activation_matches_gpt2_core_formula(kind):
    name = next(n for n, k in activations.ACTIVATION_KIND.items() if k == kind)
    x = np.linspace(-6, 6, 241).astype(np.float32)
    want = activations.ACTIVATIONS[name](x.astype(np.float64))
    # float32 evaluation of the same formula: a few ulps of values up to 6.
    assert_close(kind, activation(kind, keras.ops.convert_to_tensor(x)), want, 3e-6)


def test_bad_inputs_give_clear_errors():
    config = CONFIGS["base"]
    model = GPT2LMHeadModel(config)
    ids = np.ones((1, 4), np.int32)
    with pytest.raises(ValueError, match=r"input_ids.*\[0, vocab_size=101\).*\[101\]"):
        model(input_ids=np.full((1, 4), 101, np.int32))
    with pytest.raises(ValueError, match="longer than the model's `n_positions`=32"):
        model(input_ids=np.ones((1, 33), np.int32))
    with pytest.raises(ValueError, match=r"attention_mask.*\(1, 4\)"):
        model(input_ids=ids, attention_mask=np.ones((1, 5), np.int32))
    with pytest.raises(TypeError, match="must hold integers"):
        model(input_ids=ids.astype(np.float32))
    with pytest.raises(TypeError, match="mc_token_ids"):
        model(input_ids=ids, mc_token_ids=np.zeros((1,), np.int32))
    with pytest.raises(TypeError, match="GPT2Config"):
        GPT2LMHeadModel({"n_embd": 32})
