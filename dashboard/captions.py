"""The caption side of the report: DSG-Video results (``<out>/dsg_video.json``) and the category taxonomy
(``<out>/categories.json``), both written by the captioners' ``finalize``; every key is optional.

``dsg_video.json`` (captioners/dsg.py): ``captions``, ``total_objects``, ``unique_objects``,
``hallucinated_objects``, ``sentences``, ``hallucinated_sentences``, ``dsg_video_i`` / ``dsg_video_s``
(fractions; shown as percentages like the paper's Table 8), ``untrained_model``, ``config`` and ``clips``:
per-clip details whose ``items`` carry ``item``, ``question``, ``p_yes`` and ``hallucinated``.
"""

from __future__ import annotations

import json
from collections import Counter

from dashboard.charts import esc as _e
from dashboard.charts import fmt, hbar_svg
from dashboard.data import pretty

TILES = (  # key, label; lower is better for the two DSG-Video rates (STIV App. I, Table 8)
    ("captions", "captions checked"),
    ("total_objects", "items mentioned (Total Object) ↑"),
    ("unique_objects", "distinct items (richness) ↑"),
    ("dsg_video_i", "DSG-Video_i: hallucinated items ↓"),
    ("dsg_video_s", "DSG-Video_s: sentences with a hallucination ↓"),
    ("hallucinated_objects", "hallucinated items"),
    ("hallucinated_sentences", "sentences with a hallucinated item"),
)
RATES = ("dsg_video_i", "dsg_video_s")
EXAMPLES = 8



def _value(key: str, value) -> str:
    if value is None:
        return "–"
    if key in RATES and isinstance(value, (int, float)):
        return f"{100 * value:.1f}%" if value <= 1 else f"{value:.1f}%"  # a fraction, or already a percentage
    return fmt(value)


def dsg_html(dsg: dict | None) -> str:
    """Cards for the DSG-Video results; empty when the run has none."""
    if not isinstance(dsg, dict):
        return ""
    known = dict(TILES)
    tiles = [(k, known[k], dsg[k]) for k, _ in TILES if k in dsg]
    tiles += [(k, pretty(k), v) for k, v in dsg.items() if k not in known and isinstance(v, (int, float))
              and not isinstance(v, bool)]
    tile_html = "".join(f'<div class="kpi" data-dsg="{_e(k)}"><div class="v">{_value(k, v)}</div>'
                        f'<div class="l">{_e(label)}</div></div>' for k, label, v in tiles)
    warn = ('<div class="banner">Checked with untrained (random-weight) models: these numbers say nothing about '
            'the captions.</div>') if dsg.get("untrained_model") else ""
    clips = [c for c in dsg.get("clips") or [] if isinstance(c, dict)]
    mentioned: Counter = Counter()
    hallucinated: Counter = Counter()
    examples = []
    for clip in clips:
        items = [i for i in clip.get("items") or [] if isinstance(i, dict) and i.get("item")]
        mentioned.update(str(i["item"]) for i in items)
        bad = [i for i in items if i.get("hallucinated")]
        hallucinated.update(str(i["item"]) for i in bad)
        if bad and len(examples) < EXAMPLES:
            examples.append((clip.get("clip_id", "?"), bad))
    cards = []
    for title, counter, cls in (("Most hallucinated items", hallucinated, "dropped"),
                                ("Most mentioned items", mentioned, "kept")):
        if counter:
            top = counter.most_common(15)
            cards.append(f'<div class="card" data-chart="{_e(title)}"><h3>{title}</h3><div class="sub">over the '
                         f'{len(clips):,} checked captions</div>' + hbar_svg(
                             [k for k, _ in top], [("", [v for _, v in top], cls)], title=title, unit="captions") +
                         "</div>")
    if examples:
        rows = "".join(
            f"<tr><td class='mono'>{_e(cid)}</td><td>" + "<br>".join(
                f"<b>{_e(i['item'])}</b> <span class='muted'>{_e(i.get('question', ''))} · max P(yes) "
                f"{fmt(max(i.get('p_yes') or [0]))}</span>" for i in bad) + "</td></tr>" for cid, bad in examples)
        cards.append(f'<div class="card"><h3>Hallucination examples</h3><div class="sub">items no sampled frame '
                     f'shows</div><table class="t">{rows}</table></div>')
    config = dsg.get("config")
    raw = (f"<details><summary>evaluator settings</summary><pre>{_e(json.dumps(config, indent=1, default=str))}"
           f"</pre></details>") if config else ""
    return (f'<div class="card wide" id="dsg"><h3>DSG-Video caption check</h3>'
            f'<div class="sub">STIV App. I: an LLM asks '
            f'about each item a caption mentions, a VLM answers on sampled frames; an item no frame shows is '
            f'hallucinated</div>{warn}<div class="kpis">{tile_html}</div>{raw}</div>' + "".join(cards))


def taxonomy_html(categories: dict | None) -> str:
    """The category list with descriptions from ``categories.json`` (a collapsed table)."""
    taxonomy = (categories or {}).get("taxonomy") if isinstance(categories, dict) else None
    if not isinstance(taxonomy, list) or not taxonomy:
        return ""
    counts = categories.get("counts") or {}
    rows = "".join(f"<tr><td>{_e(t.get('name'))}</td><td class='muted'>{_e(t.get('description', ''))}</td>"
                   f"<td class='n'>{fmt(counts.get(t.get('name')))}</td></tr>" for t in taxonomy if isinstance(t, dict))
    return (f"<details><summary>taxonomy ({len(taxonomy)} categories)</summary><table class='t'><tr><th>category"
            f"</th><th>meaning</th><th>kept clips</th></tr>{rows}</table></details>")
