"""``tierwise eval``: offline evaluations. ``tierwise eval judge DATASET`` measures a judge
against human labels (:mod:`evaluator.calibration`) and prints it with rich. Composition and
presentation only."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from evaluator.calibration import (
    AgreementStats,
    CalibrationSet,
    JudgeCalibration,
    KappaEstimate,
    calibrate,
    llmbar_reproduction,
    load_calibration_set,
    load_llmbar_statistics,
    same_statistics,
)
from router.errors import TierwiseError

eval_app = typer.Typer(help="Offline evaluations over datasets/.", no_args_is_help=True)
console = Console(width=None if Console().is_terminal else 240)

NOTES = (
    "agree = judge verdict equals the human consensus, over items with a verdict; items without "
    "one (unparseable = invalid, refusal or content filter = refused) are counted apart "
    "(field case J2).",
    "kappa = Cohen's kappa over those items, 95% interval = kappa +- 1.96 SE with the "
    "large-sample SE of Fleiss, Cohen & Everitt (1969).",
    "both orders (J3) = the common verdict when the two presentation orders agree, else a tie; "
    "flips = items whose two verdicts differ.",
)


def _pct(k: int, n: int) -> str:
    return "-" if n == 0 else f"{k}/{n} {k / n:.1%}"


def _kappa(est: KappaEstimate | None) -> str:
    if est is None or est.kappa is None:
        return "-"
    return f"{est.kappa:.3f} [{est.ci_low:.2f}, {est.ci_high:.2f}]"


def _order(c: JudgeCalibration, order: str) -> AgreementStats | None:
    return c.orders.get(order)


def render_calibration(rows: list[JudgeCalibration], cal: CalibrationSet, by: str) -> Table:
    """One row per (group, judge): agreement and kappa per order, both orders (when a judge saw
    both), flips, missing verdicts."""
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
            ("agree both (J3)", "right"),
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
            "-" if first is None else _pct(first.agree, first.valid),
            _kappa(first.kappa if first else None),
        ]
        if two:
            cells += [
                "-" if second is None else _pct(second.agree, second.valid),
                _kappa(second.kappa if second else None),
                "-" if c.both is None else _pct(c.both.agree, c.both.valid),
                _kappa(c.both.kappa if c.both else None),
                "-" if c.flip_base == 0 or c.both is None else _pct(c.flips, c.flip_base),
            ]
        cells.append(_pct(missing, c.asked) + (f" ({refused} refused)" if refused else ""))
        table.add_row(*cells)
    return table


def _matrix(stats: AgreementStats | None) -> str:
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
    for name in ("judge", "output_1 first", "swapped", "both orders (J3)"):
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


def render_llmbar_reproduction(cal: CalibrationSet, statistics: Path, judge: str | None) -> Table:
    """LLMBar's statistics.json recomputed with the authors' definitions, checked against the
    published file."""
    published = load_llmbar_statistics(statistics)
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
    wanted = {c.judge for c in calibrate(cal, judge=judge)}
    for subset, name, mine, theirs in llmbar_reproduction(cal, published):
        if name not in wanted:
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


@eval_app.command("judge")
def judge_cmd(
    dataset: Annotated[
        Path, typer.Argument(help="datasets/llmbar.jsonl or datasets/pandalm.jsonl")
    ],
    judge: Annotated[
        str | None, typer.Option(help="Judge name, e.g. GPT-4 or GPT-4/Vanilla (default: all).")
    ] = None,
    by: Annotated[str, typer.Option(help="Group by 'subset' or 'class'.")] = "subset",
    statistics: Annotated[
        Path | None,
        typer.Option(
            help="LLMBar authors' statistics (default: llmbar_statistics.jsonl beside "
            "the dataset, if present)."
        ),
    ] = None,
) -> None:
    """Measure a judge against human labels from recorded verdicts (offline): agreement, Cohen's
    kappa with its 95% interval, confusion matrix, invalid rate, position-flip rate."""
    try:
        cal = load_calibration_set(dataset)
        rows = calibrate(cal, judge=judge, by=by)
    except TierwiseError as exc:
        console.print(f"[red]error[/red] ({exc.code}): {escape(exc.message)}", soft_wrap=True)
        raise typer.Exit(2) from exc
    console.print(render_calibration(rows, cal, by))
    console.print(render_confusion(rows))
    stats_file = statistics or dataset.parent / "llmbar_statistics.jsonl"
    if cal.name == "llmbar" and stats_file.exists():
        console.print(render_llmbar_reproduction(cal, stats_file, judge))
        console.print(
            "- the authors' kappa_* differ from the kappas above by construction: their "
            "evaluate.py codes the verdict as 1 if '1' else 0 but keeps the label as 1/2, so "
            "a correct '2' never counts as agreement (see evaluator.calibration."
            "llmbar_authors_statistics)."
        )
    for note in NOTES:
        console.print(f"- {note}")
    if any(len(i.human) > 1 for i in cal.items):
        no_majority = sum(c.no_consensus for c in rows if c.group != "all")
        console.print(
            f"- human consensus = majority of {max(len(i.human) for i in cal.items)} annotators "
            f"(0 = tie is a label like 1 and 2); items whose top labels tie are left out: "
            f"{no_majority} here."
        )
