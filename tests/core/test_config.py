import json

import pytest

from gpt2_core import GPT2Config, num_parameters

HUB_CONFIG = {  # the hub's gpt2 config.json, legacy keys included
    "activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.1,
    "bos_token_id": 50256, "embd_pdrop": 0.1, "eos_token_id": 50256, "initializer_range": 0.02,
    "layer_norm_epsilon": 1e-05, "model_type": "gpt2", "n_ctx": 1024, "n_embd": 768,
    "n_head": 12, "n_layer": 12, "n_positions": 1024, "resid_pdrop": 0.1,
    "summary_activation": None, "summary_first_dropout": 0.1, "summary_proj_to_labels": True,
    "summary_type": "cls_index", "summary_use_proj": True,
    "task_specific_params": {"text-generation": {"do_sample": True, "max_length": 50}},
    "vocab_size": 50257,
}


@pytest.mark.parametrize("name,count", [
    ("gpt2", 124_439_808), ("gpt2-medium", 354_823_168), ("gpt2-large", 774_030_080),
    ("gpt2-xl", 1_557_611_200), ("distilgpt2", 81_912_576),
])
def test_preset_parameter_counts(name, count):
    assert num_parameters(GPT2Config.from_preset(name)) == count


def test_hub_config_round_trip_keeps_legacy_and_unknown_keys(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(HUB_CONFIG))
    config = GPT2Config.from_json(tmp_path)
    assert config == GPT2Config.from_preset("gpt2", extra=config.extra)
    assert config.extra["n_ctx"] == 1024
    config.to_json(tmp_path / "out.json")
    written = json.loads((tmp_path / "out.json").read_text())
    for key, value in HUB_CONFIG.items():
        assert written[key] == value, key
    assert GPT2Config.from_json(tmp_path / "out.json") == GPT2Config.from_dict(written)


@pytest.mark.parametrize("config", [
    GPT2Config(), GPT2Config(num_labels=5, n_inner=7, eos_token_id=[1, 2], extra={"architectures": ["X"]}),
    GPT2Config(num_labels=2, extra={"id2label": {"0": "neg", "1": "pos"}, "label2id": {"neg": 0, "pos": 1}}),
])
def test_dict_round_trip_is_exact(config):
    assert GPT2Config.from_dict(config.to_dict()) == config
    assert GPT2Config.from_dict(json.loads(config.to_json_string())) == config


def test_legacy_n_ctx_alone_sets_n_positions():
    data = {k: v for k, v in HUB_CONFIG.items() if k != "n_positions"}
    assert GPT2Config.from_dict({**data, "n_ctx": 512}).n_positions == 512


def test_id2label_sets_num_labels():
    config = GPT2Config.from_dict({"id2label": {"0": "neg", "1": "neu", "2": "pos"}})
    assert config.num_labels == 3


def test_derived_values():
    c = GPT2Config(n_embd=64, n_head=4, n_layer=8, n_inner=None, scale_attn_by_inverse_layer_idx=True)
    assert (c.head_dim, c.inner_dim) == (16, 256)
    assert c.attn_scale(3) == pytest.approx(1 / 4 / 4)
    assert c.residual_init_std == pytest.approx(0.02 / 4)
    assert GPT2Config(scale_attn_weights=False).attn_scale(0) == 1.0
    assert hash(c) == hash(GPT2Config.from_dict(c.to_dict()))


@pytest.mark.parametrize("kwargs,message", [
    (dict(n_embd=770, n_head=12), r"`n_embd` must be divisible by `n_head`. Received: n_embd=770, n_head=12"),
    (dict(n_layer=0), r"`n_layer` must be a positive integer. Received: n_layer=0"),
    (dict(activation_function="gelu_new2"), r"`activation_function` must be one of .* Received: activation_function='gelu_new2'"),
    (dict(layer_norm_epsilon=0.0), r"`layer_norm_epsilon` must be > 0"),
    (dict(resid_pdrop=1.5), r"`resid_pdrop` must be a probability in \[0, 1\)"),
    (dict(n_inner=-3), r"`n_inner` must be None or a positive integer"),
    (dict(eos_token_id=[1, -2]), r"`eos_token_id` must be None"),
    (dict(problem_type="ranking"), r"`problem_type` must be one of"),
    (dict(summary_type="max"), r"`summary_type` must be one of"),
])
def test_invalid_configs_name_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GPT2Config(**kwargs)


def test_all_problems_reported_together():
    with pytest.raises(ValueError, match=r"n_layer.*n_head"):
        GPT2Config(n_layer=0, n_head=-1)


def test_other_model_types_are_refused():
    with pytest.raises(ValueError, match=r"describes a 'llama' model, not GPT-2"):
        GPT2Config.from_dict({"model_type": "llama", "hidden_size": 4096})


def test_missing_and_corrupt_config_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"No GPT-2 config at .*config.json"):
        GPT2Config.from_json(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"is not valid JSON"):
        GPT2Config.from_json(tmp_path)


def test_unknown_preset():
    with pytest.raises(ValueError, match=r"Unknown preset `name`. Received: name='gpt3'"):
        GPT2Config.from_preset("gpt3")


def test_runtime_keys_are_assignable_and_checked():
    import dataclasses

    config = GPT2Config(n_layer=2, output_hidden_states=True)
    before = hash(config)
    config.use_cache = False
    config.output_attentions = True
    config.return_dict = False
    assert (config.use_cache, config.output_hidden_states, config.output_attentions,
            config.return_dict) == (False, True, True, False)
    assert hash(config) == before  # runtime keys leave the hash alone
    with pytest.raises(TypeError, match=r"`use_cache` must be a bool.*Received: use_cache=1"):
        config.use_cache = 1
    with pytest.raises(dataclasses.FrozenInstanceError, match=r"'n_layer'.*config.replace"):
        config.n_layer = 3
    with pytest.raises(ValueError, match=r"`return_dict` must be a bool.*'yes'"):
        GPT2Config(return_dict="yes")
    assert config.replace(n_layer=3).output_attentions  # replace keeps them


def test_runtime_keys_load_from_and_save_to_config_json(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({**HUB_CONFIG, "output_hidden_states": True,
                                                      "use_cache": False}))
    config = GPT2Config.from_json(tmp_path)
    assert config.output_hidden_states and not config.use_cache and "use_cache" not in config.extra
    assert config.to_dict()["output_hidden_states"] is True
    assert "return_dict" not in GPT2Config().to_dict()  # defaults are not written (as the hub)
    assert GPT2Config.from_dict(config.to_dict()) == config
    assert config.model_type == "gpt2" and config.get_text_config() is config
