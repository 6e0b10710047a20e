// @ts-check
// A flame graph (`#/flame?service=&endpoint=&build=&dc=&host=&from=&to=&nodes=&q=&zoom=`): the
// profile of a selector over a window, with search and zoom kept in the URL, and each frame's
// cost per request when the request events answer for the same selector.

import * as api from "../api.js";
import { el as h, message } from "../dom.js";
import { Flame } from "../flame.js";
import { fmtCount, fmtNs, fmtShare, fmtTime } from "../format.js";
import { carry, link, parseHash, replaceParams, timeWindow } from "../hash.js";
import { timed } from "../page.js";
import { probe } from "../probe.js";

/** @import { PageContext } from "../page.js" */

/**
 * Mean cost of a request: CPU ns, and instructions when counted.
 * @typedef {{cpu: number, ins: number | null}} PerRequest
 */

/** The parameters that select samples, in the order the title names them. */
const SELECTORS = ["endpoint", "build", "dc", "host"];

/**
 * Mean cost per request of a selector, from the request events, when they answer for it (an
 * endpoint and at most one of build, dc, host).
 * @param {string} service
 * @param {string | undefined} endpoint
 * @param {string | undefined} group the selector's build, dc or host key
 * @param {string | null} value its value
 * @param {{from: number, to: number}} w
 * @returns {Promise<PerRequest | null>}
 */
async function perRequest(service, endpoint, group, value, w) {
  if (!endpoint) return null;
  const rows = await api.endpoints({ service, group_by: group || "", ...w }).catch(() => []);
  const row = rows.find((r) => r.endpoint === endpoint && (!group || r.group === value));
  if (!row) return null;
  return { cpu: row.cpu_ns.mean, ins: row.instructions ? row.instructions.mean : null };
}

/**
 * A tooltip line: the label, the share and, with request figures, the cost per request.
 * @param {string} label
 * @param {number} share
 * @param {PerRequest | null} req
 */
function costLine(label, share, req) {
  const parts = [label + fmtShare(share)];
  if (req) {
    parts.push("≈ " + fmtNs(share * req.cpu) + " CPU" + (req.ins !== null ? ", " + fmtCount(share * req.ins) + " instructions" : "") + " per request");
  }
  return parts.join(" ");
}

/**
 * @param {HTMLElement} main
 * @param {URLSearchParams} params
 * @param {PageContext} ctx
 */
export async function flame(main, params, ctx) {
  const service = params.get("service") || "";
  if (!service) {
    main.appendChild(message("Pick a service on the overview."));
    return;
  }
  const w = timeWindow(params);
  const nodes = Number(params.get("nodes")) || 20000;
  /** @type {Record<string, string>} */
  const sel = {};
  for (const k of SELECTORS) {
    const v = params.get(k);
    if (v) sel[k] = v;
  }
  const group = ["build", "dc", "host"].find((k) => sel[k]);
  const t0 = performance.now();
  const [profile, req] = await Promise.all([
    api.profile({ service, format: "json", max_nodes: nodes, ...w, ...sel }),
    perRequest(service, sel.endpoint, group, group ? sel[group] : null, w),
  ]);
  const t1 = performance.now();
  if (!ctx.live()) return;
  const title = [service].concat(SELECTORS.filter((k) => sel[k]).map((k) => k + " " + sel[k]));
  main.appendChild(h("h1", null, "Flame graph · " + title.join(" · ")));
  main.appendChild(h("p", { class: "dim" }, fmtTime(w.from) + " to " + fmtTime(w.to) + " · " +
    fmtCount(profile.root.total) + " samples · " + profile.nodes + " nodes" +
    (profile.pruned ? " (" + profile.pruned + " thinnest pruned by the server; raise the node limit to see them)" : "") +
    (req ? " · " + fmtNs(req.cpu) + " CPU per request (mean)" : "")));
  if (!profile.root.total) {
    main.appendChild(message("No profile samples for this selection and window."));
    return;
  }
  const search = h("input", { type: "search", id: "flame-search", placeholder: "search functions (/regex/)", value: params.get("q") || "", "aria-label": "search functions" });
  const nodesSel = h("select", { "aria-label": "node limit" }, [5000, 20000, 50000, 100000, 200000].map((n) =>
    h("option", { value: n, selected: n === nodes }, fmtCount(n) + " nodes")));
  const reset = h("button", { type: "button", id: "flame-reset" }, "reset zoom");
  const compare = sel.endpoint ? h("a", { href: link("/compare", carry(params, { service, endpoint: sel.endpoint, b: sel.build || "" })) }, "compare…") : null;
  main.appendChild(h("div", { class: "toolbar" }, search, nodesSel, reset, compare));
  const holder = h("div", { class: "card" });
  main.appendChild(holder);
  const total = profile.root.total;
  const graph = timed("flame", () => {
    const f = new Flame(holder, {
      tree: profile.root,
      zoom: params.get("zoom") || "",
      search: params.get("q") || "",
      onZoom: (path) => replaceParams({ zoom: path }),
      tooltip: (i, fl) => [fl.names[i],
        costLine("total: " + fmtCount(fl.total[i]) + " samples, ", fl.total[i] / total, req),
        costLine("self: " + fmtCount(fl.self[i]) + " samples, ", fl.self[i] / total, req)],
    });
    f.draw();
    return f;
  });
  ctx.onLeave(() => graph.destroy());
  probe.flame = graph;
  // The first frame after the draw: the next animation frame, then the task after it (the
  // frame has been produced by then).
  const drawMs = probe.renders.flame;
  const call = probe.calls.profile;
  requestAnimationFrame(() => setTimeout(() => {
    probe.loads.flame = {
      request_ms: t1 - t0,
      profile_request_ms: call ? call.request_ms : NaN,
      profile_parse_ms: call ? call.parse_ms : NaN,
      draw_ms: drawMs,
      frame_ms: performance.now() - t0,
      nodes: profile.nodes,
    };
  }, 0));
  search.addEventListener("input", () => {
    graph.search(search.value);
    replaceParams({ q: search.value });
  });
  reset.addEventListener("click", () => graph.zoomTo(0));
  nodesSel.addEventListener("change", () => {
    const p = parseHash().params;
    p.set("nodes", nodesSel.value);
    location.hash = "#/flame?" + p.toString();
  });
}
