"""Small SVG charts for the dashboard, rendered on the server.

No chart library and no JavaScript: the page must work with nothing fetched
from outside the team's network (and under a Content-Security-Policy that
allows no scripts). Three shapes cover the reports: bars over time (requests),
lines over time (latency p50/p95), and horizontal bars per name (acceptance
and retention rates per developer). Colours come from classes styled by
dashboard.css; every mark has a <title> (a tooltip, and text for screen
readers). Labels are escaped: token names are chosen by people.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from html import escape

from markupsafe import Markup

WIDTH = 640
HEIGHT = 180
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 12, 28


def _nice_max(value: float) -> float:
    """A round axis maximum >= value (1, 2, 2.5, 5 x 10^k)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power


def _number(value: float) -> str:
    if value >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


def time_label(start: float, step_s: int) -> str:
    """A slot's start as the axis shows it: time of day for short steps, else the date."""
    moment = time.gmtime(start)
    return time.strftime("%H:%M" if step_s < 86400 else "%m-%d", moment)


def _frame(title: str, top: float, ticks: int, fmt: Callable[[float], str]) -> list[str]:
    inner_h = HEIGHT - TOP - BOTTOM
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
        f'role="img" aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    for index in range(ticks + 1):
        value = top * index / ticks
        y = TOP + inner_h - inner_h * index / ticks
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
        )
        parts.append(
            f'<text class="axis" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(fmt(value))}</text>"
        )
    return parts


def _x_labels(labels: Sequence[str], x_of: Callable[[int], float]) -> list[str]:
    parts = []
    every = max(1, math.ceil(len(labels) / 8))
    for index, label in enumerate(labels):
        if index % every == 0:
            parts.append(
                f'<text class="axis" x="{x_of(index):.1f}" y="{HEIGHT - 8}" '
                f'text-anchor="middle">{escape(label)}</text>'
            )
    return parts


def bars(title: str, labels: Sequence[str], values: Sequence[float], unit: str = "") -> Markup:
    """Vertical bars, one per time slot."""
    top = _nice_max(max(values, default=0))
    inner_w, inner_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = inner_w / max(1, len(values))
    parts = _frame(title, top, 4, _number)
    for index, value in enumerate(values):
        h = inner_h * value / top
        x = LEFT + index * slot + slot * 0.15
        parts.append(
            f'<rect class="bar" x="{x:.1f}" y="{TOP + inner_h - h:.1f}" '
            f'width="{slot * 0.7:.1f}" height="{h:.1f}">'
            f"<title>{escape(labels[index])}: {_number(value)}{escape(unit)}</title></rect>"
        )
    parts += _x_labels(labels, lambda i: LEFT + (i + 0.5) * slot)
    parts.append("</svg>")
    return Markup("".join(parts))


def lines(
    title: str,
    labels: Sequence[str],
    series: dict[str, Sequence[float | None]],
    unit: str = "",
) -> Markup:
    """One line per series over time slots; gaps where a slot has no value."""
    found = [v for values in series.values() for v in values if v is not None]
    top = _nice_max(max(found, default=0))
    inner_w, inner_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    count = max(1, len(labels))
    slot = inner_w / count

    def x_of(index: int) -> float:
        return LEFT + (index + 0.5) * slot

    parts = _frame(title, top, 4, _number)
    for number, (name, values) in enumerate(series.items()):
        segments: list[list[str]] = [[]]
        for index, value in enumerate(values):
            if value is None:
                segments.append([])
                continue
            y = TOP + inner_h - inner_h * value / top
            segments[-1].append(f"{x_of(index):.1f},{y:.1f}")
            parts.append(
                f'<circle class="dot s{number}" cx="{x_of(index):.1f}" cy="{y:.1f}" r="2.5">'
                f"<title>{escape(name)} {escape(labels[index])}: {value:g}{escape(unit)}</title>"
                "</circle>"
            )
        for points in segments:
            if len(points) > 1:
                parts.append(f'<polyline class="line s{number}" points="{" ".join(points)}"/>')
        parts.append(
            f'<text class="legend s{number}" x="{LEFT + 8 + 90 * number}" y="{TOP + 10}">'
            f"{escape(name)}</text>"
        )
    parts += _x_labels(labels, x_of)
    parts.append("</svg>")
    return Markup("".join(parts))


def hbars(
    title: str,
    rows: Sequence[tuple[str, float | None]],
    fmt: Callable[[float], str],
    top: float | None = None,
) -> Markup:
    """Horizontal bars, one per name (e.g. a rate per developer); None: no data."""
    row_h, label_w = 22, 150
    height = TOP + row_h * max(1, len(rows)) + 8
    scale = top if top is not None else _nice_max(max((v or 0 for _, v in rows), default=0))
    inner_w = WIDTH - label_w - RIGHT - 60
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" '
        f'role="img" aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    for index, (name, value) in enumerate(rows):
        y = TOP + index * row_h
        parts.append(
            f'<text class="axis" x="{label_w - 6}" y="{y + 14}" text-anchor="end">'
            f"{escape(name[:24])}</text>"
        )
        if value is None:
            parts.append(f'<text class="axis" x="{label_w + 4}" y="{y + 14}">no data</text>')
            continue
        w = inner_w * min(value, scale) / scale if scale else 0
        parts.append(
            f'<rect class="bar" x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row_h - 8}">'
            f"<title>{escape(name)}: {escape(fmt(value))}</title></rect>"
        )
        parts.append(
            f'<text class="value" x="{label_w + w + 6:.1f}" y="{y + 14}">{escape(fmt(value))}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))
