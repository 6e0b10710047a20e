// @ts-check
// The JSON API under /api/v1/, one function per call the pages make, and the shapes of its
// answers. The shapes follow the Rust types that serialise them (named on each typedef); a
// field the pages do not read may be left out.

import { probe } from "./probe.js";

/**
 * Mean and percentiles of one metric per request (`profwatch_model::query::Distribution`).
 * @typedef {object} Distribution
 * @property {number} mean
 * @property {number} p50
 * @property {number} p90
 * @property {number} p99
 */

/**
 * The figures of one group of requests (`profwatch_model::query::CostStats`).
 * @typedef {object} CostStats
 * @property {number} requests weighted requests
 * @property {Distribution} cpu_ns CPU time per request, ns
 * @property {number} instructions_requests weighted requests that carried an instruction count
 * @property {Distribution | null} instructions null when no request had a count
 */

/**
 * `GET /services`: one service seen in the range (`ServiceSummary`).
 * @typedef {object} ServiceSummary
 * @property {string} service
 * @property {number} requests
 */

/**
 * `GET /endpoints`: one row (`EndpointStats`); `group` is absent without `group_by`.
 * @typedef {CostStats & {endpoint: string, group?: string}} EndpointStats
 */

/**
 * `GET /timeseries`: one point (`TimeseriesPoint`); `time` is the bucket start, unix seconds.
 * @typedef {CostStats & {time: number, group?: string}} TimeseriesPoint
 */

/** @typedef {"open" | "acknowledged" | "resolved"} RegressionState */

/**
 * A function that explains part of a regression (`profwatch_model::regression::Culprit`): self
 * cost per request in the record's metric.
 * @typedef {object} Culprit
 * @property {string} function
 * @property {number} baseline
 * @property {number} candidate
 * @property {number} delta candidate - baseline
 */

/**
 * `GET /regressions`, `GET /regressions/{id}` (`RegressionRecord`). `effect` is candidate /
 * baseline; its interval is null when it could not be computed. Times are unix ns.
 * @typedef {object} RegressionRecord
 * @property {string} id
 * @property {string} service
 * @property {"cpu" | "memory"} kind `memory`: the service's private memory per worker (no endpoint)
 * @property {string} endpoint empty for a memory record
 * @property {string} [function] for a function-level record: the function whose cost rose
 * @property {string} metric `instructions`, `cpu_ns`, `samples` (a function's self samples per request), or `private_bytes` (per worker)
 * @property {string} baseline build
 * @property {string} candidate build
 * @property {number} effect
 * @property {number | null} effect_low
 * @property {number | null} effect_high
 * @property {number} p_value
 * @property {number} q_value
 * @property {number} baseline_median
 * @property {number} candidate_median
 * @property {number} baseline_requests
 * @property {number} candidate_requests
 * @property {Culprit[]} culprits largest increase first
 * @property {number} first_seen
 * @property {number} last_seen
 * @property {RegressionState} state
 * @property {string} [incident] the incident's id (absent in records from before incidents)
 * @property {number} [changed_at] unix ns of the change point that found it
 * @property {Resolution} [resolution] why a resolved record was resolved
 */

/**
 * Why a record was resolved (`profwatch_model::regression::Resolution`).
 * @typedef {{ kind: "went_away" } | { kind: "fixed", build: string } | { kind: "by_hand" }} Resolution
 */

/**
 * What caused an incident: a candidate build, or the unix ns time of its first change point.
 * @typedef {{ build: string } | { time: number }} IncidentCause
 */

/**
 * `GET /incidents` (`profwatch_model::regression::Incident`): regressions with one cause.
 * @typedef {object} Incident
 * @property {string} id
 * @property {IncidentCause} cause
 * @property {RegressionState} state open while any record is open
 * @property {number} first_seen
 * @property {number} last_seen
 * @property {string[]} services
 * @property {RegressionRecord[]} regressions largest effect first
 */

/**
 * One frame in context (`collector::profile::tree::FlameNode`): samples with the frame as the
 * leaf (`self`) and on the stack (`total`).
 * @typedef {object} FlameNode
 * @property {string} name
 * @property {number} self
 * @property {number} total
 * @property {number} self_cpu_ns
 * @property {number} total_cpu_ns
 * @property {FlameNode[]} children
 */

/**
 * `GET /profile?format=json` (`FlameTree`): `pruned` nodes were dropped by `max_nodes`.
 * @typedef {object} FlameTree
 * @property {number} nodes
 * @property {number} pruned
 * @property {FlameNode} root
 */

/**
 * Request figures of one side of a diff (`collector::profile::compare::RequestFigures`).
 * @typedef {object} RequestFigures
 * @property {number} requests
 * @property {number} cpu_ns_per_request
 */

/**
 * Totals of one side of a diff (`SideSummary`); `requests` is null when no request figures
 * match the side's selector.
 * @typedef {object} SideSummary
 * @property {number} samples
 * @property {number} cpu_ns
 * @property {RequestFigures | null} requests
 */

/**
 * One function on one side of a diff (`SideCost`); the per-request costs are null without
 * request figures.
 * @typedef {object} SideCost
 * @property {number} self_samples
 * @property {number} total_samples
 * @property {number} self_share
 * @property {number} total_share
 * @property {number | null} self_cpu_ns_per_request
 * @property {number | null} total_cpu_ns_per_request
 */

/**
 * One function, both sides (`FunctionDiff`); the deltas are candidate share − baseline share.
 * @typedef {object} FunctionDiff
 * @property {string} name
 * @property {SideCost} baseline
 * @property {SideCost} candidate
 * @property {number} self_share_delta
 * @property {number} total_share_delta
 */

/**
 * `GET /diff?format=json` (`DiffReport`): functions by the size of the self-share change.
 * @typedef {object} DiffReport
 * @property {SideSummary} baseline
 * @property {SideSummary} candidate
 * @property {FunctionDiff[]} functions
 */

/**
 * `GET /memory`: one group's memory per process (`profwatch_model::memory::MemoryRow`): each
 * `*_bytes` is a mean per process (each process's mean over its samples, then the mean over the
 * group's processes); `group` is "" without `group_by`.
 * @typedef {object} MemoryRow
 * @property {string} group
 * @property {number} processes distinct (host, pid) with samples
 * @property {number} rss_bytes
 * @property {number} pss_bytes
 * @property {number} private_bytes Private_Clean + Private_Dirty
 * @property {number} shared_bytes Shared_Clean + Shared_Dirty
 * @property {number} swap_bytes
 */

/**
 * `GET /memory/timeseries`: one bucket of one group (`MemoryPoint`); `time` is the bucket
 * start, unix seconds.
 * @typedef {MemoryRow & {time: number}} MemoryPoint
 */

/**
 * Query parameters; empty, null and undefined values are left out of the URL.
 * @typedef {Record<string, string | number | null | undefined>} Query
 */

const TOKEN_KEY = "profwatch.token";

/** The API token the user entered, or "". */
export function token() {
  try {
    return localStorage.getItem(TOKEN_KEY) || "";
  } catch (_) {
    return "";
  }
}

/**
 * Keeps the token for later visits ("" forgets it).
 * @param {string} value
 */
export function setToken(value) {
  try {
    if (value) localStorage.setItem(TOKEN_KEY, value);
    else localStorage.removeItem(TOKEN_KEY);
  } catch (_) { /* storage disabled: the token lasts for this page only */ }
}

/** A failed call: the HTTP status and the server's message. */
export class ApiError extends Error {
  /**
   * @param {number} status
   * @param {string} message
   */
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/**
 * Calls `/api/v1/{path}` with the token, if any; throws an ApiError on an error status.
 * @param {string} path
 * @param {Query} [params]
 * @param {string} [method]
 * @returns {Promise<unknown>} the parsed JSON answer, or null for an empty one
 */
async function call(path, params, method) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== "") p.set(k, String(v));
  }
  /** @type {Record<string, string>} */
  const headers = {};
  const t = token();
  if (t) headers["Authorization"] = "Bearer " + t;
  const qs = p.toString();
  const t0 = performance.now();
  const resp = await fetch("/api/v1/" + path + (qs ? "?" + qs : ""), { method: method || "GET", headers });
  const text = await resp.text();
  const t1 = performance.now();
  if (!resp.ok) {
    let msg = text;
    try {
      msg = JSON.parse(text).error || text;
    } catch (_) { /* not JSON */ }
    if (resp.status === 401 || resp.status === 403) msg += " (set an API token in the header)";
    throw new ApiError(resp.status, resp.status + ": " + msg);
  }
  const out = text ? JSON.parse(text) : null;
  probe.calls[path] = { request_ms: t1 - t0, parse_ms: performance.now() - t1 };
  return out;
}

/**
 * @param {Query} q from, to
 * @returns {Promise<ServiceSummary[]>}
 */
export function services(q) {
  return /** @type {Promise<ServiceSummary[]>} */ (call("services", q));
}

/**
 * @param {Query} q service, from, to, group_by
 * @returns {Promise<EndpointStats[]>}
 */
export function endpoints(q) {
  return /** @type {Promise<EndpointStats[]>} */ (call("endpoints", q));
}

/**
 * @param {Query} q service, endpoint, from, to, step, group_by
 * @returns {Promise<TimeseriesPoint[]>}
 */
export function timeseries(q) {
  return /** @type {Promise<TimeseriesPoint[]>} */ (call("timeseries", q));
}

/**
 * @param {Query} q state, service
 * @returns {Promise<RegressionRecord[]>}
 */
export function regressions(q) {
  return /** @type {Promise<RegressionRecord[]>} */ (call("regressions", q));
}

/**
 * @param {Query} q state, service
 * @returns {Promise<Incident[]>}
 */
export function incidents(q) {
  return /** @type {Promise<Incident[]>} */ (call("incidents", q));
}

/**
 * @param {string} id
 * @returns {Promise<RegressionRecord>}
 */
export function regression(id) {
  return /** @type {Promise<RegressionRecord>} */ (call("regressions/" + encodeURIComponent(id)));
}

/**
 * Acknowledges or resolves a regression.
 * @param {string} id
 * @param {"ack" | "resolve"} what
 * @returns {Promise<RegressionRecord>} the record in its new state
 */
export function setRegressionState(id, what) {
  return /** @type {Promise<RegressionRecord>} */ (call("regressions/" + encodeURIComponent(id) + "/" + what, {}, "POST"));
}

/**
 * @param {Query} q service, from, to, max_nodes and selectors; `format` must be json
 * @returns {Promise<FlameTree>}
 */
export function profile(q) {
  return /** @type {Promise<FlameTree>} */ (call("profile", q));
}

/**
 * @param {Query} q service, from, to, limit, selectors, `baseline.*` and `candidate.*`;
 * `format` must be json
 * @returns {Promise<DiffReport>}
 */
export function diff(q) {
  return /** @type {Promise<DiffReport>} */ (call("diff", q));
}

/**
 * @param {Query} q service, from, to, group_by (build, host or none)
 * @returns {Promise<MemoryRow[]>}
 */
export function memory(q) {
  return /** @type {Promise<MemoryRow[]>} */ (call("memory", q));
}

/**
 * @param {Query} q service, from, to, step, group_by
 * @returns {Promise<MemoryPoint[]>}
 */
export function memoryTimeseries(q) {
  return /** @type {Promise<MemoryPoint[]>} */ (call("memory/timeseries", q));
}
