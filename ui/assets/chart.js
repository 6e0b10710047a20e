// Time-series charts and sparklines, drawn as SVG.
"use strict";

PW.COLORS = ["#1c7ed6", "#e8590c", "#2f9e44", "#ae3ec9", "#f59f00", "#0c8599", "#c2255c", "#5c940d"];

PW.niceTicks = function (lo, hi, n) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / n;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(v);
  return out;
};

// opts: {series: [{name, color, points: [{t, v}], band: [{t, lo, hi}], dash}], markers: [{t, label}],
//        from, to, fmt(v), height, onSelect(from, to), selectLabel, step}
PW.chart = function (opts) {
  const W = 960;
  const H = opts.height || 260;
  const m = { l: 70, r: 16, t: 22, b: 28 };
  const iw = W - m.l - m.r;
  const ih = H - m.t - m.b;
  const from = opts.from;
  const to = opts.to;
  let hi = 0;
  for (const s of opts.series) {
    for (const p of s.points) hi = Math.max(hi, p.v);
    for (const b of s.band || []) hi = Math.max(hi, b.hi);
  }
  hi = hi > 0 ? hi * 1.08 : 1;
  const x = (t) => m.l + ((t - from) / (to - from)) * iw;
  const y = (v) => m.t + ih - (v / hi) * ih;
  const root = PW.svg("svg", { viewBox: "0 0 " + W + " " + H, class: "chart", role: "img" });
  const grid = PW.svg("g", { class: "grid" });
  for (const v of PW.niceTicks(0, hi, 4)) {
    grid.appendChild(PW.svg("line", { x1: m.l, x2: W - m.r, y1: y(v), y2: y(v) }));
    grid.appendChild(PW.svg("text", { x: m.l - 6, y: y(v) + 4, "text-anchor": "end" }, opts.fmt(v)));
  }
  const span = to - from;
  const tstep = [60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 86400, 2 * 86400, 7 * 86400]
    .find((s) => span / s <= 8) || 7 * 86400;
  for (let t = Math.ceil(from / tstep) * tstep; t < to; t += tstep) {
    grid.appendChild(PW.svg("text", { x: x(t), y: H - 8, "text-anchor": "middle" },
      tstep >= 86400 ? PW.fmtTime(t).slice(5, 10) : PW.fmtClock(t)));
  }
  root.appendChild(grid);
  opts.series.forEach((s, i) => {
    const color = s.color || PW.COLORS[i % PW.COLORS.length];
    if (s.band && s.band.length) {
      const top = s.band.map((b) => x(b.t) + "," + y(b.hi));
      const bottom = s.band.slice().reverse().map((b) => x(b.t) + "," + y(b.lo));
      root.appendChild(PW.svg("polygon", { points: top.concat(bottom).join(" "), fill: color, "fill-opacity": 0.15, class: "band" }));
    }
    if (s.points.length) {
      // Missing buckets break the line rather than bridge a gap with no requests.
      const gap = 2.5 * (opts.step || (to - from) / 60);
      let seg = [];
      const flush = () => {
        if (seg.length) {
          root.appendChild(PW.svg("polyline", {
            points: seg.map((p) => x(p.t) + "," + y(p.v)).join(" "),
            fill: "none", stroke: color, "stroke-width": 2, "stroke-dasharray": s.dash || null, class: "line",
          }));
        }
        seg = [];
      };
      for (const p of s.points) {
        if (seg.length && p.t - seg[seg.length - 1].t > gap) flush();
        seg.push(p);
      }
      flush();
      if (s.points.length < 80) {
        for (const p of s.points) root.appendChild(PW.svg("circle", { cx: x(p.t), cy: y(p.v), r: 2.5, fill: color }));
      }
    }
  });
  for (const mk of opts.markers || []) {
    if (mk.t < from || mk.t > to) continue;
    const g = PW.svg("g", { class: "marker" });
    g.appendChild(PW.svg("line", { x1: x(mk.t), x2: x(mk.t), y1: m.t, y2: m.t + ih }));
    g.appendChild(PW.svg("text", { x: x(mk.t) + 3, y: m.t - 6 }, mk.label));
    if (mk.href) {
      const a = PW.svg("a", { href: mk.href });
      a.appendChild(g);
      root.appendChild(a);
    } else root.appendChild(g);
  }
  // Legend.
  const legend = PW.el("div", { class: "legend" }, opts.series.map((s, i) =>
    PW.el("span", null, PW.el("i", { style: "background:" + (s.color || PW.COLORS[i % PW.COLORS.length]) }), s.name)));
  // Selecting a window: drag across, or click one bucket.
  const sel = PW.svg("rect", { class: "selection", y: m.t, height: ih, x: 0, width: 0, visibility: "hidden" });
  root.appendChild(sel);
  const hover = PW.svg("line", { class: "hover", y1: m.t, y2: m.t + ih, visibility: "hidden" });
  root.appendChild(hover);
  const wrap = PW.el("div", { class: "chart-wrap" }, root, legend);
  if (opts.onSelect) {
    const tip = document.getElementById("tooltip");
    const toT = (ev) => {
      const r = root.getBoundingClientRect();
      const px = ((ev.clientX - r.left) / r.width) * W;
      return from + ((Math.min(Math.max(px, m.l), W - m.r) - m.l) / iw) * (to - from);
    };
    let start = null;
    root.addEventListener("mousedown", (ev) => {
      start = toT(ev);
      ev.preventDefault();
    });
    root.addEventListener("mousemove", (ev) => {
      const t = toT(ev);
      hover.setAttribute("x1", x(t));
      hover.setAttribute("x2", x(t));
      hover.setAttribute("visibility", "visible");
      PW.clear(tip);
      tip.appendChild(PW.el("div", null, PW.fmtTime(t)));
      tip.appendChild(PW.el("div", { class: "dim" }, opts.selectLabel || "drag to select a window"));
      PW.showTip(ev);
      if (start !== null) {
        sel.setAttribute("x", Math.min(x(start), x(t)));
        sel.setAttribute("width", Math.abs(x(t) - x(start)));
        sel.setAttribute("visibility", "visible");
      }
    });
    root.addEventListener("mouseleave", () => {
      hover.setAttribute("visibility", "hidden");
      tip.hidden = true;
    });
    root.addEventListener("mouseup", (ev) => {
      if (start === null) return;
      let a = Math.min(start, toT(ev));
      let b = Math.max(start, toT(ev));
      start = null;
      sel.setAttribute("visibility", "hidden");
      const step = opts.step || (to - from) / 60;
      if (b - a < step) {
        a = Math.floor(a / step) * step;
        b = a + step;
      }
      tip.hidden = true;
      opts.onSelect(Math.floor(a), Math.ceil(b));
    });
  }
  return wrap;
};

PW.showTip = function (ev) {
  const tip = document.getElementById("tooltip");
  tip.hidden = false;
  const w = tip.offsetWidth;
  const left = ev.clientX + 14 + w > window.innerWidth ? ev.clientX - w - 14 : ev.clientX + 14;
  tip.style.left = Math.max(0, left) + "px";
  tip.style.top = ev.clientY + 14 + "px";
};

// A small line of values, no axes.
PW.sparkline = function (values) {
  const W = 100;
  const H = 22;
  const s = PW.svg("svg", { viewBox: "0 0 " + W + " " + H, class: "spark", width: W, height: H });
  const vals = values.filter((v) => isFinite(v));
  if (vals.length < 2) {
    s.appendChild(PW.svg("line", { x1: 0, x2: W, y1: H / 2, y2: H / 2, class: "flat" }));
    return s;
  }
  const lo = Math.min(...vals);
  const hi = Math.max(...vals);
  const pts = vals.map((v, i) => (i / (vals.length - 1)) * W + "," + (hi > lo ? H - 2 - ((v - lo) / (hi - lo)) * (H - 4) : H / 2));
  s.appendChild(PW.svg("polyline", { points: pts.join(" "), fill: "none" }));
  return s;
};
