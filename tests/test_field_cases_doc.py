"""Field cases are named by their behaviour, and docs/field-cases.md is where they live.

The cases once carried short codes that pointed at a file outside the repository. These tests
keep the codes from coming back: in code a case is named by the behaviour it guarantees (the
headings of docs/field-cases.md), and every test the catalogue cites exists.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE_DIRS = ("router", "evaluator", "tierwise", "bench", "tests", "alembic")
MARKDOWN = ("README.md", "ARCHITECTURE.md", "docs")
CATALOGUE = ROOT / "docs" / "field-cases.md"
THIS = Path(__file__).resolve()

# A case code after the words "field case(s)", in any text (comments, docstrings, strings).
FIELD_CASE_CODE = re.compile(r"(?i:\bfield[\s-]+cases?)\s+[A-Z]\d")
# A bare case code, looked for in comments and docstrings only (code may use such names).
BARE_CODE = re.compile(r"\b(U[1-5]|B[1-3]|P1|S1|S2[ab]?|D[12]|A1|J[1-3]|Q[1-3])\b")
# A test named after a case code instead of its behaviour.
CODE_TEST_NAME = re.compile(r"^test_(u[1-5]|b[1-3]|p1|s1|s2[ab]?|d[12]|a1|j[1-3]|q[1-3])_")
# The old pointer outside the repository.
OUTSIDE_FILE = re.compile(r"shared/cases\b")

NAME_THE_BEHAVIOUR = "name the behaviour (docs/field-cases.md), not the case code:\n"

# Printed output (the calibration report's notes), not a comment: left for the CLI's owners.
ALLOWED_FIELD_CASE_LINES: set[tuple[str, str]] = set()


def python_files() -> Iterator[Path]:
    for name in SOURCE_DIRS:
        yield from sorted((ROOT / name).rglob("*.py"))


def markdown_files() -> Iterator[Path]:
    for name in MARKDOWN:
        path = ROOT / name
        yield from sorted(path.rglob("*.md")) if path.is_dir() else [path]


def texts() -> Iterator[tuple[Path, str]]:
    """Every Python and Markdown file but this one (whose patterns name what they look for)."""
    for path in [*python_files(), *markdown_files()]:
        if path.resolve() != THIS:
            yield path, path.read_text(encoding="utf-8")


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def line_at(text: str, offset: int) -> tuple[int, str]:
    number = text.count("\n", 0, offset) + 1
    return number, text.splitlines()[number - 1].strip()


def comments(text: str) -> Iterator[tuple[int, str]]:
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.COMMENT:
            yield tok.start[0], tok.string


def docstrings(text: str) -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node, clean=False)
            if doc is not None:
                yield node.body[0].lineno, doc


def test_no_case_code_after_field_case() -> None:
    found = []
    for path, text in texts():
        for match in FIELD_CASE_CODE.finditer(text):
            number, line = line_at(text, match.start())
            if (rel(path), line) not in ALLOWED_FIELD_CASE_LINES:
                found.append(f"{rel(path)}:{number}: {line}")
    assert not found, NAME_THE_BEHAVIOUR + "\n".join(found)


def test_no_bare_case_code_in_comments_or_docstrings() -> None:
    found = []
    for path in python_files():
        text = path.read_text(encoding="utf-8")
        for number, chunk in [*comments(text), *docstrings(text)]:
            for match in BARE_CODE.finditer(chunk):
                found.append(f"{rel(path)}:{number}: {match.group(0)} in {chunk.strip()[:80]!r}")
    assert not found, NAME_THE_BEHAVIOUR + "\n".join(found)


def test_no_test_is_named_after_a_case_code() -> None:
    found = []
    for path in (ROOT / "tests").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            if CODE_TEST_NAME.match(node.name):
                found.append(f"{rel(path)}:{node.lineno}: {node.name}")
    assert not found, "name the test after the behaviour:\n" + "\n".join(found)


def test_nothing_points_at_the_file_outside_the_repository() -> None:
    found = [
        f"{rel(path)}:{line_at(text, m.start())[0]}"
        for path, text in texts()
        for m in OUTSIDE_FILE.finditer(text)
    ]
    assert not found, "the catalogue is docs/field-cases.md:\n" + "\n".join(found)


def test_every_test_the_catalogue_cites_exists() -> None:
    cited = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", CATALOGUE.read_text(encoding="utf-8"))
    assert len(cited) > 50
    defined: dict[str, set[str]] = {}
    missing = []
    for file, name in cited:
        if file not in defined:
            path = ROOT / file
            tree = ast.parse(path.read_text(encoding="utf-8") if path.exists() else "")
            defined[file] = {
                node.name
                for node in ast.walk(tree)
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            }
        if name not in defined[file]:
            missing.append(f"{file}::{name}")
    assert not missing, "docs/field-cases.md cites missing tests:\n" + "\n".join(missing)
