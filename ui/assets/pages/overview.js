// @ts-check
// The overview (`#/`): per service, each endpoint's cost per request in its newest build against
// the build before, endpoints with an open regression first, and a sparkline for each row on
// screen.

import * as api from "../api.js";
import { buildOrder } from "../builds.js";
import { deltaCell, regressionBadge } from "../cells.js";
import { sparkline } from "../chart.js";
import { clear, el as h, message } from "../dom.js";
import { fmtCount, fmtMetric, naturalCompare } from "../format.js";
import { carry, globals, link, replaceParams, timeWindow } from "../hash.js";
import { pickMetric, stat } from "../metric.js";
import { timed } from "../page.js";

/** @import { EndpointStats, RegressionRecord, TimeseriesPoint } from "../api.js" */
/** @import { Metric } from "../metric.js" */
/** @import { PageContext } from "../page.js" */

/**
 * What the overview loads per service: its endpoints by build, and the build-grouped
 * timeseries of its busiest endpoint (for the order of its builds).
 * @typedef {object} ServiceData
 * @property {string} service
 * @property {number} requests
 * @property {EndpointStats[]} rows
 * @property {TimeseriesPoint[]} ts
 */

/**
 * One endpoint's row on screen, with the slot its sparkline goes in.
 * @typedef {object} Row
 * @property {HTMLTableRowElement} tr
 * @property {HTMLElement} spark
 * @property {string} endpoint
 * @property {string} service
 * @property {Metric} metric
 */

/**
 * @param {HTMLElement} main
 * @param {URLSearchParams} params
 * @param {PageContext} ctx
 */
export async function overview(main, params, ctx) {
  const g = globals(params);
  const w = timeWindow(params);
  const [services, regs] = await Promise.all([
    api.services(w),
    api.regressions({ state: "open" }).catch(() => []),
  ]);
  if (!ctx.live()) return;
  const data = await Promise.all(services.map(async (s) => {
    const rows = await api.endpoints({ service: s.service, group_by: "build", ...w });
    /** @type {string | null} */
    let top = null;
    /** @type {Map<string, number>} */
    const perEndpoint = new Map();
    for (const r of rows) {
      perEndpoint.set(r.endpoint, (perEndpoint.get(r.endpoint) || 0) + r.requests);
    }
    for (const [e, n] of perEndpoint) if (!top || n > (perEndpoint.get(top) || 0)) top = e;
    /** @type {TimeseriesPoint[]} */
    let ts = [];
    if (top !== null) {
      ts = await api.timeseries({ service: s.service, endpoint: top, group_by: "build", ...w })
        .catch(() => []);
    }
    return { service: s.service, requests: s.requests, rows, ts };
  }));
  if (!ctx.live()) return;
  timed("overview", () => render(main, params, g.metric, w, data, regs, ctx));
}

/**
 * @param {HTMLElement} main
 * @param {URLSearchParams} params
 * @param {Metric | "auto"} wanted the header's metric
 * @param {{from: number, to: number}} w
 * @param {ServiceData[]} data
 * @param {RegressionRecord[]} regs
 * @param {PageContext} ctx
 */
function render(main, params, wanted, w, data, regs, ctx) {
  clear(main);
  const filter = params.get("q") || "";
  const openRegs = regs.filter((r) => r.state === "open");
  /** @type {Map<string, RegressionRecord>} */
  const regOf = new Map();
  for (const r of openRegs) regOf.set(r.service + "\u0000" + r.endpoint, r);
  main.appendChild(h("h1", null, "Services"));
  if (openRegs.length) {
    main.appendChild(h("section", { class: "card open-regs" },
      h("h2", null, "Open regressions (" + openRegs.length + ")"),
      h("ul", null, openRegs.slice(0, 10).map((r) => h("li", null,
        h("a", { href: link("/regression", { id: r.id }) }, r.service + " · " + r.endpoint),
        " ", deltaCell(r.effect - 1), " ",
        h("span", { class: "dim" }, r.metric + ", build " + r.baseline + " → " + r.candidate))))));
  }
  if (!data.length) {
    main.appendChild(message("No requests in this range. Send events to POST /api/v1/events, or widen the range."));
    return;
  }
  const search = h("input", { type: "search", placeholder: "filter endpoints", value: filter, class: "filter", "aria-label": "filter endpoints" });
  main.appendChild(search);
  /** @type {Row[]} */
  const rows = [];
  for (const s of data) {
    const section = serviceSection(s, params, wanted, regOf);
    rows.push(...section.rows);
    main.appendChild(section.node);
  }
  const applyFilter = () => {
    const q = search.value.toLowerCase();
    for (const r of rows) r.tr.hidden = q !== "" && !r.endpoint.toLowerCase().includes(q);
  };
  search.addEventListener("input", () => {
    applyFilter();
    replaceParams({ q: search.value });
  });
  applyFilter();
  lazySparklines(rows, w, ctx);
}

/**
 * One service's card: a row per endpoint, its newest build against the one before.
 * @param {ServiceData} s
 * @param {URLSearchParams} params
 * @param {Metric | "auto"} wanted
 * @param {Map<string, RegressionRecord>} regOf open regressions by service and endpoint
 * @returns {{node: HTMLElement, rows: Row[]}}
 */
function serviceSection(s, params, wanted, regOf) {
  const builds = buildOrder(s.ts, s.rows.map((r) => r.group || ""));
  const rank = new Map(builds.order.map((b, i) => [b, i]));
  const metric = pickMetric(wanted, s.rows);
  /** @type {Map<string, EndpointStats[]>} */
  const byEndpoint = new Map();
  for (const r of s.rows) {
    const list = byEndpoint.get(r.endpoint);
    if (list) list.push(r);
    else byEndpoint.set(r.endpoint, [r]);
  }
  const summaries = [];
  for (const [endpoint, rs] of byEndpoint) {
    rs.sort((a, b) => (rank.get(a.group || "") || 0) - (rank.get(b.group || "") || 0));
    const cur = rs[rs.length - 1];
    const prev = rs.length > 1 ? rs[rs.length - 2] : null;
    const c = stat(cur, metric);
    const p = prev ? stat(prev, metric) : null;
    summaries.push({
      endpoint,
      requests: rs.reduce((n, r) => n + r.requests, 0),
      cost: c,
      build: cur.group || "",
      prevBuild: prev ? prev.group || "" : null,
      delta: c !== null && p ? c / p - 1 : null,
      reg: regOf.get(s.service + "\u0000" + endpoint) || null,
    });
  }
  summaries.sort((a, b) => (b.reg ? 1 : 0) - (a.reg ? 1 : 0) || b.requests - a.requests || naturalCompare(a.endpoint, b.endpoint));
  const tbody = h("tbody");
  const rows = summaries.map((r) => {
    const spark = h("span", { class: "spark-slot", dataset: { endpoint: r.endpoint } });
    const tr = h("tr", { class: r.reg ? "has-reg" : null, dataset: { endpoint: r.endpoint } },
      h("td", null, h("a", { href: link("/endpoint", carry(params, { service: s.service, endpoint: r.endpoint })) }, r.endpoint),
        r.reg ? [" ", regressionBadge(r.reg)] : null),
      h("td", { class: "num" }, fmtCount(r.requests)),
      h("td", { class: "num" }, fmtMetric(metric, r.cost)),
      h("td", null, r.build),
      h("td", { class: "num" }, deltaCell(r.delta), r.prevBuild !== null ? h("span", { class: "dim" }, " vs " + r.prevBuild) : null),
      h("td", null, spark));
    tbody.appendChild(tr);
    return { tr, spark, endpoint: r.endpoint, service: s.service, metric };
  });
  const table = h("table", { class: "data overview", dataset: { service: s.service } },
    h("thead", null, h("tr", null,
      h("th", null, "endpoint"), h("th", { class: "num" }, "requests"),
      h("th", { class: "num" }, (metric === "cpu_ns" ? "CPU time" : "instructions") + " / request (p50)"),
      h("th", null, "build"), h("th", { class: "num" }, "vs previous build"), h("th", null, "trend"))),
    tbody);
  const node = h("section", { class: "card service", dataset: { service: s.service } },
    h("h2", null, s.service, h("span", { class: "dim" }, " · " + fmtCount(s.requests) + " requests · " +
      byEndpoint.size + " endpoints · builds " + builds.order.filter((b) => b !== "").join(", ")),
      " ", h("a", { class: "small", href: link("/flame", carry(params, { service: s.service })) }, "flame graph"),
      " ", h("a", { class: "small", href: link("/compare", carry(params, { service: s.service })) }, "compare builds"),
      " ", h("a", { class: "small", href: link("/memory", carry(params, { service: s.service })) }, "memory")),
    table);
  return { node, rows };
}

/**
 * Sparklines load for the rows on screen only, a few requests at a time.
 * @param {Row[]} rows
 * @param {{from: number, to: number}} w
 * @param {PageContext} ctx
 */
function lazySparklines(rows, w, ctx) {
  /** @type {Map<Element, Row>} */
  const rowOf = new Map(rows.map((r) => [r.tr, r]));
  /** @type {Row[]} */
  const queue = [];
  let running = 0;
  const pump = () => {
    while (running < 4 && queue.length && ctx.live()) {
      const job = /** @type {Row} */ (queue.shift());
      running++;
      const step = Math.max(60, Math.ceil((w.to - w.from) / 30));
      api.timeseries({ service: job.service, endpoint: job.endpoint, from: w.from, to: w.to, step })
        .then((pts) => {
          if (!ctx.live()) return;
          clear(job.spark).appendChild(sparkline(pts.map((p) => stat(p, job.metric) ?? p.cpu_ns.p50)));
        })
        .catch(() => { /* a missing sparkline is not worth an error */ })
        .finally(() => {
          running--;
          pump();
        });
    }
  };
  const obs = new IntersectionObserver((entries) => {
    for (const e of entries) {
      if (!e.isIntersecting) continue;
      obs.unobserve(e.target);
      const row = rowOf.get(e.target);
      if (row) queue.push(row);
    }
    pump();
  });
  ctx.onLeave(() => obs.disconnect());
  for (const r of rows) obs.observe(r.tr);
}
