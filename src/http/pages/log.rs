//! `/swarm/events`: the event log with filters (type, task, agent, source, time
//! range) and a full-text search box (`q`), cursor paging by seq (newest first,
//! "Older" continues `before` the last row, never an offset), counts per type and a
//! chart of events by type for the last hour, day or week (`chart=`; uPlot, drawn by
//! `assets/chart.js` from `GET /api/summary`, whose buckets the store counts), and
//! links that download every match through `GET /api/events/export`.

use axum::Extension;
use axum::extract::State;
use axum::http::Uri;
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;

use super::{PageError, given, html_page, is_admin, who};
use crate::auth::Principal;
use crate::event::{KNOWN_TYPES, UNKNOWN_ICON, format_timestamp, known_type};
use crate::filter::{Filter, FilterSpec};
use crate::http::AppState;
use crate::http::api::{SummaryRange, search_param, summarise};
use crate::http::error::{ApiError, split_query};
use crate::store::{Order, Query as StoreQuery};
use crate::view::event::{Detail, query_value, rows};
use crate::view::layout::{Nav, Shell, page};

/// Rows per page.
const PAGE_ROWS: usize = 50;

/// The time ranges offered, as (parameter, label, minutes).
const RANGES: &[(&str, &str, i64)] = &[
    ("15m", "last 15 minutes", 15),
    ("1h", "last hour", 60),
    ("6h", "last 6 hours", 360),
    ("24h", "last 24 hours", 1440),
    ("7d", "last 7 days", 10_080),
];

#[derive(Debug, Default, Deserialize)]
pub(crate) struct LogParams {
    /// One of [`RANGES`]; absent means all time.
    range: Option<String>,
    /// Show events older than this seq (the "Older" link).
    before: Option<u64>,
    /// Full-text search, as `GET /api/events` reads it.
    q: Option<String>,
    /// The chart's range: one of [`SummaryRange::NAMED`]; absent means the first.
    chart: Option<String>,
}

/// `GET /swarm/events`.
#[tracing::instrument(skip_all)]
pub(crate) async fn page_handler(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    uri: Uri,
) -> Result<Response, PageError> {
    // The filter's fields as every endpoint reads them; the form sends the ones left
    // blank as empty strings, which here mean "any".
    let (q, p) = split_query::<LogParams>(uri.query().unwrap_or_default())
        .map_err(|e| PageError(ApiError::bad_request("invalid_query", e)))?;
    let q = FilterSpec { task_id: given(q.task_id), agent_id: given(q.agent_id), source: given(q.source), ..q };
    let filter = Filter::from_spec(q.clone())?;
    let types = (!q.types.is_empty()).then(|| q.types.join(","));
    let range = given(p.range).and_then(|r| RANGES.iter().find(|(k, _, _)| *k == r));
    let from_ms = range.map(|(_, _, minutes)| chrono::Utc::now().timestamp_millis() - minutes * 60_000);
    let search = given(p.q);
    let text = search_param(search.as_deref())?;
    let (chart, chart_label, chart_range) = given(p.chart)
        .and_then(|c| SummaryRange::NAMED.iter().find(|(name, _, _)| *name == c))
        .copied()
        .unwrap_or(SummaryRange::NAMED[0]);
    // A search cannot find what is not indexed yet: say so when that is the case.
    let search_lag = if text.is_some() { state.search.lag(state.hub.head()) } else { 0 };
    let events = state
        .store
        .query(StoreQuery {
            filter,
            before: p.before,
            from_ms,
            order: Order::Desc,
            limit: PAGE_ROWS,
            text,
            ..StoreQuery::default()
        })
        .await?;
    let older = (events.len() == PAGE_ROWS).then(|| events.last().map(|e| e.seq)).flatten();
    let summary = summarise(&state, chart_range).await?;

    // The filter as a query string, for the paging links.
    let mut base = Vec::new();
    for (k, v) in [("types", &types), ("task_id", &q.task_id), ("agent_id", &q.agent_id), ("source", &q.source)] {
        if let Some(v) = v {
            base.push(format!("{k}={}", query_value(v)));
        }
    }
    if let Some(search) = &search {
        base.push(format!("q={}", query_value(search)));
    }
    if let Some((k, _, _)) = range {
        base.push(format!("range={k}"));
    }
    let with_chart = |name: &str| if name == SummaryRange::NAMED[0].0 { None } else { Some(format!("chart={name}")) };
    let link_for = |chart: &str, extra: Option<String>| {
        let mut parts = base.clone();
        parts.extend(with_chart(chart));
        parts.extend(extra);
        if parts.is_empty() { "/swarm/events".to_owned() } else { format!("/swarm/events?{}", parts.join("&")) }
    };
    let link = |extra: Option<String>| link_for(chart, extra);
    // The export takes the same filter; the page's range becomes the `from` it stood
    // for when the page was drawn, so the download is what the page showed, and more.
    let export = |format: &str| {
        let mut parts = base.iter().filter(|p| !p.starts_with("range=")).cloned().collect::<Vec<_>>();
        if let Some(from_ms) = from_ms {
            parts.push(format!("from={}", query_value(&format_timestamp(from_ms))));
        }
        parts.push(format!("format={format}"));
        format!("/api/events/export?{}", parts.join("&"))
    };
    let mut counts: Vec<(&String, &u64)> = summary.by_type.iter().collect();
    counts.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    let labels: serde_json::Map<String, serde_json::Value> = KNOWN_TYPES
        .iter()
        .map(|k| (k.event_type.to_owned(), serde_json::Value::String(format!("{} {}", k.icon, k.label))))
        .collect();

    let body = html! {
        h1.page-title { "Event log" }
        (filters(&q, types.as_deref(), search.as_deref(), range.map(|(k, _, _)| *k), chart))
        div.log-grid {
            section.panel aria-labelledby="events-title" {
                h2 #events-title {
                    "Events"
                    @if p.before.is_some() { span.muted { " · before #" (p.before.unwrap_or_default()) } }
                }
                @if search_lag > 0 {
                    p.muted.search-lag role="status" {
                        "Search is " (search_lag) (if search_lag == 1 { " event" } else { " events" })
                        " behind the log: the newest may not be found yet."
                    }
                }
                @if events.is_empty() {
                    p.muted { "No event matches." }
                }
                ol.feed.feed--log { (rows(&events, Detail::Full)) }
                nav.export aria-label="Export" {
                    span.muted { "Export every match: " }
                    a.btn href=(export("csv")) download { "CSV" }
                    " "
                    a.btn href=(export("ndjson")) download { "NDJSON" }
                }
                nav.pager aria-label="Pages" {
                    @if p.before.is_some() { a.btn href=(link(None)) { "← Newest" } }
                    @if let Some(older) = older { a.btn href=(link(Some(format!("before={older}")))) { "Older →" } }
                }
            }
            div.log-side {
                section.panel aria-labelledby="chart-title" {
                    h2 #chart-title { "Events per " (bucket_label(chart_range.bucket_minutes)) ", " (chart_label) }
                    nav.chart-range aria-label="Chart range" {
                        @for (name, label, _) in SummaryRange::NAMED {
                            a.btn href=(link_for(name, p.before.map(|b| format!("before={b}"))))
                                aria-current=[(*name == chart).then_some("true")] title=(label) { (name) }
                        }
                    }
                    div #chart .chart data-summary=(format!("/api/summary?range={chart}"))
                        data-labels=(serde_json::Value::Object(labels).to_string()) {
                        p.muted { "Loading the chart…" }
                    }
                }
                section.panel aria-labelledby="counts-title" {
                    h2 #counts-title { "By type, " (chart_label) }
                    @if counts.is_empty() { p.muted { "No events in the " (chart_label) "." } }
                    ul.counts {
                        @for (t, n) in &counts {
                            @let known = known_type(t);
                            li {
                                a href=(format!("/swarm/events?types={}", query_value(t))) {
                                    span aria-hidden="true" { (known.map_or(UNKNOWN_ICON, |k| k.icon)) }
                                    " " (known.map_or(t.as_str(), |k| k.label))
                                }
                                span.count { (n) }
                            }
                        }
                    }
                    @if summary.other > 0 {
                        p.muted.other-types { (summary.other) " of other types" }
                    }
                    p.muted { (summary.total) " events in all" }
                }
            }
        }
    };
    let shell = Shell {
        title: "Events",
        nav: Nav::Events,
        user: Some(who(&principal)),
        chart: true,
        admin: is_admin(&principal),
    };
    Ok(html_page(page(&shell, &body)))
}

/// "minute", "15 minutes", "hour", … for a bucket `minutes` wide.
fn bucket_label(minutes: u32) -> String {
    match minutes {
        1 => "minute".to_owned(),
        60 => "hour".to_owned(),
        m if m % 60 == 0 => format!("{} hours", m / 60),
        m => format!("{m} minutes"),
    }
}

fn filters(q: &FilterSpec, types: Option<&str>, search: Option<&str>, range: Option<&str>, chart: &str) -> Markup {
    html! {
        form.panel.filters method="get" action="/swarm/events" role="search" {
            label.search { "Search"
                input type="search" name="q" value=[search] placeholder="words, \"a phrase\", prefix*"
                    maxlength=(crate::search::MAX_QUERY_CHARS) spellcheck="false";
            }
            @if chart != SummaryRange::NAMED[0].0 { input type="hidden" name="chart" value=(chart); }
            label { "Type" input name="types" value=[types] placeholder="task.*, bid.submitted" list="known-types" spellcheck="false"; }
            datalist #known-types {
                @for k in KNOWN_TYPES { option value=(k.event_type) { (k.label) } }
            }
            label { "Task" input name="task_id" value=[q.task_id.as_deref()] spellcheck="false"; }
            label { "Agent" input name="agent_id" value=[q.agent_id.as_deref()] spellcheck="false"; }
            label { "Source" input name="source" value=[q.source.as_deref()] spellcheck="false"; }
            label { "Time"
                select name="range" {
                    option value="" selected[range.is_none()] { "all time" }
                    @for (k, label, _) in RANGES {
                        option value=(k) selected[range == Some(*k)] { (label) }
                    }
                }
            }
            div.filter-actions {
                button.primary type="submit" { "Filter" }
                a.btn href="/swarm/events" { "Clear" }
            }
        }
    }
}
