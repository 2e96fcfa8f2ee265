"""``tierwise eval DATASET... --models A,B`` (also ``tierwise eval run``): candidates on
held-out sets, graded against the reference model, with a recommended routing table.

Writes into ``--out``: ``results.jsonl`` (every answer and grade; a second run with the same
``--out`` resumes from it), ``report.md``, ``report.json``, ``report.html`` and
``recommended-policy.toml``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from evaluator.datasets import HeldOutSet, replay_provider, scan_held_out
from evaluator.evaluation import (
    RESULTS_FILE,
    EvalReport,
    EvalSpec,
    ResultsLog,
    build_report,
    recommended_policy,
    render_html,
    render_json,
    render_markdown,
    run_eval,
)
from router.errors import InvalidInput, TierwiseError
from router.policy import Policy, load_policy
from router.providers import Provider, ProviderRegistry
from tierwise.cli._common import console, fail, load_settings, resolve_policy
from tierwise.cli.curve import curve_of
from tierwise.planes import live_registry

REPORT_FILES = ("report.md", "report.json", "report.html")
POLICY_FILE = "recommended-policy.toml"


def write_reports(report: EvalReport, out: Path) -> list[Path]:
    """Write the three renderings of ``report`` into ``out``; returns their paths."""
    paths = []
    for name, render in zip(REPORT_FILES, (render_markdown, render_json, render_html), strict=True):
        path = out / name
        path.write_text(render(report), encoding="utf-8")
        paths.append(path)
    return paths


def _recommended_table(report: EvalReport) -> Table:
    table = Table(title="recommended routing table")
    for head in ("class", "model", "evidence", "why"):
        table.add_column(head, overflow="fold")
    for r in report.recommended:
        ev = r.evidence
        evidence = "" if ev is None or ev.rate is None else f"{ev.k}/{ev.n} upper {ev.high:.1%}"
        table.add_row(r.task_class, r.model, evidence, r.reason)
    return table


def _router_metrics(
    report: EvalReport,
    datasets: list[Path],
    names: list[str],
    ref: str,
    policy: Policy,
    routellm_evals: Path | None,
) -> None:
    """Fill ``report.router_metrics``: per benchmark whose file records both the cheapest
    candidate and the reference, the cost-quality curve of class-level routing between them
    (:func:`tierwise.cli.curve.curve_of`); a benchmark without those recordings gets a note."""
    candidates = [m for m in names if m != ref]
    if not candidates:
        return
    cheap = min(
        candidates,
        key=lambda m: policy.prices[m].input_usd_per_mtok + policy.prices[m].output_usd_per_mtok,
    )
    for path in datasets:
        try:
            result = curve_of(path, cheap=cheap, strong=ref, routellm_evals=routellm_evals)
        except TierwiseError as exc:
            report.notes.append(f"no router metrics for {path.name}: {exc.message}")
            continue
        report.router_metrics[str(result["benchmark"])] = result


def run_cmd(
    datasets: Annotated[
        list[Path], typer.Argument(help="Held-out JSONL files (a glob may match others: refused).")
    ],
    models: Annotated[
        str, typer.Option("--models", help="Candidate models, comma-separated catalog names.")
    ],
    reference: Annotated[
        str | None,
        typer.Option(help="Reference model (default: the policy's reference, else premium)."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder for results and reports.")] = Path("eval-out"),
    policy_file: Annotated[
        Path | None,
        typer.Option("--policy", help="Policy file or built-in name (catalog, grader settings)."),
    ] = None,
    live: Annotated[
        bool,
        typer.Option(
            help="Ask the providers (TIERWISE_REFERENCE_PROVIDER=catalog or a provider name) "
            "instead of replaying the recorded outputs."
        ),
    ] = False,
    threshold: Annotated[
        float | None,
        typer.Option(help="Disagreement threshold for every class (default: each class's)."),
    ] = None,
    concurrency: Annotated[
        int, typer.Option(help="Items and provider calls in flight.", min=1)
    ] = 8,
    routellm_evals: Annotated[
        Path | None,
        typer.Option(
            help="RouteLLM's routellm/evals folder: the router metrics drop the prompts its "
            "<benchmark>/contaminated_prompts.jsonl lists, as RouteLLM does."
        ),
    ] = None,
) -> None:
    """Run candidate models on held-out sets, grade every answer against the reference, report
    per class and model (disagreement and accuracy with 95% intervals, invalid verdicts, tokens,
    cost) and recommend a routing table, written as a policy file."""
    started = time.perf_counter()
    if threshold is not None and not 0 < threshold < 1:
        fail(InvalidInput(f"--threshold must be in (0, 1), got {threshold}", field="threshold"))
    try:
        policy = load_policy(resolve_policy(policy_file or Path("replay")))
    except TierwiseError as exc:
        fail(exc)
    names = [m.strip() for m in models.split(",") if m.strip()]
    if not names:
        fail(InvalidInput("--models names no model", field="models"))
    ref = reference or policy.spec.defaults.reference_model or policy.spec.premium_model
    unknown = [m for m in [*names, ref] if m not in policy.prices]
    if unknown:
        fail(
            InvalidInput(
                f"not in the catalog of policy {policy.name}: {', '.join(unknown)} (known: "
                f"{', '.join(sorted(policy.prices))})",
                field="reference" if unknown == [ref] and ref not in names else "models",
            )
        )
    all_models = names if ref in names else [*names, ref]
    sets: list[HeldOutSet] = []
    refused: list[str] = []
    line_errors: list[str] = []
    for path in datasets:
        scan = scan_held_out(path)
        if scan.refused is not None:
            refused.append(scan.refused.message)
            console.print(f"refused: {scan.refused.message}", soft_wrap=True)
        for err in scan.errors:
            line_errors.append(err.message)
            console.print(f"bad line: {err.message}", soft_wrap=True)
        if scan.held_out is not None:
            sets.append(scan.held_out)
    if not sets:
        fail(InvalidInput("no held-out set to evaluate", field="datasets"))
    spec = EvalSpec(sets, all_models, ref, policy, live=live, concurrency=concurrency)
    try:
        spec.settings_by_class()
    except TierwiseError as exc:
        fail(exc)
    registry: ProviderRegistry | None = None
    answer_provider: Callable[[str], Provider] | None = None
    grading_provider: Callable[[str], Provider]
    if live:
        settings = load_settings(None)
        if settings.reference_provider == "replay":
            fail(
                InvalidInput(
                    "--live needs TIERWISE_REFERENCE_PROVIDER=catalog (or a provider name); "
                    "it is replay",
                    field="reference_provider",
                )
            )
        try:
            registry = live_registry(settings, lambda: policy.prices)
        except TierwiseError as exc:
            fail(exc)
        answer_provider = registry.for_model
        grading_provider = registry.for_model
    else:
        replay = replay_provider(sets)
        grading_provider = lambda _model: replay  # noqa: E731 - every model answers from it

    log = ResultsLog(out / RESULTS_FILE)
    total = sum(len(s.items) for s in sets)

    async def main() -> EvalReport:
        try:
            with Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=console,
            ) as progress:
                task = progress.add_task("evaluating", total=total)
                run = await run_eval(
                    spec,
                    log,
                    answer_provider=answer_provider,
                    grading_provider=grading_provider,
                    on_item=lambda: progress.advance(task),
                )
        finally:
            if registry is not None:
                await registry.aclose()
        return build_report(
            spec,
            log,
            run,
            seconds=time.perf_counter() - started,
            threshold=threshold,
            refused=refused,
            line_errors=line_errors,
        )

    try:
        report = asyncio.run(main())
    except KeyboardInterrupt:
        log.close()
        console.print(
            f"interrupted: what is done is in {log.path}; run the same command again to resume"
        )
        raise typer.Exit(130) from None
    except TierwiseError as exc:
        log.close()
        fail(exc)
    log.close()
    _router_metrics(report, datasets, names, ref, policy, routellm_evals)
    try:
        text = recommended_policy(policy, report.recommended, sets)
    except TierwiseError as exc:
        report.notes.append(f"no policy file written: {exc.message}")
    else:
        (out / POLICY_FILE).write_text(text, encoding="utf-8")
        report.policy_file = str(out / POLICY_FILE)
    paths = write_reports(report, out)
    console.print(_recommended_table(report))
    if report.run.failures:
        console.print(
            f"{report.run.failures} failures (listed in the report; a rerun retries them)"
        )
    console.print("wrote " + ", ".join(str(p) for p in [*paths, out / RESULTS_FILE]))
    if report.policy_file:
        console.print(f"recommended policy: {report.policy_file} (tierwise policy apply it)")
