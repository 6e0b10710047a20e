//! Bearer-token authentication. The token decides the tenant; nothing in a request body can.
//! An `X-Scope-OrgID` header, if present, must name the token's own tenant.

use axum::http::{header, HeaderMap};
use profwatch_model::Tenant;

use super::error::ApiError;
use crate::config::Config;

/// The tenant of `token`, comparing it with every configured token in constant time (no early
/// exit, no map lookup whose timing depends on the token), so timing tells nothing about how
/// close a guess came.
fn tenant_of<'a>(cfg: &'a Config, token: &str) -> Option<&'a str> {
    use subtle::ConstantTimeEq;
    let mut found = None;
    for (known, tenant) in cfg.tokens.iter() {
        if bool::from(known.as_bytes().ct_eq(token.as_bytes())) {
            found = Some(tenant.as_str());
        }
    }
    found
}

/// Resolves the tenant of a request.
pub fn tenant(cfg: &Config, headers: &HeaderMap) -> Result<Tenant, ApiError> {
    let claimed = headers
        .get("x-scope-orgid")
        .map(|v| v.to_str().unwrap_or("").to_owned());
    let tenant = if cfg.tokens.is_empty() {
        Tenant::default_tenant()
    } else {
        let value = headers.get(header::AUTHORIZATION).ok_or_else(|| {
            ApiError::Unauthorized("missing `Authorization: Bearer <token>` header".into())
        })?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or_else(|| {
                ApiError::Unauthorized("the Authorization header must be `Bearer <token>`".into())
            })?;
        let tenant = tenant_of(cfg, token)
            .ok_or_else(|| ApiError::Forbidden("this token is not valid for this server".into()))?;
        Tenant(tenant.to_owned())
    };
    if let Some(claimed) = claimed {
        if claimed != tenant.0 {
            return Err(ApiError::Forbidden(
                "the token does not belong to the tenant named in X-Scope-OrgID".into(),
            ));
        }
    }
    Ok(tenant)
}
