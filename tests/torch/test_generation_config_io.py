"""generation_config.json through gpt2_torch's from_pretrained and save_pretrained (the tests are
written once, in tests/shared/generation_config_io.py)."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "shared"))
from generation_config_io import *  # noqa: E402, F403


@pytest.fixture
def lm_class():
    from gpt2_torch import GPT2LMHeadModel

    return GPT2LMHeadModel
