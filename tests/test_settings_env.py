"""Settings read the providers' usual key names (OPENAI_API_KEY, ANTHROPIC_API_KEY) when the
TIERWISE_ ones are unset, from the environment and from ``.env``; the TIERWISE_ name wins."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest
from pydantic import SecretStr

from tierwise.settings import Settings, known_names, unknown_names, warn_unknown_names

NAMES = (
    "TIERWISE_OPENAI_API_KEY",
    "OPENAI_API_KEY",
    "TIERWISE_ANTHROPIC_API_KEY",
    "ANTHROPIC_API_KEY",
    "TIERWISE_LOG_LEVEL",
)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No provider key in the environment, and a working folder with no ``.env``."""
    for name in NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def keys(settings: Settings) -> tuple[str | None, str | None]:
    return tuple(  # type: ignore[return-value]
        None if k is None else k.get_secret_value()
        for k in (settings.openai_api_key, settings.anthropic_api_key)
    )


def test_the_providers_usual_names_are_read(clean_env: pytest.MonkeyPatch) -> None:
    assert keys(Settings()) == (None, None)
    clean_env.setenv("OPENAI_API_KEY", "sk-plain")
    clean_env.setenv("ANTHROPIC_API_KEY", "sk-ant-plain")
    assert keys(Settings()) == ("sk-plain", "sk-ant-plain")


def test_the_tierwise_name_wins_when_both_are_set(clean_env: pytest.MonkeyPatch) -> None:
    for name in NAMES[:4]:
        clean_env.setenv(name, name.lower())
    assert keys(Settings()) == ("tierwise_openai_api_key", "tierwise_anthropic_api_key")


def test_dotenv_reads_both_names_beside_the_prefixed_settings(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text(
        "OPENAI_API_KEY=from-dotenv\nTIERWISE_ANTHROPIC_API_KEY=tw-dotenv\n"
        "ANTHROPIC_API_KEY=plain-dotenv\nTIERWISE_LOG_LEVEL=DEBUG\n",
        encoding="utf-8",
    )
    settings = Settings()
    assert keys(settings) == ("from-dotenv", "tw-dotenv")
    assert settings.log_level == "DEBUG"  # env_prefix still applies to every other field


def test_the_environment_beats_dotenv_as_for_every_setting(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Documented in Settings: an exported OPENAI_API_KEY beats TIERWISE_OPENAI_API_KEY written
    only in .env (sources are merged first, the TIERWISE_ name wins within one)."""
    (tmp_path / ".env").write_text("TIERWISE_OPENAI_API_KEY=tw-dotenv\n", encoding="utf-8")
    clean_env.setenv("OPENAI_API_KEY", "exported")
    assert keys(Settings())[0] == "exported"
    clean_env.setenv("TIERWISE_OPENAI_API_KEY", "tw-exported")
    assert keys(Settings())[0] == "tw-exported"


def test_a_key_given_by_field_name_still_works(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("OPENAI_API_KEY", "from-env")
    settings = Settings(openai_api_key=SecretStr("given"))
    assert keys(settings) == ("given", None)


# ---- unknown TIERWISE_ names ---------------------------------------------------------------


def test_an_unknown_name_is_reported_with_the_closest_known_one(
    clean_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    env = {
        "TIERWISE_OPENAI_BASE_ULR": "http://x",
        "TIERWISE_DATABASE_URL": "sqlite+aiosqlite:///x.db",
        "TIERWISE_ZZZ": "1",
        "OPENAI_API_KEY": "sk-plain",
    }
    assert unknown_names(env, None) == [
        ("TIERWISE_OPENAI_BASE_ULR", "TIERWISE_OPENAI_BASE_URL"),
        ("TIERWISE_ZZZ", None),
    ]
    with caplog.at_level(logging.WARNING, logger="tierwise.settings"):
        lines = warn_unknown_names(env, None)
    assert lines == [
        "unknown setting TIERWISE_OPENAI_BASE_ULR is ignored; did you mean "
        "TIERWISE_OPENAI_BASE_URL?",
        "unknown setting TIERWISE_ZZZ is ignored",
    ]
    assert [r.getMessage() for r in caplog.records] == lines
    assert "http://x" not in caplog.text  # names only, never values


def test_every_setting_and_alias_is_known(clean_env: pytest.MonkeyPatch) -> None:
    env = {f"TIERWISE_{name.upper()}": "" for name in Settings.model_fields}
    assert unknown_names(env, None) == []
    assert "TIERWISE_OPENAI_API_KEY" in known_names()


def test_names_in_dotenv_are_checked_too(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("TIERWISE_LOG_LEVLE=DEBUG\nOTHER=1\n", encoding="utf-8")
    assert unknown_names({}, tmp_path / ".env") == [("TIERWISE_LOG_LEVLE", "TIERWISE_LOG_LEVEL")]


def test_a_command_warns_at_start_up(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Through the command line: the warning line, then the command runs."""
    from typer.testing import CliRunner

    from tierwise.cli import app

    clean_env.setenv("TIERWISE_GRADING_INTERVL_S", "5")
    clean_env.setenv("TIERWISE_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/t.db")
    handler = logging.StreamHandler(stream := io.StringIO())
    logging.getLogger("tierwise.settings").addHandler(handler)
    try:
        result = CliRunner().invoke(app, ["db", "upgrade"])
    finally:
        logging.getLogger("tierwise.settings").removeHandler(handler)
    assert result.exit_code == 0, result.output
    assert stream.getvalue().splitlines() == [
        "unknown setting TIERWISE_GRADING_INTERVL_S is ignored; did you mean "
        "TIERWISE_GRADING_INTERVAL_S?"
    ]
