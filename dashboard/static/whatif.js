(function () {
  "use strict";
  // Threshold what-if: keep recomputed from the clips' values as filters/filter.py decides it
  // (a missing value fails unless the stage says `missing: keep`), rules in the filter's order.
  function json(id) { var e = document.getElementById(id); return e ? JSON.parse(e.textContent) : null; }
  function num(v) { return Number(v).toLocaleString("en-US"); }
  var SVGNS = "http://www.w3.org/2000/svg";
  function svg(tag, attrs, text) {
    var e = document.createElementNS(SVGNS, tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined) e.textContent = text;
    return e;
  }

  var w = json("vde-whatif");
  if (w) {
    var n = w.rows, scale = w.sampled ? w.clips_ok / w.rows : 1;
    var thresholds = w.rules.map(function (r) { return r.value; });
    var funnel = document.getElementById("whatif-funnel");
    var passes = function (r, v, t) {
      if (v === null || v !== v) return r.missing === "keep";
      return r.op === ">=" ? v >= t : v <= t;
    };
    var update = function () {
      var alive = new Uint8Array(n), count = 0, steps = [];
      for (var i = 0; i < n; i++) { alive[i] = w.fixed[i]; count += alive[i]; }
      var start = count;
      w.rules.forEach(function (r, k) {
        var col = w.values[r.column], t = thresholds[k], failing = 0, before = count;
        for (var i = 0; i < n; i++) {
          if (!passes(r, col[i], t)) { failing++; if (alive[i]) { alive[i] = 0; count--; } }
        }
        steps.push({ rule: r, removed: before - count, remaining: count, failing: failing });
      });
      var kept = Math.round(count * scale);
      var out = document.getElementById("whatif-kept");
      out.textContent = num(kept);
      out.setAttribute("data-value", String(kept));
      var delta = kept - w.kept;
      document.getElementById("whatif-delta").textContent =
        delta === 0 ? "(as in the run)" : "(" + (delta > 0 ? "+" : "") + num(delta) + " against the run's " + num(w.kept) + ")";
      var items = [["clips without error", w.clips_ok, ""]];
      if (start < n) items.push(["pass the rules without a slider", Math.round(start * scale), ""]);
      steps.forEach(function (s) {
        items.push([s.rule.key + (s.rule.op === ">=" ? " ≥ " : " ≤ ") + thresholds[w.rules.indexOf(s.rule)],
                    Math.round(s.remaining * scale), "−" + num(Math.round(s.removed * scale))]);
      });
      funnel.replaceChildren.apply(funnel, items.map(function (it, k) {
        var li = document.createElement("li");
        li.setAttribute("data-step", String(k));
        var label = document.createElement("span"); label.className = "fl mono"; label.textContent = it[0];
        var bar = document.createElement("span"); bar.className = "fbar";
        var fill = document.createElement("span");
        fill.style.width = (w.clips_ok ? 100 * it[1] / w.clips_ok : 0).toFixed(2) + "%";
        bar.appendChild(fill);
        var value = document.createElement("span"); value.className = "num"; value.textContent = num(it[1]);
        value.setAttribute("data-value", String(it[1]));
        li.appendChild(label); li.appendChild(bar); li.appendChild(value);
        if (it[2]) { var note = document.createElement("span"); note.className = "note"; note.textContent = it[2]; li.appendChild(note); }
        return li;
      }));
      steps.forEach(function (s, k) {
        var row = document.querySelector('.wi-rule[data-rule="' + k + '"] .wi-removed');
        row.textContent = num(Math.round(s.failing * scale)) + " clips fail it";
      });
    };
    var set = function (k, value, from) {
      if (!isFinite(value)) return;
      thresholds[k] = value;
      var row = document.querySelector('.wi-rule[data-rule="' + k + '"]');
      row.setAttribute("data-threshold", String(value));
      if (from !== "range") document.getElementById("wi-range-" + k).value = String(value);
      if (from !== "number") document.getElementById("wi-num-" + k).value = String(value);
      update();
    };
    w.rules.forEach(function (r, k) {
      document.getElementById("wi-range-" + k).addEventListener("input", function (e) {
        set(k, Number(e.target.value), "range");
      });
      document.getElementById("wi-num-" + k).addEventListener("input", function (e) {
        if (e.target.value !== "") set(k, Number(e.target.value), "number");
      });
    });
    document.querySelectorAll(".wi-reset").forEach(function (b) {
      b.addEventListener("click", function () {
        var k = Number(b.getAttribute("data-rule"));
        set(k, w.rules[k].value);
      });
    });
    update();
  }

  // Scatter of two scores, kept and dropped in their colours, with axis titles.
  var s = json("vde-scatter");
  if (s) {
    var W = 640, H = 330, ML = 56, MR = 14, MT = 12, MB = 44;
    var plot = document.getElementById("scatter-plot");
    var xs = document.getElementById("scatter-x"), ys = document.getElementById("scatter-y");
    xs.value = s.columns[0]; ys.value = s.columns[1];
    var ticks = function (lo, hi) {
      if (!(hi > lo)) return [lo];
      var raw = (hi - lo) / 4, mag = Math.pow(10, Math.floor(Math.log10(raw)));
      var step = [1, 2, 2.5, 5, 10].map(function (m) { return m * mag; }).filter(function (v) { return v >= raw; })[0];
      var out = [];
      for (var t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(+t.toPrecision(10));
      return out;
    };
    var draw = function () {
      var xc = xs.value, yc = ys.value, X = s.values[xc], Y = s.values[yc];
      var pts = [];
      for (var i = 0; i < X.length; i++) if (X[i] !== null && Y[i] !== null) pts.push(i);
      var ext = function (a) {
        var lo = Infinity, hi = -Infinity;
        pts.forEach(function (i) { lo = Math.min(lo, a[i]); hi = Math.max(hi, a[i]); });
        if (!(hi > lo)) { var pad = Math.abs(lo) * 0.05 || 0.5; lo -= pad; hi += pad; }
        return [lo, hi];
      };
      var ex = ext(X), ey = ext(Y);
      var sx = function (v) { return ML + (v - ex[0]) / (ex[1] - ex[0]) * (W - ML - MR); };
      var sy = function (v) { return H - MB - (v - ey[0]) / (ey[1] - ey[0]) * (H - MT - MB); };
      var root = svg("svg", { viewBox: "0 0 " + W + " " + H, class: "scatter", role: "img",
                              "aria-label": s.labels[yc] + " against " + s.labels[xc] });
      root.appendChild(svg("rect", { x: ML, y: MT, width: W - ML - MR, height: H - MT - MB, class: "frame" }));
      ticks(ex[0], ex[1]).forEach(function (t) {
        root.appendChild(svg("line", { x1: sx(t), x2: sx(t), y1: MT, y2: H - MB, class: "grid" }));
        root.appendChild(svg("text", { x: sx(t), y: H - MB + 14, class: "tl", "text-anchor": "middle" }, String(t)));
      });
      ticks(ey[0], ey[1]).forEach(function (t) {
        root.appendChild(svg("line", { x1: ML, x2: W - MR, y1: sy(t), y2: sy(t), class: "grid" }));
        root.appendChild(svg("text", { x: ML - 6, y: sy(t) + 4, class: "tl", "text-anchor": "end" }, String(t)));
      });
      pts.forEach(function (i) {
        var c = svg("circle", { cx: sx(X[i]).toFixed(1), cy: sy(Y[i]).toFixed(1), r: 2.6,
                                class: "pt " + (s.kept[i] ? "kept" : "dropped") });
        c.setAttribute("data-tip", s.labels[xc] + " " + X[i] + " · " + s.labels[yc] + " " + Y[i] +
                       (s.kept[i] ? " · kept" : " · dropped"));
        root.appendChild(c);
      });
      root.appendChild(svg("text", { x: (ML + W - MR) / 2, y: H - 8, class: "axis-title", "text-anchor": "middle" },
                           s.labels[xc]));
      root.appendChild(svg("text", { x: 14, y: (MT + H - MB) / 2, class: "axis-title", "text-anchor": "middle",
                                     transform: "rotate(-90 14 " + (MT + H - MB) / 2 + ")" }, s.labels[yc]));
      plot.replaceChildren(root);
      plot.setAttribute("data-points", String(pts.length));
    };
    xs.addEventListener("change", draw);
    ys.addEventListener("change", draw);
    draw();
  }
})();
