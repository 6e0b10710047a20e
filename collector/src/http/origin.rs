//! Where a request may come from: the defence of a server that a browser can reach.
//!
//! - Loopback mode (no tokens configured; the server then listens on loopback only, see
//!   `config`): a request whose `Host` is not `localhost`, `127.0.0.1`, `[::1]` or the listen
//!   address (any port) is refused with 421. A web page on another name that resolves to
//!   127.0.0.1 (DNS rebinding) therefore cannot use the unauthenticated API.
//! - Always: a state-changing request (POST, PUT, DELETE, PATCH) that carries an `Origin`
//!   header must be same-origin (the Origin's host and port are the `Host`'s), else 403. A
//!   cross-site form or `fetch` (CSRF, e.g. `text/plain` POSTs that need no preflight) is
//!   refused; agents, SDKs and curl send no `Origin`, and the dashboard's own requests are
//!   same-origin, so they pass.
//!
//! Invariant: both checks run before any handler (a middleware on the whole router), so no
//! route can be reached around them.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::AppState;
use crate::config::Config;

/// The middleware: refuses what [`check`] refuses, else runs the route.
pub async fn guard(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    match check(&state.cfg, req.method(), req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// Whether a request with this method and these headers may be served.
pub fn check(cfg: &Config, method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
    let host = match headers.get(header::HOST) {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::BadRequest("the Host header is not visible ASCII".into()))?,
        ),
        None => None,
    };
    if cfg.tokens.is_empty() {
        if let Some(host) = host.filter(|h| !is_local(h, cfg.listen.ip())) {
            return Err(ApiError::Misdirected(format!(
                "this server answers without tokens only to requests for localhost, 127.0.0.1, \
                 [::1] or its listen address, not {:?}; configure tokens to serve other names",
                host.chars().take(64).collect::<String>()
            )));
        }
    }
    let changes_state = matches!(
        *method,
        Method::POST | Method::PUT | Method::DELETE | Method::PATCH
    );
    if let (true, Some(origin)) = (changes_state, headers.get(header::ORIGIN)) {
        let same = origin
            .to_str()
            .ok()
            .zip(host)
            .is_some_and(|(o, h)| same_origin(o, h));
        if !same {
            return Err(ApiError::Forbidden(
                "cross-origin requests may not change anything: the Origin header must name \
                 this server (clients that are not browsers send no Origin)"
                    .into(),
            ));
        }
    }
    Ok(())
}

/// Splits `host[:port]` (with `[v6]` brackets kept); `None` for a malformed value.
fn split_host(authority: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = match authority.strip_prefix('[') {
        Some(rest) => {
            let end = rest.find(']')?;
            let host = &authority[..end + 2];
            match &rest[end + 1..] {
                "" => (host, None),
                p => (host, Some(p.strip_prefix(':')?)),
            }
        }
        None => match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok()?),
        None => None,
    };
    (!host.is_empty()).then_some((host, port))
}

/// Whether `host` (a `Host` header) names this loopback server.
fn is_local(host: &str, listen: IpAddr) -> bool {
    let Some((name, _)) = split_host(host) else {
        return false;
    };
    let name = name.to_ascii_lowercase();
    let listen = match listen {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
    };
    matches!(name.as_str(), "localhost" | "127.0.0.1" | "[::1]") || name == listen
}

/// Whether `origin` (`scheme://host[:port]`) is the origin of a request to `host`.
fn same_origin(origin: &str, host: &str) -> bool {
    let (scheme, authority) = match origin.split_once("://") {
        Some(("http", a)) => ("http", a),
        Some(("https", a)) => ("https", a),
        _ => return false,
    };
    let default_port = if scheme == "https" { 443 } else { 80 };
    let (Some((oh, op)), Some((hh, hp))) = (split_host(authority), split_host(host)) else {
        return false;
    };
    oh.eq_ignore_ascii_case(hh) && op.unwrap_or(default_port) == hp.unwrap_or(default_port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RawConfig;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().expect("header value"));
        }
        h
    }

    #[test]
    fn loopback_mode_serves_local_names_only() {
        let cfg = RawConfig::default().validate().expect("defaults");
        for ok in [
            "127.0.0.1:4040",
            "localhost",
            "LOCALHOST:80",
            "[::1]:9",
            "[::1]",
        ] {
            assert!(
                check(&cfg, &Method::GET, &headers(&[("host", ok)])).is_ok(),
                "{ok}"
            );
        }
        assert!(
            check(&cfg, &Method::GET, &HeaderMap::new()).is_ok(),
            "no Host"
        );
        for bad in [
            "evil.example",
            "evil.example:4040",
            "127.0.0.1.evil",
            "[::1",
        ] {
            assert!(
                matches!(
                    check(&cfg, &Method::GET, &headers(&[("host", bad)])),
                    Err(ApiError::Misdirected(_))
                ),
                "{bad}"
            );
        }
        let mut with_tokens = RawConfig::default();
        with_tokens
            .tokens
            .insert("a-long-token-0001".into(), "acme".into());
        let cfg = with_tokens.validate().expect("valid");
        assert!(check(&cfg, &Method::GET, &headers(&[("host", "evil.example")])).is_ok());
    }

    #[test]
    fn state_changes_must_be_same_origin() {
        let cfg = RawConfig::default().validate().expect("defaults");
        let host = ("host", "127.0.0.1:4040");
        let post = |origin: &str| check(&cfg, &Method::POST, &headers(&[host, ("origin", origin)]));
        assert!(post("http://127.0.0.1:4040").is_ok());
        for bad in [
            "http://evil.example",
            "null",
            "http://127.0.0.1:4041",
            "https://127.0.0.1:4040x",
            "file://",
        ] {
            assert!(matches!(post(bad), Err(ApiError::Forbidden(_))), "{bad}");
        }
        assert!(
            check(&cfg, &Method::POST, &headers(&[host])).is_ok(),
            "no Origin"
        );
        let get = headers(&[host, ("origin", "http://evil.example")]);
        assert!(
            check(&cfg, &Method::GET, &get).is_ok(),
            "reads are not state changes"
        );
        assert!(same_origin("http://localhost", "localhost:80"));
        assert!(same_origin("https://[::1]:443", "[::1]"));
    }
}
