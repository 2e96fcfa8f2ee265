"""Whether the database answers, as every part of one process sees it, and the two log lines
an outage is worth.

The batch writer and outcome intake report their database calls here as ``writes``, the
snapshot poller as ``snapshot``, the API key poller as ``keys``, the job scheduler as
``jobs``: a failure with :meth:`DatabaseHealth.failed`, a success with
:meth:`DatabaseHealth.ok`. A write that worked clears every source (the database is
reachable and writable); any other success clears its own source only. The database is
*down* while any source's last call failed. The log says so once, on the first failure (one
line: the source and the error's first line, no traceback), counts quietly while it stays
down, and says once that it is back, with how long it was down, how many calls failed and
how many rows were spooled meanwhile. A source whose
reads work while its writes fail (a SQLite file made read-only) keeps the database down
without the others' successes making the log flap.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import sqlalchemy.exc
from sqlalchemy.exc import DataError, IntegrityError

log = logging.getLogger(__name__)


def one_line(exc: BaseException) -> str:
    """``exc`` as one line: its type and the first line of its message (SQLAlchemy's wrapped
    driver error unwrapped, its ``[SQL: ...]`` and background-link lines dropped)."""
    inner = getattr(exc, "orig", None) or exc
    text = str(inner).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(inner).__name__}: {first}" if first else type(inner).__name__


def is_connection_error(exc: BaseException) -> bool:
    """True for a failure of the database rather than of the statement's data: the driver or
    the network (``OSError``, ``TimeoutError``, SQLAlchemy's ``OperationalError`` /
    ``InterfaceError`` / any other ``DBAPIError`` but a refused row, asyncpg's own connection
    errors). An ``IntegrityError`` or ``DataError`` (a row the database refuses) is not."""
    if isinstance(exc, (IntegrityError, DataError)):
        return False
    # The driver's own refusal of a value (asyncpg: "invalid input for query argument"), wrapped
    # in a plain DBAPIError, is the statement's data too.
    refused = ("DataError", "IntegrityError", "IntegrityConstraintViolationError")
    orig = getattr(exc, "orig", None)
    for cause in (orig, getattr(orig, "__cause__", None)):
        if cause is not None and any(k.__name__ in refused for k in type(cause).__mro__):
            return False
    if isinstance(exc, (OSError, TimeoutError, sqlalchemy.exc.DBAPIError)):
        return True
    if isinstance(exc, sqlalchemy.exc.TimeoutError):  # the pool's checkout timeout
        return True
    module = type(exc).__module__
    return module.startswith("asyncpg") or module.startswith("sqlite3")


class DatabaseHealth:
    """The database's state in this process (see the module doc).

    Args:
        clock: monotonic seconds (tests pass their own).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._failing: dict[str, str] = {}
        self._down_since: float | None = None
        self.failures = 0
        """Failed calls since the database went down (0 while it is up)."""
        self.spooled = 0
        """Rows spooled to disk since the database went down."""
        self.outages = 0
        """Outages seen since start-up."""

    @property
    def down(self) -> bool:
        """True while some source's last database call failed."""
        return bool(self._failing)

    @property
    def down_for_s(self) -> float:
        """Seconds since the database went down (0 while it is up)."""
        return 0.0 if self._down_since is None else self._clock() - self._down_since

    def failing(self) -> dict[str, str]:
        """Source -> its first failure's one line, for every source failing now."""
        return dict(self._failing)

    def failed(self, source: str, exc: BaseException) -> None:
        """``source``'s database call failed with ``exc``; the first failure of an outage is
        logged (one line), the rest counted."""
        self.failures += 1
        if source in self._failing:
            return
        self._failing[source] = one_line(exc)
        if self._down_since is None:
            self._down_since = self._clock()
            self.outages += 1
            log.error(
                "database unreachable (%s: %s): decisions are served from the routing snapshot "
                "and what is acknowledged is spooled to disk; retrying quietly",
                source,
                self._failing[source],
            )

    def ok(self, source: str) -> None:
        """``source``'s database call worked (``writes``: clears every source); once no source
        is failing the end of the outage is logged with its counts."""
        if source == "writes":  # a committed write: reachable and writable for everyone
            had = bool(self._failing)
            self._failing.clear()
            if not had:
                return
        elif self._failing.pop(source, None) is None or self._failing:
            return
        down_s = self.down_for_s
        log.warning(
            "database reachable again after %.1f s: %d failed attempts, %d rows spooled meanwhile",
            down_s,
            self.failures,
            self.spooled,
        )
        self._down_since = None
        self.failures = 0
        self.spooled = 0
