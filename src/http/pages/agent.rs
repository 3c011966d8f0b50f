//! `/swarm/agents/{id}`: one agent: status, capabilities, tasks done and failed, sats
//! earned, and its history of events, newest first, growing live.
//!
//! The figures come from the projection while the agent is in it (it keeps the
//! current swarm and the latest offline agents); the history always comes from the log.

use axum::Extension;
use axum::extract::{Path, State};
use axum::response::Response;
use maud::html;

use super::live::{Feed, FeedOrder, feed};
use super::{PageError, badge, confirm, html_page, is_admin, may_act, swarm_agent, up_to_head, who};
use crate::auth::Principal;
use crate::event::format_timestamp;
use crate::filter::{Filter, FilterSpec};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::store::Order;
use crate::swarm::projection::AgentStatus;
use crate::view::event::{Detail, agent_href, clock, query_value, task_href};
use crate::view::layout::{Nav, Shell, page};

/// History rows shown; older ones are in the event log.
const HISTORY_ROWS: usize = 100;

/// `GET /swarm/agents/{id}`.
#[tracing::instrument(skip_all, fields(agent_id = %agent_id))]
pub(crate) async fn page_handler(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(agent_id): Path<String>,
) -> Result<Response, PageError> {
    let filter = Filter::from_spec(FilterSpec { agent_id: Some(agent_id.clone()), ..FilterSpec::default() })?;
    let (since, events) = up_to_head(&state, filter, Order::Desc, HISTORY_ROWS).await?;
    let agent = swarm_agent(&state, &agent_id).await?;
    let agent = agent.as_ref();
    if events.is_empty() && agent.is_none() {
        return Err(ApiError::not_found(format!("no event mentions agent {agent_id:?}")).into());
    }
    let name = agent.map_or(agent_id.as_str(), |a| a.name.as_str());
    let log_link = format!("/swarm/events?agent_id={}", query_value(&agent_id));
    let history = feed(&Feed {
        title: "History",
        since,
        query: format!("agent_id={}", query_value(&agent_id)),
        order: FeedOrder::NewestFirst,
        events: &events,
        detail: Detail::Compact,
        chips: None,
        footer: Some(html! { a.more href=(log_link) { "All events of this agent →" } }),
    });
    let body = html! {
        header.page-head {
            p.crumbs { a href="/swarm/live" { "Live" } " / agent " code { (agent_id) } }
            h1.page-title { (name) }
            @if let Some(a) = agent { (badge(a.status.as_str())) } @else { (badge("unknown")) }
        }
        div.detail-grid {
            div.detail-side {
                @if let Some(a) = agent.filter(|a| a.status != AgentStatus::Offline && may_act(&principal)) {
                    section.panel.actions aria-labelledby="actions-title" {
                        h2 #actions-title { "Actions" }
                        (confirm(&format!("{}/remove", agent_href(&a.agent_id)), "Remove agent",
                            "Remove this agent from the swarm? It goes offline and the tasks it holds fail.",
                            "Yes, remove the agent", false))
                    }
                }
                section.panel aria-labelledby="earnings-title" {
                    h2 #earnings-title { "Earnings" }
                    @if let Some(a) = agent {
                        div.tiles.tiles--small {
                            div.tile { span.tile-value { (a.sats_earned) } span.tile-label { "sats earned" } }
                            div.tile { span.tile-value { (a.tasks_completed) } span.tile-label { "tasks done" } }
                            div.tile { span.tile-value { (a.tasks_failed) } span.tile-label { "tasks failed" } }
                        }
                        dl.facts {
                            dt { "Joined" } dd { time datetime=(format_timestamp(a.joined_ms)) data-ts=(a.joined_ms) { (clock(a.joined_ms)) } }
                            dt { "Last seen" } dd { time datetime=(format_timestamp(a.last_seen_ms)) data-ts=(a.last_seen_ms) { (clock(a.last_seen_ms)) } }
                            @if !a.capabilities.is_empty() {
                                dt { "Can" } dd { @for c in &a.capabilities { span.tag { (c) } " " } }
                            }
                            @if !a.current_tasks.is_empty() {
                                dt { "Working on" }
                                dd { @for t in &a.current_tasks { a href=(task_href(t)) { (t) } " " } }
                            }
                        }
                    } @else {
                        p.muted { "This agent is not in the current swarm; its history is below." }
                    }
                }
            }
            div.detail-main { (history) }
        }
    };
    let shell = Shell {
        title: &format!("Agent {name}"),
        nav: Nav::Other,
        user: Some(who(&principal)),
        admin: is_admin(&principal),
        chart: false,
    };
    Ok(html_page(page(&shell, &body)))
}
