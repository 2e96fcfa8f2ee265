"""The routing table's public API: read it, snapshot it, change it.

This is the only way the control plane (``evaluator``) writes routing decisions: every change
goes through :func:`change_class`, which bumps the table version in the same transaction, so every
router replica's snapshot poller sees it. Functions here only flush; the caller commits.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from router.db import utcnow
from router.errors import NotFound, PolicyError
from router.models import Model, Policy, RoutingEntry, RoutingState
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
    """Everything a decision needs, in memory: policy, table rows, catalog. Never mutated."""

    version: int
    policy: LoadedPolicy
    entries: dict[str, EntryView]
    catalog: dict[str, ModelPrice]
    # Every name a provider may report for a catalog model (its name and aliases) -> its name.
    names: dict[str, str] = field(default_factory=dict)

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
    models = (await session.exec(select(Model))).all()
    catalog = {
        m.name: ModelPrice.model_validate(m.model_dump(exclude={"updated_at"})) for m in models
    }
    return RoutingSnapshot(
        version=version,
        policy=policy,
        entries=entries,
        catalog=catalog,
        names=catalog_names(catalog.values()),
    )


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


async def upsert_models(session: AsyncSession, models: list[ModelPrice]) -> None:
    """Insert or update catalog rows (prices USD per 1M tokens)."""
    now = utcnow()
    for price in models:
        values = {**price.model_dump(), "aliases": list(price.aliases)}
        row = await session.get(Model, price.name)
        if row is None:
            session.add(Model(**values, updated_at=now))
        else:
            for key, value in values.items():
                setattr(row, key, value)
            row.updated_at = now
    await session.flush()


@dataclass(frozen=True, slots=True)
class ApplyResult:
    version: int
    created: list[str]
    updated: list[str]
    kept: list[str]


async def apply_policy(session: AsyncSession, policy: LoadedPolicy) -> ApplyResult:
    """Load a policy into the catalog and routing table and bump the version.

    Every class a rule names gets an entry. Entries in ``baseline`` follow the policy's tier and
    model; ``escalated``, ``probation`` and ``pinned`` entries are kept as they are (listed in
    ``kept``) so an apply never silently undoes an escalation.
    """
    await upsert_models(session, policy.spec.models)
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
    return ApplyResult(version=version, created=created, updated=updated, kept=kept)


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
