"""Run the Alembic migrations programmatically (synchronously: call it outside an event loop)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

ROOT = Path(__file__).resolve().parent.parent


def alembic_config(database_url: str) -> Config:
    """Alembic config for ``database_url``, using the repository's ``alembic/`` scripts."""
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "alembic"))
    cfg.attributes["database_url"] = database_url
    cfg.attributes["configure_logging"] = False
    return cfg


def upgrade(database_url: str, revision: str = "head") -> None:
    """``alembic upgrade <revision>`` on ``database_url``."""
    command.upgrade(alembic_config(database_url), revision)


def reset(database_url: str) -> None:
    """Drop every tierwise table (``downgrade base``) and build them again (``upgrade head``)."""
    cfg = alembic_config(database_url)
    command.downgrade(cfg, "base")
    command.upgrade(cfg, "head")
