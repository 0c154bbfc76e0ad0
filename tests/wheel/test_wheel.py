"""The built wheel, installed into a fresh venv, imports every package from that venv."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("gpt2_core", "gpt2_tokenizer", "gpt2_torch", "gpt2_keras", "gpt2_flax", "gpt2_conformance")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)],
                   check=True)
    (whl,) = out.glob("*.whl")
    return whl


def test_wheel_holds_only_the_named_packages_and_the_vocabulary(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == set(PACKAGES)
    assert "gpt2_tokenizer/py.typed" in names or any(n.startswith("gpt2_tokenizer/") for n in names)
    assert any(n.endswith("vocab.json") for n in names) and any(n.endswith("merges.txt") for n in names)
    assert "gpt2_core/py.typed" in names


def test_fresh_venv_imports_every_package_from_the_wheel(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheel)], check=True)
    # The frameworks come from this environment's site-packages, appended after the wheel's
    # own: appending skips its .pth files, so the editable checkout stays invisible.
    frameworks = sysconfig.get_paths()["purelib"]
    code = f"""
import sys
sys.path.append({frameworks!r})
import importlib
for name in {PACKAGES!r}:
    module = importlib.import_module(name)
    assert module.__file__.startswith({str(env_dir)!r}), (name, module.__file__)
from gpt2_tokenizer import GPT2Tokenizer
assert GPT2Tokenizer.from_pretrained().encode("Hello world") == [15496, 995]
print("ok")
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok")
