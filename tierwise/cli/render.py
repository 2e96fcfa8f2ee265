"""What the commands print: pure functions from the data the ``router`` / ``evaluator`` calls
return to rich tables and strings. No I/O (nothing here reads a file, a database or the
environment, nor prints); the command modules print what these return.

Percentages are formatted with one decimal (``12.5%``); money in USD with four (``$0.0839``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rich.markup import escape
from rich.table import Table

from evaluator.calibration import (
    AgreementStats,
    CalibrationSet,
    JudgeCalibration,
    KappaEstimate,
    same_statistics,
)
from evaluator.costs import CostReport
from evaluator.evidence import Evidence
from evaluator.models import EscalationEvent
from evaluator.report import Books, ClassReport, VerdictDelay
from evaluator.simulate import Simulation
from router.errors import TierwiseError
from router.keys import KeyInfo
from router.money import usd
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


# ---- callers' API keys ------------------------------------------------------------------------


def _when(at: object) -> str:
    return "" if at is None else f"{at:%Y-%m-%d %H:%M:%S}Z"


def render_new_key(info: KeyInfo, key: str) -> list[str]:
    """The lines printed once a key is created: what it is, the key alone on its line, and that
    it will not be shown again."""
    return [
        f"created API key {info.id} ({escape(info.name)}), scopes: {', '.join(info.scopes)}",
        key,
        "Store it now: the key is shown once and will not be shown again (only its hash is kept).",
    ]


def render_keys(keys: list[KeyInfo]) -> Table:
    """Every key, oldest first: id, name, scopes, created and revoked (UTC). Never a hash."""
    table = Table(title=f"API keys ({sum(k.live for k in keys)} live, {len(keys)} in all)")
    for col in ("id", "name", "scopes", "created", "revoked"):
        table.add_column(col)
    for k in keys:
        table.add_row(
            k.id, escape(k.name), ",".join(k.scopes), _when(k.created_at), _when(k.revoked_at)
        )
    return table


# ---- per-class quality and the books ----------------------------------------------------------


def _percent(x: float | None) -> str:
    """A fraction (0.125) as a percentage (``12.5%``); ``-`` for None (no data)."""
    return "-" if x is None else f"{x:.1%}"


def render_classes(reports: list[ClassReport]) -> Table:
    """Per-class table: traffic, graded samples, the evidence window (for an escalated class the
    escalation's evidence, else the current window), status, model now, and the grades without
    a verdict (invalid + refused) with their share of all grades."""
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
    USD the serving cost, the cache's embedding spend (a seventh line, only when there is
    any), the grading spend, their total, what all of it would have cost on the premium model
    (cache hits at their replaced calls' tokens), and the saving (also as a share of that
    premium cost; 0% when it is 0)."""
    saved = 0.0 if b.premium_usd == 0 else b.savings_usd / b.premium_usd
    lines = [
        f"requests: {requests}   outcomes priced: {b.outcomes - b.unpriced_outcomes}"
        f" (unpriced: {b.unpriced_outcomes})",
        f"serving cost:  ${b.serving_usd:,.4f}",
        *(
            [
                f"embedding:     ${b.embedding_usd:,.4f} (cache lookups)"
                + (f" (unpriced: {b.unpriced_embeddings})" if b.unpriced_embeddings else "")
            ]
            if b.embedding_nusd or b.unpriced_embeddings
            else []
        ),
        f"grading spend: ${b.grading_usd:,.4f}"
        + (f" (unpriced grades: {b.unpriced_grades})" if b.unpriced_grades else "")
        + (
            f" ({b.waiting_on_budget} samples wait on the grading budget)"
            if b.waiting_on_budget
            else ""
        ),
        f"total:         ${b.total_usd:,.4f}",
        f"all on {b.premium_model}: ${b.premium_usd:,.4f}"
        + (
            f" ({b.unreadable_hits} cache hits without a readable replaced call)"
            if b.unreadable_hits
            else ""
        ),
        f"saved:         ${b.savings_usd:,.4f} ({saved:.1%})",
    ]
    return "\n".join(lines)


def render_delays(delays: Sequence[VerdictDelay], *, compressed: bool = False) -> str:
    """Time from sample to verdict, one line per grading mode: grades, median and p90 in
    seconds; ``compressed`` adds that a replay's clock is compressed (its batches end by their
    first poll; a provider's may take the 24 h window)."""
    if not delays:
        return "time from sample to verdict: no grades"
    lines = ["time from sample to verdict (grade.created_at - sample.created_at):"]
    lines += [
        f"  {d.mode:<8} grades: {d.grades:>6}   median: {d.median_s:,.2f} s   p90: {d.p90_s:,.2f} s"
        for d in delays
    ]
    if compressed:
        lines.append(
            "  (replay: time is compressed; batches end by their first poll, a provider's "
            "batch may take up to its 24 h window)"
        )
    return "\n".join(lines)


# ---- cost views (tierwise costs) -------------------------------------------------------------


def _usd(x: float | None) -> str:
    return "-" if x is None else f"${x:,.4f}"


def render_costs(report: CostReport) -> Table:
    """The cost view: one row per group (its keys first), then the totals; requests (unpriced),
    premium share, tokens (input / cached / cache write / output), serving, counterfactual on
    the premium model, savings, grading and shadow probes (USD), the batch lane's share of
    requests and what its discount saved, and the semantic cache's hit rate and what its hits
    saved (USD)."""
    since = "start" if report.since is None else f"{report.since:%Y-%m-%d %H:%M}Z"
    until = "now" if report.until is None else f"{report.until:%Y-%m-%d %H:%M}Z"
    table = Table(title=f"costs {since} .. {until} (premium: {report.premium_model or '-'})")
    for key in report.group_by:
        table.add_column(key, no_wrap=True)
    heads = ("requests", "unpriced", "premium share", "input", "cached", "cache write", "output")
    for head in heads:
        table.add_column(head, justify="right")
    for head in ("serving", "all on premium", "savings", "grading", "shadow probes"):
        table.add_column(head, justify="right")
    for head in ("batch share", "batch saved", "cache hits", "cache saved"):
        table.add_column(head, justify="right")
    for row in [*report.rows, report.totals]:
        keys = (
            [escape(str(row.key.get(k) or "-")) for k in report.group_by]
            if row.key
            else ["total"] + [""] * (len(report.group_by) - 1)
        )
        table.add_row(
            *keys,
            str(row.requests),
            str(row.unpriced),
            _percent(row.premium_share),
            f"{row.input_tokens:,}",
            f"{row.cached_input_tokens:,}",
            f"{row.cache_write_tokens:,}",
            f"{row.output_tokens:,}",
            _usd(row.serving_usd),
            _usd(row.counterfactual_usd),
            _usd(row.savings_usd),
            _usd(row.grading_usd),
            _usd(row.shadow_grading_usd),
            _percent(row.batch_share),
            _usd(usd(row.batch_saved_nusd)),
            _percent(row.cache_hit_rate),
            _usd(usd(row.cache_saved_nusd)),
        )
    return table


def _break_even(rate: float | None) -> str:
    """``-`` (no grading spend), ``> 100% (grade all)`` above 1, else two decimals."""
    if rate is None:
        return "-"
    return "> 100% (grade all)" if rate > 1 else f"{rate:.2%}"


def render_class_economics(report: CostReport) -> Table:
    """Per class: what routing saves, what grading costs (shadow probes included), the measured
    sample rate, the break-even rate (rate x savings / grading) and a flag when grading costs
    more than routing saves."""
    table = Table(
        title="economics of quality assurance (break-even = sample rate x savings / grading)"
    )
    for head in ("task class", "requests", "routing saves", "grading costs", "sample rate"):
        table.add_column(head, justify="left" if head == "task class" else "right")
    table.add_column("break-even rate", justify="right")
    table.add_column("flag")  # red when grading costs more than routing saves
    for c in report.classes:
        table.add_row(
            escape(c.task_class),
            str(c.requests),
            _usd(c.savings_usd),
            _usd(c.grading_usd),
            _percent(c.sample_rate),
            _break_even(c.break_even_rate),
            "[red]grading costs more than routing saves[/red]" if c.grading_exceeds_savings else "",
        )
    return table


def render_simulation(sim: Simulation) -> list[Any]:
    """The what-if as a cost review prints it: the before table (all on the baseline model), the
    after table (routed by the policy), the arithmetic per task, and every assumption."""
    w = sim.workload
    base = sim.prices[w.baseline_model]
    before = Table(title=f"before: everything on {w.baseline_model}, real-time, no cache")
    for head in ("task", "model", "requests/day", "tokens in/out", "USD/day"):
        before.add_column(head, justify="left" if head in ("task", "model") else "right")
    after = Table(title=f"after: routed by policy {sim.policy}")
    for head in ("task", "class -> tier", "model", "requests/day", "cache hits", "effective/day"):
        after.add_column(
            head, justify="left" if head in ("task", "class -> tier", "model") else "right"
        )
    for head in ("batch", "USD/day", "change"):
        after.add_column(head, justify="right")
    for t in sim.tasks:
        before.add_row(
            escape(t.name),
            t.model_before,
            f"{t.requests_per_day:,.0f}",
            f"{t.input_tokens:,}/{t.output_tokens:,}",
            f"${t.before_usd_per_day:,.2f}",
        )
        change = t.after_usd_per_day - t.before_usd_per_day
        after.add_row(
            escape(t.name),
            f"{escape(t.task_class)} -> {t.tier}",
            t.model_after,
            f"{t.requests_per_day:,.0f}",
            f"{t.cache_hit_rate:.0%}",
            f"{t.effective_requests_per_day:,.0f}",
            f"-{t.batch_discount:.0%}" if t.batchable else "no",
            f"${t.after_usd_per_day:,.2f}",
            f"{change:+,.2f}",
        )
    total_b, total_a = sim.before_usd_per_day, sim.after_usd_per_day
    before.add_row(
        "total", "", f"{sum(t.requests_per_day for t in sim.tasks):,.0f}", "", f"${total_b:,.2f}"
    )
    after.add_row(
        "total",
        "",
        "",
        f"{sum(t.requests_per_day for t in sim.tasks):,.0f}",
        "",
        f"{sum(t.effective_requests_per_day for t in sim.tasks):,.0f}",
        "",
        f"${total_a:,.2f}",
        f"{total_a - total_b:+,.2f}",
    )
    lines = ["arithmetic (prices USD per 1M tokens, from the policy's catalog):"]
    for t in sim.tasks:
        p = sim.prices[t.model_after]
        lines.append(
            f"  {t.name}: before {t.requests_per_day:,.0f} x ({t.input_tokens} x "
            f"{base.input_usd_per_mtok} + {t.output_tokens} x {base.output_usd_per_mtok}) / 1M = "
            f"${t.before_usd_per_day:,.4f}; after {t.effective_requests_per_day:,.2f} x "
            f"({t.input_tokens} x {p.input_usd_per_mtok} + {t.output_tokens} x "
            f"{p.output_usd_per_mtok}) / 1M"
            + (f" x (1 - {t.batch_discount})" if t.batchable else "")
            + f" = ${t.model_usd_per_day:,.4f}"
            + (f" + lookups ${t.embedding_usd_per_day:,.4f}" if t.embedding_usd_per_day else "")
        )
    saved = 0.0 if total_b == 0 else (total_b - total_a) / total_b
    lines.append(
        f"per day: before ${total_b:,.2f}, after ${total_a:,.2f}, saved ${total_b - total_a:,.2f} "
        f"({saved:.1%}); per 30 days: ${30 * total_b:,.2f} -> ${30 * total_a:,.2f}"
    )
    embed = (
        f"every request of a cached task is embedded once for the lookup (hit or miss), its "
        f"input tokens at ${w.embedding_usd_per_mtok}/1M"
        + (f" ({w.embedding_model})" if w.embedding_model else "")
        + " from the workload file (the catalog has no embedding price)"
        if w.embedding_usd_per_mtok is not None
        else "cache lookups are not charged: the workload file gives no embedding_usd_per_mtok "
        "(the catalog has no embedding price)"
    )
    lines += [
        "assumptions:",
        f"  before: every request on {w.baseline_model} at its input and output prices, "
        "real-time, no cache, no batch discount",
        "  after: each task routed by the policy's rules (task type, input tokens, no tool "
        "use -> tier -> tier_models); the routing table's escalations, pins and overrides do "
        "not apply",
        "  cache hits are answered from the cache at no model cost: effective requests = "
        "requests x (1 - cache hit rate)",
        f"  {embed}",
        "  batchable tasks take the routed model's catalog batch_discount off its model cost",
        "  provider prompt caching (cached-input prices) is not modelled: every input token at "
        "the input price",
        "  grading spend (sampling, judge calls) is not included",
    ]
    return [before, after, "\n".join(lines)]


# ---- judge calibration (tierwise eval judge) --------------------------------------------------

CALIBRATION_NOTES = (
    "agree = judge verdict equals the human consensus, over items with a verdict; items without "
    "one (unparseable = invalid, refusal or content filter = refused) are counted apart.",
    "kappa = Cohen's kappa over those items, 95% interval = kappa +- 1.96 SE with the "
    "large-sample SE of Fleiss, Cohen & Everitt (1969).",
    "both orders = the common verdict when the two presentation orders agree, else a tie; "
    "flips = items whose two verdicts differ.",
)

LLMBAR_KAPPA_NOTE = (
    "the authors' kappa_* differ from the kappas above by construction: their "
    "evaluate.py codes the verdict as 1 if '1' else 0 but keeps the label as 1/2, so "
    "a correct '2' never counts as agreement (see evaluator.calibration."
    "llmbar_authors_statistics)."
)


def _share(k: int, n: int) -> str:
    """``k`` of ``n`` as ``k/n`` and a percentage (``95/100 95.0%``); ``-`` when ``n`` is 0."""
    return "-" if n == 0 else f"{k}/{n} {k / n:.1%}"


def _kappa(est: KappaEstimate | None) -> str:
    """Kappa with three decimals and its interval with two (``0.898 [0.81, 0.99]``)."""
    if est is None or est.kappa is None:
        return "-"
    return f"{est.kappa:.3f} [{est.ci_low:.2f}, {est.ci_high:.2f}]"


def _order(c: JudgeCalibration, order: str) -> AgreementStats | None:
    return c.orders.get(order)


def render_calibration(rows: list[JudgeCalibration], cal: CalibrationSet, by: str) -> Table:
    """One row per (group, judge) of ``rows`` (grouped ``by`` subset or class): agreement and
    kappa per order, both orders (when a judge saw both), flips, missing verdicts."""
    two = any(c.both is not None for c in rows)
    table = Table(
        title=f"judge calibration: {cal.name} ({len(cal.items)} items, human labels), by {by}",
        title_justify="left",
    )
    columns = [
        (by, "left"),
        ("judge", "left"),
        ("n", "right"),
        ("agree 1st", "right"),
        ("kappa 1st [95% CI]", "left"),
    ]
    if two:
        columns += [
            ("agree swapped", "right"),
            ("kappa swapped [95% CI]", "left"),
            ("agree both", "right"),
            ("kappa both [95% CI]", "left"),
            ("flips", "right"),
        ]
    columns.append(("no verdict", "right"))
    for name, justify in columns:
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for c in rows:
        first, second = _order(c, "order_12"), _order(c, "order_21")
        missing = sum(s.invalid + s.refused for s in c.orders.values())
        refused = sum(s.refused for s in c.orders.values())
        cells = [
            c.group,
            c.judge,
            str(c.n),
            "-" if first is None else _share(first.agree, first.valid),
            _kappa(first.kappa if first else None),
        ]
        if two:
            cells += [
                "-" if second is None else _share(second.agree, second.valid),
                _kappa(second.kappa if second else None),
                "-" if c.both is None else _share(c.both.agree, c.both.valid),
                _kappa(c.both.kappa if c.both else None),
                "-" if c.flip_base == 0 or c.both is None else _share(c.flips, c.flip_base),
            ]
        cells.append(_share(missing, c.asked) + (f" ({refused} refused)" if refused else ""))
        table.add_row(*cells)
    return table


def _matrix(stats: AgreementStats | None) -> str:
    """A confusion matrix as aligned text: rows human consensus, columns judge (1, 2, tie)."""
    if stats is None:
        return "-"
    names = {1: "1", 2: "2", 0: "tie"}
    head = "human\\judge " + " ".join(f"{names[c]:>5}" for c in stats.categories)
    lines = [head]
    for i, c in enumerate(stats.categories):
        cells = " ".join(f"{int(v):>5}" for v in stats.confusion[i])
        lines.append(f"{names[c]:>11} {cells}")
    return "\n".join(lines)


def render_confusion(rows: list[JudgeCalibration]) -> Table:
    """Confusion matrices (rows human consensus, columns judge) of each judge over all of its
    items (its ``all`` row, or its only group)."""
    table = Table(title="confusion matrices (valid verdicts)", title_justify="left")
    for name in ("judge", "output_1 first", "swapped", "both orders"):
        table.add_column(name)
    overall: dict[str, JudgeCalibration] = {}
    for c in rows:
        if c.group == "all" or c.judge not in overall:
            overall[c.judge] = c
    for judge, c in overall.items():
        table.add_row(
            judge, _matrix(_order(c, "order_12")), _matrix(_order(c, "order_21")), _matrix(c.both)
        )
    return table


def render_llmbar_reproduction(
    reproduction: Iterable[tuple[str, str, Mapping[str, Any], Mapping[str, Any] | None]],
    judges: set[str],
) -> Table:
    """LLMBar's statistics.json recomputed with the authors' definitions, checked against the
    published file: one row per (subset, judge, recomputed, published or None) of
    ``reproduction`` (:func:`evaluator.calibration.llmbar_reproduction`) whose judge is in
    ``judges``; ``= published`` says whether the two agree (:func:`same_statistics`)."""
    table = Table(
        title="LLMBar statistics.json recomputed with the authors' definitions "
        "(correct_* count a missing verdict as wrong; kappa_* use their 0/1-vs-1/2 coding)",
        title_justify="left",
    )
    for name in (
        "subset",
        "evaluator",
        "correct_False",
        "correct_True",
        "correct_average",
        "correct_both",
        "equal",
        "kappa_average (authors)",
        "= published",
    ):
        table.add_column(name)
    for subset, name, mine, theirs in reproduction:
        if name not in judges:
            continue
        ok = theirs is not None and same_statistics(mine, theirs)
        table.add_row(
            subset,
            name,
            *(str(mine[k]).split(" = ")[0] for k in ("correct_False", "correct_True")),
            f"{float(str(mine['correct_average']).rstrip('%')):.2f}%",
            *(str(mine[k]).split(" = ")[0] for k in ("correct_both", "equal")),
            f"{mine['kappa_average']:.4f}",
            "[green]yes[/green]" if ok else "[red]NO[/red]",
        )
    return table


def calibration_notes(
    cal: CalibrationSet, rows: list[JudgeCalibration], *, reproduced: bool
) -> list[str]:
    """The notes under the calibration tables, one string each (without the leading ``- ``):
    why the authors' kappas differ (when the LLMBar reproduction was shown), what the columns
    mean, and, for a set with several annotators per item, how the human consensus is formed
    and how many items have none."""
    notes = [LLMBAR_KAPPA_NOTE] if reproduced else []
    notes += CALIBRATION_NOTES
    if any(len(i.human) > 1 for i in cal.items):
        no_majority = sum(c.no_consensus for c in rows if c.group != "all")
        notes.append(
            f"human consensus = majority of {max(len(i.human) for i in cal.items)} annotators "
            f"(0 = tie is a label like 1 and 2); items whose top labels tie are left out: "
            f"{no_majority} here."
        )
    return notes


def _fraction(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def render_curves(results: Sequence[Mapping[str, Any]]) -> Table:
    """One block of rows per benchmark of ``results`` (:func:`evaluator.routing_curve.
    routing_curves`): tierwise's class-level router (mean [min, max] over seeds), the random
    router and the oracle, then RouteLLM's published routers. CPT as a percentage of strong
    calls."""
    table = Table(
        title="class-level routing, cheap vs strong model: APGR and CPT on held-out test splits",
        title_justify="left",
    )
    for name, justify in (
        ("benchmark", "left"),
        ("router", "left"),
        ("APGR", "right"),
        ("CPT(50%)", "right"),
        ("CPT(80%)", "right"),
    ):
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]

    def spread(x: Mapping[str, float], pct: bool) -> str:
        f = _fraction if pct else (lambda v: f"{v:.3f}")
        return f"{f(x['mean'])} [{f(x['min'])}, {f(x['max'])}]"

    for r in results:
        table.add_row(
            r["benchmark"],
            f"tierwise class-level ({len(r['seeds'])} seeds)",
            spread(r["apgr"], False),
            spread(r["cpt_50"], True),
            spread(r["cpt_80"], True),
        )
        for label, key in (("random", "random"), ("oracle (per item)", "oracle")):
            base = r[key]
            table.add_row(
                "",
                label,
                f"{base['apgr']:.3f}",
                _fraction(base["cpt_50"]),
                _fraction(base["cpt_80"]),
            )
        for p in r["routellm"]:
            table.add_row(
                "",
                f"RouteLLM: {p['router']}",
                f"{p['apgr']:.3f}",
                _fraction(p["cpt_50"]),
                _fraction(p["cpt_80"]),
            )
    return table


def _clip(text: str | None, width: int = 160) -> str:
    if text is None:
        return "-"
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def render_evidence_head(ev: Evidence) -> list[str]:
    """The lines above the evidence table: the event, its k/n with the interval, its reason,
    the verdict counts of every sample behind it."""
    e = ev.event
    rate = "-" if e.rate is None else f"{e.rate:.1%}"
    ci = "" if e.ci_low is None or e.ci_high is None else f" [{e.ci_low:.1%}, {e.ci_high:.1%}]"
    counts = ", ".join(f"{k} {v}" for k, v in ev.counts.items())
    return [
        f"event {e.id}: {render_event(e)} at {_when(e.created_at)}",
        f"evidence: {e.k}/{e.n} disagreements, {rate}{ci} against threshold {e.threshold:.1%}; "
        f"{e.rule}",
        f"reason: {e.reason}",
        f"samples behind it: {counts}",
    ]


def render_evidence(ev: Evidence) -> Table:
    """One row per sample of the page: verdict, score, the input (last user message), the
    graded answer, the grader's output (reference answer or judge explanation), clipped."""
    table = Table(title_justify="left")
    for name in ("grade", "verdict", "score", "model", "input", "answer", "reference / judge"):
        table.add_column(name, overflow="fold")
    for s in ev.samples:
        users = [m for m in s.input_messages or [] if m.get("role") == "user"]
        last = users[-1].get("content") if users else None
        table.add_row(
            str(s.grade_id),
            s.verdict + (" (shadow)" if s.shadow else ""),
            "-" if s.score is None else f"{s.score:g}",
            s.model,
            escape(_clip(last if isinstance(last, str) else None, 80)),
            escape(_clip(s.answer, 80)),
            escape(_clip(s.judge_output, 100)),
        )
    return table
