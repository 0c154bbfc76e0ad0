"""TensorFlow-only: the string-in/string-out SavedModel, loaded in a process that never imports
this package."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import gpt2_core
from gpt2_core import GPT2Config
from gpt2_keras import GPT2LMHeadModel
from gpt2_keras.export import export_text_generator
from gpt2_tokenizer import GPT2Tokenizer

# The README's one-liner: the loaded root is freed before `serve` runs.
LOAD = """
import json, sys
import tensorflow as tf
out = tf.saved_model.load(sys.argv[1]).serve(tf.constant(["Hello world", "The quick brown fox jumps"]))
print(json.dumps({"text": [t.decode("utf-8", "replace") for t in out["text"].numpy()],
                  "ids": out["ids"].numpy().tolist(),
                  "leaked": sorted(m for m in sys.modules if m.startswith("gpt2"))}))
"""


@pytest.mark.parametrize("beams", [{}, dict(num_beams=3, length_penalty=0.7)], ids=["greedy", "beams"])
def test_saved_model_generates_the_same_text_without_the_package(tmp_path, beams):
    config = GPT2Config(n_positions=48, n_embd=32, n_layer=2, n_head=2)
    model = GPT2LMHeadModel.from_params(config, gpt2_core.random_params(config, seed=0, scale=0.1))
    export_text_generator(model, tmp_path / "gen", max_prompt_length=16, max_new_tokens=8, **beams)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([sys.executable, "-c", LOAD, str(tmp_path / "gen")], capture_output=True,
                         text=True, env=env, cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["leaked"] == []  # none of this project's packages (TensorFlow imports Keras itself)
    tok = GPT2Tokenizer.from_pretrained()
    prompts = ["Hello world", "The quick brown fox jumps"]
    want = model.generate(prompts, tokenizer=tok, max_new_tokens=8, **beams)
    assert [p + t for p, t in zip(prompts, got["text"])] == want
    assert all(len(r) <= 8 for r in got["ids"])


def test_export_refuses_beam_sampling(tmp_path):
    config = GPT2Config(n_positions=48, n_embd=32, n_layer=2, n_head=2)
    model = GPT2LMHeadModel.from_params(config, gpt2_core.random_params(config, seed=0))
    with pytest.raises(ValueError, match="`num_beams` must be a positive integer, and 1 when"):
        export_text_generator(model, tmp_path / "gen", max_prompt_length=16, max_new_tokens=8,
                              num_beams=2, do_sample=True)
