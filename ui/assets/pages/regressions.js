// @ts-check
// The regressions (`#/regressions?state=&incident=`), grouped by incident (the regressions of
// one build or one moment): every record, those in one state, or one incident's.

import * as api from "../api.js";
import { effectText } from "../cells.js";
import { el as h, message } from "../dom.js";
import { fmtTime } from "../format.js";
import { carry, link } from "../hash.js";
import { sortableTable } from "../table.js";

/** @import { PageContext } from "../page.js" */
/** @import { Incident, RegressionRecord } from "../api.js" */

const STATES = ["open", "acknowledged", "resolved"];

/**
 * @param {HTMLElement} main
 * @param {URLSearchParams} params
 * @param {PageContext} ctx
 */
export async function regressions(main, params, ctx) {
  const state = params.get("state") || "";
  const only = params.get("incident") || "";
  const all = await api.incidents({});
  if (!ctx.live()) return;
  main.appendChild(h("h1", null, "Regressions"));
  main.appendChild(h("div", { class: "toolbar" }, ["", ...STATES].map((s) =>
    h("a", { class: "tab" + (s === state ? " active" : ""), href: link("/regressions", carry(params, { state: s })) }, s || "all"))));
  const shown = all
    .filter((i) => !only || i.id === only)
    .map((i) => ({ incident: i, regs: i.regressions.filter((r) => !state || r.state === state) }))
    .filter((g) => g.regs.length);
  if (!shown.length) {
    main.appendChild(message("No regressions" + (state ? " in state " + state : "") + (only ? " in this incident" : "") + "."));
    return;
  }
  for (const { incident, regs } of shown) main.appendChild(incidentSection(incident, regs, params));
}

/**
 * One incident: what caused it, what it touches, and its regressions' table.
 * @param {Incident} i
 * @param {RegressionRecord[]} regs its records to show
 * @param {URLSearchParams} params
 */
function incidentSection(i, regs, params) {
  const cause = "build" in i.cause ? "build " + i.cause.build : "change at " + fmtTime(i.cause.time / 1e9);
  const n = i.regressions.length;
  return h("section", { class: "incident", "data-incident": i.id }, [
    h("h2", null, [
      h("span", { class: "badge " + i.state }, i.state), " ",
      h("a", { href: link("/regressions", carry(params, { incident: i.id })) }, "Incident: " + cause),
      " · " + n + (n === 1 ? " regression" : " regressions") + " in " + i.services.join(", "),
    ]),
    sortableTable([
      { key: "state", label: "state", value: (r) => STATES.indexOf(r.state), cell: (r) => h("span", { class: "badge " + r.state }, r.state) },
      { key: "kind", label: "kind", value: (r) => r.kind || "cpu" },
      { key: "where", label: "service · endpoint [· function]", value: (r) => where(r),
        cell: (r) => h("a", { href: link("/regression", carry(params, { id: r.id })) }, where(r)) },
      { key: "metric", label: "metric", value: (r) => r.metric },
      { key: "builds", label: "builds", value: (r) => r.candidate, cell: (r) => r.baseline + " → " + r.candidate },
      { key: "effect", label: "effect [interval]", num: true, value: (r) => r.effect, cell: (r) => effectText(r) },
      { key: "q", label: "q", num: true, value: (r) => r.q_value, cell: (r) => r.q_value.toPrecision(2) },
      { key: "seen", label: "first seen", value: (r) => r.first_seen, cell: (r) => fmtTime(r.first_seen / 1e9) },
    ], regs),
  ]);
}

/**
 * `service · endpoint`, and `· function` for a function-level record; `service · memory per
 * worker` for a memory record.
 * @param {RegressionRecord} r
 */
export function where(r) {
  if (r.kind === "memory") return r.service + " · memory per worker";
  return r.service + " · " + r.endpoint + (r.function ? " · " + r.function : "");
}
