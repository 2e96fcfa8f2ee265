"""The rooms' rules, checked on the import statements of every module (STYLE.md rule 1 and
ARCHITECTURE.md): imports go one way, evaluator -> router, never back; neither plane imports
the composition root; graders neither touch the database nor call a provider; the routing
decision is pure; datasets/ holds no code."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _modules(where: str) -> dict[str, set[str]]:
    """File (relative to the repository) -> every module it imports, dotted in full."""
    base = ROOT / where
    paths = [base] if base.is_file() else sorted(base.rglob("*.py"))
    found: dict[str, set[str]] = {}
    for path in paths:
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
                names |= {f"{node.module}.{a.name}" for a in node.names}
        found[str(path.relative_to(ROOT))] = names
    return found


def _importing(where: str, *prefixes: str) -> set[tuple[str, str]]:
    """(file, module) pairs under ``where`` that import a module under one of ``prefixes``."""
    return {
        (f, m)
        for f, names in _modules(where).items()
        for m in names
        if any(m == p or m.startswith(p + ".") for p in prefixes)
    }


def test_router_never_imports_evaluator_or_the_composition_root() -> None:
    assert _importing("router", "evaluator", "tierwise") == set()


def test_evaluator_never_imports_the_composition_root() -> None:
    assert _importing("evaluator", "tierwise") == set()


def test_graders_neither_touch_the_database_nor_call_providers() -> None:
    """Graders state the calls they need and read the answers; the jobs do the rest."""
    banned = (
        "sqlalchemy",
        "sqlmodel",
        "router.db",
        "router.models",
        "router.repository",
        "evaluator.models",
        "evaluator.grading",
        "router.providers.openai",
        "router.providers.anthropic",
        "router.providers.registry",
        "openai",
        "anthropic",
        "httpx",
    )
    assert _importing("evaluator/graders", *banned) == set()


def test_the_routing_decision_is_pure() -> None:
    banned = (
        "sqlalchemy",
        "sqlmodel",
        "router.db",
        "router.models",
        "router.repository",
        "router.providers",
        "asyncio",
        "time",
    )
    assert _importing("router/decide.py", *banned) == set()


def test_datasets_hold_no_code() -> None:
    assert sorted(p.name for p in (ROOT / "datasets").rglob("*.py")) == []


def test_the_check_sees_imports() -> None:
    assert ("evaluator/grading/_job.py", "router.providers") in _importing(
        "evaluator/grading", "router.providers"
    )
    assert ("router/service.py", "router.decide") in _importing("router", "router.decide")
