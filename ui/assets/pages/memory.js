// @ts-check
// Memory per worker (`#/memory?service=&host_gib=`): each build's private and shared memory
// per process over time, and how many workers fit on a host: floor((host memory − shared per
// worker) / private per worker), the shared part counted once. The store does not know a
// host's memory, so the page asks for it (GiB, 16 unless the URL says otherwise).

import * as api from "../api.js";
import { buildOrder } from "../builds.js";
import { chart } from "../chart.js";
import { clear, el as h, message } from "../dom.js";
import { fmtBytes, fmtPct, fmtTime } from "../format.js";
import { carry, link, replaceParams, timeWindow } from "../hash.js";
import { timed } from "../page.js";
import { sortableTable } from "../table.js";

/** @import { MemoryPoint, MemoryRow, ServiceSummary } from "../api.js" */
/** @import { Marker } from "../chart.js" */
/** @import { PageContext } from "../page.js" */

const GIB = 1024 * 1024 * 1024;
const DEFAULT_HOST_GIB = 16;

/**
 * Workers of `row`'s size that fit in `hostBytes`: the shared part once, then the private part
 * per worker; 0 when the shared part alone does not fit, null without private memory.
 * @param {number} hostBytes
 * @param {MemoryRow} row
 * @returns {number | null}
 */
export function workersPerHost(hostBytes, row) {
  if (!(row.private_bytes > 0)) return null;
  return Math.max(0, Math.floor((hostBytes - row.shared_bytes) / row.private_bytes));
}

/**
 * The host memory the URL asks for, in GiB: `host_gib` when it is a number above 0.
 * @param {string | null} raw
 */
function hostGib(raw) {
  const v = Number(raw);
  return raw !== null && raw !== "" && isFinite(v) && v > 0 ? v : DEFAULT_HOST_GIB;
}

/**
 * @param {HTMLElement} main
 * @param {URLSearchParams} params
 * @param {PageContext} ctx
 */
export async function memory(main, params, ctx) {
  const w = timeWindow(params);
  const services = await api.services(w);
  if (!ctx.live()) return;
  const service = params.get("service") || (services[0] && services[0].service) || "";
  main.appendChild(h("h1", null, "Memory per worker", service ? " · " + service : null));
  const hostInput = h("input", {
    id: "host-gib", type: "number", min: "0", step: "any", value: String(hostGib(params.get("host_gib"))),
    "aria-label": "host memory (GiB)", style: "width: 6em",
  });
  main.appendChild(form(params, services, service, hostInput));
  if (!service) {
    main.appendChild(message("No service in this range. Name one above, or widen the range."));
    return;
  }
  const step = Math.max(1, Math.ceil((w.to - w.from) / 60));
  const [rows, points] = await Promise.all([
    api.memory({ service, group_by: "build", ...w }),
    api.memoryTimeseries({ service, group_by: "build", step, ...w }),
  ]);
  if (!ctx.live()) return;
  if (!rows.length) {
    main.appendChild(noSamples(service));
    return;
  }
  timed("memory", () => {
    const order = buildOrder(points, rows.map((r) => r.group));
    const rank = new Map(order.order.map((b, i) => [b, i]));
    rows.sort((a, b) => (rank.get(a.group) ?? 0) - (rank.get(b.group) ?? 0));
    const figures = h("div");
    const draw = () => {
      clear(figures);
      const gib = Number(hostInput.value);
      if (!(hostInput.value !== "" && isFinite(gib) && gib > 0)) {
        figures.appendChild(message("Enter the memory of a host in GiB, a number above 0.", "warn"));
        return;
      }
      figures.appendChild(fitSection(rows, gib));
      figures.appendChild(buildsSection(rows, order.first, gib));
    };
    hostInput.addEventListener("input", () => {
      const gib = Number(hostInput.value);
      if (hostInput.value !== "" && isFinite(gib) && gib > 0) replaceParams({ host_gib: hostInput.value });
      draw();
    });
    draw();
    main.appendChild(figures);
    /** @type {Marker[]} */
    const markers = [];
    for (const [b, t] of order.first) markers.push({ t, label: "build " + b });
    main.appendChild(chartsSection(points, order.order, w, step, markers));
  });
}

/**
 * The service (a free field with the services seen as suggestions: a service with memory
 * samples but no requests is not among them) and the host's memory.
 * @param {URLSearchParams} params
 * @param {ServiceSummary[]} services
 * @param {string} service
 * @param {HTMLInputElement} hostInput
 */
function form(params, services, service, hostInput) {
  const serviceInput = h("input", { name: "service", value: service, list: "memory-services", "aria-label": "service" });
  return h("form", {
    class: "toolbar",
    onsubmit: (/** @type {Event} */ e) => {
      e.preventDefault();
      location.hash = link("/memory", carry(params, { service: serviceInput.value, host_gib: hostInput.value }));
    },
  },
  h("label", null, "service ", serviceInput),
  h("datalist", { id: "memory-services" }, services.map((s) => h("option", { value: s.service }))),
  h("button", { type: "submit" }, "show"),
  h("label", null, "host memory (GiB) ", hostInput),
  h("span", { class: "dim small" }, "The store does not know a host's memory: enter what a host has for the workers."));
}

/**
 * What to do when a service has no memory samples.
 * @param {string} service
 */
function noSamples(service) {
  return h("p", { class: "msg", id: "memory-empty" },
    "No memory samples for " + service + " in this range. They come from the sidecar's memory watch: run ",
    h("code", null, "profwatch agent --memory-name NAME"), " (processes by name) or ",
    h("code", null, "--memory-pid PID"),
    "; the service and build are read from each process's PROFWATCH_SERVICE and PROFWATCH_BUILD " +
    "(else --memory-service, --memory-build). See the sidecar's README.");
}

/**
 * Workers per host for the newest build and the one before, and the change between them.
 * @param {MemoryRow[]} rows in build order
 * @param {number} gib the host's memory
 */
function fitSection(rows, gib) {
  const host = gib * GIB;
  const newest = rows[rows.length - 1];
  const prev = rows.length > 1 ? rows[rows.length - 2] : null;
  const after = workersPerHost(host, newest);
  const before = prev ? workersPerHost(host, prev) : null;
  /** @type {import("../dom.js").Child} */
  let headline;
  if (prev && before !== null && after !== null) {
    const change = before > 0 ? after / before - 1 : null;
    const cls = change === null || change === 0 ? "same" : change > 0 ? "better" : "worse";
    headline = [before + " → " + after + " workers per host ",
      h("span", { class: "delta " + cls, id: "fit-pct" }, "(" + fmtPct(change) + ")"),
      " with build " + newest.group + " (build " + prev.group + " before it)"];
  } else {
    headline = [(after === null ? "–" : String(after)) + " workers per host with build " + (newest.group || "(none)"),
      prev ? "" : h("span", { class: "dim" }, " (no build before it in this range)")];
  }
  return h("section", { class: "card", id: "fit" },
    h("h2", null, "Workers per host (" + gib + " GiB)"),
    h("p", { class: "fit-change", id: "fit-change", dataset: {
      before: before === null ? "" : String(before), after: after === null ? "" : String(after),
    } }, headline),
    h("p", { class: "dim" }, "floor((host memory − shared per worker) / private per worker): the shared part " +
      "(libraries, pages shared since fork) is counted once per host, the private part once per worker. " +
      "Means per process over the range."));
}

/**
 * One row per build in rollout order.
 * @param {MemoryRow[]} rows in build order
 * @param {Map<string, number>} first each build's first bucket
 * @param {number} gib
 */
function buildsSection(rows, first, gib) {
  /**
   * @param {number} v
   * @param {string} what
   */
  const bytes = (v, what) => h("span", { dataset: { [what]: String(v) } }, fmtBytes(v));
  const table = sortableTable([
    { key: "build", label: "build", value: (r) => r.group, cell: (r) => r.group || "(none)" },
    { key: "first", label: "first seen", value: (r) => first.get(r.group) || 0, cell: (r) => {
      const t = first.get(r.group);
      return t !== undefined ? fmtTime(t) : "–";
    } },
    { key: "processes", label: "workers", num: true, value: (r) => r.processes },
    { key: "private", label: "private / worker", num: true, value: (r) => r.private_bytes, cell: (r) => bytes(r.private_bytes, "private") },
    { key: "shared", label: "shared / worker", num: true, value: (r) => r.shared_bytes, cell: (r) => bytes(r.shared_bytes, "shared") },
    { key: "rss", label: "RSS", num: true, value: (r) => r.rss_bytes, cell: (r) => fmtBytes(r.rss_bytes) },
    { key: "pss", label: "PSS", num: true, value: (r) => r.pss_bytes, cell: (r) => fmtBytes(r.pss_bytes) },
    { key: "swap", label: "swap", num: true, value: (r) => r.swap_bytes, cell: (r) => fmtBytes(r.swap_bytes) },
    { key: "fit", label: "workers per host", num: true, value: (r) => workersPerHost(gib * GIB, r) ?? -1,
      cell: (r) => h("span", { dataset: { fit: "" } }, String(workersPerHost(gib * GIB, r) ?? "–")) },
  ], rows);
  table.classList.add("memory-builds");
  return h("section", { class: "card" }, h("h2", null, "Builds"),
    h("p", { class: "dim" }, "Workers: processes sampled in the range. Memory: the mean per process."), table);
}

/**
 * Private and shared memory per worker over time, one line per build in each chart.
 * @param {MemoryPoint[]} points
 * @param {string[]} builds in rollout order
 * @param {{from: number, to: number}} w
 * @param {number} step
 * @param {Marker[]} markers
 */
function chartsSection(points, builds, w, step, markers) {
  /** @param {(p: MemoryPoint) => number} value */
  const series = (value) => builds.map((b) => ({
    name: "build " + (b || "(none)"),
    points: points.filter((p) => p.group === b).map((p) => ({ t: p.time, v: value(p) })),
  }));
  const opts = { from: w.from, to: w.to, step, markers, fmt: fmtBytes, height: 220 };
  return h("section", { class: "card", id: "memory-charts" },
    h("h2", null, "Private memory per worker"),
    chart({ ...opts, series: series((p) => p.private_bytes) }),
    h("h2", null, "Shared memory per worker"),
    chart({ ...opts, series: series((p) => p.shared_bytes) }),
    h("p", { class: "dim" }, "Mean per process in each bucket, by build; vertical lines: each build's first sample."));
}
