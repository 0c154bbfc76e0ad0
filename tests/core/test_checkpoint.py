"""Checkpoint IO against transformers: every layout it writes loads here, and back."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import CONFIGS, random_ids

from gpt2_core import (
    CheckpointError,
    GPT2Config,
    layout,
    load_pretrained,
    random_params,
    reference,
    save_pretrained,
)
from gpt2_core.safetensors_io import load_file, release_pages, save_file

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

CONFIG = CONFIGS["untied_gelu_exact_inner"]


def hf_logits(path, ids):
    model = transformers.GPT2LMHeadModel.from_pretrained(path, attn_implementation="eager").eval()
    with torch.no_grad():
        return model(input_ids=torch.tensor(ids)).logits.numpy()


def hf_random_model(config: GPT2Config, seed=0):
    torch.manual_seed(seed)
    hf_config = transformers.GPT2Config(**{k: v for k, v in config.to_dict().items()
                                           if k not in ("id2label", "label2id")})
    model = transformers.GPT2LMHeadModel(hf_config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.2 + (1.0 if p.ndim == 1 and p.shape[0] == config.n_embd else 0.0))
    return model


@pytest.mark.parametrize("layout_name", ["save_pretrained", "hub"])
@pytest.mark.parametrize("name", ["default", "untied_gelu_exact_inner"])
def test_saved_checkpoint_loads_in_transformers(tmp_path, layout_name, name):
    config = CONFIGS[name]
    params = random_params(config, seed=1)
    save_pretrained(tmp_path, config, params, layout_name=layout_name)
    ids = random_ids(config, (2, 6))
    np.testing.assert_allclose(hf_logits(tmp_path, ids),
                               reference.forward(config, params, ids).logits, atol=5e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["default", "untied_gelu_exact_inner"])
def test_transformers_checkpoints_load(tmp_path, name):
    config = CONFIGS[name]
    model = hf_random_model(config)
    model.save_pretrained(tmp_path / "lm")               # `transformer.` prefix
    model.transformer.save_pretrained(tmp_path / "hub")  # no prefix: the hub's layout
    ids = random_ids(config, (1, 7))
    with torch.no_grad():
        expected = model(input_ids=torch.tensor(ids)).logits.numpy()
    _, params = load_pretrained(tmp_path / "lm")
    np.testing.assert_allclose(reference.forward(config, params, ids).logits, expected, atol=5e-5, rtol=1e-4)
    loaded_config, hub_params = load_pretrained(tmp_path / "hub")
    assert loaded_config.n_inner == config.n_inner
    for name_ in hub_params:
        np.testing.assert_array_equal(hub_params[name_], params[name_])


def test_sharded_checkpoints_both_ways(tmp_path):
    params = random_params(CONFIG, seed=2)
    save_pretrained(tmp_path / "ours", CONFIG, params, max_shard_size=20_000)
    index = json.loads((tmp_path / "ours" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 2
    ids = random_ids(CONFIG, (1, 5))
    np.testing.assert_allclose(hf_logits(tmp_path / "ours", ids),
                               reference.forward(CONFIG, params, ids).logits, atol=5e-5, rtol=1e-4)
    model = hf_random_model(CONFIG)
    model.save_pretrained(tmp_path / "hf", max_shard_size="20KB")
    assert (tmp_path / "hf" / "model.safetensors.index.json").exists()
    _, loaded = load_pretrained(tmp_path / "hf")
    np.testing.assert_array_equal(loaded["h.1.mlp.c_fc.weight"],
                                  model.transformer.h[1].mlp.c_fc.weight.detach().numpy())


def test_resaving_replaces_stale_weight_files(tmp_path):
    params = random_params(CONFIG, seed=2)
    save_pretrained(tmp_path, CONFIG, params, max_shard_size=20_000)
    save_pretrained(tmp_path, CONFIG, params)
    assert sorted(f for f in os.listdir(tmp_path) if "safetensors" in f) == ["model.safetensors"]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_checkpoints(tmp_path, dtype):
    model = hf_random_model(CONFIG).to(getattr(torch, dtype))
    model.save_pretrained(tmp_path)
    _, params = load_pretrained(tmp_path)
    expected = model.transformer.wte.weight.detach().float().numpy()
    assert params["wte.weight"].dtype == (np.float16 if dtype == "float16" else np.float32)
    np.testing.assert_array_equal(params["wte.weight"].astype(np.float32), expected)  # exact widening


def test_bfloat16_writing_rounds_to_nearest_even(tmp_path):
    x = np.array([1.0, 1.00390625, 1.01171875, -3.3333333, 65504.0, 1e-30], np.float32)
    save_file({"x": x}, tmp_path / "x.safetensors", dtype="bfloat16")
    got = load_file(tmp_path / "x.safetensors")["x"]
    expected = torch.tensor(x).to(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(got, expected)


def test_pickle_needs_opt_in_and_loads_plain_tensors(tmp_path):
    model = hf_random_model(CONFIG)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    model.config.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"Pass `allow_pickle=True`"):
        load_pretrained(tmp_path)
    _, params = load_pretrained(tmp_path, allow_pickle=True)
    np.testing.assert_array_equal(params["h.0.attn.c_attn.weight"],
                                  model.transformer.h[0].attn.c_attn.weight.detach().numpy())


def test_pickle_with_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"wte.weight": torch.zeros(2), "x": Evil()}, tmp_path / "pytorch_model.bin")
    save_pretrained(tmp_path / "cfg", CONFIG, random_params(CONFIG))
    os.replace(tmp_path / "cfg" / "config.json", tmp_path / "config.json")
    with pytest.raises(Exception, match=r"Refusing to load `(posix|os|nt)\.system`"):
        load_pretrained(tmp_path, allow_pickle=True)


def test_openai_tensorflow_names_map_to_canonical():
    config = CONFIGS["default"]
    params = random_params(config, seed=4)
    state = {"model/wte": params["wte.weight"], "model/wpe": params["wpe.weight"],
             "model/ln_f/g": params["ln_f.weight"], "model/ln_f/b": params["ln_f.bias"]}
    leaf = {"weight": "w", "bias": "b"}
    for i in range(config.n_layer):
        for part in ("ln_1", "ln_2", "attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
            for kind in ("weight", "bias"):
                value = params[f"h.{i}.{part}.{kind}"]
                tf_leaf = ("g" if kind == "weight" else "b") if part.startswith("ln") else leaf[kind]
                if value.ndim == 2:
                    value = value[None]  # OpenAI stored Conv1D weights as [1, in, out]
                state[f"model/h{i}/{part.replace('.', '/')}/{tf_leaf}"] = value
    canonical, detected = layout.to_canonical(state)
    assert detected == "openai_tf"
    assert set(canonical) == set(params)
    for k, v in params.items():
        np.testing.assert_array_equal(canonical[k], v)


# ---- bad checkpoints: one error listing every problem ----------------------------------------

def write_state(path, config, state):
    save_file(state, path / "model.safetensors")
    config.to_json(path / "config.json")


def test_every_problem_is_listed_at_once(tmp_path):
    config = CONFIGS["default"]
    state = dict(random_params(config))
    del state["h.1.ln_2.bias"]
    state["h.0.attn.c_attn.weight"] = state["h.0.attn.c_attn.weight"].T.copy()
    state["h.0.mlp.c_fc.bias"] = np.full_like(state["h.0.mlp.c_fc.bias"], np.nan)
    state["wpe.weight"] = state["wpe.weight"].astype(np.int32)
    state["h.0.attn.rotary.inv_freq"] = np.zeros(4, np.float32)
    write_state(tmp_path, config, state)
    with pytest.raises(CheckpointError) as info:
        load_pretrained(tmp_path)
    message = str(info.value)
    for expected in ("missing tensor `h.1.ln_2.bias` (shape [32])",
                     "unexpected tensor `h.0.attn.rotary.inv_freq`",
                     "`h.0.attn.c_attn.weight` has shape [96, 32]; the config implies [32, 96]",
                     "`h.0.mlp.c_fc.bias` contains NaN or inf",
                     "`wpe.weight` has dtype int32; expected a float dtype"):
        assert expected in message
    assert len(info.value.problems) == 5


def test_llama_checkpoint_gets_a_hint(tmp_path):
    config = CONFIGS["default"]
    write_state(tmp_path, config, {"model.layers.0.self_attn.q_proj.weight": np.zeros((4, 4), np.float32)})
    with pytest.raises(CheckpointError, match=r"looks like a Llama/Mistral-style checkpoint, not GPT-2 "
                       r"\(found `model.layers.0.self_attn.q_proj.weight`; expected GPT-2 names like"):
        load_pretrained(tmp_path)


def test_untied_head_differing_from_wte_is_reported_for_tied_config(tmp_path):
    config = CONFIGS["default"]
    state = dict(random_params(config))
    state["lm_head.weight"] = state["wte.weight"] + 1
    write_state(tmp_path, config, state)
    with pytest.raises(CheckpointError, match=r"unexpected tensor `lm_head.weight` \(the config ties it"):
        load_pretrained(tmp_path)
    state["lm_head.weight"] = state["wte.weight"].copy()  # identical copies are fine
    write_state(tmp_path, config, state)
    assert "lm_head.weight" not in load_pretrained(tmp_path)[1]


def test_truncated_file_and_missing_weights(tmp_path):
    config = CONFIGS["default"]
    save_pretrained(tmp_path, config, random_params(config))
    os.remove(tmp_path / "gpt2_manifest.json")  # a folder from elsewhere: no writer's manifest
    with pytest.raises(FileNotFoundError, match=r"No weights in"):
        os.replace(tmp_path / "model.safetensors", tmp_path / "saved")
        load_pretrained(tmp_path)
    data = (tmp_path / "saved").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[:-100])
    with pytest.raises(CheckpointError, match=r"does not fit the file \(truncated or corrupt"):
        load_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(CheckpointError, match=r"not a safetensors file"):
        load_pretrained(tmp_path)


def test_missing_model_explains_where_files_go(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"not a directory, and no snapshot .* `config.json` and "
                       r"`model.safetensors`"):
        load_pretrained("gpt2")


def test_hub_cache_names_resolve(tmp_path, monkeypatch):
    snapshot = tmp_path / "models--openai-community--gpt2" / "snapshots" / "abc123"
    save_pretrained(snapshot, CONFIGS["default"], random_params(CONFIGS["default"]))
    (tmp_path / "models--openai-community--gpt2" / "refs").mkdir()
    (tmp_path / "models--openai-community--gpt2" / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    config, _ = load_pretrained("gpt2")
    assert config.n_embd == 32


def test_failed_save_leaves_previous_files_intact(tmp_path, monkeypatch):
    config = CONFIGS["default"]
    save_pretrained(tmp_path, config, random_params(config, seed=1))
    before = (tmp_path / "model.safetensors").read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(OSError, match="disk full"):
        save_pretrained(tmp_path, config, random_params(config, seed=2))
    assert (tmp_path / "model.safetensors").read_bytes() == before
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_loaded_tensors_are_memory_mapped(tmp_path):
    config = CONFIGS["default"]
    save_pretrained(tmp_path, config, random_params(config))
    _, params = load_pretrained(tmp_path)
    base = params["h.0.mlp.c_fc.weight"]
    while getattr(base, "base", None) is not None:
        base = base.base
    assert isinstance(base, (np.memmap, __import__("mmap").mmap))
    assert not params["h.0.mlp.c_fc.weight"].flags.writeable


def test_written_files_get_ordinary_permissions(tmp_path):
    config = CONFIGS["default"]
    old = os.umask(0o022)
    try:
        save_pretrained(tmp_path, config, random_params(config))
    finally:
        os.umask(old)
    for name in ("model.safetensors", "config.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644


def _resident_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))


def test_released_pages_leave_the_resident_set_and_values_intact(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {"a": rng.standard_normal((4096, 1024), dtype=np.float32),  # 16 MiB each
               "b": rng.standard_normal((4096, 1024), dtype=np.float32)}
    save_file(tensors, tmp_path / "x.safetensors")
    loaded = load_file(tmp_path / "x.safetensors")
    before = _resident_kib()
    total = float(loaded["a"].sum()) + float(loaded["b"].sum())  # faults every page in
    touched = _resident_kib()
    release_pages(loaded["a"])
    released = _resident_kib()
    # a's 16 MiB left the resident set; b's stayed (page rounding at the shared edge aside)
    assert touched - before > 30_000
    assert touched - released > 15_000 and released - before > 15_000
    # the values read back from the file, unchanged
    np.testing.assert_array_equal(loaded["a"], tensors["a"])
    assert float(loaded["a"].sum()) + float(loaded["b"].sum()) == total
    release_pages(tensors["b"])  # an ordinary array: nothing happens
    np.testing.assert_array_equal(tensors["b"], loaded["b"])
