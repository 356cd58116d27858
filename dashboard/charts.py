"""Charts as inline SVG strings: no chart library, no script needed to draw them, crisp at any zoom.

Every mark that carries a number has a ``data-tip`` (the page's script shows it as a tooltip) and a
``<title>`` (the browser's own tooltip, and what a screen reader reads) — so charts work with scripts off.
Colours: kept = blue, dropped = orange (distinguishable with the common colour-vision deficiencies).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

from dashboard.data import Bars, Histogram, Threshold

W, H = 400, 224  # histogram viewBox; the SVG scales to its card's width
ML, MR, MT, MB = 50, 12, 24, 44  # margins: y labels and title, threshold labels, x labels and title


def esc(value) -> str:
    """``value`` as text safe inside HTML and attribute values."""
    return escape(str(value), quote=True)


def fmt(value: float | int | None, digits: int = 3) -> str:
    """Short human number: 1234567 -> 1.23M, 0.012345 -> 0.0123, 12 -> 12."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, int) or float(value).is_integer() and abs(value) < 1e15:
        v = int(value)
        if abs(v) >= 10_000:
            for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
                if abs(v) >= div:
                    return f"{v / div:.{digits}g}{unit}"
        return f"{v:,}"
    v = float(value)
    if abs(v) >= 10_000:
        return fmt(round(v), digits)
    return f"{v:.{digits}g}"


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (Heckbert's nice numbers)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(count - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    t = first
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    return ticks


def count_ticks(top: float, count: int = 4) -> list[int]:
    """Whole-number ticks from 0 to the first tick at or above ``top`` (a count axis)."""
    raw = max(top / max(count - 1, 1), 1.0)
    mag = 10 ** math.floor(math.log10(raw))
    step = int(next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw))
    return list(range(0, int(math.ceil(top / step)) * step + 1, step))


def _title(text: str) -> str:
    return f"<title>{escape(text)}</title>"


def _threshold_label(t: Threshold) -> str:
    return f"{'≥' if t.op == 'min' else '≤'} {fmt(t.value)}"


def histogram_svg(h: Histogram, kept_label: str = "kept", dropped_label: str = "dropped",
                  y_title: str = "clips") -> str:
    """Stacked kept/dropped histogram with each threshold as a line over the excluded (shaded) side."""
    if not h.edges:
        return f'<div class="empty">no values{f" ({h.missing:,} missing)" if h.missing else ""}</div>'
    lo, hi = h.edges[0], h.edges[-1]
    totals = [k + d for k, d in zip(h.kept, h.dropped)]
    ymax = max(max(totals), 1)
    yticks = count_ticks(ymax)
    ytop = yticks[-1]
    pw, ph = W - ML - MR, H - MT - MB

    def sx(v: float) -> float:
        return ML + (v - lo) / (hi - lo) * pw

    def sy(v: float) -> float:
        return MT + ph - v / ytop * ph

    out = [f'<svg class="chart hist" viewBox="0 0 {W} {H}" role="img" aria-label="{escape(h.title)}" '
           f'data-column="{escape(h.column)}">']
    for t in yticks:
        y = sy(t)
        out.append(f'<line class="grid" x1="{ML}" x2="{W - MR}" y1="{y:.1f}" y2="{y:.1f}"/>'
                   f'<text class="ylab" x="{ML - 6}" y="{y + 3.5:.1f}">{fmt(t)}</text>')
    for t in h.thresholds:  # shaded side first, so bars sit on top
        x = min(max(sx(t.value), ML), W - MR)
        x0, x1 = (ML, x) if t.op == "min" else (x, W - MR)
        if t.drops:
            out.append(f'<rect class="excl" x="{x0:.1f}" y="{MT}" width="{max(x1 - x0, 0):.1f}" height="{ph}"/>')
    gap = 1.0 if pw / len(totals) > 4 else 0.0
    for i, (k, d) in enumerate(zip(h.kept, h.dropped)):
        a, b = h.edges[i], h.edges[i + 1]
        x0, x1 = sx(a), sx(b) - gap
        rng = f"{fmt((a + b) / 2)}" if h.integer else f"{fmt(a)} – {fmt(b)}"
        tip = f"{h.title}: {rng}\n{k + d:,} clips"
        if d:
            tip += f" · {k:,} {kept_label} · {d:,} {dropped_label}"
        if k:
            out.append(f'<rect class="bar kept" x="{x0:.2f}" y="{sy(k):.2f}" width="{max(x1 - x0, 0.5):.2f}" '
                       f'height="{sy(0) - sy(k):.2f}"/>')
        if d:
            out.append(f'<rect class="bar dropped" x="{x0:.2f}" y="{sy(k + d):.2f}" '
                       f'width="{max(x1 - x0, 0.5):.2f}" height="{sy(k) - sy(k + d):.2f}"/>')
        out.append(f'<rect class="hit" x="{x0:.2f}" y="{MT}" width="{max(x1 - x0 + gap, 0.5):.2f}" height="{ph}" '
                   f'data-tip="{escape(tip)}">{_title(tip)}</rect>')
    for t in h.thresholds:
        x = min(max(sx(t.value), ML), W - MR)
        tip = f"{t.source} = {fmt(t.value)}: " + ("clips " + ("below" if t.op == "min" else "above") +
                                                  " are dropped" if t.drops else "a limit of that stage")
        cls = "thr" if t.drops else "thr limit"
        anchor = "start" if x < ML + pw / 2 else "end"
        dx = 3 if anchor == "start" else -3
        out.append(f'<g class="{cls}" data-tip="{escape(tip)}">{_title(tip)}'
                   f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{MT - 6}" y2="{MT + ph}"/>'
                   f'<text x="{x + dx:.1f}" y="{MT - 9}" text-anchor="{anchor}">'
                   f'{escape(_threshold_label(t))}</text></g>')
    xticks = [v for v in nice_ticks(lo, hi, 6) if lo <= v <= hi]
    if h.integer:
        xticks = [v for v in xticks if float(v).is_integer()]
    for v in xticks:
        x = sx(v)
        out.append(f'<line class="tick" x1="{x:.1f}" x2="{x:.1f}" y1="{MT + ph}" y2="{MT + ph + 4}"/>'
                   f'<text class="xlab" x="{x:.1f}" y="{MT + ph + 16}">{fmt(v)}</text>')
    out.append(f'<line class="axis" x1="{ML}" x2="{W - MR}" y1="{MT + ph}" y2="{MT + ph}"/>')
    x_title = h.title + (" · range p0.5–p99.5, outliers in the end bars" if h.clipped else "")
    mid_y = MT + ph / 2
    out.append(f'<text class="axis-title" x="{ML + pw / 2:.1f}" y="{H - 6}" text-anchor="middle">'
               f'{escape(x_title)}</text><text class="axis-title" x="12" y="{mid_y:.1f}" text-anchor="middle" '
               f'transform="rotate(-90 12 {mid_y:.1f})">{escape(y_title)}</text>')
    out.append("</svg>")
    return "".join(out)


def hbar_svg(labels: Sequence[str], series: Sequence[tuple[str, Sequence[float], str]], *, title: str,
             unit: str = "clips", other: int = 0, value_fmt=fmt, label_width: int = 120) -> str:
    """Horizontal bars, one row per label, the series stacked (name, values, css class)."""
    if not labels:
        return '<div class="empty">no values</div>'
    rows = list(labels) + (["(other)"] if other else [])
    values = [list(v) + ([other] if other and i == 0 else [0] if other else []) for i, (_, v, _) in enumerate(series)]
    totals = [sum(v[r] for v in values) for r in range(len(rows))]
    grand = sum(totals) or 1
    vmax = max(max(totals), 1e-12)
    row_h, top = 22, 4
    height = top + row_h * len(rows) + 4
    bar_w = W - label_width - 76
    out = [f'<svg class="chart bars" viewBox="0 0 {W} {height}" role="img" aria-label="{escape(title)}">']
    for r, label in enumerate(rows):
        y = top + r * row_h
        short = label if len(label) <= 20 else label[:19] + "…"
        x = label_width
        parts = []
        for (name, _, cls), vals in zip(series, values):
            v = vals[r]
            if v <= 0:
                continue
            w = v / vmax * bar_w
            out.append(f'<rect class="bar {cls}" x="{x:.2f}" y="{y + 3}" width="{max(w, 1):.2f}" '
                       f'height="{row_h - 6}"/>')
            x += w
            parts.append(f"{value_fmt(v)} {name}" if name else value_fmt(v))
        pct = f" ({100 * totals[r] / grand:.1f}%)" if unit == "clips" or unit == "videos" else ""
        tip = f"{label}: {value_fmt(totals[r])} {unit}{pct}" + (f"\n{' · '.join(parts)}" if len(parts) > 1 else "")
        out.append(f'<text class="blab" x="{label_width - 8}" y="{y + row_h / 2 + 4}">{escape(short)}</text>'
                   f'<text class="bval" x="{x + 5:.1f}" y="{y + row_h / 2 + 4}">{value_fmt(totals[r])}{pct}</text>'
                   f'<rect class="hit" x="0" y="{y}" width="{W}" height="{row_h}" data-tip="{escape(tip)}">'
                   f'{_title(tip)}</rect>')
    out.append("</svg>")
    return "".join(out)


def bars_svg(b: Bars, unit: str = "clips", split: bool = True) -> str:
    series = [("kept", b.kept, "kept"), ("dropped", b.dropped, "dropped")] if split and any(b.dropped) \
        else [("", [k + d for k, d in zip(b.kept, b.dropped)], "kept")]
    return hbar_svg(b.labels, series, title=b.title, unit=unit, other=b.other)


def legend(kept_label: str = "kept", dropped_label: str = "dropped", threshold: bool = True) -> str:
    items = [f'<span class="sw kept"></span>{kept_label}', f'<span class="sw dropped"></span>{dropped_label}']
    if threshold:
        items.append('<span class="sw thr"></span>filter threshold (shaded side is dropped)')
    return '<div class="legend">' + "".join(f"<span>{i}</span>" for i in items) + "</div>"
