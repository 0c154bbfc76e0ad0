"""The conformance suite's own tests: the comparison helper, the report, the CLI and plugin,
and planted bugs that the suite must catch and name."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> str:
    """One directory for the session: the random checkpoints are written once."""
    return str(tmp_path_factory.mktemp("conformance"))
