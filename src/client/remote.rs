//! Reaching a running server from a client command (`tail`, `emit`, `webhook`): its
//! base URL and the HTTP client that speaks to it.
//!
//! Owns the one rule the clients follow: a base URL is `http://host:port` or
//! `https://host:port`, perhaps with a path prefix, and every endpoint is joined under
//! it. Over https the server's certificate must chain to `--ca-file`, or to the
//! system's roots without it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;

use crate::tls::TlsError;

/// Why a client's HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientSetup {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot set up the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// The TLS a client uses for `base`: `None` for http://, else a configuration trusting
/// `ca_file` or the system's roots (read only when https asks for them).
///
/// # Errors
/// `ca_file` cannot be used.
pub fn tls_for(base: &Url, ca_file: Option<&Path>) -> Result<Option<Arc<rustls::ClientConfig>>, TlsError> {
    if base.scheme() != "https" {
        return Ok(None);
    }
    crate::tls::client_config(ca_file).map(|c| Some(Arc::new(c)))
}

/// An HTTP client for `base` whose requests give up after `timeout`.
///
/// # Errors
/// `ca_file` cannot be used, or the client cannot be built.
pub fn http_client(base: &Url, ca_file: Option<&Path>, timeout: Duration) -> Result<reqwest::Client, ClientSetup> {
    let mut builder = reqwest::Client::builder().timeout(timeout);
    if let Some(tls) = tls_for(base, ca_file)? {
        builder = builder.use_preconfigured_tls(Arc::unwrap_or_clone(tls));
    }
    Ok(builder.build()?)
}

/// A `--url` that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--url {url:?} is not usable: {reason}")]
pub struct BadUrl {
    pub url: String,
    pub reason: String,
}

/// The TLS failure behind a client error, if that is what it is: a certificate that
/// does not verify now will not verify on a retry, so the clients give up at once and
/// say why rather than retry.
pub(crate) fn tls_failure(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        // `io::Error` passes its inner error's `source()` on as its own, skipping the
        // inner error itself (often another `io::Error` around the rustls one).
        next = match e.downcast_ref::<std::io::Error>().and_then(std::io::Error::get_ref) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

/// The hint that goes with a [`tls_failure`].
pub(crate) const TLS_HINT: &str =
    "if the server's certificate is signed by a private CA, pass that CA's certificate with --ca-file";

/// Parses a base URL; the result ends in `/`, so `join("api/events")` keeps a prefix.
///
/// # Errors
/// [`BadUrl`] when it is not an `http://` or `https://` URL.
pub fn base_url(url: &str) -> Result<Url, BadUrl> {
    let bad = |reason: &str| BadUrl { url: url.to_owned(), reason: reason.to_owned() };
    let mut base = Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    match base.scheme() {
        "http" | "https" => {}
        _ => return Err(bad("expected http://host:port or https://host:port")),
    }
    if !base.path().ends_with('/') {
        let path = format!("{}/", base.path());
        base.set_path(&path);
    }
    Ok(base)
}

/// `base` joined with `path` (no leading slash).
///
/// # Errors
/// [`BadUrl`] naming `base`, which only a path that is not a valid URL part causes.
pub fn endpoint(base: &Url, path: &str) -> Result<Url, BadUrl> {
    base.join(path).map_err(|e| BadUrl { url: base.to_string(), reason: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_join_under_the_base_and_keep_its_prefix() {
        let plain = base_url("http://127.0.0.1:8000").unwrap();
        assert_eq!(endpoint(&plain, "api/events").unwrap().as_str(), "http://127.0.0.1:8000/api/events");
        let prefixed = base_url("http://h:1/feed").unwrap();
        assert_eq!(endpoint(&prefixed, "ws").unwrap().as_str(), "http://h:1/feed/ws");
    }

    #[test]
    fn only_http_and_https_urls_are_accepted() {
        assert_eq!(base_url("https://h").unwrap().as_str(), "https://h/");
        assert!(base_url("127.0.0.1:8000").is_err());
        assert!(base_url("ftp://h").is_err());
    }
}
