//! The one error type of the HTTP API and its JSON shape (DESIGN §4):
//! `{"error":{"code","message","field"?,"index"?}}`.
//!
//! Client errors are answered as they are and not logged as errors; server errors get a
//! generic body and their cause is logged once, here. Also owns the extractors that
//! turn axum's own rejections (query strings, bodies) into this shape, and the one
//! filter extractor, [`Filtered`].

use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::filter::{Filter, FilterError, FilterSpec};
use crate::ingest::Invalid;
use crate::store::{Condition, StoreError};
use crate::writer::AppendError;

/// Seconds a client is asked to wait after a 503 for a full writer queue.
const QUEUE_FULL_RETRY_SECS: u64 = 1;
/// Seconds a client is asked to wait when the store's disk is full: freeing space is
/// an operator's job, so retrying every second would only fill the log with refusals.
const STORAGE_FULL_RETRY_SECS: u64 = 30;
/// Seconds a client is asked to wait while the store is down or read-only: a restart
/// or a failover takes seconds.
const STORE_DOWN_RETRY_SECS: u64 = 2;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    pub index: Option<usize>,
    pub retry_after: Option<u64>,
}

/// Every error answer (DESIGN §4); the OpenAPI document describes this type.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorDetail<'a> {
    /// A stable machine-readable code, e.g. `invalid_event`.
    code: &'a str,
    message: &'a str,
    /// The offending field, when one is to blame.
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    /// The offending event's position in a batch.
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<usize>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), field: None, index: None, retry_after: None }
    }

    pub(crate) fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub(crate) fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub(crate) fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", what)
    }

    pub(crate) fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub(crate) fn unavailable(code: &'static str, message: impl Into<String>, retry_after: u64) -> Self {
        ApiError { retry_after: Some(retry_after), ..Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message) }
    }

    /// A server-side failure: the cause is logged here, once; the client gets a
    /// generic message.
    pub(crate) fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "request failed");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; see the server log")
    }

    /// The JSON body, for transports that report errors in-band.
    pub(crate) fn body(&self) -> String {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: &self.message,
                field: self.field.as_deref(),
                index: self.index,
            },
        };
        // Plain strings and numbers: serialising them cannot fail.
        serde_json::to_string(&body).expect("error body serialises")
    }
}

/// Marks a response as a refusal, with its code, for the rejection metrics.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Refused(pub &'static str);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, [(header::CONTENT_TYPE, "application/json")], self.body()).into_response();
        response.extensions_mut().insert(Refused(self.code));
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"swarmfeed\""));
        }
        response
    }
}

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> Self {
        match e {
            Invalid::Event { index, field, message } => ApiError {
                index: Some(index),
                field,
                ..ApiError::bad_request("invalid_event", format!("event {index}: {message}"))
            },
            Invalid::TooMany { .. } => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "batch_too_large", e.to_string()),
            Invalid::Json(_) => ApiError::bad_request("invalid_json", e.to_string()),
            Invalid::Shape | Invalid::Empty => ApiError::bad_request("invalid_body", e.to_string()),
        }
    }
}

impl From<AppendError> for ApiError {
    fn from(e: AppendError) -> Self {
        match e {
            AppendError::QueueFull => {
                ApiError::unavailable("queue_full", "the writer queue is full; retry shortly", QUEUE_FULL_RETRY_SECS)
            }
            AppendError::Stopped => ApiError::unavailable("shutting_down", "the server is shutting down", 5),
            AppendError::Store(cause) => ApiError::from_store(&cause),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::from_store(&e)
    }
}

impl ApiError {
    /// A storage failure's answer: a condition the client can wait out (a full disk, a
    /// store that is down or read-only) is a 507 or 503 with `Retry-After`, since
    /// nothing was written and the same request will succeed later; anything else is a
    /// 500. The cause is logged as a warning for those (the operator must free space or
    /// bring the store back) and as an error for faults.
    fn from_store(cause: &StoreError) -> Self {
        let (status, code, message, retry_after) = match cause.condition() {
            Condition::Fault => return ApiError::internal(cause),
            Condition::OutOfSpace => (
                StatusCode::INSUFFICIENT_STORAGE,
                "storage_full",
                "the store's disk is full: writes are refused, and nothing of this request was stored, until space is freed",
                STORAGE_FULL_RETRY_SECS,
            ),
            Condition::ReadOnly => (
                StatusCode::SERVICE_UNAVAILABLE,
                "store_read_only",
                "the store takes no writes now, and nothing of this request was stored; retry shortly",
                STORE_DOWN_RETRY_SECS,
            ),
            Condition::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the store does not answer; retry shortly (a retry with the same event ids stores nothing twice)",
                STORE_DOWN_RETRY_SECS,
            ),
        };
        tracing::warn!(error = %cause, code, "store refused a request");
        ApiError { retry_after: Some(retry_after), ..Self::new(status, code, message) }
    }
}

impl From<FilterError> for ApiError {
    fn from(e: FilterError) -> Self {
        ApiError::bad_request("invalid_filter", e.to_string()).with_field(e.field)
    }
}

/// Parses a JSON request body into `T`, or answers 400 naming the field that was
/// wrong. serde's own message names the offending *value* ("invalid type: integer
/// `42`"), not where it was; the path (`name`, `capabilities[2]`) comes from
/// `serde_path_to_error`. A missing field is reported at its parent, so its name is
/// taken from the message instead.
///
/// # Errors
/// 400 `invalid_body` with `field` set whenever a field is to blame.
pub(crate) fn json_body<T: DeserializeOwned>(raw: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(raw);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        body_error(e.inner(), (path != ".").then_some(path))
    })?;
    // Trailing bytes after the value are as wrong as a syntax error in it.
    de.end().map_err(|e| body_error(&e, None))?;
    Ok(value)
}

fn body_error(inner: &serde_json::Error, path: Option<String>) -> ApiError {
    if !inner.is_data() {
        return ApiError::bad_request("invalid_body", format!("body is not valid JSON: {inner}"));
    }
    let message = inner.to_string();
    // An unknown field is already the last segment of the path; a missing one is not.
    let child = message.strip_prefix("missing field `").and_then(|rest| rest.split('`').next());
    let field = match (path, child) {
        (Some(parent), Some(child)) => Some(format!("{parent}.{child}")),
        (None, Some(child)) => Some(child.to_owned()),
        (Some(path), None) => Some(path),
        (None, None) => None,
    };
    match field {
        Some(field) => ApiError::bad_request("invalid_body", format!("{field}: {message}")).with_field(field),
        None => ApiError::bad_request("invalid_body", message),
    }
}

/// `Query<T>` whose rejection is an [`ApiError`] naming the bad parameter.
pub(crate) struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
    }
}

/// The one extractor of a filter, for every endpoint that filters: the query's filter
/// fields ([`FilterSpec`], declared once) validated into a [`Filter`], and the
/// endpoint's own parameters `T` read from the rest. A `T` with
/// `deny_unknown_fields` refuses any other parameter by name, as [`ApiQuery`] does.
///
/// The query is split rather than `T` holding a flattened [`FilterSpec`]: serde's
/// `flatten` drops `deny_unknown_fields`, and reads numbers in a query string as text.
pub(crate) struct Filtered<T>(pub Filter, pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Filtered<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let (spec, params) = split_query::<T>(parts.uri.query().unwrap_or_default())
            .map_err(|e| ApiError::bad_request("invalid_query", e))?;
        Ok(Filtered(Filter::from_spec(spec)?, params))
    }
}

/// A query string's filter fields, and the rest read as `T`.
///
/// # Errors
/// What axum's `Query` says of a query it cannot read: a malformed string, a value of
/// the wrong type, a repeated or (for `T` with `deny_unknown_fields`) unknown name.
pub(crate) fn split_query<T: DeserializeOwned>(query: &str) -> Result<(FilterSpec, T), String> {
    let read = |e: &dyn std::fmt::Display| format!("Failed to deserialize query string: {e}");
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).map_err(|e| read(&e))?;
    let (filter, rest): (Vec<_>, Vec<_>) =
        pairs.into_iter().partition(|(name, _)| FilterSpec::FIELDS.contains(&name.as_str()));
    // Re-encoding pairs that were just decoded cannot fail.
    let encode = |pairs: &[(String, String)]| serde_urlencoded::to_string(pairs).unwrap_or_default();
    let params = serde_urlencoded::from_str(&encode(&rest)).map_err(|e| read(&e))?;
    let spec = serde_urlencoded::from_str(&encode(&filter)).map_err(|e| read(&e))?;
    Ok((spec, params))
}

/// The raw request body, with an over-limit body answered as 413 in the API's shape.
pub(crate) struct ApiBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for ApiBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Bytes::from_request(req, state).await.map(ApiBody).map_err(|e: BytesRejection| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "request body is larger than the limit",
                )
            } else {
                ApiError::bad_request("invalid_body", e.body_text())
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Params {
        after: Option<u64>,
    }

    #[test]
    fn a_query_splits_into_the_filter_and_the_endpoints_own_parameters() {
        let (spec, p) = split_query::<Params>("types=task.*,%20bid.submitted&after=7&agent_id=a1").unwrap();
        assert_eq!(spec.types, ["task.*", "bid.submitted"]);
        assert_eq!((spec.agent_id.as_deref(), p.after), (Some("a1"), Some(7)));
        let (spec, p) = split_query::<Params>("").unwrap();
        assert_eq!((spec, p.after), (FilterSpec::default(), None));
        for (bad, says) in [
            ("colour=red", "unknown field `colour`"),
            ("after=minus", "invalid digit"),
            ("types=a.b&types=c.d", "duplicate field `types`"),
        ] {
            let err = split_query::<Params>(bad).unwrap_err();
            assert!(err.starts_with("Failed to deserialize query string: ") && err.contains(says), "{bad}: {err}");
        }
    }
}
