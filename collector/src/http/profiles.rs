//! The profile API: `POST /api/v1/profiles` (ingest) and `GET /api/v1/profile`,
//! `/api/v1/diff`, `/api/v1/top` (queries). Shapes are in `collector/README.md`.
//!
//! Ingest takes pprof (default; gzip recognised by its magic bytes as well as by
//! `Content-Encoding`), folded stacks (`format=folded`) or one stack per line (`format=lines`).
//! Labels come from query parameters (`service`, `endpoint`, `build`, `dc`, `host`, any other
//! `k=v` as an extra label) and, for pprof, from string sample labels, which win. A profile is
//! converted whole before anything is stored: any bad part refuses all of it (400, or 413 when
//! it is too large). Queries authenticate and read `from`/`to` exactly like `/api/v1/endpoints`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use profwatch_model::functions::FunctionQuery;
use profwatch_model::profile::{
    LabelFilter, ProfileBatch, ProfileQuery, SampleLabels, StackProfile,
};
use profwatch_model::query::{EndpointsQuery, GroupBy, TimeRange};
use profwatch_model::timefmt::now_ns;
use profwatch_model::Tenant;
use serde::Serialize;

use super::budget::{refused, Reservation};
use super::error::ApiError;
use super::params::Params;
use super::query::{check_bytes, check_rows};
use super::{auth, body, budget, headers, AppState};
use crate::metrics::RejectReason;
use profwatch_profile::compare::{compare, RequestFigures};
use profwatch_profile::compress::{maybe_gunzip_within, Allowance, Refusal};
use profwatch_profile::decode::{pprof_to_batches_within, DecodeOptions};
use profwatch_profile::encode::{to_pprof_gz, Span};
use profwatch_profile::folded::{self, FoldedKind};
use profwatch_profile::functions::{table, table_of_totals, SortBy};
use profwatch_profile::{labels, render, tree, ProfileError, ProfileLimits};
use profwatch_store::Written;

/// Default and largest `max_nodes` of the JSON tree.
pub const DEFAULT_MAX_NODES: usize = 8192;
pub const MAX_NODES: usize = 200_000;

/// The answer to an accepted profile.
#[derive(Debug, Serialize)]
pub struct ProfileIngestResponse {
    /// Label sets stored (one batch each).
    pub profiles: usize,
    /// Distinct stacks stored.
    pub stacks: usize,
    pub samples: u64,
    /// The request's `Idempotency-Key` was stored before; nothing was stored now.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
}

/// The caps for profiles on this server.
pub(crate) fn limits(state: &AppState) -> ProfileLimits {
    ProfileLimits {
        max_decompressed: state.cfg.max_decompressed_bytes,
        ..ProfileLimits::default()
    }
}

/// A profile refused: 429 when the server's budget is busy, 413 for size, 400 for content.
pub(crate) fn profile_error(e: ProfileError) -> ApiError {
    if let ProfileError::Busy = e {
        return refused(Refusal::Busy);
    }
    if e.is_too_large() {
        ApiError::PayloadTooLarge(format!("{e}; nothing was stored"))
    } else {
        ApiError::BadRequest(format!("{e}; nothing was stored"))
    }
}

/// Stores converted batches (all or nothing) and counts what was refused.
pub(crate) async fn store_batches(
    state: &AppState,
    tenant: &Tenant,
    batches: Vec<ProfileBatch>,
) -> Result<ProfileIngestResponse, ApiError> {
    store_batches_once(state, tenant, None, batches).await
}

/// As [`store_batches`]; with an idempotency key, batches stored before under it are not
/// stored again (the answer says `duplicate`). Profile keys live apart from event keys.
pub(crate) async fn store_batches_once(
    state: &AppState,
    tenant: &Tenant,
    key: Option<&str>,
    batches: Vec<ProfileBatch>,
) -> Result<ProfileIngestResponse, ApiError> {
    let mut resp = ProfileIngestResponse {
        profiles: batches.len(),
        stacks: batches.iter().map(|b| b.samples.len()).sum(),
        samples: batches
            .iter()
            .flat_map(|b| &b.samples)
            .map(|s| s.samples)
            .sum(),
        duplicate: false,
    };
    if batches.is_empty() {
        return Ok(resp);
    }
    let now = now_ns();
    for b in &batches {
        profwatch_model::event::check_ts(b.ts, &state.cfg.limits, now).map_err(|e| {
            state.metrics.rejected(RejectReason::Invalid, 0);
            ApiError::BadRequest(format!(
                "profile: {e}. To store an old profile as recent data, re-time it (profwatch \
                 import --time now)"
            ))
        })?;
    }
    let written = match key {
        Some(key) => {
            state
                .store
                .write_profiles_once(tenant, &format!("{PROFILE_KEY_PREFIX}{key}"), batches)
                .await
        }
        None => state
            .store
            .write_profiles(tenant, batches)
            .await
            .map(|()| Written::Stored),
    }
    .map_err(|e| counted(state, ApiError::from(e)))?;
    resp.duplicate = written == Written::Duplicate;
    Ok(resp)
}

/// Counts a refused profile request under its reason and passes the error on.
pub(crate) fn counted(state: &AppState, e: ApiError) -> ApiError {
    state.metrics.rejected(e.reject_reason(), 0);
    e
}

/// Runs CPU-bound profile work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(format!("profile task: {e}")))?
}

/// The ingest formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IngestFormat {
    Pprof,
    Folded(FoldedKind),
}

/// `sample_rate` in Hz → CPU nanoseconds per sample (0 when absent).
pub(crate) fn ns_per_sample(rate: Option<&String>, name: &str) -> Result<u64, ApiError> {
    match rate.filter(|v| !v.is_empty()) {
        None => Ok(0),
        Some(v) => match v.parse::<u64>() {
            Ok(hz) if hz > 0 && hz <= 1_000_000_000 => Ok(1_000_000_000 / hz),
            _ => Err(ApiError::BadRequest(format!(
                "`{name}` = {v:?}; give the sampling frequency in Hz (1 to 1e9)"
            ))),
        },
    }
}

pub async fn post_profiles(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    params: Params,
    req_body: Body,
) -> Result<Json<ProfileIngestResponse>, ApiError> {
    let tenant = auth::tenant(&state.cfg, &headers).map_err(|e| counted(&state, e))?;
    let key = headers::idempotency_key(&headers).map_err(|e| counted(&state, e))?;
    const RESERVED: [&str; 3] = ["format", "sample_rate", "ts"];
    let format = match params.get("format").map(String::as_str).unwrap_or("pprof") {
        "" | "pprof" => IngestFormat::Pprof,
        "folded" | "collapsed" => IngestFormat::Folded(FoldedKind::Counted),
        "lines" => IngestFormat::Folded(FoldedKind::Lines),
        other => {
            return Err(counted(
                &state,
                ApiError::BadRequest(format!(
                    "`format` = {other:?}; use pprof, folded or lines (convert perf script with `profwatch import`)"
                )),
            ))
        }
    };
    let per_sample =
        ns_per_sample(params.get("sample_rate"), "sample_rate").map_err(|e| counted(&state, e))?;
    let ts = params.time("ts").map_err(|e| counted(&state, e))?;
    let mut base = SampleLabels::default();
    for (k, v) in params.iter() {
        if !RESERVED.contains(&k.as_str()) {
            base.apply(k, v);
        }
    }
    let (raw, mut res) = read_body(&state, &headers, req_body).await?;
    let st = state.clone();
    let (batches, _res) = blocking(move || {
        let max = st.cfg.max_decompressed_bytes;
        let bytes = body::decode_content_within(&headers, raw, max, &mut res)?;
        let limits = limits(&st);
        let now = now_ns();
        let batches = match format {
            IngestFormat::Pprof => {
                let opt = DecodeOptions {
                    base: &base,
                    limits: &limits,
                    label_limits: &st.cfg.limits,
                    now,
                };
                pprof_to_batches_within(&bytes, &opt, &mut res).map_err(profile_error)?
            }
            IngestFormat::Folded(kind) => vec![folded_batch(
                &bytes,
                FoldedInput {
                    kind,
                    ns_per_sample: per_sample,
                    labels: base,
                    ts: ts.unwrap_or(now),
                },
                (&st.cfg.limits, &limits),
                &mut res,
            )
            .map_err(profile_error)?],
        };
        Ok((batches, res))
    })
    .await
    .map_err(|e| counted(&state, e))?;
    Ok(Json(
        store_batches_once(&state, &tenant, key.as_deref(), batches).await?,
    ))
}

/// Prefixed to a profile request's `Idempotency-Key` in the store, so that it never matches an
/// event batch's key.
const PROFILE_KEY_PREFIX: &str = "profiles/";

/// Admits an ingest request and reads its body within the limits and the budget; refusals
/// are counted.
pub(crate) async fn read_body(
    state: &AppState,
    headers: &HeaderMap,
    req_body: Body,
) -> Result<(axum::body::Bytes, Reservation), ApiError> {
    let mut res = state
        .budget
        .admit(budget::ADMISSION_WAIT)
        .await
        .map_err(|e| counted(state, e))?;
    let (max, timeout) = (state.cfg.max_body_bytes, state.cfg.body_timeout);
    let raw = body::read_limited(headers, req_body, max, &mut res, timeout)
        .await
        .map_err(|e| counted(state, e))?;
    Ok((raw, res))
}

/// What a folded body means besides its text.
#[derive(Debug)]
pub(crate) struct FoldedInput {
    pub kind: FoldedKind,
    pub ns_per_sample: u64,
    pub labels: SampleLabels,
    pub ts: i64,
}

/// One batch from folded text (gzip recognised by its magic), inflated within `allowance`.
pub(crate) fn folded_batch(
    bytes: &[u8],
    input: FoldedInput,
    (label_limits, limits): (&profwatch_model::Limits, &ProfileLimits),
    allowance: &mut dyn Allowance,
) -> Result<ProfileBatch, ProfileError> {
    labels::validate(&input.labels, label_limits)?;
    let text = maybe_gunzip_within(bytes, limits.max_decompressed, allowance)?;
    let text = std::str::from_utf8(&text).map_err(|_| ProfileError::Utf8 {
        what: "the folded body",
    })?;
    Ok(ProfileBatch {
        ts: input.ts,
        labels: input.labels,
        samples: folded::parse(text, input.kind, input.ns_per_sample, limits)?,
    })
}

/// Label filters: every parameter not in `reserved` and not of a diff's side (`baseline.`,
/// `candidate.`); other dotted keys are labels (OTLP attributes such as `thread.name`).
fn filters(params: &HashMap<String, String>, reserved: &[&str], prefix: &str) -> Vec<LabelFilter> {
    let side = |k: &str| k.starts_with("baseline.") || k.starts_with("candidate.");
    let mut out: Vec<LabelFilter> = params
        .iter()
        .filter_map(|(k, v)| {
            let key = if prefix.is_empty() {
                (!side(k) && !reserved.contains(&k.as_str())).then_some(k.as_str())
            } else {
                k.strip_prefix(prefix)
                    .filter(|k| *k != "from" && *k != "to")
            }?;
            Some(LabelFilter {
                key: key.to_owned(),
                value: v.clone(),
            })
        })
        .collect();
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

/// Which measurement folded and SVG output weigh stacks by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Value {
    Samples,
    CpuNs,
}

fn value(params: &HashMap<String, String>) -> Result<Value, ApiError> {
    match params.get("value").map(String::as_str).unwrap_or("") {
        "" | "samples" => Ok(Value::Samples),
        "cpu" | "cpu_ns" => Ok(Value::CpuNs),
        v => Err(ApiError::BadRequest(format!(
            "`value` = {v:?}; use samples or cpu_ns"
        ))),
    }
}

fn folded_of(merged: &[(&[String], u64, u64)], v: Value) -> String {
    folded::write(merged.iter().map(|(f, n, c)| {
        (
            *f,
            match v {
                Value::Samples => *n,
                Value::CpuNs => *c,
            },
        )
    }))
}

fn count_name(v: Value) -> &'static str {
    match v {
        Value::Samples => "samples",
        Value::CpuNs => "ns",
    }
}

fn svg_response(svg: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response()
}

/// The time a pprof export says it covers: the span of its samples (what `go tool pprof`
/// shows as the duration), or an empty span at the query's start when nothing matched.
fn data_span(profile: &StackProfile, query: TimeRange) -> Span {
    let r = profile.span.unwrap_or(TimeRange {
        from: query.from,
        to: query.from,
    });
    Span {
        from: r.from,
        to: r.to,
    }
}

/// The store's profile for `q`, held to `limits.max_answer_rows` stack rows.
async fn fetch(state: &AppState, q: &ProfileQuery) -> Result<StackProfile, ApiError> {
    let profile = state.store.profile(q).await?;
    check_rows(
        state.cfg.max_answer_rows,
        profile.rows.len(),
        "stack rows (distinct stacks × label sets)",
    )?;
    Ok(profile)
}

pub async fn get_profile(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    params: Params,
) -> Result<Response, ApiError> {
    const RESERVED: [&str; 6] = ["service", "from", "to", "format", "value", "max_nodes"];
    let tenant = auth::tenant(&state.cfg, &headers)?;
    let r = state.range(&params, "", None)?;
    let q = ProfileQuery {
        tenant,
        service: params.required("service")?.to_owned(),
        range: r,
        filters: filters(&params, &RESERVED, ""),
    };
    let format = params.get("format").cloned().unwrap_or_default();
    let v = value(&params)?;
    let max_nodes = params.count("max_nodes", DEFAULT_MAX_NODES, MAX_NODES)?;
    if !matches!(format.as_str(), "" | "json" | "folded" | "svg" | "pprof") {
        return Err(ApiError::BadRequest(format!(
            "`format` = {format:?}; use json, folded, svg or pprof"
        )));
    }
    let profile = fetch(&state, &q).await?;
    let title = format!("{} {}", q.service, count_name(v));
    let max_bytes = state.cfg.max_answer_bytes;
    blocking(move || {
        Ok(match format.as_str() {
            "folded" => {
                let text = folded_of(&profile.merged(), v);
                check_bytes(max_bytes, text.len())?;
                text.into_response()
            }
            "svg" => {
                let svg = render::svg(&folded_of(&profile.merged(), v), &title, count_name(v))
                    .map_err(profile_error)?;
                check_bytes(max_bytes, svg.len())?;
                svg_response(svg)
            }
            "pprof" => {
                let gz = to_pprof_gz(&profile, data_span(&profile, r));
                check_bytes(max_bytes, gz.len())?;
                (
                    [
                        (header::CONTENT_TYPE, "application/octet-stream"),
                        (
                            header::CONTENT_DISPOSITION,
                            "attachment; filename=\"profile.pb.gz\"",
                        ),
                    ],
                    gz,
                )
                    .into_response()
            }
            _ => {
                let merged = profile.merged();
                Json(tree::build(merged.iter().copied(), max_nodes)).into_response()
            }
        })
    })
    .await
}

/// `GET /api/v1/top`: the functions of a selection by self or total cost, from the stores'
/// per-function rollups when the selection is a service, endpoint or build (any long range
/// sums rollup rows), from the stack samples when it names other labels.
pub async fn get_top(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    params: Params,
) -> Result<Response, ApiError> {
    const RESERVED: [&str; 5] = ["service", "from", "to", "sort", "limit"];
    let tenant = auth::tenant(&state.cfg, &headers)?;
    let q = ProfileQuery {
        tenant,
        service: params.required("service")?.to_owned(),
        range: state.range(&params, "", None)?,
        filters: filters(&params, &RESERVED, ""),
    };
    let sort = match params.get("sort").map(String::as_str).unwrap_or("") {
        "" | "self" => SortBy::SelfCost,
        "total" => SortBy::Total,
        s => {
            return Err(ApiError::BadRequest(format!(
                "`sort` = {s:?}; use self or total"
            )))
        }
    };
    let limit = params.count("limit", 100, 100_000)?;
    if let Some(fq) = function_query(&q) {
        // The per-function rollups answer: no stack is expanded here.
        // One row per function, cut to `limit` below; no stack is held.
        let rows = state.store.function_costs(&fq).await?;
        return blocking(move || {
            let mut t = table_of_totals(rows, sort);
            t.functions.truncate(limit);
            Ok(Json(t).into_response())
        })
        .await;
    }
    let profile = fetch(&state, &q).await?;
    blocking(move || {
        let merged = profile.merged();
        let mut t = table(merged.iter().copied(), sort);
        t.functions.truncate(limit);
        Ok(Json(t).into_response())
    })
    .await
}

/// The function query that answers a profile query's table of functions, when its filters are
/// ones the per-function rollups keep (`endpoint`, `build`); other labels (dc, host, extra
/// ones) need the samples.
fn function_query(q: &ProfileQuery) -> Option<FunctionQuery> {
    let mut fq = FunctionQuery {
        tenant: q.tenant.clone(),
        service: q.service.clone(),
        range: q.range,
        endpoint: None,
        build: None,
        function: None,
        step: None,
    };
    for f in &q.filters {
        let slot = match f.key.as_str() {
            "endpoint" => &mut fq.endpoint,
            "build" => &mut fq.build,
            _ => return None,
        };
        if slot.replace(f.value.clone()).is_some() {
            return None;
        }
    }
    Some(fq)
}

/// Request figures for a side's selector, when the request events can answer for exactly it:
/// filters on at most `endpoint` and one of `build`, `dc`, `host`.
async fn request_figures(state: &AppState, q: &ProfileQuery) -> Option<RequestFigures> {
    let mut endpoint = None;
    let mut group: Option<(GroupBy, &str)> = None;
    for f in &q.filters {
        let g = match f.key.as_str() {
            "endpoint" => {
                endpoint = Some(f.value.as_str());
                continue;
            }
            "build" => GroupBy::Build,
            "dc" => GroupBy::Dc,
            "host" => GroupBy::Host,
            _ => return None,
        };
        if group.is_some() {
            return None;
        }
        group = Some((g, f.value.as_str()));
    }
    let eq = EndpointsQuery {
        tenant: q.tenant.clone(),
        service: q.service.clone(),
        range: q.range,
        group_by: group.map_or(GroupBy::None, |g| g.0),
    };
    let rows = match state.store.endpoints(&eq).await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(error = %e, "request figures for a profile diff");
            return None;
        }
    };
    let (mut requests, mut cpu) = (0.0, 0.0);
    for row in rows {
        if endpoint.is_some_and(|e| e != row.endpoint)
            || group.is_some_and(|(_, v)| row.group.as_deref() != Some(v))
        {
            continue;
        }
        requests += row.stats.requests;
        cpu += row.stats.requests * row.stats.cpu_ns.mean;
    }
    (requests > 0.0).then(|| RequestFigures {
        requests,
        cpu_ns_per_request: cpu / requests,
    })
}

pub async fn get_diff(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    params: Params,
) -> Result<Response, ApiError> {
    const RESERVED: [&str; 6] = ["service", "from", "to", "format", "value", "limit"];
    let tenant = auth::tenant(&state.cfg, &headers)?;
    let service = params.required("service")?.to_owned();
    let shared = state.range(&params, "", None)?;
    let common = filters(&params, &RESERVED, "");
    let side = |prefix: &str| -> Result<ProfileQuery, ApiError> {
        let mut f = common.clone();
        for extra in filters(&params, &RESERVED, prefix) {
            f.retain(|x| x.key != extra.key);
            f.push(extra);
        }
        Ok(ProfileQuery {
            tenant: tenant.clone(),
            service: service.clone(),
            range: state.range(&params, prefix, Some(shared))?,
            filters: f,
        })
    };
    let (bq, cq) = (side("baseline.")?, side("candidate.")?);
    let v = value(&params)?;
    let limit = params.count("limit", 1000, 1_000_000)?;
    let format = params.get("format").cloned().unwrap_or_default();
    if !matches!(format.as_str(), "" | "svg" | "json") {
        return Err(ApiError::BadRequest(format!(
            "`format` = {format:?}; use svg or json"
        )));
    }
    let (base, cand) = (fetch(&state, &bq).await?, fetch(&state, &cq).await?);
    if format == "json" {
        let (br, cr) = (
            request_figures(&state, &bq).await,
            request_figures(&state, &cq).await,
        );
        return blocking(move || {
            let (bm, cm) = (base.merged(), cand.merged());
            let bt = table(bm.iter().copied(), SortBy::SelfCost);
            let ct = table(cm.iter().copied(), SortBy::SelfCost);
            Ok(Json(compare(&bt, br, &ct, cr, limit)).into_response())
        })
        .await;
    }
    let title = format!("{service}: baseline → candidate ({})", count_name(v));
    let max_bytes = state.cfg.max_answer_bytes;
    blocking(move || {
        let diff =
            render::diff_folded(&folded_of(&base.merged(), v), &folded_of(&cand.merged(), v))
                .map_err(profile_error)?;
        let svg = render::svg(&diff, &title, count_name(v)).map_err(profile_error)?;
        check_bytes(max_bytes, svg.len())?;
        Ok(svg_response(svg))
    })
    .await
}
