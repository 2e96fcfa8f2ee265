"""The batch lane's scheduled jobs: ``lane-submit`` sends queued lines to the providers' batch
APIs, ``lane-poll`` reads the batches that ended (both safe in several workers at once: claims
and conditional updates keep them apart, see :mod:`router.lane.service`)."""

from __future__ import annotations

from datetime import datetime

from router.jobs import Job
from router.lane.service import Lane, LaneRun


def lane_jobs(lane: Lane, interval_s: float) -> list[Job]:
    """Both jobs, every ``interval_s`` seconds."""

    async def submit(_tick: datetime) -> LaneRun:
        return await lane.submit()

    async def poll(_tick: datetime) -> LaneRun:
        return await lane.poll()

    return [Job("lane-submit", submit, interval_s), Job("lane-poll", poll, interval_s)]
