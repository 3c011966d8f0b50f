//! OTLP/HTTP ingest (DESIGN §12): `POST /v1/traces` and `POST /v1/logs`, scope
//! `write` (the route group checks it).
//!
//! Reads the body's encoding and compression, hands decoding and mapping to
//! [`crate::otlp`], and commits the events through the writer exactly as
//! `POST /api/events` does, under the same per-token ingest rate. Answers with OTLP's
//! own response message in the request's encoding: `partial_success` counts the items
//! that mapped onto invalid events (the rest are stored). A whole request that fails
//! gets the status codes of the OTLP/HTTP specification (400, 413, 415, 429 and 503
//! with `Retry-After`) and a `google.rpc.Status` body in the request's encoding.

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsPartialSuccess, ExportLogsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTracePartialSuccess, ExportTraceServiceResponse};
use prost::Message;

use super::AppState;
use super::error::{ApiBody, ApiError, Refused};
use crate::auth::Principal;
use crate::otlp::{self, BadExport, Encoding, Mapped};

/// Bodies above this are decoded on the blocking pool, as `POST /api/events` does.
const DECODE_INLINE_BYTES: usize = 64 * 1024;

/// The two OTLP signals swarmfeed takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    Traces,
    Logs,
}

/// `google.rpc.Status`, the body OTLP/HTTP gives every 4xx and 5xx answer. Its two
/// scalar fields are all swarmfeed sends; `details` (field 3) is left out. The OTLP
/// messages themselves come from `opentelemetry-proto`, which does not carry this one.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// `POST /v1/traces`: an OTLP `ExportTraceServiceRequest`; spans become events.
#[tracing::instrument(skip_all, fields(bytes = body.len()))]
#[utoipa::path(post, path = "/v1/traces", tag = "opentelemetry",
    request_body(content = Vec<u8>, content_type = "application/x-protobuf",
        description = "An OTLP ExportTraceServiceRequest, protobuf (application/x-protobuf, as here) or OTLP/JSON (application/json), optionally with Content-Encoding: gzip. A span whose gen_ai.operation.name is execute_tool becomes tool.completed (tool.failed when its status is ERROR); any other span becomes otel.span."),
    responses(
        (status = 200, description = "Stored: an ExportTraceServiceResponse in the request's encoding; partial_success.rejected_spans counts spans refused (the rest are stored)"),
        (status = 400, description = "The body cannot be decoded: a google.rpc.Status in the request's encoding"),
        (status = 401, description = "Missing or bad bearer token"),
        (status = 403, description = "The token lacks scope write"),
        (status = 413, description = "Body over the ingest body limit (also once decompressed)"),
        (status = 415, description = "Content-Type is not application/x-protobuf or application/json, or Content-Encoding is not gzip"),
        (status = 429, description = "Over the token's ingest rate; see Retry-After"),
        (status = 503, description = "Writer queue full or store unavailable; see Retry-After")))]
pub(crate) async fn traces(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    ApiBody(body): ApiBody,
) -> Response {
    export(state, &principal, &headers, body, Signal::Traces).await
}

/// `POST /v1/logs`: an OTLP `ExportLogsServiceRequest`; log records become
/// `system.info`, `system.warning` or `system.error` by severity.
#[tracing::instrument(skip_all, fields(bytes = body.len()))]
#[utoipa::path(post, path = "/v1/logs", tag = "opentelemetry",
    request_body(content = Vec<u8>, content_type = "application/x-protobuf",
        description = "An OTLP ExportLogsServiceRequest, protobuf (application/x-protobuf, as here) or OTLP/JSON (application/json), optionally with Content-Encoding: gzip. Severity WARN (13-16) becomes system.warning, ERROR and FATAL (17 and above) system.error, anything else system.info."),
    responses(
        (status = 200, description = "Stored: an ExportLogsServiceResponse in the request's encoding; partial_success.rejected_log_records counts records refused"),
        (status = 400, description = "The body cannot be decoded: a google.rpc.Status in the request's encoding"),
        (status = 401, description = "Missing or bad bearer token"),
        (status = 403, description = "The token lacks scope write"),
        (status = 413, description = "Body over the ingest body limit (also once decompressed)"),
        (status = 415, description = "Unsupported Content-Type or Content-Encoding"),
        (status = 429, description = "Over the token's ingest rate; see Retry-After"),
        (status = 503, description = "Writer queue full or store unavailable; see Retry-After")))]
pub(crate) async fn logs(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    ApiBody(body): ApiBody,
) -> Response {
    export(state, &principal, &headers, body, Signal::Logs).await
}

async fn export(
    state: AppState,
    principal: &Principal,
    headers: &HeaderMap,
    body: bytes::Bytes,
    signal: Signal,
) -> Response {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let Some(encoding) = Encoding::of_content_type(content_type) else {
        return ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("Content-Type must be application/x-protobuf or application/json, not {content_type:?}"),
        )
        .into_response();
    };
    match stored(&state, principal, headers, body, encoding, signal).await {
        Ok(mapped) => answer(encoding, signal, &mapped),
        Err(e) => status_response(encoding, e),
    }
}

/// Decodes, maps and commits an export; what was rejected item by item is in the
/// returned [`Mapped`].
async fn stored(
    state: &AppState,
    principal: &Principal,
    headers: &HeaderMap,
    body: bytes::Bytes,
    encoding: Encoding,
    signal: Signal,
) -> Result<Mapped, ApiError> {
    let gzip = match headers.get(header::CONTENT_ENCODING).map(|v| v.to_str().unwrap_or("?").trim()) {
        None | Some("identity") | Some("") => false,
        Some(coding) if coding.eq_ignore_ascii_case("gzip") => true,
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_encoding",
                format!("Content-Encoding must be gzip or absent, not {other:?}"),
            ));
        }
    };
    let rules = state.config.ingest.clone();
    let max = state.config.max_body_bytes;
    let work = move || {
        let body = otlp::decompress(body, gzip, max)?;
        match signal {
            Signal::Traces => otlp::traces(&rules, &body, encoding),
            Signal::Logs => otlp::logs(&rules, &body, encoding),
        }
    };
    let mapped = if gzip || content_length(headers) > DECODE_INLINE_BYTES {
        tokio::task::spawn_blocking(work).await.map_err(|e| ApiError::internal(&e))?
    } else {
        work()
    }
    .map_err(|e| match e {
        BadExport::TooLarge(_) => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", e.to_string()),
        BadExport::Gzip(_) | BadExport::Decode { .. } => ApiError::bad_request("invalid_body", e.to_string()),
    })?;
    if mapped.events.is_empty() {
        return Ok(mapped);
    }
    state.limiters.ingest(principal, mapped.events.len())?;
    let arrived = std::time::Instant::now();
    // An export larger than a batch is committed a batch at a time: OTLP asks for no
    // atomicity, and a retry after a failure half-way stores nothing twice.
    for chunk in mapped.events.chunks(state.config.ingest.max_batch.max(1)) {
        state.writer.append(chunk.to_vec()).await?;
    }
    state.metrics.ingest_latency(arrived.elapsed());
    Ok(mapped)
}

fn content_length(headers: &HeaderMap) -> usize {
    headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok()).unwrap_or(usize::MAX)
}

/// 200 with the signal's response message; `partial_success` only when something was
/// rejected, as the specification asks.
fn answer(encoding: Encoding, signal: Signal, mapped: &Mapped) -> Response {
    let rejected = mapped.rejected;
    let error_message = mapped.first_error.clone().unwrap_or_default();
    let body = match signal {
        Signal::Traces => {
            let response = ExportTraceServiceResponse {
                partial_success: (rejected > 0)
                    .then_some(ExportTracePartialSuccess { rejected_spans: rejected, error_message }),
            };
            encode(encoding, &response)
        }
        Signal::Logs => {
            let response = ExportLogsServiceResponse {
                partial_success: (rejected > 0)
                    .then_some(ExportLogsPartialSuccess { rejected_log_records: rejected, error_message }),
            };
            encode(encoding, &response)
        }
    };
    (StatusCode::OK, [(header::CONTENT_TYPE, encoding.content_type())], body).into_response()
}

fn encode<T: Message + serde::Serialize>(encoding: Encoding, message: &T) -> Vec<u8> {
    match encoding {
        Encoding::Protobuf => message.encode_to_vec(),
        // Strings and numbers only: serialising cannot fail.
        Encoding::Json => serde_json::to_vec(message).expect("an OTLP response serialises"),
    }
}

/// A failed export as OTLP/HTTP answers it: the status, `Retry-After` when the client
/// should retry, and a `google.rpc.Status` in the request's encoding.
fn status_response(encoding: Encoding, e: ApiError) -> Response {
    // gRPC codes matching the HTTP status, as the specification's mapping does.
    let code = match e.status {
        StatusCode::BAD_REQUEST | StatusCode::UNSUPPORTED_MEDIA_TYPE => 3, // INVALID_ARGUMENT
        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::TOO_MANY_REQUESTS => 8, // RESOURCE_EXHAUSTED
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::INSUFFICIENT_STORAGE => 14, // UNAVAILABLE
        _ => 13,                                                           // INTERNAL
    };
    let body = encode(encoding, &RpcStatus { code, message: e.message.clone() });
    let mut response = (e.status, [(header::CONTENT_TYPE, encoding.content_type())], body).into_response();
    response.extensions_mut().insert(Refused(e.code));
    if let Some(secs) = e.retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}
