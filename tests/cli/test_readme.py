"""The README's Python examples (its ```python blocks) run as written, each in its own process,
on a tiny random checkpoint standing in for `path/to/gpt2`. The ```py blocks of "Use it with the
libraries you already run" are fragments over the user's own data; the client tests run the
same calls (tests/torch/test_hf_clients.py, test_export.py, tests/keras/*/test_keras_clients*.py,
tests/flax/test_clients.py, tests/tokenizer/test_hf_api.py, test_tiktoken_api.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
TOKENIZER = BLOCKS[0]


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, tiny_model, tmp_path):
    code = BLOCKS[index]
    if index:  # later examples use `ids`, `mask` (and `texts`) the way the first one made them
        code = TOKENIZER + "texts = ['def f(x):\\n    return x\\n'] * 8\n" + code
    code = code.replace("path/to/gpt2", str(tiny_model)).replace('"exported/"', repr(str(tmp_path / "exported")))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=600)
    assert out.returncode == 0, f"README example {index} failed:\n{code}\n{out.stderr[-3000:]}"
