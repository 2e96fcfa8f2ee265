"""The batch lane: callers' non-interactive work through the providers' batch APIs.

OpenAI-compatible Files and Batches endpoints (:mod:`router.lane.api`); each input line is
routed like a gateway call when the batch is created, kept durably
(:class:`router.models.LaneItem`),
grouped per routed model into provider batches by a submit job and read back by a poll job
(:mod:`router.lane.service`); the caller's output and error files are assembled in its own
custom ids once every line ended.
"""

from router.lane.service import Lane, LaneRun

__all__ = ["Lane", "LaneRun"]
