// @ts-check
// One regression (`#/regression?id=`): its figures and state (acknowledge, resolve), its effect
// on a scale around 1, both builds around the change, and the functions that explain it.

import * as api from "../api.js";
import { buildOrder } from "../builds.js";
import { effectText, interval } from "../cells.js";
import { chart } from "../chart.js";
import { el as h, message, showError, svg } from "../dom.js";
import { fmtBytes, fmtCount, fmtMetric, fmtTime } from "../format.js";
import { carry, link, timeWindow } from "../hash.js";
import { line } from "../metric.js";
import { sortableTable } from "../table.js";
import { where } from "./regressions.js";

/** @import { RegressionRecord, TimeseriesPoint } from "../api.js" */
/** @import { Marker } from "../chart.js" */
/** @import { Metric } from "../metric.js" */
/** @import { PageContext } from "../page.js" */

/**
 * @param {HTMLElement} main
 * @param {URLSearchParams} params
 * @param {PageContext} ctx
 */
export async function regression(main, params, ctx) {
  const id = params.get("id") || "";
  const r = await api.regression(id);
  if (!ctx.live()) return;
  if (r.kind === "memory") {
    memoryRegression(main, params, r);
    return;
  }
  const w = timeWindow(params);
  const step = Math.max(1, Math.ceil((w.to - w.from) / 60));
  const tsBuild = await api.timeseries({ service: r.service, endpoint: r.endpoint, group_by: "build", step, ...w }).catch(() => []);
  if (!ctx.live()) return;
  /** @type {Metric} */
  const metric = r.metric === "instructions" ? "instructions" : "cpu_ns";
  /** @param {number} v */
  const fmt = (v) => fmtMetric(metric, v);
  main.appendChild(h("h1", null, "Regression · " + where(r)));
  main.appendChild(h("section", { class: "card" },
    stateToolbar(main, r),
    h("dl", { class: "facts" },
      h("dt", null, "metric"), h("dd", null, r.metric),
      h("dt", null, "builds"), h("dd", null, r.baseline + " → " + r.candidate),
      h("dt", null, "effect (ratio of medians)"), h("dd", { id: "effect" }, effectText(r)),
      h("dt", null, "medians"), h("dd", null, fmt(r.baseline_median) + " → " + fmt(r.candidate_median)),
      h("dt", null, "requests"), h("dd", null, fmtCount(r.baseline_requests) + " / " + fmtCount(r.candidate_requests)),
      h("dt", null, "p / q"), h("dd", null, r.p_value.toPrecision(2) + " / " + r.q_value.toPrecision(2)),
      h("dt", null, "first / last seen"), h("dd", null, fmtTime(r.first_seen / 1e9) + " / " + fmtTime(r.last_seen / 1e9)),
      r.incident ? [h("dt", null, "incident"), h("dd", null, h("a", { href: link("/regressions", carry(params, { incident: r.incident })) }, r.incident))] : null,
      r.resolution ? [h("dt", null, "resolution"), h("dd", { id: "resolution" }, resolutionText(r.resolution))] : null),
    effectBar(r)));
  main.appendChild(h("section", { class: "card" },
    h("h2", null, "Around the change (p50 per build)"),
    aroundChart(r, tsBuild, metric, fmt, w, step),
    h("p", null, h("a", { href: link("/endpoint", carry(params, { service: r.service, endpoint: r.endpoint })) }, "endpoint page"), " · ",
      h("a", { href: link("/compare", carry(params, { service: r.service, endpoint: r.endpoint, a: r.baseline, b: r.candidate })) }, "differential flame graph"))));
  main.appendChild(h("section", { class: "card" }, h("h2", null, "Functions that explain it"),
    r.culprits.length ? sortableTable([
      { key: "fn", label: "function", value: (c) => c.function, cell: (c) => h("code", null, c.function) },
      { key: "b", label: "baseline self / request", num: true, value: (c) => c.baseline, cell: (c) => fmt(c.baseline) },
      { key: "c", label: "candidate self / request", num: true, value: (c) => c.candidate, cell: (c) => fmt(c.candidate) },
      { key: "d", label: "Δ", num: true, value: (c) => c.delta, cell: (c) => h("span", { class: "delta " + (c.delta > 0 ? "worse" : "better") }, (c.delta > 0 ? "+" : "") + fmt(c.delta)) },
    ], r.culprits, { key: "d", desc: true }) : message("No profile samples to name functions.")));
}

/**
 * A memory record: the service's private bytes per worker, baseline against candidate, and
 * the Memory page (workers per host by build) for the rest.
 * @param {HTMLElement} main
 * @param {URLSearchParams} params
 * @param {RegressionRecord} r
 */
function memoryRegression(main, params, r) {
  main.appendChild(h("h1", null, "Regression · " + where(r)));
  main.appendChild(h("section", { class: "card" },
    stateToolbar(main, r),
    h("dl", { class: "facts" },
      h("dt", null, "metric"), h("dd", null, "private bytes per worker process"),
      h("dt", null, "builds"), h("dd", null, r.baseline + " → " + r.candidate),
      h("dt", null, "effect (ratio of medians)"), h("dd", { id: "effect" }, effectText(r)),
      h("dt", null, "medians"), h("dd", { id: "medians" }, fmtBytes(r.baseline_median) + " → " + fmtBytes(r.candidate_median)),
      h("dt", null, "process readings"), h("dd", null, fmtCount(r.baseline_requests) + " / " + fmtCount(r.candidate_requests)),
      h("dt", null, "p / q"), h("dd", null, r.p_value.toPrecision(2) + " / " + r.q_value.toPrecision(2)),
      h("dt", null, "first / last seen"), h("dd", null, fmtTime(r.first_seen / 1e9) + " / " + fmtTime(r.last_seen / 1e9)),
      r.incident ? [h("dt", null, "incident"), h("dd", null, h("a", { href: link("/regressions", carry(params, { incident: r.incident })) }, r.incident))] : null,
      r.resolution ? [h("dt", null, "resolution"), h("dd", { id: "resolution" }, resolutionText(r.resolution))] : null),
    effectBar(r),
    h("p", null, h("a", { href: link("/memory", carry(params, { service: r.service })) }, "memory page: workers per host by build"))));
}

/**
 * @param {import("../api.js").Resolution} x
 */
function resolutionText(x) {
  if (x.kind === "fixed") return "fixed in build " + x.build;
  return x.kind === "went_away" ? "went away while its build served" : "resolved by hand";
}

/**
 * The state badge and the acknowledge and resolve buttons, which update both.
 * @param {HTMLElement} main where an error is shown
 * @param {RegressionRecord} r
 */
function stateToolbar(main, r) {
  const stateEl = h("span", { class: "badge " + r.state, id: "reg-state" }, r.state);
  /** @param {"ack" | "resolve"} what */
  const act = (what) => async () => {
    try {
      const upd = await api.setRegressionState(r.id, what);
      stateEl.className = "badge " + upd.state;
      stateEl.textContent = upd.state;
      ackBtn.disabled = upd.state !== "open";
      resBtn.disabled = upd.state === "resolved";
    } catch (e) {
      showError(main, e);
    }
  };
  const ackBtn = h("button", { type: "button", id: "ack", onclick: act("ack"), disabled: r.state !== "open" }, "acknowledge");
  const resBtn = h("button", { type: "button", id: "resolve", onclick: act("resolve"), disabled: r.state === "resolved" }, "resolve");
  return h("div", { class: "toolbar" }, stateEl, ackBtn, resBtn);
}

/**
 * The effect and its interval on a scale around 1 (no change).
 * @param {RegressionRecord} r
 */
function effectBar(r) {
  const i = interval(r);
  const low = i ? i.low : r.effect;
  const high = i ? i.high : r.effect;
  const lo = Math.min(1, low) - 0.02;
  const hi = Math.max(1, high) + 0.02;
  /** @param {number} v */
  const sx = (v) => 10 + ((v - lo) / (hi - lo)) * 380;
  return svg("svg", { viewBox: "0 0 400 40", class: "effect" },
    svg("line", { x1: sx(1), x2: sx(1), y1: 4, y2: 30, class: "one" }),
    svg("rect", { x: sx(low), width: Math.max(2, sx(high) - sx(low)), y: 12, height: 10, class: "ci" }),
    svg("circle", { cx: sx(r.effect), cy: 17, r: 5, class: "est" }),
    svg("text", { x: sx(1), y: 39, "text-anchor": "middle" }, "no change"));
}

/**
 * The p50 of the baseline and the candidate build, each build's rollout marked.
 * @param {RegressionRecord} r
 * @param {TimeseriesPoint[]} tsBuild
 * @param {Metric} metric
 * @param {(v: number) => string} fmt
 * @param {{from: number, to: number}} w
 * @param {number} step
 */
function aroundChart(r, tsBuild, metric, fmt, w, step) {
  const builds = buildOrder(tsBuild, []);
  const shown = [r.baseline, r.candidate];
  /** @type {Marker[]} */
  const markers = [];
  for (const b of shown) {
    const t = builds.first.get(b);
    if (t !== undefined) markers.push({ t, label: "build " + b });
  }
  return chart({
    from: w.from, to: w.to, fmt, step, markers,
    series: shown.map((b, i) => ({ name: (i ? "candidate " : "baseline ") + b, color: i ? "#e03131" : "#1c7ed6",
      points: line(tsBuild.filter((p) => p.group === b), metric) })),
  });
}
