"""The OpenAPI document: FastAPI's, completed.

FastAPI documents what its parameters declare. Completed here: the schemas of bodies the
handlers read themselves (``OutcomeIn``, one object or a list; ``ChatCompletionRequest``, passed
through), the error body every error status answers with (``ErrorResponse``, the shape of
:func:`router.errors.error_body`), and per operation the error statuses it can answer, each
with that schema. ``tests/test_openapi.py`` walks the document for completeness, and
schemathesis checks every answer against it.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field

from router.gateway.api import ChatCompletionOut
from router.gateway.request import ChatCompletionRequest
from router.schemas import OutcomeIn

REF = "#/components/schemas/{model}"


class ErrorDetail(BaseModel):
    """One validation error of a 422 (``errors``)."""

    field: str
    message: str


class ErrorBody(BaseModel):
    """The error object: ours (``code``, ``message``, ``field``) and OpenAI's (``type``,
    ``param`` = ``field``) in one (:mod:`router.errors`)."""

    code: str = Field(description="stable: invalid_input, unauthorized, not_found, ...")
    message: str
    field: str | None = Field(description="the offending field: messages[0].content, body")
    type: str = Field(description="OpenAI's error type: invalid_request_error, ...")
    param: str | None = Field(description="= field")
    errors: list[ErrorDetail] | None = Field(
        default=None, description="a 422's every validation error"
    )


class ErrorResponse(BaseModel):
    """Every error answer: ``{"error": {...}}``."""

    error: ErrorBody


class HealthOut(BaseModel):
    """``GET /healthz``: liveness, with the serving snapshot's table version."""

    status: str
    table_version: int | None = Field(description="null before any policy was applied")


class ReadyOut(BaseModel):
    """``GET /readyz``: ``ready`` or ``not_ready``, the failing checks' names, and every check's
    result (``ok``, ``detail`` and its figures; :mod:`tierwise.readiness`)."""

    status: str
    failing: list[str]
    checks: dict[str, dict[str, Any]]


_ERRORS = {
    400: "Invalid request (the gateway, as OpenAI answers it); `param` names the field",
    401: "No API key, an unknown or revoked one, or an Authorization that is not Bearer",
    403: "The API key lacks the endpoint's scope",
    404: "Unknown decision id, task class or model",
    409: "Contradicts stored state",
    413: "The request body is over TIERWISE_MAX_REQUEST_BYTES",
    422: "Invalid input; `field` names the offending field",
    429: "Every model of the chain is rate-limited (Retry-After says how long)",
    502: "No model of the chain answered",
    503: "No routing policy applied yet, or the database is unavailable",
    504: "The upstream timed out",
}

# Statuses beyond those every operation of its kind has (see _statuses).
_EXTRA: dict[tuple[str, str], tuple[int, ...]] = {
    ("post", "/v1/outcomes"): (404,),
    ("get", "/v1/classes/{task_class}/quality"): (404,),
    ("post", "/v1/classes/{task_class}/pin"): (404, 409),
    ("post", "/v1/classes/{task_class}/unpin"): (404, 409),
    ("post", "/v1/classes/{task_class}/override"): (404, 409),
    # The gateway answers invalid input 400 as OpenAI does; 404/413/422 may also be an
    # upstream's own refusal of the call, relayed.
    ("post", "/v1/chat/completions"): (400, 404, 409, 429, 502, 504),
    # The batch lane answers bad input 400 (OpenAI's status), unknown ids 404.
    ("post", "/v1/files"): (400,),
    ("get", "/v1/files/{file_id}"): (404,),
    ("get", "/v1/files/{file_id}/content"): (404,),
    ("post", "/v1/batches"): (400, 404),
    ("get", "/v1/batches/{batch_id}"): (404,),
    ("post", "/v1/batches/{batch_id}/cancel"): (404,),
    ("get", "/v1/batches/{batch_id}/result"): (400, 404, 502),
    ("get", "/v1/escalations/{event_id}"): (404,),
}
_OPEN = {("get", "/healthz")}
_GATEWAY = {("post", "/v1/chat/completions")}


def _statuses(method: str, path: str, op: dict[str, Any]) -> set[int]:
    """The error statuses of one operation: 401/403 and 503 unless it is open; 413 with a
    body; 422 with a body or parameters (400 on the gateway); then :data:`_EXTRA`."""
    key = (method, path)
    if key in _OPEN:
        return set()
    found = {401, 403, 503}
    if "requestBody" in op:
        found.add(413)
    if "requestBody" in op or op.get("parameters"):
        found.add(400 if key in _GATEWAY else 422)
    if key in _GATEWAY:
        found.update((413, 422))  # an upstream's own refusals, relayed
    found.update(_EXTRA.get(key, ()))
    return found


def _add_schemas(components: dict[str, Any], *models: type[BaseModel]) -> None:
    for model in models:
        schema = model.model_json_schema(ref_template=REF)
        for name, sub in schema.pop("$defs", {}).items():
            components.setdefault(name, sub)
        components[model.__name__] = schema


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI document, built once and cached on ``app.openapi_schema``."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    doc = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        description=app.description,
        routes=app.routes,
    )
    components = doc.setdefault("components", {}).setdefault("schemas", {})
    _add_schemas(components, OutcomeIn, ChatCompletionRequest, ChatCompletionOut, ErrorResponse)
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    error = {"application/json": {"schema": {"$ref": REF.format(model="ErrorResponse")}}}
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            responses = op.setdefault("responses", {})
            responses.pop("422", None)  # FastAPI's own shape; ours replaces it
            for status in sorted(_statuses(method, path, op)):
                said = responses.get(str(status), {}).get("description", _ERRORS[status])
                responses[str(status)] = {"description": said, "content": error}
    app.openapi_schema = doc
    return doc
