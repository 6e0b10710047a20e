// @ts-check
// Numbers and times as the pages show them; "–" for a missing or non-finite value.

/** @import { Metric } from "./metric.js" */

/**
 * Nanoseconds as ns, µs, ms or s.
 * @param {number | null | undefined} ns
 */
export function fmtNs(ns) {
  if (ns === null || ns === undefined || !isFinite(ns)) return "–";
  const a = Math.abs(ns);
  if (a >= 1e9) return (ns / 1e9).toFixed(a >= 1e10 ? 1 : 2) + " s";
  if (a >= 1e6) return (ns / 1e6).toFixed(a >= 1e7 ? 1 : 2) + " ms";
  if (a >= 1e3) return (ns / 1e3).toFixed(a >= 1e4 ? 1 : 2) + " µs";
  return ns.toFixed(0) + " ns";
}

/**
 * A count with a k, M, G or T suffix.
 * @param {number | null | undefined} n
 */
export function fmtCount(n) {
  if (n === null || n === undefined || !isFinite(n)) return "–";
  const a = Math.abs(n);
  if (a >= 1e12) return (n / 1e12).toFixed(2) + " T";
  if (a >= 1e9) return (n / 1e9).toFixed(2) + " G";
  if (a >= 1e6) return (n / 1e6).toFixed(2) + " M";
  if (a >= 1e4) return (n / 1e3).toFixed(1) + " k";
  return Math.round(n).toString();
}

/**
 * Bytes in binary units: B, KiB, MiB, GiB or TiB, one decimal below 100 of the unit.
 * @param {number | null | undefined} n
 */
export function fmtBytes(n) {
  if (n === null || n === undefined || !isFinite(n)) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return (i === 0 ? v.toFixed(0) : v.toFixed(Math.abs(v) >= 100 ? 0 : 1)) + " " + units[i];
}

/**
 * A value of `metric`: CPU time, or instructions.
 * @param {Metric} metric
 * @param {number | null | undefined} v
 */
export function fmtMetric(metric, v) {
  return metric === "cpu_ns" ? fmtNs(v) : fmtCount(v) + (metric === "instructions" ? " ins" : "");
}

/**
 * A signed change: 0.083 → "+8.3%".
 * @param {number | null | undefined} ratio
 * @param {number} [digits] after the point, 1 unless given
 */
export function fmtPct(ratio, digits) {
  if (ratio === null || ratio === undefined || !isFinite(ratio)) return "–";
  const d = digits === undefined ? 1 : digits;
  const v = ratio * 100;
  return (v > 0 ? "+" : "") + v.toFixed(d) + "%";
}

/**
 * A share of a whole: 0.25 → "25.00%" (three digits below 0.1%).
 * @param {number} share
 */
export function fmtShare(share) {
  if (!isFinite(share)) return "–";
  return (share * 100).toFixed(share < 0.001 && share > 0 ? 3 : 2) + "%";
}

/** @param {number} n */
const pad = (n) => String(n).padStart(2, "0");

/**
 * Local date and time to the minute: "2026-12-03 16:05".
 * @param {number} unixSec
 */
export function fmtTime(unixSec) {
  const d = new Date(unixSec * 1000);
  return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
    pad(d.getHours()) + ":" + pad(d.getMinutes());
}

/**
 * Local time of day: "16:05".
 * @param {number} unixSec
 */
export function fmtClock(unixSec) {
  const d = new Date(unixSec * 1000);
  return pad(d.getHours()) + ":" + pad(d.getMinutes());
}

/**
 * Orders builds (and names) naturally: numeric parts compared as numbers.
 * @param {unknown} a
 * @param {unknown} b
 */
export function naturalCompare(a, b) {
  return String(a).localeCompare(String(b), undefined, { numeric: true, sensitivity: "base" });
}
