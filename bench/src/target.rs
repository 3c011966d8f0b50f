//! The server under test: its URL, checked to be on this machine.
//!
//! A load generator pointed at the wrong host is a denial-of-service tool, so only
//! loopback hosts (`localhost`, 127.0.0.0/8, `::1`) are accepted, and only plain HTTP
//! (the harness has no TLS).

use std::net::IpAddr;

use reqwest::Url;

/// The body of a `201` from `POST /api/events`: the seqs the server assigned.
#[derive(serde::Deserialize)]
pub struct Created {
    pub events: Vec<Accepted>,
}

#[derive(serde::Deserialize)]
pub struct Accepted {
    pub seq: u64,
}

/// Why a URL was refused.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("--url {0:?} is not a URL: {1}")]
    Unparsable(String, String),
    #[error("--url must be http:// (the harness speaks no TLS), not {0}://")]
    Scheme(String),
    #[error(
        "--url host {0:?} is not a loopback address; swarmfeed-bench only loads a server on this machine \
         (localhost, 127.0.0.0/8 or [::1])"
    )]
    NotLoopback(String),
}

/// The endpoints the modes use, derived from one base URL.
#[derive(Debug, Clone)]
pub struct Target {
    /// `POST` (ingest) endpoint.
    pub events: Url,
    /// WebSocket endpoint, `ws://…/ws`.
    pub ws: String,
}

impl Target {
    /// # Errors
    /// The URL does not parse, is not `http`, or its host is not loopback.
    pub fn parse(url: &str) -> Result<Self, TargetError> {
        let base = Url::parse(url).map_err(|e| TargetError::Unparsable(url.to_owned(), e.to_string()))?;
        if base.scheme() != "http" {
            return Err(TargetError::Scheme(base.scheme().to_owned()));
        }
        let host = base.host_str().unwrap_or_default();
        if !is_loopback(host) {
            return Err(TargetError::NotLoopback(host.to_owned()));
        }
        // `join` of absolute paths replaces whatever path the base had.
        let events = base.join("/api/events").map_err(|e| TargetError::Unparsable(url.to_owned(), e.to_string()))?;
        let mut ws = base.join("/ws").map_err(|e| TargetError::Unparsable(url.to_owned(), e.to_string()))?;
        // http → ws is a valid scheme change for a URL with a host.
        ws.set_scheme("ws").map_err(|()| TargetError::Scheme(base.scheme().to_owned()))?;
        Ok(Target { events, ws: ws.to_string() })
    }
}

/// `host` as `Url::host_str` gives it: IPv6 literals keep their brackets.
fn is_loopback(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    literal.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_accepted_and_others_refused() {
        for ok in ["http://127.0.0.1:8000", "http://localhost:9/x", "http://[::1]:8000/", "http://127.3.2.1"] {
            let t = Target::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert!(t.ws.starts_with("ws://") && t.ws.ends_with("/ws"), "{}", t.ws);
            assert!(t.events.path() == "/api/events");
        }
        for bad in ["http://10.0.0.1:8000", "http://example.com", "http://0.0.0.0:8000", "http://192.168.1.2"] {
            assert!(matches!(Target::parse(bad), Err(TargetError::NotLoopback(_))), "{bad}");
        }
        assert!(matches!(Target::parse("https://127.0.0.1"), Err(TargetError::Scheme(_))));
        assert!(matches!(Target::parse("127.0.0.1:8000"), Err(TargetError::Unparsable(..) | TargetError::Scheme(_))));
    }
}
