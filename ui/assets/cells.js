// @ts-check
// Small pieces several pages show: a change as a coloured cell, a regression's badge and effect.

import { el } from "./dom.js";
import { fmtPct } from "./format.js";
import { link } from "./hash.js";

/** @import { RegressionRecord } from "./api.js" */

/**
 * A relative change, red above +2%, green below -2%.
 * @param {number | null} ratio
 */
export function deltaCell(ratio) {
  if (ratio === null || !isFinite(ratio)) return el("span", { class: "dim" }, "–");
  const cls = ratio > 0.02 ? "worse" : ratio < -0.02 ? "better" : "same";
  return el("span", { class: "delta " + cls }, fmtPct(ratio));
}

/**
 * A change of share, in percentage points.
 * @param {number | null} delta
 */
export function ppCell(delta) {
  if (delta === null || !isFinite(delta)) return el("span", { class: "dim" }, "–");
  const v = delta * 100;
  const cls = v > 0.05 ? "worse" : v < -0.05 ? "better" : "same";
  return el("span", { class: "delta " + cls }, (v > 0 ? "+" : "") + v.toFixed(2) + " pp");
}

/**
 * A link to a regression: its effect while open, else its state.
 * @param {RegressionRecord} r
 */
export function regressionBadge(r) {
  return el("a", { class: "badge " + r.state, href: link("/regression", { id: r.id }), title: "regression " + r.id },
    r.state === "open" ? "regression " + fmtPct(r.effect - 1) : r.state);
}

/**
 * The effect's interval, or null for a record without one (it could not be computed).
 * @param {RegressionRecord} r
 * @returns {{low: number, high: number} | null}
 */
export function interval(r) {
  return r.effect_low != null && r.effect_high != null ? { low: r.effect_low, high: r.effect_high } : null;
}

/**
 * The effect and its interval: "+8.0% [+6.1%, +9.9%]".
 * @param {RegressionRecord} r
 */
export function effectText(r) {
  const i = interval(r);
  const ci = i ? " [" + fmtPct(i.low - 1) + ", " + fmtPct(i.high - 1) + "]" : " (no interval)";
  return fmtPct(r.effect - 1) + ci;
}
