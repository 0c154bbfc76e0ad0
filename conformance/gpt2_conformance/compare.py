"""The one comparison: `compare` measures, `assert_close` raises with the full report.

A report names the case, the subject pair, the tensor path (`cache.3.value`), the largest
absolute and relative differences, the index of the worst element (largest error relative to
its tolerance) and the first differing value pairs. NaN equals NaN and inf equals the same inf
(the loss of an all-ignored batch is NaN everywhere; removed tokens score -inf); nothing is
zeroed out.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from gpt2_conformance.tolerances import tolerance

N_PAIRS = 5  # differing value pairs shown in a report


@dataclasses.dataclass
class Comparison:
    """The result of comparing one tensor path of one case between two subjects."""

    case: str
    pair: str          # "reference~torch"
    path: str          # "cache.3.value"
    ok: bool
    max_abs: float     # largest |actual - expected| (inf when shapes or NaN/inf patterns differ)
    max_rel: float     # largest |actual - expected| / |expected|
    allowed: float     # atol + rtol * |expected| at the worst element
    where: tuple[int, ...] | None = None
    pairs: list[tuple[tuple[int, ...], float, float]] = dataclasses.field(default_factory=list)
    note: str = ""

    @property
    def ratio(self) -> float:
        """Error over allowance at the worst element (<= 1 passes)."""
        if self.max_abs == 0.0:
            return 0.0
        return self.max_abs / self.allowed if self.allowed > 0 else float("inf")

    def message(self) -> str:
        head = f"case {self.case}, pair {self.pair}, tensor {self.path}"
        if self.note:
            return f"{head}: {self.note}"
        lines = [f"{head}: max abs diff {self.max_abs:.3e}, max rel diff {self.max_rel:.3e}, "
                 f"worst at index {self.where} (allowed there {self.allowed:.3e})"]
        if self.pairs:
            shown = ", ".join(f"{i}: {e!r} vs {a!r}" for i, e, a in self.pairs)
            lines.append(f"  first differing (index: expected vs actual): {shown}")
        return "\n".join(lines)


def _special_mismatch(expected: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """Elements where NaN/inf patterns differ."""
    e_nan, a_nan = np.isnan(expected), np.isnan(actual)
    e_inf, a_inf = np.isinf(expected), np.isinf(actual)
    return (e_nan != a_nan) | (e_inf != a_inf) | (e_inf & a_inf & (expected != actual))


def compare(case: str, pair: str, path: str, expected: np.ndarray, actual: np.ndarray,
            dtype: str = "float32") -> Comparison:
    """Compare `actual` to `expected` under the table's tolerance for `path` at `dtype`.

    Shapes: any, equal in both.
    """
    expected, actual = np.asarray(expected), np.asarray(actual)
    if expected.shape != actual.shape:
        return Comparison(case, pair, path, False, float("inf"), float("inf"), 0.0,
                          note=f"shape {actual.shape} differs from the expected {expected.shape}")
    atol, rtol = tolerance(path, dtype)
    if expected.size == 0:
        return Comparison(case, pair, path, True, 0.0, 0.0, atol)
    exact = atol == 0.0 and rtol == 0.0
    if exact or not np.issubdtype(expected.dtype, np.floating):
        e, a = expected, actual
        bad = e != a
        if np.issubdtype(e.dtype, np.floating) and np.issubdtype(a.dtype, np.floating):
            bad &= ~(np.isnan(e) & np.isnan(a))
        err = np.where(bad, np.inf, 0.0) if bad.any() else np.zeros(e.shape)
        allowed = np.full(e.shape, atol)
        rel = err
    else:
        e, a = expected.astype(np.float64), actual.astype(np.float64)
        special = _special_mismatch(e, a)
        finite = np.isfinite(e) & np.isfinite(a)
        with np.errstate(invalid="ignore", over="ignore"):
            diff = np.where(finite, np.abs(a - e), 0.0)
        err = np.where(special, np.inf, diff)
        allowed = atol + rtol * np.where(np.isfinite(e), np.abs(e), 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(err == 0, 0.0, err / np.abs(np.where(np.isfinite(e), e, 0.0)))
        bad = err > allowed
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(err == 0, 0.0, err / np.where(allowed > 0, allowed, 0.0))
    worst = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
    pairs = [(tuple(int(i) for i in idx), _scalar(expected[tuple(idx)]), _scalar(actual[tuple(idx)]))
             for idx in np.argwhere(bad)[:N_PAIRS]]
    return Comparison(case, pair, path, not bad.any(), float(err.max()), float(np.nanmax(rel)),
                      float(allowed[worst]), tuple(int(i) for i in worst), pairs)


def _scalar(x) -> float | int:
    return x.item() if hasattr(x, "item") else x


def compare_all(case: str, pair: str, expected: dict[str, np.ndarray],
                actual: dict[str, np.ndarray], dtype: str = "float32") -> list[Comparison]:
    """Compare every tensor path the expected side has; a path missing on the actual side fails."""
    out = []
    for path in sorted(expected, key=_path_key):
        if path not in actual:
            out.append(Comparison(case, pair, path, False, float("inf"), float("inf"), 0.0,
                                  note="missing from the actual outputs"))
            continue
        out.append(compare(case, pair, path, expected[path], actual[path], dtype))
    return out


def _path_key(path: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in path.split("."))


def assert_close(case: str, pair: str, expected: dict[str, np.ndarray],
                 actual: dict[str, np.ndarray], dtype: str = "float32") -> None:
    """Raise `AssertionError` listing every failing tensor path of one case and pair."""
    failures = [c for c in compare_all(case, pair, expected, actual, dtype) if not c.ok]
    if failures:
        raise AssertionError("\n".join(c.message() for c in failures))
