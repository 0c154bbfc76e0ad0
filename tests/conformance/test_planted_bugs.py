"""Done means: the suite catches real porting bugs planted in a real backend (gpt2_torch, patched
in its worker process by `gpt2_conformance.plants`) and its report names the case and the
tensor path. Each test also checks what must still pass, so the report points at the bug."""

from __future__ import annotations

import pytest

from gpt2_conformance.runner import run_suite

pytest.importorskip("gpt2_torch")

LEFT = "tiny.base.forward.left_padded"
PLAIN = "tiny.base.forward.plain"
FLAGS = "tiny.inverse_layer_scale_reorder.forward.left_padded"
HALF = "tiny.base.float16.forward.left_padded"
BF16 = "tiny.base.bfloat16.forward.left_padded"

# bug -> (cases to run, (case, tensor path) that must fail, (case, path) that must pass)
PLANTS = {
    "ln_eps": ([LEFT], [(LEFT, "hidden.1"), (LEFT, "logits")], [(LEFT, "hidden.0")]),
    "gelu_exact": ([LEFT], [(LEFT, "logits")], [(LEFT, "cache.0.key"), (LEFT, "attn.0")]),
    "no_inverse_scale": ([FLAGS, LEFT], [(FLAGS, "attn.1")], [(FLAGS, "attn.0"), (LEFT, "logits")]),
    "position_shift": ([LEFT, PLAIN], [(LEFT, "hidden.0")], [(PLAIN, "logits")]),
    "c_proj_transposed": ([LEFT], [(LEFT, "hidden.1")], [(LEFT, "cache.0.key"), (LEFT, "hidden.0")]),
}


# Reduced precision: which plants the looser rows still catch (see tolerances.py). float16
# catches the LayerNorm epsilon (2.4-2.9x its allowance); bfloat16's rounding noise is as large
# as that bug, so there only gross bugs fail.
LOW_PLANTS = {
    "ln_eps": (HALF, ["logits", "hidden.2", "cache.1.key"]),
    "c_proj_transposed": (BF16, ["logits", "hidden.1"]),
    "position_shift": (BF16, ["logits", "hidden.0"]),
}


def _failing_paths(result, case: str) -> str:
    return "\n".join(m for cell in result.cells[case].values() for m in cell.details)


@pytest.mark.parametrize("bug", sorted(PLANTS))
def test_planted_bug_is_caught_and_named(bug, workdir):
    only, must_fail, must_pass = PLANTS[bug]
    result = run_suite(["torch"], ["tiny"], only=",".join(only), workdir=workdir,
                       plant={"torch": bug})
    assert result.failed
    for case, path in must_fail:
        text = _failing_paths(result, case)
        assert f"case {case}, pair reference~torch, tensor {path}:" in text, text
        assert "max abs diff" in text and "first differing" in text
    for case, path in must_pass:
        assert f"tensor {path}:" not in _failing_paths(result, case)


@pytest.mark.parametrize("bug", sorted(LOW_PLANTS))
def test_planted_bug_is_caught_in_reduced_precision(bug, workdir):
    case, paths = LOW_PLANTS[bug]
    result = run_suite(["torch"], ["tiny"], only=case, workdir=workdir, plant={"torch": bug})
    assert result.cells[case]["reference~torch"].status == "FAIL"
    text = _failing_paths(result, case)
    for path in paths:
        assert f"case {case}, pair reference~torch, tensor {path}:" in text, text


def test_same_cases_pass_without_a_plant(workdir):
    cases = sorted({c for only, _, _ in PLANTS.values() for c in only} | {HALF, BF16})
    result = run_suite(["torch"], ["tiny"], only=",".join(cases), workdir=workdir)
    assert not result.failed, "\n".join(result.failures())
    assert all(result.cells[c]["reference~torch"].status == "PASS" for c in cases)


@pytest.mark.parametrize("bug", ["ln_eps", "c_proj_transposed"])
def test_numpy_subject_plants_too(bug, workdir):
    """The framework-free subject takes the same plants (for environments without torch)."""
    result = run_suite(["numpy"], ["tiny"], only=LEFT, workdir=workdir, plant={"numpy": bug})
    assert f"case {LEFT}, pair reference~numpy, tensor hidden.1:" in _failing_paths(result, LEFT)


def test_unknown_plant_is_refused(workdir):
    result = run_suite(["numpy"], ["tiny"], only=LEFT, workdir=workdir, plant={"numpy": "nope"})
    assert result.failed
    assert "Unknown planted bug. Received: 'nope'" in "\n".join(result.errors.values())
