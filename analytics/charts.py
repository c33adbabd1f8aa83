"""Chart geometry for the admin dashboard: rectangles, lines and texts that one template
(admin/analytics/chart.html) draws as inline SVG: no JavaScript, nothing loaded from elsewhere. Values may be int
or Decimal; coordinates are pixels of the chart's viewBox."""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

Number = int | Decimal


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    title: str  # the tooltip: "label: value"


@dataclass(frozen=True)
class Text:
    x: float
    y: float
    text: str
    anchor: str = "middle"  # SVG text-anchor: start, middle, end
    vertical: bool = False  # read bottom to top, turned about (x, y)


@dataclass(frozen=True)
class Line:
    x1: float
    y1: float
    x2: float
    y2: float


@dataclass
class Chart:
    width: int
    height: int
    bars: list[Bar] = field(default_factory=list)
    texts: list[Text] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)
    empty: bool = True


def column_chart(points: list[tuple[str, Number]], *, width: int = 720, height: int = 270, format_value=str,
                 max_labels: int = 8) -> Chart:
    """Vertical bars, one per point, left to right (e.g. one per day), over a value axis with 5 grid lines. The
    labels under the bars read upwards, each as wide as a line of text: written across, a label is wider than
    its bar and would sit under its neighbours too."""
    left, right, top, bottom = 70.0, 8.0, 10.0, 72.0
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = nice_ceiling(max((value for _, value in points), default=0))
    chart = Chart(width=width, height=height, empty=not any(value for _, value in points))
    for step in range(5):
        y = top + plot_h - plot_h * step / 4
        chart.lines.append(Line(left, y, width - right, y))
        chart.texts.append(Text(left - 6, y + 4, format_value(peak * step / 4), anchor="end"))
    slot = plot_w / max(len(points), 1)
    every = max(1, -(-len(points) // max_labels))
    for index, (label, value) in enumerate(points):
        bar_h = float(value) / float(peak) * plot_h if peak else 0.0
        x = left + index * slot
        chart.bars.append(Bar(x + slot * 0.1, top + plot_h - bar_h, slot * 0.8, bar_h,
                              f"{label}: {format_value(value)}"))
        if index % every == 0:
            chart.texts.append(Text(x + slot / 2 + 4, top + plot_h + 6, label, anchor="end", vertical=True))
    return chart


def row_chart(points: list[tuple[str, Number]], *, width: int = 720, row_height: int = 26,
              format_value=str, limit: Number | None = None) -> Chart:
    """Horizontal bars, one row per point, top to bottom (e.g. one per model): label left, value right. Bars are
    scaled to the largest value, or, given a `limit` (e.g. 100 for percents of a limit), to at least that, which
    a vertical line marks: so a small value draws a short bar even when it is the largest."""
    left, right = 230.0, 130.0
    plot_w = width - left - right
    peak = max([value for _, value in points] + ([limit] if limit else []), default=0)
    chart = Chart(width=width, height=max(len(points), 1) * row_height, empty=not points)
    if limit and points:
        x = left + float(limit) / float(peak) * plot_w
        chart.lines.append(Line(x, 0, x, chart.height))
    for index, (label, value) in enumerate(points):
        bar_w = float(value) / float(peak) * plot_w if peak else 0.0
        y = index * row_height
        chart.bars.append(Bar(left, y + 4, bar_w, row_height - 8, f"{label}: {format_value(value)}"))
        chart.texts.append(Text(left - 8, y + row_height / 2 + 4, _shorten(label, 34), anchor="end"))
        chart.texts.append(Text(left + bar_w + 6, y + row_height / 2 + 4, format_value(value), anchor="start"))
    return chart


def nice_ceiling(value: Number) -> Number:
    """The top of a value axis: the smallest 1, 2, 2.5 or 5 × 10^k not below `value` (0 for nothing)."""
    if value <= 0:
        return 0
    value = Decimal(value)
    magnitude = Decimal(1)
    while magnitude * 10 <= value:
        magnitude *= 10
    while magnitude > value:
        magnitude /= 10
    return next(magnitude * step for step in (1, 2, Decimal("2.5"), 5, 10) if magnitude * step >= value)


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
