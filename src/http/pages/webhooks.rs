//! `/swarm/webhooks` (admins only): every webhook with where it sends, what, how far
//! behind it is, and whether it is failing (its last status and error, and for how
//! long). Creating and removing them is the API's and the CLI's
//! (`swarmfeed webhook add|rm`); this page shows the state of delivery.

use axum::Extension;
use axum::extract::State;
use axum::response::Response;
use maud::html;

use super::{PageError, badge, html_page, human_duration, is_admin, who};
use crate::auth::Principal;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::store::WebhookRecord;
use crate::view::layout::{Nav, Shell, page};
use crate::webhook::WebhookView;

/// `GET /swarm/webhooks`.
#[tracing::instrument(skip_all)]
pub(crate) async fn page_handler(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Response, PageError> {
    if !is_admin(&principal) {
        return Err(ApiError::forbidden("the webhooks are for admin tokens only").into());
    }
    let head = state.hub.head();
    let records = state.store.list_webhooks().await?;
    let now = chrono::Utc::now().timestamp_millis();
    let body = html! {
        header.page-head {
            h1.page-title { "Webhooks" }
            span.muted { (records.len()) " · log head " (head) }
        }
        @if records.is_empty() {
            section.panel {
                p.muted { "No webhooks. Add one with " code { "swarmfeed webhook add URL" } " or POST /api/webhooks." }
            }
        }
        @for record in &records {
            (card(record, &WebhookView::of(record, head), now))
        }
    };
    let shell = Shell { title: "Webhooks", nav: Nav::Webhooks, user: Some(who(&principal)), admin: true, chart: false };
    Ok(html_page(page(&shell, &body)))
}

/// One webhook as a panel of facts: it reads on a phone as well as on a wide screen.
fn card(record: &WebhookRecord, view: &WebhookView, now_ms: i64) -> maud::Markup {
    let failing_for = record.failing_since_ms.map(|since| human_duration(now_ms - since));
    let state = if failing_for.is_some() { "failing" } else { "healthy" };
    let filter = match &view.filter {
        serde_json::Value::Object(o) if !o.is_empty() => view.filter.to_string(),
        _ => "every event".to_owned(),
    };
    html! {
        section.panel.webhook id={ "webhook-" (view.id) } data-state=(state) {
            h2 { code { (view.id) } " " (badge(state)) }
            dl.facts {
                dt { "URL" } dd.webhook-url { (view.url) }
                dt { "Filter" } dd { code { (filter) } }
                dt { "Format" } dd { (view.format) }
                dt { "Delivered up to" } dd { "seq " (view.delivered_seq) }
                dt { "Lag" } dd.webhook-lag { (view.lag) " events" }
                dt { "Last status" } dd.webhook-status {
                    @match view.last_status { Some(s) => (s), None => span.muted { "none yet" } }
                }
                @if let Some(error) = &view.last_error {
                    dt { "Last error" } dd.webhook-error role="status" { (error) }
                }
                @if let Some(failing) = failing_for {
                    dt { "Failing for" } dd.webhook-failing { (failing) }
                }
                @if let Some(at) = &view.last_attempt {
                    dt { "Last attempt" } dd { time datetime=(at) { (at) } }
                }
            }
        }
    }
}
