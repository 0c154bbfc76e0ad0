"""gpt2_conformance: proves that every GPT-2 backend computes the same model.

Cases are declared once (`cases.py`), every framework runs them in its own process through a
small adapter (`adapters/`), one helper compares (`compare.py`) under one tolerance table
(`tolerances.py`), and known gaps live in `exclusions/<backend>.txt`.

Run it with `python -m gpt2_conformance` (see `--help`), from pytest with
`pytest --gpt2-conformance`, or programmatically with `run_suite`. Importing this package is
cheap (no NumPy, no framework): the pytest plugin loads it in every test run.
"""

from __future__ import annotations

__all__ = ["run_suite"]


def __getattr__(name: str):
    if name == "run_suite":
        from gpt2_conformance.runner import run_suite

        return run_suite
    raise AttributeError(name)
