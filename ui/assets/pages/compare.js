// @ts-check
// Compare (`#/compare?service=&endpoint=&a=&b=`, or `&mode=window&a.from=&a.to=&b.from=&b.to=`):
// a baseline against a candidate, two builds or two windows, as a differential flame graph and
// a table of the functions whose share changed.

import * as api from "../api.js";
import { ppCell } from "../cells.js";
import { el as h, message } from "../dom.js";
import { diffColor, Flame, mergeDiff } from "../flame.js";
import { fmtClock, fmtCount, fmtNs, fmtPct, fmtShare, fmtTime, naturalCompare } from "../format.js";
import { carry, link, timeWindow } from "../hash.js";
import { timed } from "../page.js";
import { sortableTable } from "../table.js";

/** @import { DiffReport, FlameTree, FunctionDiff, ServiceSummary } from "../api.js" */
/** @import { PageContext } from "../page.js" */
/** @import { Column } from "../table.js" */

/**
 * One side: a build, or a window (unix seconds, as strings from the URL).
 * @typedef {{build: string} | {from: string, to: string}} Side
 */

/**
 * @param {HTMLElement} main
 * @param {URLSearchParams} params
 * @param {PageContext} ctx
 */
export async function compare(main, params, ctx) {
  const w = timeWindow(params);
  const services = await api.services(w);
  if (!ctx.live()) return;
  const service = params.get("service") || (services[0] && services[0].service) || "";
  const endpoint = params.get("endpoint") || "";
  const rows = service ? await api.endpoints({ service, group_by: "build", ...w }) : [];
  if (!ctx.live()) return;
  const endpoints = Array.from(new Set(rows.map((r) => r.endpoint))).sort(naturalCompare);
  const builds = Array.from(new Set(rows.filter((r) => !endpoint || r.endpoint === endpoint).map((r) => r.group || ""))).sort(naturalCompare);
  const mode = params.get("a.from") || params.get("mode") === "window" ? "window" : "build";
  main.appendChild(h("h1", null, "Compare"));
  main.appendChild(form(params, mode, services, service, endpoints, endpoint, builds));

  /**
   * @param {string} p "a" or "b"
   * @returns {Side | null}
   */
  const side = (p) => {
    if (mode === "build") {
      const b = params.get(p);
      return b !== null && b !== "" ? { build: b } : null;
    }
    const from = params.get(p + ".from");
    const to = params.get(p + ".to");
    return from && to ? { from, to } : null;
  };
  const a = side("a");
  const b = side("b");
  if (!service || !a || !b) {
    main.appendChild(message("Pick a baseline and a candidate."));
    return;
  }
  const common = { service, ...w, ...(endpoint ? { endpoint } : {}) };
  /** @type {api.Query} */
  const diffParams = { format: "json", limit: 5000, ...common };
  for (const [k, v] of Object.entries(a)) diffParams["baseline." + k] = v;
  for (const [k, v] of Object.entries(b)) diffParams["candidate." + k] = v;
  const [diff, pa, pb] = await Promise.all([
    api.diff(diffParams),
    api.profile({ format: "json", max_nodes: 20000, ...common, ...a }),
    api.profile({ format: "json", max_nodes: 20000, ...common, ...b }),
  ]);
  if (!ctx.live()) return;
  main.appendChild(summary(diff, a, b));
  const holder = h("section", { class: "card" },
    h("h2", null, "Differential flame graph"),
    h("p", { class: "dim" }, "Widths: the candidate. Red: a larger share of the samples than in the baseline (slower); blue: smaller (faster)."));
  main.appendChild(holder);
  if (!pb.root.total) {
    holder.appendChild(message("The candidate has no samples."));
  } else {
    const graph = timed("diff", () => diffFlame(holder, pa, pb));
    ctx.onLeave(() => graph.destroy());
  }
  main.appendChild(h("section", { class: "card" }, h("h2", null, "Functions (" + diff.functions.length + ")"),
    h("p", { class: "dim" }, "Shares of all samples on each side; Δ in percentage points. Click a column to sort."),
    sortableTable(functionColumns(!!(diff.baseline.requests && diff.candidate.requests)), diff.functions, { key: "dself", desc: true })));
}

/**
 * The form that picks the service, endpoint and sides; a change of service, endpoint or mode
 * reloads the page (without sides), the button compares.
 * @param {URLSearchParams} params
 * @param {"build" | "window"} mode
 * @param {ServiceSummary[]} services
 * @param {string} service
 * @param {string[]} endpoints
 * @param {string} endpoint
 * @param {string[]} builds
 */
function form(params, mode, services, service, endpoints, endpoint, builds) {
  const f = {
    service: h("select", { name: "service" }, services.map((s) => h("option", { value: s.service, selected: s.service === service }, s.service))),
    endpoint: h("select", { name: "endpoint" }, h("option", { value: "" }, "(all endpoints)"),
      endpoints.map((e) => h("option", { value: e, selected: e === endpoint }, e))),
    mode: h("select", { name: "mode" }, h("option", { value: "build", selected: mode === "build" }, "two builds"),
      h("option", { value: "window", selected: mode === "window" }, "two windows")),
  };
  /**
   * @param {string} name
   * @param {string | null} value
   */
  const buildSel = (name, value) => h("select", { name }, h("option", { value: "" }, "–"),
    builds.map((b) => h("option", { value: b, selected: b === value }, b || "(none)")));
  /** @param {string | null} s unix seconds */
  const localTime = (s) => {
    if (!s) return "";
    const d = new Date(Number(s) * 1000);
    return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
  };
  /** @param {string} name */
  const win = (name) => h("input", { type: "datetime-local", name, value: localTime(params.get(name)) });
  const node = h("form", { class: "card compare-form" },
    h("label", null, "service ", f.service), h("label", null, "endpoint ", f.endpoint), h("label", null, "compare ", f.mode),
    mode === "build"
      ? [h("label", null, "baseline build ", buildSel("a", params.get("a"))), h("label", null, "candidate build ", buildSel("b", params.get("b")))]
      : [h("label", null, "baseline ", win("a.from"), " to ", win("a.to")), h("label", null, "candidate ", win("b.from"), " to ", win("b.to"))],
    h("button", { type: "submit" }, "compare"));
  /** @param {boolean} submit */
  const go = (submit) => {
    const fd = new FormData(node);
    const out = carry(params, { service: fd.get("service"), endpoint: fd.get("endpoint"), mode: fd.get("mode") });
    if (submit && fd.get("mode") === mode) {
      for (const k of ["a", "b"]) if (fd.get(k)) out[k] = fd.get(k);
      for (const k of ["a.from", "a.to", "b.from", "b.to"]) {
        if (fd.get(k)) out[k] = Math.floor(new Date(String(fd.get(k))).getTime() / 1000);
      }
    }
    location.hash = link("/compare", out);
  };
  node.addEventListener("submit", (ev) => {
    ev.preventDefault();
    go(true);
  });
  for (const s of [f.service, f.endpoint, f.mode]) s.addEventListener("change", () => go(false));
  return node;
}

/**
 * A line on each side's samples and CPU per request.
 * @param {DiffReport} diff
 * @param {Side} a
 * @param {Side} b
 */
function summary(diff, a, b) {
  /** @param {Side} s */
  const describe = (s) => "build" in s ? "build " + s.build : fmtTime(Number(s.from)) + "–" + fmtClock(Number(s.to));
  const reqA = diff.baseline.requests;
  const reqB = diff.candidate.requests;
  return h("p", null, "Baseline " + describe(a) + ": " + fmtCount(diff.baseline.samples) + " samples" +
    (reqA ? ", " + fmtNs(reqA.cpu_ns_per_request) + " CPU/request" : "") + " · candidate " + describe(b) + ": " +
    fmtCount(diff.candidate.samples) + " samples" + (reqB ? ", " + fmtNs(reqB.cpu_ns_per_request) + " CPU/request" : "") +
    (reqA && reqB ? " (" + fmtPct(reqB.cpu_ns_per_request / reqA.cpu_ns_per_request - 1) + ")" : ""));
}

/**
 * The differential flame graph: the candidate's widths, coloured by the change of each frame's
 * share against the largest change.
 * @param {HTMLElement} holder
 * @param {FlameTree} pa the baseline
 * @param {FlameTree} pb the candidate
 */
function diffFlame(holder, pa, pb) {
  const merged = mergeDiff(pa.root, pb.root);
  const bt = pa.root.total || 1;
  const ct = pb.root.total || 1;
  let scale = 0;
  /** @type {number[]} */
  const deltas = [];
  const fl = new Flame(holder, {
    tree: merged,
    extra: ["btotal", "bself"],
    colorOf: (i, f) => {
      if (!deltas.length) {
        for (let k = 0; k < f.count; k++) {
          const d = f.total[k] / ct - f.extra.btotal[k] / bt;
          deltas.push(d);
          if (k > 0) scale = Math.max(scale, Math.abs(d));
        }
      }
      return diffColor(deltas[i], scale);
    },
    tooltip: (i, f) => [f.names[i],
      "total: " + fmtShare(f.extra.btotal[i] / bt) + " → " + fmtShare(f.total[i] / ct) + " (" + ((f.total[i] / ct - f.extra.btotal[i] / bt) * 100).toFixed(2) + " pp" + ")",
      "self: " + fmtShare(f.extra.bself[i] / bt) + " → " + fmtShare(f.self[i] / ct)],
  });
  fl.draw();
  return fl;
}

/**
 * The function table's columns; the change of self CPU per request when both sides have
 * request figures.
 * @param {boolean} perRequest
 * @returns {Column<FunctionDiff>[]}
 */
function functionColumns(perRequest) {
  /** @type {Column<FunctionDiff>[]} */
  const cols = [
    { key: "name", label: "function", value: (r) => r.name, cell: (r) => h("code", null, r.name) },
    { key: "bself", label: "baseline self", num: true, value: (r) => r.baseline.self_share, cell: (r) => fmtShare(r.baseline.self_share) },
    { key: "cself", label: "candidate self", num: true, value: (r) => r.candidate.self_share, cell: (r) => fmtShare(r.candidate.self_share) },
    { key: "dself", label: "Δ self", num: true, value: (r) => r.self_share_delta, cell: (r) => ppCell(r.self_share_delta) },
    { key: "dtotal", label: "Δ total", num: true, value: (r) => r.total_share_delta, cell: (r) => ppCell(r.total_share_delta) },
  ];
  if (perRequest) {
    /** @param {FunctionDiff} r */
    const delta = (r) => (r.candidate.self_cpu_ns_per_request || 0) - (r.baseline.self_cpu_ns_per_request || 0);
    cols.push({ key: "dreq", label: "Δ self CPU / request", num: true, value: delta, cell: (r) => fmtNs(delta(r)) });
  }
  return cols;
}
