//! The NDJSON form of request events: one JSON object per line, with the field names of
//! [`RequestEvent`]. `ts` is unix nanoseconds or an RFC 3339 string and defaults to "now";
//! `weight` defaults to 1; `instructions` and `labels` may be absent. Unknown fields are refused,
//! so a typo never silently drops data; `tenant` in particular is refused because the tenant
//! comes from the bearer token.

use serde::{Deserialize, Serialize};

use crate::event::{Labels, RequestEvent};
use crate::timefmt::{format_rfc3339, now_ns, parse_rfc3339_ns};

/// A line that could not be read. `line` is 1-based.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct LineError {
    pub line: usize,
    pub message: String,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(untagged)]
enum JsonTs {
    Nanos(i64),
    Text(String),
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct JsonEvent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ts: Option<JsonTs>,
    service: String,
    endpoint: String,
    #[serde(default)]
    build: String,
    #[serde(default)]
    dc: String,
    #[serde(default)]
    host: String,
    #[serde(default)]
    status: u16,
    cpu_ns: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    instructions: Option<u64>,
    #[serde(default)]
    wall_ns: u64,
    #[serde(default = "one")]
    weight: f64,
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    labels: Labels,
}

fn one() -> f64 {
    1.0
}

/// Parses one JSON object into an event (not yet validated). `now` fills a missing `ts`.
pub fn parse_event(text: &str, now: i64) -> Result<RequestEvent, String> {
    let raw: JsonEvent = serde_json::from_str(text).map_err(|e| {
        let msg = e.to_string();
        if msg.contains("unknown field `tenant`") {
            "field `tenant` is not accepted in the body; the tenant comes from the bearer token"
                .to_owned()
        } else {
            msg
        }
    })?;
    let ts = match raw.ts {
        None => now,
        Some(JsonTs::Nanos(ns)) => ns,
        Some(JsonTs::Text(s)) => parse_rfc3339_ns(&s).ok_or_else(|| {
            format!("field `ts`: {s:?} is neither unix nanoseconds nor an RFC 3339 time")
        })?,
    };
    Ok(RequestEvent {
        ts,
        service: raw.service,
        endpoint: raw.endpoint,
        build: raw.build,
        dc: raw.dc,
        host: raw.host,
        status: raw.status,
        cpu_ns: raw.cpu_ns,
        instructions: raw.instructions,
        wall_ns: raw.wall_ns,
        weight: raw.weight,
        labels: raw.labels,
    })
}

/// Parses an NDJSON body. Blank lines are skipped. The first bad line fails the whole body, so
/// a batch is stored whole or not at all.
pub fn parse_body(body: &[u8]) -> Result<Vec<RequestEvent>, LineError> {
    let now = now_ns();
    let mut events = Vec::with_capacity(body.len() / 200 + 1);
    for (i, raw_line) in body.split(|b| *b == b'\n').enumerate() {
        let line = i + 1;
        let text = std::str::from_utf8(raw_line).map_err(|e| LineError {
            line,
            message: format!("invalid UTF-8 at byte {}", e.valid_up_to()),
        })?;
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        events.push(parse_event(text, now).map_err(|message| LineError { line, message })?);
    }
    Ok(events)
}

/// Writes one event as a JSON line (with `ts` as RFC 3339 when `rfc3339_ts`), newline included.
pub fn to_line(e: &RequestEvent, rfc3339_ts: bool) -> String {
    let raw = JsonEvent {
        ts: Some(if rfc3339_ts {
            JsonTs::Text(format_rfc3339(e.ts))
        } else {
            JsonTs::Nanos(e.ts)
        }),
        service: e.service.clone(),
        endpoint: e.endpoint.clone(),
        build: e.build.clone(),
        dc: e.dc.clone(),
        host: e.host.clone(),
        status: e.status,
        cpu_ns: e.cpu_ns,
        instructions: e.instructions,
        wall_ns: e.wall_ns,
        weight: e.weight,
        labels: e.labels.clone(),
    };
    let mut s = serde_json::to_string(&raw).unwrap_or_default();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_time_forms_and_defaults() {
        let body = br#"{"ts": 5, "service": "s", "endpoint": "GET /", "cpu_ns": 10}

{"ts": "2026-01-01T00:00:00Z", "service": "s", "endpoint": "GET /", "cpu_ns": 10, "instructions": 99, "labels": {"f": "on"}}
"#;
        let events = parse_body(body).expect("valid");
        assert_eq!(events.len(), 2);
        assert_eq!(
            (events[0].ts, events[0].weight, events[0].instructions),
            (5, 1.0, None)
        );
        assert_eq!(events[1].ts, 1_767_225_600_000_000_000);
        assert_eq!(events[1].labels["f"], "on");
        assert_eq!(
            parse_body(to_line(&events[1], true).as_bytes()).expect("round trip")[0],
            events[1]
        );
    }

    #[test]
    fn names_the_bad_line_and_field() {
        let body = b"{\"service\":\"s\",\"endpoint\":\"e\",\"cpu_ns\":1}\n{\"service\":\"s\",\"endpoint\":\"e\",\"cpu_ns\":\"x\"}\n";
        let err = parse_body(body).expect_err("wrong type");
        assert_eq!(err.line, 2);
        assert!(err.message.contains("invalid type"), "{}", err.message);

        let err = parse_body(b"{\"service\":\"s\",\"endpoint\":\"e\",\"cpu_ns\":-1}")
            .expect_err("negative");
        assert!(err.message.contains("-1"), "{}", err.message);
        let err = parse_body(b"{\"service\":\"s\",\"endpoint\":\"e\",\"cpu_ns\":1e400}")
            .expect_err("overflow");
        assert_eq!(err.line, 1);
        let err =
            parse_body(b"{\"service\":\"s\",\"endpoint\":\"e\",\"cpu_ns\":1,\"tenant\":\"t\"}")
                .expect_err("tenant");
        assert!(err.message.contains("bearer token"));
        let err = parse_body(b"{\"service\":\"\xff\"}").expect_err("utf8");
        assert!(err.message.contains("UTF-8"));
    }
}
