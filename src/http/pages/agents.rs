//! `/swarm/agents`: the agent board (DESIGN §10): every agent with its status,
//! capabilities, tasks done and failed, sats earned and when it was last seen, by
//! status in tabs, a page at a time. `/swarm/board/agents` is the board alone, which
//! the page re-fetches (htmx) when its feed of agent events brings one.
//!
//! Reads the store's board through [`crate::http::boards`], as `GET /api/agents` does.

use axum::Extension;
use axum::extract::State;
use axum::response::Response;
use maud::{Markup, html};

use super::live::{Feed, FeedOrder, feed};
use super::{PageError, badge, html_page, is_admin, up_to_head, who};
use crate::auth::Principal;
use crate::filter::{Filter, FilterSpec};
use crate::http::AppState;
use crate::http::boards::{AgentPage, AgentParams, agent_page};
use crate::http::error::ApiQuery;
use crate::store::Order;
use crate::store::board::{AgentQuery, BoardAgentStatus};
use crate::view::event::{Detail, agent_href, clock, query_value};
use crate::view::layout::{Nav, Shell, page};

/// Agent events the side feed starts with.
const FEED_ROWS: usize = 20;

/// The event types whose arrival changes the agent board.
const AGENT_TYPES: &str = "agent.*,task.assigned,task.completed,task.failed,task.cancelled";

/// `GET /swarm/agents`.
#[tracing::instrument(skip_all)]
pub(crate) async fn page_handler(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiQuery(p): ApiQuery<AgentParams>,
) -> Result<Response, PageError> {
    let q = p.query()?;
    let board = board(&state, &q).await?;
    let types = Filter::from_spec(FilterSpec {
        types: AGENT_TYPES.split(',').map(str::to_owned).collect(),
        ..FilterSpec::default()
    })?;
    let (since, events) = up_to_head(&state, types, Order::Desc, FEED_ROWS).await?;
    let activity = feed(&Feed {
        title: "Agent activity",
        since,
        // Task events change what agents are doing and earning: the board follows them
        // too.
        query: format!("types={}", query_value(AGENT_TYPES)),
        order: FeedOrder::NewestFirst,
        events: &events,
        detail: Detail::Compact,
        chips: None,
        footer: Some(
            html! { a.more href=(format!("/swarm/events?types={}", query_value(AGENT_TYPES))) { "All of these events →" } },
        ),
    });
    let body = html! {
        header.page-head { h1.page-title { "Agents" } }
        div.live-grid {
            div.live-main { (board) }
            div.live-side { (activity) }
        }
    };
    let shell = Shell {
        title: "Agents",
        nav: Nav::Agents,
        user: Some(who(&principal)),
        chart: false,
        admin: is_admin(&principal),
    };
    Ok(html_page(page(&shell, &body)))
}

/// `GET /swarm/board/agents`: the tabs and the table alone, for the page to re-fetch.
pub(crate) async fn board_fragment(
    State(state): State<AppState>,
    ApiQuery(p): ApiQuery<AgentParams>,
) -> Result<Response, PageError> {
    let q = p.query()?;
    Ok(html_page(board(&state, &q).await?))
}

fn href(path: &str, status: Option<BoardAgentStatus>, after: Option<&str>) -> String {
    let mut parts = Vec::new();
    if let Some(s) = status {
        parts.push(format!("status={}", s.as_str()));
    }
    if let Some(a) = after {
        parts.push(format!("after={}", query_value(a)));
    }
    if parts.is_empty() { path.to_owned() } else { format!("{path}?{}", parts.join("&")) }
}

async fn board(state: &AppState, q: &AgentQuery) -> Result<Markup, PageError> {
    let AgentPage { agents, next } = agent_page(state, q.clone()).await?;
    let fragment = href("/swarm/board/agents", q.status, q.after.as_deref());
    Ok(html! {
        div #agent-board hx-get=(fragment) hx-trigger="sf:swarm from:body, every 15s" hx-swap="outerHTML" {
            nav.chips.tabs aria-label="Agents by status" {
                a.chip href="/swarm/agents" aria-current=[q.status.is_none().then_some("page")] { "All" }
                @for s in BoardAgentStatus::ALL {
                    a.chip href=(href("/swarm/agents", Some(s), None)) aria-current=[(q.status == Some(s)).then_some("page")] {
                        (s.as_str())
                    }
                }
            }
            section.panel aria-labelledby="agents-board-title" {
                h2 #agents-board-title { "Agents" }
                @if agents.is_empty() {
                    p.muted { "No agent here." }
                } @else {
                    div.table-scroll {
                        table.board-table {
                            thead {
                                tr {
                                    th { "Agent" } th { "Status" } th { "Can" }
                                    th.num { "Done" } th.num { "Failed" } th.num { "Sats" } th { "Last seen" }
                                }
                            }
                            tbody {
                                @for a in &agents {
                                    tr data-agent=(a.agent_id) {
                                        td { a href=(agent_href(&a.agent_id)) { (a.name) } }
                                        td { (badge(a.status.as_str())) }
                                        td { @for c in &a.capabilities { span.tag { (c) } " " } }
                                        td.num { (a.tasks_done) }
                                        td.num { (a.tasks_failed) }
                                        td.num { (a.sats_earned) }
                                        td {
                                            @if let Some(ms) = crate::event::parse_timestamp(&a.last_seen) {
                                                time datetime=(a.last_seen) data-ts=(ms) { (clock(ms)) }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                nav.pager aria-label="Pages" {
                    @if q.after.is_some() {
                        a.btn href=(href("/swarm/agents", q.status, None)) { "← First" }
                    }
                    @if let Some(next) = &next {
                        a.btn href=(href("/swarm/agents", q.status, Some(next))) rel="next" { "Next →" }
                    }
                }
            }
        }
    })
}
