// @ts-check
// The dashboard's entry point, the one script index.html loads: the router, #/page?params →
// the page's module. The header's range, metric and token apply to every page and live in the
// URL (range, metric) or in localStorage (token).

import "./probe.js"; // first: it listens for errors before any other module runs
import { setToken, token } from "./api.js";
import { byId, clear, message, showError } from "./dom.js";
import { globals, parseHash } from "./hash.js";
import { compare } from "./pages/compare.js";
import { endpoint } from "./pages/endpoint.js";
import { flame } from "./pages/flame.js";
import { memory } from "./pages/memory.js";
import { overview } from "./pages/overview.js";
import { regression } from "./pages/regression.js";
import { regressions } from "./pages/regressions.js";
import { tooltip } from "./tooltip.js";

/** @import { Page, PageContext } from "./page.js" */

/**
 * Each path's page name (shown in the title, the nav and `data-page` on `#main`) and page.
 * @type {Map<string, [string, Page]>}
 */
const ROUTES = new Map([
  ["/", ["overview", overview]],
  ["/endpoint", ["endpoint", endpoint]],
  ["/flame", ["flame", flame]],
  ["/compare", ["compare", compare]],
  ["/regressions", ["regressions", regressions]],
  ["/regression", ["regression", regression]],
  ["/memory", ["memory", memory]],
]);

const main = byId("main", HTMLElement);
const rangeSel = byId("range", HTMLSelectElement);
const metricSel = byId("metric", HTMLSelectElement);
const tokenInput = byId("token", HTMLInputElement);
let generation = 0;
/** @type {(() => void)[]} */
let leaving = [];

/** Renders the page the URL names, dropping the one before. */
function render() {
  generation++;
  const mine = generation;
  for (const f of leaving) f();
  leaving = [];
  tooltip().hidden = true;
  const { path, params } = parseHash();
  const route = ROUTES.get(path);
  const name = route && route[0];
  const g = globals(params);
  rangeSel.value = g.range;
  metricSel.value = g.metric;
  for (const a of document.querySelectorAll("[data-nav]")) {
    if (!(a instanceof HTMLElement)) continue;
    a.classList.toggle("active", a.dataset.nav === name || (name === "regression" && a.dataset.nav === "regressions"));
  }
  clear(main);
  main.dataset.page = name || "missing";
  main.dataset.state = "loading";
  if (!route) {
    main.appendChild(message("No such page. Go to the overview."));
    main.dataset.state = "ready";
    return;
  }
  document.title = "profwatch · " + route[0];
  /** @type {PageContext} */
  const ctx = { live: () => mine === generation, onLeave: (f) => leaving.push(f) };
  const loading = message("loading…", "dim");
  main.appendChild(loading);
  route[1](main, params, ctx).then(() => {
    if (!ctx.live()) return;
    if (loading.parentNode) loading.remove();
    main.dataset.state = "ready";
  }, (e) => {
    if (!ctx.live()) return;
    if (loading.parentNode) loading.remove();
    showError(main, e);
    main.dataset.state = "error";
  });
}

/**
 * Sets one of the header's parameters in the URL, which renders the page again.
 * @param {string} key
 * @param {string} value
 */
function setGlobal(key, value) {
  const { path, params } = parseHash();
  params.set(key, value);
  location.hash = "#" + path + "?" + params.toString();
}

rangeSel.addEventListener("change", () => {
  const { path, params } = parseHash();
  params.delete("from");
  params.delete("to");
  params.set("range", rangeSel.value);
  location.hash = "#" + path + "?" + params.toString();
});
metricSel.addEventListener("change", () => setGlobal("metric", metricSel.value));
tokenInput.value = token();
byId("token-form", HTMLFormElement).addEventListener("submit", (e) => {
  e.preventDefault();
  setToken(tokenInput.value);
  render();
});
window.addEventListener("hashchange", render);
render();
