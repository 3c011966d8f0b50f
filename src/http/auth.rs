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
pub async fn require(
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
/// ([`session::cookie_token`]).
pub(super) async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Principal, ApiError> {
    if state.config.no_auth {
        return Ok(Principal::anonymous());
    }
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        let Some(token) = session::cookie_token(headers) else {
            return Err(ApiError::unauthorized(
                "credentials required: send Authorization: Bearer <token>, or log in at /login",
            ));
        };
        return match state.tokens.resolve(token).await? {
            Some(principal) => Ok(principal),
            None => Err(ApiError::unauthorized("the session's token is unknown or revoked; log in again")),
        };
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .ok_or_else(|| ApiError::unauthorized("the Authorization header must be \"Bearer <token>\""))?;
    match state.tokens.resolve(token).await? {
        Some(principal) => Ok(principal),
        None => Err(ApiError::unauthorized("the token is unknown or revoked")),
    }
}
