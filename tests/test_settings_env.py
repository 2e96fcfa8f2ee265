"""Settings read the providers' usual key names (OPENAI_API_KEY, ANTHROPIC_API_KEY) when the
TIERWISE_ ones are unset, from the environment and from ``.env``; the TIERWISE_ name wins."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from tierwise.settings import Settings

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
