"""Fixtures for the gpt2_torch tests."""

from __future__ import annotations

import pytest
from torch_testutils import CONFIGS, write_checkpoint


@pytest.fixture(params=sorted(CONFIGS))
def config(request):
    return CONFIGS[request.param]


@pytest.fixture
def checkpoint(tmp_path, config):
    params = write_checkpoint(tmp_path, config)
    return tmp_path, config, params
