//! The dashboard's pages (DESIGN §4, §10, §11): `/swarm/live`, `/swarm/events`, the
//! boards `/swarm/tasks` and `/swarm/agents`, `/swarm/tasks/{id}`, `/swarm/agents/{id}`
//! and, for admins, `/swarm/alerts` and `/swarm/webhooks`,
//! rendered on the server with maud.
//!
//! Pages read what the JSON API reads (the store, the coordinator's projection) and
//! render it with [`crate::view`]; the live parts then follow the log over `/ws/html`
//! (or SSE, or long-poll) through `assets/live.js`. A browser without a session is sent
//! to `/login` ([`require_session`]); the API keeps answering 401 JSON.

pub(crate) mod agent;
pub(crate) mod agents;
pub(crate) mod alerts;
pub(crate) mod live;
pub(crate) mod log;
pub(crate) mod task;
pub(crate) mod tasks;
pub(crate) mod webhooks;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::{Markup, html};

use super::AppState;
use super::auth::authenticate;
use super::error::ApiError;
use crate::auth::{Principal, Scope};
use crate::event::Event;
use crate::filter::Filter;
use crate::filter::FilterError;
use crate::store::{Order, Query as StoreQuery, StoreError};
use crate::swarm::coordinator::CommandError;
use crate::swarm::rules::Rejected;
use crate::swarm::snapshot::{AgentView, SwarmPage, SwarmSnapshot};
use crate::view::layout::{Nav, Shell, page};

/// Middleware for pages: like `auth::require` for `read`, but a browser without a
/// valid session is sent to the login form (303) rather than answered 401, and an
/// htmx request is told to go there with `HX-Redirect`.
pub(crate) async fn require_session(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    match authenticate(&state, request.headers()).await {
        Ok(principal) if principal.may(Scope::Read) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Ok(_) => PageError(ApiError::forbidden("this token may not read the feed")).into_response(),
        Err(e) if e.status == StatusCode::UNAUTHORIZED => {
            let here = request.uri().path_and_query().map_or("/swarm/live", |p| p.as_str());
            let login = format!("/login?next={}", crate::view::event::query_value(here));
            if request.headers().contains_key("hx-request") {
                let mut response = StatusCode::UNAUTHORIZED.into_response();
                if let Ok(v) = HeaderValue::from_str(&login) {
                    response.headers_mut().insert("hx-redirect", v);
                }
                return response;
            }
            Redirect::to(&login).into_response()
        }
        Err(e) => PageError(e).into_response(),
    }
}

/// `GET /`: the live page.
pub(crate) async fn root() -> Redirect {
    Redirect::to("/swarm/live")
}

/// An error shown as a page, not as JSON: a browser is reading.
#[derive(Debug)]
pub(crate) struct PageError(pub ApiError);

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        PageError(e)
    }
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> Self {
        PageError(e.into())
    }
}

impl From<FilterError> for PageError {
    fn from(e: FilterError) -> Self {
        PageError(e.into())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let e = self.0;
        let body = html! {
            section.panel.page-error {
                h1 { (e.status.as_u16()) " · " (e.status.canonical_reason().unwrap_or("error")) }
                p role="alert" { (e.message) }
                p { a href="/swarm/live" { "Back to the live view" } }
            }
        };
        // Who is signed in is not known here; the header keeps its links, without a name.
        let shell = Shell { title: "Error", nav: Nav::Other, user: Some(""), chart: false, admin: false };
        let mut response = (e.status, Html(page(&shell, &body).into_string())).into_response();
        if let Some(secs) = e.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// An HTML response.
fn html_page(markup: Markup) -> Response {
    Html(markup.into_string()).into_response()
}

/// The name shown in the header for who is signed in.
fn who(principal: &Principal) -> &str {
    &principal.name
}

/// An operator's action behind a confirmation step that needs no script: a
/// disclosure whose summary names the action and whose body asks the question and
/// holds the form with the real submit button. The form posts form-encoded to the
/// coordinator's endpoint `action`, which sends the browser back with a 303.
fn confirm(action: &str, label: &str, question: &str, yes: &str, reason: bool) -> Markup {
    html! {
        details.confirm {
            summary.btn { (label) "…" }
            form method="post" action=(action) {
                p { (question) }
                @if reason {
                    label { "Reason (optional) " input type="text" name="reason" maxlength="2000"; }
                }
                button.danger type="submit" { (yes) }
            }
        }
    }
}

/// Whether `principal` may administer: the header links to the admin pages.
fn is_admin(principal: &Principal) -> bool {
    principal.may(Scope::Admin)
}

/// Whether `principal` may act on the swarm: read-scope viewers see no actions.
fn may_act(principal: &Principal) -> bool {
    principal.may(Scope::Write)
}

/// A form field: browsers send empty inputs as `name=`, which means "not given".
fn given(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

/// The head, and up to `limit` events matching `filter` at or before it: what a page
/// renders before it follows the log live from that same head, so nothing is shown
/// twice or skipped between the two.
async fn up_to_head(
    state: &AppState,
    filter: Filter,
    order: Order,
    limit: usize,
) -> Result<(u64, Vec<std::sync::Arc<Event>>), StoreError> {
    let head = state.hub.head();
    let events =
        state.store.query(StoreQuery { filter, before: Some(head + 1), order, limit, ..StoreQuery::default() }).await?;
    Ok((head, events))
}

/// The first page of the swarm: what the live page shows.
async fn swarm(state: &AppState) -> Result<SwarmSnapshot, PageError> {
    Ok(state.coordinator.snapshot(SwarmPage::default()).await.map_err(ApiError::from)?)
}

/// One agent as the projection has it, or `None` when it is not there.
async fn swarm_agent(state: &AppState, agent_id: &str) -> Result<Option<AgentView>, PageError> {
    match state.coordinator.agent(agent_id.to_owned()).await {
        Ok(agent) => Ok(Some(agent)),
        Err(CommandError::Rejected(Rejected::NotFound(_))) => Ok(None),
        Err(e) => Err(PageError(e.into())),
    }
}

/// A status badge (`idle`, `busy`, `offline`, `bidding`, `completed`, …).
fn badge(status: &str) -> Markup {
    html! { span class={ "badge badge--" (status) } { (status) } }
}

/// "12 s", "4 min", "2 h 5 min": a duration for people.
fn human_duration(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_people_say_them() {
        assert_eq!(human_duration(12_400), "12 s");
        assert_eq!(human_duration(125_000), "2 min 5 s");
        assert_eq!(human_duration(7_500_000), "2 h 5 min");
        assert_eq!(human_duration(-5), "0 s");
    }

    #[test]
    fn empty_form_fields_are_not_given() {
        assert_eq!(given(Some("  ".into())), None);
        assert_eq!(given(Some(" t1 ".into())), Some("t1".into()));
    }
}
