"""Import hygiene, doctests, the exported helpers, and the pre-tokenizer's cutting rule."""

from __future__ import annotations

import doctest
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest
import regex

import gpt2_tokenizer
from gpt2_tokenizer import PRETOKENIZE_PATTERN, WHITESPACE_CLASS, bytes_to_unicode

MODULES = ["gpt2_tokenizer", "gpt2_tokenizer.tokenizer", "gpt2_tokenizer.bpe",
           "gpt2_tokenizer.pretokenizer", "gpt2_tokenizer.files", "gpt2_tokenizer.batch"]


def test_import_loads_no_deep_learning_framework():
    code = ("import sys, gpt2_tokenizer\n"
            "t = gpt2_tokenizer.GPT2Tokenizer.from_pretrained()\n"
            "t(['a b', 'c'], return_offsets_mapping=True); t.decode(t.encode('x'))\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "{'torch', 'tensorflow', 'jax', 'keras', 'flax', 'transformers', 'tiktoken'})\n"
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": ":".join(sys.path)})
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0


def test_exported_helpers_for_in_graph_tokenizers():
    table = bytes_to_unicode()
    assert len(table) == 256 and len(set(table.values())) == 256
    assert gpt2_tokenizer.encoder["Hello"] == 15496
    assert gpt2_tokenizer.merges[0] == ("Ġ", "t") and gpt2_tokenizer.bpe_ranks[("Ġ", "t")] == 0
    assert regex.findall(PRETOKENIZE_PATTERN, "it's  ok") == ["it", "'s", " ", " ok"]


def test_stdlib_whitespace_is_a_superset_of_white_space():
    # The piece cutter uses the stdlib's `\S`; that is only safe if every White_Space character
    # counts as a space there (extra ones, \x1c-\x1f, merely cut less often).
    every = "".join(map(chr, range(0x110000)))
    white_space = regex.findall(f"[{WHITESPACE_CLASS}]", every)
    assert len(white_space) == 25
    assert all(re.match(r"\s", c) for c in white_space)
    assert regex.findall(r"\s", every) == white_space


def test_loaded_tokenizer_stays_under_50_mb_rss():
    # The budget, measured as bench/bench_tokenizer.py does: a fresh interpreter that
    # has imported gpt2_tokenizer, before and after loading the vocabulary (with the id tables
    # of the merge loop) and a first encode that builds the Unicode 16 classes.
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc (Linux)")
    code = ("import gpt2_tokenizer\n"
            "def rss():\n"
            "    for line in open('/proc/self/status'):\n"
            "        if line.startswith('VmRSS'): return int(line.split()[1]) / 1024\n"
            "before = rss()\n"
            "t = gpt2_tokenizer.GPT2Tokenizer.from_pretrained(); t.encode('Hello world é')\n"
            "print(rss() - before)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": ":".join(sys.path)})
    assert float(out.stdout) < 50, out.stdout
