//! `/swarm/live`: the banner of firing alerts, stat tiles, open auctions, agents and
//! the live activity feed; and
//! `/swarm/live/panels`, the tiles and lists alone, which the page re-fetches (htmx)
//! when the feed brings an event that changes the swarm.
//!
//! With `?at=<seq or time>` the page shows the swarm as it stood then
//! ([`crate::swarm::history`]): the same tiles, auctions with their bids, agents, and
//! the feed up to that moment, none of it live, under a banner that says so, with a
//! scrubber to move through the log and a way back to live.
//!
//! Also the feed component the task and agent pages reuse ([`feed`]): rows rendered
//! now, plus the attributes `assets/live.js` needs to follow the log from exactly
//! where these rows end.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{Query, State};
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;

use super::{PageError, badge, given, html_page, is_admin, swarm, up_to_head, who};
use crate::auth::Principal;
use crate::event::{Event, parse_timestamp};
use crate::filter::{Filter, FilterSpec, split_types};
use crate::http::AppState;
use crate::http::swarm::AtView;
use crate::store::{Order, Query as StoreQuery};
use crate::swarm::projection::{AgentStatus, Bid};
use crate::swarm::snapshot::{SwarmPage, SwarmSnapshot};
use crate::view::event::{Detail, agent_href, categories, problem_types, query_value, rows, task_href};
use crate::view::layout::{Nav, Shell, page};

/// Rows the live feed starts with; the browser keeps at most `MAX_ROWS` of
/// `assets/live.js` as more arrive.
const FEED_ROWS: usize = 50;
/// Agents listed; the rest are counted.
const MAX_AGENTS: usize = 30;
/// Open auctions listed; the rest are counted.
const MAX_AUCTIONS: usize = 20;
/// Bids shown per auction, lowest first.
const MAX_BIDS: usize = 5;
/// Where the failed count of the tiles leads: the task board's failed tasks of the last
/// day.
pub(crate) const FAILED_RECENTLY: &str = "/swarm/tasks?status=failed&within=day";
/// Minutes the events-per-minute tile averages over.
const RATE_MINUTES: i64 = 5;

#[derive(Debug, Default, Deserialize)]
pub(crate) struct LiveParams {
    types: Option<String>,
    /// A past moment: a seq or an RFC 3339 time.
    at: Option<String>,
}

/// Where the feed puts new rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FeedOrder {
    /// Newest on top: the live feed, an agent's history.
    NewestFirst,
    /// Oldest on top, new rows appended: a task's timeline.
    OldestFirst,
}

/// A live feed on a page.
pub(crate) struct Feed<'a> {
    pub title: &'a str,
    /// The log position the rows end at: the hub's head read before the rows were, so
    /// the browser continues after exactly what it was sent.
    pub since: u64,
    /// The subscription's filter as a query string (`types=…&task_id=…`), escaped.
    pub query: String,
    pub order: FeedOrder,
    /// The rows, in display order.
    pub events: &'a [Arc<Event>],
    pub detail: Detail,
    /// Filter chips, above the rows.
    pub chips: Option<Markup>,
    /// A link under the rows.
    pub footer: Option<Markup>,
}

/// The feed panel: header with the connection indicator, "last event" and pause; the
/// rows (an ARIA live region); and the hidden elements the transports swap into.
pub(crate) fn feed(f: &Feed<'_>) -> Markup {
    let order = match f.order {
        FeedOrder::NewestFirst => "newest-first",
        FeedOrder::OldestFirst => "oldest-first",
    };
    html! {
        section.panel.feed-panel aria-labelledby="feed-title" {
            div.feed-head {
                h2 #feed-title { (f.title) }
                span #conn .conn data-state="connecting" role="status" { "Connecting…" }
                span #last-event .muted aria-live="off" { "no events yet" }
                button #pause .btn type="button" aria-pressed="false" { "Pause" }
            }
            @if let Some(chips) = &f.chips { (chips) }
            ol #feed .feed data-live data-since=(f.since) data-query=(f.query) data-order=(order)
                aria-live="polite" aria-relevant="additions" aria-label=(f.title) {
                (rows(f.events, f.detail))
            }
            p.feed-empty.muted { "Nothing yet. Events appear here the moment they are stored." }
            @if let Some(footer) = &f.footer { (footer) }
        }
        // Where /ws/html, SSE and long-poll put what they bring; live.js takes it from
        // there, so pausing and de-duplication work the same whatever the transport.
        ol #feed-incoming hidden {}
        div #feed-notice hidden {}
        div #live-links hidden {}
    }
}

/// `GET /swarm/live`.
#[tracing::instrument(skip_all)]
pub(crate) async fn page_handler(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(p): Query<LiveParams>,
) -> Result<Response, PageError> {
    let types = given(p.types);
    let spec = FilterSpec { types: types.as_deref().map(split_types).unwrap_or_default(), ..FilterSpec::default() };
    let filter = Filter::from_spec(spec)?;
    if let Some(at) = given(p.at) {
        return past_page(&state, &principal, &at, filter).await;
    }
    let (since, events) = up_to_head(&state, filter, Order::Desc, FEED_ROWS).await?;
    let swarm = swarm(&state).await?;
    let rate = events_per_minute(&state).await?;
    // A busy evaluator leaves the banner empty; it fills itself in on its next fetch.
    let alerts = state.alerts.list().await.unwrap_or_default();
    let query = types.as_deref().map(|t| format!("types={}", query_value(t))).unwrap_or_default();
    let all_events = if query.is_empty() { "/swarm/events".to_owned() } else { format!("/swarm/events?{query}") };
    let feed = feed(&Feed {
        title: "Live activity",
        since,
        query,
        order: FeedOrder::NewestFirst,
        events: &events,
        detail: Detail::Compact,
        chips: Some(chips(types.as_deref())),
        footer: Some(html! { a.more href=(all_events) { "Show all events →" } }),
    });
    let body = html! {
        (super::alerts::banner(&alerts))
        (tiles(&swarm, Some(rate)))
        div.live-grid {
            div.live-main { (feed) }
            div.live-side {
                (auctions(&swarm, false, None))
                (agents(&swarm, false))
            }
        }
    };
    let shell =
        Shell { title: "Live", nav: Nav::Live, user: Some(who(&principal)), chart: false, admin: is_admin(&principal) };
    Ok(html_page(page(&shell, &body)))
}

/// `GET /swarm/live?at=…`: the swarm as it stood at a past moment, still.
async fn past_page(state: &AppState, principal: &Principal, at: &str, filter: Filter) -> Result<Response, PageError> {
    let (at, swarm) = crate::http::swarm::swarm_at(state, at, &SwarmPage::default()).await?;
    let q =
        StoreQuery { filter, before: Some(at.seq + 1), order: Order::Desc, limit: FEED_ROWS, ..StoreQuery::default() };
    let events = state.store.query(q).await?;
    let past_ms = at.time.as_deref().and_then(parse_timestamp).unwrap_or(0);
    let body = html! {
        (past_banner(&at))
        (tiles(&swarm, None))
        div.live-grid {
            div.live-main {
                section.panel.feed-panel aria-labelledby="feed-title" {
                    div.feed-head { h2 #feed-title { "Activity up to seq " (at.seq) } }
                    @if events.is_empty() {
                        p.muted { "No event had been logged yet." }
                    }
                    ol #past-feed .feed aria-label="Activity up to this moment" { (rows(&events, Detail::Compact)) }
                }
            }
            div.live-side {
                (auctions(&swarm, false, Some(past_ms)))
                (agents(&swarm, false))
            }
        }
    };
    let shell =
        Shell { title: "Live", nav: Nav::Live, user: Some(who(principal)), chart: false, admin: is_admin(principal) };
    Ok(html_page(page(&shell, &body)))
}

/// The banner of a past view: which moment it is, the way back to live, and the
/// scrubber, a range over the retained log that `assets/live.js` submits when it is
/// let go (without script, its button does).
fn past_banner(at: &AtView) -> Markup {
    let first = if at.oldest > 1 { at.oldest } else { 0 };
    html! {
        section #time-travel .panel.time-banner role="region" aria-label="Viewing the past" {
            p #time-status role="status" {
                strong { "Viewing the swarm at seq " (at.seq) }
                @if let Some(time) = &at.time {
                    " — " time datetime=(time) { (time) }
                }
                ". Not live: nothing here moves."
            }
            form #scrubber .scrubber method="get" action="/swarm/live" {
                label for="at" { "Move through time" }
                input #at type="range" name="at" min=(first) max=(at.head) step="1" value=(at.seq)
                    aria-valuetext={ "seq " (at.seq) };
                output #at-out for="at" { (at.seq) " / " (at.head) }
                button.btn type="submit" { "Show" }
            }
            a #back-to-live .btn href="/swarm/live" { "Back to live" }
        }
    }
}

/// `GET /swarm/live/panels`: fresh tiles, with the auctions and agents swapped out of
/// band.
pub(crate) async fn panels(State(state): State<AppState>) -> Result<Response, PageError> {
    let swarm = swarm(&state).await?;
    let rate = events_per_minute(&state).await?;
    Ok(html_page(html! {
        (tiles(&swarm, Some(rate)))
        (auctions(&swarm, true, None))
        (agents(&swarm, true))
    }))
}

/// Events per minute over the last few minutes, the current one pro rata.
async fn events_per_minute(state: &AppState) -> Result<f64, PageError> {
    let now = chrono::Utc::now().timestamp_millis();
    let first = now - now.rem_euclid(60_000) - (RATE_MINUTES - 1) * 60_000;
    let total: u64 = state.store.bucket_counts(first, 60_000).await?.iter().map(|c| c.count).sum();
    Ok(total as f64 / ((now - first) as f64 / 60_000.0))
}

/// The type filter: one chip per category of the known-type table, and "Problems"
/// (failures, errors, warnings). Chips toggle; the selection lives in the URL, so a
/// view can be shared.
fn chips(types: Option<&str>) -> Markup {
    let selected: BTreeSet<String> =
        types.unwrap_or_default().split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned).collect();
    let href = |set: &BTreeSet<String>| {
        if set.is_empty() {
            "/swarm/live".to_owned()
        } else {
            format!("/swarm/live?types={}", query_value(&set.iter().cloned().collect::<Vec<_>>().join(",")))
        }
    };
    let problems: Vec<String> = problem_types().map(str::to_owned).collect();
    let problems_on = problems.iter().all(|p| selected.contains(p));
    html! {
        nav.chips aria-label="Filter by type" {
            a.chip href="/swarm/live" aria-current=[selected.is_empty().then_some("true")] { "All" }
            @for category in categories() {
                @let pattern = format!("{category}.*");
                @let on = selected.contains(&pattern);
                a.chip href=(href(&toggle(&selected, std::slice::from_ref(&pattern), on)))
                    aria-current=[on.then_some("true")] data-types=(pattern) { (category) }
            }
            a.chip.chip--bad href=(href(&toggle(&selected, &problems, problems_on)))
                aria-current=[problems_on.then_some("true")] { "Problems" }
        }
    }
}

/// `selected` with `patterns` removed (when `on`) or added.
fn toggle(selected: &BTreeSet<String>, patterns: &[String], on: bool) -> BTreeSet<String> {
    let mut out = selected.clone();
    for p in patterns {
        if on {
            out.remove(p);
        } else {
            out.insert(p.clone());
        }
    }
    out
}

/// The stat tiles; the element htmx re-fetches (with the lists) on `sf:swarm`, which
/// `live.js` fires, throttled, when the feed brings a swarm event.
///
/// `rate` is `None` for a past moment: the tiles stay still, and the log's length then
/// stands where the rate would.
fn tiles(swarm: &SwarmSnapshot, rate: Option<f64>) -> Markup {
    let t = &swarm.totals;
    let tile = |value: String, label: &str| {
        html! { div.tile { span.tile-value { (value) } span.tile-label { (label) } } }
    };
    let (get, trigger, swap) = match rate {
        Some(_) => (Some("/swarm/live/panels"), Some("sf:swarm from:body, every 30s"), Some("outerHTML")),
        None => (None, None, None),
    };
    html! {
        div #stat-tiles .tiles hx-get=[get] hx-trigger=[trigger] hx-swap=[swap] {
            (tile(format!("{} / {}", t.agents_active, t.agents_total), "agents active / total"))
            (tile(t.tasks_open.to_string(), "active tasks"))
            (tile(t.open_auctions.to_string(), "open auctions"))
            @match rate {
                Some(rate) => (tile(format!("{rate:.1}"), "events / min")),
                None => (tile(swarm.seq.to_string(), "events logged by then")),
            }
            // The failed count leads to the failed tasks of the last day: from a failure
            // on the live page to every recent one in one click.
            div.tile {
                span.tile-value {
                    (t.tasks_completed) " / "
                    a.tile-link #failed-tasks href=(FAILED_RECENTLY) title="The failed tasks of the last day" { (t.tasks_failed) }
                }
                span.tile-label { "tasks done / " a href=(FAILED_RECENTLY) { "failed" } }
            }
            (tile(t.sats_paid.to_string(), "sats paid"))
        }
    }
}

/// The open auctions with their lowest bids; `past_ms` is the moment of a past view,
/// whose seconds left are counted from it and do not tick.
fn auctions(swarm: &SwarmSnapshot, oob: bool, past_ms: Option<i64>) -> Markup {
    let now = past_ms.unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
    let ticking = past_ms.is_none().then_some(now);
    html! {
        section #auctions .panel hx-swap-oob=[oob.then_some("true")] data-now=[ticking] aria-labelledby="auctions-title" {
            h2 #auctions-title { "Open auctions" }
            @if swarm.auctions.is_empty() {
                p.muted { "No task is taking bids." }
            }
            ul.auctions {
                @for a in swarm.auctions.iter().take(MAX_AUCTIONS) {
                    @let bids = lowest_first(&a.bids);
                    li.auction {
                        div.auction-head {
                            a href=(task_href(&a.task_id)) { (if a.description.is_empty() { &a.task_id } else { &a.description }) }
                            @if let Some(closes) = a.closes_at.as_deref().and_then(parse_timestamp) {
                                span.countdown data-closes=(closes) title="bidding closes in" {
                                    ((closes - now).max(0) / 1000) " s"
                                }
                            }
                        }
                        @if bids.is_empty() {
                            p.muted { "no bids yet" }
                        } @else {
                            ol.bids {
                                @for (i, b) in bids.iter().take(MAX_BIDS).enumerate() {
                                    li class=[(i == 0).then_some("lowest")] {
                                        a href=(agent_href(&b.agent_id)) { (b.agent_id) }
                                        span.sats { (b.bid_sats) " sats" }
                                    }
                                }
                            }
                            @if bids.len() > MAX_BIDS { p.muted { "and " (bids.len() - MAX_BIDS) " more bids" } }
                        }
                    }
                }
            }
            @let more = (swarm.auctions.len() + swarm.auctions_more).saturating_sub(MAX_AUCTIONS);
            @if more > 0 {
                p.muted { "and " (more) " more" }
            }
        }
    }
}

/// Bids by the auction rule: lowest first, earliest on a tie.
fn lowest_first(bids: &[Bid]) -> Vec<&Bid> {
    let mut out: Vec<&Bid> = bids.iter().collect();
    out.sort_by_key(|b| (b.bid_sats, b.at_ms));
    out
}

fn agents(swarm: &SwarmSnapshot, oob: bool) -> Markup {
    let rank = |s: AgentStatus| match s {
        AgentStatus::Busy => 0,
        AgentStatus::Idle => 1,
        AgentStatus::Offline => 2,
    };
    let mut agents: Vec<_> = swarm.agents.iter().collect();
    agents.sort_by(|a, b| rank(a.status).cmp(&rank(b.status)).then_with(|| a.name.cmp(&b.name)));
    html! {
        section #agents .panel hx-swap-oob=[oob.then_some("true")] aria-labelledby="agents-title" {
            h2 #agents-title { "Agents" }
            @if agents.is_empty() {
                p.muted { "No agent has joined." }
            }
            ul.agents {
                @for a in agents.iter().take(MAX_AGENTS) {
                    li.agent {
                        a href=(agent_href(&a.agent_id)) { (a.name) }
                        (badge(a.status.as_str()))
                        span.agent-stats.muted { (a.tasks_completed) " done · " (a.sats_earned) " sats" }
                    }
                }
            }
            @let more = (swarm.totals.agents_total as usize).saturating_sub(agents.len().min(MAX_AGENTS));
            @if more > 0 {
                p.muted { "and " (more) " more" }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chips_toggle_their_types_in_the_url() {
        let html = chips(Some("task.*")).into_string();
        let on = r#"href="/swarm/live" aria-current="true" data-types="task.*""#;
        assert!(html.contains(on), "the selected chip is marked and toggles off: {html}");
        assert!(html.contains(r#"href="/swarm/live?types=agent.*,task.*" data-types="agent.*""#), "{html}");
        let set: BTreeSet<String> = ["a.b".to_owned()].into();
        let problems = vec!["x.failed".to_owned(), "a.b".to_owned()];
        assert_eq!(toggle(&set, &problems, false).len(), 2);
        assert!(toggle(&set, &problems, true).is_empty());
    }
}
