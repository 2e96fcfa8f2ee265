"""The spool: rows acknowledged while the database could not take them, kept on local disk.

An append-only log in one folder: numbered segment files (``000000000001.spool``, ...), one
JSON line per row, ``["<table>", {column: value}]`` (timestamps as ISO 8601 text, turned back
into aware datetimes by the table's own column types on reading). :meth:`Spool.append` writes
a group of rows and ``fsync``\\ s the file before it returns, so a row it took survives a crash
of the process or the machine; a line cut short by a crash mid-write was never acknowledged
and is skipped on reading. Segments are read back oldest first (:meth:`Spool.seal`,
:meth:`Spool.read`) and deleted once their rows are in the database (:meth:`Spool.remove`);
every insert of a spooled row is ``ON CONFLICT DO NOTHING`` on its primary key, so a segment
read again after a crash half way through its write is stored once.

Bounded: the segments together never exceed ``max_bytes``; an append that would is refused
whole (:class:`SpoolFull`), and its rows are not acknowledged.

Figures (``bench/spool.py``): see the note in ARCHITECTURE.md, "The spool".
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlmodel import SQLModel

from router.db import UTCDateTime

Row = dict[str, Any]
Batch = list[tuple[type[SQLModel], Row]]

SEGMENT_BYTES = 8 * 1024 * 1024
"""A segment is closed and a new one begun once it holds this many bytes (8 MiB)."""

SUFFIX = ".spool"


class SpoolFull(Exception):
    """The spool cannot take the rows without passing its size bound (nothing was written)."""


class SpoolInUse(OSError):
    """Another process holds the spool folder (each process needs a folder of its own)."""


def _encode(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot spool a {type(value).__name__}")


def _timestamp_columns(table: type[SQLModel]) -> tuple[str, ...]:
    columns = table.__table__.columns  # type: ignore[attr-defined]
    return tuple(c.name for c in columns if isinstance(c.type, UTCDateTime))


class Spool:
    """The spool folder (see the module doc). Thread-safe: appends run in a worker thread
    while the writer reads sealed segments.

    Args:
        directory: the folder (created if missing).
        tables: the tables whose rows may be spooled (by ``__tablename__``).
        max_bytes: the bound on all segments together, bytes; 0 = spool nothing.

    Raises:
        SpoolInUse: another process holds the folder (``<folder>/.lock``).
        OSError: the folder cannot be created or read.
    """

    def __init__(
        self, directory: Path, tables: Sequence[type[SQLModel]], *, max_bytes: int
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._tables = {t.__tablename__: t for t in tables}
        self._names = {t: name for name, t in self._tables.items()}
        self._stamps = {t: _timestamp_columns(t) for t in tables}
        self._lock = threading.Lock()
        directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd: int | None = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise SpoolInUse(
                f"spool folder {directory} is in use by another tierwise process: give each "
                "process its own TIERWISE_SPOOL_DIR"
            ) from exc
        self._sizes: dict[Path, int] = {}
        self._rows: dict[Path, int] = {}
        for path in sorted(directory.glob(f"*{SUFFIX}")):
            self._sizes[path] = path.stat().st_size
            self._rows[path] = sum(1 for _ in self._lines(path))
        self._current: Path | None = None  # segments found at start-up are all sealed

    def close(self) -> None:
        """Let go of the folder (another process may open it)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # ---- state ------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        """Bytes held in every segment."""
        return sum(self._sizes.values())

    @property
    def rows(self) -> int:
        """Rows held (read from the segments at start-up, counted since)."""
        return sum(self._rows.values())

    @property
    def empty(self) -> bool:
        """True when no segment holds a row."""
        return self.rows == 0

    def room(self) -> bool:
        """True while the spool is below its bound (it may take a row)."""
        return self.size < self.max_bytes

    # ---- writing ----------------------------------------------------------------------------
    def encode(self, batch: Batch) -> bytes:
        """The segment lines of ``batch``.

        Raises:
            KeyError: a table the spool does not take.
            TypeError: a value JSON cannot hold.
        """
        lines = [
            json.dumps([self._names[t], row], default=_encode, separators=(",", ":"))
            for t, row in batch
        ]
        return ("\n".join(lines) + "\n").encode()

    def append(self, batch: Batch) -> None:
        """Write ``batch`` at the end of the current segment and fsync it (and, for a new
        segment, its folder). Blocks: run it in a worker thread.

        Raises:
            SpoolFull: the rows would pass ``max_bytes``; none was written.
            OSError: the disk refused (full, read-only); what was written of it may be read
                back later (each row is stored once), but it was not acknowledged.
        """
        if not batch:
            return
        data = self.encode(batch)
        with self._lock:
            if self.size + len(data) > self.max_bytes:
                raise SpoolFull(
                    f"spool full: {self.size} of {self.max_bytes} bytes in {self.directory}"
                )
            path = self._current
            new = path is None or self._sizes.get(path, 0) >= SEGMENT_BYTES
            if new:
                path = self._next_path()
                self._current = path
            assert path is not None
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            if new:
                self._sync_directory()
            self._sizes[path] = self._sizes.get(path, 0) + len(data)
            self._rows[path] = self._rows.get(path, 0) + len(batch)

    def _next_path(self) -> Path:
        last = max((int(p.stem) for p in self._sizes), default=0)
        return self.directory / f"{last + 1:012d}{SUFFIX}"

    def _sync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # ---- reading back -----------------------------------------------------------------------
    def seal(self) -> list[Path]:
        """Close the current segment (the next append begins a new one, numbered after every
        segment there is); every segment, oldest first."""
        with self._lock:
            self._current = None
            return sorted(self._sizes)

    def _lines(self, path: Path) -> list[bytes]:
        data = path.read_bytes()
        lines = data.split(b"\n")
        # The last element is b"" when the file ends with a newline; anything else there is a
        # line cut short by a crash mid-write (never acknowledged).
        return [line for line in lines[:-1] if line]

    def read(self, path: Path) -> Batch:
        """The rows of segment ``path`` in the order they were appended.

        Raises:
            OSError: the file cannot be read.
        """
        batch: Batch = []
        for line in self._lines(path):
            try:
                name, row = json.loads(line)
            except ValueError:
                continue  # a torn line; see _lines
            table = self._tables[name]
            for column in self._stamps[table]:
                if isinstance(row.get(column), str):
                    row[column] = datetime.fromisoformat(row[column])
            batch.append((table, row))
        return batch

    def remove(self, path: Path) -> None:
        """Delete segment ``path`` (its rows are in the database).

        Raises:
            OSError: the file cannot be deleted.
        """
        with self._lock:
            path.unlink(missing_ok=True)
            self._sizes.pop(path, None)
            self._rows.pop(path, None)
            if self._current == path:
                self._current = None
            self._sync_directory()
