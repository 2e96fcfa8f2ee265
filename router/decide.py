"""The routing decision: a pure function of the routing snapshot and the request.

No I/O, no clock: :func:`decide` reads an immutable :class:`~router.table.RoutingSnapshot`,
so a decision costs microseconds and every router replica gives the same answer for the same
snapshot. :func:`decision_id_for` makes a caller's retried request the same decision.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace

from router.sampling import is_sampled
from router.table import RoutingSnapshot
from router.task_types import DEFAULT_TASK_TYPE, UnknownTaskType


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """The answer to a route call. ``table_version`` is the snapshot's version."""

    decision_id: str
    task_type: str
    task_class: str
    tier: str
    model: str
    provider: str
    table_version: int
    sampled: bool
    status: str
    reason: str
    input_tokens: int
    has_tool_calls: bool
    unknown_task_type: bool = False
    """The policy does not know ``task_type``: routed as ``default`` (``task_class`` says so)."""


def decide(
    snapshot: RoutingSnapshot,
    task_type: str,
    input_tokens: int,
    has_tool_calls: bool,
    decision_id: str,
) -> RouteDecision:
    """Route one request against ``snapshot``. Pure: no I/O, no clock.

    The policy's rules give the task class and base tier; the routing-table entry, when the class
    has one, gives the current model and status. A decision is sampled when the decision id hashes
    under the class's sample rate, unless the class is pinned, or on its reference model and not
    ``escalated`` (there is nothing to compare it with). An ``escalated`` class is sampled even on
    its reference model: its samples are the shadow probes that can bring it back down (the
    grading job asks the next cheaper model for its answer, off the hot path; see
    ``evaluator.grading.shadow_model``).

    A task type the policy does not know (:meth:`router.policy.Policy.is_known`) follows its
    ``unknown_task_types``: ``"default"`` routes it as the task type ``default`` (the decision
    keeps the task type as sent and says ``unknown_task_type``), ``"reject"`` raises.

    Raises:
        UnknownTaskType: an unknown task type under ``unknown_task_types = "reject"`` (422,
            field ``task_type``).
    """
    policy = snapshot.policy
    unknown = not policy.is_known(task_type)
    if unknown and policy.spec.unknown_task_types == "reject":
        raise UnknownTaskType(task_type, policy.known_task_types())
    match = policy.match(DEFAULT_TASK_TYPE if unknown else task_type, input_tokens, has_tool_calls)
    if unknown:
        match = replace(
            match, reason=f"unknown task type '{task_type}' -> {DEFAULT_TASK_TYPE}: {match.reason}"
        )
    entry = snapshot.entries.get(match.task_class)
    if entry is None:
        tier, model, status = match.tier, policy.model_for_tier(match.tier), "baseline"
        reason = f"{match.reason} -> tier {tier} -> {model} (class not in table: policy default)"
    else:
        tier, model, status = entry.tier, entry.model, entry.status
        reason = (
            f"{match.reason} -> class {entry.task_class} is {status} on {model} (v{entry.version})"
        )
    settings = policy.settings_for(match.task_class)
    reference = policy.reference_model(match.task_class)
    sampled = (
        status != "pinned"
        and (model != reference or status == "escalated")
        and is_sampled(decision_id, settings.sample_rate)
    )
    return RouteDecision(
        decision_id=decision_id,
        task_type=task_type,
        task_class=match.task_class,
        tier=tier,
        model=model,
        provider=snapshot.provider_of(model),
        table_version=snapshot.version,
        sampled=sampled,
        status=status,
        reason=reason,
        input_tokens=input_tokens,
        has_tool_calls=has_tool_calls,
        unknown_task_type=unknown,
    )


_ENTROPY = bytearray()
_ENTROPY_BYTES = 4096
# A forked child must never hand out its parent's unused bytes: the same ids in two processes.
os.register_at_fork(after_in_child=_ENTROPY.clear)


def _uuid4_hex() -> str:
    """``uuid.uuid4().hex`` without building a ``UUID`` object or making a system call per id:
    16 bytes from ``os.urandom``, drawn 4 KiB at a time, with the version (4) and variant
    (RFC 4122) bits set as RFC 4122 section 4.4 says."""
    if len(_ENTROPY) < 16:
        _ENTROPY[:] = os.urandom(_ENTROPY_BYTES)
    raw = _ENTROPY[-16:]
    del _ENTROPY[-16:]
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    return raw.hex()


def decision_id_for(
    request_id: str | None, task_type: str, input_tokens: int, has_tool_calls: bool
) -> str:
    """A new decision id: a random UUID (hex), or, with the caller's ``request_id``, one derived
    from it and the request's task type, tokens and tool use (BLAKE2b, 6 bytes), so a retried
    call gets the same id and sampling answer and a reused request id with a different request
    gets a different one."""
    if request_id is None:
        return _uuid4_hex()
    key = f"{request_id}|{task_type}|{input_tokens}|{has_tool_calls}".encode()
    return f"{request_id}.{hashlib.blake2b(key, digest_size=6).hexdigest()}"
