"""The NumPy reference against `transformers.GPT2LMHeadModel` (PyTorch, float32, eager).

Tolerance: the reference runs in float64, transformers in float32; with every weight drawn at
scale 0.2 and n_embd <= 32, float32 rounding in the matmuls and softmax stays below 1e-5
relative. ATOL/RTOL below leave a 10x margin over the largest difference seen (about 2e-6).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import CONFIGS, random_ids

from gpt2_core import reference

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

ATOL, RTOL = 5e-5, 1e-4


def hf_model(path):
    return transformers.GPT2LMHeadModel.from_pretrained(path, attn_implementation="eager").eval()


def hf_forward(model, ids, mask=None, positions=None, labels=None, token_types=None):
    t = lambda a: None if a is None else torch.tensor(a)  # noqa: E731
    with torch.no_grad():
        return model(input_ids=t(ids), attention_mask=t(mask), position_ids=t(positions),
                     token_type_ids=t(token_types), labels=t(labels), use_cache=True,
                     output_hidden_states=True, output_attentions=True)


def hf_cache(out):
    cache = out.past_key_values
    return [(layer.keys.numpy(), layer.values.numpy()) for layer in cache.layers]


def close(a, b):
    np.testing.assert_allclose(a, b, atol=ATOL, rtol=RTOL)


def test_logits_cache_hidden_attentions_loss(checkpoint):
    path, config, params = checkpoint
    ids = random_ids(config, (2, 11))
    labels = ids.copy()
    labels[0, :4] = -100
    out = hf_forward(hf_model(path), ids, labels=labels)
    ref = reference.forward(config, params, ids, labels=labels)
    close(out.logits.numpy(), ref.logits)
    assert out.loss.item() == pytest.approx(ref.loss, rel=1e-5)
    for (hk, hv), (rk, rv) in zip(hf_cache(out), ref.past_key_values, strict=True):
        close(hk, rk)
        close(hv, rv)
    assert len(out.hidden_states) == len(ref.hidden_states) == config.n_layer + 1
    for h, r in zip(out.hidden_states, ref.hidden_states):
        close(h.numpy(), r)
    for h, r in zip(out.attentions, ref.attentions, strict=True):
        close(h.numpy(), r)


def test_token_type_ids_embed_through_wte(checkpoint):
    path, config, params = checkpoint
    ids, types = random_ids(config, (2, 7)), random_ids(config, (2, 7), seed=3)
    out = hf_forward(hf_model(path), ids, token_types=types)
    close(out.logits.numpy(), reference.forward(config, params, ids, token_type_ids=types).logits)


def test_left_and_right_padding_match_unpadded_rows():
    config = CONFIGS["scaling_flags"]
    from gpt2_core import random_params

    params = random_params(config, seed=3)
    short, long_ = random_ids(config, (1, 5), seed=1), random_ids(config, (1, 9), seed=2)
    pad = 0
    left = np.concatenate([np.full((1, 4), pad), short], 1)
    right = np.concatenate([short, np.full((1, 4), pad)], 1)
    for batch_row, mask_row, sl in (
        (left, np.r_[np.zeros(4), np.ones(5)], slice(4, 9)),
        (right, np.r_[np.ones(5), np.zeros(4)], slice(0, 5)),
    ):
        ids = np.concatenate([batch_row, long_])
        mask = np.stack([mask_row, np.ones(9)]).astype(np.int64)
        out = reference.forward(config, params, ids, attention_mask=mask)
        np.testing.assert_allclose(out.logits[0, sl], reference.forward(config, params, short).logits[0],
                                   atol=1e-10)
        np.testing.assert_allclose(out.logits[1], reference.forward(config, params, long_).logits[0],
                                   atol=1e-10)


def test_left_padded_batch_matches_transformers_with_explicit_positions(checkpoint):
    path, config, params = checkpoint
    ids = random_ids(config, (2, 8))
    mask = np.ones_like(ids)
    mask[0, :3] = 0
    positions = reference.default_position_ids(mask, 0, 2, 8)
    out = hf_forward(hf_model(path), ids, mask=mask, positions=positions)
    ref = reference.forward(config, params, ids, attention_mask=mask)
    close(out.logits.numpy()[0, 3:], ref.logits[0, 3:])
    close(out.logits.numpy()[1], ref.logits[1])


@pytest.mark.parametrize("chunks", [(6, 1, 1, 1, 1), (3, 4, 3)])
def test_incremental_decoding_equals_full_forward(chunks):
    config = CONFIGS["scaling_flags"]
    from gpt2_core import random_params

    params = random_params(config, seed=5)
    ids = random_ids(config, (2, sum(chunks)))
    mask = np.ones_like(ids)
    mask[1, :2] = 0
    full = reference.forward(config, params, ids, attention_mask=mask)
    past, start, pieces = None, 0, []
    for n in chunks:
        out = reference.forward(config, params, ids[:, start:start + n],
                                attention_mask=mask[:, :start + n], past_key_values=past)
        past, start = out.past_key_values, start + n
        pieces.append(out.logits)
    np.testing.assert_allclose(np.concatenate(pieces, 1)[:, 2:], full.logits[:, 2:], atol=1e-10)
    for (k, v), (fk, fv) in zip(past, full.past_key_values):
        np.testing.assert_allclose(k[..., 2:, :], fk[..., 2:, :], atol=1e-10)
        np.testing.assert_allclose(v[..., 2:, :], fv[..., 2:, :], atol=1e-10)


def test_head_mask_equals_zeroing_the_heads_projection_rows(checkpoint):
    # transformers 5 dropped `head_mask`, so the oracle is the math: masking head j of layer i
    # removes its slice of the input of `h.i.attn.c_proj`.
    _, config, params = checkpoint
    ids = random_ids(config, (2, 6))
    head_mask = np.ones((config.n_layer, config.n_head))
    head_mask[0, 1] = 0.0
    head_mask[-1, 0] = 0.0
    edited = dict(params)
    hs = config.head_dim
    for layer, head in ((0, 1), (config.n_layer - 1, 0)):
        w = edited[f"h.{layer}.attn.c_proj.weight"].copy()
        w[head * hs:(head + 1) * hs] = 0.0
        edited[f"h.{layer}.attn.c_proj.weight"] = w
    masked = reference.forward(config, params, ids, head_mask=head_mask)
    np.testing.assert_allclose(masked.logits, reference.forward(config, edited, ids).logits, atol=1e-10)
    assert not np.allclose(masked.logits, reference.forward(config, params, ids).logits)


def test_loss_with_all_labels_ignored_is_nan():
    config = CONFIGS["default"]
    from gpt2_core import random_params

    ids = random_ids(config, (1, 4))
    out = reference.forward(config, random_params(config), ids, labels=np.full_like(ids, -100))
    assert np.isnan(out.loss)


@pytest.mark.parametrize("kwargs,error,message", [
    (dict(input_ids=[[1, 200]]), ValueError, r"`input_ids` must lie in \[0, vocab_size=97\). Received out-of-range ids \[200\]"),
    (dict(input_ids=[[-1, 2]]), ValueError, r"out-of-range ids \[-1\]"),
    (dict(input_ids=[[0.5, 2.0]]), TypeError, r"`input_ids` must hold integers"),
    (dict(input_ids=[1, 2]), ValueError, r"`input_ids` must have shape \(batch, seq\)"),
    (dict(input_ids=[list(range(25))]), ValueError, r"longer than the model's `n_positions`=24: past length 0 \+ input length 25"),
    (dict(input_ids=[[1, 2]], attention_mask=[[1, 1, 1]]), ValueError, r"`attention_mask` must have shape \(batch, past \+ seq\) = \(1, 2\)"),
    (dict(input_ids=[[1, 2]], position_ids=[[0, 24]]), ValueError, r"`position_ids` must lie in \[0, n_positions=24\)"),
    (dict(input_ids=[[1, 2]], labels=[[1]]), ValueError, r"`labels` must have the shape of `input_ids`"),
])
def test_bad_inputs_raise_clear_errors(kwargs, error, message):
    config = CONFIGS["default"]
    from gpt2_core import random_params

    kwargs = {k: np.asarray(v) for k, v in kwargs.items()}
    with pytest.raises(error, match=message):
        reference.forward(config, random_params(config), **kwargs)


def test_past_counts_toward_n_positions():
    config = CONFIGS["default"]
    from gpt2_core import random_params

    params = random_params(config)
    past = reference.forward(config, params, random_ids(config, (1, 20))).past_key_values
    with pytest.raises(ValueError, match=r"past length 20 \+ input length 5 = 25"):
        reference.forward(config, params, random_ids(config, (1, 5)), past_key_values=past)
