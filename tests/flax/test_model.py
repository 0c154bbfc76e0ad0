"""Forward-pass parity: logits, caches, hidden states, attentions and losses equal the float64
`gpt2_core` reference and transformers' torch model, with every tensor randomised."""

import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import CONFIGS, checkpoint, random_ids

import gpt2_core
from gpt2_core import reference
from gpt2_core.activations import ACTIVATION_KIND, ACTIVATIONS
from gpt2_flax import GPT2LMHeadModel, GPT2Model, KVCache
from gpt2_flax.modeling import ACTIVATION_FN

# float32 against the float64 oracle, through 2-3 blocks with random weights of std 0.2
# (|logits| ~ 10): observed max error ~2e-6; 1e-4 leaves headroom for XLA's reduction order.
ATOL = 1e-4


def padded_batch(config):
    ids = random_ids(config, (3, 9), seed=1)
    mask = np.ones_like(ids)
    mask[1, :3] = 0  # left padding
    mask[2, -2:] = 0  # right padding
    return ids, mask


def test_logits_hidden_attentions_loss_match_reference(tmp_path, config):
    path, params = checkpoint(tmp_path, config)
    model = GPT2LMHeadModel.from_pretrained(path)
    ids, mask = padded_batch(config)
    labels = ids.copy()
    labels[0, 4] = -100
    out = model(ids, mask, labels=labels, output_hidden_states=True, output_attentions=True)
    ref = reference.forward(config, params, ids, mask, labels=labels)
    np.testing.assert_allclose(out.logits, ref.logits, atol=ATOL, rtol=0)
    assert float(out.loss) == pytest.approx(ref.loss, abs=1e-5)  # mean of float32 logsumexps
    for got, want in zip(out.hidden_states, ref.hidden_states, strict=True):
        np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)
    for got, want in zip(out.attentions, ref.attentions, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)  # probabilities in [0, 1]
    for (k, v), (rk, rv) in zip(out.past_key_values, ref.past_key_values, strict=True):
        np.testing.assert_allclose(k, rk, atol=ATOL, rtol=0)
        np.testing.assert_allclose(v, rv, atol=ATOL, rtol=0)


def test_incremental_decoding_with_tuple_and_preallocated_cache(tmp_path):
    config = CONFIGS["flags"]
    path, params = checkpoint(tmp_path, config)
    model = GPT2LMHeadModel.from_pretrained(path)
    ids, mask = padded_batch(config)
    ref = reference.forward(config, params, ids, mask)
    first = model(ids[:, :5], mask[:, :5])
    second = model(ids[:, 5:], mask, past_key_values=first.past_key_values)
    np.testing.assert_allclose(second.logits, ref.logits[:, 5:], atol=ATOL, rtol=0)
    assert second.past_key_values[0][0].shape == (3, 4, 9, 8)
    cache = model.init_cache(3, 16)
    out = model(ids[:, :5], mask[:, :5], past_key_values=cache)
    assert isinstance(out.past_key_values, KVCache) and int(out.past_key_values.index) == 5
    out = model(ids[:, 5:], mask, past_key_values=out.past_key_values)
    np.testing.assert_allclose(out.logits, ref.logits[:, 5:], atol=ATOL, rtol=0)
    # keys/values of padding slots come from all-masked queries (uniform over whatever slots
    # exist): meaningless by the spec, so compare the attended slots only
    keep = mask[:, None, :, None].astype(bool)
    got_v = np.asarray(out.past_key_values.to_past(9)[1][1])
    np.testing.assert_allclose(np.where(keep, got_v, 0), np.where(keep, ref.past_key_values[1][1], 0),
                               atol=ATOL, rtol=0)


def test_token_types_positions_and_head_mask(tmp_path):
    config = CONFIGS["base"]
    path, params = checkpoint(tmp_path, config)
    model = GPT2LMHeadModel.from_pretrained(path)
    ids = random_ids(config, (2, 6), seed=3)
    tt = random_ids(config, (2, 6), seed=4)
    pos = np.array([[3, 4, 5, 6, 7, 8], [0, 1, 2, 3, 4, 5]])
    hm = np.array([[1.0, 0.0, 0.5, 1.0], [0.0, 1.0, 1.0, 0.25]])
    out = model(ids, token_type_ids=tt, position_ids=pos, head_mask=hm)
    ref = reference.forward(config, params, ids, token_type_ids=tt, position_ids=pos, head_mask=hm)
    np.testing.assert_allclose(out.logits, ref.logits, atol=ATOL, rtol=0)


def test_matches_transformers_logits_and_cache(tmp_path, config):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    path, _ = checkpoint(tmp_path, config)
    model = GPT2LMHeadModel.from_pretrained(path)
    hf = transformers.GPT2LMHeadModel.from_pretrained(path, attn_implementation="eager").eval()
    ids, mask = padded_batch(config)
    # transformers' forward uses arange positions; pass the spec's mask-derived ones to both
    pos = reference.default_position_ids(mask, 0, *ids.shape)
    with torch.no_grad():
        want = hf(torch.tensor(ids), attention_mask=torch.tensor(mask),
                  position_ids=torch.tensor(pos), use_cache=True)
    got = model(ids, mask, position_ids=pos)
    # two float32 implementations: ~1e-6 apart, as each is from the float64 oracle
    np.testing.assert_allclose(got.logits, want.logits.numpy(), atol=ATOL, rtol=0)
    layer = want.past_key_values.layers[1]
    np.testing.assert_allclose(got.past_key_values[1][0], layer.keys.numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(got.past_key_values[1][1], layer.values.numpy(), atol=ATOL, rtol=0)


def test_base_model_hidden_state(tmp_path):
    config = CONFIGS["base"]
    path, params = checkpoint(tmp_path, config, head="base")
    model = GPT2Model.from_pretrained(path)
    ids = random_ids(config, (2, 5))
    ref = reference.forward(config, {**params}, ids)
    np.testing.assert_allclose(model(ids).last_hidden_state, ref.hidden_states[-1], atol=ATOL,
                               rtol=0)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activations_equal_gpt2_core(name):
    x = np.linspace(-6, 6, 1001)
    want = ACTIVATIONS[name](x)  # float64 NumPy formulas
    got = ACTIVATION_FN[ACTIVATION_KIND[name]](jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(got, want, atol=2e-6, rtol=0)  # float32 rounding of O(1) values


def test_gelu_new_is_not_exact_gelu():
    x = jnp.linspace(-3, 3, 101)
    gap = jnp.abs(ACTIVATION_FN["gelu_tanh"](x) - jax.nn.gelu(x, approximate=False)).max()
    assert gap > 1e-4  # the tanh form GPT-2 needs differs visibly from the erf form


def test_save_pretrained_round_trip_and_transformers_loads_it(tmp_path):
    config = CONFIGS["untied_upcast"]
    path, params = checkpoint(tmp_path / "a", config)
    model = GPT2LMHeadModel.from_pretrained(path)
    got = model.to_params()
    assert set(got) == set(params)
    for name in params:
        np.testing.assert_array_equal(got[name], params[name], err_msg=name)
    model.save_pretrained(tmp_path / "b")
    again = GPT2LMHeadModel.from_pretrained(tmp_path / "b")
    ids = random_ids(config, (1, 5))
    np.testing.assert_array_equal(again(ids).logits, model(ids).logits)


def test_orbax_round_trip_gives_identical_logits(tmp_path):
    config = CONFIGS["base"]
    path, _ = checkpoint(tmp_path / "a", config)
    model = GPT2LMHeadModel.from_pretrained(path)
    model.save_state(tmp_path / "orbax")
    other = GPT2LMHeadModel(config)  # different (GPT-2 init) weights
    ids = random_ids(config, (2, 5))
    assert not np.array_equal(other(ids).logits, model(ids).logits)
    other.restore_state(tmp_path / "orbax")
    np.testing.assert_array_equal(other(ids).logits, model(ids).logits)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_low_precision_compute_and_params(tmp_path, dtype):
    config = CONFIGS["base"]
    path, params = checkpoint(tmp_path, config, scale=0.05)
    model = GPT2LMHeadModel.from_pretrained(path, dtype=dtype, param_dtype=dtype)
    assert model.transformer.h[0].attn.c_attn.kernel.get_value().dtype == jnp.dtype(dtype)
    ids = random_ids(config, (2, 6))
    out = model(ids)
    assert out.logits.dtype == jnp.dtype(dtype)
    ref = reference.forward(config, params, ids)
    # bf16 keeps 8 bits of mantissa: ~0.4% per op, logits here are O(1)
    np.testing.assert_allclose(np.asarray(out.logits, np.float32), ref.logits, atol=0.1, rtol=0)
    mixed = GPT2LMHeadModel.from_pretrained(path, dtype=dtype, param_dtype="float32")
    assert mixed.transformer.wte.embedding.get_value().dtype == jnp.float32
    assert mixed(ids).logits.dtype == jnp.dtype(dtype)


# ---- bad inputs ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_model():
    return GPT2LMHeadModel(CONFIGS["base"])


def test_out_of_range_ids_rejected(small_model):
    with pytest.raises(ValueError, match=r"`input_ids` must lie in \[0, vocab_size=96\)"):
        small_model(np.array([[1, 96]]))
    with pytest.raises(ValueError, match="out-of-range ids"):
        small_model(jnp.array([[-1, 3]]))


def test_overlong_and_mismatched_inputs_rejected(small_model):
    with pytest.raises(ValueError, match="longer than the model's `n_positions`=48"):
        small_model(np.zeros((1, 49), np.int32))
    past = small_model(np.zeros((1, 40), np.int32)).past_key_values
    with pytest.raises(ValueError, match="past length 40 \\+ input length 9"):
        small_model(np.zeros((1, 9), np.int32), past_key_values=past)
    with pytest.raises(ValueError, match=r"`attention_mask` must have shape \(batch, past \+ seq\)"):
        small_model(np.zeros((2, 5), np.int32), np.ones((2, 4)))
    with pytest.raises(TypeError, match="`input_ids` must hold integers"):
        small_model(np.zeros((1, 3), np.float32))
    with pytest.raises(ValueError, match=r"`input_ids` must have shape \(batch, seq\)"):
        small_model(np.zeros((3,), np.int32))


def test_traced_ids_shape_checked_values_nan_or_checkify(small_model):
    from jax.experimental import checkify

    from gpt2_flax.inputs import checkify_input_ids

    @jax.jit
    def logits(ids):
        return small_model(ids).logits

    # values of traced ids cannot be read at the boundary: an out-of-range id gives NaN rows
    # (the embedding gather fills instead of clamping), never a silently wrong finite answer
    out = np.asarray(logits(jnp.array([[1, 200], [1, 2]])))
    assert np.isnan(out[0]).all() and np.isfinite(out[1]).all()
    with pytest.raises(ValueError, match="longer than the model's `n_positions`"):
        logits(jnp.zeros((1, 60), jnp.int32))  # shapes are static: still checked under jit

    def checked(ids):
        checkify_input_ids(small_model.config, ids)
        return small_model(ids).logits
    err, _ = jax.jit(checkify.checkify(checked))(jnp.array([[1, 200]]))
    with pytest.raises(Exception, match="must lie in"):
        err.throw()
    err, _ = jax.jit(checkify.checkify(checked))(jnp.array([[1, 2]]))
    err.throw()  # in range: no error


def test_import_leaves_torch_and_tensorflow_out():
    code = ("import sys, gpt2_flax; bad = [m for m in ('torch', 'tensorflow', 'keras') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_non_finite_checkpoint_rejected_with_the_tensor_name(tmp_path):
    # finiteness is checked on the loaded copies (after the file pages are released), so a
    # NaN must still be reported, by name
    config = CONFIGS["base"]
    params = gpt2_core.random_params(config, 0)
    params["h.1.mlp.c_fc.bias"][3] = np.nan
    gpt2_core.save_pretrained(tmp_path, config, params)
    with pytest.raises(gpt2_core.CheckpointError,
                       match=r"(?s)" + re.escape(repr(str(tmp_path))) +
                       r".*`h.1.mlp.c_fc.bias` contains NaN or inf"):
        GPT2LMHeadModel.from_pretrained(tmp_path)
