"""The matrix as text, Markdown and JSON, and the check of a committed report.

`check_report` compares case names and PASS/FAIL cells only, never the float digits, which vary
with the machine.
"""

from __future__ import annotations

import dataclasses
import json
import re

from gpt2_conformance.runner import Result


def markdown(result: Result, title: str = "") -> str:
    lines = [f"### {title}", ""] if title else []
    lines.append("| case | " + " | ".join(result.columns) + " |")
    lines.append("|---|" + "---|" * len(result.columns))
    for case in result.cases:
        row = result.cells[case]
        cells = [row[c].text() if c in row else "—" for c in result.columns]
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    failures = result.failures()
    if failures:
        lines += ["", "Failures:", "", "```", *failures, "```"]
    reasons = sorted({f"{case}: {cell.reason}" for case in result.cases
                      for cell in result.cells[case].values() if cell.reason})
    if reasons:
        lines += ["", "Exclusions (XFAIL: a known gap; XPASS: the exclusion can go):", ""]
        lines += [f"- {r}" for r in reasons]
    return "\n".join(lines) + "\n"


def text(result: Result) -> str:
    """A plain-text matrix for the terminal."""
    header = ["case"] + result.columns
    rows = [[case] + [result.cells[case][c].text() if c in result.cells[case] else "-"
                      for c in result.columns] for case in result.cases]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*r) for r in rows]
    failures = result.failures()
    if failures:
        out += ["", f"{len(failures)} failure(s):", *failures]
    n = sum(len(r) for r in result.cells.values())
    bad = sum(c.status in ("FAIL", "ERROR") for r in result.cells.values() for c in r.values())
    out.append(f"\n{len(result.cases)} cases, {n} cells, {bad} failing.")
    return "\n".join(out)


def to_json(result: Result) -> str:
    return json.dumps({
        "subjects": result.subjects, "columns": result.columns, "cases": result.cases,
        "cells": {case: {col: dataclasses.asdict(cell) for col, cell in row.items()}
                  for case, row in result.cells.items()},
        "worker_errors": result.errors, "failed": result.failed,
    }, indent=1, default=float)


_ROW = re.compile(r"^\| (\S+) \| (.*) \|$")


def parse_statuses(md: str) -> dict[str, dict[str, str]]:
    """{section title: {"case|column": status}} from a Markdown report (every table)."""
    out: dict[str, dict[str, str]] = {}
    section, columns = "", []
    for line in md.splitlines():
        if line.startswith("### "):
            section = line[4:].strip()
            out.setdefault(section, {})
        m = _ROW.match(line)
        if not m:
            continue
        if m[1] == "case":
            columns = [c.strip() for c in m[2].split("|")]
            continue
        if set(m[1]) <= {"-", "|"}:
            continue
        for col, cell in zip(columns, m[2].split("|")):
            status = cell.strip().split(" ")[0]
            if status != "—":
                out.setdefault(section, {})[f"{m[1]}|{col}"] = status
    return out


def check_report(committed_md: str, fresh_md: str) -> list[str]:
    """Differences in case names and statuses between two reports (empty when they agree).
    Only the sections the fresh report regenerated are compared (CI may rerun `tiny` alone)."""
    old, new = parse_statuses(committed_md), parse_statuses(fresh_md)
    problems = []
    for section in sorted(new):
        a, b = old.get(section, {}), new.get(section, {})
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                problems.append(f"[{section}] {key}: committed {a.get(key, 'absent')}, "
                                f"now {b.get(key, 'absent')}")
    return problems
