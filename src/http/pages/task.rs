//! `/swarm/tasks/{id}`: one task's story, read from its events: what it was, its
//! bids with amounts and the winner, how long each stage took, and its whole
//! timeline, which keeps growing live.
//!
//! Read from the log rather than the projection, so a task the projection has let go
//! of (it keeps the latest finished ones only) still has its page.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, State};
use axum::response::Response;
use maud::{Markup, html};

use super::live::{Feed, FeedOrder, feed};
use super::{PageError, badge, confirm, html_page, human_duration, is_admin, may_act, up_to_head, who};
use crate::auth::Principal;
use crate::event::Event;
use crate::filter::Filter;
use crate::http::AppState;
use crate::http::boards::board_caught_up;
use crate::http::error::ApiError;
use crate::store::Order;
use crate::store::board::TaskQuery;
use crate::swarm::events::{SwarmEvent, ToolStatus, result_text};
use crate::view::event::{Detail, agent_href, clock, query_value, task_href};
use crate::view::layout::{Nav, Shell, page};

/// Events of one task shown; a task with more links to the log for the rest.
const MAX_TIMELINE: usize = 1000;
/// Retries of one task its page links to, newest first.
const MAX_RETRIES: usize = 20;

/// What the events of one task say about it.
#[derive(Debug, Default, PartialEq)]
struct Story {
    description: Option<String>,
    status: &'static str,
    /// The failed or cancelled task this one retries.
    retry_of: Option<String>,
    created_ms: Option<i64>,
    closes_ms: Option<i64>,
    closed_ms: Option<i64>,
    assigned_ms: Option<i64>,
    started_ms: Option<i64>,
    finished_ms: Option<i64>,
    winner: Option<String>,
    winning_bid: Option<u64>,
    reason: Option<String>,
    result: Option<String>,
    /// (agent, sats, time), in the order they came.
    bids: Vec<(String, u64, i64)>,
    tool_calls: u64,
}

fn story(events: &[Arc<Event>]) -> Story {
    let mut s = Story { status: "unknown", ..Story::default() };
    for e in events {
        let at = Some(e.ts_ms);
        let Some(event) = SwarmEvent::decode(e) else { continue };
        match event {
            SwarmEvent::TaskCreated { description, retry_of, .. } => {
                s.description = Some(description).filter(|d| !d.is_empty());
                s.retry_of = retry_of;
                s.created_ms = at;
                s.status = "created";
            }
            SwarmEvent::TaskBidding { closes_ms, .. } => {
                s.closes_ms = closes_ms;
                s.status = "bidding";
            }
            SwarmEvent::BidSubmitted { agent_id, bid_sats, .. } => s.bids.push((agent_id, bid_sats, e.ts_ms)),
            SwarmEvent::AuctionClosed { .. } => s.closed_ms = at,
            SwarmEvent::TaskAssigned { agent_id, bid_sats, .. } => {
                s.winner = Some(agent_id);
                s.winning_bid = bid_sats;
                s.assigned_ms = at;
                s.status = "assigned";
            }
            SwarmEvent::TaskStarted { .. } => {
                s.started_ms = at;
                s.status = "started";
            }
            SwarmEvent::TaskCompleted { result, .. } => {
                s.finished_ms = at;
                s.result = result.map(result_text);
                s.status = "completed";
            }
            SwarmEvent::TaskFailed { reason, .. } => {
                s.finished_ms = at;
                s.reason = Some(reason);
                s.status = "failed";
            }
            SwarmEvent::TaskCancelled { reason, .. } => {
                s.finished_ms = at;
                s.reason = Some(reason);
                s.status = "cancelled";
            }
            SwarmEvent::Tool { status: ToolStatus::Called, .. } => s.tool_calls += 1,
            _ => {}
        }
    }
    s
}

/// `GET /swarm/tasks/{id}`.
#[tracing::instrument(skip_all, fields(task_id = %task_id))]
pub(crate) async fn page_handler(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(task_id): Path<String>,
) -> Result<Response, PageError> {
    let (since, events) = up_to_head(&state, Filter::task(task_id.clone()), Order::Asc, MAX_TIMELINE).await?;
    if events.is_empty() {
        return Err(ApiError::not_found(format!("no event mentions task {task_id:?}")).into());
    }
    let s = story(&events);
    // Its retries are other tasks: the board, which keeps `retry_of`, knows them.
    board_caught_up(&state).await;
    let retries = state
        .store
        .list_tasks(TaskQuery { retry_of: Some(task_id.clone()), limit: MAX_RETRIES, ..TaskQuery::default() })
        .await?;
    let retries: Vec<String> = retries.into_iter().map(|t| t.task_id).collect();
    let title = s.description.clone().unwrap_or_else(|| task_id.clone());
    let timeline = feed(&Feed {
        title: "Timeline",
        since,
        query: format!("task_id={}", query_value(&task_id)),
        order: FeedOrder::OldestFirst,
        events: &events,
        detail: Detail::Full,
        chips: None,
        footer: (events.len() == MAX_TIMELINE).then(|| {
            html! { a.more href=(format!("/swarm/events?task_id={}", query_value(&task_id))) { "All events of this task →" } }
        }),
    });
    let body = html! {
        header.page-head {
            p.crumbs { a href="/swarm/live" { "Live" } " / task " code { (task_id) } }
            h1.page-title { (title) }
            (badge(s.status))
        }
        div.detail-grid {
            div.detail-side {
                @if may_act(&principal) { (actions(&task_id, &s)) }
                (facts(&s, &retries))
                (bids(&s))
            }
            div.detail-main { (timeline) }
        }
    };
    let shell = Shell {
        title: &format!("Task {task_id}"),
        nav: Nav::Other,
        user: Some(who(&principal)),
        chart: false,
        admin: is_admin(&principal),
    };
    Ok(html_page(page(&shell, &body)))
}

/// What the events say, and `retries`, the tasks that retry this one, newest first.
fn facts(s: &Story, retries: &[String]) -> Markup {
    let span = |from: Option<i64>, to: Option<i64>| from.zip(to).map(|(a, b)| human_duration(b - a));
    html! {
        section.panel aria-labelledby="facts-title" {
            h2 #facts-title { "Facts" }
            dl.facts {
                @if let Some(original) = &s.retry_of { dt { "Retry of" } dd { a href=(task_href(original)) { (original) } } }
                @if !retries.is_empty() {
                    dt { "Retried as" }
                    dd.retries { @for (i, r) in retries.iter().enumerate() { @if i > 0 { ", " } a href=(task_href(r)) { (r) } } }
                }
                @if let Some(t) = s.created_ms { dt { "Posted" } dd { time datetime=(crate::event::format_timestamp(t)) data-ts=(t) { (clock(t)) } } }
                @if let Some(w) = &s.winner {
                    dt { "Winner" }
                    dd { a href=(agent_href(w)) { (w) } @if let Some(b) = s.winning_bid { " for " strong { (b) " sats" } } }
                }
                @if let Some(d) = span(s.created_ms, s.closed_ms.or(s.assigned_ms)) { dt { "Bidding took" } dd { (d) } }
                @if let Some(d) = span(s.assigned_ms, s.started_ms) { dt { "Waited to start" } dd { (d) } }
                @if let Some(d) = span(s.started_ms, s.finished_ms) { dt { "Work took" } dd { (d) } }
                @if let Some(d) = span(s.created_ms, s.finished_ms) { dt { "In all" } dd { (d) } }
                dt { "Tool calls" } dd { (s.tool_calls) }
                @if let Some(r) = &s.result { dt { "Result" } dd { (r) } }
                @if let Some(r) = &s.reason {
                    dt { @if s.status == "cancelled" { "Cancelled because" } @else { "Failed because" } }
                    dd.bad { (r) }
                }
            }
        }
    }
}

/// What an operator may do to the task in its state: close its auction now while it
/// takes bids, cancel it before it finishes, retry it once it failed or was cancelled.
fn actions(task_id: &str, s: &Story) -> Markup {
    let close = s.status == "bidding" && s.closed_ms.is_none();
    let cancel = matches!(s.status, "created" | "bidding" | "assigned" | "started");
    let retry = matches!(s.status, "failed" | "cancelled");
    if !(close || cancel || retry) {
        return html! {};
    }
    let href = task_href(task_id);
    html! {
        section.panel.actions aria-labelledby="actions-title" {
            h2 #actions-title { "Actions" }
            @if close {
                (confirm(&format!("{href}/close"), "Close auction now",
                    "Close the auction now? The lowest bid so far wins; without a bid the task fails.",
                    "Yes, close the auction", false))
            }
            @if cancel {
                (confirm(&format!("{href}/cancel"), "Cancel task",
                    "Cancel this task? Its auction closes without a winner and its agent stops working on it.",
                    "Yes, cancel the task", true))
            }
            @if retry {
                (confirm(&format!("{href}/retry"), "Retry",
                    "Post this task again as a new task with the same description?", "Yes, retry it", false))
            }
        }
    }
}

fn bids(s: &Story) -> Markup {
    let mut bids: Vec<&(String, u64, i64)> = s.bids.iter().collect();
    bids.sort_by_key(|(_, sats, at)| (*sats, *at));
    html! {
        section.panel aria-labelledby="bids-title" {
            h2 #bids-title { "Bids (" (bids.len()) ")" }
            @if bids.is_empty() { p.muted { "No bids." } }
            @else {
                table.bids-table {
                    thead { tr { th { "Agent" } th.num { "Sats" } th { "At" } } }
                    tbody {
                        @for (agent, sats, at) in bids {
                            @let won = s.winner.as_deref() == Some(agent.as_str()) && s.winning_bid == Some(*sats);
                            tr class=[won.then_some("winner")] {
                                td { a href=(agent_href(agent)) { (agent) } @if won { " 🏆" } }
                                td.num { (sats) }
                                td { time datetime=(crate::event::format_timestamp(*at)) data-ts=(at) { (clock(*at)) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventParts;

    fn ev(seq: u64, t: &str, agent: Option<&str>, ts_ms: i64, data: &str) -> Arc<Event> {
        Arc::new(
            Event::encode(EventParts {
                seq,
                id: "i",
                event_type: t,
                source: "c",
                task_id: Some("t1"),
                agent_id: agent,
                ts_ms,
                data,
            })
            .unwrap(),
        )
    }

    #[test]
    fn a_task_story_follows_its_events() {
        let events = vec![
            ev(1, "task.created", None, 0, r#"{"description":"sort"}"#),
            ev(2, "task.bidding", None, 0, "{}"),
            ev(3, "bid.submitted", Some("a"), 1_000, r#"{"bid_sats":30}"#),
            ev(4, "bid.submitted", Some("b"), 2_000, r#"{"bid_sats":20}"#),
            ev(5, "auction.closed", None, 15_000, "{}"),
            ev(6, "task.assigned", Some("b"), 15_000, r#"{"bid_sats":20}"#),
            ev(7, "task.started", Some("b"), 16_000, "{}"),
            ev(8, "tool.called", Some("b"), 17_000, r#"{"tool_name":"grep"}"#),
            ev(9, "task.failed", Some("b"), 76_000, r#"{"reason":"disk full"}"#),
        ];
        let s = story(&events);
        assert_eq!(s.status, "failed");
        assert_eq!(s.description.as_deref(), Some("sort"));
        assert_eq!((s.winner.as_deref(), s.winning_bid), (Some("b"), Some(20)));
        assert_eq!(s.bids.len(), 2);
        assert_eq!(s.tool_calls, 1);
        assert_eq!(s.reason.as_deref(), Some("disk full"));
        let html = facts(&s, &["t2".to_owned(), "t/3".to_owned()]).into_string();
        assert!(html.contains(r#"<a href="/swarm/tasks/t2">t2</a>, <a href="/swarm/tasks/t%2F3">t/3</a>"#), "{html}");
        assert!(html.contains("15 s") && html.contains("1 min 0 s") && html.contains("1 min 16 s"), "{html}");
        assert!(bids(&s).into_string().contains("class=\"winner\""));
    }
}
