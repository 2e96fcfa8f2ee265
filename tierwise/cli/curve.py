"""``tierwise eval curve DATASET...``: the cost-quality curve of class-level routing between a
cheap and a strong model on held-out sets, with APGR and CPT beside RouteLLM's published
figures (:mod:`evaluator.routing_curve`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from evaluator.routing_curve import curve_items, load_contaminated, routing_curves
from router.errors import InvalidInput, TierwiseError
from tierwise.cli._common import fail, wide_console
from tierwise.cli.render import render_curves

DEFAULT_SEEDS = (0, 1, 2, 3, 4)


def curve_of(
    path: Path,
    *,
    cheap: str,
    strong: str,
    seeds: list[int] | tuple[int, ...] = DEFAULT_SEEDS,
    calibration_share: float = 0.5,
    routellm_evals: Path | None = None,
) -> dict[str, Any]:
    """One benchmark's router metrics (:func:`evaluator.routing_curve.routing_curves`), its
    items scored by RouteLLM's conventions and, with ``routellm_evals``, decontaminated by
    RouteLLM's lists; the first note says how many items and whether they were.

    Raises:
        InvalidInput: the set cannot be read or lacks either model's recordings.
    """
    contaminated: set[str] = set()
    listed = None if routellm_evals is None else routellm_evals / path.stem
    if listed is not None and (listed / "contaminated_prompts.jsonl").exists():
        contaminated = load_contaminated([listed / "contaminated_prompts.jsonl"])
    name, items, dropped = curve_items(
        path, cheap_model=cheap, strong_model=strong, contaminated=contaminated
    )
    result = routing_curves(
        name,
        items,
        cheap_model=cheap,
        strong_model=strong,
        seeds=list(seeds),
        calibration_share=calibration_share,
    )
    result["notes"].insert(
        0,
        f"{len(items)} items; {dropped} dropped as contaminated (RouteLLM's list)"
        if contaminated
        else f"{len(items)} items; not decontaminated (no --routellm-evals list for {name})",
    )
    return result


def curve(
    datasets: Annotated[
        list[Path], typer.Argument(help="Held-out sets, e.g. datasets/mt_bench.jsonl")
    ],
    cheap: Annotated[str, typer.Option(help="The cheap model.")] = "mixtral-8x7b-instruct",
    strong: Annotated[str, typer.Option(help="The strong model.")] = "gpt-4-1106-preview",
    seeds: Annotated[str, typer.Option(help="Split seeds, comma-separated.")] = "0,1,2,3,4",
    calibration_share: Annotated[
        float, typer.Option(help="Share of each class that estimates its gain.")
    ] = 0.5,
    routellm_evals: Annotated[
        Path | None,
        typer.Option(
            help="RouteLLM's routellm/evals folder: drop the prompts listed in its "
            "<benchmark>/contaminated_prompts.jsonl, as RouteLLM does."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """The cost-quality curve of class-level routing (APGR, CPT(50%), CPT(80%) on a monotone
    envelope; class gains from a calibration split, the curve on the disjoint rest, over
    several seeds), beside the random router, the oracle and RouteLLM's published routers."""
    results: list[dict[str, Any]] = []
    try:
        try:
            seed_list = [int(s) for s in seeds.split(",") if s.strip()]
        except ValueError as exc:
            raise InvalidInput(f"seeds: not integers: {seeds!r}", field="seeds") from exc
        for path in datasets:
            result = curve_of(
                path,
                cheap=cheap,
                strong=strong,
                seeds=seed_list,
                calibration_share=calibration_share,
                routellm_evals=routellm_evals,
            )
            results.append(result)
    except TierwiseError as exc:
        fail(exc)
    if as_json:
        typer.echo(json.dumps(results, indent=2))
        return
    wide_console.print(render_curves(results))
    for r in results:
        for note in r["notes"]:
            wide_console.print(escape(f"- {r['benchmark']}: {note}"), soft_wrap=True)
