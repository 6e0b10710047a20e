// @ts-check
// The URL holds each page's state after the `#`: `#/page?k=v&k=v`. The header's range and
// metric apply to every page and are carried along by links between pages.

/** @import { Metric } from "./metric.js" */

/**
 * The page's path and parameters.
 * @returns {{path: string, params: URLSearchParams}}
 */
export function parseHash() {
  const h = location.hash.replace(/^#/, "") || "/";
  const q = h.indexOf("?");
  const path = q < 0 ? h : h.slice(0, q);
  const params = new URLSearchParams(q < 0 ? "" : h.slice(q + 1));
  return { path: path || "/", params };
}

/**
 * A `#path?k=v` link; empty, null and undefined values are left out.
 * @param {string} path
 * @param {Record<string, unknown>} [params]
 */
export function link(path, params) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== "") p.set(k, String(v));
  }
  const s = p.toString();
  return "#" + path + (s ? "?" + s : "");
}

/**
 * Changes the URL without rendering again (in-page state such as zoom or search); an empty
 * value removes its parameter.
 * @param {Record<string, unknown>} changes
 */
export function replaceParams(changes) {
  const { path, params } = parseHash();
  for (const [k, v] of Object.entries(changes)) {
    if (v === undefined || v === null || v === "") params.delete(k);
    else params.set(k, String(v));
  }
  const s = params.toString();
  history.replaceState(null, "", "#" + path + (s ? "?" + s : ""));
}

/** The header's ranges, in seconds (a Map: `range=constructor` is no range). */
const RANGES = new Map([["1h", 3600], ["6h", 6 * 3600], ["24h", 86400], ["7d", 7 * 86400], ["30d", 30 * 86400]]);

/**
 * The header's settings, valid ones only: a key of RANGES (6h by default) and a metric.
 * @param {URLSearchParams} params
 * @returns {{range: string, metric: Metric | "auto"}}
 */
export function globals(params) {
  const r = params.get("range");
  const m = params.get("metric");
  const range = r !== null && RANGES.has(r) ? r : "6h";
  const metric = m === "instructions" || m === "cpu_ns" ? m : "auto";
  return { range, metric };
}

/**
 * The [from, to) window in unix seconds: explicit from/to win over the range.
 * @param {URLSearchParams} params
 * @returns {{from: number, to: number}}
 */
export function timeWindow(params) {
  const from = Number(params.get("from"));
  const to = Number(params.get("to"));
  if (from > 0 && to > from) return { from, to };
  const now = Math.ceil(Date.now() / 1000) + 60;
  return { from: now - (RANGES.get(globals(params).range) || 0), to: now };
}

/**
 * Link parameters that keep the header's range and metric.
 * @param {URLSearchParams} params
 * @param {Record<string, unknown>} more
 * @returns {Record<string, unknown>}
 */
export function carry(params, more) {
  /** @type {Record<string, unknown>} */
  const out = {};
  for (const k of ["range", "metric"]) if (params.get(k)) out[k] = params.get(k);
  return Object.assign(out, more);
}
