//! `/swarm/alerts` (admin): the alert rules with their states, a form to add one and
//! a delete button behind a confirmation step; and the banner `/swarm/live` shows
//! while a rule fires ([`banner`], re-fetched from `/swarm/live/alerts`).
//!
//! The forms post form-encoded to `/swarm/alerts` and `/swarm/alerts/{id}/delete`,
//! which go through the same steps as the JSON API (`http::alerts`) and send the
//! browser back with a 303; a refused rule is shown on the page, naming its field.

use std::collections::HashMap;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};

use super::{PageError, badge, confirm, html_page, is_admin, who};
use crate::alert::AlertView;
use crate::alert::rules::{MAX_ABSENT_SECS, MAX_RULES, MAX_THRESHOLD, MAX_WINDOW_SECS, RuleBody};
use crate::auth::Principal;
use crate::event::parse_timestamp;
use crate::filter::{FilterSpec, split_types};
use crate::http::AppState;
use crate::http::alerts::{add_rule, delete_rule};
use crate::http::error::{ApiBody, ApiError};
use crate::view::event::{clock, query_value};
use crate::view::layout::{Nav, Shell, page};

/// Where the page lives; the forms come back here.
const HERE: &str = "/swarm/alerts";

fn admin_only(principal: &Principal) -> Result<(), PageError> {
    if is_admin(principal) { Ok(()) } else { Err(ApiError::forbidden("alert rules are for admin tokens").into()) }
}

/// `GET /swarm/alerts`.
#[tracing::instrument(skip_all)]
pub(crate) async fn page_handler(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Response, PageError> {
    admin_only(&principal)?;
    render(&state, &principal, None, StatusCode::OK).await
}

/// `POST /swarm/alerts` (a form): adds a rule, then back to the page.
pub(crate) async fn add(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiBody(raw): ApiBody,
) -> Result<Response, PageError> {
    admin_only(&principal)?;
    let added = match body_from_form(&raw) {
        Ok(body) => add_rule(&state, body).await,
        Err(e) => Err(e),
    };
    match added {
        Ok(_) => Ok(Redirect::to(HERE).into_response()),
        Err(e) if e.status.is_client_error() => render(&state, &principal, Some(&e), e.status).await,
        Err(e) => Err(e.into()),
    }
}

/// `POST /swarm/alerts/{id}/delete` (a form): deletes a rule, then back to the page.
pub(crate) async fn remove(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    admin_only(&principal)?;
    delete_rule(&state, &id).await?;
    Ok(Redirect::to(HERE).into_response())
}

/// `GET /swarm/live/alerts`: the banner alone, for the live page to swap in.
pub(crate) async fn banner_handler(State(state): State<AppState>) -> Result<Response, PageError> {
    let alerts = state.alerts.list().await.map_err(ApiError::from)?;
    Ok(html_page(banner(&alerts)))
}

/// The rules firing now, one line each; hidden while none is. Re-fetched when the
/// feed brings an alert event (`live.js` fires `sf:alert`) and every few seconds, so
/// it follows even a feed whose filter leaves alert events out.
pub(crate) fn banner(alerts: &[AlertView]) -> Markup {
    let firing: Vec<&AlertView> = alerts.iter().filter(|a| a.state == crate::alert::AlertState::Firing).collect();
    html! {
        section #alert-banner .alert-banner role="status" aria-label="Alerts firing" hidden[firing.is_empty()]
            hx-get="/swarm/live/alerts" hx-trigger="sf:alert from:body, every 5s" hx-swap="outerHTML" {
            @for a in &firing {
                p.alert-banner-item data-rule=(a.id) {
                    span aria-hidden="true" { "🚨 " }
                    strong { "Alert: " (a.name) }
                    " · " (a.condition)
                    @if let Some(count) = a.count { " · " (count) " now" }
                    @if let Some(since) = a.since.as_deref().and_then(parse_timestamp) {
                        " · since " time datetime=(a.since.as_deref().unwrap_or_default()) data-ts=(since) { (clock(since)) }
                    }
                }
            }
        }
    }
}

/// The page, with `error` shown above the form when a rule was refused.
async fn render(
    state: &AppState,
    principal: &Principal,
    error: Option<&ApiError>,
    status: StatusCode,
) -> Result<Response, PageError> {
    let alerts = state.alerts.list().await.map_err(ApiError::from)?;
    let body = html! {
        header.page-head {
            h1.page-title { "Alerts" }
            span.muted { (alerts.len()) " of at most " (MAX_RULES) " rules" }
        }
        div.detail-grid {
            div.detail-side { (form(error)) }
            div.detail-main { (rules(&alerts)) }
        }
    };
    let shell = Shell { title: "Alerts", nav: Nav::Alerts, user: Some(who(principal)), chart: false, admin: true };
    let mut response = html_page(page(&shell, &body));
    *response.status_mut() = status;
    Ok(response)
}

fn rules(alerts: &[AlertView]) -> Markup {
    html! {
        section.panel aria-labelledby="rules-title" {
            h2 #rules-title { "Rules" }
            @if alerts.is_empty() {
                p.muted { "No rule yet. A rule fires when enough matching events come in a window, or none for a while." }
            }
            ul.alert-rules {
                @for a in alerts {
                    li.alert-rule data-rule=(a.id) data-state=(a.state.as_str()) {
                        div.alert-rule-head {
                            strong.alert-name { (a.name) }
                            (badge(a.state.as_str()))
                        }
                        p.muted {
                            (a.condition) " · " (filter_text(&a.filter))
                            @if let Some(count) = a.count { " · " (count) " in the window now" }
                            @if let Some(since) = a.since.as_deref().and_then(parse_timestamp) {
                                " · " (a.state.as_str()) " since " time datetime=(a.since.as_deref().unwrap_or_default()) data-ts=(since) { (clock(since)) }
                            }
                        }
                        p.muted { a href=(events_href(&a.id)) { "Its alert events →" } }
                        (confirm(&format!("{HERE}/{}/delete", query_value(&a.id)), "Delete",
                            &format!("Delete the rule {:?}? A firing rule logs its resolution.", a.name),
                            "Yes, delete it", false))
                    }
                }
            }
        }
    }
}

/// `/swarm/events` showing rule `id`'s alert events.
fn events_href(id: &str) -> String {
    format!("/swarm/events?source={}", query_value(&crate::alert::rules::source_of(id)))
}

fn filter_text(f: &FilterSpec) -> String {
    let mut parts = Vec::new();
    if !f.types.is_empty() {
        parts.push(f.types.join(", "));
    }
    for (name, value) in [("task", &f.task_id), ("agent", &f.agent_id), ("source", &f.source)] {
        if let Some(v) = value {
            parts.push(format!("{name} {v}"));
        }
    }
    if parts.is_empty() { "every event".to_owned() } else { parts.join(" · ") }
}

fn form(error: Option<&ApiError>) -> Markup {
    html! {
        section.panel aria-labelledby="add-title" {
            h2 #add-title { "Add a rule" }
            @if let Some(e) = error {
                p.bad role="alert" data-field=[e.field.as_deref()] { (e.message) }
            }
            form.alert-form method="post" action=(HERE) {
                label { "Name " input type="text" name="name" required maxlength="128" placeholder="Echo went silent"; }
                fieldset {
                    legend { "Which events" }
                    label { "Types " input type="text" name="types" placeholder="task.failed, agent.*"; }
                    label { "Task " input type="text" name="task_id"; }
                    label { "Agent " input type="text" name="agent_id" placeholder="echo"; }
                    label { "Source " input type="text" name="source"; }
                }
                fieldset {
                    legend { "Fires when" }
                    label.choice { input type="radio" name="kind" value="threshold" checked; " at least" }
                    div.inline {
                        input type="number" name="threshold" min="1" max=(MAX_THRESHOLD) aria-label="how many events";
                        " events in "
                        input type="number" name="window_secs" min="1" max=(MAX_WINDOW_SECS) aria-label="window, seconds";
                        " s"
                    }
                    label.choice { input type="radio" name="kind" value="absence"; " none for" }
                    div.inline {
                        input type="number" name="absent_secs" min="1" max=(MAX_ABSENT_SECS) aria-label="silence, seconds";
                        " s"
                    }
                }
                button.btn type="submit" { "Add rule" }
            }
        }
    }
}

/// A rule from the page's form: `kind` says which numbers count; empty fields are
/// not given, as an empty text box means.
fn body_from_form(raw: &[u8]) -> Result<RuleBody, ApiError> {
    let mut fields: HashMap<String, String> = HashMap::new();
    for (name, value) in form_urlencoded::parse(raw) {
        let value = value.trim();
        if !value.is_empty() {
            fields.insert(name.into_owned(), value.to_owned());
        }
    }
    let number = |field: &str| -> Result<Option<u64>, ApiError> {
        fields
            .get(field)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    ApiError::bad_request("invalid_body", format!("{field}: must be a whole number, not {v:?}"))
                        .with_field(field)
                })
            })
            .transpose()
    };
    let mut body = RuleBody {
        name: fields.get("name").cloned().unwrap_or_default(),
        filter: FilterSpec {
            types: fields.get("types").map(|t| split_types(t)).unwrap_or_default(),
            task_id: fields.get("task_id").cloned(),
            agent_id: fields.get("agent_id").cloned(),
            source: fields.get("source").cloned(),
        },
        ..RuleBody::default()
    };
    match fields.get("kind").map_or("threshold", String::as_str) {
        "threshold" => {
            body.threshold = number("threshold")?;
            body.window_secs = number("window_secs")?;
        }
        "absence" => body.absent_secs = number("absent_secs")?,
        other => {
            return Err(ApiError::bad_request(
                "invalid_body",
                format!("kind: {other:?} is neither threshold nor absence"),
            )
            .with_field("kind"));
        }
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_becomes_the_rule_its_kind_names() {
        let body =
            body_from_form(b"name=quiet&types=agent.*,+task.failed&kind=absence&threshold=9&absent_secs=30").unwrap();
        assert_eq!((body.absent_secs, body.threshold), (Some(30), None), "the threshold box is not this kind's");
        assert_eq!(body.filter.types, ["agent.*", "task.failed"]);
        let bad = body_from_form(b"name=x&kind=threshold&threshold=many").unwrap_err();
        assert_eq!(bad.field.as_deref(), Some("threshold"));
    }

    #[test]
    fn the_banner_shows_only_firing_rules_escaped() {
        let view = |id: &str, state| AlertView {
            id: id.into(),
            name: "<b>x</b>".into(),
            filter: FilterSpec::default(),
            threshold: None,
            window_secs: None,
            absent_secs: Some(5),
            condition: "none for 5 s".into(),
            created_at: String::new(),
            state,
            since: None,
            count: None,
            last_match_at: None,
            firing_no: 1,
        };
        let quiet = banner(&[view("a", crate::alert::AlertState::Ok)]).into_string();
        assert!(quiet.contains("hidden") && !quiet.contains("data-rule"), "{quiet}");
        let loud = banner(&[view("b", crate::alert::AlertState::Firing)]).into_string();
        assert!(
            loud.contains(r#"data-rule="b""#) && loud.contains("&lt;b&gt;x") && !loud.contains(" hidden"),
            "{loud}"
        );
    }
}
