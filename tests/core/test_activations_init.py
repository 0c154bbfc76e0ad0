import numpy as np
import pytest

from gpt2_core import GPT2Config, activations, init_params, random_params, weight_layout

torch = pytest.importorskip("torch")
act = pytest.importorskip("transformers.activations")


@pytest.mark.parametrize("name", sorted(activations.ACTIVATIONS))
def test_activation_matches_transformers(name):
    x = np.linspace(-8, 8, 2001)
    ours = activations.ACTIVATIONS[name](x)
    theirs = act.ACT2FN[name](torch.tensor(x, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-12, rtol=1e-12)


def test_gpt2_gelu_is_not_the_exact_one():
    x = np.linspace(-3, 3, 101)
    assert np.abs(activations.gelu_tanh(x) - activations.gelu_exact(x)).max() > 1e-4


def test_init_follows_gpt2_paper():
    config = GPT2Config(vocab_size=500, n_positions=64, n_embd=128, n_layer=8, n_head=4)
    params = init_params(config, seed=0)
    assert params["h.0.attn.c_attn.weight"].std() == pytest.approx(0.02, rel=0.02)
    assert params["h.3.mlp.c_proj.weight"].std() == pytest.approx(0.02 / 4, rel=0.02)
    assert params["h.3.attn.c_proj.weight"].std() == pytest.approx(0.02 / 4, rel=0.03)
    assert (params["h.0.ln_1.weight"] == 1).all() and (params["h.0.mlp.c_fc.bias"] == 0).all()
    again = init_params(config, seed=0)
    assert all(np.array_equal(params[k], again[k]) for k in params)
    assert not np.array_equal(params["wte.weight"], init_params(config, seed=1)["wte.weight"])


def test_random_params_randomise_every_tensor():
    config = GPT2Config(vocab_size=50, n_positions=8, n_embd=8, n_layer=2, n_head=2)
    params = random_params(config)
    assert [s.name for s in weight_layout(config)] == list(params)
    for name, value in params.items():
        assert np.unique(value).size == value.size, name


def test_mask_value_is_the_dtypes_most_negative_finite_number():
    from gpt2_core.constants import mask_value

    assert mask_value(np.float32) == float(torch.finfo(torch.float32).min)
    assert mask_value(np.float16) == float(torch.finfo(torch.float16).min)
    assert mask_value(torch.bfloat16) == float(torch.finfo(torch.bfloat16).min)
    assert mask_value("bfloat16") == float(torch.finfo(torch.bfloat16).min)
