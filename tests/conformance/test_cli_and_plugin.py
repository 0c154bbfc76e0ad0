"""The command line (exit codes, reports, --check-report) and the pytest plugin, on the
framework-free `numpy` subject so they stay fast."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from gpt2_conformance.__main__ import main

ONLY = "tiny.base.forward.left_padded,tiny.base.loss.labels"


def test_cli_passes_writes_reports_and_checks_them(tmp_path, workdir, capsys):
    rep = tmp_path / "rep"
    args = ["--backends", "numpy", "--only", ONLY, "--workdir", workdir, "--report", str(rep)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "tiny.base.forward.left_padded" in out and "0 failing" in out
    data = json.loads((rep / "conformance.json").read_text())
    assert data[0]["cells"]["tiny.base.loss.labels"]["reference~numpy"]["status"] == "PASS"
    md = (rep / "conformance.md").read_text()
    assert "| tiny.base.loss.labels | PASS" in md
    report_file = tmp_path / "REPORT.md"
    report_file.write_text(md)
    from gpt2_conformance import __main__ as cli
    from gpt2_conformance.report import check_report

    assert check_report(report_file.read_text(), md) == []
    assert check_report(md.replace("| tiny.base.loss.labels | PASS", "| tiny.base.loss.labels | FAIL"),
                        md) == ["[Tiny random configs (every tensor random, every config option)] "
                                "tiny.base.loss.labels|reference~numpy: committed FAIL, now PASS"]
    assert cli.SUITE_TITLES["tiny"] in md


def test_cli_exits_nonzero_and_names_the_tensor_on_a_failure(workdir, capsys):
    args = ["--backends", "numpy", "--only", ONLY, "--workdir", workdir, "--plant", "numpy:ln_eps"]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "case tiny.base.forward.left_padded, pair reference~numpy, tensor logits:" in out
    assert "FAIL" in out


def _pytest(tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})


def test_plugin_is_inert_without_the_option(tmp_path):
    (tmp_path / "test_one.py").write_text("def test_one():\n    pass\n")
    proc = _pytest(tmp_path)
    assert "1 passed" in proc.stdout, proc.stdout + proc.stderr
    code = ("import sys, gpt2_conformance.pytest_plugin; "
            "print(sorted(m for m in ('numpy', 'gpt2_core', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    assert out.strip() == "[]"


def test_plugin_option_adds_one_test_per_case(tmp_path):
    (tmp_path / "test_one.py").write_text("def test_one():\n    pass\n")
    proc = _pytest(tmp_path, "--gpt2-conformance", "--gpt2-conformance-backends", "numpy",
                   "--gpt2-conformance-quick", "-rA")
    assert "passed" in proc.stdout and "failed" not in proc.stdout, proc.stdout + proc.stderr
    assert "tiny.base.forward.left_padded" in proc.stdout


def test_one_line_function_runs_the_cases(tmp_path):
    (tmp_path / "test_gpt2.py").write_text(textwrap.dedent("""
        from gpt2_conformance.pytest_plugin import conformance_tests
        test_gpt2 = conformance_tests(backends="numpy", quick=True)
    """))
    proc = _pytest(tmp_path, "-k", "loss.labels")
    assert "1 passed" in proc.stdout, proc.stdout + proc.stderr


def test_committed_report_matches_the_tiny_matrix(workdir):
    """CI's guard on conformance/REPORT.md: rerun the tiny suite on every installed backend and
    fail when a case or a PASS/FAIL cell changed (digits may differ by machine)."""
    report = os.path.join(os.path.dirname(__file__), "..", "..", "conformance", "REPORT.md")
    assert main(["--suite", "tiny", "--check-report", report, "--workdir", workdir]) == 0
