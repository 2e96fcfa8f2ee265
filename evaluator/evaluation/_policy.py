"""The recommended routing table as a policy file ``tierwise policy apply`` accepts.

The file is the base policy (the one the eval priced and graded with) with:

- one rule per evaluated class, first (the first matching rule wins): ``task_types = [class]``
  to the tier of its recommended model;
- ``tier_models``: a recommended model the base policy already has on a tier keeps its lowest
  such tier; the others take free tiers from the top (``critical`` first; the base's
  ``default_tier`` and the tiers its rules name last), so the base policy's own routing changes
  as little as it can (the header comment lists every tier that changed);
- the sets' grader specs as ``[[classes]]`` before the base policy's own, so production grades
  each class the way the eval did (the base policy's entries still win, as in the eval).

A policy has four tiers, so a table recommends at most four distinct models.
"""

from __future__ import annotations

import fnmatch
import tomllib
from collections.abc import Sequence
from typing import Any

import tomli_w

from evaluator.datasets import HeldOutSet
from evaluator.evaluation._report import Recommendation
from router.errors import PolicyError
from router.policy import TIERS, Policy, parse_policy


def _price_key(policy: Policy, model: str) -> tuple[Any, ...]:
    p = policy.prices[model]
    return (p.input_usd_per_mtok + p.output_usd_per_mtok, model)


def recommended_policy(
    base: Policy,
    recommended: Sequence[Recommendation],
    sets: Sequence[HeldOutSet],
    *,
    name: str | None = None,
) -> str:
    """The policy file text (TOML) of ``recommended`` over ``base`` (module doc), validated by
    :func:`router.policy.parse_policy` before it is returned.

    Raises:
        PolicyError: more than four distinct recommended models, a recommended model not in
            the base policy's catalog, or the result does not validate (names the field).
    """
    raw: dict[str, Any] = tomllib.loads(base.body)
    models = sorted({r.model for r in recommended}, key=lambda m: _price_key(base, m))
    missing = [m for m in models if m not in base.prices]
    if missing:
        raise PolicyError(
            f"recommended model(s) {', '.join(missing)} not in the catalog of {base.name}",
            field="models",
        )
    if len(models) > len(TIERS):
        raise PolicyError(
            f"{len(models)} distinct recommended models, but a policy has {len(TIERS)} tiers",
            field="tier_models",
        )
    tiers: dict[str, str] = dict(raw["tier_models"])
    tier_of: dict[str, str] = {}
    changed: list[str] = []
    for model in models:  # a model the base already has on a tier keeps its lowest one
        on = [t for t in TIERS if tiers.get(t) == model]
        if on:
            tier_of[model] = on[0]
    # The others take free tiers from the top, the default tier and the tiers the base
    # policy's rules name last, so as little of the base policy's routing changes as can.
    named = {rule["tier"] for rule in raw.get("rules", [])} | {raw.get("default_tier", "standard")}
    free = [t for t in reversed(TIERS) if t not in tier_of.values()]
    free.sort(key=lambda t: t in named)
    for model in reversed(models):
        if model in tier_of:
            continue
        tier = free.pop(0)
        changed.append(f"{tier}: {tiers.get(tier)} -> {model}")
        tiers[tier] = model
        tier_of[model] = tier
    raw["tier_models"] = tiers
    raw["name"] = name or f"{base.name}-recommended"
    rules = [
        {"task_types": [r.task_class], "tier": tier_of[r.model]}
        for r in sorted(recommended, key=lambda r: r.task_class)
    ]
    raw["rules"] = rules + list(raw.get("rules", []))
    classes = {r.task_class for r in recommended}
    spec: list[dict[str, Any]] = []
    for held_out in sets:
        for override in held_out.graders:
            if any(fnmatch.fnmatchcase(c, override.match) for c in classes):
                spec.append({"match": override.match, **override.overrides})
    raw["classes"] = spec + list(raw.get("classes", []))
    header = [
        f"# Recommended routing table (tierwise eval) over policy {base.name}.",
        "# Per class: the cheapest candidate whose disagreement with the reference model has",
        "# its upper bound below the class's threshold; else the reference model.",
    ]
    for r in sorted(recommended, key=lambda r: r.task_class):
        header.append(f"#   {r.task_class} -> {r.model}: {r.reason}")
    if changed:
        header.append("# Tiers reassigned from the base policy: " + "; ".join(changed))
    text = "\n".join(header) + "\n" + tomli_w.dumps(raw)
    parse_policy(text, source=raw["name"])
    return text
