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
    if (item.tags.length) {
      var tags = el("div", "tags", "★ " + item.tags.slice(0, 2).join(", ") +
                    (item.tags.length > 2 ? " +" + (item.tags.length - 2) : ""));
      tags.title = item.tags.join(", ");
      cap.appendChild(tags);
    }
    // Compact: the first quality scores, plus the one the gallery is sorted by; every value is in the details.
    var dl = el("dl", "sc");
    data.scores.forEach(function (s) {
      var dt = el("dt", null, data.labels[s] || s), dd = el("dd", null, fmt(item.s[s]));
      dt.setAttribute("data-score", s); dd.setAttribute("data-score", s);
      if ((data.card_scores || data.scores).indexOf(s) < 0) { dt.classList.add("extra"); dd.classList.add("extra"); }
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
      var sorted = e.getAttribute("data-score") === key;
      e.classList.toggle("sorted", sorted);
      e.hidden = e.classList.contains("extra") && !sorted;
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

  // Dropped clips grouped by the rule that dropped them (a clip failing two rules shows under both).
  var groups = document.getElementById("dropped-groups");
  if (groups) {
    var blocks = (data.reasons || []).map(function (pair) {
      var members = data.items.filter(function (it) { return !it.kept && (it.reasons || []).indexOf(pair[0]) >= 0; });
      var box = el("div", "dgroup");
      box.setAttribute("data-reason", pair[0]);
      var h = el("h3", "mono", pair[0]);
      h.appendChild(el("span", "muted", " · " + pair[1].toLocaleString("en-US") + " clips dropped, " +
        Math.min(members.length, data.per_reason) + " shown"));
      box.appendChild(h);
      var grid = el("div", "gallery");
      members.slice(0, data.per_reason).forEach(function (it) {
        var c = card(it);
        c.querySelectorAll(".sc .extra").forEach(function (e) { e.hidden = true; });
        grid.appendChild(c);
      });
      box.appendChild(grid);
      return box;
    });
    if (blocks.length) groups.replaceChildren.apply(groups, blocks);
    else groups.appendChild(el("div", "empty", "no clip was dropped"));
  }

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
