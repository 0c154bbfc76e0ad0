"""The parent process: write the random checkpoints, run each subject's worker in its own
process, compare every case for every subject pair, and build the matrix.

Pairs: every framework against the float64 reference, except gradients (compared pairwise
between frameworks: a float64 oracle for them would need finite differences) and the checkpoint
round trip (hub -> torch -> keras -> flax -> hub, exact).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import fnmatch
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tempfile

import numpy as np

from gpt2_conformance import cases as C
from gpt2_conformance.adapters import FRAMEWORKS, SUBJECT_DTYPES, SUBJECT_KINDS, SUBJECTS
from gpt2_conformance.compare import Comparison, compare_all
from gpt2_core import load_pretrained, random_params, save_pretrained

EXCLUSIONS_DIR = os.path.join(os.path.dirname(__file__), "exclusions")
WORKER_TIMEOUT_S = 1800


@dataclasses.dataclass
class Cell:
    """One (case, column) of the matrix."""

    status: str                 # PASS, FAIL, ERROR, XFAIL, XPASS
    max_abs: float = 0.0        # of the worst tensor path (by error / allowance)
    allowed: float = 0.0
    path: str = ""
    details: list[str] = dataclasses.field(default_factory=list)
    reason: str = ""            # the exclusion's reason for XFAIL/XPASS

    def text(self) -> str:
        if self.status == "ERROR":
            return "ERROR"
        if self.status in ("PASS", "FAIL", "XFAIL", "XPASS") and self.path:
            return f"{self.status} {self.max_abs:.1e} (tol {self.allowed:.0e})"
        return self.status


@dataclasses.dataclass
class Result:
    cases: list[str]
    columns: list[str]
    cells: dict[str, dict[str, Cell]]
    subjects: list[str]
    errors: dict[str, str]      # subject -> worker failure

    @property
    def failed(self) -> bool:
        return bool(self.errors) or any(c.status in ("FAIL", "ERROR")
                                        for row in self.cells.values() for c in row.values())

    def failures(self) -> list[str]:
        out = [f"worker {s}: {e}" for s, e in self.errors.items()]
        for case in self.cases:
            for cell in self.cells[case].values():
                if cell.status in ("FAIL", "ERROR"):
                    out += cell.details
        return out


# ---- exclusions ------------------------------------------------------------------------------
def load_exclusions(subject: str, directory: str = EXCLUSIONS_DIR) -> dict[str, str]:
    """`case-name-glob  # reason` lines of `exclusions/<subject>.txt` -> {glob: reason}.

    A line may begin with a condition on an installed distribution, `[transformers<5.23]`,
    and then applies only when it holds (an oracle whose behaviour changed between versions).
    """
    path = os.path.join(directory, f"{subject}.txt")
    if not os.path.exists(path):
        return {}
    out = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            pattern, _, reason = line.partition("#")
            pattern = pattern.strip()
            if not pattern:
                continue
            if not reason.strip():
                raise ValueError(f"{path}: every exclusion needs a `# reason`. Line: {line!r}")
            if pattern.startswith("["):
                condition, _, pattern = pattern[1:].partition("]")
                if not _version_holds(condition.strip(), path):
                    continue
                pattern = pattern.strip()
            out[pattern] = reason.strip()
    return out


_CONDITION = re.compile(r"^([A-Za-z0-9_.-]+)\s*(<|>=)\s*([0-9]+(?:\.[0-9]+)*)$")


def _release(version: str) -> tuple[int, ...]:
    """`5.23.0.dev0` -> (5, 23, 0): the leading numeric release segments."""
    return tuple(int(p) for p in re.match(r"[0-9]+(?:\.[0-9]+)*", version)[0].split("."))


def _version_holds(condition: str, path: str) -> bool:
    m = _CONDITION.match(condition)
    if not m:
        raise ValueError(f"{path}: a condition must read like `[transformers<5.23]` or "
                         f"`[transformers>=5.23]`. Received: [{condition}].")
    dist, op, bound = m.groups()
    try:
        installed_version = _release(importlib.metadata.version(dist))
    except importlib.metadata.PackageNotFoundError:
        return False
    return (installed_version < _release(bound)) == (op == "<")


def _excluded(case: str, subjects: tuple[str, ...], exclusions: dict[str, dict[str, str]]) -> str:
    for s in subjects:
        for pattern, reason in exclusions.get(s, {}).items():
            if fnmatch.fnmatchcase(case, pattern):
                return f"{s}: {reason}"
    return ""


# ---- preparing and running -------------------------------------------------------------------
def prepare_models(workdir: str, selected: list[C.Case]) -> None:
    """Write each random checkpoint the cases need, once per workdir."""
    specs = C.model_specs()
    for name in sorted({c.model for c in selected if c.model and c.model != C.USER_MODEL}):
        path = os.path.join(workdir, "models", name)
        if os.path.exists(os.path.join(path, "config.json")):
            continue
        spec = specs[name]
        params = random_params(spec.config, seed=spec.seed, head=spec.head, scale=spec.scale)
        save_pretrained(path, spec.config, params)


def installed(subject: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(SUBJECTS[subject][1]) is not None


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["KERAS_BACKEND"] = "tensorflow"  # the Keras backend is checked on TensorFlow
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("PYTHONHASHSEED", "0")
    return env


def run_worker(subject: str, workdir: str, common: list[str], plant: str | None) -> str | None:
    """Run one subject's worker; None on success, else the tail of its stderr."""
    out = os.path.join(workdir, "results", subject)
    cmd = [sys.executable, "-m", "gpt2_conformance.worker", "--backend", subject,
           "--workdir", workdir, "--out", out, *common]
    if plant:
        cmd += ["--plant", plant]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(),
                          timeout=WORKER_TIMEOUT_S)
    with open(os.path.join(workdir, f"{subject}.log"), "w", encoding="utf-8") as f:
        f.write(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        return f"exit {proc.returncode}: " + "\n".join(proc.stderr.strip().splitlines()[-8:])
    return None


def run_roundtrip(case: C.Case, frameworks: list[str], workdir: str) -> tuple[str, list[Comparison]]:
    """hub -> each framework's save_pretrained in turn -> compare every link to the original."""
    src = os.path.join(workdir, "models", case.model)
    _, original = load_pretrained(src)
    comparisons: list[Comparison] = []
    chain = ["hub"]
    for i, fw in enumerate(frameworks):
        dst = os.path.join(workdir, "roundtrip", f"{i}_{fw}")
        cmd = [sys.executable, "-m", "gpt2_conformance.worker", "--backend", fw, "--workdir",
               workdir, "--resave", src, dst, "--head", C.model_specs()[case.model].head]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(),
                              timeout=WORKER_TIMEOUT_S)
        chain.append(fw)
        pair = "~".join(chain)
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-6:])
            comparisons.append(Comparison(case.name, pair, "checkpoint", False, float("inf"),
                                          float("inf"), 0.0, note=f"{fw} failed: {tail}"))
            break
        _, saved = load_pretrained(dst)
        expected = {f"tensor.{k}": np.asarray(v) for k, v in original.items()}
        actual = {f"tensor.{k}": np.asarray(v) for k, v in saved.items()}
        comparisons += compare_all(case.name, pair, expected, actual)
        extra = sorted(set(actual) - set(expected))
        if extra:
            comparisons.append(Comparison(case.name, pair, "checkpoint", False, float("inf"),
                                          float("inf"), 0.0, note=f"unexpected tensors {extra}"))
        src = dst
    return "~".join(["hub", *frameworks, "hub"]), comparisons


# ---- comparing ------------------------------------------------------------------------------
def _read(workdir: str, subject: str, case: str) -> dict[str, np.ndarray] | None:
    path = os.path.join(workdir, "results", subject, case + ".npz")
    if not os.path.exists(path):
        return None
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _status(workdir: str, subject: str) -> dict[str, str]:
    path = os.path.join(workdir, "results", subject, "status.json")
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def pairs_for(case: C.Case, subjects: list[str]) -> list[tuple[str, str]]:
    """The (expected, actual) subject pairs a case is judged on."""
    fws = [s for s in subjects if case.kind in SUBJECT_KINDS[s] and s != "reference"
           and case.dtype in SUBJECT_DTYPES[s]]
    if case.kind == "generation":  # oracles such as transformers judge only the cases naming them
        fws = [s for s in fws if s in FRAMEWORKS or s in case.oracles]
    if case.kind == "grads":
        return [(a, b) for i, a in enumerate(fws) for b in fws[i + 1:]]
    return [("reference", s) for s in fws]


def cell_from(comparisons: list[Comparison], reason: str) -> Cell:
    failed = [c for c in comparisons if not c.ok]
    worst = max(comparisons, key=lambda c: c.ratio) if comparisons else None
    status = "FAIL" if failed else "PASS"
    if reason:
        status = "XFAIL" if failed else "XPASS"
    cell = Cell(status, reason=reason, details=[c.message() for c in failed])
    if worst is not None:
        cell.max_abs, cell.allowed, cell.path = worst.max_abs, worst.allowed, worst.path
    return cell


def evaluate(selected: list[C.Case], subjects: list[str], workdir: str,
             exclusions: dict[str, dict[str, str]], roundtrips: dict[str, tuple[str, list]]
             ) -> tuple[list[str], dict[str, dict[str, Cell]]]:
    statuses = {s: _status(workdir, s) for s in subjects}
    columns: list[str] = []
    cells: dict[str, dict[str, Cell]] = {}
    for case in selected:
        row: dict[str, Cell] = {}
        if case.kind == "roundtrip":
            if case.name in roundtrips:
                col, comps = roundtrips[case.name]
                reason = _excluded(case.name, tuple(col.split("~")), exclusions)
                row[col] = cell_from(comps, reason)
        for a, b in pairs_for(case, subjects):
            col = f"{a}~{b}"
            reason = _excluded(case.name, (a, b), exclusions)
            errs = [f"{s}: {statuses[s][case.name]}" for s in (a, b)
                    if statuses[s].get(case.name, "ok") != "ok"]
            ra, rb = _read(workdir, a, case.name), _read(workdir, b, case.name)
            if errs or ra is None or rb is None:
                msg = errs or [f"{s}: no result" for s, r in ((a, ra), (b, rb)) if r is None]
                row[col] = Cell("XFAIL" if reason else "ERROR", reason=reason,
                                details=[f"case {case.name}, pair {col}: {m}" for m in msg])
                continue
            row[col] = cell_from(compare_all(case.name, col, ra, rb, case.dtype), reason)
        for col in row:
            if col not in columns:
                columns.append(col)
        cells[case.name] = row
    return columns, cells


def run_suite(subjects: list[str], suites: list[str], *, quick: bool = False,
              only: str | None = None, model: str | None = None, workdir: str | None = None,
              plant: dict[str, str] | None = None, jobs: int = 2,
              exclusions_dir: str = EXCLUSIONS_DIR) -> Result:
    """Run the selected cases on every subject (each in its own process) and compare.

    Args:
        subjects: backends to check (the float64 reference is always added).
        suites: `tiny`, `small`, `model` (the latter with `model`).
        plant: subject -> planted bug (tests of the suite itself; see `plants.py`).
        workdir: where checkpoints and results go; a temporary directory when None. Reusing one
            keeps its random checkpoints.
    """
    if workdir is None:
        workdir = tempfile.mkdtemp(prefix="gpt2_conformance_")
    from gpt2_core import GPT2Config

    n_pos = GPT2Config.from_json(model).n_positions if model else None
    selected = C.select(suites, quick, n_pos, only)
    prepare_models(workdir, selected)
    subjects = ["reference"] + [s for s in subjects if s != "reference"]
    common = ["--suites", ",".join(suites)]
    if quick:
        common.append("--quick")
    if only:
        common += ["--only", only]
    if model:
        common += ["--model", model]
    plant = plant or {}
    with concurrent.futures.ThreadPoolExecutor(max(1, jobs)) as pool:
        futures = {s: pool.submit(run_worker, s, workdir, common, plant.get(s)) for s in subjects}
        errors = {s: e for s, f in futures.items() if (e := f.result())}
    roundtrips = {}
    fws = [s for s in FRAMEWORKS if s in subjects]
    for case in selected:
        if case.kind == "roundtrip" and fws:
            roundtrips[case.name] = run_roundtrip(case, fws, workdir)
    exclusions = {s: load_exclusions(s, exclusions_dir) for s in subjects}
    columns, cells = evaluate(selected, subjects, workdir, exclusions, roundtrips)
    return Result([c.name for c in selected], columns, cells, subjects, errors)

