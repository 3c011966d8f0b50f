//! The shapes of the JSON API's bodies, for its OpenAPI document: what the server
//! writes by hand (pages are concatenated from shared event bytes, not serialised from
//! a struct), described here next to each other, once, and the refusals the endpoints
//! share. The event itself is [`EventPayload`], declared beside its encoder. The handlers name these in their annotations;
//! [`super::openapi`] assembles the document from the handlers.

use serde_json::Value;
use utoipa::ToSchema;

pub(crate) use super::error::{ErrorBody, ErrorDetail};
use crate::event::EventPayload;

/// An event as a producer sends it.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct EventIn {
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

/// A page of events; pass `next` back as `after` (or `before` with `order=desc`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct EventPage {
    events: Vec<EventPayload>,
    next: Option<u64>,
}

/// A long-poll answer; pass `next` back as `after`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct PollAnswer {
    events: Vec<EventPayload>,
    next: u64,
    head: u64,
    /// Present when `after` was older than the oldest retained event.
    reset: Option<bool>,
    oldest: Option<u64>,
}

/// The refusals every authenticated endpoint can answer.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub(crate) enum Refusals {
    #[response(status = 400, description = "Malformed input; the error names what was wrong")]
    BadRequest(ErrorBody<'static>),
    #[response(status = 401, description = "Missing or bad credentials")]
    Unauthorized(ErrorBody<'static>),
    #[response(status = 403, description = "Scope too small, a foreign Origin, or a Host that is not this server's")]
    Forbidden(ErrorBody<'static>),
}

/// What a coordinator command can be refused with (DESIGN §7).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub(crate) enum CommandRefusals {
    #[response(status = 400, description = "Malformed body; the error names the field")]
    BadRequest(ErrorBody<'static>),
    #[response(status = 401, description = "Missing or bad credentials")]
    Unauthorized(ErrorBody<'static>),
    #[response(status = 403, description = "Scope too small, a foreign Origin, or a Host that is not this server's")]
    Forbidden(ErrorBody<'static>),
    #[response(status = 413, description = "Body over 64 KiB, the cap of every command")]
    TooLarge(ErrorBody<'static>),
    #[response(status = 404, description = "Unknown task or agent")]
    NotFound(ErrorBody<'static>),
    #[response(status = 409, description = "A step out of order, such as a bid after the close")]
    Conflict(ErrorBody<'static>),
}
