//! One event as an HTML row: icon, label and display text from the known-type table,
//! time, source, and links to its task and agent.
//!
//! The row carries `data-seq` (the browser de-duplicates and resumes by it), `data-type`
//! and `data-swarm` (the event changes the swarm projection, so the page refreshes its
//! panels). Failures and errors get a class that makes them stand out.

use std::sync::Arc;

use maud::{Markup, html};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::event::{Event, KNOWN_TYPES, Severity, UNKNOWN_ICON, format_timestamp, known_type, render_display};
use crate::swarm::projection::{event_data, is_swarm_type};

/// The known types that are warnings or problems, in table order: the "Problems" filter.
pub(crate) fn problem_types() -> impl Iterator<Item = &'static str> {
    KNOWN_TYPES.iter().map(|k| k.event_type).filter(|t| Severity::of(t) != Severity::Normal)
}

/// The first segments of the known types, in table order, each once (`task`, `agent`,
/// …): the type filter chips.
pub(crate) fn categories() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for k in KNOWN_TYPES {
        let first = k.event_type.split('.').next().unwrap_or(k.event_type);
        if !out.contains(&first) {
            out.push(first);
        }
    }
    out
}

/// Everything but unreserved characters is escaped in a path segment, so an id like
/// `a/b?c` links to its own page.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// `/swarm/tasks/{id}` with the id escaped.
pub(crate) fn task_href(task_id: &str) -> String {
    format!("/swarm/tasks/{}", utf8_percent_encode(task_id, SEGMENT))
}

/// `/swarm/agents/{id}` with the id escaped.
pub(crate) fn agent_href(agent_id: &str) -> String {
    format!("/swarm/agents/{}", utf8_percent_encode(agent_id, SEGMENT))
}

/// `/swarm/live?at={seq}`: the swarm as it stood just after event `seq`.
pub(crate) fn moment_href(seq: u64) -> String {
    format!("/swarm/live?at={seq}")
}

/// In a query-string value, `*` and `,` stay as they are too: type filters like
/// `types=task.*,bid.submitted` stay readable in a shared URL.
const QUERY_VALUE: &AsciiSet = &SEGMENT.remove(b'*').remove(b',');

/// A query-string value, escaped.
pub(crate) fn query_value(value: &str) -> String {
    utf8_percent_encode(value, QUERY_VALUE).to_string()
}

/// `HH:MM:SS` in UTC; the page's script turns it into the viewer's local time.
pub(crate) fn clock(ts_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ts_ms)
        .map_or_else(|| "--:--:--".to_owned(), |t| t.format("%H:%M:%S").to_string())
}

/// How much of an event a row shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Detail {
    /// Icon, text and the meta line: the live feed.
    Compact,
    /// Also the event's `data`, folded: the event log and timelines.
    Full,
}

/// The icon, label and display text of an event.
pub(crate) fn describe(
    event: &Event,
    data: &serde_json::Map<String, serde_json::Value>,
) -> (&'static str, String, String) {
    let known = known_type(&event.event_type);
    let icon = known.map_or(UNKNOWN_ICON, |k| k.icon);
    let label = known.map_or_else(|| event.event_type.to_string(), |k| k.label.to_owned());
    let display = render_display(&event.event_type, event.agent_id.as_deref(), data);
    (icon, label, display)
}

/// One event as an `<li>`.
pub(crate) fn row(event: &Event, detail: Detail) -> Markup {
    let data = event_data(event);
    let (icon, label, display) = describe(event, &data);
    let class = match Severity::of(&event.event_type) {
        Severity::Normal => "ev",
        Severity::Warning => "ev ev--warn",
        Severity::Problem => "ev ev--bad",
    };
    let seq = event.seq;
    html! {
        li class=(class) id={ "ev-" (seq) } data-seq=(seq) data-type=(event.event_type)
            data-swarm[is_swarm_type(&event.event_type)] {
            span.ev-icon aria-hidden="true" { (icon) }
            div.ev-body {
                p.ev-text {
                    span.ev-label { (label) }
                    @if display != label {
                        " " span.ev-display { (display) }
                    }
                }
                p.ev-meta {
                    time datetime=(format_timestamp(event.ts_ms)) data-ts=(event.ts_ms) { (clock(event.ts_ms)) }
                    " · " span.ev-source title="source" { (event.source) }
                    @if let Some(task) = &event.task_id {
                        " · " a.ev-task href=(task_href(task)) { "task " (task) }
                    }
                    @if let Some(agent) = &event.agent_id {
                        " · " a.ev-agent href=(agent_href(agent)) { "agent " (agent) }
                    }
                    " · " a.ev-seq href=(moment_href(seq)) title="The swarm at this moment" { "#" (seq) }
                }
                @if detail == Detail::Full && !data.is_empty() {
                    details.ev-data {
                        summary { "data" }
                        pre { (serde_json::to_string_pretty(&data).unwrap_or_default()) }
                    }
                }
            }
        }
    }
}

/// Several rows, in the order given.
pub(crate) fn rows(events: &[Arc<Event>], detail: Detail) -> Markup {
    html! { @for e in events { (row(e, detail)) } }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventParts;

    fn event(event_type: &str, task: Option<&str>, data: &str) -> Event {
        Event::encode(EventParts {
            seq: 9,
            id: "i",
            event_type,
            source: "<b>src</b>",
            task_id: task,
            agent_id: Some("a\"gent"),
            ts_ms: 1_764_105_591_123,
            data,
        })
        .unwrap()
    }

    #[test]
    fn every_event_field_is_escaped() {
        let e =
            event("system.error", Some("t/<1>"), r#"{"message":"<img src=x onerror=alert(1)><script>x()</script>"}"#);
        let html = row(&e, Detail::Full).into_string();
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<b>"), "{html}");
        assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"), "{html}");
        assert!(html.contains("href=\"/swarm/tasks/t%2F%3C1%3E\""), "{html}");
        assert!(html.contains("href=\"/swarm/agents/a%22gent\""), "{html}");
    }

    #[test]
    fn rows_carry_what_the_browser_needs() {
        let e = event("task.failed", Some("t1"), r#"{"reason":"no bids received"}"#);
        let html = row(&e, Detail::Compact).into_string();
        assert!(html.contains("data-seq=\"9\""), "{html}");
        assert!(
            html.contains(r#"<a class="ev-seq" href="/swarm/live?at=9" title="The swarm at this moment">#9</a>"#),
            "{html}"
        );
        assert!(html.contains("data-swarm"), "{html}");
        assert!(html.contains("ev--bad"), "{html}");
        assert!(html.contains("Task failed: no bids received"), "{html}");
        assert!(html.contains("21:19:51"), "{html}");
        let custom = row(&event("deploy.started", None, "{}"), Detail::Compact).into_string();
        assert!(!custom.contains("data-swarm") && custom.contains(UNKNOWN_ICON), "{custom}");
    }
}
