"""The generation section: the reference `generate` equals transformers' own on every case that
names it, the cases exercise what their names say (eos ends rows early, stop strings fire), and
the suite fails a backend that gets a generation rule wrong."""

from __future__ import annotations

import numpy as np
import pytest

from gpt2_conformance import cases as C
from gpt2_conformance.runner import run_suite

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def reference_vs_transformers(workdir):
    return run_suite(["transformers"], ["tiny"], only="generation.", workdir=workdir), workdir


def test_reference_equals_transformers_on_every_case_naming_it(reference_vs_transformers):
    result, _ = reference_vs_transformers
    judged = [c for c in C.generation_cases() if "transformers" in c.oracles]
    assert len(judged) >= 20
    for case in judged:
        cell = result.cells[case.name]["reference~transformers"]
        assert cell.status == "PASS", (case.name, cell.details)
    assert not result.failed, result.failures()


def _reference(workdir, case):
    with np.load(f"{workdir}/results/reference/generation.{case}.npz") as z:
        return {k: z[k] for k in z.files}


def test_eos_and_stop_string_cases_end_rows_early(reference_vs_transformers):
    _, workdir = reference_vs_transformers
    out = _reference(workdir, "greedy.eos_pad_arg")["generated"]  # eos 2, pad 5
    assert out[0, 9] == C.EOS and (out[0, 10:] == 5).all() and out.shape[1] == 8 + 9
    out = _reference(workdir, "greedy.several_eos")["generated"]
    assert out[1, 9] in C.EOS_PAIR and (out[1, 10:] == 0).all()
    out = _reference(workdir, "stop_strings.greedy")["generated"]
    assert out.shape[1] < 8 + 16  # every row stopped on a stop string
    assert (_reference(workdir, "error.max_new_tokens_zero")["generated.raised"] == 1).all()
    streamed = _reference(workdir, "streamer.greedy")
    np.testing.assert_array_equal(streamed["generated.streamed"], streamed["generated"])


def test_compiled_cases_share_one_static_shape():
    compiled = [c for c in C.generation_cases() if c.compiled]
    assert 1 <= len(compiled) <= 6
    assert {dict(c.arg).get("max_new_tokens") for c in compiled} <= {16, 64}


# planted bug -> (the case that must fail on its tokens, the case that must still pass)
GENERATION_PLANTS = {
    "penalise_padding": ("greedy.repetition_penalty_skips_padding", "greedy.no_repeat_ngram"),
    "ignore_config_pad": ("greedy.pad_from_config", "greedy.several_eos"),
    "eos_fill": ("greedy.several_eos", "greedy.64_steps"),
}


@pytest.mark.parametrize("bug", sorted(GENERATION_PLANTS))
def test_planted_generation_bug_is_caught_and_named(bug, workdir):
    pytest.importorskip("gpt2_torch")
    fails, passes = (f"generation.{c}" for c in GENERATION_PLANTS[bug])
    result = run_suite(["torch"], ["tiny"], only=f"{fails},{passes}", workdir=workdir,
                       plant={"torch": bug})
    cell = result.cells[fails]["reference~torch"]
    assert cell.status == "FAIL"
    assert any(f"case {fails}, pair reference~torch, tensor generated:" in m for m in cell.details), cell.details
    assert result.cells[passes]["reference~torch"].status == "PASS"
