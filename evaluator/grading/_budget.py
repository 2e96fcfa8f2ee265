"""The daily grading budget: reserve a stage's estimated cost before its calls are sent, settle
it at the actual cost after.

Two scopes, both in USD per UTC day: the policy's top-level ``grading_budget_usd_per_day`` (scope
``"*"``, every class together) and the class setting of the same name (scope = the task class).
None is unlimited; with neither set, :class:`GradingBudget` sends the calls exactly as
:meth:`Grader.grade` does and touches no table.

The estimate of one call is an upper bound on its output and an estimate of its input: the prompt
tokens by :func:`router.tokens.estimate_message_tokens` (about 4 characters a token, offline)
plus the request's ``max_tokens`` as output, every input token at the catalog's full input
price (no cache discount), at the catalog price of the model called. A prompt far denser than
4 characters a token can cost more than its estimate; the settled (actual) cost is what counts
against the budget once the calls are back, so one day can overrun by at most that gap on the
calls in flight.

Atomicity: one ``grading_budget`` row per (scope, day), money in integer nano-USD. A
reservation is one conditional ``UPDATE ... SET reserved = reserved + :x WHERE ... AND reserved
+ spent + :x <= :limit`` per scope, every scope in one transaction, taken in sorted scope order
(``"*"`` before class names) so two workers never wait on each other's rows in opposite orders;
a scope that does not fit rolls the whole reservation back. PostgreSQL re-checks the condition
on the row's newest version after a concurrent update (READ COMMITTED), SQLite serialises
writers; there is no read-then-write window on either. A worker that dies between reserving
and settling leaves its reservation counted for the rest of that day (the safe side).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from evaluator.graders import Grader, GraderEnv, GradeResult, SampleView
from evaluator.models import GradingBudgetRow
from router.db import utcnow
from router.dialect import insert_ignore
from router.models import Sample
from router.policy import ClassSettings, ModelPrice, Policy
from router.pricing import Usage, cost_nusd
from router.providers import ProviderError
from router.providers.base import ChatRequest, ChatResponse
from router.tokens import TOKENS_PER_MESSAGE, estimate_message_tokens, estimate_text_tokens

log = logging.getLogger(__name__)

NANO_PER_USD = 1_000_000_000
"""Budget money is integer nano-USD."""

GLOBAL_SCOPE = "*"
"""The scope of the policy's top-level budget (every class together)."""

BUSY_RETRY_S = 60.0
"""When a stage does not fit only because of other calls' reservations in flight (they may
settle lower), the sample is retried after this many seconds; when the day's settled spend
leaves no room, at the next UTC midnight."""

_T = GradingBudgetRow.__table__  # type: ignore[attr-defined]


def next_utc_day(now: datetime) -> datetime:
    """Midnight UTC after ``now``."""
    return datetime.combine(now.astimezone(UTC).date() + timedelta(days=1), time(), tzinfo=UTC)


def estimate_nusd(request: ChatRequest, price: ModelPrice) -> int:
    """Upper-bound-style estimate of one call in nano-USD: estimated prompt tokens (system
    prompt included) at the input price plus ``max_tokens`` at the output price (prices per
    1M), exact (:func:`router.pricing.cost_nusd`) plus one nano-USD, so its rounding never
    makes it lower."""
    tokens_in = estimate_message_tokens(request.messages)
    if request.system:
        tokens_in += TOKENS_PER_MESSAGE + estimate_text_tokens(request.system)
    usage = Usage(input_tokens=tokens_in, output_tokens=request.max_tokens)
    return (cost_nusd(usage, price) or 0) + 1


class BudgetHeld(ProviderError):
    """A stage's estimated cost does not fit what is left of a grading budget; nothing was
    sent. ``until`` (UTC) is when the sample may be claimed again; ``scope`` names the budget
    (``"*"`` or the task class)."""

    code = "grading_budget"
    status = 429

    def __init__(self, scope: str, until: datetime) -> None:
        super().__init__(f"grading budget '{scope}' is spent until {until.isoformat()}")
        self.scope = scope
        self.until = until


@dataclass(frozen=True, slots=True)
class Reservation:
    """Nano-USD reserved on ``day`` against each of ``scopes`` (sorted)."""

    day: date
    scopes: tuple[str, ...]
    nusd: int


def hold(row: Sample, held: BudgetHeld) -> None:
    """Release a claimed ``row`` back to the queue until ``held.until`` without using up an
    attempt (the claim that led here is given back)."""
    row.status, row.lease_until = "queued", held.until
    row.attempts = max(0, row.attempts - 1)


async def waiting_on_budget(session: AsyncSession, *, now: datetime | None = None) -> int:
    """Samples queued with a lease still running: released by :func:`hold` and waiting for
    budget (nothing else queues a sample with a lease)."""
    at = now or utcnow()
    stmt = select(func.count()).where(col(Sample.status) == "queued", col(Sample.lease_until) > at)
    return int((await session.exec(stmt)).one())


class GradingBudget:
    """The grading budget of one policy: admits, sends and settles a sample's stages.

    ``clock`` gives the current UTC time (the budget day is its date); tests inject it.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        policy: Policy,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._sessions = sessions
        self._policy = policy
        self._clock = clock

    def limits(self, task_class: str) -> list[tuple[str, int]]:
        """(scope, limit in nano-USD) of every budget that applies to ``task_class``, sorted by
        scope (the lock order); empty when none is set."""
        scopes: dict[str, float] = {}
        top = self._policy.spec.grading_budget_usd_per_day
        if top is not None:
            scopes[GLOBAL_SCOPE] = top
        mine = self._policy.settings_for(task_class).grading_budget_usd_per_day
        if mine is not None:
            scopes[task_class] = mine
        return [(s, math.floor(usd * NANO_PER_USD + 1e-6)) for s, usd in sorted(scopes.items())]

    async def reserve(self, task_class: str, nusd: int) -> Reservation:
        """Reserve ``nusd`` nano-USD today against every budget of ``task_class``, all or none.

        Raises:
            BudgetHeld: a budget has no room for it (names it; nothing is reserved).
        """
        now = self._clock()
        day = now.astimezone(UTC).date()
        limits = self.limits(task_class)
        async with self._sessions() as session:
            for scope, limit in limits:  # the day's rows, created once (sorted order)
                await session.exec(
                    insert_ignore(session, GradingBudgetRow).values(
                        scope=scope,
                        day=day,
                        limit_nusd=limit,
                        reserved_nusd=0,
                        spent_nusd=0,
                        updated_at=now,
                    )
                )
            await session.commit()
            conn = await session.connection()
            for scope, limit in limits:
                done = await conn.execute(
                    sa.update(_T)
                    .where(
                        _T.c.scope == scope,
                        _T.c.day == day,
                        _T.c.reserved_nusd + _T.c.spent_nusd + nusd <= limit,
                    )
                    .values(
                        reserved_nusd=_T.c.reserved_nusd + nusd, limit_nusd=limit, updated_at=now
                    )
                )
                if done.rowcount != 1:
                    await session.rollback()
                    spent = (
                        await session.exec(
                            select(GradingBudgetRow.spent_nusd).where(
                                col(GradingBudgetRow.scope) == scope,
                                col(GradingBudgetRow.day) == day,
                            )
                        )
                    ).one()
                    if spent + nusd <= limit:  # only calls in flight are in the way
                        until = now + timedelta(seconds=BUSY_RETRY_S)
                    else:
                        until = next_utc_day(now)
                    raise BudgetHeld(scope, until)
            await session.commit()
        return Reservation(day, tuple(s for s, _ in limits), nusd)

    async def settle(self, reservation: Reservation, actual_nusd: int) -> None:
        """Replace ``reservation`` by the actual cost: reserved -= estimate, spent += actual, on
        the reservation's day, every scope in one transaction (sorted order)."""
        async with self._sessions() as session:
            conn = await session.connection()
            for scope in reservation.scopes:
                await conn.execute(
                    sa.update(_T)
                    .where(_T.c.scope == scope, _T.c.day == reservation.day)
                    .values(
                        reserved_nusd=_T.c.reserved_nusd - reservation.nusd,
                        spent_nusd=_T.c.spent_nusd + actual_nusd,
                        updated_at=self._clock(),
                    )
                )
            await session.commit()

    async def send(
        self, task_class: str, requests: Mapping[str, ChatRequest], env: GraderEnv
    ) -> dict[str, ChatResponse]:
        """Send one stage's ``requests`` concurrently (by key) once their estimated cost is
        reserved against ``task_class``'s budgets, then settle at the actual cost of the replies
        (a failed call counts 0). Without a budget, just send them.

        Raises:
            BudgetHeld: the stage does not fit; nothing was sent.
            ProviderError: a call failed (after settling the others).
        """
        keys = list(requests)

        def calls() -> list[Coroutine[Any, Any, ChatResponse]]:
            return [env.provider_for(requests[k].model).complete(requests[k]) for k in keys]

        if not self.limits(task_class):
            return dict(zip(keys, await asyncio.gather(*calls()), strict=True))
        prices = self._policy.prices
        estimate = 0
        for key in keys:
            price = prices.get(requests[key].model)
            if price is None:  # cannot be bounded: never sent under a budget
                log.error(
                    "model %s has no catalog price; a grading budget cannot admit it",
                    requests[key].model,
                )
                raise BudgetHeld(task_class, next_utc_day(self._clock()))
            estimate += estimate_nusd(requests[key], price)
        reservation = await self.reserve(task_class, estimate)
        replies = await asyncio.gather(*calls(), return_exceptions=True)
        actual = 0
        for key, reply in zip(keys, replies, strict=True):
            if isinstance(reply, ChatResponse):
                actual += cost_nusd(reply.usage, prices.get(requests[key].model)) or 0
        await self.settle(reservation, actual)
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply
        return {k: r for k, r in zip(keys, replies, strict=True) if isinstance(r, ChatResponse)}

    async def complete(self, task_class: str, request: ChatRequest, env: GraderEnv) -> ChatResponse:
        """One call as a stage of its own (a shadow probe's cheaper-model answer)."""
        return (await self.send(task_class, {"call": request}, env))["call"]

    async def grade(
        self,
        grader: Grader,
        sample: SampleView,
        settings: ClassSettings,
        reference_model: str,
        env: GraderEnv,
    ) -> GradeResult:
        """:meth:`Grader.grade` with every stage admitted by the budget (:meth:`send`).

        Raises:
            BudgetHeld: a stage does not fit (earlier stages' spend stays booked).
            ProviderError: a call failed.
        """
        if not self.limits(sample.task_class):
            return await grader.grade(sample, settings, reference_model, env)
        answers: dict[str, ChatResponse] = {}
        while True:
            nxt = grader.step(sample, settings, reference_model, env, answers)
            if isinstance(nxt, GradeResult):
                return nxt
            todo = {k: r for k, r in nxt.requests.items() if k not in answers}
            if not todo:
                raise RuntimeError(f"grader {grader.name} asked again for answers it has")
            answers.update(await self.send(sample.task_class, todo, env))
