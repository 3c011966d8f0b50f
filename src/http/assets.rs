//! `GET /assets/{path}`: the stylesheets, scripts and vendored libraries under
//! `assets/`, embedded in the binary so that a page loads nothing from another host
//! and the binary is all there is to deploy.
//!
//! Served with a content hash as `ETag` and `Cache-Control: no-cache`: a browser keeps
//! its copy and revalidates it with one cheap 304, and a new binary's assets are
//! picked up at once. Assets are not secret, so they need no login (the login page
//! uses them).

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::error::ApiError;

struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $type:expr) => {
        Asset { path: $path, content_type: $type, body: include_bytes!(concat!("../../assets/", $path)) }
    };
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

static ASSETS: &[Asset] = &[
    asset!("app.css", CSS),
    asset!("live.js", JS),
    asset!("chart.js", JS),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("vendor/htmx.org/htmx.min.js", JS),
    asset!("vendor/htmx-ext-ws/ws.min.js", JS),
    asset!("vendor/htmx-ext-sse/sse.min.js", JS),
    asset!("vendor/uplot/uPlot.iife.min.js", JS),
    asset!("vendor/uplot/uPlot.min.css", CSS),
];

/// Each asset's ETag, by index in [`ASSETS`]; hashed once, on first use.
fn etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| ASSETS.iter().map(|a| format!("\"{}\"", &hex::encode(Sha256::digest(a.body))[..20])).collect())
}

/// Serves one embedded asset.
pub(crate) async fn serve(Path(path): Path<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    let Some(i) = ASSETS.iter().position(|a| a.path == path) else {
        return Err(ApiError::not_found(format!("no asset {path:?}")));
    };
    let (asset, etag) = (&ASSETS[i], &etags()[i]);
    let cache = [(header::CACHE_CONTROL, "no-cache"), (header::X_CONTENT_TYPE_OPTIONS, "nosniff")];
    if headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains(etag.as_str())) {
        return Ok((StatusCode::NOT_MODIFIED, cache, [(header::ETAG, etag.clone())]).into_response());
    }
    let mut response = (StatusCode::OK, cache, asset.body).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    // A quoted hex digest is always a valid header value.
    h.insert(header::ETAG, HeaderValue::from_str(etag).expect("hex etag"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_type_matching_its_extension() {
        for a in ASSETS {
            let ok = match a.path.rsplit('.').next() {
                Some("js") => a.content_type == JS,
                Some("css") => a.content_type == CSS,
                Some("svg") => a.content_type == "image/svg+xml",
                _ => false,
            };
            assert!(ok, "{}", a.path);
            assert!(!a.body.is_empty(), "{}", a.path);
        }
    }
}
