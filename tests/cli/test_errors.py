"""A user's mistake on the command line: one line on stderr, exit status 2, a traceback only
with --debug; --allow-pickle wherever a message points to pickle."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import TINY, gpt2
from test_convert import CONFIG, write_openai_release

from gpt2_core import GPT2Config, load_pretrained, random_params, save_pretrained
from gpt2_core.cli import main

torch = pytest.importorskip("torch")


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_score_on_a_directory_is_one_line(tmp_path, tiny_model, capsys):
    err = _error(capsys, ["score", str(tmp_path), "--model", str(tiny_model)])
    assert f"gpt2 score: error: {str(tmp_path)!r} is a folder; pass a UTF-8 text file" in err


def test_debug_shows_the_traceback(tmp_path, tiny_model):
    with pytest.raises(IsADirectoryError, match="is a folder"):
        main(["--debug", "score", str(tmp_path), "--model", str(tiny_model)])


def test_convert_onto_an_existing_file_is_one_line(tmp_path, tiny_model, capsys):
    (tmp_path / "f").write_text("x")
    err = _error(capsys, ["convert", str(tiny_model), str(tmp_path / "f")])
    assert "`DST`" in err and "exists and is not a folder" in err
    assert (tmp_path / "f").read_text() == "x"


def test_convert_non_json_hparams_is_one_line(tmp_path, capsys):
    (tmp_path / "hparams.json").write_text("n_vocab = 50257")
    err = _error(capsys, ["convert", str(tmp_path), str(tmp_path / "out")])
    assert "hparams.json' is not valid JSON" in err


def test_convert_truncated_model_ckpt_data_is_one_line(tmp_path, capsys):
    src = tmp_path / "openai"
    src.mkdir()
    write_openai_release(src, random_params(CONFIG, seed=3))
    data = next(src.glob("model.ckpt.data-*"))
    data.write_bytes(data.read_bytes()[:100])
    err = _error(capsys, ["convert", str(src), str(tmp_path / "out")])
    assert "model.ckpt.data-00000-of-00001, which holds 100 (truncated or corrupt" in err
    assert not (tmp_path / "out").exists()


def test_checkpoint_problems_are_one_line(tmp_path, capsys):
    save_pretrained(tmp_path / "src", CONFIG, random_params(CONFIG))
    (tmp_path / "src" / "gpt2_manifest.json").unlink()
    cfg = json.loads((tmp_path / "src" / "config.json").read_text())
    cfg["n_layer"] = 100_000_000
    (tmp_path / "src" / "config.json").write_text(json.dumps(cfg))
    err = _error(capsys, ["convert", str(tmp_path / "src"), str(tmp_path / "out")])
    assert f"says n_layer=100000000, but the weights hold {CONFIG.n_layer} layers" in err


def _pickle_only(directory, config):
    params = random_params(config, seed=1, scale=0.5)
    torch.save({"transformer." + k: torch.tensor(np.array(v)) for k, v in params.items()},
               directory / "pytorch_model.bin")
    config.to_json(directory / "config.json")
    return params


def test_allow_pickle_on_generate_score_and_convert(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _pickle_only(src, TINY)
    (tmp_path / "t.txt").write_text("def f(x):\n    return x\n" * 3)
    refused = gpt2("score", str(tmp_path / "t.txt"), "--model", str(src), check=False)
    assert refused.returncode == 2 and "`--allow-pickle`" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    scored = gpt2("score", str(tmp_path / "t.txt"), "--model", str(src), "--allow-pickle")
    assert "perplexity" in scored.stdout
    generated = gpt2("generate", "def", "--model", str(src), "--allow-pickle", "--greedy",
                     "--max-new-tokens", "3")
    assert generated.stdout.startswith("def")
    gpt2("convert", str(src), str(tmp_path / "dst"), "--allow-pickle")
    assert load_pretrained(tmp_path / "dst")[0].n_layer == TINY.n_layer


def test_train_interrupted_before_the_first_step_reruns(tmp_path):
    corpus = tmp_path / "corpus.py"
    corpus.write_text("".join(f"def f{i}(x):\n    return x * {i}\n\n" for i in range(60)))
    common = [str(corpus), "--backend", "torch", "--n-layer", "1", "--n-embd", "16", "--n-head", "2",
              "--n-positions", "32", "--block-size", "32", "--batch-size", "4", "--max-steps", "2",
              "--out", str(tmp_path / "out")]
    interrupted = gpt2("train", *common, "--stop-after", "0", check=False)
    assert interrupted.returncode == 130
    rerun = gpt2("train", *common)
    assert "resuming" not in rerun.stdout and "another backend" not in rerun.stderr
    assert load_pretrained(tmp_path / "out")[0].n_layer == 1


def test_train_leftover_step_zero_checkpoint_is_ignored(tmp_path):
    """What an interrupt before the first step used to leave: no optimizer state to resume."""
    corpus = tmp_path / "corpus.py"
    corpus.write_text("".join(f"def f{i}(x):\n    return x * {i}\n\n" for i in range(60)))
    config = GPT2Config(vocab_size=50257, n_positions=32, n_embd=16, n_layer=1, n_head=2)
    save_pretrained(tmp_path / "out" / "checkpoint", config, random_params(config),
                    extra_files={"state.json": json.dumps({"step": 0, "train_loss": [], "val_loss": []}),
                                 "optimizer.safetensors": b"\x02\x00\x00\x00\x00\x00\x00\x00{}"})
    rerun = gpt2("train", str(corpus), "--backend", "torch", "--n-layer", "1", "--n-embd", "16",
                 "--n-head", "2", "--n-positions", "32", "--block-size", "32", "--batch-size", "4",
                 "--max-steps", "2", "--out", str(tmp_path / "out"))
    assert "resuming" not in rerun.stdout
