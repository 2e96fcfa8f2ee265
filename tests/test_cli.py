"""The CLI's answers to bad input: one line naming the problem, exit code 2, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DATASETS, ROOT

DEFAULT_POLICY = ROOT / "router" / "policies" / "default.toml"


def tierwise(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tierwise.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        check=False,
    )


def policy_with(tmp_path: Path, old: str, new: str) -> Path:
    text = DEFAULT_POLICY.read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / "policy.toml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('tier = "complex"', 'tier = "huge"', "rules[4].tier: unknown tier 'huge'"),
        ("input_usd_per_mtok = 0.15", "input_usd_per_mtok = 0.00000015", "per-token price"),
        (
            'ladder = ["gpt-4o-mini", "claude-3-5-haiku", "claude-3-5-sonnet"]',
            'ladder = ["gpt-4o-mini", "claude-3-5-haiku", "gpt-4o-mini"]',
            "ladder[2]: model 'gpt-4o-mini' is on the ladder twice",
        ),
        ("threshold = 0.03", "threshold = nan", "defaults.threshold"),
        ('name = "default"', 'name = "default', "not valid TOML"),
    ],
)
def test_policy_check_names_the_problem(tmp_path: Path, old: str, new: str, message: str) -> None:
    result = tierwise("policy", "check", str(policy_with(tmp_path, old, new)))
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in " ".join(result.stdout.split())
    assert "Traceback" not in result.stderr


def test_policy_check_accepts_the_default() -> None:
    result = tierwise("policy", "check", str(DEFAULT_POLICY))
    assert result.returncode == 0
    assert "is valid" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["policy", "check", "no-such-file.toml"], "cannot read policy file"),
        (["policy", "apply", "no-such"], "nor a built-in policy of that name (default, replay)"),
        (
            ["replay", str(DATASETS / "mt_bench.jsonl"), "--database-url", "bogus://x"],
            "cannot use database bogus://x",
        ),
        (
            [
                "replay",
                str(DATASETS / "mt_bench.jsonl"),
                "--database-url",
                "sqlite+aiosqlite:////no/such/dir/x.db",
            ],
            "folder /no/such/dir does not exist",
        ),
        (["replay", "no-such.jsonl"], "cannot read data set"),
    ],
)
def test_cli_errors_are_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = tierwise(*args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in " ".join(result.stdout.split())
    assert "Traceback" not in result.stderr


def test_a_built_in_policy_applies_by_name_from_any_folder(tmp_path: Path) -> None:
    """Outside the repository: the schema from the packaged migrations, the policy by name."""
    url = f"sqlite+aiosqlite:///{tmp_path}/t.db"
    result = tierwise("policy", "apply", "default", "--database-url", url, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "applied policy 'default': table version 1" in result.stdout
    result = tierwise("policy", "check", "replay", cwd=tmp_path)
    assert result.returncode == 0 and "policy 'replay' is valid" in result.stdout


def test_non_utf8_files_are_refused_cleanly(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"\xff\xfe name")
    result = tierwise("policy", "check", str(bad))
    assert result.returncode == 2 and "not UTF-8" in result.stdout
    data = tmp_path / "bad.jsonl"
    data.write_bytes(b'{"id": 1}\n\xff\xfe\n')
    result = tierwise("replay", str(data), "--database-url", f"sqlite+aiosqlite:///{tmp_path}/x.db")
    assert result.returncode == 2 and "not UTF-8" in result.stdout


def test_conflicting_overlapping_overrides_are_refused(tmp_path: Path) -> None:
    text = DEFAULT_POLICY.read_text(encoding="utf-8") + (
        '\n[[classes]]\nmatch = "classify*"\np0 = 0.01\np1 = 0.03\n'
        '\n[[classes]]\nmatch = "*fy"\np0 = 0.04\nthreshold = 0.05\n'
    )
    path = tmp_path / "overlap.toml"
    path.write_text(text, encoding="utf-8")
    result = tierwise("policy", "check", str(path))
    assert result.returncode == 2
    assert "classes[1] for class 'classify'" in " ".join(result.stdout.split())


def test_read_commands_on_an_unmigrated_database_say_what_to_run(tmp_path: Path) -> None:
    """routing-table, report and the class commands read the schema without migrating it: on a
    database that has none they answer in one line naming the command, not a traceback."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    for command in (["routing-table"], ["report"], ["class", "pin", "classify", "--reason", "x"]):
        done = tierwise(*command, "--database-url", url)
        assert done.returncode == 2, done.stdout + done.stderr
        out = (done.stdout + done.stderr).strip()
        assert "Traceback" not in out and len(out.splitlines()) == 1, out
        assert "has no tierwise schema" in out and "tierwise db upgrade" in out
    assert tierwise("db", "upgrade", "--database-url", url).returncode == 0
    table = tierwise("routing-table", "--database-url", url)
    assert table.returncode == 0 and "no policy applied yet" in table.stdout
