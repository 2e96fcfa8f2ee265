"""The batch lane's HTTP endpoints, in OpenAI's wire format (API reference "Files", "Batch"), so
batch code written for OpenAI changes only its base URL: ``POST /v1/files`` (purpose
``batch``), ``GET /v1/files/{id}``, ``GET /v1/files/{id}/content``, ``POST /v1/batches``,
``GET /v1/batches``, ``GET /v1/batches/{id}``, ``POST /v1/batches/{id}/cancel``. Every one
needs the ``route`` scope; a caller sees only its own files and batches (its API key's id).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from router.gateway.api import ChatCompletionOut
from router.keys import require
from router.lane.service import Lane, file_object

lane_api = APIRouter(tags=["batch lane"])

Caller = Annotated[str | None, Depends(require("route"))]


def _lane(request: Request) -> Lane:
    lane: Lane = request.app.state.lane
    return lane


class FileObject(BaseModel):
    """OpenAI's file object (API reference, "The file object"); ``bytes`` its size."""

    model_config = ConfigDict(extra="allow")

    id: str
    object: str
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: str


class RequestCounts(BaseModel):
    """A batch's lines: all, answered, and failed, expired or cancelled."""

    total: int
    completed: int
    failed: int


class BatchObject(BaseModel):
    """OpenAI's batch object (API reference, "The batch object"); times are Unix seconds.
    A deferred call's also has ``result_url`` and ``not_before``."""

    model_config = ConfigDict(extra="allow")

    id: str
    object: str
    endpoint: str
    input_file_id: str
    completion_window: str
    status: str
    output_file_id: str | None
    error_file_id: str | None
    created_at: int
    expires_at: int | None
    request_counts: RequestCounts
    metadata: dict[str, str] | None = None


class BatchList(BaseModel):
    """OpenAI's list object of batches, newest first."""

    object: str
    data: list[BatchObject]
    first_id: str | None
    last_id: str | None
    has_more: bool


class DeferredWaiting(BaseModel):
    """A deferred call still waiting: its status and when its off-peak window opens (Unix s;
    None: within the lane's max wait)."""

    id: str
    status: str
    not_before: int | None


class BatchCreate(BaseModel):
    """``POST /v1/batches`` (OpenAI "Create batch")."""

    model_config = ConfigDict(extra="forbid")

    input_file_id: str = Field(min_length=1, max_length=64)
    endpoint: str = Field(max_length=64)
    completion_window: str = Field(max_length=16)
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = Field(
        default=None, max_length=16
    )


@lane_api.post("/v1/files", response_model=FileObject)
async def create_file(
    request: Request,
    caller: Caller,
    file: Annotated[UploadFile, File(description="The JSONL input file")],
    purpose: Annotated[str, Form(max_length=32)],
) -> dict[str, Any]:
    """Upload a batch input file (multipart: ``file``, ``purpose=batch``); the file object.
    400 for another purpose, an empty or too large file."""
    data = await file.read()
    return await _lane(request).create_file(caller, file.filename or "", purpose, data)


@lane_api.get("/v1/files/{file_id}", response_model=FileObject)
async def get_file(request: Request, caller: Caller, file_id: str) -> dict[str, Any]:
    """The file object; 404 for a file of another caller or none."""
    return file_object(await _lane(request).file(caller, file_id))


@lane_api.get(
    "/v1/files/{file_id}/content",
    response_class=Response,
    responses={200: {"content": {"application/jsonl": {}}, "description": "The file's bytes"}},
)
async def file_content(request: Request, caller: Caller, file_id: str) -> Response:
    """The file's bytes (an output or error file is JSONL, one line per request)."""
    row = await _lane(request).file(caller, file_id)
    return Response(row.content, media_type="application/jsonl")


@lane_api.post("/v1/batches", response_model=BatchObject)
async def create_batch(request: Request, caller: Caller, body: BatchCreate) -> dict[str, Any]:
    """Route every line of ``input_file_id`` and queue it; the batch object. A bad line
    refuses the whole file (400, ``field`` ``line N: ...``) and nothing is queued."""
    return await _lane(request).create_batch(
        caller,
        body.input_file_id,
        endpoint=body.endpoint,
        completion_window=body.completion_window,
        metadata=body.metadata,
    )


@lane_api.get("/v1/batches", response_model=BatchList)
async def list_batches(
    request: Request,
    caller: Caller,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    """The caller's batches, newest first (``after``: the last id of the previous page)."""
    return await _lane(request).batches(caller, limit=limit, after=after)


@lane_api.get("/v1/batches/{batch_id}", response_model=BatchObject)
async def get_batch(request: Request, caller: Caller, batch_id: str) -> dict[str, Any]:
    """The batch object: status and request counts over every line, wherever it went."""
    return await _lane(request).batch(caller, batch_id)


@lane_api.get(
    "/v1/batches/{batch_id}/result",
    response_model=None,
    responses={
        200: {"model": ChatCompletionOut, "description": "The answer"},
        202: {"model": DeferredWaiting, "description": "Still waiting"},
    },
)
async def deferred_result(request: Request, caller: Caller, batch_id: str) -> Response:
    """A deferred gateway call's answer (``X-Tierwise-Lane: batch``): 200 with the chat
    completion, 202 while it waits (``Retry-After``), 502 with the error when it failed."""
    status, body = await _lane(request).result(caller, batch_id)
    headers = {"retry-after": "30"} if status == 202 else None
    return JSONResponse(body, status_code=status, headers=headers)


@lane_api.post("/v1/batches/{batch_id}/cancel", response_model=BatchObject)
async def cancel_batch(request: Request, caller: Caller, batch_id: str) -> dict[str, Any]:
    """Cancel: queued lines at once, submitted ones through the providers (``cancelling``
    until they ended)."""
    return await _lane(request).cancel(caller, batch_id)
