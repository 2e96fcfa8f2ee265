"""Imports go one way: evaluator -> router, never back (STYLE.md rule 1)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _imports(package: str) -> set[tuple[str, str]]:
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found |= {(str(path.relative_to(ROOT)), a.name.split(".")[0]) for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add((str(path.relative_to(ROOT)), node.module.split(".")[0]))
    return found


def test_router_never_imports_evaluator_or_the_composition_root() -> None:
    bad = {(f, m) for f, m in _imports("router") if m in ("evaluator", "tierwise")}
    assert bad == set()


def test_evaluator_never_imports_the_composition_root() -> None:
    assert {(f, m) for f, m in _imports("evaluator") if m == "tierwise"} == set()


def test_the_check_sees_imports() -> None:
    assert ("evaluator/grading/_job.py", "router") in _imports("evaluator")
