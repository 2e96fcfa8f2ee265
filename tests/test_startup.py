"""What the service says at start-up about where its reference model's answers come from."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.conftest import running_service

pytestmark = pytest.mark.asyncio


async def test_replay_without_held_out_sets_says_where_it_looked(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tierwise.app")
    async with running_service(database_url, datasets_dir=tmp_path) as svc:
        assert (await svc.client.get("/healthz")).status_code == 200
    lines = [r.getMessage() for r in caplog.records if "TIERWISE_DATASETS_DIR" in r.getMessage()]
    assert len(lines) == 1, caplog.text
    assert str(tmp_path) in lines[0]
    assert "mt_bench.jsonl" in lines[0]


async def test_replay_with_the_held_out_sets_starts_quietly(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tierwise.app")
    async with running_service(database_url) as svc:
        assert (await svc.client.get("/healthz")).status_code == 200
    assert "TIERWISE_DATASETS_DIR" not in caplog.text


@pytest.mark.parametrize("freeze", [False, True])
async def test_a_served_app_freezes_its_start_up_heap(database_url: str, freeze: bool) -> None:
    """``tierwise serve``'s app (``freeze_heap=True``) moves what start-up allocated out of the
    collector's reach once started; the default (tests, embedded uses) leaves the collector as
    it is."""
    import gc

    from tests.conftest import make_settings
    from tierwise.app import create_app

    gc.unfreeze()
    app = create_app(make_settings(database_url), freeze_heap=freeze)
    try:
        async with app.router.lifespan_context(app):
            assert (gc.get_freeze_count() > 0) is freeze
    finally:
        gc.unfreeze()
