"""pytest integration: add the conformance matrix to a project's own test run.

Two ways, each one line:

    pytest --gpt2-conformance [--gpt2-conformance-model PATH] [--gpt2-conformance-backends torch,flax]

or, in a test module (runs whenever that module is collected):

    from gpt2_conformance.pytest_plugin import conformance_tests
    test_gpt2_conformance = conformance_tests(model_path="checkpoints/my-finetune")

Each case becomes one test; the whole matrix runs once per session (each backend in its own
process) and each test reports its case's cells, with the failing tensor paths. The plugin is
registered through the `pytest11` entry point but inert unless asked: without the option it
adds nothing and imports nothing beyond this module.
"""

from __future__ import annotations

import pytest

_CACHE = pytest.StashKey[dict]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gpt2-conformance")
    group.addoption("--gpt2-conformance", action="store_true",
                    help="run the GPT-2 cross-framework conformance cases")
    group.addoption("--gpt2-conformance-model", metavar="PATH",
                    help="a Hugging Face GPT-2 directory (default: random tiny configs)")
    group.addoption("--gpt2-conformance-backends", metavar="LIST",
                    help="comma-separated backends (default: every installed one)")
    group.addoption("--gpt2-conformance-quick", action="store_true",
                    help="only the quick subset of cases")


def _settings(model_path, backends, quick) -> tuple:
    from gpt2_conformance.__main__ import default_backends

    backends = tuple(backends.split(",") if isinstance(backends, str) else
                     (backends or default_backends()))
    return (model_path, backends, bool(quick))


def _case_names(settings: tuple) -> list[str]:
    from gpt2_conformance import cases
    from gpt2_core import GPT2Config

    model_path, _, quick = settings
    suites = ["model"] if model_path else ["tiny"]
    n_pos = GPT2Config.from_json(model_path).n_positions if model_path else None
    return [c.name for c in cases.select(suites, quick, n_pos)]


def _result(config: pytest.Config, settings: tuple):
    cache = config.stash.setdefault(_CACHE, {})
    if settings not in cache:
        from gpt2_conformance.runner import installed, run_suite

        model_path, backends, quick = settings
        subjects = list(backends) + (["tiktoken"] if installed("tiktoken") else [])
        cache[settings] = run_suite(subjects, ["model"] if model_path else ["tiny"],
                                    quick=quick, model=model_path)
    return cache[settings]


def check_case(result, case: str) -> None:
    """Fail (with every failing tensor's report) when a cell of `case` fails."""
    if result.errors:
        pytest.fail("\n".join(f"worker {s}: {e}" for s, e in result.errors.items()), False)
    bad = [m for cell in result.cells[case].values() if cell.status in ("FAIL", "ERROR")
           for m in cell.details]
    if bad:
        pytest.fail("\n".join(bad), pytrace=False)
    if not result.cells[case]:
        pytest.skip(f"no installed backend answers {case}")


class ConformanceItem(pytest.Item):
    def __init__(self, *, settings: tuple, **kw):
        super().__init__(**kw)
        self.settings = settings

    def runtest(self) -> None:
        check_case(_result(self.config, self.settings), self.name)

    def reportinfo(self):
        return "gpt2_conformance", None, f"gpt2_conformance::{self.name}"


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    if not config.getoption("--gpt2-conformance", default=False):
        return
    settings = _settings(config.getoption("--gpt2-conformance-model"),
                         config.getoption("--gpt2-conformance-backends"),
                         config.getoption("--gpt2-conformance-quick"))
    items.extend(ConformanceItem.from_parent(session, name=name, settings=settings)
                 for name in _case_names(settings))


def conformance_tests(model_path: str | None = None, backends: str | list[str] | None = None,
                      quick: bool = False):
    """A parametrised test function, one test per case: assign it to a `test_*` name.

    Args:
        model_path: a Hugging Face GPT-2 directory; None checks the random tiny configs.
        backends: e.g. "torch,flax"; None means every installed backend.
        quick: only the quick subset.
    """
    settings = _settings(model_path, backends, quick)

    @pytest.mark.parametrize("gpt2_case", _case_names(settings))
    def test_gpt2_conformance(gpt2_case: str, request: pytest.FixtureRequest) -> None:
        check_case(_result(request.config, settings), gpt2_case)

    return test_gpt2_conformance
