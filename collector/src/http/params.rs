//! Query parameters, one typed extractor for every route: [`Params`] reads the query string
//! (a malformed one is a JSON 400 like every other refusal) and answers the questions handlers
//! ask of it: a required value, a time range, a bounded count, no unknown names.

use std::collections::HashMap;
use std::ops::Deref;

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use profwatch_model::query::{RangeError, TimeRange};
use profwatch_model::timefmt::{now_ns, parse_query_time_ns, NANOS_PER_SEC};

use super::error::ApiError;

/// The query string of a request, by name (a repeated name keeps its last value).
#[derive(Debug, Default)]
pub struct Params(pub HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(map) = Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::BadRequest(format!("the query string: {}", e.body_text())))?;
        Ok(Params(map))
    }
}

impl Deref for Params {
    type Target = HashMap<String, String>;

    fn deref(&self) -> &HashMap<String, String> {
        &self.0
    }
}

impl Params {
    /// The value of `name`, when given and not empty.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// The value of `name`; a 400 when it is missing or empty.
    pub fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.value(name)
            .ok_or_else(|| ApiError::BadRequest(format!("query parameter `{name}` is required")))
    }

    /// Refuses any parameter not in `allowed`, naming the ones the route takes.
    pub fn only(&self, allowed: &[&str]) -> Result<(), ApiError> {
        match self.0.keys().find(|k| !allowed.contains(&k.as_str())) {
            None => Ok(()),
            Some(k) => Err(ApiError::BadRequest(format!(
                "unknown query parameter `{k}`; this endpoint takes {}",
                allowed.join(", ")
            ))),
        }
    }

    /// A time in unix seconds or RFC 3339, when given.
    pub fn time(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.value(name)
            .map(|v| {
                parse_query_time_ns(v).map_err(|e| ApiError::BadRequest(format!("`{name}`: {e}")))
            })
            .transpose()
    }

    /// `{prefix}from` / `{prefix}to` (the prefix is empty, or a side such as `baseline.`).
    /// Missing bounds come from `fallback` when given, else the range is the hour before `to`
    /// (default now).
    pub fn range(&self, prefix: &str, fallback: Option<TimeRange>) -> Result<TimeRange, ApiError> {
        let to = self.time(&format!("{prefix}to"))?;
        let from = self.time(&format!("{prefix}from"))?;
        let to = to.unwrap_or_else(|| fallback.map_or_else(now_ns, |f| f.to));
        let from = match (from, fallback) {
            (Some(from), _) => from,
            (None, Some(f)) => f.from,
            (None, None) => TimeRange::before(to, 3600 * NANOS_PER_SEC)
                .map_err(|e| ApiError::BadRequest(format!("`{prefix}to`: {e}")))?,
        };
        TimeRange::checked(from, to).map_err(|e| match e {
            RangeError::Empty => {
                ApiError::BadRequest(format!("`{prefix}from` must be before `{prefix}to`"))
            }
            other => ApiError::BadRequest(format!("`{prefix}from`, `{prefix}to`: {other}")),
        })
    }

    /// A count from 1 to `max`; `default` when not given.
    pub fn count(&self, name: &str, default: usize, max: usize) -> Result<usize, ApiError> {
        match self.value(name) {
            None => Ok(default),
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| ApiError::BadRequest(format!("`{name}` = {v:?}; give 1 to {max}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        Params(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn range_defaults_to_the_hour_before_to_and_takes_a_sides_fallback() {
        let p = params(&[("to", "7200")]);
        let r = p.range("", None).expect("range");
        assert_eq!((r.from, r.to), (3600 * NANOS_PER_SEC, 7200 * NANOS_PER_SEC));
        let shared = r;
        let p = params(&[("baseline.from", "5000")]);
        let side = p.range("baseline.", Some(shared)).expect("side");
        assert_eq!(
            (side.from, side.to),
            (5000 * NANOS_PER_SEC, 7200 * NANOS_PER_SEC)
        );
        let p = params(&[("from", "10"), ("to", "5")]);
        let e = p.range("", None).expect_err("empty");
        assert!(e.to_string().contains("must be before"), "{e}");
    }

    #[test]
    fn required_only_and_count_refuse_with_the_parameters_name() {
        let p = params(&[("service", ""), ("limit", "0")]);
        assert!(p.required("service").is_err());
        assert!(p
            .only(&["service"])
            .expect_err("limit")
            .to_string()
            .contains("`limit`"));
        assert!(p.count("limit", 10, 100).is_err());
        assert_eq!(params(&[]).count("limit", 10, 100).expect("default"), 10);
    }
}
