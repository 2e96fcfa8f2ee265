"""``tierwise eval``: evaluations over held-out sets. ``tierwise eval judge DATASET`` measures a
judge against human labels (:mod:`evaluator.calibration`), from recorded verdicts or live through
the provider registry, and can record the result in a policy file; ``tierwise eval curve``
(:mod:`tierwise.cli.curve`) gives the router metrics of class-level routing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from typer.core import TyperGroup

from evaluator.calibration import (
    CalibrationSet,
    JudgeCalibration,
    LiveRun,
    calibrate,
    calibrated_classes,
    calibration_record,
    judge_live,
    llmbar_reproduction,
    load_calibration_set,
    load_llmbar_statistics,
    write_calibration,
)
from router.errors import InvalidInput, TierwiseError
from router.money import usd
from router.policy import Policy, load_policy
from router.pricing import cost_nusd
from tierwise.cli import curve, eval_run
from tierwise.cli._common import fail, load_settings, resolve_policy, wide_console
from tierwise.cli.render import (
    calibration_notes,
    render_calibration,
    render_confusion,
    render_llmbar_reproduction,
)
from tierwise.planes import live_registry


class _RunByDefault(TyperGroup):
    """``tierwise eval DATASET... --models A,B`` is ``tierwise eval run DATASET...``: a first
    argument that names no subcommand (and is not ``--help``) runs ``run``."""

    # ``ctx`` is click's Context (typer vendors click; its module path is private).
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    help="Evaluations over held-out sets: `tierwise eval DATASET... --models A,B` (run), "
    "`tierwise eval judge DATASET`, `tierwise eval curve DATASET...`.",
    no_args_is_help=True,
    cls=_RunByDefault,
)
app.command("run")(eval_run.run_cmd)
app.command("curve")(curve.curve)


def _recorded(cal: CalibrationSet, judge: str) -> list[str]:
    """The set's recorded judges ``judge`` names (a full name, or its model part)."""
    w = judge.casefold()
    return [j for j in cal.judges if j.casefold() == w or j.casefold().split("/")[0] == w]


async def _live(
    cal: CalibrationSet, judge: str, policy: Policy, concurrency: int, limit: int | None
) -> tuple[CalibrationSet, LiveRun]:
    """Run ``judge`` live on ``cal`` through the provider registry ``TIERWISE_*`` settings
    configure (``replay``, the default reference provider, means each model's own provider
    here: a live run needs one), with a progress bar."""
    settings = load_settings(None)
    if settings.reference_provider == "replay":
        settings = settings.model_copy(update={"reference_provider": "catalog"})
    registry = live_registry(settings, lambda: policy.prices)
    total = len(cal.items) if limit is None else min(limit, len(cal.items))
    try:
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=wide_console,
            transient=True,
        ) as progress:
            task = progress.add_task(f"judging with {judge}", total=total)
            return await judge_live(
                cal,
                judge,
                registry.for_model,
                concurrency=concurrency,
                limit=limit,
                on_progress=lambda n: progress.advance(task, n),
            )
    finally:
        await registry.aclose()


def _only_subset(cal: CalibrationSet, subset: str) -> CalibrationSet:
    """``cal`` with only the items of ``subset``, named ``<set>:<subset>`` (the name a
    recorded calibration carries).

    Raises:
        InvalidInput: no item is in ``subset`` (``field="subset"``, listing the subsets).
    """
    items = [i for i in cal.items if i.subset == subset]
    if not items:
        known = ", ".join(dict.fromkeys(i.subset for i in cal.items))
        raise InvalidInput(f"subset '{subset}' is not in {cal.path} ({known})", field="subset")
    return CalibrationSet(name=f"{cal.name}:{subset}", path=cal.path, items=items)


def _overall(rows: list[JudgeCalibration], judge: str) -> JudgeCalibration:
    """A judge's row over all its items (``all``, or its only group)."""
    mine = [r for r in rows if r.judge == judge]
    return next((r for r in mine if r.group == "all"), mine[0])


@app.command("judge")
def judge_cmd(
    dataset: Annotated[
        Path, typer.Argument(help="datasets/llmbar.jsonl or datasets/pandalm.jsonl")
    ],
    judge: Annotated[
        str | None,
        typer.Option(
            help="A recorded judge (GPT-4, GPT-4/Vanilla; default: all of them), or a catalog "
            "model of --policy, which is then asked live."
        ),
    ] = None,
    by: Annotated[str, typer.Option(help="Group by 'subset' or 'class'.")] = "subset",
    subset: Annotated[
        str | None,
        typer.Option(help="Only the items of this subset (e.g. Processed/MT-Bench)."),
    ] = None,
    statistics: Annotated[
        Path | None,
        typer.Option(
            help="LLMBar authors' statistics (default: llmbar_statistics.jsonl beside "
            "the dataset, if present)."
        ),
    ] = None,
    live: Annotated[
        bool, typer.Option("--live", help="Ask --judge now even if the set has its verdicts.")
    ] = False,
    policy: Annotated[
        Path | None,
        typer.Option(
            help="The policy whose catalog reaches a live judge (default: --write-policy, "
            "else the built-in 'default')."
        ),
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Live calls in flight.")] = 8,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Judge only the first N items (live).")
    ] = None,
    write_policy: Annotated[
        Path | None,
        typer.Option(
            help="Record the judge's measured kappa (with the set's name and today's date) in "
            "this policy file as judge_calibration, so the classes it judges may escalate."
        ),
    ] = None,
    classes: Annotated[
        str | None,
        typer.Option(
            help="With --write-policy: record it for the [[classes]] entry matching this glob "
            "(default: [defaults])."
        ),
    ] = None,
    record_as: Annotated[
        str | None,
        typer.Option(
            help="With --write-policy and a recorded judge: the catalog model it stands for."
        ),
    ] = None,
) -> None:
    """Measure a judge against human labels: agreement, Cohen's kappa with its 95% interval,
    confusion matrix, invalid rate, position-flip rate, per subset or class. Recorded verdicts
    are replayed offline; a catalog model is asked live, in both orders, with the prompt of
    judge_pairwise grading (the TIERWISE_* provider settings reach it)."""
    try:
        cal = load_calibration_set(dataset)
        if subset is not None:
            cal = _only_subset(cal, subset)
        run: LiveRun | None = None
        if write_policy is not None and judge is None:
            raise InvalidInput("--write-policy needs --judge", field="judge")
        recorded = [] if judge is None or live else _recorded(cal, judge)
        if judge is not None and not recorded:
            catalog = load_policy(resolve_policy(policy or write_policy or Path("default")))
            if judge not in catalog.prices:
                raise InvalidInput(
                    f"judge '{judge}' is neither recorded in {dataset} (judges: "
                    f"{', '.join(cal.judges)}) nor a model of policy '{catalog.name}'",
                    field="judge",
                )
            cal, run = asyncio.run(_live(cal, judge, catalog, concurrency, limit))
            rows = calibrate(cal, judge=judge, by=by)
        else:
            rows = calibrate(cal, judge=judge, by=by)
        if write_policy is not None:
            assert judge is not None
            names = {r.judge for r in rows}
            if len(names) != 1:
                raise InvalidInput(
                    f"--judge {judge} names {len(names)} recorded judges "
                    f"({', '.join(sorted(names))}): name one to record it",
                    field="judge",
                )
            [name] = names
            model = judge if run is not None else (record_as or name)
            target = load_policy(write_policy)
            if model not in target.prices:
                raise InvalidInput(
                    f"record_as: '{model}' is not a model of {write_policy}; name the catalog "
                    f"model recorded judge '{name}' stands for",
                    field="record_as",
                )
            target_class = classes if classes is not None else "\0no class\0"
            record = calibration_record(
                _overall(rows, name),
                judge=model,
                measured_on=datetime.now(UTC).date(),
                grader=target.settings_for(target_class).grader,
            )
            written = write_calibration(write_policy, record, classes=classes)
    except TierwiseError as exc:
        fail(exc)
    wide_console.print(render_calibration(rows, cal, by))
    wide_console.print(render_confusion(rows))
    stats_file = statistics or dataset.parent / "llmbar_statistics.jsonl"
    reproduced = run is None and subset is None and cal.name == "llmbar" and stats_file.exists()
    if reproduced:
        published = load_llmbar_statistics(stats_file)
        judges = {c.judge for c in rows}
        wide_console.print(render_llmbar_reproduction(llmbar_reproduction(cal, published), judges))
    for note in calibration_notes(cal, rows, reproduced=reproduced):
        wide_console.print(f"- {note}")
    if run is not None:
        assert judge is not None
        price = catalog.prices.get(judge)
        spent = usd(cost_nusd(run.usage, price))
        wide_console.print(
            f"- live: {run.calls} calls to {judge} ({concurrency} in flight), {run.failed} "
            f"failed, {run.usage.total_input_tokens} input + {run.usage.output_tokens} output "
            f"tokens, " + ("unpriced" if spent is None else f"${spent:.4f}"),
            soft_wrap=True,
        )
        for error in run.errors:
            wide_console.print(f"  {error}", soft_wrap=True)
    if write_policy is not None:
        may = calibrated_classes(written, record.judge)
        wide_console.print(
            f"- wrote judge_calibration (judge {record.judge}, kappa {record.kappa:.3f}, "
            f"{record.dataset}, {record.measured_on.isoformat()}) into {write_policy} "
            f"[{classes or 'defaults'}]; classes judged by {record.judge} that may escalate: "
            + (", ".join(may) or "none"),
            soft_wrap=True,
            markup=False,
        )
