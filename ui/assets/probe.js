// @ts-check
// What the browser test reads, and no module reads back: `window.__pwErrors`, every console
// error, uncaught error and unhandled rejection; `window.__pw.renders`, the last render time of
// each page (ms, `performance.now()`); `window.__pw.flame`, the flame graph on screen.
// app.js imports this module first, so it listens before any other module runs.

/** @import { Flame } from "./flame.js" */

/** @type {string[]} */
const errors = [];

/** @type {{renders: Record<string, number>, flame?: Flame}} */
export const probe = { renders: {} };

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
