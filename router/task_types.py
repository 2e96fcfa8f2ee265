"""Unknown task types: the policy's choice (``unknown_task_types``), the error it raises, and
the per-process count of what was seen.

A task type is *known* when a rule of the policy names it, a ``[[classes]]`` glob matches it
(:meth:`router.policy.Policy.is_known`), or it is :data:`DEFAULT_TASK_TYPE`. An unknown one is
a typo until shown otherwise: left alone it would become a task class of its own, sampled and
graded at the team's expense with nobody watching it. The policy says what happens instead:

* ``"default"`` (the default): routed as the task type ``default``, into the ``default`` class
  (its rules and ``[[classes]]`` settings apply), the decision keeping the task type as sent;
* ``"reject"``: refused (422 on ``POST /v1/route``, 400 on the gateway) naming ``task_type``
  and the known task types.

Either way :class:`UnknownTaskTypes` counts it and the log warns once per task type.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from router.errors import InvalidInput

log = logging.getLogger(__name__)

DEFAULT_TASK_TYPE = "default"
"""The task type (and task class) an unknown task type is routed as under
``unknown_task_types = "default"``; always known."""

UnknownAction = Literal["default", "reject"]

MAX_TRACKED = 1000
"""Distinct unknown task types counted one by one; the rest are counted together under
:data:`OTHER` (a caller sending random task types cannot grow the process's memory)."""

OTHER = "(other)"


class UnknownTaskType(InvalidInput):
    """A task type the policy does not know, under ``unknown_task_types = "reject"`` (422;
    field ``task_type``, or where the gateway read it: ``model``, ``x-tierwise-task-type``)."""

    code = "unknown_task_type"

    def __init__(self, task_type: str, known: list[str], *, field: str = "task_type") -> None:
        shown = ", ".join(known[:50]) + (
            f" (and {len(known) - 50} more)" if len(known) > 50 else ""
        )
        super().__init__(
            f"{field}: unknown task type '{task_type}' (the policy's unknown_task_types is "
            f'"reject"); known task types: {shown}',
            field=field,
        )
        self.task_type = task_type
        self.known = known


@dataclass(frozen=True, slots=True)
class UnknownCount:
    """How often one unknown task type was seen by this process, and what was done."""

    task_type: str
    action: UnknownAction
    count: int


class UnknownTaskTypes:
    """The in-memory count of unknown task types, per task type and action, since start-up.

    :meth:`record` is called by the router on every decision for an unknown task type (the hot
    path: a dict update under a lock). ``listeners`` are called with ``(task_type, action)`` on
    every record: the place for a metrics counter (a Prometheus ``Counter`` labelled by action:
    label by action only, since task types are caller-chosen and unbounded).
    """

    def __init__(self) -> None:
        self._counts: dict[tuple[str, UnknownAction], int] = {}
        self._types: set[str] = set()
        self._lock = threading.Lock()
        self.listeners: list[Callable[[str, UnknownAction], None]] = []

    def record(self, task_type: str, action: UnknownAction) -> None:
        """Count one decision for the unknown ``task_type``; warn the first time it is seen."""
        with self._lock:
            first = task_type not in self._types
            if first and len(self._types) >= MAX_TRACKED:
                if OTHER not in self._types:
                    log.warning(
                        "more than %d distinct unknown task types: counting the rest as %s",
                        MAX_TRACKED,
                        OTHER,
                    )
                    self._types.add(OTHER)
                key = OTHER
                first = False
            else:
                key = task_type
                self._types.add(task_type)
            self._counts[(key, action)] = self._counts.get((key, action), 0) + 1
        if first:
            if action == "reject":
                log.warning(
                    'unknown task type %r refused (unknown_task_types = "reject"); name it in '
                    "a rule or a [[classes]] glob of the policy if it is meant",
                    task_type,
                )
            else:
                log.warning(
                    "unknown task type %r routed as the %r class (unknown_task_types = "
                    '"default"); name it in a rule or a [[classes]] glob of the policy if it is '
                    "meant, or fix the caller's typo",
                    task_type,
                    DEFAULT_TASK_TYPE,
                )
        for listener in self.listeners:
            listener(task_type, action)

    def counts(self) -> list[UnknownCount]:
        """Every (task type, action) seen, most frequent first."""
        with self._lock:
            items = list(self._counts.items())
        items.sort(key=lambda kv: (-kv[1], kv[0]))
        return [UnknownCount(t, a, n) for (t, a), n in items]

    def total(self, action: UnknownAction | None = None) -> int:
        """Decisions for unknown task types (of one action, or all)."""
        with self._lock:
            return sum(n for (_, a), n in self._counts.items() if action in (None, a))
