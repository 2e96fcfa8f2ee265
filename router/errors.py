"""The one error tree of tierwise.

Every error the service raises on purpose is a :class:`TierwiseError`; one FastAPI handler turns it
into ``{"error": {"code", "message", "field"}}`` with the class's HTTP status::

    TierwiseError (500, "internal")
    +-- InvalidInput (422, "invalid_input")        bad value in a request or a policy file
    |   +-- PolicyError (422, "invalid_policy")    a routing policy that cannot be applied
    +-- Unauthorized (401, "unauthorized")         no valid API key, or no admin token
    +-- Forbidden (403, "forbidden")               an API key without the endpoint's scope
    +-- NotFound (404, "not_found")                unknown decision id, task class, model
    +-- Conflict (409, "conflict")                 a write that contradicts stored state
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
        """The JSON body the API returns: ``{"code", "message", "field"}``."""
        return {"code": self.code, "message": self.message, "field": self.field}


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
