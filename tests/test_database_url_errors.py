"""A database URL tierwise cannot use is one line saying what to change, from every command
that opens the database, with exit code 2 and no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tierwise.cli import app

COMMANDS = (
    ["db", "upgrade"],
    ["routing-table"],
    ["serve", "--port", "1"],
    ["worker"],
    ["report"],
    ["prices"],
    ["costs"],
    ["keys", "list"],
    ["policy", "apply", "default"],
)


def bad_urls(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """Name -> (URL, what the line must say)."""
    return {
        "no_asyncpg": (
            "postgresql://postgres@127.0.0.1:5432/test",
            "write postgresql+asyncpg://... instead of postgresql://",
        ),
        "missing_database": (
            "postgresql+asyncpg://postgres@127.0.0.1:5432/tierwise_no_such_db",
            'database "tierwise_no_such_db" does not exist: create it',
        ),
        "unreachable_host": (
            "postgresql+asyncpg://postgres@127.0.0.1:1/x",
            "is the database server running there?",
        ),
        "sqlite_missing_folder": (
            f"sqlite+aiosqlite:///{tmp_path}/nope/tierwise.db",
            f"folder {tmp_path}/nope does not exist",
        ),
        "sqlite_folder": (f"sqlite+aiosqlite:///{tmp_path}", "is a folder: name a file in it"),
        "other_backend": ("mysql://a@b/c", "tierwise runs on SQLite or PostgreSQL, not 'mysql'"),
    }


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TIERWISE_DATABASE_URL", raising=False)
    return CliRunner()


@pytest.mark.parametrize(
    "kind",
    [
        "no_asyncpg",
        "missing_database",
        "unreachable_host",
        "sqlite_missing_folder",
        "sqlite_folder",
        "other_backend",
    ],
)
def test_each_bad_url_is_one_line_from_db_upgrade(
    runner: CliRunner, tmp_path: Path, kind: str
) -> None:
    url, says = bad_urls(tmp_path)[kind]
    result = runner.invoke(app, ["db", "upgrade", "--database-url", url])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2, result.output
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error (invalid_input): "), lines[0]
    assert says in lines[0], lines[0]
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c))
@pytest.mark.parametrize("kind", ["no_asyncpg", "missing_database"])
def test_every_command_says_it_in_one_line(
    runner: CliRunner, tmp_path: Path, command: list[str], kind: str
) -> None:
    url, says = bad_urls(tmp_path)[kind]
    result = runner.invoke(app, [*command, "--database-url", url])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and says in lines[0], result.output


def test_the_environment_variable_is_checked_as_the_option(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIERWISE_DATABASE_URL", "postgresql://postgres@127.0.0.1/test")
    result = runner.invoke(app, ["routing-table"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error (invalid_input): database URL (TIERWISE_DATABASE_URL, --database-url): the "
        "postgresql driver must be asyncpg: write postgresql+asyncpg://... instead of "
        "postgresql://..."
    ]


def test_another_invalid_setting_is_one_line_naming_it(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIERWISE_SNAPSHOT_POLL_S", "-1")
    result = runner.invoke(app, ["routing-table"])
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error (invalid_input): TIERWISE_SNAPSHOT_POLL_S: "), line
