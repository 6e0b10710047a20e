// @ts-check
// An endpoint (`#/endpoint?service=&endpoint=`): cost per request over time with build
// rollouts marked, split by data centre, and per build against the build before. A click or a
// drag on a chart opens that window's flame graph.

import * as api from "../api.js";
import { buildOrder } from "../builds.js";
import { deltaCell, effectText, regressionBadge } from "../cells.js";
import { chart } from "../chart.js";
import { el as h, message } from "../dom.js";
import { fmtCount, fmtMetric, fmtTime, naturalCompare } from "../format.js";
import { carry, globals, link, timeWindow } from "../hash.js";
import { change, line, pickMetric, stat } from "../metric.js";
import { timed } from "../page.js";
import { sortableTable } from "../table.js";

/** @import { EndpointStats, TimeseriesPoint } from "../api.js" */
/** @import { Marker } from "../chart.js" */
/** @import { Metric } from "../metric.js" */
/** @import { PageContext } from "../page.js" */

/**
 * What the charts and tables of one endpoint share.
 * @typedef {object} View
 * @property {Metric} metric
 * @property {(v: number | null) => string} fmt
 * @property {{from: number, to: number}} w
 * @property {number} step
 * @property {Marker[]} markers build rollouts
 * @property {(from: number, to: number) => void} onSelect opens a window's flame graph
 * @property {(more: Record<string, unknown>) => string} flameLink
 */

/**
 * @param {HTMLElement} main
 * @param {URLSearchParams} params
 * @param {PageContext} ctx
 */
export async function endpoint(main, params, ctx) {
  const service = params.get("service") || "";
  const endpoint = params.get("endpoint") || "";
  if (!service || !endpoint) {
    main.appendChild(message("Pick an endpoint on the overview."));
    return;
  }
  const g = globals(params);
  const w = timeWindow(params);
  const step = Math.max(1, Math.ceil((w.to - w.from) / 60));
  const base = { service, endpoint, step, ...w };
  const [ts, tsBuild, tsDc, byBuild, byDc, regs] = await Promise.all([
    api.timeseries(base),
    api.timeseries({ group_by: "build", ...base }),
    api.timeseries({ group_by: "dc", ...base }),
    api.endpoints({ service, group_by: "build", ...w }),
    api.endpoints({ service, group_by: "dc", ...w }),
    api.regressions({ service }).catch(() => []),
  ]);
  if (!ctx.live()) return;
  timed("endpoint", () => {
    const metric = pickMetric(g.metric, ts);
    const builds = buildOrder(tsBuild, []);
    /** @param {Record<string, unknown>} more */
    const flameLink = (more) => link("/flame", carry(params, { service, endpoint, ...more }));
    /** @type {View} */
    const view = {
      metric,
      fmt: (v) => fmtMetric(metric, v),
      w,
      step,
      markers: builds.order.map((b) => ({ t: /** @type {number} */ (builds.first.get(b)), label: "build " + b, href: flameLink({ build: b }) })),
      onSelect: (from, to) => {
        location.hash = flameLink({ from, to });
      },
      flameLink,
    };
    main.appendChild(h("h1", null, h("a", { href: link("/", carry(params, {})) }, service), " · ", endpoint));
    for (const r of regs.filter((r) => r.endpoint === endpoint && r.state !== "resolved")) {
      main.appendChild(h("p", { class: "msg warn" }, regressionBadge(r), " build " + r.candidate + " vs " + r.baseline + ": " +
        r.metric + " " + effectText(r)));
    }
    main.appendChild(costSection(view, ts));
    main.appendChild(dcSection(view, tsDc, byDc.filter((r) => r.endpoint === endpoint)));
    main.appendChild(buildsSection(view, params, service, endpoint, tsBuild, byBuild.filter((r) => r.endpoint === endpoint)));
  });
}

/**
 * The cost per request: p50 with a p50–p90 band, and the mean dashed.
 * @param {View} v
 * @param {TimeseriesPoint[]} ts
 */
function costSection(v, ts) {
  const { metric } = v;
  return h("section", { class: "card" },
    h("h2", null, (metric === "cpu_ns" ? "CPU time" : "Instructions") + " per request"),
    h("p", { class: "dim" }, "Line: p50; band: p50 to p90 (the API keeps p50/p90/p99, not p10); dashed: mean. " +
      "Vertical lines: build rollouts (first request seen). Drag across the chart or click a bucket to open that window's flame graph."),
    chart({
      from: v.w.from, to: v.w.to, fmt: v.fmt, step: v.step, onSelect: v.onSelect, markers: v.markers,
      selectLabel: "click or drag: flame graph of this window",
      series: [
        { name: "p50", points: line(ts, metric, "p50"),
          band: ts.map((p) => ({ t: p.time, lo: stat(p, metric, "p50"), hi: stat(p, metric, "p90") })) },
        { name: "mean", dash: "4 3", color: "#868e96", points: line(ts, metric, "mean") },
      ],
    }));
}

/**
 * The p50 per data centre, and a table of them.
 * @param {View} v
 * @param {TimeseriesPoint[]} tsDc
 * @param {EndpointStats[]} byDc this endpoint's rows
 */
function dcSection(v, tsDc, byDc) {
  const { metric, fmt } = v;
  const dcs = Array.from(new Set(tsDc.map((p) => p.group))).sort(naturalCompare);
  return h("section", { class: "card" },
    h("h2", null, "By data centre (p50)"),
    chart({
      from: v.w.from, to: v.w.to, fmt, step: v.step, onSelect: v.onSelect, markers: v.markers, height: 200,
      series: dcs.map((dc) => ({ name: dc || "(none)", points: line(tsDc.filter((p) => p.group === dc), metric) })),
    }),
    sortableTable([
      { key: "dc", label: "dc", value: (r) => r.group || "", cell: (r) => h("a", { href: v.flameLink({ dc: r.group }) }, r.group || "(none)") },
      { key: "requests", label: "requests", num: true, value: (r) => r.requests, cell: (r) => fmtCount(r.requests) },
      { key: "p50", label: "p50", num: true, value: (r) => stat(r, metric) || 0, cell: (r) => fmt(stat(r, metric)) },
      { key: "p90", label: "p90", num: true, value: (r) => stat(r, metric, "p90") || 0, cell: (r) => fmt(stat(r, metric, "p90")) },
    ], byDc, { key: "requests", desc: true }));
}

/**
 * One row per build in rollout order, each against the build before, with links to its flame
 * graph and to the compare.
 * @param {View} v
 * @param {URLSearchParams} params
 * @param {string} service
 * @param {string} endpoint
 * @param {TimeseriesPoint[]} tsBuild
 * @param {EndpointStats[]} buildRows this endpoint's rows
 */
function buildsSection(v, params, service, endpoint, tsBuild, buildRows) {
  const { metric, fmt } = v;
  const builds = buildOrder(tsBuild, []);
  const order = buildOrder(tsBuild, buildRows.map((r) => r.group || "")).order;
  buildRows.sort((a, b) => order.indexOf(a.group || "") - order.indexOf(b.group || ""));
  /** @type {Map<string, EndpointStats | null>} */
  const prevOf = new Map();
  buildRows.forEach((r, i) => prevOf.set(r.group || "", i > 0 ? buildRows[i - 1] : null));
  /** @param {EndpointStats} r */
  const prev = (r) => prevOf.get(r.group || "");
  /** @param {string | undefined} b */
  const firstSeen = (b) => b === undefined ? undefined : builds.first.get(b);
  return h("section", { class: "card" },
    h("h2", null, "Builds"),
    sortableTable([
      { key: "build", label: "build", value: (r) => r.group || "", cell: (r) => r.group || "(none)" },
      { key: "first", label: "first seen", value: (r) => firstSeen(r.group) || 0, cell: (r) => {
        const t = firstSeen(r.group);
        return t !== undefined ? fmtTime(t) : "–";
      } },
      { key: "requests", label: "requests", num: true, value: (r) => r.requests, cell: (r) => fmtCount(r.requests) },
      { key: "p50", label: "p50", num: true, value: (r) => stat(r, metric) || 0, cell: (r) => fmt(stat(r, metric)) },
      { key: "p90", label: "p90", num: true, value: (r) => stat(r, metric, "p90") || 0, cell: (r) => fmt(stat(r, metric, "p90")) },
      { key: "delta", label: "vs previous", num: true,
        value: (r) => { const p = prev(r); return p ? change(r, p, metric) : -Infinity; },
        cell: (r) => { const p = prev(r); return deltaCell(p ? change(r, p, metric) : null); } },
      { key: "links", label: "", value: () => "", cell: (r) => {
        const p = prev(r);
        return [h("a", { href: v.flameLink({ build: r.group }) }, "flame graph"),
          p ? [" · ", h("a", { href: link("/compare", carry(params, { service, endpoint, a: p.group, b: r.group })) }, "compare with " + p.group)] : null];
      } },
    ], buildRows));
}
