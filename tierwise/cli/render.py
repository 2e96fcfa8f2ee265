"""What the commands print: pure functions from the data the ``router`` / ``evaluator`` calls
return to rich tables and strings. No I/O (nothing here reads a file, a database or the
environment, nor prints); the command modules print what these return.

Percentages are formatted with one decimal (``12.5%``); money in USD with four (``$0.0839``)."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from evaluator.models import EscalationEvent
from evaluator.report import Books, ClassReport
from router.errors import TierwiseError
from router.policy import Policy
from router.table import ApplyResult, RoutingSnapshot


def error_line(exc: TierwiseError) -> str:
    """``exc`` as the one line (rich markup, the message escaped) every command prints for a
    deliberate error: ``error (<code>): <message>``."""
    return f"[red]error[/red] ({exc.code}): {escape(exc.message)}"


# ---- policy and routing table -----------------------------------------------------------------


def render_applied(policy: Policy, result: ApplyResult) -> str:
    """One line: the policy applied, the new table version, and how many classes were created,
    updated and kept (escalated, pinned or on probation, so left where they are)."""
    return (
        f"applied policy '{policy.name}': table version {result.version}; "
        f"{len(result.created)} classes created, {len(result.updated)} updated, "
        f"{len(result.kept)} kept (escalated/pinned/probation)"
    )


def render_routing_table(snap: RoutingSnapshot) -> Table:
    """The routing table, one row per task class sorted by name: tier, model, status and the
    table version at which the entry last changed."""
    table = Table(title=f"routing table v{snap.version} (policy {snap.policy.name})")
    for col in ("task class", "tier", "model", "status", "version"):
        table.add_column(col)
    for e in sorted(snap.entries.values(), key=lambda e: e.task_class):
        table.add_row(e.task_class, e.tier, e.model, e.status, str(e.version))
    return table


def render_event(event: EscalationEvent) -> str:
    """One line for a routing-table change: class, model and status before -> after, the table
    version it made, and who made it."""
    return (
        f"{event.task_class}: {event.from_model} ({event.from_status}) -> {event.to_model} "
        f"({event.to_status}), table version {event.table_version}, by {event.actor}"
    )


# ---- per-class quality and the books ----------------------------------------------------------


def _percent(x: float | None) -> str:
    """A fraction (0.125) as a percentage (``12.5%``); ``-`` for None (no data)."""
    return "-" if x is None else f"{x:.1%}"


def render_classes(reports: list[ClassReport]) -> Table:
    """Per-class table: traffic, graded samples, the evidence window (for an escalated class the
    escalation's evidence, else the current window), status, model now, and the grades without
    a verdict (invalid + refused, field case J2) with their share of all grades."""
    table = Table(title="task classes", title_justify="left")
    numeric = ("routed", "graded", "evidence k/n", "rate", "no verdict")
    for col in (
        "task class",
        "routed",
        "graded",
        "evidence k/n",
        "rate",
        "95% interval",
        "status",
        "model now",
        "no verdict",
    ):
        table.add_column(
            col,
            justify="right" if col in numeric else "left",
            no_wrap=col in ("task class", "95% interval", "status", "model now"),
        )
    for r in reports:
        ev = r.last_escalation
        if r.state.status == "escalated" and ev is not None:
            n, k, rate, lo, hi = ev.n, ev.k, ev.rate, ev.ci_low, ev.ci_high
        else:
            est = r.state.decision.estimate
            n, k, rate, lo, hi = est.n, est.k, est.rate, est.ci_low, est.ci_high
        interval = "-" if lo is None else f"{lo:.1%} .. {_percent(hi)}"
        table.add_row(
            r.task_class,
            str(r.routed),
            str(r.graded_total),
            f"{k}/{n}",
            _percent(rate),
            interval,
            r.label,
            r.state.model,
            f"{r.invalid_total} ({_percent(r.invalid_rate)})",
        )
    return table


def render_books(b: Books, requests: int) -> str:
    """The books as six lines: ``requests`` (a count) and how many outcomes were priced, then in
    USD the serving cost, the grading spend, their total, what all of it would have cost on the
    premium model, and the saving (also as a share of that premium cost; 0% when it is 0)."""
    saved = 0.0 if b.premium_usd == 0 else b.savings_usd / b.premium_usd
    lines = [
        f"requests: {requests}   outcomes priced: {b.outcomes - b.unpriced_outcomes}"
        f" (unpriced: {b.unpriced_outcomes})",
        f"serving cost:  ${b.serving_usd:,.4f}",
        f"grading spend: ${b.grading_usd:,.4f}"
        + (f" (unpriced grades: {b.unpriced_grades})" if b.unpriced_grades else ""),
        f"total:         ${b.total_usd:,.4f}",
        f"all on {b.premium_model}: ${b.premium_usd:,.4f}",
        f"saved:         ${b.savings_usd:,.4f} ({saved:.1%})",
    ]
    return "\n".join(lines)
