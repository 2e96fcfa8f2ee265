"""The routing table's public API: read it, snapshot it, change it.

This is the only way the control plane (``evaluator``) writes routing decisions: every change
goes through :func:`change_class`, which bumps the table version in the same transaction, so every
router replica's snapshot poller sees it. Functions here only flush; the caller commits.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from router.db import utcnow
from router.errors import NotFound, PolicyError
from router.models import Model, Policy, Price, RoutingEntry, RoutingState
from router.money import price_nusd, price_usd
from router.policy import ModelPrice, parse_policy
from router.policy import Policy as LoadedPolicy


@dataclass(frozen=True, slots=True)
class EntryView:
    """An immutable copy of one routing-table row."""

    task_class: str
    tier: str
    model: str
    status: str
    version: int
    changed_at: datetime


@dataclass(frozen=True, slots=True)
class RoutingSnapshot:
    """Everything a decision needs, in memory: policy, table rows, catalog. Never mutated.

    ``catalog``: every model with the prices in effect when the snapshot was loaded (a model
    whose first price is still to come is not in it). ``prices``: every model's price history,
    oldest first (each entry's ``effective_from`` set); :meth:`price_at` reads it.
    """

    version: int
    policy: LoadedPolicy
    entries: dict[str, EntryView]
    catalog: dict[str, ModelPrice]
    # Every name a provider may report for a catalog model (its name and aliases) -> its name.
    names: dict[str, str] = field(default_factory=dict)
    prices: dict[str, tuple[ModelPrice, ...]] = field(default_factory=dict)

    def price_at(self, model: str, when: datetime) -> ModelPrice | None:
        """``model``'s prices in effect at ``when`` (UTC): its latest row with ``effective_from
        <= when``; None when it has none then (unpriced). A snapshot built without a history
        (tests) falls back to ``catalog``."""
        history = self.prices.get(model)
        if history is None:
            return None if self.prices else self.catalog.get(model)
        return in_effect(history, when)

    def provider_of(self, model: str) -> str:
        price = self.catalog.get(model)
        return price.provider if price is not None else "unknown"

    def canonical(self, reported: str) -> str:
        """The catalog name for a model name a caller or provider reported (a dated alias such
        as ``gpt-4o-mini-2024-07-18`` becomes ``gpt-4o-mini``); unknown names are kept."""
        return self.names.get(reported, reported)


async def current_version(session: AsyncSession) -> int:
    """The routing table version (0 before any policy is applied)."""
    version = (await session.exec(select(RoutingState.version).where(RoutingState.id == 1))).first()
    return version or 0


async def _bump_version(session: AsyncSession) -> int:
    """Increment the table version atomically and return the new value."""
    now = utcnow()
    result = await session.exec(
        sa.update(RoutingState)
        .where(col(RoutingState.id) == 1)
        .values(version=RoutingState.version + 1, updated_at=now)
        .returning(col(RoutingState.version))
    )
    version = result.scalar_one_or_none()
    if version is None:
        session.add(RoutingState(id=1, version=1, updated_at=now))
        await session.flush()
        return 1
    return int(version)


async def latest_policy(session: AsyncSession) -> LoadedPolicy | None:
    """The most recently applied policy, parsed, or None if none was applied."""
    row = (await session.exec(select(Policy).order_by(col(Policy.id).desc()).limit(1))).first()
    return None if row is None else parse_policy(row.body, source=f"policy #{row.id}")


async def load_snapshot(session: AsyncSession) -> RoutingSnapshot | None:
    """Read policy, table and catalog into a snapshot; None before any policy is applied."""
    # The version is read first: if a change commits between the two reads, the snapshot looks
    # older than it is and the next poll reloads it (the reverse order could pin a new version
    # number to an old policy for good).
    version = await current_version(session)
    policy = await latest_policy(session)
    if policy is None:
        return None
    rows = (await session.exec(select(RoutingEntry))).all()
    entries = {
        r.task_class: EntryView(r.task_class, r.tier, r.model, r.status, r.version, r.changed_at)
        for r in rows
    }
    prices = await price_history(session)
    now = utcnow()
    catalog = {
        name: price
        for name, history in prices.items()
        if (price := in_effect(history, now)) is not None
    }
    return RoutingSnapshot(
        version=version,
        policy=policy,
        entries=entries,
        catalog=catalog,
        names=catalog_names(catalog.values()),
        prices=prices,
    )


_T = TypeVar("_T")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
"""The ``effective_from`` of a model's first price when the policy gives no date: the first
price a model gets covers everything before it (there was no other price to keep)."""


def in_effect(history: Sequence[ModelPrice], when: datetime) -> ModelPrice | None:
    """The entry of ``history`` (oldest first, each with ``effective_from``) in effect at
    ``when``: the latest one with ``effective_from <= when``; None before the first."""
    froms = [p.effective_from or EPOCH for p in history]
    i = bisect.bisect_right(froms, when)
    return history[i - 1] if i else None


def price_period(when: Any, history: Sequence[ModelPrice]) -> sa.ColumnElement[int]:
    """A SQL expression: the index in ``history`` (oldest first) of the entry in effect at the
    timestamp column ``when``, -1 before the first (no price). Grouping by it prices each period's
    token sums at its own price (pricing is linear)."""
    if not history:
        return sa.literal(-1)
    whens = [
        (when >= (p.effective_from or EPOCH), i) for i, p in reversed(list(enumerate(history)))
    ]
    return sa.case(*whens, else_=-1)


def _model_price(model: Model, row: Price) -> ModelPrice:
    return ModelPrice(
        name=model.name,
        provider=model.provider,
        api_model=model.api_model,
        aliases=tuple(model.aliases),
        input_usd_per_mtok=_need(price_usd(row.input_nusd_per_mtok)),
        cached_input_usd_per_mtok=price_usd(row.cached_input_nusd_per_mtok),
        cache_write_usd_per_mtok=price_usd(row.cache_write_nusd_per_mtok),
        output_usd_per_mtok=_need(price_usd(row.output_nusd_per_mtok)),
        embedding_input_usd_per_mtok=price_usd(row.embedding_input_nusd_per_mtok),
        batch_discount=Decimal(repr(row.batch_discount)),
        effective_from=row.effective_from,
    )


def _need(value: _T | None) -> _T:
    assert value is not None
    return value


async def price_history(
    session: AsyncSession, model: str | None = None
) -> dict[str, tuple[ModelPrice, ...]]:
    """Every model's price rows (or only ``model``'s), oldest first, as catalog entries whose
    ``effective_from`` is the row's; a model with no price row is left out."""
    stmt = (
        select(Model, Price)
        .join(Price, col(Price.model) == col(Model.name))
        .order_by(col(Price.model), col(Price.effective_from))
    )
    if model is not None:
        stmt = stmt.where(col(Model.name) == model)
    history: dict[str, list[ModelPrice]] = {}
    for m, row in (await session.exec(stmt)).all():
        history.setdefault(m.name, []).append(_model_price(m, row))
    return {name: tuple(rows) for name, rows in history.items()}


async def price_rows(session: AsyncSession, model: str | None = None) -> list[Price]:
    """The ``price`` rows (of ``model``, or all), by model then ``effective_from``."""
    stmt = select(Price).order_by(col(Price.model), col(Price.effective_from))
    if model is not None:
        stmt = stmt.where(col(Price.model) == model)
    return list((await session.exec(stmt)).all())


def catalog_names(models: Iterable[ModelPrice]) -> dict[str, str]:
    """Every name of every catalog model (its own, its ``api_model`` id and its aliases) ->
    its catalog name. An
    alias that is also another model's name, or that two models claim, resolves to the model
    of that name or to the first claimant (a policy file refuses both; the catalog table keeps
    models of earlier policies)."""
    names: dict[str, str] = {}
    models = list(models)
    for m in models:
        for alias in (*m.aliases, *([m.api_model] if m.api_model else [])):
            names.setdefault(alias, m.name)
    names.update({m.name: m.name for m in models})
    return names


def _price_row(price: ModelPrice, effective_from: datetime, now: datetime) -> Price:
    return Price(
        model=price.name,
        effective_from=effective_from,
        input_nusd_per_mtok=_need(price_nusd(price.input_usd_per_mtok)),
        cached_input_nusd_per_mtok=price_nusd(price.cached_input_usd_per_mtok),
        cache_write_nusd_per_mtok=price_nusd(price.cache_write_usd_per_mtok),
        output_nusd_per_mtok=_need(price_nusd(price.output_usd_per_mtok)),
        embedding_input_nusd_per_mtok=price_nusd(price.embedding_input_usd_per_mtok),
        batch_discount=float(price.batch_discount),
        created_at=now,
    )


async def upsert_models(session: AsyncSession, models: list[ModelPrice]) -> list[str]:
    """Insert or update catalog rows, and add a price row for every model whose prices differ
    from the ones in effect (prices USD per 1M tokens; see :func:`apply_policy`). Returns the
    names of the models that got a price row.

    Raises:
        PolicyError: a model's ``effective_from`` is in the past and differs from its rows
            (``field="models[i].effective_from"``): history is not rewritten.
    """
    now = utcnow()
    repriced: list[str] = []
    for i, price in enumerate(models):
        row = await session.get(Model, price.name)
        if row is None:
            row = Model(name=price.name, provider=price.provider, updated_at=now)
            session.add(row)
        row.provider, row.api_model = price.provider, price.api_model
        row.aliases = list(price.aliases)
        row.updated_at = now
        await session.flush()
        history = (await price_history(session, price.name)).get(price.name, ())
        at = price.effective_from
        if at is not None:
            same_date = [p for p in history if p.effective_from == at]
            if same_date and same_date[0].same_prices(price):
                continue  # this dated row was applied before
            if at <= now:
                raise PolicyError(
                    f"models[{i}].effective_from: {at.isoformat()} is in the past; a price "
                    "change applies from now or a later date (history is not rewritten)",
                    field=f"models[{i}].effective_from",
                )
            if same_date:  # a change still to come may be replaced
                await session.exec(
                    sa.delete(Price).where(
                        col(Price.model) == price.name, col(Price.effective_from) == at
                    )
                )
            before = in_effect(history, at)
        else:
            before = in_effect(history, now)
            at = now if history else EPOCH
            if before is None and history:  # only changes still to come: the first applies now
                at = now
        if before is not None and before.same_prices(price):
            continue
        session.add(_price_row(price, at, now))
        repriced.append(price.name)
    await session.flush()
    return repriced


@dataclass(frozen=True, slots=True)
class ApplyResult:
    version: int
    created: list[str]
    updated: list[str]
    kept: list[str]
    repriced: list[str] = field(default_factory=list)


async def apply_policy(session: AsyncSession, policy: LoadedPolicy) -> ApplyResult:
    """Load a policy into the catalog and routing table and bump the version.

    Every class a rule names gets an entry. Entries in ``baseline`` follow the policy's tier and
    model; ``escalated``, ``probation`` and ``pinned`` entries are kept as they are (listed in
    ``kept``) so an apply never silently undoes an escalation.

    Prices: a model whose prices (or batch discount) differ from the ones in effect gets a new
    ``price`` row (listed in ``repriced``), effective from now, or from the model's
    ``effective_from`` when the file gives one (a model's first price, undated, applies from
    :data:`EPOCH`). Older rows are kept, so outcomes keep the price of their time.

    Raises:
        PolicyError: an ``effective_from`` in the past (see :func:`upsert_models`).
    """
    repriced = await upsert_models(session, policy.spec.models)
    version = await _bump_version(session)
    session.add(Policy(name=policy.name, body=policy.body, table_version=version))
    wanted: dict[str, str] = {}
    for rule in policy.spec.rules:
        for task_type in rule.task_types:
            wanted.setdefault(task_type + rule.class_suffix, rule.tier)
    created, updated, kept = [], [], []
    now = utcnow()
    for task_class, tier in wanted.items():
        model = policy.model_for_tier(tier)
        row = await session.get(RoutingEntry, task_class)
        if row is None:
            session.add(
                RoutingEntry(
                    task_class=task_class, tier=tier, model=model, version=version, changed_at=now
                )
            )
            created.append(task_class)
        elif row.status == "baseline":
            if (row.tier, row.model) != (tier, model):
                row.tier, row.model, row.version, row.changed_at = tier, model, version, now
                updated.append(task_class)
        else:
            kept.append(task_class)
    await session.flush()
    return ApplyResult(
        version=version, created=created, updated=updated, kept=kept, repriced=repriced
    )


async def change_class(
    session: AsyncSession,
    task_class: str,
    *,
    model: str,
    status: str,
    tier: str | None = None,
) -> tuple[EntryView | None, EntryView]:
    """Move ``task_class`` to ``model``/``status`` and bump the table version.

    Creates the entry when the class was only routed by the policy's defaults. Returns
    ``(before, after)``; ``before`` is None for a new entry.

    Raises:
        NotFound: ``model`` is not in the catalog, or no policy has been applied.
        PolicyError: ``status`` is not one of baseline, escalated, probation, pinned.
    """
    if status not in ("baseline", "escalated", "probation", "pinned"):
        raise PolicyError(f"unknown status '{status}'", field="status")
    if await session.get(Model, model) is None:
        raise NotFound(f"model '{model}' is not in the catalog", field="model")
    row = (
        await session.exec(
            select(RoutingEntry).where(RoutingEntry.task_class == task_class).with_for_update()
        )
    ).first()
    before = None if row is None else _view(row)
    version = await _bump_version(session)
    now = utcnow()
    if row is None:
        policy = await latest_policy(session)
        if policy is None:
            raise NotFound("no routing policy has been applied", field="policy")
        base_tier = tier or policy.match(task_class, 0, False).tier
        row = RoutingEntry(
            task_class=task_class,
            tier=base_tier,
            model=model,
            status=status,
            version=version,
            changed_at=now,
        )
        session.add(row)
    else:
        row.model, row.status, row.version, row.changed_at = model, status, version, now
        if tier is not None:
            row.tier = tier
    await session.flush()
    return before, _view(row)


def _view(row: RoutingEntry) -> EntryView:
    return EntryView(row.task_class, row.tier, row.model, row.status, row.version, row.changed_at)
