"""Self-contained HTML reports with inline SVG plots: no JavaScript, no network, no CDN.

Every stage that writes ``--html`` (evaluate, tune, compress, drift) builds its page here, so
all reports look alike and keep the same guarantees: one file that opens offline in any
browser, every piece of text escaped, deterministic bytes for the same inputs, written
atomically. Only the standard library is used; numbers may be Python or NumPy scalars and
sequences may be lists or NumPy arrays.

A page is a :class:`Report`; plots are made by the functions below, which return
:class:`Svg` objects (markup we generated ourselves, the only markup a report accepts)::

    from mlsys_cli import htmlreport as hr

    page = hr.Report("Model evaluation", subtitle="model.mlsys on test.parquet")
    page.heading("Metrics")
    page.kv({"auc": 0.91, "rows": 1200})
    page.figures(
        hr.line_plot([hr.Series("model", fpr, tpr)], title="ROC", x_label="false positive rate",
                     y_label="true positive rate", x_range=(0, 1), y_range=(0, 1), diagonal=True),
        hr.bar_chart(["a", "b"], [0.9, 0.7], title="AUC by plan", reference=0.85),
    )
    page.table([{"slice": "a", "auc": 0.9, "flagged": False}], flag="flagged")
    page.write("report.html")

Plot functions: :func:`line_plot` (ROC, PR, optimisation history; ``step=True`` for step
curves), :func:`scatter_plot` (size vs metric, residuals), :func:`bar_chart` (importances,
slices, with optional error bars and a reference line), :func:`heatmap` (confusion matrix),
:func:`reliability_diagram` (calibration), :func:`histogram` (overlaid distributions).

In the rendered page every plot is ``<svg class="plot" data-kind="..." data-points="N">``
where ``N`` counts the data marks drawn, so tests (and users' scripts) can check a plot has
data without parsing the drawing.
"""

from __future__ import annotations

import html
import math
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

__all__ = [
    "Report", "Series", "Svg", "PALETTE", "line_plot", "scatter_plot", "bar_chart", "heatmap",
    "reliability_diagram", "histogram", "format_value",
]

# Okabe-Ito: distinguishable with the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
BAD = "#D55E00"
GOOD = "#009E73"
GREY = "#888888"

WIDTH, HEIGHT = 460, 320
MARGIN = {"left": 62, "right": 16, "top": 34, "bottom": 48}
MAX_LINE_POINTS = 1500  # a line with more points looks the same thinned; keeps reports small
MAX_SCATTER_POINTS = 3000


@dataclass(frozen=True)
class Svg:
    """An SVG fragment made by this module (trusted markup), with the count of its data marks."""

    markup: str
    kind: str
    points: int

    def __str__(self) -> str:
        return self.markup


@dataclass(frozen=True)
class Series:
    """One named line or point set.

    Parameters
    ----------
    name : str
        Shown in the legend (omitted from the legend when empty).
    x, y : sequence of numbers
        Coordinates; pairs with a non-finite value are not drawn (lines break there).
    step : bool
        Draw a post-step curve (value holds until the next x), as for PR curves.
    markers : bool
        Draw a marker on every point (line plots); scatter plots always do.
    labels : sequence of str, optional
        One label per point: shown on hover (SVG ``<title>``) and, with ``annotate=True`` in
        :func:`scatter_plot`, written beside the point.
    """

    name: str
    x: Sequence[Any]
    y: Sequence[Any]
    step: bool = False
    markers: bool = False
    labels: Sequence[str] | None = None


# --------------------------------------------------------------------------- formatting


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def format_value(value: Any, digits: int = 4) -> str:
    """A cell or label: floats to ``digits`` significant digits, None/NaN as an en dash."""
    if value is None:
        return "\u2013"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if hasattr(value, "item") and callable(value.item) and not isinstance(value, (list, tuple, dict)):
        value = value.item()
    if isinstance(value, float):
        if not math.isfinite(value):
            return "\u2013" if math.isnan(value) else ("\u221e" if value > 0 else "-\u221e")
        return f"{value:.{digits}g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(format_value(v, digits) for v in value)
    return str(value)


def _count(v: float) -> str:
    return str(int(v)) if math.isfinite(v) and v == int(v) else format_value(v)


def _c(v: float) -> str:
    """A coordinate: two decimals are finer than a pixel and keep the bytes stable."""
    return f"{v:.2f}".rstrip("0").rstrip(".") if v != int(v) else str(int(v))


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    t = first
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    return ticks


def _tick_label(v: float) -> str:
    if v == 0:
        return "0"
    text = f"{v:.4g}"
    if "e" in text:  # 1e+04 -> 1e4: shorter tick labels on log axes
        mantissa, exponent = text.split("e")
        text = f"{mantissa}e{int(exponent)}"
    return text


def _finite_pairs(xs: Sequence[Any], ys: Sequence[Any], log_x: bool = False) -> list[tuple[int, float, float]]:
    out = []
    for i, (x, y) in enumerate(zip(xs, ys)):
        fx, fy = _num(x), _num(y)
        if math.isfinite(fx) and math.isfinite(fy) and (not log_x or fx > 0):
            out.append((i, fx, fy))
    return out


def _thin(points: list, limit: int) -> list:
    """Every k-th point plus the last, so a long curve keeps its shape and its end."""
    if len(points) <= limit:
        return points
    step = math.ceil(len(points) / limit)
    kept = points[::step]
    if kept[-1] is not points[-1]:
        kept.append(points[-1])
    return kept


def _pad_range(lo: float, hi: float, frac: float = 0.05) -> tuple[float, float]:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return 0.0, 1.0
    if hi == lo:
        d = abs(lo) * 0.1 or 1.0
        return lo - d, hi + d
    d = (hi - lo) * frac
    return lo - d, hi + d


# --------------------------------------------------------------------------- axes


@dataclass
class _Axes:
    x_range: tuple[float, float]
    y_range: tuple[float, float]
    log_x: bool = False
    width: int = WIDTH
    height: int = HEIGHT
    margin: Mapping[str, int] = field(default_factory=lambda: dict(MARGIN))

    @property
    def left(self) -> float:
        return self.margin["left"]

    @property
    def right(self) -> float:
        return self.width - self.margin["right"]

    @property
    def top(self) -> float:
        return self.margin["top"]

    @property
    def bottom(self) -> float:
        return self.height - self.margin["bottom"]

    def _tx(self, x: float) -> float:
        return math.log10(x) if self.log_x else x

    def sx(self, x: float) -> float:
        lo, hi = (self._tx(v) for v in self.x_range)
        return self.left + (self._tx(x) - lo) / ((hi - lo) or 1.0) * (self.right - self.left)

    def sy(self, y: float) -> float:
        lo, hi = self.y_range
        return self.bottom - (y - lo) / ((hi - lo) or 1.0) * (self.bottom - self.top)

    def x_ticks(self) -> list[float]:
        lo, hi = self.x_range
        if self.log_x:
            a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
            return [10.0 ** k for k in range(a, b + 1) if lo <= 10.0 ** k <= hi] or [lo, hi]
        return _nice_ticks(lo, hi)

    def frame(self, title: str, x_label: str, y_label: str, y_ticks: bool = True, x_ticks: bool = True) -> list[str]:
        parts = [f'<rect class="frame" x="{_c(self.left)}" y="{_c(self.top)}" width="{_c(self.right - self.left)}" '
                 f'height="{_c(self.bottom - self.top)}" fill="none" stroke="#bbb"/>']
        if y_ticks:
            for t in _nice_ticks(*self.y_range):
                y = self.sy(t)
                parts.append(f'<line x1="{_c(self.left)}" x2="{_c(self.right)}" y1="{_c(y)}" y2="{_c(y)}" stroke="#eee"/>')
                parts.append(f'<text x="{_c(self.left - 6)}" y="{_c(y + 4)}" text-anchor="end" class="tick">{_e(_tick_label(t))}</text>')
        if x_ticks:
            for t in self.x_ticks():
                x = self.sx(t)
                parts.append(f'<line x1="{_c(x)}" x2="{_c(x)}" y1="{_c(self.top)}" y2="{_c(self.bottom)}" stroke="#eee"/>')
                parts.append(f'<text x="{_c(x)}" y="{_c(self.bottom + 16)}" text-anchor="middle" class="tick">{_e(_tick_label(t))}</text>')
        if title:
            parts.append(f'<text x="{_c(self.width / 2)}" y="20" text-anchor="middle" class="title">{_e(title)}</text>')
        if x_label:
            parts.append(f'<text x="{_c((self.left + self.right) / 2)}" y="{_c(self.height - 10)}" text-anchor="middle" class="label">{_e(x_label)}</text>')
        if y_label:
            cy = (self.top + self.bottom) / 2
            parts.append(f'<text x="14" y="{_c(cy)}" text-anchor="middle" class="label" transform="rotate(-90 14 {_c(cy)})">{_e(y_label)}</text>')
        return parts

    def legend(self, names: Sequence[tuple[str, str]], at: str = "top") -> list[str]:
        parts = []
        shown = [(n, col) for n, col in names if n]
        for i, (name, colour) in enumerate(shown):
            y = self.top + 12 + 15 * i if at == "top" else self.bottom - 8 - 15 * (len(shown) - 1 - i)
            x = self.right - 8
            parts.append(f'<rect x="{_c(x - 10)}" y="{_c(y - 8)}" width="10" height="10" fill="{colour}"/>')
            parts.append(f'<text x="{_c(x - 14)}" y="{_c(y + 1)}" text-anchor="end" class="legend">{_e(name)}</text>')
        return parts


def _svg(kind: str, parts: list[str], points: int, width: int = WIDTH, height: int = HEIGHT, title: str = "") -> Svg:
    label = f' aria-label="{_e(title)}"' if title else ""
    markup = (f'<svg class="plot" data-kind="{_e(kind)}" data-points="{points}" xmlns="http://www.w3.org/2000/svg" '
              f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img"{label}>'
              + "".join(parts) + "</svg>")
    return Svg(markup, kind, points)


def _range(values: Iterable[float], given: tuple[float, float] | None, pad: bool = True) -> tuple[float, float]:
    if given is not None:
        return float(given[0]), float(given[1])
    vals = [v for v in values if math.isfinite(v)]
    if not vals:
        return 0.0, 1.0
    return _pad_range(min(vals), max(vals)) if pad else (min(vals), max(vals))


def _log_range(values: Iterable[float], given: tuple[float, float] | None) -> tuple[float, float]:
    if given is not None:
        return float(given[0]), float(given[1])
    vals = [v for v in values if math.isfinite(v) and v > 0]
    if not vals:
        return 1.0, 10.0
    lo, hi = min(vals), max(vals)
    return (lo / 1.5, hi * 1.5) if hi > lo else (lo / 10, hi * 10)


def _xy_axes(series: Sequence[Series], x_range: tuple[float, float] | None, y_range: tuple[float, float] | None,
             log_x: bool, hline: float | None) -> tuple[_Axes, list[list[tuple[int, float, float]]]]:
    """Axes fitted to the finite points of every series (and the reference line); the points."""
    pts = [_finite_pairs(s.x, s.y, log_x) for s in series]
    xs = [p[1] for ps in pts for p in ps]
    ys = [p[2] for ps in pts for p in ps] + ([_num(hline)] if hline is not None else [])
    return _Axes(_log_range(xs, x_range) if log_x else _range(xs, x_range), _range(ys, y_range), log_x=log_x), pts


def _reference_lines(ax: _Axes, diagonal: bool, hline: float | None) -> list[str]:
    """The dashed ``y = x`` line and a dashed horizontal line, as asked."""
    parts = []
    if diagonal:
        lo = max(ax.x_range[0], ax.y_range[0])
        hi = min(ax.x_range[1], ax.y_range[1])
        parts.append(f'<line class="ref" x1="{_c(ax.sx(lo))}" y1="{_c(ax.sy(lo))}" x2="{_c(ax.sx(hi))}" y2="{_c(ax.sy(hi))}" '
                     f'stroke="{GREY}" stroke-dasharray="4 4"/>')
    if hline is not None and math.isfinite(_num(hline)):
        y = ax.sy(_num(hline))
        parts.append(f'<line class="ref" x1="{_c(ax.left)}" x2="{_c(ax.right)}" y1="{_c(y)}" y2="{_c(y)}" stroke="{GREY}" stroke-dasharray="4 4"/>')
    return parts


# --------------------------------------------------------------------------- plots


def line_plot(
    series: Sequence[Series],
    *,
    title: str = "",
    x_label: str = "",
    y_label: str = "",
    x_range: tuple[float, float] | None = None,
    y_range: tuple[float, float] | None = None,
    diagonal: bool = False,
    log_x: bool = False,
    hline: float | None = None,
    legend: str = "top",
    kind: str = "line",
) -> Svg:
    """Lines (or step curves) on shared axes: ROC, precision-recall, optimisation history.

    Parameters
    ----------
    series : sequence of Series
        Each drawn in the next palette colour; more than :data:`MAX_LINE_POINTS` points are thinned.
    title, x_label, y_label : str
    x_range, y_range : (float, float), optional
        Fixed axis limits (for example ``(0, 1)`` for ROC); from the data otherwise.
    diagonal : bool
        Draw the dashed ``y = x`` line (chance for ROC, perfect calibration).
    log_x : bool
        Logarithmic x axis (non-positive x are not drawn).
    hline : float, optional
        A dashed horizontal reference line (a baseline score, the best value so far).
    legend : {"top", "bottom"}
        Corner (on the right) for the legend: put it where the curves are not (``bottom`` for ROC).
    kind : str
        The ``data-kind`` of the rendered ``<svg>`` (``roc``, ``pr``, ``history``...).
    """
    ax, pts = _xy_axes(series, x_range, y_range, log_x, hline)
    parts = ax.frame(title, x_label, y_label) + _reference_lines(ax, diagonal, hline)
    drawn = 0
    for i, (s, ps) in enumerate(zip(series, pts)):
        colour = PALETTE[i % len(PALETTE)]
        ps = _thin(ps, MAX_LINE_POINTS)
        coords: list[str] = []
        prev_y = None
        for _, x, y in ps:
            if s.step and prev_y is not None:
                coords.append(f"{_c(ax.sx(x))},{_c(ax.sy(prev_y))}")
            coords.append(f"{_c(ax.sx(x))},{_c(ax.sy(y))}")
            prev_y = y
        if coords:
            parts.append(f'<polyline class="series" data-name="{_e(s.name)}" data-n="{len(ps)}" points="{" ".join(coords)}" '
                         f'fill="none" stroke="{colour}" stroke-width="2"/>')
        if s.markers:
            parts.extend(_markers(ax, s, ps, colour))
        drawn += len(ps)
    parts.extend(ax.legend([(s.name, PALETTE[i % len(PALETTE)]) for i, s in enumerate(series)], at=legend))
    return _svg(kind, parts, drawn, title=title)


def _markers(ax: _Axes, s: Series, ps: list[tuple[int, float, float]], colour: str, annotate: bool = False, r: float = 3) -> list[str]:
    parts = []
    for idx, x, y in ps:
        label = s.labels[idx] if s.labels is not None and idx < len(s.labels) else None
        tip = f"{label}: " if label else ""
        tip += f"({format_value(x)}, {format_value(y)})"
        parts.append(f'<circle class="point" cx="{_c(ax.sx(x))}" cy="{_c(ax.sy(y))}" r="{r}" fill="{colour}" fill-opacity="0.75">'
                     f"<title>{_e(tip)}</title></circle>")
        if annotate and label:
            parts.append(f'<text x="{_c(ax.sx(x) + 6)}" y="{_c(ax.sy(y) - 6)}" class="annot">{_e(label)}</text>')
    return parts


def scatter_plot(
    series: Sequence[Series],
    *,
    title: str = "",
    x_label: str = "",
    y_label: str = "",
    x_range: tuple[float, float] | None = None,
    y_range: tuple[float, float] | None = None,
    log_x: bool = False,
    hline: float | None = None,
    diagonal: bool = False,
    annotate: bool = False,
    connect: bool = False,
    kind: str = "scatter",
) -> Svg:
    """Points: model size vs metric, predicted vs residual, trial value vs parameter.

    Parameters
    ----------
    series : sequence of Series
        Each in its own colour; more than :data:`MAX_SCATTER_POINTS` points are thinned evenly.
    annotate : bool
        Write each point's label beside it (for a handful of named points such as candidates).
    connect : bool
        Also join the points of each series in order (a Pareto front).
    hline, diagonal, log_x, x_range, y_range, kind :
        As in :func:`line_plot` (``hline=0`` for a residual plot).
    """
    ax, pts = _xy_axes(series, x_range, y_range, log_x, hline)
    parts = ax.frame(title, x_label, y_label) + _reference_lines(ax, diagonal, hline)
    drawn = 0
    for i, (s, ps) in enumerate(zip(series, pts)):
        colour = PALETTE[i % len(PALETTE)]
        ps = _thin(ps, MAX_SCATTER_POINTS)
        if connect and ps:
            coords = " ".join(f"{_c(ax.sx(x))},{_c(ax.sy(y))}" for _, x, y in ps)
            parts.append(f'<polyline class="series" points="{coords}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
        parts.extend(_markers(ax, s, ps, colour, annotate=annotate, r=2.5 if len(ps) > 300 else 4))
        drawn += len(ps)
    parts.extend(ax.legend([(s.name, PALETTE[i % len(PALETTE)]) for i, s in enumerate(series)]))
    return _svg(kind, parts, drawn, title=title)


def bar_chart(
    labels: Sequence[Any],
    values: Sequence[Any],
    *,
    title: str = "",
    value_label: str = "",
    errors: tuple[Sequence[Any], Sequence[Any]] | None = None,
    reference: float | None = None,
    reference_label: str = "",
    highlight: Sequence[bool] | None = None,
    value_range: tuple[float, float] | None = None,
    zero: bool = True,
    kind: str = "bar",
) -> Svg:
    """Horizontal bars, one per label: feature importances, a metric per slice.

    Parameters
    ----------
    labels, values : sequences of equal length
        Drawn top to bottom in the given order; a non-finite value is drawn as no bar.
    errors : (lower, upper), optional
        Interval ends per bar (confidence intervals), drawn as whiskers.
    reference : float, optional
        A dashed vertical line (the overall metric), labelled with ``reference_label``.
    highlight : sequence of bool, optional
        Bars drawn in the warning colour (flagged slices).
    value_range : (float, float), optional
        Fixed value-axis limits; from the data (and zero) otherwise.
    zero : bool
        Bars start at zero. False zooms the axis to the data and starts bars at its left
        edge, so that small differences (AUC 0.75 vs 0.79 between slices) are visible.
    """
    n = len(labels)
    vals = [_num(v) for v in values]
    lo_e = [_num(v) for v in errors[0]] if errors else []
    hi_e = [_num(v) for v in errors[1]] if errors else []
    everything = vals + lo_e + hi_e + ([0.0] if zero else []) + ([_num(reference)] if reference is not None else [])
    texts = [format_value(lab) for lab in labels]
    longest = max((len(t) for t in texts), default=4)
    left = min(max(60, 7 * min(longest, 28) + 12), 220)
    bar_h = 18
    top = MARGIN["top"] + (12 if reference_label else 0)  # room for the reference line's label under the title
    height = top + MARGIN["bottom"] + max(n, 1) * (bar_h + 6)
    ax = _Axes(_range(everything, value_range), (0.0, float(max(n, 1))), width=WIDTH + left - MARGIN["left"],
               height=height, margin={**MARGIN, "left": left, "top": top})
    parts = ax.frame(title, value_label, "", y_ticks=False)
    base = ax.sx(max(min(0.0, ax.x_range[1]), ax.x_range[0])) if zero else ax.left
    drawn = 0
    for i, (text, v) in enumerate(zip(texts, vals)):
        y = ax.top + 3 + i * (bar_h + 6)
        short = text if len(text) <= 28 else text[:27] + "\u2026"
        parts.append(f'<text x="{_c(ax.left - 6)}" y="{_c(y + bar_h - 5)}" text-anchor="end" class="tick"><title>{_e(text)}</title>{_e(short)}</text>')
        if not math.isfinite(v):
            continue
        x0, x1 = sorted((base, ax.sx(v)))
        colour = BAD if highlight is not None and i < len(highlight) and highlight[i] else PALETTE[0]
        tip = f"{text}: {format_value(v)}"
        if errors and i < len(lo_e):
            tip += f" [{format_value(lo_e[i])}, {format_value(hi_e[i])}]"
        parts.append(f'<rect class="bar" x="{_c(x0)}" y="{_c(y)}" width="{_c(max(x1 - x0, 0.5))}" height="{bar_h}" fill="{colour}">'
                     f"<title>{_e(tip)}</title></rect>")
        drawn += 1
        if errors and i < len(lo_e) and math.isfinite(lo_e[i]) and math.isfinite(hi_e[i]):
            parts.append(_whisker(ax, lo_e[i], hi_e[i], y + bar_h / 2))
    parts.extend(_vertical_reference(ax, reference, reference_label))
    return _svg(kind, parts, drawn, width=ax.width, height=height, title=title)


def _whisker(ax: _Axes, lo: float, hi: float, cy: float) -> str:
    a, b = ax.sx(lo), ax.sx(hi)
    return (f'<path class="err" d="M{_c(a)} {_c(cy)}H{_c(b)}M{_c(a)} {_c(cy - 4)}V{_c(cy + 4)}M{_c(b)} {_c(cy - 4)}V{_c(cy + 4)}" '
            'stroke="#333" fill="none"/>')


def _vertical_reference(ax: _Axes, reference: float | None, label: str) -> list[str]:
    """A dashed vertical line at ``reference`` (the overall metric), labelled under the title."""
    if reference is None or not math.isfinite(_num(reference)):
        return []
    x = ax.sx(_num(reference))
    parts = [f'<line class="ref" x1="{_c(x)}" x2="{_c(x)}" y1="{_c(ax.top)}" y2="{_c(ax.bottom)}" stroke="#333" stroke-dasharray="4 3">'
             f"<title>{_e(label or 'reference')}: {_e(format_value(_num(reference)))}</title></line>"]
    if label:
        anchor = "end" if x > (ax.left + ax.right) / 2 else "start"
        parts.append(f'<text x="{_c(x + (-3 if anchor == "end" else 3))}" y="{_c(ax.top - 4)}" text-anchor="{anchor}" '
                     f'class="legend">{_e(label)}</text>')
    return parts


def heatmap(
    matrix: Sequence[Sequence[Any]],
    row_labels: Sequence[Any],
    col_labels: Sequence[Any],
    *,
    title: str = "",
    x_label: str = "",
    y_label: str = "",
    kind: str = "heatmap",
) -> Svg:
    """A matrix of counts with shaded cells and the number written in each (confusion matrix).

    Shading is by the share of the row total, so a rare class's errors are as visible as a
    common class's.
    """
    rows = [[_num(v) for v in r] for r in matrix]
    nr, nc = len(rows), max((len(r) for r in rows), default=0)
    cell = max(18, min(64, 360 // max(nr, nc, 1)))
    rtexts = [format_value(r) for r in row_labels]
    left = min(max(60, 7 * max((len(t) for t in rtexts), default=3) + 30), 200)
    width, height = left + nc * cell + 20, 40 + nr * cell + 50
    parts = []
    if title:
        parts.append(f'<text x="{_c(width / 2)}" y="20" text-anchor="middle" class="title">{_e(title)}</text>')
    drawn = 0
    for i, r in enumerate(rows):
        total = sum(v for v in r if math.isfinite(v)) or 1.0
        y = 34 + i * cell
        parts.append(f'<text x="{left - 6}" y="{_c(y + cell / 2 + 4)}" text-anchor="end" class="tick">{_e(rtexts[i] if i < len(rtexts) else "")}</text>')
        for j, v in enumerate(r):
            x = left + j * cell
            share = v / total if math.isfinite(v) else 0.0
            colour = PALETTE[0] if i == j else BAD
            parts.append(f'<rect class="cell" x="{x}" y="{y}" width="{cell}" height="{cell}" fill="{colour}" fill-opacity="{0.08 + 0.8 * share:.3f}" stroke="#fff">'
                         f"<title>{_e(format_value(row_labels[i]) if i < len(row_labels) else i)} \u2192 "
                         f"{_e(format_value(col_labels[j]) if j < len(col_labels) else j)}: {_e(_count(v))}</title></rect>")
            if cell >= 24:
                parts.append(f'<text x="{_c(x + cell / 2)}" y="{_c(y + cell / 2 + 4)}" text-anchor="middle" class="cellnum">{_e(_count(v))}</text>')
            drawn += 1
    for j in range(nc):
        x = left + j * cell + cell / 2
        text = format_value(col_labels[j]) if j < len(col_labels) else ""
        parts.append(f'<text x="{_c(x)}" y="{_c(34 + nr * cell + 14)}" text-anchor="middle" class="tick">{_e(text)}</text>')
    if x_label:
        parts.append(f'<text x="{_c(left + nc * cell / 2)}" y="{height - 8}" text-anchor="middle" class="label">{_e(x_label)}</text>')
    if y_label:
        cy = 34 + nr * cell / 2
        parts.append(f'<text x="12" y="{_c(cy)}" text-anchor="middle" class="label" transform="rotate(-90 12 {_c(cy)})">{_e(y_label)}</text>')
    return _svg(kind, parts, drawn, width=width, height=height, title=title)


def reliability_diagram(
    confidence: Sequence[Any],
    observed: Sequence[Any],
    counts: Sequence[Any],
    *,
    title: str = "Reliability",
    x_label: str = "mean predicted probability",
    y_label: str = "observed frequency",
    kind: str = "reliability",
) -> Svg:
    """Calibration: observed frequency against mean predicted probability per bin.

    Parameters
    ----------
    confidence, observed, counts : sequences of equal length
        Per non-empty bin: mean predicted probability, observed frequency of the event,
        number of rows. The dashed diagonal is perfect calibration; marker area follows
        the count, and a strip below the axes shows the share of rows per bin.
    """
    total = sum(_num(c) for c in counts if math.isfinite(_num(c))) or 1.0
    ax = _Axes((0.0, 1.0), (0.0, 1.0), height=HEIGHT + 40, margin={**MARGIN, "bottom": 88})
    parts = ax.frame(title, "", y_label)
    parts.append(f'<line class="ref" x1="{_c(ax.sx(0))}" y1="{_c(ax.sy(0))}" x2="{_c(ax.sx(1))}" y2="{_c(ax.sy(1))}" stroke="{GREY}" stroke-dasharray="4 4"/>')
    ps = _finite_pairs(confidence, observed)
    if ps:
        coords = " ".join(f"{_c(ax.sx(x))},{_c(ax.sy(y))}" for _, x, y in ps)
        parts.append(f'<polyline class="series" points="{coords}" fill="none" stroke="{PALETTE[0]}" stroke-width="2"/>')
    for idx, x, y in ps:
        n = _num(counts[idx]) if idx < len(counts) else math.nan
        r = 2.5 + 6 * math.sqrt(n / total) if math.isfinite(n) else 3
        parts.append(f'<circle class="point" cx="{_c(ax.sx(x))}" cy="{_c(ax.sy(y))}" r="{r:.2f}" fill="{PALETTE[0]}" fill-opacity="0.8">'
                     f"<title>{_e(f'predicted {format_value(x)}, observed {format_value(y)}, n={format_value(n)}')}</title></circle>")
    strip_top, strip_h = ax.bottom + 22, 26
    for idx, x, _ in ps:
        n = _num(counts[idx]) if idx < len(counts) else 0.0
        h = strip_h * (n / total) if math.isfinite(n) else 0
        parts.append(f'<rect class="count" x="{_c(ax.sx(x) - 4)}" y="{_c(strip_top + strip_h - h)}" width="8" height="{_c(max(h, 0.5))}" fill="{GREY}"/>')
    parts.append(f'<text x="{_c((ax.left + ax.right) / 2)}" y="{_c(ax.height - 10)}" text-anchor="middle" class="label">{_e(x_label)}</text>')
    parts.append(f'<text x="{_c(ax.left - 6)}" y="{_c(strip_top + strip_h)}" text-anchor="end" class="tick">rows</text>')
    return _svg(kind, parts, len(ps), height=ax.height, title=title)


def histogram(
    edges: Sequence[Any],
    series: Sequence[tuple[str, Sequence[Any]]],
    *,
    title: str = "",
    x_label: str = "",
    y_label: str = "share of rows",
    normalize: bool = True,
    kind: str = "histogram",
) -> Svg:
    """Overlaid histograms over shared bin edges (reference vs current in drift reports).

    Parameters
    ----------
    edges : sequence of numbers
        ``len(counts) + 1`` bin edges, increasing.
    series : sequence of (name, counts)
        Drawn as translucent step areas in palette order.
    normalize : bool
        Plot each series' share of its own total, so samples of different sizes compare.
    """
    e = [_num(v) for v in edges]
    shapes = []
    for name, counts in series:
        c = [_num(v) if math.isfinite(_num(v)) else 0.0 for v in counts]
        total = sum(c) or 1.0
        shapes.append((name, [v / total for v in c] if normalize else c))
    ys = [v for _, c in shapes for v in c] + [0.0]
    ax = _Axes(_range(e, None, pad=False), (0.0, max(ys) * 1.08 or 1.0))
    parts = ax.frame(title, x_label, y_label)
    drawn = 0
    for k, (name, c) in enumerate(shapes):
        colour = PALETTE[k % len(PALETTE)]
        d = [f"M{_c(ax.sx(e[0]))} {_c(ax.sy(0))}"]
        for i, v in enumerate(c[: len(e) - 1]):
            d.append(f"V{_c(ax.sy(v))}H{_c(ax.sx(e[i + 1]))}")
            drawn += 1
        d.append(f"V{_c(ax.sy(0))}Z")
        parts.append(f'<path class="series" data-name="{_e(name)}" d="{"".join(d)}" fill="{colour}" fill-opacity="0.35" stroke="{colour}"/>')
    parts.extend(ax.legend([(n, PALETTE[k % len(PALETTE)]) for k, (n, _) in enumerate(shapes)]))
    return _svg(kind, parts, drawn, title=title)


# --------------------------------------------------------------------------- the page

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;margin:0;background:#fafafa}
main{max-width:1100px;margin:0 auto;padding:18px 28px 48px}
h1{font-size:22px;margin:8px 0 2px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
p.sub{color:#666;margin:0 0 12px}p.note{color:#555;margin:6px 0}
table{border-collapse:collapse;margin:6px 0 12px;background:#fff;font-variant-numeric:tabular-nums}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;max-width:32em;overflow-wrap:anywhere}th{background:#f0f0f0;font-weight:600}
td.num{text-align:right}tr.flag td{background:#fde8e1}
.badge{display:inline-block;padding:0 7px;border-radius:9px;font-size:12px;font-weight:600;color:#fff}
.pass{background:#009E73}.fail{background:#D55E00}
.figs{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start}
figure{margin:0;background:#fff;border:1px solid #e3e3e3;padding:6px}figcaption{color:#555;font-size:12px;max-width:460px}
svg.plot text{font-family:system-ui,sans-serif;fill:#333}svg .tick{font-size:11px}svg .title{font-size:14px;font-weight:600}
svg .label{font-size:12px}svg .legend{font-size:11px}svg .annot{font-size:10px}svg .cellnum{font-size:12px}
footer{color:#888;font-size:12px;margin-top:36px}
"""


class Report:
    """An HTML page assembled block by block, then rendered or written atomically.

    Parameters
    ----------
    title : str
        The page title and top heading.
    subtitle : str, optional
        A line under the heading (what was evaluated, on what data).
    footer : str, optional
        Small print at the end (the tool and version that made the page).

    Notes
    -----
    Blocks appear in the order added. Text is always escaped; the only markup accepted is
    :class:`Svg` from this module's plot functions.
    """

    def __init__(self, title: str, subtitle: str | None = None, footer: str | None = None):
        self.title = title
        self.subtitle = subtitle
        self.footer = footer
        self._blocks: list[str] = []

    def heading(self, text: str) -> "Report":
        """A section heading."""
        self._blocks.append(f"<h2>{_e(text)}</h2>")
        return self

    def text(self, text: str) -> "Report":
        """A paragraph of plain text."""
        self._blocks.append(f'<p class="note">{_e(text)}</p>')
        return self

    def kv(self, mapping: Mapping[str, Any], caption: str | None = None) -> "Report":
        """A two-column table of names and values."""
        return self.table([{"name": k, "value": v} for k, v in mapping.items()], ["name", "value"], caption=caption, header=False)

    def table(
        self,
        rows: Sequence[Mapping[str, Any]],
        columns: Sequence[str] | None = None,
        *,
        caption: str | None = None,
        flag: str | None = None,
        status: str | None = None,
        header: bool = True,
    ) -> "Report":
        """A table of records.

        Parameters
        ----------
        rows : sequence of mappings
        columns : sequence of str, optional
            Which keys, in order; the first row's keys by default.
        caption : str, optional
        flag : str, optional
            A key whose truthy value highlights the row (a flagged slice).
        status : str, optional
            A key holding a bool rendered as a PASS/FAIL badge (a behavioural test, a gate).
        header : bool
            Show the column names.
        """
        rows = list(rows)
        cols = list(columns) if columns is not None else (list(rows[0]) if rows else [])
        out = ["<table>"]
        if caption:
            out.append(f"<caption>{_e(caption)}</caption>")
        if header:
            out.append("<tr>" + "".join(f"<th>{_e(c)}</th>" for c in cols) + "</tr>")
        for row in rows:
            cls = ' class="flag"' if flag and row.get(flag) else ""
            cells = []
            for c in cols:
                v = row.get(c)
                if status and c == status and isinstance(v, bool):
                    cells.append(f'<td><span class="badge {"pass" if v else "fail"}">{"PASS" if v else "FAIL"}</span></td>')
                    continue
                is_num = not isinstance(v, (bool, str)) and math.isfinite(_num(v)) if v is not None else False
                td = '<td class="num">' if is_num else "<td>"
                cells.append(f"{td}{_e(format_value(v))}</td>")
            out.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
        out.append("</table>")
        self._blocks.append("".join(out))
        return self

    def figures(self, *plots: Svg, captions: Sequence[str | None] | None = None) -> "Report":
        """One row of plots (wrapping on narrow screens), each with an optional caption."""
        caps = list(captions or [])
        items = []
        for i, plot in enumerate(plots):
            if not isinstance(plot, Svg):
                raise TypeError("Report.figures takes Svg objects made by mlsys_cli.htmlreport")
            cap = caps[i] if i < len(caps) else None
            items.append(f"<figure>{plot.markup}" + (f"<figcaption>{_e(cap)}</figcaption>" if cap else "") + "</figure>")
        self._blocks.append('<div class="figs">' + "".join(items) + "</div>")
        return self

    def to_html(self) -> str:
        """The whole page as one string (UTF-8, no external resources)."""
        head = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
                f'<meta name="viewport" content="width=device-width, initial-scale=1">'
                f"<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">"
                f"<title>{_e(self.title)}</title><style>{_CSS}</style></head><body><main>")
        top = f"<h1>{_e(self.title)}</h1>" + (f'<p class="sub">{_e(self.subtitle)}</p>' if self.subtitle else "")
        foot = f"<footer>{_e(self.footer)}</footer>" if self.footer else ""
        return head + top + "\n".join(self._blocks) + foot + "</main></body></html>\n"

    def write(self, path: str | os.PathLike) -> None:
        """Write the page atomically (a killed run leaves the previous file or none)."""
        from mlsys_cli.fsutil import atomic_write_bytes

        atomic_write_bytes(path, self.to_html().encode("utf-8"))
