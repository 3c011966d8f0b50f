//! Reaching a running server from a client command (`tail`, `emit`): its base URL.
//!
//! Owns the one rule both clients follow: a base URL is `http://host:port`, perhaps
//! with a path prefix, and every endpoint is joined under it. This build has no TLS
//! client, so `https://` is refused with a hint rather than failing later.

use reqwest::Url;

/// A `--url` that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--url {url:?} is not usable: {reason}")]
pub struct BadUrl {
    pub url: String,
    pub reason: String,
}

/// Parses a base URL; the result ends in `/`, so `join("api/events")` keeps a prefix.
///
/// # Errors
/// [`BadUrl`] when it is not an `http://` URL.
pub fn base_url(url: &str) -> Result<Url, BadUrl> {
    let bad = |reason: &str| BadUrl { url: url.to_owned(), reason: reason.to_owned() };
    let mut base = Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    match base.scheme() {
        "http" => {}
        "https" => return Err(bad("this build has no TLS; reach the server over http:// (e.g. an SSH tunnel)")),
        _ => return Err(bad("expected http://host:port")),
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
    fn only_http_urls_are_accepted() {
        assert!(base_url("https://h").unwrap_err().reason.contains("TLS"));
        assert!(base_url("127.0.0.1:8000").is_err());
        assert!(base_url("ftp://h").is_err());
    }
}
