//! Origin checks against cross-site WebSocket hijacking and CSRF (DESIGN §6).
//!
//! A browser names the page that opened a WebSocket or sent a form in `Origin`. Every
//! WebSocket upgrade and every state-changing request that carries an `Origin` must
//! come from this server's own host or an allowed origin (`--allowed-origin`).
//! Programs that send no `Origin` are not browsers and are judged by their token
//! alone. Also owns the security headers every response carries.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;
use super::error::ApiError;

/// `Content-Security-Policy` of every response: scripts and styles only from this
/// server (no inline script, no `<style>` or `style=`; setting `element.style` from a
/// script is allowed), nothing may frame the pages, connections only back to this host.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// `Referrer-Policy` of every response: no referrer leaves for another site.
pub const REFERRER_POLICY: &str = "same-origin";

/// Whether `origin` (e.g. `http://127.0.0.1:8000`) may act on this server.
pub fn origin_allowed(origin: &str, host: Option<&str>, allowed: &[String]) -> bool {
    if allowed.iter().any(|a| a.eq_ignore_ascii_case(origin.trim_end_matches('/'))) {
        return true;
    }
    let Some(host) = host else { return false };
    let Some((_scheme, authority)) = origin.split_once("://") else { return false };
    authority.eq_ignore_ascii_case(host)
}

fn needs_origin_check(method: &Method, headers: &HeaderMap) -> bool {
    let upgrade =
        headers.get(header::UPGRADE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    upgrade || !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Middleware: refuses a foreign `Origin` on upgrades and state-changing requests.
pub async fn check(State(state): State<AppState>, request: Request, next: Next) -> Result<Response, ApiError> {
    if needs_origin_check(request.method(), request.headers())
        && let Some(origin) = request.headers().get(header::ORIGIN)
    {
        let origin = origin.to_str().unwrap_or("null");
        let host = request.headers().get(header::HOST).and_then(|h| h.to_str().ok());
        if !origin_allowed(origin, host, &state.config.allowed_origins) {
            tracing::warn!(origin, path = request.uri().path(), "refused a request from a foreign origin");
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden_origin",
                format!("origin {origin:?} may not use this server; allow it with --allowed-origin"),
            ));
        }
    }
    Ok(next.run(request).await)
}

/// Middleware: the security headers of every response.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // `same-origin`, not `no-referrer`: under `no-referrer` the Fetch standard makes a
    // browser send `Origin: null` with every form POST, even one from this site's own
    // login page, and the check above must refuse `null`. `same-origin` still sends no
    // referrer to any other site, and lets same-site requests name their origin.
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static(REFERRER_POLICY));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_host_or_listed_origins_are_allowed() {
        let none: Vec<String> = Vec::new();
        assert!(origin_allowed("http://127.0.0.1:8000", Some("127.0.0.1:8000"), &none));
        assert!(origin_allowed("https://Feed.Example.com", Some("feed.example.com"), &none));
        assert!(!origin_allowed("http://evil.example", Some("127.0.0.1:8000"), &none));
        assert!(!origin_allowed("http://127.0.0.1:8001", Some("127.0.0.1:8000"), &none));
        assert!(!origin_allowed("null", Some("127.0.0.1:8000"), &none));
        assert!(!origin_allowed("http://127.0.0.1:8000", None, &none));
        let listed = vec!["https://dash.example.com".to_owned()];
        assert!(origin_allowed("https://dash.example.com", Some("api.example.com"), &listed));
    }

    #[test]
    fn only_upgrades_and_state_changes_are_checked() {
        let mut h = HeaderMap::new();
        assert!(!needs_origin_check(&Method::GET, &h));
        assert!(needs_origin_check(&Method::POST, &h));
        assert!(needs_origin_check(&Method::DELETE, &h));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(needs_origin_check(&Method::GET, &h));
    }
}
