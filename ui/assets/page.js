// @ts-check
// What a page is to the router: a function that fills `main` from the URL's parameters.

import { byId } from "./dom.js";
import { probe } from "./probe.js";

/**
 * `live()` turns false once the user has navigated elsewhere, so late answers are dropped;
 * `onLeave(f)` runs `f` then (observers, resize listeners).
 * @typedef {object} PageContext
 * @property {() => boolean} live
 * @property {(f: () => void) => void} onLeave
 */

/**
 * @typedef {(main: HTMLElement, params: URLSearchParams, ctx: PageContext) => Promise<void>} Page
 */

/**
 * Runs `f` and records how long it took as the render time of `name`, in `window.__pw.renders`
 * and as `data-render-{name}` on `#main`.
 * @template T
 * @param {string} name
 * @param {() => T} f
 * @returns {T}
 */
export function timed(name, f) {
  const t0 = performance.now();
  const out = f();
  const ms = performance.now() - t0;
  probe.renders[name] = ms;
  byId("main", HTMLElement).dataset["render" + name[0].toUpperCase() + name.slice(1)] = ms.toFixed(1);
  return out;
}
