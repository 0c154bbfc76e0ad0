"""`compare`/`assert_close`, the tolerance table, exclusions, case declarations, report checks."""

from __future__ import annotations

import numpy as np
import pytest

from gpt2_conformance import cases, report, tolerances
from gpt2_conformance.compare import assert_close, compare, compare_all
from gpt2_conformance.runner import load_exclusions


def test_compare_reports_case_pair_path_diffs_index_and_pairs():
    expected = np.zeros((2, 3, 4, 5))
    actual = expected.copy()
    actual[1, 2, 3, 4] = 0.5
    c = compare("tiny.x.forward", "reference~torch", "cache.3.value", expected, actual)
    assert not c.ok
    assert c.where == (1, 2, 3, 4) and c.max_abs == pytest.approx(0.5)
    msg = c.message()
    for part in ("case tiny.x.forward", "pair reference~torch", "tensor cache.3.value",
                 "max abs diff 5.000e-01", "(1, 2, 3, 4)", "0.0 vs 0.5"):
        assert part in msg


def test_compare_within_tolerance_passes_and_beyond_fails():
    atol, rtol = tolerances.tolerance("logits")
    e = np.full((4,), 10.0)
    assert compare("c", "p", "logits", e, e + 0.5 * (atol + rtol * 10)).ok
    assert not compare("c", "p", "logits", e, e + 2.0 * (atol + rtol * 10)).ok


def test_nan_equals_nan_but_not_a_number():
    assert compare("c", "p", "loss", np.array(np.nan), np.array(np.nan)).ok
    assert not compare("c", "p", "loss", np.array(np.nan), np.array(1.0)).ok
    assert not compare("c", "p", "loss", np.array(1.0), np.array(np.nan)).ok


def test_removed_tokens_must_match_exactly():
    e = np.array([[1.0, -np.inf, 2.0]])
    assert compare("c", "p", "scores", e, e.copy()).ok
    a = e.copy()
    a[0, 1] = -1e30
    assert not compare("c", "p", "scores", e, a).ok


def test_token_ids_are_exact_and_shapes_checked():
    assert not compare("c", "p", "generated", np.array([[1, 2, 3]]), np.array([[1, 2, 4]])).ok
    c = compare("c", "p", "generated", np.array([[1, 2, 3]]), np.array([[1, 2]]))
    assert not c.ok and "shape" in c.message()


def test_missing_path_fails_and_assert_close_lists_it():
    comps = compare_all("c", "p", {"logits": np.zeros(2), "hidden.0": np.zeros(2)},
                        {"logits": np.zeros(2)})
    assert [c.path for c in comps if not c.ok] == ["hidden.0"]
    with pytest.raises(AssertionError, match="tensor hidden.0: missing"):
        assert_close("c", "p", {"logits": np.zeros(2), "hidden.0": np.zeros(2)},
                     {"logits": np.zeros(2)})


def test_every_quantity_has_a_float32_row_and_unknown_ones_raise():
    for q in ("logits", "hidden", "cache", "attn", "head", "loss", "grad", "processor"):
        assert (q, "float32") in tolerances.TOLERANCES
    for q in ("logits", "hidden", "cache", "loss"):
        half, bf = tolerances.TOLERANCES[(q, "float16")], tolerances.TOLERANCES[(q, "bfloat16")]
        assert half[0] > tolerances.TOLERANCES[(q, "float32")][0] and bf[0] >= half[0]
    with pytest.raises(KeyError, match="No tolerance for quantity 'attn' at dtype 'float16'"):
        tolerances.tolerance("attn.0", "float16")


def test_reduced_precision_cases_have_rows_and_skip_the_float32_only_subject():
    from gpt2_conformance.runner import pairs_for

    low = [c for c in cases.select(["tiny"]) if c.dtype != "float32"]
    assert sorted(c.dtype for c in low) == sorted(cases.LOW_PRECISION)
    for case in low:
        for q in case.outputs:
            assert (q, case.dtype) in tolerances.TOLERANCES
        assert pairs_for(case, ["reference", "numpy", "torch"]) == [("reference", "torch")]
    # float32-named substrings select no reduced-precision case by accident
    assert [c.name for c in cases.select(["tiny"], only="tiny.base.forward.left_padded")] == [
        "tiny.base.forward.left_padded"]


def test_a_bfloat16_difference_passes_at_its_row_and_fails_at_float32():
    e = np.full((4,), 2.0)
    a = e + 0.05  # a few bfloat16 roundings at |x| = 2
    assert compare("c", "p", "logits", e, a, "bfloat16").ok
    assert not compare("c", "p", "logits", e, a, "float16").ok
    assert not compare("c", "p", "logits", e, a).ok


def test_widen_turns_half_and_bfloat16_into_float32():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    from gpt2_conformance.adapters.base import widen

    x = np.array([1.5, -2.25], ml_dtypes.bfloat16)
    assert widen(x).dtype == np.float32 and widen(x).tolist() == [1.5, -2.25]
    assert widen(np.float16([0.5])).dtype == np.float32
    assert widen(np.arange(3)).dtype == np.arange(3).dtype  # token ids untouched


def test_exclusion_lines_need_a_reason(tmp_path):
    (tmp_path / "torch.txt").write_text("# header\ntiny.*.grads.labels  # sdpa grads\n")
    assert load_exclusions("torch", str(tmp_path)) == {"tiny.*.grads.labels": "sdpa grads"}
    (tmp_path / "keras.txt").write_text("tiny.base.forward.plain\n")
    with pytest.raises(ValueError, match="every exclusion needs a `# reason`"):
        load_exclusions("keras", str(tmp_path))



def test_exclusion_conditions_follow_the_installed_version(tmp_path):
    import importlib.metadata

    major = int(importlib.metadata.version("numpy").split(".")[0])
    (tmp_path / "transformers.txt").write_text(
        f"[numpy<{major + 1}] a.case  # holds\n[numpy>={major + 1}] b.case  # does not\n"
        f"[numpy>={major}.0] c.case  # holds\n[no-such-dist<1] d.case  # not installed\n")
    assert load_exclusions("transformers", str(tmp_path)) == {"a.case": "holds", "c.case": "holds"}
    (tmp_path / "torch.txt").write_text("[numpy==2] a.case  # equality is not a condition\n")
    with pytest.raises(ValueError, match=r"must read like `\[transformers<5.23\]`"):
        load_exclusions("torch", str(tmp_path))


def test_the_committed_transformers_exclusion_matches_the_oracle_installed():
    """The repetition penalty skips left padding from transformers 5.23 on: with an older
    oracle the case is excluded (XFAIL), with a newer one it must pass (not excluded)."""
    import importlib.metadata

    from gpt2_conformance.runner import _release

    excluded = load_exclusions("transformers")
    old = _release(importlib.metadata.version("transformers")) < (5, 23)
    assert ("generation.greedy.repetition_penalty_skips_padding" in excluded) == old

def test_case_names_unique_and_selection():
    names = [c.name for c in cases.select(["tiny", "small"])]
    assert len(names) == len(set(names))
    quick = cases.select(["tiny"], quick=True)
    assert quick and all(c.quick for c in quick)
    with pytest.raises(ValueError, match="needs `--model PATH`"):
        cases.select(["model"])
    with pytest.raises(ValueError, match="Unknown suite"):
        cases.select(["huge"])


def test_every_config_option_is_covered():
    configs = [s.config for s in cases.TINY_MODELS.values()]
    assert {c.activation_function for c in configs} >= {"gelu_new", "gelu", "gelu_fast",
                                                         "quick_gelu", "relu", "silu", "tanh"}
    assert any(c.n_inner for c in configs)
    assert any(not c.scale_attn_weights for c in configs)
    assert any(c.scale_attn_by_inverse_layer_idx for c in configs)
    assert any(c.reorder_and_upcast_attn for c in configs)
    assert any(not c.tie_word_embeddings for c in configs)
    assert any(c.layer_norm_epsilon != 1e-5 for c in configs)


def test_recipes_are_deterministic_and_padded_as_named():
    cfg = cases.TINY_MODELS["base"].config
    a, b = cases.make_inputs(cfg, "left_padded"), cases.make_inputs(cfg, "left_padded")
    np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
    assert a["attention_mask"][1, 0] == 0 and a["attention_mask"][1, -1] == 1
    r = cases.make_inputs(cfg, "right_padded")["attention_mask"]
    assert r[1, 0] == 1 and r[1, -1] == 0
    labels = cases.make_inputs(cfg, "labels")["labels"]
    assert (labels == -100).any() and (labels != -100).any()


MD = """### Tiny
| case | reference~torch | torch~flax |
|---|---|---|
| tiny.a | PASS 1.0e-06 (tol 1e-04) | — |
| tiny.b | PASS 2.0e-06 (tol 1e-04) | FAIL 3.0e-01 (tol 1e-04) |
"""


def test_check_report_ignores_digits_but_not_statuses_or_cases():
    assert report.check_report(MD, MD.replace("1.0e-06", "7.7e-07")) == []
    changed = report.check_report(MD, MD.replace("FAIL 3.0e-01", "PASS 3.0e-05"))
    assert changed == ["[Tiny] tiny.b|torch~flax: committed FAIL, now PASS"]
    gone = report.check_report(MD, MD.replace("| tiny.a |", "| tiny.z |"))
    assert any("tiny.a" in p for p in gone) and any("tiny.z" in p for p in gone)
