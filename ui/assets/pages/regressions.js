// @ts-check
// The regressions (`#/regressions?state=`): every record, or those in one state.

import * as api from "../api.js";
import { effectText } from "../cells.js";
import { el as h, message } from "../dom.js";
import { fmtTime } from "../format.js";
import { carry, link } from "../hash.js";
import { sortableTable } from "../table.js";

/** @import { PageContext } from "../page.js" */

const STATES = ["open", "acknowledged", "resolved"];

/**
 * @param {HTMLElement} main
 * @param {URLSearchParams} params
 * @param {PageContext} ctx
 */
export async function regressions(main, params, ctx) {
  const state = params.get("state") || "";
  const regs = await api.regressions({ state });
  if (!ctx.live()) return;
  main.appendChild(h("h1", null, "Regressions"));
  main.appendChild(h("div", { class: "toolbar" }, ["", ...STATES].map((s) =>
    h("a", { class: "tab" + (s === state ? " active" : ""), href: link("/regressions", carry(params, { state: s })) }, s || "all"))));
  if (!regs.length) {
    main.appendChild(message("No regressions" + (state ? " in state " + state : "") + "."));
    return;
  }
  main.appendChild(sortableTable([
    { key: "state", label: "state", value: (r) => STATES.indexOf(r.state), cell: (r) => h("span", { class: "badge " + r.state }, r.state) },
    { key: "where", label: "service · endpoint", value: (r) => r.service + " " + r.endpoint,
      cell: (r) => h("a", { href: link("/regression", carry(params, { id: r.id })) }, r.service + " · " + r.endpoint) },
    { key: "metric", label: "metric", value: (r) => r.metric },
    { key: "builds", label: "builds", value: (r) => r.candidate, cell: (r) => r.baseline + " → " + r.candidate },
    { key: "effect", label: "effect [interval]", num: true, value: (r) => r.effect, cell: (r) => effectText(r) },
    { key: "q", label: "q", num: true, value: (r) => r.q_value, cell: (r) => r.q_value.toPrecision(2) },
    { key: "seen", label: "first seen", value: (r) => r.first_seen, cell: (r) => fmtTime(r.first_seen / 1e9) },
  ], regs));
}
