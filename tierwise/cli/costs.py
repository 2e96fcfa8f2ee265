"""``tierwise costs``: the cost views of :mod:`evaluator.costs` (a table, ``--json`` or ``--csv``)
and ``tierwise costs simulate``, the what-if calculator of :mod:`evaluator.simulate`."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Annotated

import typer

from evaluator.costs import CostReport, costs, parse_group_by, parse_range
from evaluator.simulate import load_workload, simulate
from router.errors import InvalidInput, TierwiseError
from router.policy import builtin_policy_path, load_policy
from tierwise.cli._common import (
    DbOption,
    console,
    fail,
    load_settings,
    open_session,
    resolve_policy,
    run,
)
from tierwise.cli.render import render_class_economics, render_costs, render_simulation

app = typer.Typer(
    help="Cost views over a time range; `costs simulate` prices a workload before and after.",
    invoke_without_command=True,
)


def csv_text(report: CostReport) -> str:
    """The report's rows as CSV (a header, one line per group, then a ``total`` line): the group
    keys, then every count and USD figure of :meth:`evaluator.costs.CostRow.to_dict`."""
    buf = io.StringIO()
    rows = [r.to_dict() for r in report.rows]
    total = {**{k: "total" for k in report.group_by}, **report.totals.to_dict()}
    fields = list(total)
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in [*rows, total]:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in fields})
    return buf.getvalue()


@app.callback()
def costs_view(
    ctx: typer.Context,
    since: Annotated[
        str | None, typer.Option(help="From (inclusive): ISO date or datetime, UTC.")
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(help="To (exclusive; a bare date includes that day): ISO, UTC."),
    ] = None,
    group_by: Annotated[
        str | None,
        typer.Option("--group-by", help="Comma-separated: day,task_class,model,tier,caller."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV.")] = False,
    database_url: DbOption = None,
) -> None:
    """Requests, tokens, serving cost, the counterfactual on the premium model, savings and
    grading spend (shadow probes apart) per group; per class the economics of grading."""
    if ctx.invoked_subcommand is not None:
        return
    if as_json and as_csv:
        fail(InvalidInput("give --json or --csv, not both", field="json"))
    try:
        start, end = parse_range(since, until)
        keys = parse_group_by(group_by)
    except TierwiseError as exc:
        fail(exc)
    settings = load_settings(database_url)

    async def main() -> None:
        async with open_session(settings.database_url) as session:
            report = await costs(session, since=start, until=end, group_by=keys)
        if as_json:
            typer.echo(json.dumps(report.to_dict()))
        elif as_csv:
            typer.echo(csv_text(report), nl=False)
        else:
            console.print(render_costs(report))
            console.print(render_class_economics(report))

    run(main())


@app.command("simulate")
def costs_simulate(
    workload: Annotated[Path, typer.Argument(help="Workload TOML (docs/workloads/).")],
    policy_file: Annotated[
        Path | None,
        typer.Option("--policy", help="Policy file or built-in name (default: default)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Price a workload before (all on its baseline model) and after routing through a policy:
    cache hits removed, batch discount where batchable; the arithmetic and assumptions stated."""
    try:
        policy = load_policy(
            resolve_policy(policy_file) if policy_file else builtin_policy_path("default")
        )
        sim = simulate(load_workload(workload), policy)
    except TierwiseError as exc:
        fail(exc)
    if as_json:
        typer.echo(json.dumps(sim.to_dict()))
        return
    for part in render_simulation(sim):
        console.print(part, highlight=False, soft_wrap=isinstance(part, str))
