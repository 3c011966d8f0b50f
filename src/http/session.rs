//! Browser sessions (DESIGN §6): `/login`, `/logout` and the session cookie.
//!
//! The cookie carries the token itself, marked `HttpOnly` (no script can read it) and
//! `SameSite=Strict` (no other site's page can make the browser send it). Keeping no
//! server-side session table means nothing to bound, expire or lose: a session survives
//! a server restart (an open dashboard reconnects without logging in again), and
//! revoking the token ends every session that uses it at once, because each request
//! resolves it like a bearer token. Logging out makes the browser forget the cookie;
//! the token itself stays valid until it is revoked.
//!
//! [`cookie_token`] is the one place that reads the cookie; `http::auth` accepts what
//! it returns as it accepts `Authorization: Bearer`.

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::AppState;
use super::error::ApiError;
use crate::view::layout::{Nav, Shell, page};

/// The session cookie's name.
pub const COOKIE: &str = "swarmfeed_session";
/// How long a browser keeps the session: 30 days, or until logout.
const MAX_AGE_SECS: u64 = 30 * 24 * 60 * 60;
/// Where a successful login goes when it was not sent from elsewhere.
pub const HOME: &str = "/swarm/live";
/// Longest token accepted from a cookie or the form; real ones are 67 characters.
const MAX_TOKEN_CHARS: usize = 128;

/// The token in the request's session cookie, if it has one.
///
/// Only the characters a token can hold are accepted, so the value can go back into a
/// `Set-Cookie` header or a log line unescaped.
pub fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|v| is_token_shaped(v))
}

fn is_token_shaped(v: &str) -> bool {
    !v.is_empty() && v.len() <= MAX_TOKEN_CHARS && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn set_cookie(token: &str) -> HeaderValue {
    // `Secure` is left to a TLS-terminating proxy: swarmfeed itself serves plain HTTP,
    // and a `Secure` cookie would never come back over it.
    HeaderValue::from_str(&format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={MAX_AGE_SECS}"))
        // Only token-shaped values (checked by the caller) reach here.
        .expect("a token is a valid header value")
}

fn clear_cookie() -> HeaderValue {
    HeaderValue::from_str(&format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"))
        .expect("a constant is a valid header value")
}

/// A local path to go to after login: `/…` but not `//host` (another site), and only
/// visible ASCII, so it is always a valid `Location` header (the page redirect sends
/// it percent-encoded).
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains('\\')
                && n.len() <= 2048
                && n.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            n
        }
        _ => HOME,
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct LoginQuery {
    /// The one-time login URL the server prints carries the token here.
    token: Option<String>,
    next: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    token: String,
    next: Option<String>,
}

/// `GET /login`: the form, or, with `?token=…`, a direct login.
pub async fn login_page(State(state): State<AppState>, Query(q): Query<LoginQuery>) -> Result<Response, ApiError> {
    if state.config.no_auth {
        return Ok(Redirect::to(safe_next(q.next.as_deref())).into_response());
    }
    match q.token {
        Some(token) => log_in(&state, token.trim(), q.next.as_deref()).await,
        None => Ok(form(StatusCode::OK, q.next.as_deref(), None)),
    }
}

/// `POST /login` with a token from the form.
pub async fn login(State(state): State<AppState>, Form(f): Form<LoginForm>) -> Result<Response, ApiError> {
    log_in(&state, f.token.trim(), f.next.as_deref()).await
}

/// `POST /logout`: forgets the cookie and goes back to the form.
pub async fn logout() -> Response {
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().insert(header::SET_COOKIE, clear_cookie());
    response
}

async fn log_in(state: &AppState, token: &str, next: Option<&str>) -> Result<Response, ApiError> {
    let known = if is_token_shaped(token) { state.tokens.resolve(token).await? } else { None };
    let Some(principal) = known else {
        tracing::info!("browser login refused: unknown or revoked token");
        return Ok(form(StatusCode::UNAUTHORIZED, next, Some("That token is unknown or revoked.")));
    };
    tracing::info!(token_id = %principal.token_id, name = %principal.name, "browser logged in");
    // 303 so that the token-bearing URL of a direct login leaves the address bar.
    let mut response = Redirect::to(safe_next(next)).into_response();
    response.headers_mut().insert(header::SET_COOKIE, set_cookie(token));
    Ok(response)
}

fn form(status: StatusCode, next: Option<&str>, error: Option<&str>) -> Response {
    let body: Markup = html! {
        section.login {
            h1 { "Log in" }
            p.muted {
                "Paste a token (" code { "swarmfeed token create --scope read" } "), or open the login URL the server "
                "printed on its first start. The first admin token is in " code { "<data-dir>/admin.token" } "."
            }
            @if let Some(error) = error {
                p.error role="alert" { (error) }
            }
            form method="post" action="/login" {
                label for="token" { "Token" }
                input #token name="token" type="password" autocomplete="current-password" required
                    autofocus placeholder="sf_…" spellcheck="false";
                @if let Some(next) = next {
                    input type="hidden" name="next" value=(safe_next(Some(next)));
                }
                button.primary type="submit" { "Log in" }
            }
        }
    };
    let shell = Shell { title: "Log in", nav: Nav::Other, user: None, chart: false };
    (status, Html(page(&shell, &body).into_string())).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others_and_must_look_like_a_token() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; swarmfeed_session=sf_abc123 ; b=2"));
        assert_eq!(cookie_token(&h), Some("sf_abc123"));
        h.insert(header::COOKIE, HeaderValue::from_static("swarmfeed_session=sf_x;y"));
        assert_eq!(cookie_token(&h), Some("sf_x"));
        h.insert(header::COOKIE, HeaderValue::from_static("swarmfeed_session=\"<x>\""));
        assert_eq!(cookie_token(&h), None);
        assert_eq!(cookie_token(&HeaderMap::new()), None);
    }

    #[test]
    fn login_only_redirects_to_local_paths() {
        assert_eq!(safe_next(Some("/swarm/events?types=task.*")), "/swarm/events?types=task.*");
        for bad in ["//evil.example/", "https://evil.example/", "/\\evil", "swarm", "/a\nSet-Cookie: x", "/a b"] {
            assert_eq!(safe_next(Some(bad)), HOME, "{bad}");
        }
        assert_eq!(safe_next(None), HOME);
    }

    #[test]
    fn the_cookie_is_http_only_and_same_site_strict() {
        let v = set_cookie("sf_abc");
        let v = v.to_str().unwrap();
        assert!(v.contains("HttpOnly") && v.contains("SameSite=Strict") && v.starts_with("swarmfeed_session=sf_abc;"));
    }
}
