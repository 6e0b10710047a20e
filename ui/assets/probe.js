// @ts-check
// What the browser test reads, and no module reads back: `window.__pwErrors`, every console
// error, uncaught error and unhandled rejection; `window.__pw.renders`, the last render time of
// each page (ms, `performance.now()`); `window.__pw.calls`, the last API call of each path
// (request to last byte, then JSON.parse, ms); `window.__pw.loads.flame`, the last flame graph
// from its requests to the first frame after its draw (what `profwatch-bench flame` reads);
// `window.__pw.flame`, the flame graph on screen.
// app.js imports this module first, so it listens before any other module runs.

/** @import { Flame } from "./flame.js" */

/** @type {string[]} */
const errors = [];

/**
 * @typedef {object} CallTiming
 * @property {number} request_ms from `fetch` to the answer's last byte
 * @property {number} parse_ms JSON.parse of the answer
 */

/**
 * @typedef {object} LoadTiming
 * @property {number} request_ms the page's data: its calls, from the first request to the last parse
 * @property {number} profile_request_ms the profile's call, request to last byte
 * @property {number} profile_parse_ms the profile's JSON.parse
 * @property {number} draw_ms building and drawing the graph
 * @property {number} frame_ms from the first request to the first frame after the draw
 * @property {number} nodes the tree's nodes
 */

/** @type {{renders: Record<string, number>, calls: Record<string, CallTiming>, loads: Record<string, LoadTiming>, flame?: Flame}} */
export const probe = { renders: {}, calls: {}, loads: {} };

Object.assign(window, { __pwErrors: errors, __pw: probe });

window.addEventListener("error", (e) => {
  errors.push("error: " + (e.message || String(e.error)));
});
window.addEventListener("unhandledrejection", (e) => {
  errors.push("unhandled rejection: " + String(e.reason && e.reason.message || e.reason));
});
const consoleError = console.error.bind(console);
console.error = function (...args) {
  errors.push("console.error: " + args.map(String).join(" "));
  consoleError(...args);
};
