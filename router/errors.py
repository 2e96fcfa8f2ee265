"""The one error tree of tierwise.

Every error the service raises on purpose is a :class:`TierwiseError`; one FastAPI handler turns it
into ``{"error": {"code", "message", "field", "type", "param"}}`` with the class's HTTP status.
``type`` and ``param`` (= ``field``) make the same body OpenAI's error object (OpenAI API
reference, "Error codes": ``{"error": {"message", "type", "param", "code"}}``), so the official
SDKs read the gateway's errors as they read OpenAI's::

    TierwiseError (500, "internal")
    +-- InvalidInput (422, "invalid_input")        bad value in a request or a policy file
    |   +-- PolicyError (422, "invalid_policy")    a routing policy that cannot be applied
    +-- Unauthorized (401, "unauthorized")         no valid API key, or no admin token
    +-- Forbidden (403, "forbidden")               an API key without the endpoint's scope
    +-- NotFound (404, "not_found")                unknown decision id, task class, model
    +-- Conflict (409, "conflict")                 a write that contradicts stored state
    +-- Unavailable (503, "unavailable")           cannot be kept or answered now; Retry-After
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_TYPE_TAG = re.compile(r"^(str|int|float|bool|none|list|dict)$|[\[(]")


def field_path(loc: Iterable[object]) -> str:
    """A validation location as one field name: ``rules[4].tier``, ``messages[0].content``.

    Pydantic's union-branch tags (``str``, ``list[...]``, ``function-after[...]``) are dropped.
    """
    field = ""
    for part in loc:
        if isinstance(part, int):
            field += f"[{part}]"
        elif not _TYPE_TAG.search(str(part)):
            field += f".{part}" if field else str(part)
    return field


class TierwiseError(Exception):
    """Base of every deliberate error; ``code`` is stable API, ``status`` the HTTP status."""

    code = "internal"
    status = 500

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def to_dict(self) -> dict[str, object]:
        """The JSON body the API returns: ``{"code", "message", "field", "type", "param"}``."""
        return error_body(self.code, self.message, self.field, self.status)


def error_type(status: int) -> str:
    """OpenAI's error ``type`` for an HTTP status: ``invalid_request_error`` (4xx but 401, 403
    and 429), ``authentication_error`` (401), ``permission_error`` (403),
    ``rate_limit_error`` (429), ``server_error`` (5xx)."""
    special = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}
    if status in special:
        return special[status]
    return "server_error" if status >= 500 else "invalid_request_error"


def error_body(code: str, message: str, field: str | None, status: int) -> dict[str, object]:
    """One error object: ours (``code``, ``message``, ``field``) and OpenAI's (``type``,
    ``param``) in one."""
    return {
        "code": code,
        "message": message,
        "field": field,
        "type": error_type(status),
        "param": field,
    }


class InvalidInput(TierwiseError):
    code = "invalid_input"
    status = 422


class PolicyError(InvalidInput):
    code = "invalid_policy"


class Unauthorized(TierwiseError):
    code = "unauthorized"
    status = 401


class Forbidden(TierwiseError):
    code = "forbidden"
    status = 403


class NotFound(TierwiseError):
    code = "not_found"
    status = 404


class Conflict(TierwiseError):
    code = "conflict"
    status = 409


class Unavailable(TierwiseError):
    """The service cannot keep or answer this request now (the database is unreachable and
    the spool cannot take it, or the answer needs the database); answered 503 with a
    ``Retry-After`` header of ``retry_after_s`` seconds."""

    code = "unavailable"
    status = 503

    def __init__(self, message: str, *, field: str | None = None, retry_after_s: int = 5) -> None:
        super().__init__(message, field=field)
        self.retry_after_s = retry_after_s
