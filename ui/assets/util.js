// profwatch dashboard: shared helpers. Every string from the API reaches the DOM through
// textContent or attributes set one by one; nothing is ever parsed as markup.
"use strict";

// Errors are collected so that tests (and curious users) can read them from window.__pwErrors.
window.__pwErrors = [];
window.__pw = { renders: {} };
window.addEventListener("error", (e) => {
  window.__pwErrors.push("error: " + (e.message || String(e.error)));
});
window.addEventListener("unhandledrejection", (e) => {
  window.__pwErrors.push("unhandled rejection: " + String(e.reason && e.reason.message || e.reason));
});
(function () {
  const orig = console.error.bind(console);
  console.error = function (...args) {
    window.__pwErrors.push("console.error: " + args.map(String).join(" "));
    orig(...args);
  };
})();

const PW = {};

// el("div", {class: "x", onclick: f}, child, "text", [children]) builds elements safely.
PW.el = function (tag, attrs, ...children) {
  const node = document.createElement(tag);
  PW.setAttrs(node, attrs);
  PW.append(node, children);
  return node;
};

PW.SVG_NS = "http://www.w3.org/2000/svg";

PW.svg = function (tag, attrs, ...children) {
  const node = document.createElementNS(PW.SVG_NS, tag);
  PW.setAttrs(node, attrs);
  PW.append(node, children);
  return node;
};

PW.setAttrs = function (node, attrs) {
  if (!attrs) return;
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
    else if (k === "text") node.textContent = String(v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k === "style") node.style.cssText = String(v); // CSSOM: allowed by the page's CSP
    else node.setAttribute(k, v === true ? "" : String(v));
  }
};

PW.append = function (node, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    node.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
};

PW.clear = function (node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
};

// ---- the URL holds the state: #/page?k=v&k=v ----

PW.parseHash = function () {
  const h = location.hash.replace(/^#/, "") || "/";
  const q = h.indexOf("?");
  const path = q < 0 ? h : h.slice(0, q);
  const params = new URLSearchParams(q < 0 ? "" : h.slice(q + 1));
  return { path: path || "/", params };
};

PW.link = function (path, params) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== "") p.set(k, String(v));
  }
  const s = p.toString();
  return "#" + path + (s ? "?" + s : "");
};

// Changes the URL without rendering again (in-page state such as zoom or search).
PW.replaceParams = function (changes) {
  const { path, params } = PW.parseHash();
  for (const [k, v] of Object.entries(changes)) {
    if (v === undefined || v === null || v === "") params.delete(k);
    else params.set(k, String(v));
  }
  const s = params.toString();
  history.replaceState(null, "", "#" + path + (s ? "?" + s : ""));
};

// ---- settings shared by every page ----

PW.RANGES = { "1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400 };

PW.globals = function (params) {
  const range = PW.RANGES[params.get("range")] ? params.get("range") : "6h";
  const metric = ["instructions", "cpu_ns"].includes(params.get("metric")) ? params.get("metric") : "auto";
  return { range, metric };
};

// The [from, to) window in unix seconds: explicit from/to win over the range.
PW.window = function (params) {
  const from = Number(params.get("from"));
  const to = Number(params.get("to"));
  if (from > 0 && to > from) return { from, to };
  const now = Math.ceil(Date.now() / 1000) + 60;
  return { from: now - PW.RANGES[PW.globals(params).range], to: now };
};

// ---- the API ----

PW.token = function () {
  try {
    return localStorage.getItem("profwatch.token") || "";
  } catch (_) {
    return "";
  }
};

PW.ApiError = class extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
};

PW.api = async function (path, params, method) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== "") p.set(k, String(v));
  }
  const headers = {};
  const token = PW.token();
  if (token) headers["Authorization"] = "Bearer " + token;
  const qs = p.toString();
  const resp = await fetch("/api/v1/" + path + (qs ? "?" + qs : ""), { method: method || "GET", headers });
  const text = await resp.text();
  if (!resp.ok) {
    let msg = text;
    try {
      msg = JSON.parse(text).error || text;
    } catch (_) { /* not JSON */ }
    if (resp.status === 401 || resp.status === 403) msg += " (set an API token in the header)";
    throw new PW.ApiError(resp.status, resp.status + ": " + msg);
  }
  return text ? JSON.parse(text) : null;
};

// ---- numbers ----

PW.fmtNs = function (ns) {
  if (ns === null || ns === undefined || !isFinite(ns)) return "–";
  const a = Math.abs(ns);
  if (a >= 1e9) return (ns / 1e9).toFixed(a >= 1e10 ? 1 : 2) + " s";
  if (a >= 1e6) return (ns / 1e6).toFixed(a >= 1e7 ? 1 : 2) + " ms";
  if (a >= 1e3) return (ns / 1e3).toFixed(a >= 1e4 ? 1 : 2) + " µs";
  return ns.toFixed(0) + " ns";
};

PW.fmtCount = function (n) {
  if (n === null || n === undefined || !isFinite(n)) return "–";
  const a = Math.abs(n);
  if (a >= 1e12) return (n / 1e12).toFixed(2) + " T";
  if (a >= 1e9) return (n / 1e9).toFixed(2) + " G";
  if (a >= 1e6) return (n / 1e6).toFixed(2) + " M";
  if (a >= 1e4) return (n / 1e3).toFixed(1) + " k";
  return Math.round(n).toString();
};

PW.fmtMetric = function (metric, v) {
  return metric === "cpu_ns" ? PW.fmtNs(v) : PW.fmtCount(v) + (metric === "instructions" ? " ins" : "");
};

PW.fmtPct = function (ratio, digits) {
  if (ratio === null || ratio === undefined || !isFinite(ratio)) return "–";
  const d = digits === undefined ? 1 : digits;
  const v = ratio * 100;
  return (v > 0 ? "+" : "") + v.toFixed(d) + "%";
};

PW.fmtShare = function (share) {
  if (!isFinite(share)) return "–";
  return (share * 100).toFixed(share < 0.001 && share > 0 ? 3 : 2) + "%";
};

PW.fmtTime = function (unixSec) {
  const d = new Date(unixSec * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
    pad(d.getHours()) + ":" + pad(d.getMinutes());
};

PW.fmtClock = function (unixSec) {
  const d = new Date(unixSec * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return pad(d.getHours()) + ":" + pad(d.getMinutes());
};

// Builds in a natural order: numeric parts compared as numbers.
PW.naturalCompare = function (a, b) {
  return String(a).localeCompare(String(b), undefined, { numeric: true, sensitivity: "base" });
};

// The metric to show for a row set: instructions when every row with requests has them.
PW.pickMetric = function (wanted, rows) {
  if (wanted !== "auto") return wanted;
  const withReq = rows.filter((r) => r.requests > 0);
  if (withReq.length && withReq.every((r) => r.instructions && r.instructions_requests > 0)) return "instructions";
  return "cpu_ns";
};

PW.stat = function (row, metric, which) {
  const s = row && row[metric];
  return s ? s[which || "p50"] : null;
};

PW.timed = function (name, f) {
  const t0 = performance.now();
  const out = f();
  const ms = performance.now() - t0;
  window.__pw.renders[name] = ms;
  document.getElementById("main").dataset["render" + name[0].toUpperCase() + name.slice(1)] = ms.toFixed(1);
  return out;
};

PW.message = function (text, cls) {
  return PW.el("p", { class: "msg " + (cls || "") }, text);
};

PW.showError = function (container, e) {
  PW.append(container, [PW.el("p", { class: "msg error", role: "alert" }, String(e && e.message || e))]);
};

// A table whose columns sort on click. cols: [{key, label, value(row), cell(row) -> Node|string, num}]
PW.sortableTable = function (cols, rows, initial) {
  let sortKey = initial && initial.key;
  let desc = initial ? initial.desc : true;
  const tbody = PW.el("tbody");
  const heads = cols.map((c) =>
    PW.el("th", {
      class: (c.num ? "num " : "") + "sortable",
      dataset: { key: c.key },
      onclick: () => {
        if (sortKey === c.key) desc = !desc;
        else {
          sortKey = c.key;
          desc = !!c.num;
        }
        draw();
      },
    }, c.label));
  const draw = () => {
    const col = cols.find((c) => c.key === sortKey);
    const sorted = rows.slice();
    if (col) {
      sorted.sort((a, b) => {
        const x = col.value(a);
        const y = col.value(b);
        const r = typeof x === "number" && typeof y === "number" ? x - y : PW.naturalCompare(x, y);
        return desc ? -r : r;
      });
    }
    for (const h of heads) {
      h.classList.toggle("sorted", h.dataset.key === sortKey);
      h.classList.toggle("desc", h.dataset.key === sortKey && desc);
    }
    PW.clear(tbody);
    const frag = document.createDocumentFragment();
    for (const r of sorted) {
      frag.appendChild(PW.el("tr", null, cols.map((c) =>
        PW.el("td", { class: c.num ? "num" : null }, c.cell ? c.cell(r) : String(c.value(r))))));
    }
    tbody.appendChild(frag);
  };
  draw();
  return PW.el("table", { class: "data" }, PW.el("thead", null, PW.el("tr", null, heads)), tbody);
};
