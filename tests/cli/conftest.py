from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gpt2_core import GPT2Config, random_params, save_pretrained

BACKENDS = ["torch", "keras", "flax"]
# The bundled GPT-2 vocabulary, so prompts and text files tokenize as they would for GPT-2.
TINY = GPT2Config(vocab_size=50257, n_positions=128, n_embd=16, n_layer=2, n_head=2)


def gpt2(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the `gpt2` command in its own process (each backend's framework stays there)."""
    # No network here: the hub is never reachable, so it is not tried.
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow",
           "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "gpt2_core.cli", *args], capture_output=True,
                         text=True, env=env, timeout=timeout)
    if check and out.returncode != 0:
        raise AssertionError(f"gpt2 {' '.join(args)} exited {out.returncode}:\n{out.stderr[-3000:]}")
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    save_pretrained(path, TINY, random_params(TINY, seed=0, scale=0.5))
    return path
