//! `POST /api/alerts`, `GET /api/alerts` and `DELETE /api/alerts/{id}` (admin,
//! DESIGN §11), and the two steps the Alerts page shares with them: adding a rule and
//! deleting one.
//!
//! Handlers check bodies ([`RuleBody::into_rule`]), keep rules in the store and tell
//! the evaluator to re-read them; what a rule's state is, the evaluator answers.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::{ApiBody, ApiError, json_body};
use super::schema::Refusals;
use crate::alert::rules::{MAX_RULES, RuleBody, RuleError, new_rule_id};
use crate::alert::{AlertView, AlertsError};

impl From<AlertsError> for ApiError {
    fn from(e: AlertsError) -> Self {
        match e {
            AlertsError::Busy => ApiError::unavailable("busy", "the alert evaluator is busy; retry shortly", 1),
            AlertsError::Stopped => ApiError::unavailable("shutting_down", "the server is shutting down", 5),
        }
    }
}

impl From<RuleError> for ApiError {
    fn from(e: RuleError) -> Self {
        ApiError::bad_request("invalid_body", e.to_string()).with_field(e.field)
    }
}

/// The rules and their states, as `GET /api/alerts` answers them.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct AlertList {
    alerts: Vec<AlertView>,
}

/// `POST /api/alerts` (admin): adds a rule; 201 with the rule and its state.
#[utoipa::path(post, path = "/api/alerts", tag = "alerts",
    request_body = RuleBody,
    responses((status = 201, description = "The rule, watched from now on", body = AlertView),
        (status = 409, description = "As many rules as allowed (100) exist already"),
        Refusals))]
pub(crate) async fn create(State(state): State<AppState>, ApiBody(raw): ApiBody) -> Result<Response, ApiError> {
    let body: RuleBody = json_body(&raw)?;
    let view = add_rule(&state, body).await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// `GET /api/alerts` (admin): every rule, oldest first, with its state.
#[utoipa::path(get, path = "/api/alerts", tag = "alerts",
    responses((status = 200, description = "Every rule and its state", body = AlertList), Refusals))]
pub(crate) async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(Json(AlertList { alerts: state.alerts.list().await? }).into_response())
}

/// `DELETE /api/alerts/{id}` (admin): deletes a rule; one that was firing logs
/// `alert.resolved`.
#[utoipa::path(delete, path = "/api/alerts/{id}", tag = "alerts",
    params(("id" = String, Path, description = "Rule id, as GET /api/alerts lists it")),
    responses((status = 200, description = "Deleted", body = Object),
        (status = 404, description = "No such rule"), Refusals))]
pub(crate) async fn delete(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    delete_rule(&state, &id).await?;
    Ok(Json(serde_json::json!({ "id": id, "deleted": true })).into_response())
}

/// Checks `body`, stores it as a new rule and has the evaluator watch it.
///
/// # Errors
/// 400 naming the field, 409 when [`MAX_RULES`] exist, 5xx when the store fails.
pub(crate) async fn add_rule(state: &AppState, body: RuleBody) -> Result<AlertView, ApiError> {
    let rule = body.into_rule(new_rule_id(), chrono::Utc::now().timestamp_millis())?;
    if !state.store.insert_alert_rule(rule.to_record(), MAX_RULES).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "too_many_rules",
            format!("there are {MAX_RULES} alert rules already, the most allowed; delete one first"),
        ));
    }
    tracing::info!(rule_id = %rule.id, name = %rule.name, "alert rule added");
    // The rule is stored: should the evaluator be busy now, it finds the rule on its
    // next re-read, and the answer is the rule as it starts.
    if let Err(e) = state.alerts.reload().await {
        tracing::warn!(error = %e, "the alert evaluator will pick the new rule up on its next re-read");
    }
    let listed = state.alerts.list().await.ok().and_then(|all| all.into_iter().find(|a| a.id == rule.id));
    Ok(listed.unwrap_or_else(|| AlertView::new(&rule)))
}

/// Deletes rule `id` and has the evaluator let it go.
///
/// # Errors
/// 404 when there is no such rule, 5xx when the store fails.
pub(crate) async fn delete_rule(state: &AppState, id: &str) -> Result<(), ApiError> {
    if !state.store.delete_alert_rule(id).await? {
        return Err(ApiError::not_found(format!("no alert rule with id {id:?}")));
    }
    tracing::info!(rule_id = %id, "alert rule deleted");
    if let Err(e) = state.alerts.reload().await {
        tracing::warn!(error = %e, "the alert evaluator will let the rule go on its next re-read");
    }
    Ok(())
}
