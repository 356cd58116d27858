"""The page's stylesheet and script, inlined into index.html (kept as Python strings so they ship inside the
package without package-data configuration). No third-party code: the charts are SVG made in Python."""

CSS = r"""
:root { --bg:#f5f6f8; --card:#fff; --ink:#1d2330; --muted:#6a7282; --line:#e3e6eb; --kept:#3b7dd8;
  --dropped:#f08c36; --thr:#d6336c; --ok:#2b9a66; --err:#c92a2a; --radius:10px; }
* { box-sizing:border-box; }
html { scroll-behavior:smooth; scroll-padding-top:64px; }
body { margin:0; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
  color:var(--ink); background:var(--bg); }
header.top { position:sticky; top:0; z-index:10; display:flex; align-items:center; gap:18px; padding:10px 28px;
  background:#1d2330; color:#fff; box-shadow:0 1px 4px rgba(0,0,0,.2); flex-wrap:wrap; }
header.top .brand { font-weight:700; letter-spacing:.02em; }
header.top .brand b { color:#8fb8ff; }
header.top .where { color:#aeb6c4; font-size:12.5px; overflow:hidden; text-overflow:ellipsis; white-space:nowrap;
  max-width:40vw; }
header.top nav { margin-left:auto; display:flex; gap:4px; flex-wrap:wrap; }
header.top nav a { color:#dfe5ee; text-decoration:none; padding:5px 10px; border-radius:6px; font-size:13px; }
header.top nav a:hover { background:rgba(255,255,255,.12); }
main { max-width:1380px; margin:0 auto; padding:18px 28px 60px; }
section { margin-top:26px; }
h2 { font-size:19px; margin:0 0 4px; }
h2 + p.lead { margin:0 0 12px; color:var(--muted); }
h3 { font-size:14px; margin:0 0 8px; }
.muted { color:var(--muted); }
.banner { background:#fff4e5; border:1px solid #f5c27a; color:#7a4a00; padding:10px 14px; border-radius:var(--radius);
  margin-top:16px; }
.kpis { display:grid; grid-template-columns:repeat(auto-fit,minmax(160px,1fr)); gap:12px; }
.kpi { background:var(--card); border-radius:var(--radius); padding:14px 16px; box-shadow:0 1px 2px rgba(16,24,40,.06);
  border:1px solid var(--line); }
.kpi .v { font-size:26px; font-weight:650; font-variant-numeric:tabular-nums; }
.kpi .l { color:var(--muted); font-size:12.5px; }
.kpi.bad .v { color:var(--err); }
.grid { display:grid; gap:14px; grid-template-columns:repeat(auto-fill,minmax(360px,1fr)); align-items:start;
  grid-auto-flow:row dense; }
.grid.two { grid-template-columns:minmax(380px,1fr) minmax(380px,1.2fr); }
@media (max-width:900px) { .grid.two { grid-template-columns:1fr; } }
.card { background:var(--card); border:1px solid var(--line); border-radius:var(--radius); padding:14px 16px 12px;
  box-shadow:0 1px 2px rgba(16,24,40,.06); min-width:0; }
@media (min-width:1100px) { .card.wide { grid-column:span 2; } }
.card .sub { color:var(--muted); font-size:12px; margin:-4px 0 6px; }
.stats { display:flex; flex-wrap:wrap; gap:4px 12px; font-size:12px; color:var(--muted); margin-top:4px;
  font-variant-numeric:tabular-nums; }
.stats b { color:var(--ink); font-weight:600; }
.empty { color:var(--muted); font-style:italic; padding:30px 0; text-align:center; }
svg.chart { width:100%; height:auto; display:block; overflow:visible; }
svg.chart text { font-size:11px; fill:#4b5362; }
svg.chart .ylab { text-anchor:end; } svg.chart .xlab { text-anchor:middle; }
svg.chart .xlab.clipnote { text-anchor:end; font-size:9.5px; fill:#8a93a3; }
svg.chart .grid { stroke:#edf0f3; } svg.chart .axis, svg.chart .tick { stroke:#9aa3b1; }
svg.chart .bar.kept { fill:var(--kept); } svg.chart .bar.dropped { fill:var(--dropped); }
svg.chart .bar.time { fill:#7c6bd6; }
svg.chart .hit { fill:transparent; cursor:crosshair; } svg.chart .hit:hover { fill:rgba(29,35,48,.06); }
svg.chart .excl { fill:rgba(214,51,108,.07); }
svg.chart .thr line { stroke:var(--thr); stroke-width:1.6; stroke-dasharray:4 3; }
svg.chart .thr text { fill:var(--thr); font-weight:600; }
svg.chart .thr.limit line { stroke:#7a8394; } svg.chart .thr.limit text { fill:#7a8394; }
svg.chart .blab { text-anchor:end; fill:#2c3340; } svg.chart .bval { fill:#4b5362; font-variant-numeric:tabular-nums; }
.legend { display:flex; flex-wrap:wrap; gap:16px; font-size:12.5px; color:var(--muted); margin:0 0 10px; }
.legend .sw { display:inline-block; width:12px; height:12px; border-radius:3px; margin-right:6px; vertical-align:-2px; }
.sw.kept { background:var(--kept); } .sw.dropped { background:var(--dropped); }
.sw.thr { background:none; border-left:2px dashed var(--thr); border-radius:0; width:8px; }
ol.funnel { list-style:none; margin:0; padding:0; }
ol.funnel li { display:grid; grid-template-columns:140px 1fr 90px; align-items:center; gap:10px; padding:6px 0;
  border-bottom:1px dashed var(--line); }
ol.funnel li:last-child { border-bottom:0; }
ol.funnel .fl { font-weight:550; }
ol.funnel .fbar { height:18px; background:#eef1f5; border-radius:4px; overflow:hidden; }
ol.funnel .fbar span { display:block; height:100%; background:linear-gradient(90deg,#5b93e3,var(--kept)); }
ol.funnel li.kept .fbar span { background:linear-gradient(90deg,#38b37b,var(--ok)); }
ol.funnel .num { text-align:right; font-size:18px; font-weight:650; font-variant-numeric:tabular-nums; }
ol.funnel .note { grid-column:2 / 4; font-size:12px; color:var(--muted); margin-top:-4px; }
ol.funnel .note .pct { color:var(--ink); }
table.t { border-collapse:collapse; width:100%; font-size:13px; }
table.t th { text-align:left; color:var(--muted); font-weight:600; font-size:12px; border-bottom:1px solid var(--line);
  padding:6px 8px; }
table.t td { padding:5px 8px; border-bottom:1px solid #f0f2f5; vertical-align:top; }
table.t td.n { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
table.t .inbar { display:inline-block; height:10px; background:var(--dropped); border-radius:2px; vertical-align:middle;
  margin-right:8px; }
table.t code, .mono { font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; font-size:12px; }
details > summary { cursor:pointer; color:#3b5bdb; margin:6px 0; }
pre { background:#f3f5f8; border:1px solid var(--line); border-radius:8px; padding:10px 12px; overflow:auto;
  font-size:12px; max-height:420px; }
.err-files { margin:4px 0 0; padding-left:18px; color:#404756; }
.controls { display:flex; flex-wrap:wrap; gap:10px; align-items:center; background:var(--card); padding:10px 12px;
  border:1px solid var(--line); border-radius:var(--radius); margin-bottom:12px; position:sticky; top:52px; z-index:5; }
.controls label { font-size:12.5px; color:var(--muted); display:flex; gap:6px; align-items:center; }
.controls select, .controls input, .controls button { font:inherit; font-size:13px; padding:5px 8px;
  border:1px solid #cfd5de; border-radius:6px; background:#fff; color:var(--ink); }
.controls button { cursor:pointer; }
.seg { display:inline-flex; border:1px solid #cfd5de; border-radius:6px; overflow:hidden; }
.seg button { border:0; border-radius:0; border-right:1px solid #cfd5de; }
.seg button:last-child { border-right:0; }
.seg button.on { background:#1d2330; color:#fff; }
.controls .count { margin-left:auto; color:var(--muted); font-size:12.5px; }
.gallery { display:grid; grid-template-columns:repeat(auto-fill,minmax(230px,1fr)); gap:12px; }
figure.clip { margin:0; background:var(--card); border:1px solid var(--line); border-radius:var(--radius);
  overflow:hidden; display:flex; flex-direction:column; cursor:pointer; transition:box-shadow .15s; }
figure.clip:hover { box-shadow:0 4px 14px rgba(16,24,40,.14); }
figure.clip.dropped { border-top:3px solid var(--dropped); } figure.clip.kept { border-top:3px solid var(--kept); }
.thumb { position:relative; width:100%; background-color:#20242c; background-repeat:no-repeat;
  background-position:0 0; }
.thumb.none { display:flex; align-items:center; justify-content:center; color:#9aa3b1; font-size:12px; padding:10px;
  text-align:center; aspect-ratio:16/9; }
.thumb .badge { position:absolute; top:6px; left:6px; font-size:11px; font-weight:650; padding:2px 7px;
  border-radius:10px; color:#fff; background:var(--kept); }
figure.clip.dropped .badge { background:var(--dropped); }
.thumb .frames { position:absolute; bottom:6px; right:6px; font-size:10.5px; color:#fff; background:rgba(0,0,0,.5);
  padding:1px 6px; border-radius:8px; }
figcaption { padding:8px 10px 10px; display:flex; flex-direction:column; gap:5px; font-size:12.5px; }
figcaption .cap { display:-webkit-box; -webkit-line-clamp:3; -webkit-box-orient:vertical; overflow:hidden; }
figcaption .cap.none { color:var(--muted); font-style:italic; }
figcaption .meta { color:var(--muted); font-size:11.5px; overflow:hidden; text-overflow:ellipsis; white-space:nowrap; }
figcaption .reason { color:#b35a00; font-size:11.5px; }
figcaption .tags { color:#6741d9; font-size:11px; }
dl.sc { display:grid; grid-template-columns:auto 1fr; gap:1px 8px; margin:0; font-size:11.5px; }
dl.sc dt { color:var(--muted); } dl.sc dd { margin:0; text-align:right; font-variant-numeric:tabular-nums; }
dl.sc dd.sorted, dl.sc dt.sorted { font-weight:700; color:var(--ink); }
.tip { position:fixed; z-index:50; pointer-events:none; background:#1d2330; color:#fff; font-size:12px;
  padding:6px 9px; border-radius:6px; white-space:pre-line; max-width:360px; box-shadow:0 4px 12px rgba(0,0,0,.25); }
.modal { position:fixed; inset:0; background:rgba(15,18,25,.62); z-index:40; display:flex; align-items:center;
  justify-content:center; padding:24px; }
.modal[hidden] { display:none; }
.modal .box { background:#fff; border-radius:12px; max-width:1100px; width:100%; max-height:92vh; overflow:auto;
  padding:18px 20px; position:relative; }
.modal .close { position:absolute; top:10px; right:12px; border:0; background:none; font-size:22px; cursor:pointer; }
.modal img.strip { max-width:100%; border-radius:6px; display:block; margin:8px 0; }
.modal video { max-width:100%; max-height:50vh; border-radius:6px; background:#000; display:block; margin:8px 0; }
footer { color:var(--muted); font-size:12px; text-align:center; margin:40px 0 10px; }
"""

JS = r"""
(function () {
  "use strict";
  // Tooltips: one floating box for every [data-tip]; the SVG <title>s stay for no-script readers only.
  var tip = document.getElementById("tip");
  document.querySelectorAll("svg [data-tip] > title").forEach(function (t) { t.remove(); });
  document.addEventListener("mousemove", function (e) {
    var el = e.target.closest ? e.target.closest("[data-tip]") : null;
    if (!el) { tip.hidden = true; return; }
    tip.textContent = el.getAttribute("data-tip");
    tip.hidden = false;
    var x = e.clientX + 14, y = e.clientY + 14, r = tip.getBoundingClientRect();
    if (x + r.width > window.innerWidth - 8) x = e.clientX - r.width - 14;
    if (y + r.height > window.innerHeight - 8) y = e.clientY - r.height - 14;
    tip.style.left = x + "px"; tip.style.top = y + "px";
  });

  var data = JSON.parse(document.getElementById("vde-gallery").textContent);
  var root = document.getElementById("gallery-grid");
  if (!root) return;
  var state = { show: "all", reason: "", category: "", sort: data.default_sort, desc: true, q: "" };
  var cards = data.items.map(card);

  function fmt(v) {
    if (v === null || v === undefined) return "–";
    if (typeof v !== "number") return String(v);
    if (Number.isInteger(v)) return v.toLocaleString("en-US");
    var a = Math.abs(v);
    return a >= 1000 ? v.toFixed(0) : a >= 1 ? v.toPrecision(3) : v.toPrecision(3).replace(/0+$/, "");
  }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function value(item, key) {
    if (key === "clip_id") return item.id;
    if (key === "duration") return item.dur;
    if (key === "caption_words") return item.words;
    return item.s[key];
  }
  function card(item) {
    var fig = el("figure", "clip " + (item.kept ? "kept" : "dropped"));
    fig.setAttribute("data-id", item.id);
    var th = el("div", "thumb");
    if (item.thumb && item.thumb.src) {
      th.style.backgroundImage = "url(" + item.thumb.src + ")";
      th.style.backgroundSize = (item.thumb.n * 100) + "% 100%";
      th.style.aspectRatio = item.thumb.w + " / " + item.thumb.h;
      th.setAttribute("role", "img");
      th.setAttribute("aria-label", "frames of " + item.id);
      if (item.thumb.n > 1) th.appendChild(el("span", "frames", item.thumb.n + " frames ▸"));
      var timer = null, frame = 0;
      fig.addEventListener("mouseenter", function () {
        timer = setInterval(function () {
          frame = (frame + 1) % item.thumb.n;
          th.style.backgroundPosition = (100 * frame / (item.thumb.n - 1)) + "% 0";
        }, 380);
      });
      fig.addEventListener("mouseleave", function () {
        clearInterval(timer); frame = 0; th.style.backgroundPosition = "0 0";
      });
    } else {
      th.className = "thumb none";
      th.textContent = (item.thumb && item.thumb.error) || "no preview";
    }
    th.appendChild(el("span", "badge", item.kept ? "kept" : "dropped"));
    fig.appendChild(th);
    var cap = el("figcaption");
    cap.appendChild(el("div", item.caption ? "cap" : "cap none", item.caption || "no caption"));
    var meta = [item.video, fmt(item.start_s) + "–" + fmt(item.end_s) + " s", item.res, item.category]
      .filter(Boolean).join(" · ");
    var m = el("div", "meta", meta); m.title = item.id; cap.appendChild(m);
    if (item.reason) cap.appendChild(el("div", "reason", "✕ " + item.reason));
    if (item.tags.length) cap.appendChild(el("div", "tags", "★ " + item.tags.join(", ")));
    var dl = el("dl", "sc");
    data.scores.forEach(function (s) {
      var dt = el("dt", null, data.labels[s] || s), dd = el("dd", null, fmt(item.s[s]));
      dt.setAttribute("data-score", s); dd.setAttribute("data-score", s);
      dl.appendChild(dt); dl.appendChild(dd);
    });
    if (data.scores.length) cap.appendChild(dl);
    fig.appendChild(cap);
    fig.addEventListener("click", function () { openModal(item); });
    fig._item = item;
    return fig;
  }
  function visible(item) {
    if (state.show === "kept" && !item.kept) return false;
    if (state.show === "dropped" && item.kept) return false;
    if (state.reason && (item.reasons || []).indexOf(state.reason) < 0) return false;
    if (state.category && item.category !== state.category) return false;
    if (state.q) {
      var hay = (item.caption + " " + item.video + " " + item.id + " " + (item.category || "")).toLowerCase();
      if (hay.indexOf(state.q) < 0) return false;
    }
    return true;
  }
  function render() {
    var key = state.sort, sign = state.desc ? -1 : 1;
    var shown = cards.filter(function (c) { return visible(c._item); });
    shown.sort(function (a, b) {
      var x = value(a._item, key), y = value(b._item, key);
      var xn = x === null || x === undefined, yn = y === null || y === undefined;
      if (xn || yn) return xn === yn ? 0 : xn ? 1 : -1;  // missing values last, both directions
      if (x < y) return -sign; if (x > y) return sign;
      return a._item.id < b._item.id ? -1 : 1;
    });
    root.replaceChildren.apply(root, shown);
    document.querySelectorAll("#gallery-grid .sc [data-score]").forEach(function (e) {
      e.classList.toggle("sorted", e.getAttribute("data-score") === key);
    });
    document.getElementById("gallery-count").textContent =
      shown.length + " of " + data.items.length + " sampled clips (of " + data.total.toLocaleString("en-US") + ")";
  }
  function bind(id, ev, fn) { var e = document.getElementById(id); if (e) e.addEventListener(ev, fn); }
  document.querySelectorAll("#gallery-show button").forEach(function (b) {
    b.addEventListener("click", function () {
      state.show = b.getAttribute("data-show");
      document.querySelectorAll("#gallery-show button").forEach(function (o) { o.classList.toggle("on", o === b); });
      render();
    });
  });
  bind("gallery-sort", "change", function (e) { state.sort = e.target.value; render(); });
  bind("gallery-reason", "change", function (e) { state.reason = e.target.value; render(); });
  bind("gallery-category", "change", function (e) { state.category = e.target.value; render(); });
  bind("gallery-q", "input", function (e) { state.q = e.target.value.trim().toLowerCase(); render(); });
  bind("gallery-dir", "click", function (e) {
    state.desc = !state.desc;
    e.target.textContent = state.desc ? "↓ high first" : "↑ low first";
    render();
  });

  var modal = document.getElementById("modal"), body = document.getElementById("modal-body");
  function openModal(item) {
    body.replaceChildren();
    body.appendChild(el("h3", null, item.id));
    body.appendChild(el("div", "muted", item.video + " · " + fmt(item.start_s) + "–" + fmt(item.end_s) + " s · " +
      (item.kept ? "kept" : "dropped: " + item.reason)));
    if (item.href) {
      var v = el("video"); v.controls = true; v.preload = "none"; v.src = item.href;
      body.appendChild(v);
    }
    if (item.thumb && item.thumb.src) {
      var img = el("img", "strip"); img.src = item.thumb.src; img.alt = "frames of " + item.id;
      body.appendChild(img);
    }
    body.appendChild(el("p", null, item.caption || "no caption"));
    var t = el("table", "t"), tb = el("tbody");
    Object.keys(item.fields).forEach(function (k) {
      var tr = el("tr"); tr.appendChild(el("th", null, k)); tr.appendChild(el("td", "mono", fmt(item.fields[k])));
      tb.appendChild(tr);
    });
    t.appendChild(tb); body.appendChild(t);
    modal.hidden = false;
  }
  function closeModal() {
    modal.hidden = true;
    var v = body.querySelector("video"); if (v) v.pause();
  }
  bind("modal-close", "click", closeModal);
  modal.addEventListener("click", function (e) { if (e.target === modal) closeModal(); });
  document.addEventListener("keydown", function (e) { if (e.key === "Escape") closeModal(); });
  render();
})();
"""
