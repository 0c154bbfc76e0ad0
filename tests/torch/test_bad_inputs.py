"""Bad arguments at gpt2_torch's public boundary: each error names the argument."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from gpt2_core import GPT2Config, random_params, save_pretrained  # noqa: E402
from gpt2_torch import GPT2LMHeadModel  # noqa: E402

CONFIG = GPT2Config(vocab_size=97, n_positions=24, n_embd=32, n_layer=2, n_head=4)


@pytest.fixture(scope="module")
def model_and_past(tmp_path_factory):
    path = tmp_path_factory.mktemp("m")
    save_pretrained(path, CONFIG, random_params(CONFIG, seed=1))
    model = GPT2LMHeadModel.from_pretrained(path)
    ids = torch.tensor(np.random.default_rng(0).integers(0, 97, (2, 5)))
    with torch.no_grad():
        past = model(ids, use_cache=True).past_key_values
    return model, [(k, v) for k, v in past]


def _call(model, past, T=1):
    with torch.no_grad():
        return model(torch.zeros((2, T), dtype=torch.long), past_key_values=past)


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
    bad[index] = (torch.zeros(shape), torch.zeros(shape))
    with pytest.raises(ValueError, match=rf"`past_key_values\[{index}\]` key must have shape"):
        _call(model, bad)


def test_past_key_values_layers_and_length(model_and_past):
    model, past = model_and_past
    with pytest.raises(ValueError, match=r"`past_key_values` must hold one \(key, value\) pair per layer"):
        _call(model, past[:1])
    with pytest.raises(ValueError, match=r"longer than the model's `n_positions`=24: past length 5"):
        _call(model, past, T=20)


def test_allow_pickle_is_accepted(tmp_path):
    params = random_params(CONFIG, seed=2)
    torch.save({k: torch.tensor(np.array(v)) for k, v in params.items()}, tmp_path / "pytorch_model.bin")
    CONFIG.to_json(tmp_path / "config.json")
    with pytest.raises(ValueError, match=r"`allow_pickle=True` to `from_pretrained`"):
        GPT2LMHeadModel.from_pretrained(tmp_path)
    model = GPT2LMHeadModel.from_pretrained(tmp_path, allow_pickle=True)
    np.testing.assert_array_equal(model.transformer.wte.weight.detach().numpy(), params["wte.weight"])
