//! `POST`, `GET` and `DELETE /api/webhooks` (admin, DESIGN §11): creating, listing
//! and removing webhooks.
//!
//! A new webhook is checked here (its URL against the SSRF rule, its filter as every
//! filter is) and stored; the scheduler of the node that leads picks it up. The secret
//! is in the creation's answer and nowhere else: lists show everything but it.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::{ApiBody, ApiError, json_body};
use super::schema::{ErrorBody, Refusals};
use crate::filter::{Filter, FilterSpec};
use crate::store::WebhookRecord;
use crate::webhook::sign::Secret;
use crate::webhook::{Format, MAX_WEBHOOKS, WebhookView, ssrf};

/// The body of `POST /api/webhooks`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewWebhook {
    /// Where to POST: an http:// or https:// URL whose host is not on a loopback,
    /// private or link-local network (unless `serve --webhook-allow-private`).
    url: String,
    /// Which events (the filter of a subscription); all when absent.
    #[schema(value_type = Option<Object>)]
    filter: Option<FilterSpec>,
    /// `standard` (default) or `slack`.
    format: Option<Format>,
    /// Deliver the events after this seq; without it, only events from now on.
    since: Option<u64>,
}

/// The answer to `POST /api/webhooks`: the secret is shown here only.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct CreatedWebhook {
    id: String,
    /// `whsec_<base64>`: the key every delivery's signature is made with.
    secret: String,
}

/// The answer to `GET /api/webhooks`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct WebhookList {
    webhooks: Vec<WebhookView>,
}

/// `POST /api/webhooks` (admin): a new webhook; 201 with its id and secret.
#[tracing::instrument(skip_all)]
#[utoipa::path(post, path = "/api/webhooks", tag = "webhooks", request_body = NewWebhook,
    responses(
        (status = 201, description = "Created; the secret is shown only here", body = CreatedWebhook),
        Refusals,
        (status = 409, description = "As many webhooks as the server keeps (100) exist already", body = ErrorBody)))]
pub(crate) async fn create(State(state): State<AppState>, ApiBody(body): ApiBody) -> Result<Response, ApiError> {
    let req: NewWebhook = json_body(&body)?;
    let spec = req.filter.unwrap_or_default();
    Filter::from_spec(spec.clone()).map_err(|e| {
        ApiError::bad_request("invalid_filter", format!("filter.{e}")).with_field(format!("filter.{}", e.field))
    })?;
    let url = ssrf::check_url(req.url.trim(), state.config.webhooks.allow_private)
        .await
        .map_err(|e| ApiError::bad_request("invalid_url", e.to_string()).with_field("url"))?;
    if state.store.list_webhooks().await?.len() >= MAX_WEBHOOKS {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "too_many_webhooks",
            format!("a server keeps at most {MAX_WEBHOOKS} webhooks; delete one first"),
        ));
    }
    let head = state.hub.head();
    let secret = Secret::generate();
    let id = format!("wh_{}", hex::encode(rand::random::<[u8; 8]>()));
    let record = WebhookRecord {
        id: id.clone(),
        url: url.to_string(),
        // A spec that was just deserialised serialises.
        filter: serde_json::to_string(&spec).map_err(|e| ApiError::internal(&e))?,
        format: req.format.unwrap_or_default().as_str().to_owned(),
        secret: secret.expose(),
        // Like a subscription: from the head, or after `since` (never past the head).
        delivered_seq: req.since.map_or(head, |s| s.min(head)),
        created_ms: chrono::Utc::now().timestamp_millis(),
        last_status: None,
        last_error: None,
        failing_since_ms: None,
        last_attempt_ms: None,
    };
    state.store.insert_webhook(record).await?;
    state.webhooks.changed();
    tracing::info!(webhook = %id, host = url.host_str().unwrap_or_default(), "webhook created");
    Ok((StatusCode::CREATED, Json(CreatedWebhook { id, secret: secret.expose() })).into_response())
}

/// `GET /api/webhooks` (admin): every webhook with its progress and health; never a
/// secret.
#[utoipa::path(get, path = "/api/webhooks", tag = "webhooks",
    responses((status = 200, description = "Every webhook, oldest first", body = WebhookList), Refusals))]
pub(crate) async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    let head = state.hub.head();
    let webhooks = state.store.list_webhooks().await?.iter().map(|r| WebhookView::of(r, head)).collect();
    Ok(Json(WebhookList { webhooks }).into_response())
}

/// `DELETE /api/webhooks/{id}` (admin): removes a webhook; its deliveries stop.
#[utoipa::path(delete, path = "/api/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "Webhook id, as GET /api/webhooks lists it")),
    responses((status = 200, description = "Deleted", body = Object), (status = 404, description = "No webhook with that id", body = ErrorBody), Refusals))]
pub(crate) async fn delete(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    if state.store.delete_webhook(&id).await? {
        state.webhooks.changed();
        tracing::info!(webhook = %id, "webhook deleted");
        Ok(Json(serde_json::json!({ "id": id, "deleted": true })).into_response())
    } else {
        Err(ApiError::not_found(format!("no webhook with id {id:?}")))
    }
}
