"""generation_config.json: read by `from_pretrained` (the model's generate defaults) and written
by `save_pretrained` with the weights. Written once; each backend's test module imports these
tests and defines the `lm_class` fixture (its `GPT2LMHeadModel`)."""

from __future__ import annotations

import json

import numpy as np

from gpt2_core import GPT2Config, random_params, save_pretrained
from gpt2_core.generation_config import GenerationConfig

CFG = GPT2Config(vocab_size=64, n_positions=32, n_embd=16, n_layer=1, n_head=2, eos_token_id=3,
                 bos_token_id=1)


def test_generation_config_json_sets_generate_defaults_and_survives_a_save(tmp_path, lm_class):
    save_pretrained(tmp_path, CFG, random_params(CFG, seed=0))
    GenerationConfig.from_dict({"max_new_tokens": 3, "pad_token_id": 5, "custom_key": "kept"}).save_pretrained(
        tmp_path)
    model = lm_class.from_pretrained(tmp_path)
    assert model.generation_config.max_new_tokens == 3
    ids = np.array([[7, 8, 9, 10]])
    assert np.asarray(model.generate(ids)).shape == (1, 7)
    model.generation_config.max_new_tokens = 2  # assignable, as in transformers
    assert np.asarray(model.generate(ids)).shape == (1, 6)
    model.save_pretrained(tmp_path / "out")
    data = json.loads((tmp_path / "out" / "generation_config.json").read_text())
    assert data == {"max_new_tokens": 2, "pad_token_id": 5, "custom_key": "kept"}


def test_a_folder_without_generation_config_takes_the_model_configs_ids(tmp_path, lm_class):
    save_pretrained(tmp_path, CFG, random_params(CFG, seed=0))
    model = lm_class.from_pretrained(tmp_path)
    assert (model.generation_config.eos_token_id, model.generation_config.bos_token_id) == (3, 1)
    model.save_pretrained(tmp_path / "out")
    data = json.loads((tmp_path / "out" / "generation_config.json").read_text())
    assert data == {"eos_token_id": 3, "bos_token_id": 1}
