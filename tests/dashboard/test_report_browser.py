"""The report in a real headless Chromium: the page of a real ``vde demo`` run shows the manifest's numbers,
draws its charts, loads nothing from anywhere and logs no error; the synthetic run's page shows the exact
drop reasons and categories, and its gallery sorts and filters."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest

from dashboard.data import pretty
from dashboard.report import build_report
from dashboard.synthetic import write_synthetic_run
from engine.manifest import Manifest

FUNNEL = "Object.fromEntries([...document.querySelectorAll('ol.funnel li[data-metric]')].map(l => " \
         "[l.dataset.metric, Number(l.querySelector('.num').dataset.value)]))"
FUNNEL_TEXT = "Object.fromEntries([...document.querySelectorAll('ol.funnel li[data-metric]')].map(l => " \
              "[l.dataset.metric, Number(l.querySelector('.num').textContent.replace(/,/g, ''))]))"
# Each chart: [its drawn marks with a real size, its own size on screen].
CHARTS = """[...document.querySelectorAll('svg.chart')].map(s => {
  const r = s.getBoundingClientRect();
  const marks = [...s.querySelectorAll('rect.bar')].filter(b => b.getBBox().width > 0 && b.getBBox().height > 0);
  return [s.closest('[data-chart]') ? s.closest('[data-chart]').dataset.chart : '?', marks.length,
          Math.round(r.width), Math.round(r.height)];
})"""
CARDS = "[...document.querySelectorAll('#gallery-grid figure.clip')]"


def _png_is_a_picture(path: Path) -> None:
    from PIL import Image

    image = np.asarray(Image.open(path).convert("L"))
    assert image.shape[0] > 900 and image.shape[1] == 1400
    assert image.std() > 10  # not a blank page


def _check_page(browser, html: Path) -> None:
    browser.open(html.as_uri())
    assert browser.console_errors() == []
    assert all(u.startswith(("file:", "data:")) for u in browser.requested_urls()), browser.requested_urls()
    charts = browser.eval(CHARTS)
    assert charts, "no chart on the page"
    for name, marks, width, height in charts:
        assert marks > 0 and width > 100 and height >= 20, (name, marks, width, height)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    from engine.cli import main

    out = tmp_path_factory.mktemp("demo") / "run"
    assert main(["demo", "--output", str(out), "--no-progress", "--no-report"]) == 0
    assert main(["report", str(out)]) == 0  # the report command itself builds the page under test
    return out


def test_demo_report_shows_the_manifest_numbers(browser, demo_run, tmp_path):
    html = demo_run / "report" / "index.html"
    _check_page(browser, html)
    manifest = Manifest(str(demo_run))
    videos, clips = manifest.read("videos"), manifest.read("clips")
    ok = pc.equal(clips.column("status"), "ok")
    expected = {"videos": videos.num_rows,
                "videos_ok": int(pc.sum(pc.equal(videos.column("status"), "ok").cast("int64")).as_py()),
                "videos_with_clips": len(set(pc.filter(clips.column("video_id"), ok).to_pylist())),
                "clips": clips.num_rows}
    if clips.num_rows - int(pc.sum(ok.cast("int64")).as_py()):
        expected["clips_ok"] = int(pc.sum(ok.cast("int64")).as_py())
    if "keep" in clips.column_names:
        expected["kept"] = int(pc.sum(pc.and_(ok, pc.fill_null(clips.column("keep"), True)).cast("int64")).as_py())
    if "shard" in clips.column_names:
        expected["sharded"] = int(pc.sum(pc.is_valid(clips.column("shard")).cast("int64")).as_py())
    assert browser.eval(FUNNEL) == expected
    assert browser.eval(FUNNEL_TEXT) == expected  # what a person reads
    assert expected["clips"] > 0 and expected["videos"] == 3 and expected.get("sharded", 0) > 0
    # every demo clip is in the gallery, each with its decoded frame strip
    cards = browser.eval(f"{CARDS}.map(f => [f.dataset.id, getComputedStyle(f.querySelector('.thumb'))"
                         ".backgroundImage.slice(0, 27)])")
    assert sorted(c[0] for c in cards) == sorted(clips.column("clip_id").to_pylist())
    assert all(img == 'url("data:image/jpeg;base64' for _, img in cards)
    shot = tmp_path / "demo.png"
    browser.screenshot(shot)
    _png_is_a_picture(shot)


def test_demo_report_layout_quality_first_compact_and_grouped(browser, demo_run):
    browser.open((demo_run / "report" / "index.html").as_uri())
    # quality scores in the open grid, micro-conditions and constants in a collapsed section of their own
    quality = browser.eval("[...document.querySelectorAll('#scores > .grid > [data-chart]')].map(c => c.dataset.chart)")
    kept_apart = browser.eval("[...document.querySelectorAll('#bookkeeping [data-chart]')].map(c => c.dataset.chart)")
    assert "motion_score" in quality and "clarity" in quality
    assert {"crop_top", "crop_left", "frame_stride", "num_frames", "orig_height"} <= set(kept_apart)
    assert not {c for c in quality if c.startswith(("crop_", "orig_"))} and "frame_stride" not in quality
    assert browser.eval("document.getElementById('bookkeeping').open") is False
    # every histogram has an x title (its card's title) and a y title
    titles = browser.eval("[...document.querySelectorAll('svg.hist')].map(s => [s.closest('.card')"
                          ".querySelector('h3').textContent, [...s.querySelectorAll('text.axis-title')]"
                          ".map(t => t.textContent)])")
    assert titles and all(len(t) == 2 and t[0].startswith(h) and t[1] in ("clips", "videos") for h, t in titles)
    # shard sizes in a unit that shows them
    note = browser.eval("document.querySelector('ol.funnel li[data-metric=sharded] .note').textContent")
    assert re.search(r"\d+ shards, [\d.]+ (B|kB|MB|GB)\b", note) and "0.00" not in note, note
    # compact cards: at most the first four scores plus the sorted one are visible
    visible = browser.eval(f"{CARDS}.map(f => [...f.querySelectorAll('.sc dd')].filter(e => !e.hidden).length)")
    assert visible and max(visible) <= 5
    # dropped clips grouped by the rule that dropped them: the groups are the reasons table, each card carries it
    table = browser.eval("[...document.querySelectorAll('#drop-reasons tr[data-reason]')].map(r => r.dataset.reason)")
    groups = browser.eval("[...document.querySelectorAll('#dropped-groups .dgroup')].map(g => [g.dataset.reason, "
                          "[...g.querySelectorAll('figure.clip .reason')].map(r => r.textContent)])")
    assert [g for g, _ in groups] == table and table
    clips = Manifest(str(demo_run)).read("clips").to_pylist()
    for rule, reasons in groups:
        column, op = rule.split()[:2]
        expected = [r for r in clips if r["keep"] is False and any(
            part.strip().startswith(column + " ") and f" {op} " in part for part in (r["drop_reason"] or "").split(";"))]
        assert 0 < len(reasons) == min(len(expected), 6) and all(column in r for r in reasons), (rule, reasons)
    assert browser.console_errors() == []


def _kept_by_the_filter(run_dir: Path, **override) -> int:
    """The kept count the run's own filter stage gives with ``override`` thresholds, clip by clip."""
    import dataclasses

    from filters.filter import Filter

    run = json.loads((run_dir / "run.json").read_text())
    config = next(s for s in run["pipeline"]["stages"] if s["stage"] == "filter")
    fields = {f.name for f in dataclasses.fields(Filter)} - {"resources"}
    stage = Filter(**{k: v for k, v in {**config, **override}.items() if k in fields})
    rows = Manifest(str(run_dir)).read("clips").to_pylist()
    return sum(1 for row in rows if row["status"] == "ok"
               and all(stage.failure(rule, row[rule.column]) is None for rule in stage.active_rules()))


THROUGHPUT = """[...document.querySelectorAll('#throughput tr[data-stage]')].map(r => [r.dataset.stage,
  Object.fromEntries([...r.querySelectorAll('td[data-key]')].map(c => [c.dataset.key, c.dataset.value === '' ? null
    : Number(c.dataset.value)])),
  [...r.querySelectorAll('td')].map(c => c.textContent.trim()),
  r.querySelector('.busybar span') ? r.querySelector('.busybar span').getBoundingClientRect().width
    / r.querySelector('.busybar').getBoundingClientRect().width : null])"""


def test_run_section_shows_the_throughput_of_every_stage(browser, demo_run):
    """The Run section's table is run.json's metrics: every stage of the pipeline in order, the numbers a person
    reads, and a busy bar as long as the busy fraction."""
    run = json.loads((demo_run / "run.json").read_text())
    metrics = run["metrics"]["stages"]
    assert list(metrics) == [s["stage"] for s in run["pipeline"]["stages"]]
    browser.open((demo_run / "report" / "index.html").as_uri())
    rows = browser.eval(THROUGHPUT)
    assert [r[0] for r in rows] == list(metrics)
    for name, values, texts, bar in rows:
        m = metrics[name]
        assert values == {k: m.get(k) for k in values}, name
        assert texts[1:4] == [f"{m['rows_in']:,}", f"{m['rows_out']:,}", f"{m['workers']:,}"], name
        if m["busy_fraction"] is None:
            assert bar is None and m["rows_in"] == 0, name
        else:
            assert texts[5] == f"{100 * m['busy_fraction']:.0f}%" and bar == pytest.approx(m["busy_fraction"], abs=0.02)
    # the demo runs every stage on its videos in this process: one worker each, work done, rows through
    probe = metrics["probe"]
    assert probe["rows_in"] == 3 and probe["workers"] == 1 and 0 < probe["busy_fraction"] <= 1
    assert any(m["rows_out"] > m["rows_in"] for m in metrics.values())  # the splitter
    assert metrics["caption"]["tokens_per_s"] > 0 and metrics["categorize"]["tokens"] >= probe["rows_out"]
    assert metrics["dedup"]["rows_in"] == 0 and metrics["dedup"]["finalize_s"] > 0  # a barrier: on the driver


def test_threshold_whatif_recomputes_the_kept_count_as_the_filter_would(browser, demo_run):
    browser.open((demo_run / "report" / "index.html").as_uri())
    keys = browser.eval("[...document.querySelectorAll('.wi-rule')].map(r => r.querySelector('label .mono')"
                        ".textContent)")
    assert keys == ["min_duration_s", "min_motion", "max_text_area"]  # the demo filter's rules, in its order
    assert int(browser.eval("document.getElementById('whatif-kept').dataset.value")) == _kept_by_the_filter(demo_run)
    k = keys.index("min_motion")
    clips = Manifest(str(demo_run)).read("clips")
    motion = sorted(v for v, st in zip(clips.column("motion_score").to_pylist(), clips.column("status").to_pylist())
                    if st == "ok" and v is not None and not np.isnan(v))
    seen = set()
    for target in (motion[len(motion) // 2], motion[-1], motion[0]):
        browser.eval(f"(r => {{ r.value = '{target!r}'; r.dispatchEvent(new Event('input')); }})"
                     f"(document.getElementById('wi-range-{k}'))")
        used = float(browser.eval(f"document.querySelector('.wi-rule[data-rule=\"{k}\"]').dataset.threshold"))
        assert abs(used - target) <= (motion[-1] - motion[0]) / 100 + 1e-9  # the slider's step, at most
        expected = _kept_by_the_filter(demo_run, min_motion=used)
        assert int(browser.eval("document.getElementById('whatif-kept').dataset.value")) == expected
        assert browser.eval("document.getElementById('whatif-kept').textContent") == f"{expected:,}"
        last = browser.eval("[...document.querySelectorAll('#whatif-funnel li .num')].pop().dataset.value")
        assert int(last) == expected
        seen.add(expected)
    assert len(seen) >= 2, "moving min_motion across its values never changed the kept count"
    # the exact value typed into the number box
    browser.eval(f"(r => {{ r.value = '{motion[-1]!r}'; r.dispatchEvent(new Event('input')); }})"
                 f"(document.getElementById('wi-num-{k}'))")
    assert int(browser.eval("document.getElementById('whatif-kept').dataset.value")) == \
        _kept_by_the_filter(demo_run, min_motion=motion[-1])
    browser.eval(f"document.querySelector('.wi-reset[data-rule=\"{k}\"]').click()")
    assert int(browser.eval("document.getElementById('whatif-kept').dataset.value")) == _kept_by_the_filter(demo_run)
    assert browser.console_errors() == []


def test_scatter_draws_every_clip_in_its_colour(browser, demo_run):
    browser.open((demo_run / "report" / "index.html").as_uri())
    clips = Manifest(str(demo_run)).read("clips")
    for x, y in (("motion_score", "clarity"), ("text_area_max", "clip_duration_s")):
        browser.eval(f"(s => {{ s.value = '{x}'; s.dispatchEvent(new Event('change')); }})"
                     f"(document.getElementById('scatter-x'))")
        browser.eval(f"(s => {{ s.value = '{y}'; s.dispatchEvent(new Event('change')); }})"
                     f"(document.getElementById('scatter-y'))")
        rows = [r for r in clips.to_pylist() if r["status"] == "ok" and all(
            r[c] is not None and np.isfinite(r[c]) for c in (x, y))]
        kept = sum(1 for r in rows if r["keep"] is not False)
        drawn = browser.eval("[...document.querySelectorAll('#scatter-plot circle.pt')].map(c => c.classList[1])")
        assert len(drawn) == len(rows) and drawn.count("kept") == kept and drawn.count("dropped") == len(rows) - kept
        titles = browser.eval("[...document.querySelectorAll('#scatter-plot text.axis-title')].map(t => t.textContent)")
        assert titles == [pretty(x), pretty(y)]


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory, demo_videos) -> tuple[Path, dict]:
    folder, truth = demo_videos
    sources = [{"uri": str(folder / name), "frames": g.frames, "width": g.width, "height": g.height,
                "fps": float(g.fps)} for name, g in truth.items()]
    out = tmp_path_factory.mktemp("synthetic") / "run"
    gt = write_synthetic_run(str(out), clips=2000, seed=7, sources=sources)
    build_report(str(out), gallery=48)
    return out, gt


def test_synthetic_report_counts_sorting_and_filters(browser, synthetic_run, tmp_path):
    out, gt = synthetic_run
    _check_page(browser, out / "report" / "index.html")
    assert browser.eval(FUNNEL_TEXT) == {k: gt[k] for k in ("videos", "videos_ok", "videos_with_clips", "clips",
                                                            "clips_ok", "kept", "sharded")}
    reasons = browser.eval("Object.fromEntries([...document.querySelectorAll('#drop-reasons tr[data-reason]')]"
                           ".map(r => [r.cells[0].textContent, Number(r.cells[1].textContent.replace(/,/g, ''))]))")
    assert reasons == gt["reasons"]
    categories = browser.eval("Object.fromEntries([...document.querySelectorAll('table[data-table=Category] "
                              "tr[data-label]')].map(r => [r.dataset.label, Number(r.dataset.count)]))")
    assert categories == gt["categories"]
    assert browser.eval("document.querySelectorAll('#scores svg.chart .thr').length") == 5
    dsg = gt["dsg"]
    tiles = browser.eval("Object.fromEntries([...document.querySelectorAll('#dsg [data-dsg]')]"
                         ".map(e => [e.dataset.dsg, e.querySelector('.v').textContent]))")
    assert tiles["captions"] == f"{dsg['captions']:,}" and tiles["total_objects"] == f"{dsg['total_objects']:,}"
    assert tiles["dsg_video_i"] == f"{100 * dsg['dsg_video_i']:.1f}%"
    assert tiles["dsg_video_s"] == f"{100 * dsg['dsg_video_s']:.1f}%"
    causes = browser.eval("[...document.querySelectorAll('#errors tr[data-cause]')].map(r => r.dataset.cause)")
    assert causes and not any("#" in c for c in causes)  # error causes as written, digits and all

    # sort by aesthetic, highest first: the cards come in that order, clips without a value last
    browser.eval("(s => { s.value = 'aesthetic_score'; s.dispatchEvent(new Event('change')); })"
                 "(document.getElementById('gallery-sort'))")
    values = browser.eval(f"{CARDS}.map(f => f.querySelector('dd[data-score=aesthetic_score]').textContent)")
    numbers = [float(v) for v in values if v != "–"]
    assert len(numbers) > 40 and numbers == sorted(numbers, reverse=True)
    browser.eval("document.getElementById('gallery-dir').click()")
    values = browser.eval(f"{CARDS}.map(f => f.querySelector('dd[data-score=aesthetic_score]').textContent)")
    assert [float(v) for v in values if v != "–"] == sorted(numbers)

    # show dropped clips only, then one reason: every card shown carries it
    browser.eval("document.querySelector('#gallery-show [data-show=dropped]').click()")
    shown = browser.eval(f"{CARDS}.map(f => f.className)")
    assert shown and all("dropped" in c for c in shown)
    browser.eval("(s => { s.value = 'blurry'; s.dispatchEvent(new Event('change')); })"
                 "(document.getElementById('gallery-reason'))")
    texts = browser.eval(f"{CARDS}.map(f => f.querySelector('.reason').textContent)")
    assert all("blurry" in t for t in texts)
    # a click opens the clip's details
    browser.eval(f"{CARDS}.length && {CARDS}[0].click()")
    if texts:
        assert browser.eval("document.getElementById('modal').hidden") is False
    assert browser.console_errors() == []
    shot = tmp_path / "synthetic.png"
    browser.screenshot(shot)
    _png_is_a_picture(shot)
