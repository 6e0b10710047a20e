// The dashboard's pages. Each takes (main, params, ctx) and fills `main`; ctx.live() turns false
// once the user has navigated elsewhere, so late answers are dropped.
"use strict";

PW.pages = {};

const h = PW.el;

function winParams(params) {
  const w = PW.window(params);
  return { from: w.from, to: w.to };
}

// Keeps range and metric when linking between pages.
function carry(params, more) {
  const out = {};
  for (const k of ["range", "metric"]) if (params.get(k)) out[k] = params.get(k);
  return Object.assign(out, more);
}

function deltaCell(ratio) {
  if (ratio === null || !isFinite(ratio)) return h("span", { class: "dim" }, "–");
  const cls = ratio > 0.02 ? "worse" : ratio < -0.02 ? "better" : "same";
  return h("span", { class: "delta " + cls }, PW.fmtPct(ratio));
}

// The order builds rolled out in: first time seen in a build-grouped timeseries, then by name.
function buildOrder(points, names) {
  const first = new Map();
  for (const p of points || []) {
    if (p.group === undefined) continue;
    if (!first.has(p.group) || p.time < first.get(p.group)) first.set(p.group, p.time);
  }
  const all = Array.from(new Set([...(names || []), ...first.keys()]));
  all.sort((a, b) => {
    const fa = first.has(a) ? first.get(a) : Infinity;
    const fb = first.has(b) ? first.get(b) : Infinity;
    return fa !== fb ? fa - fb : PW.naturalCompare(a, b);
  });
  return { order: all, first };
}

// A change of share, in percentage points.
function ppCell(delta) {
  if (delta === null || !isFinite(delta)) return h("span", { class: "dim" }, "–");
  const v = delta * 100;
  const cls = v > 0.05 ? "worse" : v < -0.05 ? "better" : "same";
  return h("span", { class: "delta " + cls }, (v > 0 ? "+" : "") + v.toFixed(2) + " pp");
}

function regressionBadge(r) {
  return h("a", { class: "badge " + r.state, href: PW.link("/regression", { id: r.id }), title: "regression " + r.id },
    r.state === "open" ? "regression " + PW.fmtPct(r.effect - 1) : r.state);
}

// ---------------------------------------------------------------- overview

PW.pages.overview = async function (main, params, ctx) {
  const g = PW.globals(params);
  const w = winParams(params);
  const [services, regs] = await Promise.all([
    PW.api("services", w),
    PW.api("regressions", { state: "open" }).catch(() => []),
  ]);
  if (!ctx.live()) return;
  const data = await Promise.all(services.map(async (s) => {
    const rows = await PW.api("endpoints", Object.assign({ service: s.service, group_by: "build" }, w));
    let top = null;
    const perEndpoint = new Map();
    for (const r of rows) {
      perEndpoint.set(r.endpoint, (perEndpoint.get(r.endpoint) || 0) + r.requests);
    }
    for (const [e, n] of perEndpoint) if (!top || n > perEndpoint.get(top)) top = e;
    let ts = [];
    if (top !== null) {
      ts = await PW.api("timeseries", Object.assign({ service: s.service, endpoint: top, group_by: "build" }, w))
        .catch(() => []);
    }
    return { service: s.service, requests: s.requests, rows, ts };
  }));
  if (!ctx.live()) return;
  PW.timed("overview", () => renderOverview(main, params, g, w, data, regs, ctx));
};

function renderOverview(main, params, g, w, data, regs, ctx) {
  PW.clear(main);
  const filter = params.get("q") || "";
  const openRegs = regs.filter((r) => r.state === "open");
  const regOf = new Map();
  for (const r of openRegs) regOf.set(r.service + "\u0000" + r.endpoint, r);
  main.appendChild(h("h1", null, "Services"));
  if (openRegs.length) {
    main.appendChild(h("section", { class: "card open-regs" },
      h("h2", null, "Open regressions (" + openRegs.length + ")"),
      h("ul", null, openRegs.slice(0, 10).map((r) => h("li", null,
        h("a", { href: PW.link("/regression", { id: r.id }) }, r.service + " · " + r.endpoint),
        " ", deltaCell(r.effect - 1), " ",
        h("span", { class: "dim" }, r.metric + ", build " + r.baseline + " → " + r.candidate))))));
  }
  if (!data.length) {
    main.appendChild(PW.message("No requests in this range. Send events to POST /api/v1/events, or widen the range."));
    return;
  }
  const search = h("input", { type: "search", placeholder: "filter endpoints", value: filter, class: "filter", "aria-label": "filter endpoints" });
  main.appendChild(search);
  const sections = [];
  for (const s of data) {
    const builds = buildOrder(s.ts, s.rows.map((r) => r.group || ""));
    const rank = new Map(builds.order.map((b, i) => [b, i]));
    const metric = PW.pickMetric(g.metric, s.rows);
    const byEndpoint = new Map();
    for (const r of s.rows) {
      if (!byEndpoint.has(r.endpoint)) byEndpoint.set(r.endpoint, []);
      byEndpoint.get(r.endpoint).push(r);
    }
    const rows = [];
    for (const [endpoint, rs] of byEndpoint) {
      rs.sort((a, b) => (rank.get(a.group || "") || 0) - (rank.get(b.group || "") || 0));
      const cur = rs[rs.length - 1];
      const prev = rs.length > 1 ? rs[rs.length - 2] : null;
      const c = PW.stat(cur, metric);
      const p = prev ? PW.stat(prev, metric) : null;
      rows.push({
        endpoint,
        requests: rs.reduce((n, r) => n + r.requests, 0),
        cost: c,
        build: cur.group || "",
        prevBuild: prev ? prev.group || "" : null,
        delta: c !== null && p ? c / p - 1 : null,
        reg: regOf.get(s.service + "\u0000" + endpoint) || null,
      });
    }
    rows.sort((a, b) => (b.reg ? 1 : 0) - (a.reg ? 1 : 0) || b.requests - a.requests || PW.naturalCompare(a.endpoint, b.endpoint));
    const tbody = h("tbody");
    const trs = rows.map((r) => {
      const spark = h("span", { class: "spark-slot", dataset: { endpoint: r.endpoint } });
      const tr = h("tr", { class: r.reg ? "has-reg" : null, dataset: { endpoint: r.endpoint } },
        h("td", null, h("a", { href: PW.link("/endpoint", carry(params, { service: s.service, endpoint: r.endpoint })) }, r.endpoint),
          r.reg ? [" ", regressionBadge(r.reg)] : null),
        h("td", { class: "num" }, PW.fmtCount(r.requests)),
        h("td", { class: "num" }, PW.fmtMetric(metric, r.cost)),
        h("td", null, r.build),
        h("td", { class: "num" }, deltaCell(r.delta), r.prevBuild !== null ? h("span", { class: "dim" }, " vs " + r.prevBuild) : null),
        h("td", null, spark));
      tr._spark = spark;
      tr._endpoint = r.endpoint;
      tbody.appendChild(tr);
      return tr;
    });
    const table = h("table", { class: "data overview", dataset: { service: s.service } },
      h("thead", null, h("tr", null,
        h("th", null, "endpoint"), h("th", { class: "num" }, "requests"),
        h("th", { class: "num" }, (metric === "cpu_ns" ? "CPU time" : "instructions") + " / request (p50)"),
        h("th", null, "build"), h("th", { class: "num" }, "vs previous build"), h("th", null, "trend"))),
      tbody);
    const section = h("section", { class: "card service", dataset: { service: s.service } },
      h("h2", null, s.service, h("span", { class: "dim" }, " · " + PW.fmtCount(s.requests) + " requests · " +
        byEndpoint.size + " endpoints · builds " + builds.order.filter((b) => b !== "").join(", ")),
        " ", h("a", { class: "small", href: PW.link("/flame", carry(params, { service: s.service })) }, "flame graph"),
        " ", h("a", { class: "small", href: PW.link("/compare", carry(params, { service: s.service })) }, "compare builds")),
      table);
    section._trs = trs;
    section._metric = metric;
    section._service = s.service;
    sections.push(section);
    main.appendChild(section);
  }
  const applyFilter = () => {
    const q = search.value.toLowerCase();
    for (const sec of sections) {
      for (const tr of sec._trs) tr.hidden = q !== "" && !tr._endpoint.toLowerCase().includes(q);
    }
  };
  search.addEventListener("input", () => {
    applyFilter();
    PW.replaceParams({ q: search.value });
  });
  applyFilter();
  lazySparklines(sections, w, ctx);
}

// Sparklines load for the rows on screen only, a few requests at a time.
function lazySparklines(sections, w, ctx) {
  const queue = [];
  let running = 0;
  const pump = () => {
    while (running < 4 && queue.length && ctx.live()) {
      const job = queue.shift();
      running++;
      const step = Math.max(60, Math.ceil((w.to - w.from) / 30));
      PW.api("timeseries", { service: job.service, endpoint: job.tr._endpoint, from: w.from, to: w.to, step })
        .then((pts) => {
          if (!ctx.live()) return;
          PW.clear(job.tr._spark).appendChild(PW.sparkline(pts.map((p) => PW.stat(p, job.metric) ?? PW.stat(p, "cpu_ns"))));
        })
        .catch(() => { /* a missing sparkline is not worth an error */ })
        .finally(() => {
          running--;
          pump();
        });
    }
  };
  const obs = new IntersectionObserver((entries) => {
    for (const e of entries) {
      if (!e.isIntersecting) continue;
      obs.unobserve(e.target);
      const sec = e.target.closest("section");
      queue.push({ tr: e.target, service: sec._service, metric: sec._metric });
    }
    pump();
  });
  ctx.onLeave(() => obs.disconnect());
  for (const sec of sections) for (const tr of sec._trs) obs.observe(tr);
}

// ---------------------------------------------------------------- endpoint

PW.pages.endpoint = async function (main, params, ctx) {
  const service = params.get("service") || "";
  const endpoint = params.get("endpoint") || "";
  if (!service || !endpoint) {
    main.appendChild(PW.message("Pick an endpoint on the overview."));
    return;
  }
  const g = PW.globals(params);
  const w = winParams(params);
  const step = Math.max(1, Math.ceil((w.to - w.from) / 60));
  const base = Object.assign({ service, endpoint, step }, w);
  const [ts, tsBuild, tsDc, byBuild, byDc, regs] = await Promise.all([
    PW.api("timeseries", base),
    PW.api("timeseries", Object.assign({ group_by: "build" }, base)),
    PW.api("timeseries", Object.assign({ group_by: "dc" }, base)),
    PW.api("endpoints", Object.assign({ service, group_by: "build" }, w)),
    PW.api("endpoints", Object.assign({ service, group_by: "dc" }, w)),
    PW.api("regressions", { service }).catch(() => []),
  ]);
  if (!ctx.live()) return;
  PW.timed("endpoint", () => {
    const metric = PW.pickMetric(g.metric, ts);
    const fmt = (v) => PW.fmtMetric(metric, v);
    const builds = buildOrder(tsBuild, []);
    const flameLink = (more) => PW.link("/flame", carry(params, Object.assign({ service, endpoint }, more)));
    main.appendChild(h("h1", null, h("a", { href: PW.link("/", carry(params, {})) }, service), " · ", endpoint));
    for (const r of regs.filter((r) => r.endpoint === endpoint && r.state !== "resolved")) {
      main.appendChild(h("p", { class: "msg warn" }, regressionBadge(r), " build " + r.candidate + " vs " + r.baseline + ": " +
        r.metric + " " + effectText(r)));
    }
    const markers = builds.order.map((b) => ({ t: builds.first.get(b), label: "build " + b, href: flameLink({ build: b }) }));
    const onSelect = (from, to) => {
      location.hash = flameLink({ from, to });
    };
    main.appendChild(h("section", { class: "card" },
      h("h2", null, (metric === "cpu_ns" ? "CPU time" : "Instructions") + " per request"),
      h("p", { class: "dim" }, "Line: p50; band: p50 to p90 (the API keeps p50/p90/p99, not p10); dashed: mean. " +
        "Vertical lines: build rollouts (first request seen). Drag across the chart or click a bucket to open that window's flame graph."),
      PW.chart({
        from: w.from, to: w.to, fmt, step, onSelect, markers,
        selectLabel: "click or drag: flame graph of this window",
        series: [
          { name: "p50", points: ts.map((p) => ({ t: p.time, v: PW.stat(p, metric, "p50") })),
            band: ts.map((p) => ({ t: p.time, lo: PW.stat(p, metric, "p50"), hi: PW.stat(p, metric, "p90") })) },
          { name: "mean", dash: "4 3", color: "#868e96", points: ts.map((p) => ({ t: p.time, v: PW.stat(p, metric, "mean") })) },
        ].map((s) => Object.assign(s, { points: s.points.filter((p) => p.v !== null) })),
      })));
    const dcs = Array.from(new Set(tsDc.map((p) => p.group))).sort(PW.naturalCompare);
    main.appendChild(h("section", { class: "card" },
      h("h2", null, "By data centre (p50)"),
      PW.chart({
        from: w.from, to: w.to, fmt, step, onSelect, markers, height: 200,
        series: dcs.map((dc) => ({ name: dc || "(none)", points: tsDc.filter((p) => p.group === dc && PW.stat(p, metric) !== null).map((p) => ({ t: p.time, v: PW.stat(p, metric) })) })),
      }),
      PW.sortableTable([
        { key: "dc", label: "dc", value: (r) => r.group || "", cell: (r) => h("a", { href: flameLink({ dc: r.group }) }, r.group || "(none)") },
        { key: "requests", label: "requests", num: true, value: (r) => r.requests, cell: (r) => PW.fmtCount(r.requests) },
        { key: "p50", label: "p50", num: true, value: (r) => PW.stat(r, metric) || 0, cell: (r) => fmt(PW.stat(r, metric)) },
        { key: "p90", label: "p90", num: true, value: (r) => PW.stat(r, metric, "p90") || 0, cell: (r) => fmt(PW.stat(r, metric, "p90")) },
      ], byDc.filter((r) => r.endpoint === endpoint), { key: "requests", desc: true })));
    const buildRows = byBuild.filter((r) => r.endpoint === endpoint);
    const order = buildOrder(tsBuild, buildRows.map((r) => r.group || "")).order;
    buildRows.sort((a, b) => order.indexOf(a.group || "") - order.indexOf(b.group || ""));
    const prevOf = new Map();
    buildRows.forEach((r, i) => prevOf.set(r.group || "", i > 0 ? buildRows[i - 1] : null));
    main.appendChild(h("section", { class: "card" },
      h("h2", null, "Builds"),
      PW.sortableTable([
        { key: "build", label: "build", value: (r) => r.group || "", cell: (r) => r.group || "(none)" },
        { key: "first", label: "first seen", value: (r) => builds.first.get(r.group) || 0, cell: (r) => builds.first.has(r.group) ? PW.fmtTime(builds.first.get(r.group)) : "–" },
        { key: "requests", label: "requests", num: true, value: (r) => r.requests, cell: (r) => PW.fmtCount(r.requests) },
        { key: "p50", label: "p50", num: true, value: (r) => PW.stat(r, metric) || 0, cell: (r) => fmt(PW.stat(r, metric)) },
        { key: "p90", label: "p90", num: true, value: (r) => PW.stat(r, metric, "p90") || 0, cell: (r) => fmt(PW.stat(r, metric, "p90")) },
        { key: "delta", label: "vs previous", num: true,
          value: (r) => { const p = prevOf.get(r.group || ""); return p ? PW.stat(r, metric) / PW.stat(p, metric) - 1 : -Infinity; },
          cell: (r) => { const p = prevOf.get(r.group || ""); return deltaCell(p ? PW.stat(r, metric) / PW.stat(p, metric) - 1 : null); } },
        { key: "links", label: "", value: () => "", cell: (r) => {
          const p = prevOf.get(r.group || "");
          return [h("a", { href: flameLink({ build: r.group }) }, "flame graph"),
            p ? [" · ", h("a", { href: PW.link("/compare", carry(params, { service, endpoint, a: p.group, b: r.group })) }, "compare with " + p.group)] : null];
        } },
      ], buildRows)));
  });
};

// ---------------------------------------------------------------- flame graph

// Mean cost per request of a selector, from the request events, when they answer for it.
async function perRequest(service, endpoint, group, value, w) {
  if (!endpoint) return null;
  const rows = await PW.api("endpoints", Object.assign({ service, group_by: group || "" }, w)).catch(() => []);
  const row = rows.find((r) => r.endpoint === endpoint && (!group || r.group === value));
  if (!row) return null;
  return { cpu: row.cpu_ns.mean, ins: row.instructions ? row.instructions.mean : null };
}

function costLines(label, share, req) {
  const parts = [label + PW.fmtShare(share)];
  if (req) {
    parts.push("≈ " + PW.fmtNs(share * req.cpu) + " CPU" + (req.ins !== null ? ", " + PW.fmtCount(share * req.ins) + " instructions" : "") + " per request");
  }
  return parts.join(" ");
}

const SELECTORS = ["endpoint", "build", "dc", "host"];

PW.pages.flame = async function (main, params, ctx) {
  const service = params.get("service") || "";
  if (!service) {
    main.appendChild(PW.message("Pick a service on the overview."));
    return;
  }
  const w = winParams(params);
  const nodes = Number(params.get("nodes")) || 20000;
  const sel = {};
  for (const k of SELECTORS) if (params.get(k)) sel[k] = params.get(k);
  const group = ["build", "dc", "host"].find((k) => sel[k]);
  const [profile, req] = await Promise.all([
    PW.api("profile", Object.assign({ service, format: "json", max_nodes: nodes }, w, sel)),
    perRequest(service, sel.endpoint, group, group ? sel[group] : null, w),
  ]);
  if (!ctx.live()) return;
  const title = [service].concat(SELECTORS.filter((k) => sel[k]).map((k) => k + " " + sel[k]));
  main.appendChild(h("h1", null, "Flame graph · " + title.join(" · ")));
  main.appendChild(h("p", { class: "dim" }, PW.fmtTime(w.from) + " to " + PW.fmtTime(w.to) + " · " +
    PW.fmtCount(profile.root.total) + " samples · " + profile.nodes + " nodes" +
    (profile.pruned ? " (" + profile.pruned + " thinnest pruned by the server; raise the node limit to see them)" : "") +
    (req ? " · " + PW.fmtNs(req.cpu) + " CPU per request (mean)" : "")));
  if (!profile.root.total) {
    main.appendChild(PW.message("No profile samples for this selection and window."));
    return;
  }
  const search = h("input", { type: "search", id: "flame-search", placeholder: "search functions (/regex/)", value: params.get("q") || "", "aria-label": "search functions" });
  const nodesSel = h("select", { "aria-label": "node limit" }, [5000, 20000, 50000, 100000, 200000].map((n) =>
    h("option", { value: n, selected: n === nodes }, PW.fmtCount(n) + " nodes")));
  const reset = h("button", { type: "button", id: "flame-reset" }, "reset zoom");
  const compare = sel.endpoint ? h("a", { href: PW.link("/compare", carry(params, { service, endpoint: sel.endpoint, b: sel.build || "" })) }, "compare…") : null;
  main.appendChild(h("div", { class: "toolbar" }, search, nodesSel, reset, compare));
  const holder = h("div", { class: "card" });
  main.appendChild(holder);
  const total = profile.root.total;
  const flame = PW.timed("flame", () => {
    const f = new PW.Flame(holder, {
      tree: profile.root,
      zoom: params.get("zoom") || "",
      search: params.get("q") || "",
      onZoom: (path) => PW.replaceParams({ zoom: path }),
      tooltip: (i, fl) => [fl.names[i],
        costLines("total: " + PW.fmtCount(fl.total[i]) + " samples, ", fl.total[i] / total, req),
        costLines("self: " + PW.fmtCount(fl.self[i]) + " samples, ", fl.self[i] / total, req)],
    });
    f.draw();
    return f;
  });
  ctx.onLeave(() => flame.destroy());
  window.__pw.flame = flame;
  search.addEventListener("input", () => {
    flame.search(search.value);
    PW.replaceParams({ q: search.value });
  });
  reset.addEventListener("click", () => flame.zoomTo(0));
  nodesSel.addEventListener("change", () => {
    const p = PW.parseHash().params;
    p.set("nodes", nodesSel.value);
    location.hash = "#/flame?" + p.toString();
  });
};

// ---------------------------------------------------------------- compare

PW.pages.compare = async function (main, params, ctx) {
  const w = winParams(params);
  const services = await PW.api("services", w);
  if (!ctx.live()) return;
  const service = params.get("service") || (services[0] && services[0].service) || "";
  const endpoint = params.get("endpoint") || "";
  const rows = service ? await PW.api("endpoints", Object.assign({ service, group_by: "build" }, w)) : [];
  if (!ctx.live()) return;
  const endpoints = Array.from(new Set(rows.map((r) => r.endpoint))).sort(PW.naturalCompare);
  const builds = Array.from(new Set(rows.filter((r) => !endpoint || r.endpoint === endpoint).map((r) => r.group || ""))).sort(PW.naturalCompare);
  const mode = params.get("a.from") || params.get("mode") === "window" ? "window" : "build";
  main.appendChild(h("h1", null, "Compare"));
  const f = {
    service: h("select", { name: "service" }, services.map((s) => h("option", { value: s.service, selected: s.service === service }, s.service))),
    endpoint: h("select", { name: "endpoint" }, h("option", { value: "" }, "(all endpoints)"),
      endpoints.map((e) => h("option", { value: e, selected: e === endpoint }, e))),
    mode: h("select", { name: "mode" }, h("option", { value: "build", selected: mode === "build" }, "two builds"),
      h("option", { value: "window", selected: mode === "window" }, "two windows")),
  };
  const buildSel = (name, value) => h("select", { name }, h("option", { value: "" }, "–"),
    builds.map((b) => h("option", { value: b, selected: b === value }, b || "(none)")));
  const localTime = (s) => {
    if (!s) return "";
    const d = new Date(Number(s) * 1000);
    return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
  };
  const win = (name) => h("input", { type: "datetime-local", name, value: localTime(params.get(name)) });
  const form = h("form", { class: "card compare-form" },
    h("label", null, "service ", f.service), h("label", null, "endpoint ", f.endpoint), h("label", null, "compare ", f.mode),
    mode === "build"
      ? [h("label", null, "baseline build ", buildSel("a", params.get("a"))), h("label", null, "candidate build ", buildSel("b", params.get("b")))]
      : [h("label", null, "baseline ", win("a.from"), " to ", win("a.to")), h("label", null, "candidate ", win("b.from"), " to ", win("b.to"))],
    h("button", { type: "submit" }, "compare"));
  const go = (submit) => {
    const fd = new FormData(form);
    const out = carry(params, { service: fd.get("service"), endpoint: fd.get("endpoint"), mode: fd.get("mode") });
    if (submit && fd.get("mode") === mode) {
      for (const k of ["a", "b"]) if (fd.get(k)) out[k] = fd.get(k);
      for (const k of ["a.from", "a.to", "b.from", "b.to"]) {
        if (fd.get(k)) out[k] = Math.floor(new Date(fd.get(k)).getTime() / 1000);
      }
    }
    location.hash = PW.link("/compare", out);
  };
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    go(true);
  });
  for (const s of [f.service, f.endpoint, f.mode]) s.addEventListener("change", () => go(false));
  main.appendChild(form);

  const side = (p) => mode === "build"
    ? (params.get(p) !== null && params.get(p) !== "" ? { build: params.get(p) } : null)
    : (params.get(p + ".from") && params.get(p + ".to") ? { from: params.get(p + ".from"), to: params.get(p + ".to") } : null);
  const a = side("a");
  const b = side("b");
  if (!service || !a || !b) {
    main.appendChild(PW.message("Pick a baseline and a candidate."));
    return;
  }
  const common = Object.assign({ service }, w, endpoint ? { endpoint } : {});
  const diffParams = Object.assign({ format: "json", limit: 5000 }, common);
  for (const [k, v] of Object.entries(a)) diffParams["baseline." + k] = v;
  for (const [k, v] of Object.entries(b)) diffParams["candidate." + k] = v;
  const [diff, pa, pb] = await Promise.all([
    PW.api("diff", diffParams),
    PW.api("profile", Object.assign({ format: "json", max_nodes: 20000 }, common, a)),
    PW.api("profile", Object.assign({ format: "json", max_nodes: 20000 }, common, b)),
  ]);
  if (!ctx.live()) return;
  const describe = (s) => s.build !== undefined ? "build " + s.build : PW.fmtTime(Number(s.from)) + "–" + PW.fmtClock(Number(s.to));
  const reqA = diff.baseline.requests;
  const reqB = diff.candidate.requests;
  main.appendChild(h("p", null, "Baseline " + describe(a) + ": " + PW.fmtCount(diff.baseline.samples) + " samples" +
    (reqA ? ", " + PW.fmtNs(reqA.cpu_ns_per_request) + " CPU/request" : "") + " · candidate " + describe(b) + ": " +
    PW.fmtCount(diff.candidate.samples) + " samples" + (reqB ? ", " + PW.fmtNs(reqB.cpu_ns_per_request) + " CPU/request" : "") +
    (reqA && reqB ? " (" + PW.fmtPct(reqB.cpu_ns_per_request / reqA.cpu_ns_per_request - 1) + ")" : "")));
  const holder = h("section", { class: "card" },
    h("h2", null, "Differential flame graph"),
    h("p", { class: "dim" }, "Widths: the candidate. Red: a larger share of the samples than in the baseline (slower); blue: smaller (faster)."));
  main.appendChild(holder);
  if (!pb.root.total) {
    holder.appendChild(PW.message("The candidate has no samples."));
  } else {
    const merged = PW.mergeDiff(pa.root, pb.root);
    const bt = pa.root.total || 1;
    const ct = pb.root.total || 1;
    let scale = 0;
    const deltas = [];
    const flameDiff = PW.timed("diff", () => {
      const fl = new PW.Flame(holder, {
        tree: merged,
        extra: ["btotal", "bself"],
        colorOf: (i, f) => {
          if (!deltas.length) {
            for (let k = 0; k < f.count; k++) {
              const d = f.total[k] / ct - f.extra.btotal[k] / bt;
              deltas.push(d);
              if (k > 0) scale = Math.max(scale, Math.abs(d));
            }
          }
          return PW.diffColor(deltas[i], scale);
        },
        tooltip: (i, f) => [f.names[i],
          "total: " + PW.fmtShare(f.extra.btotal[i] / bt) + " → " + PW.fmtShare(f.total[i] / ct) + " (" + ((f.total[i] / ct - f.extra.btotal[i] / bt) * 100).toFixed(2) + " pp" + ")",
          "self: " + PW.fmtShare(f.extra.bself[i] / bt) + " → " + PW.fmtShare(f.self[i] / ct)],
      });
      fl.draw();
      return fl;
    });
    ctx.onLeave(() => flameDiff.destroy());
  }
  const perReq = reqA && reqB;
  const cols = [
    { key: "name", label: "function", value: (r) => r.name, cell: (r) => h("code", null, r.name) },
    { key: "bself", label: "baseline self", num: true, value: (r) => r.baseline.self_share, cell: (r) => PW.fmtShare(r.baseline.self_share) },
    { key: "cself", label: "candidate self", num: true, value: (r) => r.candidate.self_share, cell: (r) => PW.fmtShare(r.candidate.self_share) },
    { key: "dself", label: "Δ self", num: true, value: (r) => r.self_share_delta, cell: (r) => ppCell(r.self_share_delta) },
    { key: "dtotal", label: "Δ total", num: true, value: (r) => r.total_share_delta, cell: (r) => ppCell(r.total_share_delta) },
  ];
  if (perReq) {
    cols.push({ key: "dreq", label: "Δ self CPU / request", num: true,
      value: (r) => (r.candidate.self_cpu_ns_per_request || 0) - (r.baseline.self_cpu_ns_per_request || 0),
      cell: (r) => PW.fmtNs((r.candidate.self_cpu_ns_per_request || 0) - (r.baseline.self_cpu_ns_per_request || 0)) });
  }
  main.appendChild(h("section", { class: "card" }, h("h2", null, "Functions (" + diff.functions.length + ")"),
    h("p", { class: "dim" }, "Shares of all samples on each side; Δ in percentage points. Click a column to sort."),
    PW.sortableTable(cols, diff.functions, { key: "dself", desc: true })));
};

// ---------------------------------------------------------------- regressions

// The effect and its interval; a record without an interval (it could not be computed) has
// null ends.
function hasInterval(r) {
  return r.effect_low != null && r.effect_high != null;
}

function effectText(r) {
  const ci = hasInterval(r) ? " [" + PW.fmtPct(r.effect_low - 1) + ", " + PW.fmtPct(r.effect_high - 1) + "]" : " (no interval)";
  return PW.fmtPct(r.effect - 1) + ci;
}

PW.pages.regressions = async function (main, params, ctx) {
  const state = params.get("state") || "";
  const regs = await PW.api("regressions", { state });
  if (!ctx.live()) return;
  main.appendChild(h("h1", null, "Regressions"));
  main.appendChild(h("div", { class: "toolbar" }, ["", "open", "acknowledged", "resolved"].map((s) =>
    h("a", { class: "tab" + (s === state ? " active" : ""), href: PW.link("/regressions", carry(params, { state: s })) }, s || "all"))));
  if (!regs.length) {
    main.appendChild(PW.message("No regressions" + (state ? " in state " + state : "") + "."));
    return;
  }
  main.appendChild(PW.sortableTable([
    { key: "state", label: "state", value: (r) => ["open", "acknowledged", "resolved"].indexOf(r.state), cell: (r) => h("span", { class: "badge " + r.state }, r.state) },
    { key: "where", label: "service · endpoint", value: (r) => r.service + " " + r.endpoint,
      cell: (r) => h("a", { href: PW.link("/regression", carry(params, { id: r.id })) }, r.service + " · " + r.endpoint) },
    { key: "metric", label: "metric", value: (r) => r.metric },
    { key: "builds", label: "builds", value: (r) => r.candidate, cell: (r) => r.baseline + " → " + r.candidate },
    { key: "effect", label: "effect [interval]", num: true, value: (r) => r.effect, cell: (r) => effectText(r) },
    { key: "q", label: "q", num: true, value: (r) => r.q_value, cell: (r) => r.q_value.toPrecision(2) },
    { key: "seen", label: "first seen", value: (r) => r.first_seen, cell: (r) => PW.fmtTime(r.first_seen / 1e9) },
  ], regs));
};

PW.pages.regression = async function (main, params, ctx) {
  const id = params.get("id") || "";
  const r = await PW.api("regressions/" + encodeURIComponent(id));
  if (!ctx.live()) return;
  const w = winParams(params);
  const step = Math.max(1, Math.ceil((w.to - w.from) / 60));
  const tsBuild = await PW.api("timeseries", Object.assign({ service: r.service, endpoint: r.endpoint, group_by: "build", step }, w)).catch(() => []);
  if (!ctx.live()) return;
  const metric = r.metric === "instructions" ? "instructions" : "cpu_ns";
  const fmt = (v) => PW.fmtMetric(metric, v);
  main.appendChild(h("h1", null, "Regression · " + r.service + " · " + r.endpoint));
  const stateEl = h("span", { class: "badge " + r.state, id: "reg-state" }, r.state);
  const act = (what) => async () => {
    try {
      const upd = await PW.api("regressions/" + encodeURIComponent(r.id) + "/" + what, {}, "POST");
      stateEl.className = "badge " + upd.state;
      stateEl.textContent = upd.state;
      ackBtn.disabled = upd.state !== "open";
      resBtn.disabled = upd.state === "resolved";
    } catch (e) {
      PW.showError(main, e);
    }
  };
  const ackBtn = h("button", { type: "button", id: "ack", onclick: act("ack"), disabled: r.state !== "open" }, "acknowledge");
  const resBtn = h("button", { type: "button", id: "resolve", onclick: act("resolve"), disabled: r.state === "resolved" }, "resolve");
  // The effect and its interval on a scale around 1.
  const low = hasInterval(r) ? r.effect_low : r.effect;
  const high = hasInterval(r) ? r.effect_high : r.effect;
  const lo = Math.min(1, low) - 0.02;
  const hi = Math.max(1, high) + 0.02;
  const sx = (v) => 10 + ((v - lo) / (hi - lo)) * 380;
  const bar = PW.svg("svg", { viewBox: "0 0 400 40", class: "effect" },
    PW.svg("line", { x1: sx(1), x2: sx(1), y1: 4, y2: 30, class: "one" }),
    PW.svg("rect", { x: sx(low), width: Math.max(2, sx(high) - sx(low)), y: 12, height: 10, class: "ci" }),
    PW.svg("circle", { cx: sx(r.effect), cy: 17, r: 5, class: "est" }),
    PW.svg("text", { x: sx(1), y: 39, "text-anchor": "middle" }, "no change"));
  main.appendChild(h("section", { class: "card" },
    h("div", { class: "toolbar" }, stateEl, ackBtn, resBtn),
    h("dl", { class: "facts" },
      h("dt", null, "metric"), h("dd", null, r.metric),
      h("dt", null, "builds"), h("dd", null, r.baseline + " → " + r.candidate),
      h("dt", null, "effect (ratio of medians)"), h("dd", { id: "effect" }, effectText(r)),
      h("dt", null, "medians"), h("dd", null, fmt(r.baseline_median) + " → " + fmt(r.candidate_median)),
      h("dt", null, "requests"), h("dd", null, PW.fmtCount(r.baseline_requests) + " / " + PW.fmtCount(r.candidate_requests)),
      h("dt", null, "p / q"), h("dd", null, r.p_value.toPrecision(2) + " / " + r.q_value.toPrecision(2)),
      h("dt", null, "first / last seen"), h("dd", null, PW.fmtTime(r.first_seen / 1e9) + " / " + PW.fmtTime(r.last_seen / 1e9))),
    bar));
  const builds = buildOrder(tsBuild, []);
  const shown = [r.baseline, r.candidate];
  main.appendChild(h("section", { class: "card" },
    h("h2", null, "Around the change (p50 per build)"),
    PW.chart({
      from: w.from, to: w.to, fmt, step,
      markers: shown.filter((b) => builds.first.has(b)).map((b) => ({ t: builds.first.get(b), label: "build " + b })),
      series: shown.map((b, i) => ({ name: (i ? "candidate " : "baseline ") + b, color: i ? "#e03131" : "#1c7ed6",
        points: tsBuild.filter((p) => p.group === b && PW.stat(p, metric) !== null).map((p) => ({ t: p.time, v: PW.stat(p, metric) })) })),
    }),
    h("p", null, h("a", { href: PW.link("/endpoint", carry(params, { service: r.service, endpoint: r.endpoint })) }, "endpoint page"), " · ",
      h("a", { href: PW.link("/compare", carry(params, { service: r.service, endpoint: r.endpoint, a: r.baseline, b: r.candidate })) }, "differential flame graph"))));
  main.appendChild(h("section", { class: "card" }, h("h2", null, "Functions that explain it"),
    r.culprits.length ? PW.sortableTable([
      { key: "fn", label: "function", value: (c) => c.function, cell: (c) => h("code", null, c.function) },
      { key: "b", label: "baseline self / request", num: true, value: (c) => c.baseline, cell: (c) => fmt(c.baseline) },
      { key: "c", label: "candidate self / request", num: true, value: (c) => c.candidate, cell: (c) => fmt(c.candidate) },
      { key: "d", label: "Δ", num: true, value: (c) => c.delta, cell: (c) => h("span", { class: "delta " + (c.delta > 0 ? "worse" : "better") }, (c.delta > 0 ? "+" : "") + fmt(c.delta)) },
    ], r.culprits, { key: "d", desc: true }) : PW.message("No profile samples to name functions.")));
};
