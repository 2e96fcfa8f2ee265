"""The gateway's compression stage: each call's context compressed as its class's policy says,
before the upstream call.

Per call (``before``), for the decision's task class (:class:`router.policy.ClassSettings`):

- nothing when the class names no compressors (``compression = []``, the default), when it is
  in the critical tier and ``compress_critical`` is false, when the request is smaller than
  ``compression_min_tokens``, or when the quality guard has stepped the class's compression
  off;
- else the messages go through :func:`router.compression.compress_messages` with the class's
  compressors at the ratio of its guard level (:func:`ratio_at`), the extraction guard on when
  ``extraction_guard`` says so (None: when the class's name holds ``extract``), and
  ``compression_similarity``. The compression runs in a worker thread (it is CPU work: about
  1-2 ms per 1,000 tokens, ``bench/compression.py``). A compressed request replaces
  ``call.body["messages"]``; the outcome's sample keeps the messages as the caller sent them.

What it did is in ``call.notes["compression"]`` and in the response header
``x-tierwise-compression`` (``compressed 1210/2480 tokens at 0.5``, or ``unchanged: <why>``).

After the call (``after``), with a :class:`~router.compression.store.CompressionStore`: the
books (context tokens before and after, and the input cost saved at the served model's
catalog input price) and, for a hash-chosen share (``compression_probe_rate``, by a BLAKE2b
hash of ``compression-probe:<decision id>``, :mod:`router.sampling`), a probe for the quality
guard: the uncompressed messages and the compressed answer. At level 1 every other probe, and
at level 2 every probe, is a *trial* of the next stronger level, answered off the hot path, so a
stepped-back class comes back only on evidence (``evaluator.compression``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import anyio

from router.compression.compress import MessagesCompressed, compress_messages
from router.compression.compressors import Options
from router.compression.store import CompressionStore
from router.db import utcnow
from router.gateway.service import Call, CallResult
from router.policy import ClassSettings
from router.pricing import Usage, cost_nusd
from router.providers.base import Completion
from router.sampling import is_sampled, sample_point
from router.table import RoutingSnapshot

HEADER = "x-tierwise-compression"
LEVELS = ("policy", "gentler", "off")
"""The quality guard's levels: the policy's ratio, a gentler one (:func:`ratio_at`), off."""

PROBE_PREFIX = "compression-probe:"


def ratio_at(ratio: float, level: int) -> float | None:
    """The target ratio at a guard level: the policy's at 0; at 1 half of the cut it makes
    (0.5 -> 0.75, 0.3 -> 0.65); None (off) at 2 and above."""
    if level <= 0:
        return ratio
    if level == 1:
        return ratio + (1.0 - ratio) / 2
    return None


def extraction_guard_on(task_class: str, settings: ClassSettings) -> bool:
    """The class's ``extraction_guard``; when unset, on for classes whose name holds
    ``extract``."""
    if settings.extraction_guard is not None:
        return settings.extraction_guard
    return "extract" in task_class


def probe_kind(decision_id: str, rate: float, level: int) -> str | None:
    """Which probe a call is: None (not a probe), ``probe`` (the served, compressed answer is
    graded against an uncompressed one) or ``trial`` (the next stronger level is tried off the
    hot path). Hash-chosen: the same id gives the same answer."""
    key = PROBE_PREFIX + decision_id
    if not is_sampled(key, rate):
        return None
    if level >= 2:
        return "trial"
    if level == 1:  # the point is uniform below rate: its lower half tries level 0
        return "trial" if sample_point(key) < rate / 2 else "probe"
    return "probe"


class CompressionStage:
    """The compression stage (module doc).

    Args:
        snapshot: the router's current routing snapshot (its policy and catalog).
        store: levels, books and probes (None: level 0 for every class, nothing recorded).
    """

    name = "compression"

    def __init__(
        self, snapshot: Callable[[], RoutingSnapshot], store: CompressionStore | None = None
    ) -> None:
        self._snapshot = snapshot
        self._store = store

    def _note(self, call: Call, note: dict[str, Any], header: str) -> None:
        call.notes[self.name] = note
        call.headers[HEADER] = header

    async def before(self, call: Call) -> Completion | None:
        """Compress ``call.body["messages"]`` when the class's policy asks (module doc)."""
        task_class = call.decision.task_class
        settings = self._snapshot().policy.settings_for(task_class)
        if not settings.compression:
            return None
        if call.decision.tier == "critical" and not settings.compress_critical:
            self._note(call, {"status": "unchanged"}, "unchanged: critical tier")
            return None
        level = self._store.level(task_class) if self._store is not None else 0
        ratio = ratio_at(settings.compression_ratio, level)
        note: dict[str, Any] = {
            "level": level,
            "ratio": ratio,
            "pipeline": list(settings.compression),
            "guard": extraction_guard_on(task_class, settings),
            "status": "unchanged",
            "before": 0,
            "after": 0,
        }
        if ratio is None:
            note["probe"] = probe_kind(
                call.decision.decision_id, settings.compression_probe_rate, level
            )
            self._note(call, note, "unchanged: stepped off by the quality guard")
            return None
        if call.request.input_tokens < settings.compression_min_tokens:
            self._note(
                call,
                note,
                f"unchanged: {call.request.input_tokens} tokens < compression_min_tokens "
                f"{settings.compression_min_tokens}",
            )
            return None
        messages = call.body.get("messages")
        if not isinstance(messages, list):
            return None
        options = Options(similarity=settings.compression_similarity)
        pipeline = tuple(settings.compression)
        guard = bool(note["guard"])

        def run() -> MessagesCompressed:
            return compress_messages(messages, pipeline, ratio, guard=guard, options=options)

        result = await anyio.to_thread.run_sync(run)
        note.update(
            status=result.status,
            reason=result.reason,
            before=result.original_tokens,
            after=result.tokens,
            dropped=result.dropped,
        )
        if result.status == "compressed":
            call.body = {**call.body, "messages": result.messages}
            note["probe"] = probe_kind(
                call.decision.decision_id, settings.compression_probe_rate, level
            )
            header = f"compressed {result.tokens}/{result.original_tokens} tokens at {ratio:g}"
        else:
            header = f"unchanged: {result.reason}"
        self._note(call, note, header)
        return None

    async def after(self, call: Call, result: CallResult) -> None:
        """Books and probes (module doc)."""
        note = call.notes.get(self.name)
        store = self._store
        if store is None or note is None or "level" not in note:
            return
        if result.status not in ("ok", "cancelled"):
            store.poke()
            return
        snapshot = self._snapshot()
        task_class = call.decision.task_class
        compressed = note["status"] == "compressed"
        saved = note["before"] - note["after"] if compressed else 0
        saved_nusd = cost_nusd(Usage(input_tokens=saved), snapshot.catalog.get(result.served_model))
        now = utcnow()
        store.book(
            datetime(now.year, now.month, now.day, tzinfo=UTC),
            task_class,
            result.served_model,
            calls=1,
            compressed=int(compressed),
            guarded=int(bool(note.get("dropped"))),
            tokens_before=note["before"],
            tokens_after=note["after"] if compressed else note["before"],
            saved_nusd=saved_nusd or 0,
        )
        kind = note.get("probe")
        if kind is not None and result.status == "ok" and result.text is not None:
            settings = snapshot.policy.settings_for(task_class)
            trial = kind == "trial"
            level = note["level"] - 1 if trial else note["level"]
            tried = ratio_at(settings.compression_ratio, level)
            if tried is not None:
                store.probe(
                    {
                        "decision_id": call.decision.decision_id,
                        "task_class": task_class,
                        "model": result.served_model,
                        "level": level,
                        "ratio": tried,
                        "pipeline": list(settings.compression),
                        "guard": note["guard"],
                        "trial": trial,
                        "input_messages": call.request.messages,
                        "output_text": None if trial else result.text,
                        "status": "queued",
                        "created_at": now,
                        "attempts": 0,
                        "grade_input_tokens": 0,
                        "grade_output_tokens": 0,
                    }
                )
        store.poke()
