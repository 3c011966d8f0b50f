//! The browser's way in (DESIGN §9): `/login` (the form, one-time links), `/logout`
//! and the session cookie.
//!
//! The cookie carries a session's random secret, never a token: `HttpOnly` (no script
//! can read it) and `SameSite=Strict` (no other site's page can make the browser send
//! it). The session itself lives in the store (`crate::sessions`), so it works on every
//! node and survives a restart, logout deletes it (the old cookie value is worthless
//! from then on), and revoking its token ends it. A token never travels in a URL: a
//! `?token=` link is refused with a page that says what to do; printed links carry a
//! one-time code (`crate::login_link`).
//!
//! [`cookie_secret`] is the one place that reads the cookie; `http::auth` resolves
//! what it returns.

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::AppState;
use super::error::ApiError;
use crate::auth::Principal;
use crate::login_link::{self, Redeemed};
use crate::sessions::is_secret_shaped;
use crate::view::layout::{Nav, Shell, page, page_moving_on};

/// The session cookie's name.
pub(crate) const COOKIE: &str = "swarmfeed_session";
/// Where a successful login goes when it was not sent from elsewhere.
pub(crate) const HOME: &str = "/swarm/live";
/// Longest token accepted from the form; real ones are 67 characters.
const MAX_TOKEN_CHARS: usize = 128;

/// The session secret in the request's cookie, if it has one shaped like one.
///
/// Only the characters a secret can hold are accepted, so the value can go back into a
/// `Set-Cookie` header or a log line unescaped.
pub(crate) fn cookie_secret(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|v| is_secret_shaped(v))
}

/// The session cookie. `secure` when this server serves TLS itself: the browser then
/// never sends the cookie over cleartext. Over plain HTTP (behind a TLS-terminating
/// proxy, say) a `Secure` cookie would never come back, so it is left to the proxy.
fn set_cookie(secret: &str, max_age_secs: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={secret}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{secure}"
    ))
    // Session secrets are `sfs_` and hex, made by `Sessions::start`.
    .expect("a session secret is a valid header value")
}

fn clear_cookie(secure: bool) -> HeaderValue {
    match secure {
        true => HeaderValue::from_static("swarmfeed_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0; Secure"),
        false => HeaderValue::from_static("swarmfeed_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    }
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
pub(crate) struct LoginQuery {
    /// A one-time login link's code.
    code: Option<String>,
    /// Refused: tokens never go in URLs. Read only to say so.
    token: Option<String>,
    next: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct LoginForm {
    token: String,
    next: Option<String>,
}

/// `GET /login`: the form; with `?code=…`, a one-time link's login; with `?token=…`,
/// a refusal that says what to do instead.
pub(crate) async fn login_page(
    State(state): State<AppState>,
    Query(q): Query<LoginQuery>,
) -> Result<Response, ApiError> {
    if state.config.no_auth {
        return Ok(Redirect::to(safe_next(q.next.as_deref())).into_response());
    }
    if q.token.is_some() {
        tracing::info!("refused a token in a login URL");
        return Ok(form(
            StatusCode::BAD_REQUEST,
            q.next.as_deref(),
            Some(
                "Tokens are never accepted in a URL: browser history, proxies and server logs keep URLs. \
                 Paste the token into the form below, or open a one-time link from `swarmfeed login-link`. \
                 If this URL was shared, treat the token as leaked and revoke it.",
            ),
        ));
    }
    let Some(code) = q.code else { return Ok(form(StatusCode::OK, q.next.as_deref(), None)) };
    let refused = match login_link::redeem(state.store.as_ref(), code.trim()).await? {
        Redeemed::Token(token_hash) => match state.tokens.resolve_hash(&token_hash).await? {
            Some(principal) => return start_session(&state, &principal, q.next.as_deref(), Arrival::Link).await,
            None => "This login link's token has been revoked.",
        },
        Redeemed::Expired => "This login link has expired.",
        Redeemed::Revoked => "This login link's token has been revoked.",
        Redeemed::Unknown => "This login link is not valid: each link works once.",
    };
    tracing::info!(reason = refused, "login link refused");
    let message = format!("{refused} Ask for a new one (`swarmfeed login-link`), or paste a token below.");
    Ok(form(StatusCode::UNAUTHORIZED, q.next.as_deref(), Some(&message)))
}

/// `POST /login` with a token from the form.
pub(crate) async fn login(State(state): State<AppState>, Form(f): Form<LoginForm>) -> Result<Response, ApiError> {
    let token = f.token.trim();
    let known = if token.len() <= MAX_TOKEN_CHARS { state.tokens.resolve(token).await? } else { None };
    let Some(principal) = known else {
        tracing::info!("browser login refused: unknown or revoked token");
        return Ok(form(StatusCode::UNAUTHORIZED, f.next.as_deref(), Some("That token is unknown or revoked.")));
    };
    start_session(&state, &principal, f.next.as_deref(), Arrival::Form).await
}

/// `POST /logout`: ends the session on the server, forgets the cookie, and goes back
/// to the form.
pub(crate) async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    if let Some(secret) = cookie_secret(&headers)
        && state.sessions.end(secret).await?
    {
        state.tokens.session_ended();
        tracing::info!("browser logged out");
    }
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().insert(header::SET_COOKIE, clear_cookie(state.config.tls.is_some()));
    Ok(response)
}

/// How the browser came to log in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arrival {
    /// Posted the form on this site: a redirect carries the new cookie.
    Form,
    /// Opened a link, perhaps from another application. A `SameSite=Strict` cookie
    /// is not sent on a redirect that a cross-site navigation started, so the page
    /// moves on by itself (a same-site navigation) instead.
    Link,
}

async fn start_session(
    state: &AppState,
    principal: &Principal,
    next: Option<&str>,
    arrival: Arrival,
) -> Result<Response, ApiError> {
    let started = state.sessions.start(principal).await?;
    tracing::info!(token_id = %principal.token_id, name = %principal.name, session_id = %started.id, ?arrival,
        "browser logged in");
    let to = safe_next(next);
    let mut response = match arrival {
        // 303: the form's POST becomes a GET of the page.
        Arrival::Form => Redirect::to(to).into_response(),
        Arrival::Link => {
            let body = html! {
                section.login {
                    h1 { "Logged in" }
                    p { "Opening the dashboard… " a href=(to) { "Continue" } }
                }
            };
            let shell = Shell { title: "Logged in", nav: Nav::Other, user: None, chart: false, admin: false };
            (StatusCode::OK, Html(page_moving_on(&shell, &body, to).into_string())).into_response()
        }
    };
    let max_age = state.sessions.settings().max_age.as_secs();
    response.headers_mut().insert(header::SET_COOKIE, set_cookie(&started.secret, max_age, state.config.tls.is_some()));
    Ok(response)
}

fn form(status: StatusCode, next: Option<&str>, error: Option<&str>) -> Response {
    let body: Markup = html! {
        section.login {
            h1 { "Log in" }
            p.muted {
                "Paste a token (" code { "swarmfeed token create --scope read" } "), or open a login link ("
                code { "swarmfeed login-link" } "; the server prints one at every start). The first admin token is in "
                code { "<data-dir>/admin.token" } "."
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
    let shell = Shell { title: "Log in", nav: Nav::Other, user: None, chart: false, admin: false };
    (status, Html(page(&shell, &body).into_string())).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others_and_must_look_like_a_secret() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; swarmfeed_session=sfs_abc123 ; b=2"));
        assert_eq!(cookie_secret(&h), Some("sfs_abc123"));
        h.insert(header::COOKIE, HeaderValue::from_static("swarmfeed_session=sfs_x;y"));
        assert_eq!(cookie_secret(&h), Some("sfs_x"));
        h.insert(header::COOKIE, HeaderValue::from_static("swarmfeed_session=\"<x>\""));
        assert_eq!(cookie_secret(&h), None);
        h.insert(header::COOKIE, HeaderValue::from_static("swarmfeed_session=sf_a_token_is_no_session"));
        assert_eq!(cookie_secret(&h), None);
        assert_eq!(cookie_secret(&HeaderMap::new()), None);
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
        let v = set_cookie("sfs_abc", 60, false);
        let v = v.to_str().unwrap();
        assert!(v.contains("HttpOnly") && v.contains("SameSite=Strict") && v.starts_with("swarmfeed_session=sfs_abc;"));
        assert!(v.contains("Max-Age=60") && !v.contains("Secure"), "{v}");
        let v = set_cookie("sfs_abc", 60, true);
        assert!(v.to_str().unwrap().ends_with("; Secure"), "served over TLS: {v:?}");
        assert!(clear_cookie(true).to_str().unwrap().ends_with("; Secure"));
    }
}
