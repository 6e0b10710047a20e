//! Failed authentication, limited per source address: a client whose requests were refused
//! with 401 or 403 [`LIMIT`] times within [`WINDOW`] gets 429 with `Retry-After` for every
//! request until [`BLOCK`] has passed, before its token is even looked at. Guessing tokens
//! (16 characters or more, compared in constant time) then costs [`WINDOW`] per [`LIMIT`]
//! guesses per address.
//!
//! Memory is bounded: at most [`MAX_ADDRESSES`] addresses are tracked; past that, the ones
//! whose window and block are over are forgotten first, then the oldest. IPv6 addresses are
//! tracked per /64, the block a single host usually has to itself.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::AppState;

/// Refusals within [`WINDOW`] that block an address.
pub const LIMIT: u32 = 20;
pub const WINDOW: Duration = Duration::from_secs(60);
pub const BLOCK: Duration = Duration::from_secs(60);
pub const MAX_ADDRESSES: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct Entry {
    window_start: Instant,
    failures: u32,
    blocked_until: Option<Instant>,
}

/// Refusals per source address.
#[derive(Debug, Default)]
pub struct AuthFailures {
    by_address: Mutex<HashMap<IpAddr, Entry>>,
}

/// The key of an address: itself for IPv4, its /64 for IPv6.
fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut s = v6.segments();
                s[4..].fill(0);
                IpAddr::V6(s.into())
            }
        },
    }
}

impl AuthFailures {
    /// How long `ip` stays blocked, if it is.
    pub fn blocked(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let map = self.by_address.lock().unwrap_or_else(|e| e.into_inner());
        let until = map.get(&key(ip))?.blocked_until?;
        (until > now).then(|| until - now)
    }

    /// Counts a refusal of `ip`; blocks it once it reaches [`LIMIT`] within [`WINDOW`].
    pub fn failed(&self, ip: IpAddr, now: Instant) {
        let mut map = self.by_address.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_ADDRESSES && !map.contains_key(&key(ip)) {
            make_room(&mut map, now);
        }
        let e = map.entry(key(ip)).or_insert(Entry {
            window_start: now,
            failures: 0,
            blocked_until: None,
        });
        if now.duration_since(e.window_start) >= WINDOW {
            e.window_start = now;
            e.failures = 0;
        }
        e.failures = e.failures.saturating_add(1);
        if e.failures >= LIMIT {
            e.blocked_until = Some(now + BLOCK);
            e.window_start = now;
            e.failures = 0;
        }
    }
}

/// Forgets the addresses whose window and block are over; if none are, the oldest tenth.
fn make_room(map: &mut HashMap<IpAddr, Entry>, now: Instant) {
    map.retain(|_, e| {
        now.duration_since(e.window_start) < WINDOW || e.blocked_until.is_some_and(|u| u > now)
    });
    if map.len() >= MAX_ADDRESSES {
        let mut starts: Vec<(Instant, IpAddr)> =
            map.iter().map(|(ip, e)| (e.window_start, *ip)).collect();
        starts.sort_unstable();
        for (_, ip) in starts.iter().take(MAX_ADDRESSES / 10) {
            map.remove(ip);
        }
    }
}

/// Why a blocked address is refused, on every listener.
pub fn blocked_message() -> String {
    format!(
        "too many failed authentications from this address ({LIMIT} within {}s)",
        WINDOW.as_secs()
    )
}

/// The middleware: refuses blocked addresses, counts the 401 and 403 answers of the others.
/// Requests without a peer address (tests calling the router directly) pass uncounted.
pub async fn guard(
    State(state): State<Arc<AppState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(&ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>() else {
        return next.run(req).await;
    };
    let failures = &state.auth_failures;
    if let Some(left) = failures.blocked(peer.ip(), Instant::now()) {
        return ApiError::Overloaded {
            message: format!("{}; retry later", blocked_message()),
            retry_after: left,
        }
        .into_response();
    }
    let resp = next.run(req).await;
    if matches!(
        resp.status(),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
    ) {
        failures.failed(peer.ip(), Instant::now());
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_blocked_at_the_limit_for_the_block_time_and_others_are_not() {
        let f = AuthFailures::default();
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        for i in 0..LIMIT - 1 {
            f.failed(a, t0 + Duration::from_millis(u64::from(i)));
        }
        assert_eq!(f.blocked(a, t0 + Duration::from_secs(1)), None);
        f.failed(a, t0 + Duration::from_secs(1));
        let left = f.blocked(a, t0 + Duration::from_secs(2)).expect("blocked");
        assert_eq!(left, BLOCK - Duration::from_secs(1));
        assert_eq!(f.blocked(b, t0 + Duration::from_secs(2)), None);
        assert_eq!(f.blocked(a, t0 + Duration::from_secs(1) + BLOCK), None);
    }

    #[test]
    fn failures_spread_beyond_the_window_do_not_block() {
        let f = AuthFailures::default();
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        for i in 0..3 * LIMIT {
            f.failed(a, t0 + WINDOW / LIMIT * (i * 2));
        }
        assert_eq!(f.blocked(a, t0 + WINDOW * 6), None);
    }

    #[test]
    fn ipv6_addresses_count_per_64_and_mapped_ipv4_as_ipv4() {
        let f = AuthFailures::default();
        let t0 = Instant::now();
        for i in 0..LIMIT {
            let ip: IpAddr = format!("2001:db8:1:2::{:x}", i + 1).parse().expect("ip");
            f.failed(ip, t0);
        }
        assert!(f
            .blocked("2001:db8:1:2:ffff::1".parse().expect("ip"), t0)
            .is_some());
        assert!(f
            .blocked("2001:db8:1:3::1".parse().expect("ip"), t0)
            .is_none());
        for _ in 0..LIMIT {
            f.failed("::ffff:10.1.1.1".parse().expect("ip"), t0);
        }
        assert!(f.blocked("10.1.1.1".parse().expect("ip"), t0).is_some());
    }

    #[test]
    fn the_table_stays_bounded() {
        let f = AuthFailures::default();
        let t0 = Instant::now();
        for i in 0..(MAX_ADDRESSES as u32 + 1000) {
            f.failed(IpAddr::V4(i.into()), t0);
        }
        let n = f.by_address.lock().expect("lock").len();
        assert!(n <= MAX_ADDRESSES, "{n}");
    }
}
