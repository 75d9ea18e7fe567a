"""Presentation for the admin pages: templates, flash messages, and server-side SVG plots (no JavaScript)."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from markupsafe import Markup, escape

from app.admin.service import EfficiencyPoint
from app.predictors.card import format_number

LEGACY_FLASH_COOKIE = "exprssl_flash"
COOKIE_PATH = "/admin"
PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777")


def _datetime(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def _pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
templates.env.filters.update(dt=_datetime, num=format_number, pretty=_pretty_json)


@dataclass(frozen=True)
class Flash:
    """The outcome of the last form action, shown once on the next page."""

    kind: str  # ok | error
    text: str

    @classmethod
    def of(cls, stored: dict[str, Any] | None) -> Flash | None:
        """The message kept in an admin session (see ``orm.AdminSession.flash``), if any."""
        if not stored:
            return None
        return cls(kind="error" if stored.get("kind") == "error" else "ok", text=str(stored.get("text", "")))


def render(request: Request, name: str, context: dict[str, Any], *, status_code: int = 200) -> HTMLResponse:
    """Render a page, showing the flash message its session had (taken by ``access.page_caller``)."""
    flash = getattr(request.state, "flash", None)
    response = templates.TemplateResponse(request, name, {**context, "flash": flash}, status_code=status_code)
    if LEGACY_FLASH_COOKIE in request.cookies:  # set by earlier versions, which kept the message in a cookie
        response.delete_cookie(LEGACY_FLASH_COOKIE, path=COOKIE_PATH)
    return response


def _finite(values: Iterable[Any]) -> list[float]:
    numbers = [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    return [v for v in numbers if math.isfinite(v)]


def loss_curve_svg(losses: Sequence[Any], *, width: int = 640, height: int = 240) -> Markup | None:
    """Mean training loss per epoch as an inline SVG polyline; None when there is no curve."""
    values = _finite(losses)
    if not values:
        return None
    left, right, top, bottom = 64, 16, 14, 36
    plot_w, plot_h = width - left - right, height - top - bottom
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    step = plot_w / max(1, len(values) - 1)
    points = " ".join(
        f"{left + i * step:.1f},{top + (hi - v) / span * plot_h:.1f}" for i, v in enumerate(values)
    )
    base_y = top + plot_h
    parts = [
        f'<svg id="loss-curve" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="training loss over {len(values)} epochs">',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{base_y}" class="axis"/>',
        f'<line x1="{left}" y1="{base_y}" x2="{width - right}" y2="{base_y}" class="axis"/>',
        f'<text x="{left - 6}" y="{top + 4}" text-anchor="end">{hi:.4g}</text>',
        f'<text x="{left - 6}" y="{base_y}" text-anchor="end">{lo:.4g}</text>',
        f'<text x="{left}" y="{height - 8}">epoch 1</text>',
        f'<text x="{width - right}" y="{height - 8}" text-anchor="end">epoch {len(values)}</text>',
        f'<text x="{left + plot_w / 2:.0f}" y="{height - 8}" text-anchor="middle">training loss</text>',
        f'<polyline fill="none" stroke="{PALETTE[0]}" stroke-width="1.5" points="{points}"/>',
        "</svg>",
    ]
    return Markup("".join(parts))


def _log_axis(fractions: Sequence[float]) -> tuple[float, float]:
    lo, hi = math.log10(min(fractions)), math.log10(max(fractions))
    if hi - lo < 0.3:
        lo, hi = lo - 0.15, hi + 0.15
    return lo, hi


def _series_svg(points: Sequence[EfficiencyPoint], colour: str, x: Any, y: Any) -> list[str]:
    """A series: a line through its mean per fraction, a dot per predictor, a ring round the current one."""
    by_fraction: dict[float, list[float]] = defaultdict(list)
    for point in points:
        by_fraction[point.fraction].append(point.balanced_accuracy)
    means = [(f, sum(v) / len(v)) for f, v in sorted(by_fraction.items())]
    line = " ".join(f"{x(f):.1f},{y(m):.1f}" for f, m in means)
    parts = [f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{line}"/>']
    for point in points:
        cx, cy = x(point.fraction), y(point.balanced_accuracy)
        parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="3.5" fill="{colour}"/>')
        if point.current:
            parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="7" fill="none" stroke="#111" stroke-width="1.5"/>')
    return parts


def label_efficiency_svg(points: Sequence[EfficiencyPoint], *, title: str, width: int = 760, height: int = 380) -> str:
    """Balanced accuracy against label fraction (log scale), one coloured series per (head, encoder method)."""
    left, right, top, bottom = 56, 230, 34, 48
    plot_w, plot_h = width - left - right, height - top - bottom
    header = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'font-family="sans-serif" font-size="12">'
        f'<rect width="{width}" height="{height}" fill="#fff"/>'
        f'<text x="{left}" y="20" font-size="14" font-weight="bold">{escape(title)}</text>'
    )
    if not points:
        note = f'<text x="{left}" y="{top + 40}">No ready predictor with a balanced accuracy yet.</text>'
        return header + note + "</svg>"
    fractions = sorted({p.fraction for p in points})
    lo, hi = _log_axis(fractions)

    def x(fraction: float) -> float:
        return left + (math.log10(fraction) - lo) / (hi - lo) * plot_w

    def y(score: float) -> float:
        return top + (1.0 - min(max(score, 0.0), 1.0)) * plot_h

    parts = [header]
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        parts.append(f'<line x1="{left}" y1="{y(tick):.1f}" x2="{left + plot_w}" y2="{y(tick):.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick:g}</text>')
    for fraction in fractions:
        parts.append(f'<text x="{x(fraction):.1f}" y="{top + plot_h + 16}" text-anchor="middle">{fraction:g}</text>')
    parts.append(f'<text x="{left + plot_w / 2:.0f}" y="{height - 10}" text-anchor="middle">label fraction</text>')
    parts.append(f'<text x="14" y="{top + plot_h / 2:.0f}" transform="rotate(-90 14 {top + plot_h / 2:.0f})" '
                 'text-anchor="middle">balanced accuracy (test)</text>')
    names = sorted({p.series for p in points})
    for index, name in enumerate(names):
        colour = PALETTE[index % len(PALETTE)]
        parts.extend(_series_svg([p for p in points if p.series == name], colour, x, y))
        legend_y = top + 10 + index * 18
        parts.append(f'<rect x="{width - right + 16}" y="{legend_y - 9}" width="12" height="12" fill="{colour}"/>')
        parts.append(f'<text x="{width - right + 34}" y="{legend_y + 1}">{escape(name)}</text>')
    parts.append(f'<text x="{width - right + 16}" y="{height - 10}" fill="#555">ringed: this predictor</text>')
    return "".join(parts) + "</svg>"


@dataclass(frozen=True)
class ConfusionCell:
    count: int
    share: float  # of the true class's test samples (the row), for shading


@dataclass(frozen=True)
class ConfusionMatrix:
    """Rows are true classes, columns predicted ones, both in the predictor's class order."""

    classes: list[str]
    rows: list[list[ConfusionCell]]


def confusion_matrix(classes: Sequence[Any], matrix: Any) -> ConfusionMatrix | None:
    """The stored confusion matrix with its class names; None if it is missing or does not match the classes."""
    names = [str(c) for c in classes]
    if not isinstance(matrix, list) or len(matrix) != len(names) or not names:
        return None
    if any(not isinstance(row, list) or len(row) != len(names) for row in matrix):
        return None
    rows = []
    for row in matrix:
        total = sum(int(v) for v in row) or 1
        rows.append([ConfusionCell(int(v), int(v) / total) for v in row])
    return ConfusionMatrix(names, rows)
