"""The report page: one HTML file with its CSS, script, charts and thumbnails inline (opens from disk, makes
no request: the Content-Security-Policy below forbids any)."""

from __future__ import annotations

import json
import os
from datetime import datetime

from dashboard import assets
from dashboard.captions import dsg_html, taxonomy_html
from dashboard.charts import bars_svg, fmt, hbar_svg, histogram_svg, legend
from dashboard.charts import esc as _e
from dashboard.data import Bars, Histogram, ReportData, pretty, rule_of

CSP = ("default-src 'none'; img-src data:; media-src 'self' file:; style-src 'unsafe-inline'; "
       "script-src 'unsafe-inline'")



def _stats(h: Histogram) -> str:
    if not h.stats:
        return ""
    s = h.stats
    parts = [f"n <b>{fmt(s['n'])}</b>", f"mean <b>{fmt(s['mean'])}</b>", f"median <b>{fmt(s['median'])}</b>",
             f"p5–p95 <b>{fmt(s['p5'])}–{fmt(s['p95'])}</b>"]
    if h.missing:
        parts.append(f"<span title='null or NaN: not plotted'>missing <b>{h.missing:,}</b></span>")
    return '<div class="stats">' + "".join(f"<span>{p}</span>" for p in parts) + "</div>"


def hist_card(h: Histogram, sub: str = "", **kw) -> str:
    lines = "".join(f" · <span class='mono'>{_e(t.source)}</span> {'≥' if t.op == 'min' else '≤'} {fmt(t.value)}"
                    for t in h.thresholds)
    return (f'<div class="card" data-chart="{_e(h.column)}"><h3>{_e(h.title)}</h3>'
            f'<div class="sub">{_e(sub)}{lines}</div>{histogram_svg(h, **kw)}{_stats(h)}</div>')


def bars_card(b: Bars, sub: str = "", unit: str = "clips", table: bool = False, extra: str = "") -> str:
    rows = ""
    if table:
        rows = "".join(f'<tr data-label="{_e(lab)}" data-count="{k + d}"><td>{_e(lab)}</td><td class="n">{k + d:,}</td>'
                       f'<td class="n">{k:,}</td><td class="n">{d:,}</td></tr>'
                       for lab, k, d in zip(b.labels, b.kept, b.dropped))
        rows = (f'<details><summary>table</summary><table class="t" data-table="{_e(b.title)}"><tr><th>{_e(b.title)}'
                f'</th><th>{unit}</th><th>kept</th><th>dropped</th></tr>{rows}</table></details>')
    return (f'<div class="card" data-chart="{_e(b.title)}"><h3>{_e(b.title)}</h3><div class="sub">{_e(sub)}</div>'
            f'{bars_svg(b, unit=unit)}{rows}{extra}</div>')


def _funnel(d: ReportData) -> str:
    base = {"videos": d.funnel[0]["count"] if d.funnel else 0}
    items = []
    prev = None
    for step in d.funnel:
        unit = "videos" if step["key"].startswith("videos") else "clips"
        base.setdefault(unit, step["count"])
        width = 100.0 * step["count"] / base[unit] if base[unit] else 0.0
        pct = ""
        if prev and prev[0] == unit and prev[1]:
            pct = f'<span class="pct">{100.0 * step["count"] / prev[1]:.1f}%</span> of the step above'
        note = " · ".join(x for x in (pct, _e(step["note"])) if x)
        items.append(f'<li class="{_e(step["key"])}" data-metric="{_e(step["key"])}">'
                     f'<span class="fl">{_e(step["label"])}'
                     f'</span><span class="fbar"><span style="width:{width:.2f}%"></span></span>'
                     f'<span class="num" data-value="{step["count"]}">{step["count"]:,}</span>'
                     f'{f"<span class=note>{note}</span>" if note else ""}</li>')
        prev = (unit, step["count"])
    return f'<ol class="funnel">{"".join(items)}</ol>'


def _reasons(d: ReportData) -> str:
    if not d.has_keep:
        return ('<div class="empty">this run has no filter stage (no <code>keep</code> column): every clip is kept'
                '</div>')
    if not d.reasons:
        return '<div class="empty">no clip was dropped</div>'
    top = max(r["count"] for r in d.reasons)
    dropped = max(d.kpis["dropped"], 1)
    rows = "".join(
        f'<tr data-reason="{_e(r["reason"])}" data-count="{r["count"]}"><td>{_e(r["reason"])}</td>'
        f'<td class="n"><span class="inbar" style="width:{80 * r["count"] / top:.1f}px"></span>{r["count"]:,}</td>'
        f'<td class="n">{100 * r["count"] / dropped:.1f}%</td><td class="n">{r["sole"]:,}</td></tr>'
        for r in d.reasons)
    return ('<table class="t" id="drop-reasons"><tr><th>reason</th><th>clips</th><th>of dropped</th>'
            '<th title="clips dropped for this reason and no other">only reason</th></tr>' + rows + "</table>"
            '<div class="sub" style="margin-top:6px">a clip can fail several rules, so the counts can add up to '
            'more than the clips dropped</div>')


def _kpis(d: ReportData) -> str:
    k = d.kpis
    # one unit for the whole tile, chosen by the larger number (the footage before filtering)
    in_hours = k["hours"] >= 1

    def hours(h: float) -> str:
        return f"{h:,.2f} h" if in_hours else f"{h * 60:,.1f} min"

    scored = "scored clips" if d.score_columns else "clips without error"
    kept = f"kept ({k['kept_pct']:.1f}% of {scored})" if d.has_keep else "clips (no filter)"
    tiles = [("videos", fmt(k["videos"]), "input videos"), ("clips", fmt(k["clips"]), "clips cut"),
             ("kept", fmt(k["kept"]), kept),
             ("hours", hours(k["kept_hours"]), f"footage kept, of {hours(k['hours'])}"),
             ("mean", f"{fmt(k['mean_clip_s'])} s", "mean clip length"),
             ("errors", fmt(k["errors"]), "inputs or clips with errors")]
    return '<div class="kpis">' + "".join(
        f'<div class="kpi{" bad" if key == "errors" and k["errors"] else ""}" data-kpi="{key}"><div class="v">{v}</div>'
        f'<div class="l">{_e(label)}</div></div>' for key, v, label in tiles) + "</div>"


def _errors(d: ReportData) -> str:
    def block(groups: list[dict], what: str) -> str:
        if not groups:
            return ""
        rows = []
        for g in groups:
            files = "".join(f"<li><span class='mono'>{_e(f['file'])}</span>"
                            f"{' · ' + _e(f['clip_id']) if f.get('clip_id') else ''}</li>" for f in g["files"])
            more = f"<li>… and {g['count'] - len(g['files']):,} more</li>" if g["count"] > len(g["files"]) else ""
            similar = f' <span class="muted">(and {g["variants"] - 1:,} like it, other numbers)</span>' \
                if g.get("variants", 1) > 1 else ""
            rows.append(f'<tr data-cause="{_e(g["cause"])}" data-count="{g["count"]}"><td>{_e(g["cause"])}{similar}'
                        f'<details><summary>{len(g["files"])} file(s)</summary><ul class="err-files">{files}{more}</ul>'
                        f'</details></td><td>{_e(g["stage"])}</td><td class="n">{g["count"]:,}</td></tr>')
        return (f'<div class="card"><h3>{what}</h3><table class="t"><tr><th>cause</th><th>stage</th>'
                f'<th>{what.split()[0]}</th></tr>{"".join(rows)}</table></div>')

    body = block(d.video_errors, "videos that could not be processed") + \
        block(d.clip_errors, "clips that failed a stage")
    return body or ('<div class="card"><div class="empty">no errors: every input decoded and every clip was scored'
                    '</div></div>')


def _throughput(metrics: dict | None) -> str:
    """run.json's per-stage metrics (engine.metrics): the table ``vde inspect`` prints, with a bar of how busy
    each stage's workers were."""
    stages = (metrics or {}).get("stages") or {}
    if not stages:
        return ""
    tokens = any("tokens_per_s" in m for m in stages.values())

    def cell(key: str, value, text: str) -> str:  # noqa: ANN001 - a number or None
        raw = "" if value is None else _e(json.dumps(value))
        return f"<td class='n' data-key='{key}' data-value='{raw}'>{_e(text)}</td>"

    def num(value, spec: str = ",.1f") -> str:  # noqa: ANN001
        return "–" if value is None else format(value, spec)

    rows = []
    for name, m in stages.items():
        busy = m.get("busy_fraction")
        bar = (f"<div class='busybar' title='{100 * busy:.0f}% busy'><span style='width:{min(100.0, 100 * busy):.1f}%'>"
               f"</span></div>") if busy is not None else ""
        queue = "–" if m.get("queue_depth_mean") is None else \
            f"{m['queue_depth_mean']:,.1f} / {m['queue_depth_max']:,} {m.get('queue_unit') or ''}"
        cells = [cell("rows_in", m.get("rows_in"), num(m.get("rows_in"), ",")),
                 cell("rows_out", m.get("rows_out"), num(m.get("rows_out"), ",")),
                 cell("workers", m.get("workers"), num(m.get("workers"), ",")),
                 cell("rows_per_s", m.get("rows_per_s"), num(m.get("rows_per_s"))),
                 f"<td class='busy' data-key='busy_fraction' data-value='{'' if busy is None else busy}'>{bar}"
                 f"<span class='n'>{num(None if busy is None else 100 * busy, '.0f')}%</span></td>",
                 cell("wait_s", m.get("wait_s"), num(m.get("wait_s"), ",.2f")),
                 cell("queue_depth_mean", m.get("queue_depth_mean"), queue)]
        if tokens:
            cells.append(cell("tokens_per_s", m.get("tokens_per_s"), num(m.get("tokens_per_s")) if "tokens_per_s" in m
                              else ""))
        rows.append(f"<tr data-stage='{_e(name)}'><td class='mono'>{_e(name)}</td>{''.join(cells)}</tr>")
    head = "".join(f"<th>{h}</th>" for h in ("stage", "rows in", "rows out", "workers", "rows/s", "busy", "wait s",
                                             "queue mean / max") + (("tokens/s",) if tokens else ()))
    return (f'<div class="card" id="throughput" style="margin-top:14px"><h3>Throughput per stage</h3>'
            f'<div class="sub">this run only, {metrics.get("wall_s", 0):,.1f} s start to commit; busy: the share '
            f'of its workers\' time inside the stage; queue: what waited at its input</div>'
            f'<table class="t"><tr>{head}</tr>{"".join(rows)}</table></div>')


def _run(d: ReportData) -> str:
    run = d.run
    if not run:
        return '<div class="card"><div class="empty">run.json is missing: no run metadata to show</div></div>'
    p = run.get("pipeline", {})
    s = run.get("summary", {})
    wall = ""
    try:
        seconds = (datetime.fromisoformat(run["finished"]) - datetime.fromisoformat(run["started"])).total_seconds()
        wall = f"{seconds:.1f} s"
    except (KeyError, TypeError, ValueError):
        pass
    meta = [("pipeline", p.get("name")), ("pipeline file", p.get("source")), ("inputs", run.get("inputs")),
            ("output", d.output), ("executor", run.get("executor")), ("started", run.get("started")),
            ("finished", run.get("finished")), ("wall time", wall), ("earlier runs into this output",
                                                                      len(run.get("history", [])))]
    info = "".join(f"<tr><th>{_e(k)}</th><td class='mono'>{_e(v)}</td></tr>" for k, v in meta if v not in (None, ""))
    timing = s.get("stage_seconds") or {}
    timing_svg = hbar_svg(list(timing), [("", [float(v) for v in timing.values()], "time")],
                          title="stage seconds", unit="s", value_fmt=lambda v: f"{v:,.2f} s") if timing else \
        '<div class="empty">no timings</div>'
    versions = "".join(f"<tr><td>{_e(k)}</td><td class='mono'>{_e(v)}</td></tr>" for k, v in
                       (run.get("versions") or {}).items())
    thr = "".join(f"<tr><td class='mono'>{_e(t.source)}</td>"
                  f"<td class='n'>{'≥' if t.op == 'min' else '≤'} {fmt(t.value)}</td>"
                  f"<td class='mono'>{_e(t.column)}</td><td>{'drops clips' if t.drops else 'stage limit'}</td></tr>"
                  for t in d.thresholds)
    thr += "".join(f"<tr><td class='mono'>{_e(u['stage'])}.{_e(u['key'])}</td><td>{fmt(u['value'])}</td>"
                   f"<td class='muted'>no matching column</td><td></td></tr>" for u in d.unmatched_thresholds)
    stages = "".join(
        f"<tr><td class='mono'>{_e(st.get('stage'))}</td><td class='mono'>" + _e(", ".join(
            f"{k}={json.dumps(v, default=str)}" for k, v in st.items() if k not in ("stage", "resources"))) +
        "</td></tr>" for st in p.get("stages", []))
    history = "".join(f"<tr><td>{_e(h.get('started'))}</td><td class='n'>{(h.get('summary') or {}).get('clips', '')}"
                      f"</td><td class='n'>{(h.get('summary') or {}).get('kept', '')}</td></tr>"
                      for h in run.get("history", []))
    return (f'<div class="grid"><div class="card"><h3>Run</h3><table class="t">{info}</table></div>'
            f'<div class="card"><h3>Time per stage</h3><div class="sub">seconds, summed over workers</div>'
            f'{timing_svg}</div>'
            f'<div class="card"><h3>Thresholds and limits</h3><table class="t"><tr><th>key</th><th>value</th>'
            f'<th>column</th><th></th></tr>{thr or "<tr><td colspan=4 class=muted>none</td></tr>"}</table></div>'
            f'<div class="card"><h3>Versions</h3><table class="t">{versions}</table></div></div>'
            + _throughput(run.get("metrics")) +
            f'<div class="card" style="margin-top:14px"><h3>Stages</h3><table class="t">{stages}</table>'
            f'<details><summary>pipeline file</summary><pre>{_e(p.get("text", ""))}</pre></details>'
            + (f'<details><summary>earlier runs</summary><table class="t"><tr><th>started</th><th>clips</th>'
               f'<th>kept</th></tr>{history}</table></details>' if history else "") + "</div>")


def _json(payload) -> str:
    """Data for the page script (``</`` escaped so it cannot close the script element)."""
    return json.dumps(payload, separators=(",", ":"), default=str).replace("<", "\\u003c")


CARD_SCORES = 4  # scores on a gallery card (the sorted one is added); the rest are in the clip's details
DROPPED_GROUPS, DROPPED_PER_GROUP = 8, 6  # the dropped-clips gallery: reasons shown, clips per reason


def _whatif(d: ReportData) -> str:
    w = d.whatif
    if not w:
        return ""
    rows = []
    for i, r in enumerate(w["rules"]):
        source = f"{_e(r['key'])}"
        sign = "≥" if r["op"] == ">=" else "≤"
        rows.append(
            f'<div class="wi-rule" data-rule="{i}" data-threshold="{r["value"]!r}"><label for="wi-range-{i}">'
            f'<span class="mono">{source}</span> <span class="muted">({_e(r["column"])} {sign})</span></label>'
            f'<input type="range" id="wi-range-{i}" min="{r["min"]!r}" max="{r["max"]!r}" step="{r["step"]!r}" '
            f'value="{r["value"]!r}"><input type="number" id="wi-num-{i}" step="any" value="{r["value"]!r}" '
            f'aria-label="{source}"><button type="button" class="wi-reset" data-rule="{i}">reset</button>'
            f'<span class="wi-removed"></span></div>')
    sample = (f" Computed from a random sample of {w['rows']:,} of the {w['clips_ok']:,} clips; counts are scaled."
              if w["sampled"] else "")
    return (f'<div class="card" id="whatif"><h3>What if: move a threshold</h3><div class="sub">The kept count and '
            f'funnel below are recomputed in this page from every clip\'s values, as the filter would '
            f'(stage {_e(", ".join(w["stages"]))}); the run itself is unchanged.{sample}</div>'
            f'<div class="wi-rules">{"".join(rows)}</div>'
            f'<div class="wi-result">kept <b id="whatif-kept" data-value="{w["kept"]}">{w["kept"]:,}</b> of '
            f'{w["clips_ok"]:,} clips without error <span id="whatif-delta" class="muted"></span></div>'
            f'<ol class="funnel" id="whatif-funnel"></ol></div>'
            f'<script type="application/json" id="vde-whatif">{_json(w)}</script>')


def _scatter(d: ReportData) -> str:
    s = d.scatter
    if not s:
        return ""
    labels = {c: pretty(c) for c in s["columns"]}
    s = {**s, "labels": labels}
    options = "".join(f'<option value="{_e(c)}">{_e(labels[c])}</option>' for c in s["columns"])
    note = f"a random sample of {s['sampled']:,} of {s['of']:,} clips" if s["sampled"] < s["of"] else \
        f"all {s['of']:,} clips without error"
    return (f'<div class="card wide" id="scatter" data-chart="scatter"><h3>Two scores against each other</h3>'
            f'<div class="sub">{note}; blue kept, orange dropped</div><div class="controls">'
            f'<label>x <select id="scatter-x">{options}</select></label>'
            f'<label>y <select id="scatter-y">{options}</select></label></div>'
            f'<div id="scatter-plot"></div></div>'
            f'<script type="application/json" id="vde-scatter">{_json(s)}</script>')


def gallery_json(d: ReportData, thumbs: list[dict], report_dir: str | None) -> str:
    """The gallery's data for the page script (``</`` escaped so it cannot close the script element)."""
    items = []
    for row, thumb in zip(d.gallery_rows, thumbs or [{} for _ in d.gallery_rows]):
        caption = row.get("caption") or ""
        reason = row.get("drop_reason") or ""
        rules = list(dict.fromkeys(rule_of(r) for r in reason.split(";") if r.strip()))
        href = None
        clip_uri = row.get("clip_uri")
        if report_dir and clip_uri and "://" not in clip_uri and os.path.isfile(clip_uri):
            href = os.path.relpath(clip_uri, report_dir).replace(os.sep, "/")
        w, h = row.get("display_width") or row.get("width"), row.get("display_height") or row.get("height")
        fields = {k: v for k, v in row.items() if k not in ("caption", "tags", "kept", "video") and v is not None}
        items.append({
            "id": row.get("clip_id"), "video": row.get("video"), "kept": row["kept"], "reason": reason,
            "reasons": rules, "caption": caption,
            "words": len(caption.replace("[untrained model]", "").split()) if caption else None,
            "category": row.get("category"), "start_s": row.get("start_s"), "end_s": row.get("end_s"),
            "dur": row.get("clip_duration_s"), "res": f"{w}×{h}" if w and h else "", "tags": row["tags"],
            "s": {c: row.get(c) for c in d.score_columns}, "thumb": thumb, "href": href, "fields": fields,
        })
    payload = {"items": items, "scores": d.score_columns, "labels": {c: pretty(c) for c in d.score_columns},
               "card_scores": sorted((h.column for h in d.score_hists), key=lambda c: not any(
                   t.column == c and t.drops for t in d.thresholds))[:CARD_SCORES],  # filtered-on scores first
               "reasons": [[r["reason"], r["count"]] for r in d.reasons][:DROPPED_GROUPS],
               "per_reason": DROPPED_PER_GROUP,
               "total": d.kpis["clips"], "default_sort": d.score_columns[0] if d.score_columns else "duration"}
    return _json(payload)


def _gallery(d: ReportData) -> str:
    opts = [("duration", "duration"), ("clip_id", "clip id")] + [(c, pretty(c)) for c in d.score_columns]
    if d.caption_hist is not None:
        opts.append(("caption_words", "caption length"))
    default = d.score_columns[0] if d.score_columns else "duration"
    sort = "".join(f'<option value="{_e(v)}"{" selected" if v == default else ""}>{_e(t)}</option>' for v, t in opts)
    reasons = "".join(f'<option value="{_e(r["reason"])}">{_e(r["reason"])}</option>' for r in d.reasons)
    cats = d.bars.get("category")
    n_kept = sum(r["kept"] for r in d.gallery_rows)
    n_dropped = len(d.gallery_rows) - n_kept
    controls = (
        f'<div class="controls"><span class="seg" id="gallery-show"><button class="on" data-show="all">all '
        f'{len(d.gallery_rows)}</button><button data-show="kept">kept {n_kept}</button><button data-show="dropped">'
        f'dropped {n_dropped}</button></span>'
        f'<label>sort <select id="gallery-sort">{sort}</select></label><button id="gallery-dir">↓ high first</button>'
        + (f'<label>reason <select id="gallery-reason"><option value="">any</option>{reasons}</select></label>'
           if reasons else "")
        + ('<label>category <select id="gallery-category"><option value="">any</option>' + "".join(
            f'<option>{_e(c)}</option>' for c in cats.labels) + "</select></label>" if cats and cats.labels else "")
        + '<input id="gallery-q" type="search" placeholder="search captions, files" aria-label="search">'
        '<span class="count" id="gallery-count"></span></div>')
    return controls + '<div class="gallery" id="gallery-grid"></div>' + \
        '<noscript><div class="empty">the gallery needs JavaScript</div></noscript>'


def page(d: ReportData, thumbs: list[dict], report_dir: str | None = None) -> str:
    name = (d.run or {}).get("pipeline", {}).get("name", "run")
    errors_n = sum(g["count"] for g in d.video_errors) + sum(g["count"] for g in d.clip_errors)
    clip_cards = "".join(hist_card(h, "per clip") for h in d.clip_hists)
    clip_cards += "".join(bars_card(d.bars[k], "per clip") for k in ("resolution", "orientation", "fps", "camera_move")
                          if k in d.bars)
    video_cards = "".join(hist_card(h, "per decoded source video", kept_label="videos", y_title="videos")
                          for h in d.video_hists)
    if "codec" in d.bars:
        video_cards += bars_card(d.bars["codec"], "per decoded source video", unit="videos")
    if "buckets" in d.bars:
        video_cards += bars_card(d.bars["buckets"], "from shards/index.json (latent shape buckets)", unit="samples")
    score_cards = "".join(hist_card(h, "per scored clip") for h in d.score_hists) or \
        '<div class="card"><div class="empty">no score columns in this manifest (the pipeline has no scorer)' \
        '</div></div>'
    bookkeeping = "".join(hist_card(h, "per scored clip") for h in d.bookkeeping_hists)
    if bookkeeping:
        bookkeeping = (f'<details class="bookkeeping" id="bookkeeping"><summary>Bookkeeping: micro-conditions, '
                       f'sampling geometry and columns with one value in this run ({len(d.bookkeeping_hists)})'
                       f'</summary><div class="grid">{bookkeeping}</div></details>')
    content = ""
    if d.caption_hist is not None:
        content += hist_card(d.caption_hist, "words per caption")
    if "category" in d.bars:
        content += bars_card(d.bars["category"], "per clip with a category", table=True,
                             extra=taxonomy_html(d.extras.get("categories")))
    content += dsg_html(d.extras.get("dsg_video"))
    content += "".join(hist_card(h, "per clip that has it") for h in d.caption_hists)
    if not content:
        content = '<div class="card"><div class="empty">no captions, categories or DSG-Video results in this run ' \
                  '(the pipeline has no caption stage)</div></div>'
    banner = ('<div class="banner"><b>Untrained models.</b> Some scores or captions in this run come from models with '
              'random weights (test models): they say nothing about the videos.</div>') if d.untrained else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<title>vde report — {_e(name)}</title><style>{assets.CSS}</style></head>
<body>
<header class="top"><div class="brand"><b>vde</b> dataset report</div>
<div class="where" title="{_e(d.output)}">{_e(name)} · {_e(d.output)}</div>
<nav><a href="#overview">Overview</a><a href="#clips">Clips</a><a href="#scores">Scores</a>
<a href="#content">Captions</a><a href="#errors">Errors ({errors_n:,})</a>
<a href="#dropped">Dropped</a><a href="#gallery">Gallery</a><a href="#run">Run</a></nav></header>
<main>{banner}
<section id="overview"><h2>Overview</h2><p class="lead">From input videos to kept clips.</p>{_kpis(d)}
<div class="grid two" style="margin-top:14px"><div class="card"><h3>Filter funnel</h3>{_funnel(d)}</div>
<div class="card"><h3>Dropped clips by reason</h3>{_reasons(d)}</div>{_whatif(d)}</div></section>
<section id="clips"><h2>Clips</h2><p class="lead">Duration, size and frame rate of the clips the splitter cut,
and of their source videos.</p>{legend()}<div class="grid">{clip_cards}{video_cards}</div></section>
<section id="scores"><h2>Scores</h2><p class="lead">Every score column in the manifest; lines are the pipeline's
thresholds, the shaded side is what the filter drops.</p>{legend()}<div class="grid">{score_cards}{_scatter(d)}</div>
{bookkeeping}</section>
<section id="content"><h2>Captions and categories</h2><div class="grid">{content}</div></section>
<section id="errors"><h2>Errors</h2><p class="lead">Bad inputs by cause, with the files.</p>{_errors(d)}</section>
<section id="dropped"><h2>Dropped clips by reason</h2><p class="lead">Up to {DROPPED_PER_GROUP} sampled clips
for each rule that dropped clips, most frequent rule first.</p><div id="dropped-groups"></div></section>
<section id="gallery"><h2>Sample gallery</h2><p class="lead">A fixed random sample of kept and dropped clips plus
the lowest and highest clip of every score. Hover a clip to play its frames, click it for details.</p>
{_gallery(d)}</section>
<section id="run"><h2>Run</h2>{_run(d)}</section>
<footer>made by <span class="mono">vde report</span> from the manifests under {_e(d.output)}</footer>
</main>
<div id="tip" class="tip" hidden></div>
<div id="modal" class="modal" hidden><div class="box">
<button class="close" id="modal-close" aria-label="close">×</button><div id="modal-body"></div></div></div>
<script type="application/json" id="vde-gallery">{gallery_json(d, thumbs, report_dir)}</script>
<script>{assets.JS}</script>
<script>{assets.WHATIF_JS}</script>
</body></html>
"""
