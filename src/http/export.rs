//! `GET /api/events/export`: the log, or a filtered range of it, as one NDJSON or CSV
//! download (DESIGN §10).
//!
//! The body is read from the store a page at a time and each page is encoded only when
//! the client has taken the one before, so an export of any size holds one page: a
//! client that stops reading stalls the store reads too, until the connection's write
//! timeout ends it. The range ends at the head as it was when the export began, so
//! exporting a busy log finishes.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::AppState;
use super::api::{search_param, time_param};
use super::error::{ApiError, Filtered};
use super::schema::Refusals;
use crate::event::{Event, EventPayload, render_display};
use crate::store::{Order, Query, Store, StoreError};

/// Events read from the store, and encoded, per piece of the body: as many as a chunk
/// of a `GET /api/events` page, so an export that is not read pins the same at most
/// (100 events of up to 16 KiB) until the write timeout ends it.
pub(crate) const EXPORT_PAGE_EVENTS: usize = 100;

/// The CSV header row, in the order every row writes its cells.
const CSV_HEADER: &str = "seq,id,ts,event_type,source,task_id,agent_id,display,data\r\n";

/// Query parameters of `GET /api/events/export` besides the filter's.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExportParams {
    /// `ndjson` (default) or `csv`.
    format: Option<String>,
    after: Option<u64>,
    before: Option<u64>,
    from: Option<String>,
    to: Option<String>,
    /// Full-text search, as on `GET /api/events`: words (all must match), `"a phrase"`,
    /// `prefix*`.
    q: Option<String>,
}

/// The two shapes an export is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// One event per line, each the JSON `GET /api/events` answers.
    Ndjson,
    /// RFC 4180, with a header row and cells guarded against formula injection.
    Csv,
}

impl Format {
    fn parse(value: Option<&str>) -> Result<Self, ApiError> {
        match value.unwrap_or("ndjson") {
            "ndjson" => Ok(Self::Ndjson),
            "csv" => Ok(Self::Csv),
            other => {
                Err(ApiError::bad_request("invalid_query", format!("format must be ndjson or csv, not {other:?}"))
                    .with_field("format"))
            }
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Self::Ndjson => "application/x-ndjson",
            Self::Csv => "text/csv; charset=utf-8",
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Self::Ndjson => "ndjson",
            Self::Csv => "csv",
        }
    }
}

/// `GET /api/events/export?format=ndjson|csv`: every event the filter and window
/// match, in seq order, up to the head when the export began, as a download.
#[tracing::instrument(skip_all)]
#[utoipa::path(get, path = "/api/events/export", tag = "events", params(ExportParams, crate::filter::FilterSpec),
    responses(
        (status = 200, description = "The matching events in seq order, as an attachment: NDJSON (`application/x-ndjson`, one event object per line) or CSV (`text/csv`; header `seq,id,ts,event_type,source,task_id,agent_id,display,data`; a cell starting with `=`, `+`, `-`, `@`, tab or carriage return is prefixed with `'` so spreadsheets do not run it as a formula)", content_type = "application/x-ndjson", body = String),
        Refusals))]
pub(crate) async fn export_events(
    State(state): State<AppState>,
    Filtered(filter, p): Filtered<ExportParams>,
) -> Result<Response, ApiError> {
    let format = Format::parse(p.format.as_deref())?;
    let from_ms = time_param("from", p.from.as_deref())?;
    let to_ms = time_param("to", p.to.as_deref())?;
    let text = search_param(p.q.as_deref())?;
    // Read before answering, so a store that does not answer is still a clean 500.
    let head = state.store.bounds().await?.head;
    let end = head.saturating_add(1);
    let before = Some(p.before.map_or(end, |b| b.min(end)));
    let query =
        Query { filter, after: p.after, before, from_ms, to_ms, order: Order::Asc, limit: EXPORT_PAGE_EVENTS, text };
    let pages = Pages {
        store: Arc::clone(&state.store),
        shutdown: state.shutdown.clone(),
        query,
        format,
        started: false,
        done: false,
    };
    let body = axum::body::Body::from_stream(futures_util::stream::unfold(pages, Pages::next));
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let disposition = format!("attachment; filename=\"swarmfeed-events-{stamp}.{}\"", format.extension());
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, format.content_type().to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        body,
    )
        .into_response())
}

/// Why an export's body ended short. The status line is gone by then; ending the body
/// with an error is what tells the client the download is incomplete.
#[derive(Debug, thiserror::Error)]
enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// The export's body, a page at a time.
struct Pages {
    store: Arc<dyn Store>,
    shutdown: CancellationToken,
    /// The export's query; `after` moves past every event written.
    query: Query,
    format: Format,
    /// The CSV header is written.
    started: bool,
    done: bool,
}

impl Pages {
    async fn next(mut self) -> Option<(Result<bytes::Bytes, ExportError>, Self)> {
        if self.done {
            return None;
        }
        if self.shutdown.is_cancelled() {
            self.done = true;
            return Some((Err(ExportError::ShuttingDown), self));
        }
        let events = match self.store.query(self.query.clone()).await {
            Ok(events) => events,
            Err(e) => {
                tracing::error!(error = %e, after = ?self.query.after, "reading the rest of an export failed");
                self.done = true;
                return Some((Err(e.into()), self));
            }
        };
        let mut out = Vec::with_capacity(64 + events.iter().map(|e| e.payload().len() + 64).sum::<usize>());
        if self.format == Format::Csv && !self.started {
            out.extend_from_slice(CSV_HEADER.as_bytes());
        }
        self.started = true;
        for event in &events {
            match self.format {
                Format::Ndjson => {
                    out.extend_from_slice(&event.payload());
                    out.push(b'\n');
                }
                Format::Csv => csv_row(event, &mut out),
            }
        }
        if let Some(last) = events.last() {
            self.query.after = Some(last.seq);
        }
        if events.len() < self.query.limit {
            self.done = true;
        }
        Some((Ok(out.into()), self))
    }
}

/// One event as a CSV row, cells in [`CSV_HEADER`]'s order.
fn csv_row(event: &Event, out: &mut Vec<u8>) {
    // The payload is the encoder's own output, so it always reads back; a row of its
    // seq alone would still say which event could not be written.
    let Ok(payload) = serde_json::from_slice::<EventPayload>(&event.payload()) else {
        tracing::error!(seq = event.seq, "an event's payload did not read back for CSV");
        csv_cell(&event.seq.to_string(), out);
        out.extend_from_slice(b",,,,,,,,\r\n");
        return;
    };
    let data: serde_json::Map<String, serde_json::Value> = serde_json::from_str(payload.data.get()).unwrap_or_default();
    let display = render_display(&payload.event_type, payload.agent_id.as_deref(), &data);
    let cells = [
        payload.seq.to_string(),
        payload.id,
        payload.timestamp,
        payload.event_type,
        payload.source,
        payload.task_id.unwrap_or_default(),
        payload.agent_id.unwrap_or_default(),
        display,
        payload.data.get().to_owned(),
    ];
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        csv_cell(cell, out);
    }
    out.extend_from_slice(b"\r\n");
}

/// One RFC 4180 cell. A cell a spreadsheet would read as a formula (starting with `=`,
/// `+`, `-`, `@`, tab or carriage return) gets a leading `'`, so opening an export
/// cannot run what a producer put in an event.
fn csv_cell(value: &str, out: &mut Vec<u8>) {
    let guard = value.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let quote = guard || value.contains([',', '"', '\r', '\n']);
    if quote {
        out.push(b'"');
    }
    if guard {
        out.push(b'\'');
    }
    for b in value.bytes() {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    if quote {
        out.push(b'"');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(value: &str) -> String {
        let mut out = Vec::new();
        csv_cell(value, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn cells_are_quoted_as_rfc_4180_says() {
        assert_eq!(cell("plain"), "plain");
        assert_eq!(cell(""), "");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(cell("two\nlines"), "\"two\nlines\"");
    }

    #[test]
    fn cells_a_spreadsheet_would_run_get_a_leading_quote() {
        for risky in ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"] {
            assert_eq!(cell(risky), format!("\"'{risky}\""), "{risky:?}");
        }
        assert_eq!(cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(cell("1=1"), "1=1");
    }

    #[test]
    fn an_unknown_format_is_refused_naming_format() {
        assert_eq!(Format::parse(None).unwrap(), Format::Ndjson);
        assert_eq!(Format::parse(Some("csv")).unwrap(), Format::Csv);
        assert!(Format::parse(Some("xml")).is_err());
    }
}
