"""The three renderers of one :class:`~evaluator.evaluation._report.EvalReport`: Markdown,
JSON and a self-contained HTML page whose charts are inline SVG drawn here (no script, no
stylesheet or font from the network).

``router_metrics[benchmark]`` (when present) has the shape ``{"benchmark", "cheap_model",
"strong_model", "seeds": [int], "calibration_share", "apgr": {"mean", "min", "max"}, "cpt_50":
{...}, "cpt_80": {...}, "random": {"apgr", "cpt_50", "cpt_80"}, "oracle": {...}, "points":
[{"strong_share", "quality"}], "routellm": [{"router", "apgr", "cpt_50", "cpt_80"}], "notes":
[str]}`` (shares and CPT fractions 0-1); CPT(x%) is the share of calls on the strong model
needed to reach x% of the quality gap between the cheap and the strong model (Ong et al.,
"RouteLLM", arXiv 2406.18665, section 5), so a published router's CPT(50%) is drawn at the
quality halfway between the curve's two ends.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from evaluator.evaluation._report import (
    BenchmarkView,
    EvalReport,
    Interval,
    ModelRow,
    Recommendation,
    usd_text,
)
from evaluator.evaluation._svg import (
    Bar,
    Series,
    Whisker,
    bar_chart,
    interval_chart,
    line_chart,
)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def _interval(iv: Interval | None) -> str:
    if iv is None or iv.rate is None:
        return "n/a"
    return f"{iv.k}/{iv.n} = {iv.rate:.1%} [{_pct(iv.low)}, {_pct(iv.high)}]"


def _score(row: ModelRow) -> str:
    if row.mean_score is None or row.score_low is None or row.score_high is None:
        return "n/a"
    return f"{row.mean_score:.2f} [{row.score_low:.2f}, {row.score_high:.2f}]"


def _md_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    def clean(cell: str) -> str:
        return cell.replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(clean(c) for c in row) + " |" for row in rows]
    return out


ROW_HEAD = (
    "class",
    "model",
    "items",
    "disagreement with reference [95% interval]",
    "invalid",
    "accuracy [95% interval]",
    "mean score [95% interval]",
    "tokens in/out",
    "cost",
    "grading cost",
)


def _row_cells(r: ModelRow) -> list[str]:
    est = " (est.)" if r.tokens_estimated else ""
    return [
        r.task_class,
        r.model + (" (reference)" if r.reference else ""),
        f"{r.answered}/{r.items}",
        _interval(r.disagreement),
        str(r.invalid),
        _interval(r.accuracy),
        _score(r),
        f"{r.input_tokens:,}/{r.output_tokens:,}{est}",
        usd_text(r.cost_nusd),
        usd_text(r.grading_cost_nusd),
    ]


REC_HEAD = ("class", "model", "evidence", "cost/item", "reference cost/item", "why")


def _rec_cells(r: Recommendation) -> list[str]:
    return [
        r.task_class,
        r.model,
        _interval(r.evidence),
        usd_text(r.cost_per_item_nusd),
        usd_text(r.reference_cost_per_item_nusd),
        r.reason,
    ]


def _summary(report: EvalReport) -> list[str]:
    run = report.run
    return [
        f"policy `{report.policy}`, reference model `{report.reference}`, models "
        + ", ".join(f"`{m}`" for m in report.models)
        + f"; answers {run.mode}.",
        f"This run: {run.answered} answers and {run.graded} grades made ({run.live_calls} "
        f"provider calls), {run.resumed_answers} answers and {run.resumed_grades} grades taken "
        f"from the results log, {run.failures} failures, {run.seconds:.1f} s.",
    ]


def _rm_value(block: Mapping[str, Any] | None, key: str = "mean") -> str:
    if not block:
        return "n/a"
    value = block.get(key)
    return "n/a" if value is None else f"{float(value):.3f}"


def _rm_span(block: Mapping[str, Any] | None) -> str:
    if not block:
        return "n/a"
    return f"{_rm_value(block)} [{_rm_value(block, 'min')}, {_rm_value(block, 'max')}]"


def _rm_rows(rm: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for metric in ("apgr", "cpt_50", "cpt_80"):
        rows.append(
            [
                metric,
                _rm_span(rm.get(metric)),
                _rm_value(rm.get("random"), metric),
                _rm_value(rm.get("oracle"), metric),
            ]
        )
    return rows


def _routellm_rows(rm: Mapping[str, Any]) -> list[list[str]]:
    def f(v: Any) -> str:
        return "n/a" if v is None else f"{float(v):.3f}"

    return [
        [str(r.get("router", "?")), f(r.get("apgr")), f(r.get("cpt_50")), f(r.get("cpt_80"))]
        for r in rm.get("routellm", [])
    ]


def _rm_head(rm: Mapping[str, Any]) -> str:
    seeds = ", ".join(str(s) for s in rm.get("seeds", []))
    share = rm.get("calibration_share")
    share_text = "n/a" if share is None else f"{float(share):.0%}"
    return (
        f"cheap `{rm.get('cheap_model')}`, strong `{rm.get('strong_model')}`; seeds {seeds}; "
        f"calibration share {share_text}"
    )


def render_markdown(report: EvalReport) -> str:
    """``report.md``: the summary, each benchmark's per-class table, the recommended routing
    table, the router metrics when present, refused files, bad lines and failures."""
    out = [f"# {report.title}", "", *_summary(report), ""]
    out += _md_table(
        ("data set", "file", "items", "classes"),
        [[d["name"], d["file"], str(d["items"]), str(d["classes"])] for d in report.datasets],
    )
    if report.refused:
        out += ["", "Refused (not held-out sets):", *[f"- {r}" for r in report.refused]]
    if report.line_errors:
        out += ["", f"Bad lines ({len(report.line_errors)}, skipped; the rest was graded):"]
        out += [f"- {e}" for e in report.line_errors]
    for bench in report.benchmarks:
        rows = [r for r in report.rows if r.benchmark == bench.name]
        out += ["", f"## {bench.name}", ""]
        for model, pt in bench.models.items():
            out.append(
                f"- `{model}` everywhere: {bench.measure} {pt.quality:.3f}, "
                f"serving {usd_text(pt.cost_nusd)}"
            )
        if bench.recommended is not None:
            pt = bench.recommended
            out.append(
                f"- recommended table: {bench.measure} {pt.quality:.3f}, serving "
                f"{usd_text(pt.cost_nusd)}, {pt.strong_share:.1%} of items on the reference"
            )
        out += ["", *_md_table(ROW_HEAD, [_row_cells(r) for r in rows])]
        rm = report.router_metrics.get(bench.name)
        if rm:
            out += ["", f"### Router metrics ({_rm_head(rm)})", ""]
            out += _md_table(
                ("metric", "tierwise mean [min, max]", "random", "oracle"), _rm_rows(rm)
            )
            if rm.get("routellm"):
                out += ["", "RouteLLM (arXiv 2406.18665), published:", ""]
                out += _md_table(("router", "APGR", "CPT(50%)", "CPT(80%)"), _routellm_rows(rm))
            out += [f"- {n}" for n in rm.get("notes", [])]
    out += ["", "## Recommended routing table", ""]
    out += _md_table(REC_HEAD, [_rec_cells(r) for r in report.recommended])
    if report.policy_file:
        out += ["", f"Written as a policy: `{report.policy_file}` (`tierwise policy apply` it)."]
    if report.notes:
        out += ["", "## Notes", "", *[f"- {n}" for n in report.notes]]
    if report.failures:
        out += ["", f"## Failures ({report.run.failures}; retried by the next run)", ""]
        out += [f"- {f.item} {f.model} {f.stage}: {f.message}" for f in report.failures[:50]]
    return "\n".join(out) + "\n"


def render_json(report: EvalReport) -> str:
    """``report.json``: the data object itself (pydantic's JSON, indented)."""
    return report.model_dump_json(indent=2) + "\n"


# ---- HTML --------------------------------------------------------------------------------------

CSS = """
body{font-family:sans-serif;margin:24px;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:12px}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f3f3f3}.pair{display:flex;gap:24px;flex-wrap:wrap;align-items:flex-start}
code{background:#f5f5f5;padding:0 3px}
"""


def _html_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    h = "".join(f"<th>{escape(c)}</th>" for c in head)
    b = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{b}</tbody></table>"


def _rates_chart(bench: BenchmarkView, rows: Sequence[ModelRow], report: EvalReport) -> str:
    models = report.models
    groups = []
    top = 0.0
    for task in sorted({r.task_class for r in rows}):
        ws = []
        for r in rows:
            d = r.disagreement
            if r.task_class != task or d.rate is None or d.low is None or d.high is None:
                continue
            top = max(top, d.high)
            ws.append(
                Whisker(models.index(r.model), d.rate, d.low, d.high, f"{r.model}: {_interval(d)}")
            )
        groups.append((task, ws))
    thresholds = sorted({r.threshold for r in report.recommended if r.benchmark == bench.name})
    marks = [(t, f"threshold {t:.0%}") for t in thresholds[:1]] if len(thresholds) == 1 else []
    x_max = min(1.0, max(top, *(t for t, _ in marks), 0.05) * 1.05)
    return interval_chart(
        groups,
        title=f"{bench.name}: disagreement with {report.reference} per class",
        x_max=x_max,
        marks=marks,
        legend=models,
    )


def _accuracy_chart(bench: BenchmarkView, rows: Sequence[ModelRow], report: EvalReport) -> str:
    groups = []
    for task in sorted({r.task_class for r in rows}):
        ws = []
        for r in rows:
            a = r.accuracy
            if r.task_class != task or a is None or a.rate is None or a.low is None:
                continue
            ws.append(
                Whisker(
                    report.models.index(r.model),
                    a.rate,
                    a.low,
                    a.high or a.rate,
                    f"{r.model}: {_interval(a)}",
                )
            )
        groups.append((task, ws))
    return interval_chart(
        groups, title=f"{bench.name}: accuracy per class", x_max=1.0, legend=report.models
    )


def _cost_chart(bench: BenchmarkView, rows: Sequence[ModelRow], report: EvalReport) -> str:
    groups = []
    for task in sorted({r.task_class for r in rows}):
        bars = []
        for r in rows:
            per = r.cost_per_item
            if r.task_class == task and per is not None:
                value = float(per) / 1e9
                bars.append(Bar(report.models.index(r.model), value, f"{r.model}: ${value:.6f}"))
        groups.append((task, bars))
    return bar_chart(
        groups,
        title=f"{bench.name}: serving cost per item (USD)",
        unit="${:.6f}",
        legend=report.models,
    )


def _curve_chart(bench: BenchmarkView, report: EvalReport) -> str:
    # Each model keeps its colour of the other charts; the sweep and the table come after.
    n = len(report.models)
    series = [
        Series(
            "threshold sweep",
            [(p.strong_share, p.quality) for p in bench.curve],
            n,
            labels=[f"{p.label}: {p.quality:.3f}, {usd_text(p.cost_nusd)}" for p in bench.curve],
        )
    ]
    for model, pt in bench.models.items():
        series.append(
            Series(
                model,
                [(pt.strong_share, pt.quality)],
                report.models.index(model),
                line=False,
                labels=[f"{model}: {pt.quality:.3f}"],
            )
        )
    if bench.recommended is not None:
        pt = bench.recommended
        series.append(
            Series(
                "recommended table",
                [(pt.strong_share, pt.quality)],
                n + 1,
                line=False,
                marker="diamond",
                labels=[f"recommended: {pt.quality:.3f}, {usd_text(pt.cost_nusd)}"],
            )
        )
    return line_chart(
        series,
        title=f"{bench.name}: cost-quality (in-sample)",
        x_label=f"share of items on {report.reference}",
        y_label=bench.measure,
    )


def _rm_chart(name: str, rm: Mapping[str, Any]) -> str:
    points = sorted((float(p["strong_share"]), float(p["quality"])) for p in rm.get("points", []))
    series = [Series("tierwise class-level", points, 0)]
    if len(points) >= 2:
        (s0, q0), (s1, q1) = points[0], points[-1]
        series.append(Series("random router", [(s0, q0), (s1, q1)], 1, dashed=True))
        gap = q1 - q0
        for i, r in enumerate(rm.get("routellm", [])):
            marks, labels = [], []
            for key, frac in (("cpt_50", 0.5), ("cpt_80", 0.8)):
                v = r.get(key)
                if v is not None:
                    marks.append((float(v), q0 + frac * gap))
                    labels.append(f"RouteLLM {r.get('router')}: {key} {float(v):.1%}")
            if marks:
                series.append(
                    Series(
                        f"RouteLLM {r.get('router')}",
                        marks,
                        2 + i,
                        line=False,
                        marker="diamond",
                        labels=labels,
                    )
                )
    return line_chart(
        series,
        title=f"{name}: router metrics",
        x_label=f"share of calls on {rm.get('strong_model')}",
        y_label="quality",
    )


def render_html(report: EvalReport) -> str:
    """``report.html``: one file, no external resource: the Markdown's content as tables, and
    per benchmark the disagreement (and accuracy) per class with interval bars, the serving
    cost per class, the cost-quality curve and, when present, the router metrics curve with
    RouteLLM's published points beside their table."""
    parts = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(report.title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{escape(report.title)}</h1>",
        *[f"<p>{escape(line)}</p>" for line in _summary(report)],
        _html_table(
            ("data set", "file", "items", "classes"),
            [[d["name"], d["file"], str(d["items"]), str(d["classes"])] for d in report.datasets],
        ),
    ]
    if report.refused:
        parts.append("<p>Refused (not held-out sets):</p><ul>")
        parts += [f"<li>{escape(r)}</li>" for r in report.refused]
        parts.append("</ul>")
    if report.line_errors:
        parts.append(f"<p>Bad lines ({len(report.line_errors)}, skipped):</p><ul>")
        parts += [f"<li>{escape(e)}</li>" for e in report.line_errors[:100]]
        parts.append("</ul>")
    parts.append("<h2>Recommended routing table</h2>")
    parts.append(_html_table(REC_HEAD, [_rec_cells(r) for r in report.recommended]))
    if report.policy_file:
        parts.append(f"<p>Written as a policy: <code>{escape(report.policy_file)}</code></p>")
    for bench in report.benchmarks:
        rows = [r for r in report.rows if r.benchmark == bench.name]
        parts.append(f"<h2>{escape(bench.name)}</h2>")
        parts.append(f'<div class="pair">{_curve_chart(bench, report)}</div>')
        parts.append(_rates_chart(bench, rows, report))
        if any(r.accuracy is not None for r in rows):
            parts.append(_accuracy_chart(bench, rows, report))
        parts.append(_cost_chart(bench, rows, report))
        parts.append(_html_table(ROW_HEAD, [_row_cells(r) for r in rows]))
        rm = report.router_metrics.get(bench.name)
        if rm:
            parts.append(f"<h3>Router metrics</h3><p>{escape(_rm_head(rm))}</p>")
            tables = _html_table(
                ("metric", "tierwise mean [min, max]", "random", "oracle"), _rm_rows(rm)
            )
            if rm.get("routellm"):
                tables += "<p>RouteLLM (arXiv 2406.18665), published:</p>" + _html_table(
                    ("router", "APGR", "CPT(50%)", "CPT(80%)"), _routellm_rows(rm)
                )
            parts.append(f'<div class="pair">{_rm_chart(bench.name, rm)}<div>{tables}</div></div>')
            if rm.get("notes"):
                parts.append(
                    "<ul>" + "".join(f"<li>{escape(str(n))}</li>" for n in rm["notes"]) + "</ul>"
                )
    if report.notes:
        parts.append("<h2>Notes</h2><ul>")
        parts += [f"<li>{escape(n)}</li>" for n in report.notes]
        parts.append("</ul>")
    if report.failures:
        parts.append(f"<h2>Failures ({report.run.failures})</h2><ul>")
        parts += [
            f"<li>{escape(f'{f.item} {f.model} {f.stage}: {f.message}')}</li>"
            for f in report.failures[:50]
        ]
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
