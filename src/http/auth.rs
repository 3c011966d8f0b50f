//! Authentication at the door of every route group.
//!
//! [`require`] resolves the caller (a bearer token or session cookie, or anonymous under `--no-auth`) and
//! checks the group's scope before the handler runs, WebSocket upgrades included: a
//! refused upgrade is an ordinary 401/403 response. The resolved [`Principal`] is put
//! in the request's extensions for handlers that care who called.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;

use super::error::ApiError;
use super::{AppState, session};
use crate::auth::{Principal, Scope};

/// Middleware: 401 without valid credentials, 403 when the scope is too small.
pub(crate) async fn require(
    State((state, needed)): State<(AppState, Scope)>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, request.headers()).await?;
    if !principal.may(needed) {
        return Err(ApiError::forbidden(format!(
            "this token has scope {}; {} needs scope {needed}",
            principal.scope,
            request.uri().path()
        )));
    }
    request.extensions_mut().insert(principal);
    Ok(next.run(request).await)
}

/// Who is calling: a bearer token, else the browser's session cookie
/// ([`session::cookie_secret`]), which resolves to its session's token.
pub(super) async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Principal, ApiError> {
    if state.config.no_auth {
        return Ok(Principal::anonymous());
    }
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        let Some(secret) = session::cookie_secret(headers) else {
            return Err(ApiError::unauthorized(
                "credentials required: send Authorization: Bearer <token>, or log in at /login",
            ));
        };
        let Some(resolved) = state.sessions.resolve(secret).await? else {
            return Err(ApiError::unauthorized("the session has ended; log in again"));
        };
        return match state.tokens.resolve_hash(&resolved.token_hash).await? {
            Some(principal) => Ok(principal.in_session(resolved.session_hash)),
            None => Err(ApiError::unauthorized("the session's token is unknown or revoked; log in again")),
        };
    };
    let token = value
        .to_str()
        .ok()
        .and_then(bearer)
        .ok_or_else(|| ApiError::unauthorized("the Authorization header must be \"Bearer <token>\""))?;
    match state.tokens.resolve(token).await? {
        Some(principal) => Ok(principal),
        None => Err(ApiError::unauthorized("the token is unknown or revoked")),
    }
}

/// The credentials of an `Authorization` value in the `Bearer` scheme, whose name is
/// case-insensitive (RFC 9110 §11.1).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, credentials) = value.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| credentials.trim()).filter(|c| !c.is_empty())
}

#[cfg(test)]
mod tests {
    use super::bearer;

    #[test]
    fn the_bearer_scheme_name_is_case_insensitive() {
        for value in ["Bearer sf_x", "bearer sf_x", "BEARER sf_x", "BeArEr   sf_x "] {
            assert_eq!(bearer(value), Some("sf_x"), "{value}");
        }
        for value in ["Basic sf_x", "Bearer", "Bearer ", "Bearersf_x", "sf_x"] {
            assert_eq!(bearer(value), None, "{value}");
        }
    }
}
