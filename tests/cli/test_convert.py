"""`gpt2 convert` from every layout, checked by loading the result in transformers."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from gpt2_core import GPT2Config, load_pretrained, random_params, reference, save_pretrained
from gpt2_core.cli import main
from gpt2_core.cli._convert import sha256

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

CONFIG = GPT2Config(vocab_size=61, n_positions=16, n_embd=16, n_layer=2, n_head=2)


def hf_logits(path, ids):
    model = transformers.GPT2LMHeadModel.from_pretrained(path).eval()
    with torch.no_grad():
        return model(input_ids=torch.tensor(ids)).logits.numpy()


def write_openai_release(directory, params):
    """OpenAI's layout, written by TensorFlow itself in a subprocess."""
    names, values = [], []
    names += ["model/wte", "model/wpe", "model/ln_f/g", "model/ln_f/b"]
    values += [params["wte.weight"], params["wpe.weight"], params["ln_f.weight"], params["ln_f.bias"]]
    for i in range(CONFIG.n_layer):
        for part in ("ln_1", "ln_2", "attn/c_attn", "attn/c_proj", "mlp/c_fc", "mlp/c_proj"):
            for leaf, kind in (("g" if part.startswith("ln") else "w", "weight"), ("b", "bias")):
                value = params[f"h.{i}.{part.replace('/', '.')}.{kind}"]
                names.append(f"model/h{i}/{part}/{leaf}")
                values.append(value[None] if value.ndim == 2 else value)
    np.savez(directory / "tensors.npz", *values)
    code = f"""
import numpy as np, tensorflow as tf
data = np.load({str(directory / 'tensors.npz')!r})
values = [data[f"arr_{{i}}"] for i in range(len(data.files))]
tf.raw_ops.SaveV2(prefix={str(directory / 'model.ckpt')!r}, tensor_names={names!r},
                  shape_and_slices=[""] * len(values), tensors=values)
"""
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    (directory / "tensors.npz").unlink()
    (directory / "checkpoint").write_text('model_checkpoint_path: "model.ckpt"\n')
    hparams = {"n_vocab": CONFIG.vocab_size, "n_ctx": CONFIG.n_positions, "n_embd": CONFIG.n_embd,
               "n_head": CONFIG.n_head, "n_layer": CONFIG.n_layer}
    (directory / "hparams.json").write_text(json.dumps(hparams))


def test_openai_tensorflow_release_converts_to_identical_logits(tmp_path):
    params = random_params(CONFIG, seed=3)
    src = tmp_path / "openai"
    src.mkdir()
    write_openai_release(src, params)
    assert main(["convert", str(src), str(tmp_path / "hf")]) == 0
    ids = np.random.default_rng(0).integers(0, CONFIG.vocab_size, (2, 9))
    np.testing.assert_allclose(hf_logits(tmp_path / "hf", ids),
                               reference.forward(CONFIG, params, ids).logits, atol=5e-5, rtol=1e-4)
    manifest = (tmp_path / "hf" / "SHA256SUMS").read_text().splitlines()
    assert f"{sha256(tmp_path / 'hf' / 'model.safetensors')}  model.safetensors" in manifest


@pytest.mark.parametrize("source", ["sharded", "pickle", "hub"])
def test_hf_layouts_convert(tmp_path, source):
    params = random_params(CONFIG, seed=4)
    src = tmp_path / "src"
    if source == "sharded":
        save_pretrained(src, CONFIG, params, max_shard_size=4000)
    elif source == "hub":
        save_pretrained(src, CONFIG, params, layout_name="hub")
    else:
        save_pretrained(src, CONFIG, params)
        state = {"transformer." + k: torch.tensor(np.array(v)) for k, v in params.items()}
        torch.save(state, src / "pytorch_model.bin")
        (src / "model.safetensors").unlink()
        (src / "gpt2_manifest.json").unlink()  # as a folder from elsewhere: no writer's manifest
    (src / "vocab.json").write_text("{}")
    args = ["convert", str(src), str(tmp_path / "dst"), "--dtype", "float16"]
    if source == "pickle":
        assert main(args) == 2  # refused without the opt-in
        args.append("--allow-pickle")
    assert main(args) == 0
    _, converted = load_pretrained(tmp_path / "dst")
    assert converted["h.1.mlp.c_fc.weight"].dtype == np.float16
    np.testing.assert_array_equal(converted["h.1.mlp.c_fc.weight"], params["h.1.mlp.c_fc.weight"].astype(np.float16))
    assert (tmp_path / "dst" / "vocab.json").read_text() == "{}"


def test_corrupt_checkpoint_is_a_clear_error(tmp_path, capsys):
    save_pretrained(tmp_path / "src", CONFIG, random_params(CONFIG))
    data = (tmp_path / "src" / "model.safetensors").read_bytes()
    (tmp_path / "src" / "model.safetensors").write_bytes(data[: len(data) // 2])
    assert main(["convert", str(tmp_path / "src"), str(tmp_path / "dst")]) == 2
    err = capsys.readouterr().err
    assert "gpt2 convert: error: Cannot load the GPT-2 checkpoint" in err and "truncated or corrupt" in err
    assert not (tmp_path / "dst").exists()
