// @ts-check
// Time-series charts and sparklines, drawn as SVG.

import { clear, el, svg } from "./dom.js";
import { fmtClock, fmtTime } from "./format.js";
import { showTip, tooltip } from "./tooltip.js";

/** Line colours, in the order series take them. */
const COLORS = ["#1c7ed6", "#e8590c", "#2f9e44", "#ae3ec9", "#f59f00", "#0c8599", "#c2255c", "#5c940d"];

/**
 * One line (unix seconds `t`, value `v`), with an optional band (`lo` to `hi`; a missing end
 * is drawn at 0) and dash pattern.
 * @typedef {object} Series
 * @property {string} name
 * @property {string} [color] the next of COLORS unless given
 * @property {{t: number, v: number}[]} points
 * @property {{t: number, lo: number | null, hi: number | null}[]} [band]
 * @property {string} [dash] an SVG stroke-dasharray
 */

/**
 * A vertical line at `t` with a label, a link when `href` is given.
 * @typedef {object} Marker
 * @property {number} t
 * @property {string} label
 * @property {string} [href]
 */

/**
 * A chart over [from, to) (unix seconds) in buckets of `step` seconds (1/60 of the window
 * unless given). With `onSelect`, a drag or a click on a bucket selects a window.
 * @typedef {object} ChartOptions
 * @property {Series[]} series
 * @property {Marker[]} [markers]
 * @property {number} from
 * @property {number} to
 * @property {(v: number) => string} fmt the y axis' labels
 * @property {number} [height] 260 unless given
 * @property {(from: number, to: number) => void} [onSelect]
 * @property {string} [selectLabel] the tooltip's hint while selecting
 * @property {number} [step]
 */

/**
 * About `n` round values from lo to hi.
 * @param {number} lo
 * @param {number} hi
 * @param {number} n
 */
function niceTicks(lo, hi, n) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / n;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(v);
  return out;
}

const W = 960;
const MARGIN = { l: 70, r: 16, t: 22, b: 28 };

/**
 * The chart and its legend.
 * @param {ChartOptions} opts
 * @returns {HTMLDivElement}
 */
export function chart(opts) {
  const H = opts.height || 260;
  const m = MARGIN;
  const iw = W - m.l - m.r;
  const ih = H - m.t - m.b;
  const from = opts.from;
  const to = opts.to;
  let hi = 0;
  for (const s of opts.series) {
    for (const p of s.points) hi = Math.max(hi, p.v);
    for (const b of s.band || []) hi = Math.max(hi, b.hi ?? 0);
  }
  hi = hi > 0 ? hi * 1.08 : 1;
  /** @param {number} t */
  const x = (t) => m.l + ((t - from) / (to - from)) * iw;
  /** @param {number} v */
  const y = (v) => m.t + ih - (v / hi) * ih;
  const root = svg("svg", { viewBox: "0 0 " + W + " " + H, class: "chart", role: "img" });
  root.appendChild(axes(from, to, H, hi, x, y, opts.fmt));
  opts.series.forEach((s, i) => drawSeries(root, s, s.color || COLORS[i % COLORS.length], opts, x, y));
  for (const mk of opts.markers || []) {
    if (mk.t < from || mk.t > to) continue;
    const g = svg("g", { class: "marker" });
    g.appendChild(svg("line", { x1: x(mk.t), x2: x(mk.t), y1: m.t, y2: m.t + ih }));
    g.appendChild(svg("text", { x: x(mk.t) + 3, y: m.t - 6 }, mk.label));
    if (mk.href) {
      const a = svg("a", { href: mk.href });
      a.appendChild(g);
      root.appendChild(a);
    } else root.appendChild(g);
  }
  const legend = el("div", { class: "legend" }, opts.series.map((s, i) =>
    el("span", null, el("i", { style: "background:" + (s.color || COLORS[i % COLORS.length]) }), s.name)));
  // Selecting a window: drag across, or click one bucket.
  const sel = svg("rect", { class: "selection", y: m.t, height: ih, x: 0, width: 0, visibility: "hidden" });
  root.appendChild(sel);
  const hover = svg("line", { class: "hover", y1: m.t, y2: m.t + ih, visibility: "hidden" });
  root.appendChild(hover);
  const wrap = el("div", { class: "chart-wrap" }, root, legend);
  if (opts.onSelect) selectable(root, sel, hover, opts, opts.onSelect, x);
  return wrap;
}

/**
 * The grid: value lines with labels, and time labels along the bottom.
 * @param {number} from
 * @param {number} to
 * @param {number} H the chart's height
 * @param {number} hi the top value
 * @param {(t: number) => number} x
 * @param {(v: number) => number} y
 * @param {(v: number) => string} fmt
 */
function axes(from, to, H, hi, x, y, fmt) {
  const m = MARGIN;
  const grid = svg("g", { class: "grid" });
  for (const v of niceTicks(0, hi, 4)) {
    grid.appendChild(svg("line", { x1: m.l, x2: W - m.r, y1: y(v), y2: y(v) }));
    grid.appendChild(svg("text", { x: m.l - 6, y: y(v) + 4, "text-anchor": "end" }, fmt(v)));
  }
  const span = to - from;
  const tstep = [60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 86400, 2 * 86400, 7 * 86400]
    .find((s) => span / s <= 8) || 7 * 86400;
  for (let t = Math.ceil(from / tstep) * tstep; t < to; t += tstep) {
    grid.appendChild(svg("text", { x: x(t), y: H - 8, "text-anchor": "middle" },
      tstep >= 86400 ? fmtTime(t).slice(5, 10) : fmtClock(t)));
  }
  return grid;
}

/**
 * One series: its band, its line (broken where buckets are missing) and, when there are few
 * points, a dot on each.
 * @param {SVGSVGElement} root
 * @param {Series} s
 * @param {string} color
 * @param {ChartOptions} opts
 * @param {(t: number) => number} x
 * @param {(v: number) => number} y
 */
function drawSeries(root, s, color, opts, x, y) {
  if (s.band && s.band.length) {
    const top = s.band.map((b) => x(b.t) + "," + y(b.hi ?? 0));
    const bottom = s.band.slice().reverse().map((b) => x(b.t) + "," + y(b.lo ?? 0));
    root.appendChild(svg("polygon", { points: top.concat(bottom).join(" "), fill: color, "fill-opacity": 0.15, class: "band" }));
  }
  if (!s.points.length) return;
  // Missing buckets break the line rather than bridge a gap with no requests.
  const gap = 2.5 * (opts.step || (opts.to - opts.from) / 60);
  /** @type {{t: number, v: number}[]} */
  let seg = [];
  const flush = () => {
    if (seg.length) {
      root.appendChild(svg("polyline", {
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
    for (const p of s.points) root.appendChild(svg("circle", { cx: x(p.t), cy: y(p.v), r: 2.5, fill: color }));
  }
}

/**
 * Pointer handling for a chart with `onSelect`: a hover line and tooltip, and a window selected
 * by dragging (or the bucket under a click).
 * @param {SVGSVGElement} root
 * @param {SVGRectElement} sel the selection's rectangle
 * @param {SVGLineElement} hover
 * @param {ChartOptions} opts
 * @param {(from: number, to: number) => void} onSelect
 * @param {(t: number) => number} x
 */
function selectable(root, sel, hover, opts, onSelect, x) {
  const m = MARGIN;
  const iw = W - m.l - m.r;
  const { from, to } = opts;
  const tip = tooltip();
  /** @param {MouseEvent} ev */
  const toT = (ev) => {
    const r = root.getBoundingClientRect();
    const px = ((ev.clientX - r.left) / r.width) * W;
    return from + ((Math.min(Math.max(px, m.l), W - m.r) - m.l) / iw) * (to - from);
  };
  /** @type {number | null} */
  let start = null;
  root.addEventListener("mousedown", (ev) => {
    start = toT(ev);
    ev.preventDefault();
  });
  root.addEventListener("mousemove", (ev) => {
    const t = toT(ev);
    hover.setAttribute("x1", String(x(t)));
    hover.setAttribute("x2", String(x(t)));
    hover.setAttribute("visibility", "visible");
    clear(tip);
    tip.appendChild(el("div", null, fmtTime(t)));
    tip.appendChild(el("div", { class: "dim" }, opts.selectLabel || "drag to select a window"));
    showTip(ev);
    if (start !== null) {
      sel.setAttribute("x", String(Math.min(x(start), x(t))));
      sel.setAttribute("width", String(Math.abs(x(t) - x(start))));
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
    onSelect(Math.floor(a), Math.ceil(b));
  });
}

/**
 * A small line of values, no axes; a flat line when fewer than two are finite.
 * @param {number[]} values
 */
export function sparkline(values) {
  const SW = 100;
  const SH = 22;
  const s = svg("svg", { viewBox: "0 0 " + SW + " " + SH, class: "spark", width: SW, height: SH });
  const vals = values.filter((v) => isFinite(v));
  if (vals.length < 2) {
    s.appendChild(svg("line", { x1: 0, x2: SW, y1: SH / 2, y2: SH / 2, class: "flat" }));
    return s;
  }
  const lo = Math.min(...vals);
  const hi = Math.max(...vals);
  const pts = vals.map((v, i) => (i / (vals.length - 1)) * SW + "," + (hi > lo ? SH - 2 - ((v - lo) / (hi - lo)) * (SH - 4) : SH / 2));
  s.appendChild(svg("polyline", { points: pts.join(" "), fill: "none" }));
  return s;
}
