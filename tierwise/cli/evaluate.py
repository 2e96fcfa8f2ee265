"""``tierwise eval``: offline evaluations. ``tierwise eval judge DATASET`` measures a judge
against human labels (:mod:`evaluator.calibration`) and prints it with rich."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from evaluator.calibration import (
    calibrate,
    llmbar_reproduction,
    load_calibration_set,
    load_llmbar_statistics,
)
from router.errors import TierwiseError
from tierwise.cli import curve
from tierwise.cli._common import fail, wide_console
from tierwise.cli.render import (
    calibration_notes,
    render_calibration,
    render_confusion,
    render_llmbar_reproduction,
)

app = typer.Typer(help="Offline evaluations over datasets/.", no_args_is_help=True)
app.command("curve")(curve.curve)


@app.command("judge")
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
        fail(exc)
    wide_console.print(render_calibration(rows, cal, by))
    wide_console.print(render_confusion(rows))
    stats_file = statistics or dataset.parent / "llmbar_statistics.jsonl"
    reproduced = cal.name == "llmbar" and stats_file.exists()
    if reproduced:
        published = load_llmbar_statistics(stats_file)
        judges = {c.judge for c in rows}
        wide_console.print(render_llmbar_reproduction(llmbar_reproduction(cal, published), judges))
    for note in calibration_notes(cal, rows, reproduced=reproduced):
        wide_console.print(f"- {note}")
