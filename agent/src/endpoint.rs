//! Endpoint names: a route template plus the method, e.g. `GET /users/{id}`.
//!
//! Invariants: a name built from a request never contains a raw path beyond its first
//! segment, and that segment only when it looks like a word (starts with a letter, at most
//! 32 bytes), so IDs never become endpoints. Names are interned: after the first request of
//! an endpoint, naming one allocates nothing. The interner holds at most
//! [`MAX_TEMPLATES`] templates; past that, new ones are named `<METHOD> unmatched`.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use http::Method;

/// Distinct route templates the interner keeps.
pub const MAX_TEMPLATES: usize = 1024;

/// The name of an endpoint: a static string or a shared one; cloning never allocates.
#[derive(Clone, PartialEq, Eq)]
pub struct EndpointName(Repr);

#[derive(Clone, PartialEq, Eq)]
enum Repr {
    Static(&'static str),
    Shared(Arc<str>),
}

impl EndpointName {
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Static(s) => s,
            Repr::Shared(s) => s,
        }
    }
}

impl From<&'static str> for EndpointName {
    fn from(s: &'static str) -> Self {
        EndpointName(Repr::Static(s))
    }
}

impl From<String> for EndpointName {
    fn from(s: String) -> Self {
        EndpointName(Repr::Shared(s.into()))
    }
}

impl From<Arc<str>> for EndpointName {
    fn from(s: Arc<str>) -> Self {
        EndpointName(Repr::Shared(s))
    }
}

impl fmt::Debug for EndpointName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for EndpointName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const METHODS: [&str; 10] = [
    "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "CONNECT", "PATCH", "TRACE", "OTHER",
];
const UNMATCHED: [&str; 10] = [
    "GET unmatched",
    "POST unmatched",
    "PUT unmatched",
    "DELETE unmatched",
    "HEAD unmatched",
    "OPTIONS unmatched",
    "CONNECT unmatched",
    "PATCH unmatched",
    "TRACE unmatched",
    "OTHER unmatched",
];

/// Extension methods all count as `OTHER`, so a client cannot mint endpoints.
fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::POST => 1,
        Method::PUT => 2,
        Method::DELETE => 3,
        Method::HEAD => 4,
        Method::OPTIONS => 5,
        Method::CONNECT => 6,
        Method::PATCH => 7,
        Method::TRACE => 8,
        _ => 9,
    }
}

/// The template for a request no router matched: `/`, `/word`, `/word/*`, or `None`.
pub fn fallback_template(path: &str) -> Option<String> {
    let trimmed = path.trim_start_matches('/');
    if trimmed.is_empty() {
        return Some("/".to_owned());
    }
    let (first, rest) = match trimmed.split_once('/') {
        Some((first, rest)) => (first, !rest.is_empty()),
        None => (trimmed, false),
    };
    let word = first.len() <= 32
        && first.starts_with(|c: char| c.is_ascii_alphabetic())
        && first
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    word.then(|| {
        if rest {
            format!("/{first}/*")
        } else {
            format!("/{first}")
        }
    })
}

type Slots = [Option<Arc<str>>; METHODS.len()];

/// Interns `METHOD template` names.
#[derive(Debug, Default)]
pub(crate) struct EndpointCache {
    map: RwLock<HashMap<Box<str>, Slots>>,
}

impl EndpointCache {
    /// The name for a request: its matched route template if the router has one, else the
    /// fallback of its raw path.
    pub(crate) fn name(&self, method: &Method, matched: Option<&str>, path: &str) -> EndpointName {
        let m = method_index(method);
        match matched {
            Some(template) => self.intern(m, template),
            None => match fallback_template(path) {
                Some(template) => self.intern(m, &template),
                None => EndpointName::from(UNMATCHED[m]),
            },
        }
    }

    fn intern(&self, m: usize, template: &str) -> EndpointName {
        if let Ok(map) = self.map.read() {
            if let Some(Some(name)) = map.get(template).map(|slots| &slots[m]) {
                return EndpointName::from(Arc::clone(name));
            }
        }
        let Ok(mut map) = self.map.write() else {
            return EndpointName::from(UNMATCHED[m]);
        };
        if map.len() >= MAX_TEMPLATES && !map.contains_key(template) {
            return EndpointName::from(UNMATCHED[m]);
        }
        let slots = map.entry(template.into()).or_default();
        let name = slots[m].get_or_insert_with(|| format!("{} {template}", METHODS[m]).into());
        EndpointName::from(Arc::clone(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_never_contain_ids() {
        let cache = EndpointCache::default();
        let name = |m: &Method, matched, path| cache.name(m, matched, path).to_string();
        assert_eq!(
            name(&Method::GET, Some("/users/{id}"), "/users/42"),
            "GET /users/{id}"
        );
        assert_eq!(name(&Method::POST, None, "/users/42"), "POST /users/*");
        assert_eq!(name(&Method::GET, None, "/health"), "GET /health");
        assert_eq!(name(&Method::GET, None, "/"), "GET /");
        assert_eq!(name(&Method::GET, None, "/42/profile"), "GET unmatched");
        let long = format!("/{}", "a".repeat(40));
        assert_eq!(name(&Method::GET, None, &long), "GET unmatched");
        let brew = Method::from_bytes(b"BREW").expect("method");
        assert_eq!(name(&brew, Some("/pot"), "/pot"), "OTHER /pot");
    }

    #[test]
    fn interned_and_bounded() {
        let cache = EndpointCache::default();
        let a = cache.name(&Method::GET, Some("/a"), "/a");
        let b = cache.name(&Method::GET, Some("/a"), "/a");
        match (&a.0, &b.0) {
            (Repr::Shared(x), Repr::Shared(y)) => assert!(Arc::ptr_eq(x, y)),
            _ => panic!("not interned"),
        }
        for i in 0..MAX_TEMPLATES + 10 {
            cache.name(&Method::GET, Some(&format!("/r{i}")), "");
        }
        assert_eq!(
            cache.name(&Method::GET, Some("/new"), "/new").as_str(),
            "GET unmatched"
        );
        assert_eq!(
            cache.name(&Method::GET, Some("/a"), "/a").as_str(),
            "GET /a"
        );
    }
}
