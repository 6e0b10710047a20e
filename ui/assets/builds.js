// @ts-check
// The order builds rolled out in.

import { naturalCompare } from "./format.js";

/**
 * Builds in the order they were first seen in a build-grouped timeseries (of requests or of
 * memory), then by name (those in `names` the timeseries lacks); `first` is each seen build's
 * first bucket, unix seconds.
 * @param {{time: number, group?: string}[] | null | undefined} points
 * @param {string[] | null | undefined} names
 * @returns {{order: string[], first: Map<string, number>}}
 */
export function buildOrder(points, names) {
  /** @type {Map<string, number>} */
  const first = new Map();
  for (const p of points || []) {
    if (p.group === undefined) continue;
    const seen = first.get(p.group);
    if (seen === undefined || p.time < seen) first.set(p.group, p.time);
  }
  const all = Array.from(new Set([...(names || []), ...first.keys()]));
  all.sort((a, b) => {
    const fa = first.get(a) ?? Infinity;
    const fb = first.get(b) ?? Infinity;
    return fa !== fb ? fa - fb : naturalCompare(a, b);
  });
  return { order: all, first };
}
