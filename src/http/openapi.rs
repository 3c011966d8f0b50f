//! The HTTP API described in OpenAPI 3, generated from the handlers' annotations and
//! the request types themselves, served at `GET /api/openapi.json`.
//!
//! Owns the document's assembly; the schemas it names are [`super::schema`]'s.

use std::sync::LazyLock;

use axum::Json;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::alerts::AlertList;
use super::api::{Accepted, AcceptedBody};
use super::boards::{AgentPage, BoardAgentView, TaskPage, TaskView};
use super::schema::{ErrorBody, ErrorDetail, EventIn, EventPage, PollAnswer};
use super::webhooks::{CreatedWebhook, NewWebhook, WebhookList};
use crate::alert::rules::RuleBody;
use crate::alert::{AlertState, AlertView};
use crate::event::EventPayload;
use crate::webhook::{Format, WebhookView};

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
        super::otlp::traces,
        super::otlp::logs,
        super::api::list_events,
        super::export::export_events,
        super::api::get_event,
        super::api::summary,
        super::api::event_types,
        super::api::post_token,
        super::api::list_tokens,
        super::api::revoke_token,
        super::api::list_sessions,
        super::api::end_session,
        super::alerts::create,
        super::alerts::list,
        super::alerts::delete,
        super::api::metrics,
        super::api::healthz,
        super::api::readyz,
        super::streams::poll,
        super::streams::sse,
        super::streams::ws,
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
        super::webhooks::create,
        super::webhooks::list,
        super::webhooks::delete,
        super::boards::list_tasks,
        super::boards::get_task,
        super::boards::list_agents,
        super::boards::get_agent,
    ),
    components(schemas(EventPayload, EventIn, AcceptedBody, Accepted, EventPage, PollAnswer, ErrorBody, ErrorDetail,
        RuleBody, AlertView, AlertState, AlertList, NewWebhook, CreatedWebhook, WebhookList, WebhookView, Format, TaskView, TaskPage, BoardAgentView, AgentPage)),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
)]
pub(crate) struct ApiDoc;

/// Built once: the document is a pure function of the code.
static DOCUMENT: LazyLock<Value> = LazyLock::new(|| {
    serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }))
});

/// `GET /api/openapi.json`.
pub(crate) async fn document() -> Response {
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
            "/api/alerts",
            "/api/alerts/{id}",
            "/api/webhooks",
            "/api/webhooks/{id}",
            "/api/tasks",
            "/api/tasks/{id}",
            "/api/agents",
            "/api/agents/{id}",
            "/v1/traces",
            "/v1/logs",
        ] {
            assert!(paths.iter().any(|x| x.as_str() == p), "{p} missing from {paths:?}");
        }
        let json = serde_json::to_value(&doc).unwrap();
        assert_eq!(json["openapi"].as_str().map(|v| v.starts_with("3.")), Some(true));
        let schemas = &json["components"]["schemas"];
        assert!(schemas["EventOut"].is_object());
        assert_eq!(schemas["EventOut"]["required"].as_array().map(Vec::len), Some(6), "{}", schemas["EventOut"]);
        assert_eq!(schemas["ErrorDetail"]["required"], serde_json::json!(["code", "message"]));
        assert!(schemas["ErrorBody"]["properties"]["error"].is_object(), "{}", schemas["ErrorBody"]);
        assert_eq!(
            schemas["AcceptedEvent"]["required"],
            serde_json::json!(["id", "seq"]),
            "{}",
            schemas["AcceptedEvent"]
        );
        assert!(schemas["AcceptedBody"]["properties"]["events"].is_object(), "{}", schemas["AcceptedBody"]);
        assert_eq!(schemas["RuleBody"]["required"], serde_json::json!(["name", "filter"]), "{}", schemas["RuleBody"]);
        assert!(schemas["Alert"]["properties"]["state"].is_object(), "{}", schemas["Alert"]);
        for path in ["/api/events", "/api/stream", "/api/events/poll"] {
            let params = json["paths"][path]["get"]["parameters"].as_array().unwrap();
            let names: Vec<&str> = params.iter().filter_map(|p| p["name"].as_str()).collect();
            for filter in crate::filter::FilterSpec::FIELDS {
                assert!(names.contains(&filter), "{path} lacks {filter}: {names:?}");
            }
        }
    }
}
