// @ts-check
// Which metric a page shows, and reading it from the API's rows.

/** @import { CostStats, TimeseriesPoint } from "./api.js" */

/**
 * A metric per request the API keeps.
 * @typedef {"cpu_ns" | "instructions"} Metric
 */

/** @typedef {"mean" | "p50" | "p90" | "p99"} Statistic */

/**
 * The metric to show for a row set: the wanted one, or for "auto" instructions when every row
 * with requests has them.
 * @param {Metric | "auto"} wanted
 * @param {CostStats[]} rows
 * @returns {Metric}
 */
export function pickMetric(wanted, rows) {
  if (wanted !== "auto") return wanted;
  const withReq = rows.filter((r) => r.requests > 0);
  if (withReq.length && withReq.every((r) => r.instructions && r.instructions_requests > 0)) return "instructions";
  return "cpu_ns";
}

/**
 * One statistic of a metric in a row (p50 unless given), or null when the row has none.
 * @param {CostStats | null | undefined} row
 * @param {Metric} metric
 * @param {Statistic} [which]
 * @returns {number | null}
 */
export function stat(row, metric, which) {
  const s = row && row[metric];
  return s ? s[which || "p50"] : null;
}

/**
 * The relative change of the p50 from `prev` to `row`; a missing statistic counts as 0, as
 * arithmetic on null does.
 * @param {CostStats} row
 * @param {CostStats} prev
 * @param {Metric} metric
 */
export function change(row, prev, metric) {
  return Number(stat(row, metric)) / Number(stat(prev, metric)) - 1;
}

/**
 * The points of a chart line: one statistic of each bucket that has it.
 * @param {TimeseriesPoint[]} points
 * @param {Metric} metric
 * @param {Statistic} [which]
 * @returns {{t: number, v: number}[]}
 */
export function line(points, metric, which) {
  const out = [];
  for (const p of points) {
    const v = stat(p, metric, which);
    if (v !== null) out.push({ t: p.time, v });
  }
  return out;
}
