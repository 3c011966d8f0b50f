//! Origin checks against cross-site WebSocket hijacking and CSRF (DESIGN §6).
//!
//! A browser names the page that opened a WebSocket or sent a form in `Origin`. Every
//! WebSocket upgrade and every state-changing request that carries an `Origin` must
//! come from this server's own host or an allowed origin (`--allowed-origin`).
//! Programs that send no `Origin` are not browsers and are judged by their token
//! alone. Also owns the `Host` allow-list and the security headers every response
//! carries.
//!
//! DNS rebinding: a page on `attacker.example` makes its name resolve to 127.0.0.1,
//! and its requests then reach this server with `Host: attacker.example` and a
//! matching `Origin`, same-origin in the browser's eyes. So whenever a decision rests
//! on `Host` (always without auth; with auth, wherever `Origin` is compared against
//! `Host`), `Host` must name this server: an IP literal, `localhost`, or a name
//! allowed with `--allowed-host`. Any IP literal is accepted, because rebinding needs
//! a name the attacker controls: a phone on the LAN that opens
//! `http://192.168.1.20:8000` keeps working. The port is not compared: the socket has
//! already decided which server answers, and `Origin` is compared port and all.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;
use super::error::ApiError;

/// `Content-Security-Policy` of every response: scripts and styles only from this
/// server (no inline script, no `<style>` or `style=`; setting `element.style` from a
/// script is allowed), nothing may frame the pages, connections only back to this host.
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// `Referrer-Policy` of every response: no referrer leaves for another site.
pub(crate) const REFERRER_POLICY: &str = "same-origin";

/// Whether `origin` is in the `--allowed-origin` list.
fn origin_listed(origin: &str, allowed: &[String]) -> bool {
    allowed.iter().any(|a| a.eq_ignore_ascii_case(origin.trim_end_matches('/')))
}

/// `authority` without the port that is the default for `scheme`, so that
/// `http://example.com` and `Host: example.com:80` agree.
fn without_default_port<'a>(authority: &'a str, scheme: &str) -> &'a str {
    let default = if scheme.eq_ignore_ascii_case("https") { ":443" } else { ":80" };
    authority.strip_suffix(default).unwrap_or(authority)
}

/// Whether `origin` (e.g. `http://127.0.0.1:8000`) may act on this server, served
/// with `scheme` at `host`: a listed origin, or the same scheme, host and port.
pub(crate) fn origin_allowed(origin: &str, scheme: &str, host: Option<&str>, allowed: &[String]) -> bool {
    if origin_listed(origin, allowed) {
        return true;
    }
    let Some(host) = host else { return false };
    let Some((origin_scheme, authority)) = origin.split_once("://") else { return false };
    origin_scheme.eq_ignore_ascii_case(scheme)
        && without_default_port(authority, scheme).eq_ignore_ascii_case(without_default_port(host, scheme))
}

/// The name in a `Host` value, without its port, lower-cased and without a trailing
/// dot; IPv6 literals keep their brackets off (`[::1]:8000` → `::1`).
fn host_name(host: &str) -> String {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split_once(']').map_or(rest, |(literal, _)| literal)
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        }
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether a `Host` value names this server: any IP literal, `localhost` (or a name
/// under `.localhost`, which browsers resolve to loopback themselves, RFC 6761), or a
/// name in `allowed` (`--allowed-host`, lower-case, without port).
pub(crate) fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let name = host_name(host);
    name.parse::<std::net::IpAddr>().is_ok()
        || name == "localhost"
        || name.ends_with(".localhost")
        || allowed.contains(&name)
}

/// Middleware: refuses a request whose `Host` is not this server's when a decision
/// rests on it: every request without auth, and, with auth, every request whose
/// `Origin` is compared against `Host`.
pub(crate) async fn host_check(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let headers = request.headers();
    let compares_origin = needs_origin_check(request.method(), headers)
        && headers
            .get(header::ORIGIN)
            .is_some_and(|o| !origin_listed(o.to_str().unwrap_or("null"), &state.config.allowed_origins));
    if state.config.no_auth || compares_origin {
        let Some(host) = headers.get(header::HOST).map(|h| h.to_str().unwrap_or("")) else {
            return Err(ApiError::bad_request("missing_host", "a Host header is required"));
        };
        if !host_allowed(host, &state.config.allowed_hosts) {
            tracing::warn!(host, path = request.uri().path(), "refused a request for a foreign host");
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden_host",
                format!(
                    "host {host:?} is not a name of this server; use its IP address or localhost, or allow the \
                     name with --allowed-host"
                ),
            ));
        }
    }
    Ok(next.run(request).await)
}

fn needs_origin_check(method: &Method, headers: &HeaderMap) -> bool {
    let upgrade =
        headers.get(header::UPGRADE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    upgrade || !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Middleware: refuses a foreign `Origin` on upgrades and state-changing requests.
pub(crate) async fn check(State(state): State<AppState>, request: Request, next: Next) -> Result<Response, ApiError> {
    if needs_origin_check(request.method(), request.headers())
        && let Some(origin) = request.headers().get(header::ORIGIN)
    {
        let origin = origin.to_str().unwrap_or("null");
        let host = request.headers().get(header::HOST).and_then(|h| h.to_str().ok());
        if !origin_allowed(origin, state.config.served_scheme(), host, &state.config.allowed_origins) {
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
pub(crate) async fn security_headers(request: Request, next: Next) -> Response {
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
        assert!(origin_allowed("http://127.0.0.1:8000", "http", Some("127.0.0.1:8000"), &none));
        assert!(origin_allowed("http://Feed.Example.com", "http", Some("feed.example.com"), &none));
        assert!(!origin_allowed("http://evil.example", "http", Some("127.0.0.1:8000"), &none));
        assert!(!origin_allowed("http://127.0.0.1:8001", "http", Some("127.0.0.1:8000"), &none));
        assert!(!origin_allowed("null", "http", Some("127.0.0.1:8000"), &none));
        assert!(!origin_allowed("http://127.0.0.1:8000", "http", None, &none));
        let listed = vec!["https://dash.example.com".to_owned()];
        assert!(origin_allowed("https://dash.example.com", "http", Some("api.example.com"), &listed));
    }

    #[test]
    fn the_origin_check_compares_scheme_and_default_ports() {
        let none: Vec<String> = Vec::new();
        assert!(!origin_allowed("https://127.0.0.1:8000", "http", Some("127.0.0.1:8000"), &none), "scheme differs");
        assert!(origin_allowed("HTTP://feed.example", "http", Some("feed.example:80"), &none), "default port");
        assert!(origin_allowed("https://feed.example:443", "https", Some("feed.example"), &none));
        assert!(!origin_allowed("http://feed.example:8080", "http", Some("feed.example"), &none));
    }

    #[test]
    fn only_ip_literals_loopback_names_and_allowed_hosts_are_this_server() {
        let allowed = vec!["feed.example.com".to_owned()];
        for ok in [
            "127.0.0.1:8000",
            "192.168.1.20:8000",
            "[::1]:8000",
            "[fe80::1]",
            "localhost",
            "LOCALHOST:9000",
            "dash.localhost:8000",
            "feed.example.com",
            "Feed.Example.COM.:443",
        ] {
            assert!(host_allowed(ok, &allowed), "{ok}");
        }
        for refused in
            ["attacker.example", "attacker.example:8000", "127.0.0.1.nip.io", "localhost.attacker.example", ""]
        {
            assert!(!host_allowed(refused, &allowed), "{refused}");
        }
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
