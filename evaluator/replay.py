"""``tierwise replay``: drive the service with recorded traffic from held-out sets.

Requests are drawn (seeded) from each task class's items, routed through the real HTTP API,
answered with the recorded output of whichever model the router picked, and reported back as
outcomes; every ``tick`` requests the grading job and the escalation job run, exactly the
functions the scheduler runs. With ``grading="batch"`` every class is batch-graded
(:func:`with_grading`) and each tick also runs the batch submit and poll jobs through the replay
provider's batch mode (:meth:`evaluator.service.Evaluator.grade_batches`): its batches end by
their first poll, so time is compressed (a real batch may take the 24 h window).
``via="gateway"`` sends each request through ``POST /v1/chat/completions`` instead (``model:
"tierwise/<task_type>"``), with the replay provider as the gateway's upstream: the gateway
routes, "calls" the model and records the outcome itself, so the same seed ends with the same
decisions, samples and books. Usage is estimated from the recorded text (``router.tokens``):
the recordings carry no provider usage. Decision ids are ``replay-<seed>-<n>`` so a run with
the same seed samples the same requests.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import numpy as np

from evaluator.datasets import HeldOutItem, HeldOutSet
from evaluator.service import Evaluator
from router.errors import InvalidInput
from router.lane import Lane as BatchLane
from router.policy import Policy, parse_policy
from router.service import Router
from router.tokens import estimate_message_tokens, estimate_text_tokens


@dataclass(frozen=True, slots=True)
class ReplayPlan:
    """The seeded sequence of items to send."""

    items: list[HeldOutItem]
    per_class: int
    seed: int


def plan(sets: Sequence[HeldOutSet], *, per_class: int, seed: int) -> ReplayPlan:
    """Draw ``per_class`` items with replacement from every task class, then shuffle them all
    together (``numpy.random.default_rng(seed)``).

    Raises:
        InvalidInput: ``per_class`` < 1 or no items.
    """
    if per_class < 1:
        raise InvalidInput("per_class must be at least 1", field="per_class")
    rng = np.random.default_rng(seed)
    drawn: list[HeldOutItem] = []
    for held_out in sets:
        for _task_type, items in sorted(held_out.by_task_type().items()):
            picks = rng.integers(0, len(items), size=per_class)
            drawn.extend(items[int(i)] for i in picks)
    if not drawn:
        raise InvalidInput("no items to replay", field="datasets")
    order = rng.permutation(len(drawn))
    return ReplayPlan([drawn[int(i)] for i in order], per_class, seed)


def _outcome(item: HeldOutItem, decision: dict[str, Any]) -> dict[str, Any]:
    model = decision["model"]
    recorded = item.outputs.get(model)
    if recorded is None:
        raise InvalidInput(
            f"item {item.id} has no recorded output of {model}; replay needs the policy's "
            "models to be the recorded ones",
            field="model",
        )
    text = recorded.text if recorded.text is not None else ""
    # MMLU recorded correctness only: one answer letter is the output.
    completion = estimate_text_tokens(text) if recorded.text is not None else 1
    report: dict[str, Any] = {
        "decision_id": decision["decision_id"],
        "served_model": model,
        "status": "ok",
        "usage": {
            "prompt_tokens": estimate_message_tokens(item.messages),
            "completion_tokens": completion,
        },
    }
    if decision["sampled"]:
        report["input_messages"] = item.messages
        report["output_text"] = text
    return report


Via = Literal["api", "gateway"]
Grading = Literal["realtime", "batch"]

_GRADING_LINE = re.compile(r"^[ \t]*grading[ \t]*=.*$\n?", re.MULTILINE)
_DEFAULTS = re.compile(r"^[ \t]*\[defaults\][ \t]*(#.*)?$", re.MULTILINE)


def with_grading(policy: Policy, grading: Grading) -> Policy:
    """``policy`` with every class graded ``grading``: any ``grading`` setting removed from
    ``[defaults]`` and the class overrides, and ``grading = "<mode>"`` set in ``[defaults]``
    (added when the policy has none). The text changes, so the stored policy says so too.

    Raises:
        PolicyError: the changed text no longer validates (it would not have before).
    """
    body = _GRADING_LINE.sub("", policy.body)
    line = f'grading = "{grading}"'
    found = _DEFAULTS.search(body)
    if found is None:
        body = f"{body.rstrip()}\n\n[defaults]\n{line}\n"
    else:
        body = f"{body[: found.end()]}\n{line}{body[found.end() :]}"
    changed = parse_policy(body, source=f"{policy.name} (grading = {grading})")
    return changed


GATEWAY_CONCURRENCY = 16
"""Gateway calls a replay keeps in flight (the order within a tick changes nothing)."""


Lane = Literal["realtime", "batch"]


async def _through_gateway(
    client: httpx.AsyncClient,
    items: Sequence[HeldOutItem],
    seed: int,
    start: int,
    lane: Lane = "realtime",
) -> None:
    gate = asyncio.Semaphore(GATEWAY_CONCURRENCY)

    async def one(offset: int, item: HeldOutItem) -> None:
        async with gate:
            resp = await client.post(
                "/v1/chat/completions",
                json={"model": f"tierwise/{item.task_type}", "messages": item.messages},
                headers={
                    "x-tierwise-request-id": f"replay-{seed}-{start + offset}",
                    "x-tierwise-item-id": item.id,
                    "x-tierwise-lane": lane,
                },
            )
            resp.raise_for_status()

    await asyncio.gather(*(one(i, item) for i, item in enumerate(items)))


async def run(
    client: httpx.AsyncClient,
    router: Router,
    evaluator: Evaluator,
    replay_plan: ReplayPlan,
    *,
    tick: int = 500,
    via: Via = "api",
    grading: Grading = "realtime",
    lane: BatchLane | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Send the plan through ``client`` (the tierwise HTTP API: the decision API and outcome
    reports, or with ``via="gateway"`` the gateway, whose upstream must be the replay
    provider), running the grading and escalation jobs every ``tick`` requests and once at the
    end; with ``grading="batch"`` the batch submit and poll jobs run after the grading job
    (the policy must be :func:`with_grading` ``"batch"`` for them to find work). With ``lane``
    (the app's batch lane; ``via`` must be ``"gateway"``) the calls go on the batch lane and
    each tick runs its submit job (every queue flushed) and poll job before grading. Returns
    requests sent.

    Raises:
        httpx.HTTPStatusError: the API refused a request (a bug in the data or the service).
    """
    sent = 0
    items = replay_plan.items
    for start in range(0, len(items), tick):
        chunk = items[start : start + tick]
        if via == "gateway":
            await _through_gateway(
                client, chunk, replay_plan.seed, start, "realtime" if lane is None else "batch"
            )
            if lane is not None:
                await lane.submit(flush=True)
                await lane.poll()
            await router.flush()
            sent += len(chunk)
            await evaluator.grade()
            if grading == "batch":
                await evaluator.grade_batches()
            await evaluator.escalate()
            await router.refresh()
            if on_progress is not None:
                on_progress(len(chunk))
            continue
        decisions = []
        for offset, item in enumerate(chunk):
            resp = await client.post(
                "/v1/route",
                json={
                    "task_type": item.task_type,
                    "messages": item.messages,
                    "item_id": item.id,
                    "request_id": f"replay-{replay_plan.seed}-{start + offset}",
                },
            )
            resp.raise_for_status()
            decisions.append(resp.json())
        resp = await client.post(
            "/v1/outcomes", json=[_outcome(i, d) for i, d in zip(chunk, decisions, strict=True)]
        )
        resp.raise_for_status()
        sent += len(chunk)
        await evaluator.grade()
        if grading == "batch":
            await evaluator.grade_batches()
        await evaluator.escalate()
        await router.refresh()
        if on_progress is not None:
            on_progress(len(chunk))
    return sent
