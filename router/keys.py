"""Callers' API keys: created, listed and revoked in the database (``api_key``), checked on every
request against an in-memory :class:`KeyRing` (no database round trip), through the FastAPI
dependency :func:`require`.

**The key.** ``tw-<id>-<secret>``: ``id`` is 8 hex characters (``api_key.id``, shown by
``tierwise keys list`` and recorded as ``decision.caller``), ``secret`` is
``secrets.token_urlsafe(32)`` (43 characters). Only ``sha256(key)`` (64 hex characters) is
stored; the key itself is shown once, when it is created, and checked with
``hmac.compare_digest``. A revoked key keeps its row, so its decisions stay attributable.

**Scopes.** ``route`` (``POST /v1/route``, the gateway), ``outcomes`` (``POST /v1/outcomes``),
``read-samples`` (the read endpoints: routing table, class quality, escalations), ``admin``
(pin, unpin, override; ``TIERWISE_ADMIN_TOKEN`` passes there too). No scope implies another:
a key for everything lists all four.

**Open mode.** While no key was ever created (``api_key`` is empty), every endpoint is open and
the service says so at start-up. Once any key exists every endpoint but ``/healthz`` and the
docs needs one, even after every key is revoked: revoking the last key never opens the
service (create a new one with ``tierwise keys create``).

**Freshness.** Each serving process loads the ring at start-up and reloads it every
``poll_interval_s`` (the app passes ``snapshot_poll_s``, 1 s by default). A key created or
revoked by any process (the CLI, another replica) is therefore accepted or refused everywhere
within ``poll_interval_s`` plus one query of the ``api_key`` table: about a second. While the
database cannot be reached the ring keeps what it last loaded.

**Using the dependency** (every endpoint, and the gateway)::

    from typing import Annotated
    from fastapi import Depends
    from router.keys import require

    @api.post("/chat/completions", dependencies=[Depends(require("route"))])
    async def chat(request: Request, ...) -> ...:
        caller = request.state.caller       # the key's id; None in open mode

    # or take the caller as a parameter (the dependency returns it):
    async def chat(caller: Annotated[str | None, Depends(require("route"))], ...) -> ...:
        router.route(..., caller=caller)

The dependency reads ``Authorization: Bearer <key>`` or ``x-api-key: <key>`` (what
Anthropic-style clients send; the bearer header wins when both are sent), finds the ring at
``request.app.state.keys`` (the app factory puts it there) and raises :class:`Unauthorized`
(401: no key, an unknown or revoked one) or :class:`Forbidden` (403: a key without the scope),
which the app's one handler answers as ``{"error": {"code", "message", "field"}}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from router.db import utcnow
from router.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthorized
from router.health import DatabaseHealth, is_connection_error
from router.models import ApiKey

log = logging.getLogger(__name__)

SCOPES: tuple[str, ...] = ("route", "outcomes", "read-samples", "admin")
"""Every scope a key can hold, in the order they are listed."""

PREFIX = "tw"
ID_HEX = 8
MAX_NAME_CHARS = 200
_KEY = re.compile(rf"^{PREFIX}-(?P<id>[0-9a-f]{{{ID_HEX}}})-(?P<secret>[A-Za-z0-9_\-]{{20,}})$")


# ---- the key and its parts ----------------------------------------------------------------


def hash_key(key: str) -> str:
    """``sha256(key)`` as 64 hex characters: what ``api_key.secret_hash`` holds."""
    return hashlib.sha256(key.encode()).hexdigest()


def key_id(key: str) -> str | None:
    """The id part of ``tw-<id>-<secret>``; None when ``key`` is not shaped like a key."""
    match = _KEY.match(key)
    return None if match is None else match["id"]


def check_name(name: str) -> str:
    """``name`` without surrounding blanks.

    Raises:
        InvalidInput: empty, or longer than 200 characters (field ``name``).
    """
    cleaned = name.strip()
    if not cleaned:
        raise InvalidInput("name: give the key a name (who or what uses it)", field="name")
    if len(cleaned) > MAX_NAME_CHARS:
        raise InvalidInput(f"name: at most {MAX_NAME_CHARS} characters", field="name")
    return cleaned


def check_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """The scopes asked for, each once, in the order of :data:`SCOPES`.

    Raises:
        InvalidInput: none given, or one not in :data:`SCOPES` (field ``scopes``).
    """
    asked = [s.strip() for s in scopes]
    unknown = [s for s in asked if s not in SCOPES]
    if unknown:
        raise InvalidInput(
            f"scopes: unknown scope {unknown[0]!r}; the scopes are {', '.join(SCOPES)}",
            field="scopes",
        )
    if not asked:
        raise InvalidInput(f"scopes: give at least one of {', '.join(SCOPES)}", field="scopes")
    return tuple(s for s in SCOPES if s in asked)


def parse_scopes(text: str) -> list[str]:
    """A command line's ``route,outcomes`` as ``["route", "outcomes"]`` (blanks and empty items
    dropped; not checked: :func:`check_scopes` does that)."""
    return [part.strip() for part in text.split(",") if part.strip()]


# ---- the table ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """One key as it may be shown: never its hash. Timestamps UTC; ``revoked_at`` None = live."""

    id: str
    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None

    @property
    def live(self) -> bool:
        return self.revoked_at is None

    def to_dict(self) -> dict[str, Any]:
        """``{"id", "name", "scopes", "created_at", "revoked_at"}``, timestamps ISO 8601."""
        return {
            "id": self.id,
            "name": self.name,
            "scopes": list(self.scopes),
            "created_at": self.created_at.isoformat(),
            "revoked_at": None if self.revoked_at is None else self.revoked_at.isoformat(),
        }

    @classmethod
    def of(cls, row: ApiKey) -> KeyInfo:
        return cls(row.id, row.name, tuple(row.scopes), row.created_at, row.revoked_at)


@dataclass(frozen=True, slots=True)
class NewKey:
    """A key just created: ``key`` is the only copy of it there will ever be."""

    info: KeyInfo
    key: str


async def create_key(session: AsyncSession, name: str, scopes: Iterable[str]) -> NewKey:
    """Create a key named ``name`` with ``scopes``; stores its hash and flushes (the caller
    commits). Nothing is stored when it raises.

    Raises:
        InvalidInput: an empty or too long name (field ``name``), no scope or an unknown one
            (field ``scopes``).
        Conflict: a key of that name exists, live or revoked (field ``name``); the session is
            rolled back when the database itself refused the row.
    """
    name = check_name(name)
    granted = check_scopes(scopes)
    if (await session.exec(select(ApiKey.id).where(ApiKey.name == name))).first() is not None:
        raise Conflict(f"name: a key named {name!r} exists already", field="name")
    while True:
        new_id = secrets.token_hex(ID_HEX // 2)
        if await session.get(ApiKey, new_id) is None:
            break
    key = f"{PREFIX}-{new_id}-{secrets.token_urlsafe(32)}"
    row = ApiKey(id=new_id, name=name, secret_hash=hash_key(key), scopes=list(granted))
    session.add(row)
    try:
        await session.flush()
    except IntegrityError as exc:
        await session.rollback()
        raise Conflict(f"name: a key named {name!r} exists already", field="name") from exc
    return NewKey(KeyInfo.of(row), key)


async def list_keys(session: AsyncSession) -> list[KeyInfo]:
    """Every key, live and revoked, oldest first."""
    rows = await session.exec(select(ApiKey).order_by(col(ApiKey.created_at), col(ApiKey.id)))
    return [KeyInfo.of(r) for r in rows.all()]


async def revoke_key(session: AsyncSession, id_or_name: str) -> KeyInfo:
    """Revoke the key with this id (or, failing that, this name): sets ``revoked_at``, keeps
    the row; flushes, the caller commits. Serving processes refuse it within their poll
    interval (see the module's docstring).

    Raises:
        NotFound: no key has that id or name (field ``key``).
        Conflict: it is revoked already (field ``key``).
    """
    row = await session.get(ApiKey, id_or_name)
    if row is None:
        row = (await session.exec(select(ApiKey).where(ApiKey.name == id_or_name))).first()
    if row is None:
        raise NotFound(f"no API key has the id or name {id_or_name!r}", field="key")
    if row.revoked_at is not None:
        raise Conflict(
            f"key {row.id} ({row.name}) was revoked at {row.revoked_at.isoformat()}", field="key"
        )
    row.revoked_at = utcnow()
    session.add(row)
    await session.flush()
    return KeyInfo.of(row)


# ---- the key ring -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Entry:
    secret_hash: str
    scopes: frozenset[str]
    revoked: bool


class KeyRing:
    """Every key's hash and scopes, in memory, reloaded by a poller (module docstring: within
    ``poll_interval_s`` plus one query, about a second, a change anywhere is seen here).

    Args:
        sessions: the session factory.
        poll_interval_s: how often the ``api_key`` table is read again, s.
        health: where a poll that cannot reach the database is reported (None: logged).
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        poll_interval_s: float = 1.0,
        health: DatabaseHealth | None = None,
    ) -> None:
        self.health = health
        self._sessions = sessions
        self._poll_interval_s = poll_interval_s
        self._entries: Mapping[str, _Entry] = {}
        self._poller: asyncio.Task[None] | None = None

    @property
    def open(self) -> bool:
        """No key was ever created: every endpoint lets every caller through."""
        return not self._entries

    @property
    def live(self) -> int:
        """How many keys are not revoked."""
        return sum(not e.revoked for e in self._entries.values())

    @property
    def revoked(self) -> int:
        """How many keys are revoked."""
        return sum(e.revoked for e in self._entries.values())

    def authenticate(self, key: str | None, scope: str) -> str | None:
        """The id of the caller presenting ``key`` for an endpoint that needs ``scope``; None in
        open mode (whatever ``key`` is). No I/O.

        Raises:
            Unauthorized: no key, a malformed, unknown or revoked one (401, field
                ``authorization``).
            Forbidden: a live key without ``scope`` (403, field ``authorization``).
        """
        entries = self._entries
        if not entries:
            return None
        if not key:
            raise Unauthorized(
                "this endpoint needs an API key: send Authorization: Bearer <key> "
                "(or x-api-key: <key>)",
                field="authorization",
            )
        found_id = key_id(key)
        entry = None if found_id is None else entries.get(found_id)
        if entry is None or not hmac.compare_digest(hash_key(key), entry.secret_hash):
            raise Unauthorized("unknown API key", field="authorization")
        if entry.revoked:
            raise Unauthorized(f"API key {found_id} is revoked", field="authorization")
        if scope not in entry.scopes:
            have = ", ".join(s for s in SCOPES if s in entry.scopes)
            raise Forbidden(
                f"API key {found_id} lacks the scope {scope!r} (it has: {have})",
                field="authorization",
            )
        return found_id

    async def refresh(self) -> bool:
        """Read the ``api_key`` table again; True when anything changed.

        Raises:
            DBAPIError | OSError: the database could not be reached; the ring is kept.
        """
        async with self._sessions() as session:
            rows = (await session.exec(select(ApiKey))).all()
        entries = {
            r.id: _Entry(r.secret_hash, frozenset(r.scopes), r.revoked_at is not None) for r in rows
        }
        if entries == self._entries:
            return False
        self._entries = entries
        log.info("API keys now: %d live, %d revoked", self.live, self.revoked)
        return True

    async def start(self) -> None:
        """Load the ring and start the poller.

        Raises:
            DBAPIError | OSError: the first load failed (the service must not start open).
        """
        await self.refresh()
        self._poller = asyncio.create_task(self._poll(), name="key-ring-poll")

    async def stop(self) -> None:
        """Stop the poller."""
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._poll_interval_s)
            try:
                await self.refresh()
            except Exception as exc:
                if self.health is None or not is_connection_error(exc):
                    log.exception("API key poll failed; keeping the last keys, retrying")
                else:  # said once per outage, not per poll
                    self.health.failed("keys", exc)
            else:
                if self.health is not None:
                    self.health.ok("keys")


# ---- the FastAPI dependency ---------------------------------------------------------------

_bearer = HTTPBearer(auto_error=False, description="An API key: tw-<id>-<secret>")
_x_api_key = APIKeyHeader(
    name="x-api-key", auto_error=False, description="An API key, as Anthropic-style clients send"
)


def keyring_of(request: Request) -> KeyRing:
    """The app's key ring, ``request.app.state.keys``.

    Raises:
        RuntimeError: the app has none (it would otherwise be open by mistake).
    """
    ring = getattr(request.app.state, "keys", None)
    if not isinstance(ring, KeyRing):
        raise RuntimeError("app.state.keys holds no KeyRing: the app factory sets it")
    return ring


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (the scheme in any case, RFC
    6750 section 2.1); None when the header is absent or empty.

    Raises:
        Unauthorized: the header is there but not ``Bearer <token>`` (a bare token, another
            scheme, no token; 401, field ``authorization``).
    """
    if authorization is None or not authorization.strip():
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthorized(
            "Authorization must be 'Bearer <token>': put 'Bearer ' before the key or token",
            field="authorization",
        )
    return value.strip()


def presented_key(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key a request presents: ``Authorization: Bearer <key>``, else ``x-api-key``; None
    when neither is there.

    Raises:
        Unauthorized: an ``Authorization`` header that is not ``Bearer <key>``
            (:func:`bearer_token`).
    """
    key = bearer_token(authorization)
    if key is not None:
        return key
    return x_api_key.strip() if x_api_key and x_api_key.strip() else None


def authenticate(request: Request, scope: str) -> str | None:
    """What :func:`require`'s dependency does, called inline by an endpoint on the hot path
    (``POST /v1/route``), where solving three more FastAPI dependencies per call would cost a
    large share of the request (``bench/route.py``): the request's key checked against the
    app's ring, ``request.state.caller`` set, the caller's key id returned (None in open mode).
    Such an endpoint declares :data:`OPENAPI_SECURITY` for its OpenAPI document.

    Raises:
        Unauthorized, Forbidden: as :meth:`KeyRing.authenticate`.
    """
    ring = keyring_of(request)
    if ring.open:  # no key was ever created: nothing presented is read
        caller = None
    else:
        headers = request.headers
        key = presented_key(headers.get("authorization"), headers.get("x-api-key"))
        caller = ring.authenticate(key, scope)
    request.state.caller = caller
    return caller


OPENAPI_SECURITY: list[dict[str, list[str]]] = [{"HTTPBearer": []}, {"APIKeyHeader": []}]
"""The security requirement :func:`require` puts in the OpenAPI document, for an endpoint that
calls :func:`authenticate` inline instead (``openapi_extra={"security": OPENAPI_SECURITY}``)."""


def require(scope: str) -> Callable[..., Awaitable[str | None]]:
    """A FastAPI dependency for an endpoint that needs ``scope``: it checks the request's key
    against the app's key ring, sets ``request.state.caller`` (the key's id; None in open mode)
    and returns it. Use as ``dependencies=[Depends(require("route"))]`` or as a parameter,
    ``caller: Annotated[str | None, Depends(require("route"))]``.

    Raises:
        ValueError: ``scope`` is not one of :data:`SCOPES` (when the endpoint is declared).

    The dependency raises :class:`Unauthorized` (401) and :class:`Forbidden` (403) as
    :meth:`KeyRing.authenticate`.
    """
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; the scopes are {', '.join(SCOPES)}")

    async def dependency(
        request: Request,
        _bearer_credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
        x_api_key: Annotated[str | None, Security(_x_api_key)],
    ) -> str | None:
        ring = keyring_of(request)
        if ring.open:  # no key was ever created: nothing presented is read
            caller = None
        else:
            key = presented_key(request.headers.get("authorization"), x_api_key)
            caller = ring.authenticate(key, scope)
        request.state.caller = caller
        return caller

    dependency.__name__ = f"require_{scope.replace('-', '_')}"
    return dependency
