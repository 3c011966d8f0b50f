//! The HTTP API described in OpenAPI 3, generated from the handlers' annotations and
//! the request types themselves, served at `GET /api/openapi.json`.
//!
//! Owns the document's assembly and the schemas of what the server writes by hand
//! (event payloads and pages are concatenated from shared bytes, not serialised from a
//! struct), so those are described here, next to each other, once.

use std::sync::LazyLock;

use axum::Json;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// An event as every viewer receives it (DESIGN §2, §3).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct EventOut {
    /// Gapless, increasing position in the log.
    seq: u64,
    /// The producer's idempotency key, or a UUIDv7 made by the server.
    id: String,
    /// Dot-separated lowercase words, like `task.created`.
    event_type: String,
    source: String,
    task_id: Option<String>,
    agent_id: Option<String>,
    /// Commit time, RFC 3339 UTC with milliseconds.
    timestamp: String,
    /// The event's data, secrets redacted; `{}` when none was sent.
    #[schema(value_type = Object)]
    data: Value,
}

/// An event as a producer sends it.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct EventIn {
    /// Idempotency key (≤ 128 characters); re-sending it stores nothing new. Ids
    /// beginning with `sf:` are the server's own and refused (400, field `id`), as is
    /// an id holding a bearer token.
    id: Option<String>,
    /// `^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$`, ≤ 64 characters.
    event_type: String,
    /// 1 to 128 characters, without control or format (Unicode Cf, e.g. U+202E)
    /// characters, as for every identifier; bearer tokens in it are redacted.
    source: String,
    /// ≤ 128 characters, no control or format characters; bearer tokens redacted.
    task_id: Option<String>,
    /// ≤ 128 characters, no control or format characters; bearer tokens redacted.
    agent_id: Option<String>,
    /// A JSON object, ≤ 16 KiB serialised; stored and served as sent (less
    /// whitespace), so numbers beyond 64 bits keep every digit.
    #[schema(value_type = Option<Object>)]
    data: Option<Value>,
}

/// One committed event of a `POST /api/events`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct AcceptedEvent {
    id: String,
    seq: u64,
    /// Present and true when the id was already stored; `seq` is the original.
    duplicate: Option<bool>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct AcceptedBody {
    events: Vec<AcceptedEvent>,
}

/// A page of events; pass `next` back as `after` (or `before` with `order=desc`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct EventPage {
    events: Vec<EventOut>,
    next: Option<u64>,
}

/// A long-poll answer; pass `next` back as `after`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct PollAnswer {
    events: Vec<EventOut>,
    next: u64,
    head: u64,
    /// Present when `after` was older than the oldest retained event.
    reset: Option<bool>,
    oldest: Option<u64>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorDetail {
    /// A stable machine-readable code, e.g. `invalid_event`.
    code: String,
    message: String,
    /// The offending field, when one is to blame.
    field: Option<String>,
    /// The offending event's position in a batch.
    index: Option<usize>,
}

/// Every error answer (DESIGN §4).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    error: ErrorDetail,
}

/// The refusals every authenticated endpoint can answer.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum Refusals {
    #[response(status = 400, description = "Malformed input; the error names what was wrong")]
    BadRequest(ErrorBody),
    #[response(status = 401, description = "Missing or bad credentials")]
    Unauthorized(ErrorBody),
    #[response(status = 403, description = "Scope too small, a foreign Origin, or a Host that is not this server's")]
    Forbidden(ErrorBody),
}

/// What a coordinator command can be refused with (DESIGN §7).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum CommandRefusals {
    #[response(status = 400, description = "Malformed body; the error names the field")]
    BadRequest(ErrorBody),
    #[response(status = 401, description = "Missing or bad credentials")]
    Unauthorized(ErrorBody),
    #[response(status = 403, description = "Scope too small, a foreign Origin, or a Host that is not this server's")]
    Forbidden(ErrorBody),
    #[response(status = 413, description = "Body over 64 KiB, the cap of every command")]
    TooLarge(ErrorBody),
    #[response(status = 404, description = "Unknown task or agent")]
    NotFound(ErrorBody),
    #[response(status = 409, description = "A step out of order, such as a bid after the close")]
    Conflict(ErrorBody),
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("sf_…").build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "swarmfeed", description = "A durable, live activity feed for swarms of agents. \
        Streams (`/ws`, `/api/stream`) are described in docs/PROTOCOL.md."),
    paths(
        super::api::post_events,
        super::api::list_events,
        super::api::get_event,
        super::api::summary,
        super::api::event_types,
        super::api::post_token,
        super::api::list_tokens,
        super::api::revoke_token,
        super::api::list_sessions,
        super::api::end_session,
        super::api::metrics,
        super::api::healthz,
        super::api::readyz,
        crate::transport::poll::poll,
        crate::transport::sse::stream,
        crate::transport::ws::upgrade,
        super::swarm::snapshot,
        super::swarm::join,
        super::swarm::leave,
        super::swarm::status,
        super::swarm::heartbeat,
        super::swarm::post_task,
        super::swarm::bid,
        super::swarm::start,
        super::swarm::complete,
        super::swarm::fail,
        super::swarm::tools,
        super::swarm::cancel,
        super::swarm::retry,
        super::swarm::close,
        super::swarm::remove,
    ),
    components(schemas(EventOut, EventIn, AcceptedBody, AcceptedEvent, EventPage, PollAnswer, ErrorBody, ErrorDetail)),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
)]
pub struct ApiDoc;

/// Built once: the document is a pure function of the code.
static DOCUMENT: LazyLock<Value> = LazyLock::new(|| {
    serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }))
});

/// `GET /api/openapi.json`.
pub async fn document() -> Response {
    Json(DOCUMENT.clone()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_api_route_is_documented() {
        let doc = ApiDoc::openapi();
        let paths: Vec<&String> = doc.paths.paths.keys().collect();
        for p in [
            "/api/events",
            "/api/events/{key}",
            "/api/events/poll",
            "/api/stream",
            "/ws",
            "/api/swarm",
            "/swarm/tasks/{id}/bids",
        ] {
            assert!(paths.iter().any(|x| x.as_str() == p), "{p} missing from {paths:?}");
        }
        let json = serde_json::to_value(&doc).unwrap();
        assert_eq!(json["openapi"].as_str().map(|v| v.starts_with("3.")), Some(true));
        assert!(json["components"]["schemas"]["EventOut"].is_object());
    }
}
