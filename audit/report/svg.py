"""Inline SVG plots for the report: rank curve, train x eval heatmap, localisation bars.

Pure string building; every label goes through `markupsafe.escape` because context names and trait
names come from user files. Returns `Markup` so the autoescaping templates embed it as-is.
"""

from __future__ import annotations

import math

from markupsafe import Markup, escape

from audit.results import Effect, Heatmap, Localisation, RankCurve

PALETTE = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c")
_FONT = 'font-family="sans-serif" font-size="11"'


def _fmt(v: float) -> str:
    return f"{v:.1f}"


def _range(values: list[float]) -> tuple[float, float]:
    lo, hi = min(values + [0.0]), max(values + [0.0])
    if hi - lo < 1e-9:
        hi, lo = hi + 0.01, lo - 0.01
    pad = 0.08 * (hi - lo)
    return lo - pad, hi + pad


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    raw = (hi - lo) / n
    step = 10 ** math.floor(math.log10(raw))
    for mult in (1, 2, 5, 10):
        if raw <= step * mult:
            step *= mult
            break
    start = math.ceil(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step) + 1)]


def rank_curve_svg(curve: RankCurve, width: int = 560, height: int = 320) -> Markup:
    """Effect (with 95% CI whiskers) against rank on a log2 axis; full FT as a dashed line."""
    left, right, top, bottom = 64, 130, 24, 44
    pw, ph = width - left - right, height - top - bottom
    ranks = sorted({p.x for s in curve.series for p in s.points}) or [1.0]
    ys = [v for s in curve.series for p in s.points for v in (p.effect.ci_low, p.effect.ci_high)]
    if curve.full_ft is not None:
        ys += [curve.full_ft.ci_low, curve.full_ft.ci_high]
    y0, y1 = _range([y for y in ys if math.isfinite(y)])
    lx0, lx1 = math.log2(ranks[0]), math.log2(ranks[-1])
    if lx1 - lx0 < 1e-9:
        lx0, lx1 = lx0 - 1, lx1 + 1

    def px(x: float) -> float:
        return left + (math.log2(x) - lx0) / (lx1 - lx0) * pw

    def py(y: float) -> float:
        return top + (y1 - y) / (y1 - y0) * ph

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="plot rank-curve" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="rank curve for {escape(curve.trait)}">',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#ccc"/>',
    ]
    for t in _ticks(y0, y1):
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{_fmt(py(t))}" y2="{_fmt(py(t))}" stroke="#eee"/>')
        parts.append(f'<text x="{left - 6}" y="{_fmt(py(t) + 4)}" text-anchor="end" {_FONT}>{t:+.3g}</text>')
    parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{_fmt(py(0))}" y2="{_fmt(py(0))}" stroke="#888"/>')
    for r in ranks:
        parts.append(f'<text x="{_fmt(px(r))}" y="{top + ph + 16}" text-anchor="middle" {_FONT}>{r:g}</text>')
    parts.append(f'<text x="{left + pw / 2}" y="{height - 8}" text-anchor="middle" {_FONT}>LoRA rank (log scale)</text>')
    parts.append(
        f'<text x="14" y="{top + ph / 2}" transform="rotate(-90 14 {top + ph / 2})" text-anchor="middle" '
        f"{_FONT}>{escape(curve.y_label)}</text>"
    )
    legend_y = top + 8
    for i, series in enumerate(curve.series):
        colour = PALETTE[i % len(PALETTE)]
        pts = sorted(series.points, key=lambda p: p.x)
        if pts:
            path = " ".join(f"{_fmt(px(p.x))},{_fmt(py(p.effect.value))}" for p in pts)
            parts.append(f'<polyline class="series" points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for p in pts:
            x = _fmt(px(p.x))
            parts.append(
                f'<line x1="{x}" x2="{x}" y1="{_fmt(py(p.effect.ci_low))}" y2="{_fmt(py(p.effect.ci_high))}" '
                f'stroke="{colour}"/>'
            )
            parts.append(
                f'<circle cx="{x}" cy="{_fmt(py(p.effect.value))}" r="3.5" fill="{colour}">'
                f"<title>{escape(series.name)} r={p.x:g}: {escape(p.effect.text())}</title></circle>"
            )
        parts.append(f'<rect x="{left + pw + 12}" y="{legend_y - 8}" width="12" height="3" fill="{colour}"/>')
        parts.append(f'<text x="{left + pw + 30}" y="{legend_y - 3}" {_FONT}>{escape(series.name)}</text>')
        legend_y += 16
    if curve.full_ft is not None:
        y = _fmt(py(curve.full_ft.value))
        parts.append(
            f'<line class="full-ft" x1="{left}" x2="{left + pw}" y1="{y}" y2="{y}" stroke="#333" '
            f'stroke-dasharray="6 4"><title>full FT: {escape(curve.full_ft.text())}</title></line>'
        )
        parts.append(f'<line x1="{left + pw + 12}" x2="{left + pw + 24}" y1="{legend_y - 6}" y2="{legend_y - 6}" '
                     f'stroke="#333" stroke-dasharray="3 2"/>')
        parts.append(f'<text x="{left + pw + 30}" y="{legend_y - 3}" {_FONT}>full FT</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def _diverging(value: float, scale: float) -> str:
    """White at 0, red for positive, blue for negative, saturating at +-scale."""
    t = max(-1.0, min(1.0, value / scale)) if scale > 0 else 0.0
    if t >= 0:
        r, g, b = 255, int(255 - 155 * t), int(255 - 165 * t)
    else:
        r, g, b = int(255 + 165 * t), int(255 + 120 * t), 255
    return f"rgb({r},{g},{b})"


def heatmap_svg(heatmap: Heatmap, cell_w: int = 150, cell_h: int = 54) -> Markup:
    """Cells coloured by effect, labelled with the effect and its CI; rows train, columns eval."""
    left, top = 170, 44
    n_rows, n_cols = len(heatmap.train_contexts), len(heatmap.eval_contexts)
    width, height = left + n_cols * cell_w + 10, top + n_rows * cell_h + 10
    finite = [abs(c.value) for row in heatmap.cells for c in row if c is not None and math.isfinite(c.value)]
    scale = max(finite, default=0.0) or 1.0
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="plot heatmap" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="train by eval heatmap for {escape(heatmap.trait)}">',
        f'<text x="{left + n_cols * cell_w / 2}" y="12" text-anchor="middle" {_FONT}>evaluated with</text>',
        f'<text x="6" y="{top - 8}" {_FONT}>trained with</text>',
    ]
    for j, name in enumerate(heatmap.eval_contexts):
        parts.append(f'<text x="{left + j * cell_w + cell_w / 2}" y="{top - 8}" text-anchor="middle" {_FONT}>{escape(name)}</text>')
    for i, name in enumerate(heatmap.train_contexts):
        y = top + i * cell_h
        parts.append(f'<text x="{left - 6}" y="{y + cell_h / 2 + 4}" text-anchor="end" {_FONT}>{escape(name)}</text>')
        for j in range(n_cols):
            cell = heatmap.cells[i][j] if i < len(heatmap.cells) and j < len(heatmap.cells[i]) else None
            x = left + j * cell_w
            fill = _diverging(cell.value, scale) if cell is not None else "#eee"
            label = f"{cell.value:+.3f}" if cell is not None else "n/a"
            ci = f"[{cell.ci_low:+.3f}, {cell.ci_high:+.3f}]" if cell is not None else ""
            parts.append(f'<rect class="cell" x="{x}" y="{y}" width="{cell_w}" height="{cell_h}" fill="{fill}" stroke="#fff"/>')
            parts.append(f'<text x="{x + cell_w / 2}" y="{y + cell_h / 2 - 2}" text-anchor="middle" {_FONT}>{label}</text>')
            parts.append(f'<text x="{x + cell_w / 2}" y="{y + cell_h / 2 + 13}" text-anchor="middle" font-family="sans-serif" font-size="9">{ci}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def bars_svg(loc: Localisation, width: int = 560, bar_h: int = 26) -> Markup:
    """Horizontal bars (effect with CI whiskers) per gating condition."""
    left, right, top = 190, 30, 10
    height = top + len(loc.bars) * (bar_h + 8) + 30
    pw = width - left - right
    effects: list[Effect] = [b.effect for b in loc.bars]
    x0, x1 = _range([v for e in effects for v in (e.ci_low, e.ci_high) if math.isfinite(v)])

    def px(v: float) -> float:
        return left + (v - x0) / (x1 - x0) * pw

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="plot localisation" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="localisation for {escape(loc.trait)}">',
    ]
    for i, bar in enumerate(loc.bars):
        y = top + i * (bar_h + 8)
        e = bar.effect
        a, b = sorted((px(0), px(e.value)))
        colour = PALETTE[i % len(PALETTE)]
        parts.append(f'<text x="{left - 6}" y="{y + bar_h / 2 + 4}" text-anchor="end" {_FONT}>{escape(bar.label)}</text>')
        parts.append(f'<rect class="bar" x="{_fmt(a)}" y="{y}" width="{_fmt(max(b - a, 1))}" height="{bar_h}" fill="{colour}">'
                     f"<title>{escape(bar.label)}: {escape(e.text())}</title></rect>")
        cy = y + bar_h / 2
        parts.append(f'<line x1="{_fmt(px(e.ci_low))}" x2="{_fmt(px(e.ci_high))}" y1="{cy}" y2="{cy}" stroke="#222" stroke-width="1.5"/>')
    axis_y = top + len(loc.bars) * (bar_h + 8)
    parts.append(f'<line x1="{_fmt(px(0))}" x2="{_fmt(px(0))}" y1="{top - 4}" y2="{axis_y}" stroke="#888"/>')
    for t in _ticks(x0, x1):
        parts.append(f'<text x="{_fmt(px(t))}" y="{axis_y + 14}" text-anchor="middle" {_FONT}>{t:+.3g}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
