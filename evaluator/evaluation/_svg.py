"""Charts drawn on the server as inline SVG (no script, no network): interval bars, bar charts
and line charts, each a function of plain numbers returning one ``<svg>`` element as text."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")
"""Series colours, in order (matplotlib's tab10, colour-blind-safe enough for two series)."""

FONT = 'font-family="sans-serif" font-size="11"'


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _num(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".")


def _legend(names: Sequence[str], x: float, y: float) -> str:
    """Coloured squares with the series names, left to right from (x, y)."""
    out = []
    for i, name in enumerate(names):
        out.append(
            f'<rect x="{x:.1f}" y="{y - 8:.1f}" width="10" height="10" fill="{colour(i)}"/>'
            f'<text x="{x + 14:.1f}" y="{y + 1:.1f}">{escape(name)}</text>'
        )
        x += 24 + 6.5 * len(name)
    return "".join(out)


@dataclass(frozen=True)
class Whisker:
    """One estimate with its interval on a row: ``series`` picks the colour."""

    series: int
    value: float
    low: float
    high: float
    label: str


def interval_chart(
    rows: Sequence[tuple[str, Sequence[Whisker]]],
    *,
    title: str,
    x_max: float,
    marks: Sequence[tuple[float, str]] = (),
    legend: Sequence[str] = (),
    percent: bool = True,
    width: int = 720,
) -> str:
    """One row per category, each series' estimate as a dot with its interval as a bar;
    ``marks`` are vertical reference lines (e.g. the threshold); ``legend`` names the series
    in colour order."""
    left, right, top, row_h = 230, 20, 44, 18
    height = top + row_h * max(len(rows), 1) + 40
    plot_w = width - left - right
    x_max = x_max if x_max > 0 else 1.0

    def x(v: float) -> float:
        return left + plot_w * min(max(v, 0.0), x_max) / x_max

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" {FONT}>',
        f"<title>{escape(title)}</title>",
        f'<text x="{left}" y="16" font-weight="bold">{escape(title)}</text>',
        _legend(legend, left, 30),
    ]
    bottom = top + row_h * len(rows)
    for i in range(5):
        v = x_max * i / 4
        label = f"{v:.0%}" if percent else _num(v)
        out.append(
            f'<line x1="{x(v):.1f}" y1="{top}" x2="{x(v):.1f}" y2="{bottom}" stroke="#ddd"/>'
            f'<text x="{x(v):.1f}" y="{bottom + 14}" text-anchor="middle">{label}</text>'
        )
    for v, label in marks:
        out.append(
            f'<line x1="{x(v):.1f}" y1="{top - 4}" x2="{x(v):.1f}" y2="{bottom}" '
            f'stroke="#555" stroke-dasharray="4 3"/>'
            f'<text x="{x(v):.1f}" y="{top - 6}" text-anchor="middle">{escape(label)}</text>'
        )
    for r, (name, whiskers) in enumerate(rows):
        y0 = top + r * row_h
        out.append(
            f'<text x="{left - 6}" y="{y0 + row_h / 2 + 4:.1f}" text-anchor="end">'
            f"{escape(name)}</text>"
        )
        n = max(len(whiskers), 1)
        for j, w in enumerate(whiskers):
            y = y0 + (j + 1) * row_h / (n + 1)
            c = colour(w.series)
            out.append(
                f"<g><title>{escape(w.label)}</title>"
                f'<line class="bar" x1="{x(w.low):.1f}" y1="{y:.1f}" x2="{x(w.high):.1f}" '
                f'y2="{y:.1f}" stroke="{c}" stroke-width="2"/>'
                f'<circle cx="{x(w.value):.1f}" cy="{y:.1f}" r="3" fill="{c}"/></g>'
            )
    out.append("</svg>")
    return "".join(out)


@dataclass(frozen=True)
class Bar:
    series: int
    value: float
    label: str


def bar_chart(
    rows: Sequence[tuple[str, Sequence[Bar]]],
    *,
    title: str,
    unit: str,
    legend: Sequence[str] = (),
    width: int = 720,
) -> str:
    """Horizontal grouped bars, one group per category, each bar labelled with its value;
    ``legend`` names the series in colour order."""
    left, right, top, bar_h = 230, 90, 40, 9
    groups = [(name, bars) for name, bars in rows]
    per = max((len(b) for _, b in groups), default=1)
    row_h = bar_h * per + 6
    height = top + row_h * max(len(groups), 1) + 20
    plot_w = width - left - right
    top_value = max((b.value for _, bars in groups for b in bars), default=0.0) or 1.0
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" {FONT}>',
        f"<title>{escape(title)}</title>",
        f'<text x="{left}" y="16" font-weight="bold">{escape(title)}</text>',
        _legend(legend, left, 30),
    ]
    for r, (name, bars) in enumerate(groups):
        y0 = top + r * row_h
        out.append(
            f'<text x="{left - 6}" y="{y0 + row_h / 2 + 3:.1f}" text-anchor="end">'
            f"{escape(name)}</text>"
        )
        for j, b in enumerate(bars):
            w = plot_w * max(b.value, 0.0) / top_value
            y = y0 + j * bar_h
            out.append(
                f"<g><title>{escape(b.label)}</title>"
                f'<rect class="bar" x="{left}" y="{y:.1f}" width="{max(w, 0.5):.1f}" '
                f'height="{bar_h - 1}" fill="{colour(b.series)}"/>'
                f'<text x="{left + w + 4:.1f}" y="{y + bar_h - 1:.1f}">'
                f"{escape(unit.format(b.value))}</text></g>"
            )
    out.append("</svg>")
    return "".join(out)


@dataclass(frozen=True)
class Series:
    """A line (``points`` joined in order) or, with ``line`` False, markers only."""

    name: str
    points: Sequence[tuple[float, float]]
    series: int
    line: bool = True
    dashed: bool = False
    marker: str = "circle"
    labels: Sequence[str] = field(default_factory=tuple)


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    x_label: str,
    y_label: str,
    x_range: tuple[float, float] = (0.0, 1.0),
    y_range: tuple[float, float] | None = None,
    percent_x: bool = True,
    width: int = 520,
    height: int = 340,
) -> str:
    """An x-y chart with axes, grid, a legend and one polyline or marker set per series."""
    left, right, top, bottom = 56, 150, 28, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    ys = [p[1] for s in series for p in s.points]
    if y_range is None:
        lo, hi = (min(ys), max(ys)) if ys else (0.0, 1.0)
        pad = (hi - lo) * 0.08 or 0.05
        y_range = (lo - pad, hi + pad)
    (x0, x1), (y0, y1) = x_range, y_range

    def px(v: float) -> float:
        return left + plot_w * (v - x0) / ((x1 - x0) or 1.0)

    def py(v: float) -> float:
        return top + plot_h * (1 - (v - y0) / ((y1 - y0) or 1.0))

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" {FONT}>',
        f"<title>{escape(title)}</title>",
        f'<text x="{left}" y="16" font-weight="bold">{escape(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" '
        'stroke="#999"/>',
    ]
    for i in range(5):
        xv = x0 + (x1 - x0) * i / 4
        yv = y0 + (y1 - y0) * i / 4
        xl = f"{xv:.0%}" if percent_x else _num(xv)
        out.append(
            f'<line x1="{px(xv):.1f}" y1="{top}" x2="{px(xv):.1f}" y2="{top + plot_h}" '
            f'stroke="#eee"/><text x="{px(xv):.1f}" y="{top + plot_h + 14}" '
            f'text-anchor="middle">{xl}</text>'
            f'<line x1="{left}" y1="{py(yv):.1f}" x2="{left + plot_w}" y2="{py(yv):.1f}" '
            f'stroke="#eee"/><text x="{left - 4}" y="{py(yv) + 4:.1f}" text-anchor="end">'
            f"{_num(yv)}</text>"
        )
    out.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 8}" text-anchor="middle">'
        f"{escape(x_label)}</text>"
        f'<text x="12" y="{top + plot_h / 2:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 12 {top + plot_h / 2:.1f})">{escape(y_label)}</text>'
    )
    for k, s in enumerate(series):
        c = colour(s.series)
        pts = [(px(a), py(b)) for a, b in s.points]
        if s.line and len(pts) > 1:
            path = " ".join(f"{a:.1f},{b:.1f}" for a, b in pts)
            dash = ' stroke-dasharray="5 4"' if s.dashed else ""
            out.append(
                f'<polyline class="series" points="{path}" fill="none" stroke="{c}" '
                f'stroke-width="2"{dash}/>'
            )
        for i, (a, b) in enumerate(pts):
            tip = s.labels[i] if i < len(s.labels) else s.name
            if s.marker == "diamond":
                shape = (
                    f'<polygon points="{a:.1f},{b - 5:.1f} {a + 5:.1f},{b:.1f} {a:.1f},'
                    f'{b + 5:.1f} {a - 5:.1f},{b:.1f}" fill="{c}"/>'
                )
            else:
                shape = f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{c}"/>'
            out.append(f"<g><title>{escape(tip)}</title>{shape}</g>")
        ly = top + 12 + k * 16
        out.append(
            f'<rect x="{left + plot_w + 10}" y="{ly - 8}" width="10" height="10" fill="{c}"/>'
            f'<text x="{left + plot_w + 24}" y="{ly + 1}">{escape(s.name)}</text>'
        )
    out.append("</svg>")
    return "".join(out)
