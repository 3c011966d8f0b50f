//! `swarmfeed tail`: the live feed in a terminal.
//!
//! Owns the client side of one WebSocket subscription (DESIGN §3): connecting with the
//! token, subscribing with the filter and `since`, turning `event` and `batch` frames
//! into lines (coloured text, or each payload's JSON exactly as the server sent it),
//! and reconnecting after a dropped connection from the last seq printed, so that
//! nothing is lost or printed twice. Display text and icons come from the one
//! known-type table in [`crate::event`]; this module adds only colour and layout. It
//! does not parse the command line (`cli`).

use std::fmt::Write as _;
use std::time::Duration;

use chrono::TimeZone;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::remote::{BadUrl, base_url, endpoint};
use crate::event::{EventPayload, Severity, UNKNOWN_ICON, known_type, render_display};
use crate::filter::{Filter, FilterError};

/// Longest a connection may take to open, upgrade and confirm the subscription.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Silence after which a connection counts as dead. The server pings every 15 s by
/// default, so four missed pings mean a half-open socket, not a quiet swarm.
const SILENCE_TIMEOUT: Duration = Duration::from_secs(60);

/// What to subscribe to and where.
#[derive(Debug, Clone)]
pub struct TailOptions {
    /// The server's base URL, `http://host:port` or `https://host:port` (a path prefix
    /// is kept); the WebSocket is ws:// or wss:// to match.
    pub url: String,
    /// Trust this CA file's certificates instead of the system's roots (https only).
    pub ca_file: Option<std::path::PathBuf>,
    pub token: Option<String>,
    pub filter: TailFilter,
    /// Print events after this seq; `None` starts at the head (live only).
    pub since: Option<u64>,
    /// Stop at the head as it was when the tail started, instead of following live.
    pub until_head: bool,
    pub output: Output,
}

/// The subscription filter: the server's own declaration of the `filter` object of a
/// `subscribe` message, checked with the server's own rules before connecting.
pub use crate::filter::FilterSpec as TailFilter;

/// How events are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// One payload a line, byte for byte as the server sent it.
    Json,
    /// One human line an event; ANSI colour when `color`.
    Text { color: bool },
}

/// Whether to colour text output: only on a terminal, and never when `NO_COLOR` is set
/// to anything but the empty string (<https://no-color.org>).
pub fn use_color(stdout_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stdout_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Why `tail` stopped. Connection trouble is not here: it is retried, not returned.
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    #[error(transparent)]
    BadUrl(#[from] BadUrl),
    #[error("bad filter: --{0}")]
    BadFilter(#[from] FilterError),
    #[error(transparent)]
    Client(#[from] super::remote::ClientSetup),
    #[error("the server refused the token (401); pass --token or set SWARMFEED_TOKEN")]
    Unauthorized,
    #[error("the TLS handshake with {url} failed: {reason}; {hint}", hint = super::remote::TLS_HINT)]
    Tls { url: String, reason: String },
    #[error("the server refused the subscription (403): {0}")]
    Forbidden(String),
    #[error("the server refused the WebSocket upgrade with HTTP {0}")]
    Refused(u16),
    #[error("the server rejected the subscription: {0}")]
    Rejected(String),
    #[error("writing the output failed: {0}")]
    Output(#[source] std::io::Error),
}

/// The outcome of one connection that did not end `tail`.
enum Retry {
    /// Worth another attempt after the backoff; says why, for the notice.
    After(String),
    Fatal(TailError),
    /// The range asked for is printed whole (`--until-head`).
    Done,
}

const RESET: &str = "\x1b[0m";
const DIM: &str = "\x1b[2m";
const CYAN: &str = "\x1b[36m";
const BOLD_RED: &str = "\x1b[1;31m";
const YELLOW: &str = "\x1b[33m";

/// Replaces what could steer a terminal (control characters, escape sequences and
/// bidirectional overrides) with U+FFFD. Event data is whatever producers sent; a
/// viewer's terminal must show it, not obey it.
pub(crate) fn sanitize(s: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    if s.chars().any(unsafe_char) {
        s.chars().map(|c| if unsafe_char(c) { '\u{fffd}' } else { c }).collect::<String>().into()
    } else {
        s.into()
    }
}

/// One text line for an event, without the newline: local time, icon, display text,
/// source, task and agent, seq.
pub(crate) fn format_line<Tz: TimeZone>(event: &EventPayload, tz: &Tz, color: bool) -> String
where
    Tz::Offset: std::fmt::Display,
{
    let time = chrono::DateTime::parse_from_rfc3339(&event.timestamp)
        .map_or_else(|_| "--:--:--".to_owned(), |t| t.with_timezone(tz).format("%H:%M:%S").to_string());
    let icon = known_type(&event.event_type).map_or(UNKNOWN_ICON, |k| k.icon);
    // Data that is not an object (no server sends that) shows as an event without data.
    let data = serde_json::from_str::<Map<String, Value>>(event.data.get()).unwrap_or_default();
    let display = render_display(&event.event_type, event.agent_id.as_deref(), &data);
    // An empty code means no colour either, so plain events carry no escapes at all.
    let paint = |code: &'static str| if color && !code.is_empty() { (code, RESET) } else { ("", "") };
    let emphasis = match Severity::of(&event.event_type) {
        Severity::Problem => BOLD_RED,
        Severity::Warning => YELLOW,
        Severity::Normal => "",
    };
    let mut line = String::with_capacity(96);
    let (d, r) = paint(DIM);
    // Writing to a String cannot fail.
    let _ = write!(line, "{d}{time}{r} {icon} ");
    let (e, r) = paint(emphasis);
    let _ = write!(line, "{e}{}{r}", sanitize(&display));
    let (c, r) = paint(CYAN);
    let _ = write!(line, "  {c}{}{r}", sanitize(&event.source));
    let (d, r) = paint(DIM);
    if let Some(task) = &event.task_id {
        let _ = write!(line, " {d}task{r} {}", sanitize(task));
    }
    if let Some(agent) = &event.agent_id {
        let _ = write!(line, " {d}agent{r} {}", sanitize(agent));
    }
    let _ = write!(line, "  {d}#{}{r}", event.seq);
    line
}

/// The `subscribe` message for `filter`, after `since`. It asks for `batch` frames: a
/// burst then costs one frame (and one parse) per paced send, not one per event.
pub(crate) fn subscribe_message(filter: &TailFilter, since: Option<u64>) -> String {
    let mut message =
        serde_json::json!({ "action": "subscribe", "channel": "events", "filter": filter, "batch": true });
    if let Some(since) = since {
        message["since"] = since.into();
    }
    message.to_string()
}

/// A frame from the server, as far as `tail` cares.
#[derive(Debug)]
pub enum Frame<'a> {
    Subscribed {
        head: u64,
        oldest: u64,
    },
    /// One event, or the events of a batch, each as the server's exact JSON.
    Events(Vec<&'a RawValue>),
    Reset {
        oldest: u64,
    },
    Error {
        code: String,
        message: String,
    },
    /// `pong`, `unsubscribed`, or a frame type newer than this client.
    Other,
}

#[derive(Deserialize)]
struct RawFrame<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
    head: Option<u64>,
    oldest: Option<u64>,
    code: Option<String>,
    message: Option<String>,
}

/// Parses one text frame.
///
/// # Errors
/// The frame is not the JSON DESIGN §3 describes; the message says how.
pub(crate) fn parse_frame(text: &str) -> Result<Frame<'_>, String> {
    let raw: RawFrame<'_> = serde_json::from_str(text).map_err(|e| format!("unreadable frame: {e}"))?;
    let missing = |what: &str| format!("{} frame without {what}", raw.kind);
    Ok(match raw.kind {
        "subscribed" => Frame::Subscribed { head: raw.head.unwrap_or(0), oldest: raw.oldest.unwrap_or(0) },
        "event" => Frame::Events(vec![raw.payload.ok_or_else(|| missing("payload"))?]),
        "batch" => {
            let payload = raw.payload.ok_or_else(|| missing("payload"))?;
            Frame::Events(serde_json::from_str(payload.get()).map_err(|e| format!("batch payload: {e}"))?)
        }
        "reset" => Frame::Reset { oldest: raw.oldest.ok_or_else(|| missing("oldest"))? },
        "error" => Frame::Error { code: raw.code.unwrap_or_default(), message: raw.message.unwrap_or_default() },
        _ => Frame::Other,
    })
}

/// A running tail: its options, and the last seq it printed.
pub struct Tail {
    options: TailOptions,
    ws_url: String,
    /// The last seq printed (or skipped by a `reset`); the next subscription's
    /// `since`. `None` until the starting point is known.
    position: Option<u64>,
    http: reqwest::Client,
    base: reqwest::Url,
    /// The WebSocket's TLS for wss://, the same trust as `http`'s.
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl Tail {
    /// # Errors
    /// The URL is not `http://…`, the filter is malformed, or the HTTP client cannot
    /// be set up.
    pub fn new(options: TailOptions) -> Result<Self, TailError> {
        // A typo in `--types` is reported before connecting, not as an error frame.
        Filter::from_spec(options.filter.clone())?;
        let base = base_url(&options.url)?;
        let mut ws = endpoint(&base, "ws")?;
        // http → ws, https → wss: all are "special" schemes, so the change is allowed.
        let scheme = if base.scheme() == "https" { "wss" } else { "ws" };
        ws.set_scheme(scheme).map_err(|()| BadUrl { url: options.url.clone(), reason: "no ws:// form".into() })?;
        let tls = super::remote::tls_for(&base, options.ca_file.as_deref()).map_err(super::remote::ClientSetup::Tls)?;
        let mut http = reqwest::Client::builder().timeout(CONNECT_TIMEOUT);
        if let Some(tls) = &tls {
            http = http.use_preconfigured_tls(rustls::ClientConfig::clone(tls));
        }
        let http = http.build().map_err(super::remote::ClientSetup::Http)?;
        let position = options.since;
        Ok(Tail { ws_url: ws.to_string(), options, position, http, base, tls })
    }

    /// Prints events to `out` until `shutdown` fires, reconnecting after every
    /// dropped connection. Notices (reconnecting, reset) go to stderr.
    ///
    /// # Errors
    /// Only what another attempt cannot fix: a refused token, a rejected filter, a
    /// failed write to `out`. A closed output (`| head`) ends it without error.
    pub async fn run<W: AsyncWrite + Unpin>(
        &mut self,
        out: &mut W,
        shutdown: CancellationToken,
    ) -> Result<(), TailError> {
        let mut backoff = Backoff::default();
        // The head is read once, before anything is printed: the range is the log as it
        // stood when the tail started, however busy it is while it is read.
        let mut until = None;
        loop {
            let attempt = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                r = async {
                    if !self.options.until_head {
                        return self.connection(out, &mut backoff).await;
                    }
                    let head = match until {
                        Some(head) => head,
                        None => match self.head().await {
                            Ok(head) => {
                                // Without a starting point there is nothing before the head.
                                self.position.get_or_insert(head);
                                *until.insert(head)
                            }
                            Err(retry) => return retry,
                        },
                    };
                    self.pages_until(head, out).await
                } => r,
            };
            if matches!(attempt, Retry::Done) {
                return Ok(());
            }
            let why = match attempt {
                Retry::After(why) => why,
                Retry::Fatal(TailError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                Retry::Fatal(e) => return Err(e),
                Retry::Done => return Ok(()),
            };
            let delay = backoff.next_delay();
            eprintln!("swarmfeed tail: {why}; reconnecting in {:.1} s", delay.as_secs_f64());
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// One connection, from opening it to losing it.
    async fn connection<W: AsyncWrite + Unpin>(&mut self, out: &mut W, backoff: &mut Backoff) -> Retry {
        if self.position.is_none() {
            // Starting from the stored head (not the subscription's own start) makes
            // even the first subscription a `since` one, so a drop before the first
            // event loses nothing either.
            match self.head().await {
                Ok(head) => self.position = Some(head),
                Err(retry) => return retry,
            }
        }
        let mut request = match self.ws_url.as_str().into_client_request() {
            Ok(r) => r,
            Err(e) => {
                return Retry::Fatal(TailError::BadUrl(BadUrl { url: self.ws_url.clone(), reason: e.to_string() }));
            }
        };
        if let Some(token) = &self.options.token {
            match HeaderValue::from_str(&format!("Bearer {token}")) {
                Ok(v) => request.headers_mut().insert("authorization", v),
                Err(_) => return Retry::Fatal(TailError::Unauthorized),
            };
        }
        let connect = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio_tungstenite::connect_async_tls_with_config(
                request,
                None,
                true,
                self.tls.clone().map(tokio_tungstenite::Connector::Rustls),
            ),
        )
        .await;
        let mut ws = match connect {
            Err(_) => return Retry::After(format!("no answer from {} within {CONNECT_TIMEOUT:?}", self.ws_url)),
            Ok(Err(tungstenite::Error::Http(response))) => return upgrade_refused(response.status().as_u16()),
            Ok(Err(e)) => {
                if let Some(reason) = super::remote::tls_failure(&e) {
                    return Retry::Fatal(TailError::Tls { url: self.ws_url.clone(), reason });
                }
                return Retry::After(format!("cannot connect to {}: {e}", self.ws_url));
            }
            Ok(Ok((ws, _))) => ws,
        };
        let subscribe = subscribe_message(&self.options.filter, self.position);
        if let Err(e) = ws.send(Message::text(subscribe)).await {
            return Retry::After(format!("connection lost while subscribing: {e}"));
        }
        let mut subscribed = false;
        loop {
            let message = match tokio::time::timeout(SILENCE_TIMEOUT, ws.next()).await {
                Err(_) => return Retry::After(format!("nothing heard for {} s", SILENCE_TIMEOUT.as_secs())),
                Ok(None) => return Retry::After("the server closed the connection".to_owned()),
                Ok(Some(Err(e))) => return Retry::After(format!("connection lost: {e}")),
                Ok(Some(Ok(m))) => m,
            };
            let text = match message {
                Message::Text(t) => t,
                Message::Close(frame) => {
                    let reason = frame.map(|f| format!(" ({} {})", u16::from(f.code), f.reason)).unwrap_or_default();
                    return Retry::After(format!("the server closed the connection{reason}"));
                }
                // Pings are answered by tungstenite itself; nothing else is ours.
                _ => continue,
            };
            let frame = match parse_frame(&text) {
                Ok(f) => f,
                Err(e) => return Retry::After(format!("the server sent an {e}")),
            };
            match frame {
                Frame::Subscribed { head, .. } => {
                    subscribed = true;
                    backoff.reset();
                    let after = self.position.unwrap_or(head);
                    eprintln!(
                        "swarmfeed tail: watching {} after seq {after} (head {head}); Ctrl-C to stop",
                        self.ws_url
                    );
                }
                Frame::Events(payloads) => {
                    if let Err(e) = self.print(&payloads, out).await {
                        return Retry::Fatal(e);
                    }
                }
                Frame::Reset { oldest } => {
                    eprintln!(
                        "swarmfeed tail: reset: events before seq {oldest} were removed by retention; continuing from {oldest}"
                    );
                    self.position = Some(self.position.unwrap_or(0).max(oldest.saturating_sub(1)));
                }
                Frame::Error { code, message } => {
                    // Before `subscribed`, an error is the answer to our subscription:
                    // sending it again would get the same answer.
                    if !subscribed || code == "bad_request" {
                        return Retry::Fatal(TailError::Rejected(format!("{code}: {message}")));
                    }
                    return Retry::After(format!("the server reported {code}: {message}"));
                }
                Frame::Other => {}
            }
        }
    }

    /// Writes the events of one frame and moves the position past them. Events at
    /// or before the position were printed already and are skipped: the server
    /// promises not to send them, and a resumed tail promises not to repeat them.
    async fn print<W: AsyncWrite + Unpin>(&mut self, payloads: &[&RawValue], out: &mut W) -> Result<(), TailError> {
        let mut buffer = String::new();
        let mut last = self.position;
        for payload in payloads {
            let Ok(event) = serde_json::from_str::<EventPayload>(payload.get()) else {
                eprintln!("swarmfeed tail: skipped an event this client cannot read: {}", payload.get());
                continue;
            };
            if last.is_some_and(|p| event.seq <= p) {
                continue;
            }
            last = Some(event.seq);
            match self.options.output {
                Output::Json => buffer.push_str(payload.get()),
                Output::Text { color } => buffer.push_str(&format_line(&event, &chrono::Local, color)),
            }
            buffer.push('\n');
        }
        out.write_all(buffer.as_bytes()).await.map_err(TailError::Output)?;
        out.flush().await.map_err(TailError::Output)?;
        self.position = last;
        Ok(())
    }

    /// Prints the events after the position up to `head` from `GET /api/events` pages
    /// in seq order. A page the filter matches nothing of still ends the range, so a
    /// narrow filter cannot leave the tail waiting for an event that will not come.
    async fn pages_until<W: AsyncWrite + Unpin>(&mut self, head: u64, out: &mut W) -> Retry {
        #[derive(Deserialize)]
        struct Page<'a> {
            #[serde(borrow)]
            events: Vec<&'a RawValue>,
            next: Option<u64>,
        }
        loop {
            let after = self.position.unwrap_or(0);
            if after >= head {
                return Retry::Done;
            }
            let mut url = match endpoint(&self.base, "api/events") {
                Ok(url) => url,
                Err(e) => return Retry::Fatal(e.into()),
            };
            {
                let mut query = url.query_pairs_mut();
                query.append_pair("after", &after.to_string());
                query.append_pair("before", &(head + 1).to_string());
                query.append_pair("limit", &crate::http::api::MAX_PAGE.to_string());
                let filter = &self.options.filter;
                if !filter.types.is_empty() {
                    query.append_pair("types", &filter.types.join(","));
                }
                for (name, value) in
                    [("task_id", &filter.task_id), ("agent_id", &filter.agent_id), ("source", &filter.source)]
                {
                    if let Some(value) = value {
                        query.append_pair(name, value);
                    }
                }
            }
            let mut request = self.http.get(url.clone());
            if let Some(token) = &self.options.token {
                request = request.bearer_auth(token);
            }
            let response = match request.send().await {
                Ok(r) => r,
                Err(e) => return Retry::After(format!("cannot reach {url}: {e}")),
            };
            let status = response.status().as_u16();
            if status != 200 {
                return upgrade_refused(status);
            }
            let text = match response.text().await {
                Ok(t) => t,
                Err(e) => return Retry::After(format!("connection lost reading {url}: {e}")),
            };
            let page: Page<'_> = match serde_json::from_str(&text) {
                Ok(p) => p,
                Err(e) => return Retry::After(format!("unreadable answer from {url}: {e}")),
            };
            if let Err(e) = self.print(&page.events, out).await {
                return Retry::Fatal(e);
            }
            match page.next {
                // The position is past every event printed; `next` is the same seq.
                Some(next) => self.position = Some(self.position.unwrap_or(0).max(next)),
                // A short page is the end of the range.
                None => return Retry::Done,
            }
        }
    }

    /// The seq of the newest stored event (0 when there is none).
    async fn head(&self) -> Result<u64, Retry> {
        #[derive(Deserialize)]
        struct Page {
            events: Vec<Seq>,
        }
        #[derive(Deserialize)]
        struct Seq {
            seq: u64,
        }
        let url = endpoint(&self.base, "api/events?order=desc&limit=1").map_err(|e| Retry::Fatal(e.into()))?;
        let mut request = self.http.get(url.clone());
        if let Some(token) = &self.options.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| Retry::After(format!("cannot reach {url}: {e}")))?;
        let status = response.status().as_u16();
        if status != 200 {
            return Err(upgrade_refused(status));
        }
        let page: Page =
            response.json().await.map_err(|e| Retry::After(format!("unreadable answer from {url}: {e}")))?;
        Ok(page.events.first().map_or(0, |e| e.seq))
    }
}

/// What an HTTP refusal of the connection means for trying again.
fn upgrade_refused(status: u16) -> Retry {
    match status {
        401 => Retry::Fatal(TailError::Unauthorized),
        403 => {
            Retry::Fatal(TailError::Forbidden("the token needs the read scope, or the origin is not allowed".into()))
        }
        // Over a limit, or a server starting or stopping: waiting helps.
        429 | 500..=599 => Retry::After(format!("the server answered HTTP {status}")),
        other => Retry::Fatal(TailError::Refused(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(json: &str) -> EventPayload {
        serde_json::from_str(json).unwrap()
    }

    const ASSIGNED: &str = r#"{"seq":42,"id":"x","event_type":"task.assigned","source":"coordinator","task_id":"t1",
        "agent_id":"forge","timestamp":"2026-01-31T12:34:56.789Z","data":{"bid_sats":21}}"#;

    #[test]
    fn a_line_shows_time_icon_display_source_ids_and_seq() {
        let line = format_line(&view(ASSIGNED), &chrono::Utc, false);
        assert_eq!(line, "12:34:56 👤 Task assigned to forge (21 sats)  coordinator task t1 agent forge  #42");
    }

    #[test]
    fn the_time_is_shown_in_the_viewers_time_zone() {
        let plus_two = chrono::FixedOffset::east_opt(2 * 3600).unwrap();
        assert!(format_line(&view(ASSIGNED), &plus_two, false).starts_with("14:34:56 "));
    }

    #[test]
    fn unknown_types_show_the_unknown_icon_and_their_name() {
        let e = view(
            r#"{"seq":1,"id":"d","event_type":"deploy.started","source":"ci","timestamp":"2026-01-31T00:00:00Z","data":{}}"#,
        );
        assert_eq!(format_line(&e, &chrono::Utc, false), "00:00:00 • deploy.started  ci  #1");
    }

    #[test]
    fn failures_are_red_and_plain_output_has_no_escapes() {
        let failed = view(
            r#"{"seq":3,"id":"f","event_type":"task.failed","source":"c","timestamp":"2026-01-31T00:00:00Z","data":{"reason":"no bids received"}}"#,
        );
        let coloured = format_line(&failed, &chrono::Utc, true);
        assert!(coloured.contains(&format!("{BOLD_RED}Task failed: no bids received{RESET}")), "{coloured:?}");
        let plain = format_line(&failed, &chrono::Utc, false);
        assert!(!plain.contains('\x1b'), "{plain:?}");
        let normal = format_line(&view(ASSIGNED), &chrono::Utc, true);
        assert!(!normal.contains(BOLD_RED));
    }

    #[test]
    fn event_data_cannot_send_escape_sequences_to_the_terminal() {
        let e = view(
            r#"{"seq":1,"id":"i","event_type":"system.info","source":"s","timestamp":"2026-01-31T00:00:00Z",
               "data":{"message":"hi\u001b[2J\u202eevil\nnext"}}"#,
        );
        let line = format_line(&e, &chrono::Utc, false);
        assert!(!line.contains('\x1b') && !line.contains('\n') && !line.contains('\u{202e}'), "{line:?}");
        assert!(line.contains("hi\u{fffd}[2J\u{fffd}evil\u{fffd}next"));
    }

    #[test]
    fn colour_is_off_without_a_terminal_or_with_no_color() {
        use std::ffi::OsStr;
        assert!(use_color(true, None));
        assert!(use_color(true, Some(OsStr::new(""))), "an empty NO_COLOR does not count");
        assert!(!use_color(true, Some(OsStr::new("1"))));
        assert!(!use_color(false, None));
    }

    #[test]
    fn batch_frames_yield_each_payload_verbatim() {
        let text = r#"{"type":"batch","payload":[{"seq":1,"b":2,"a":1},{"seq":2}]}"#;
        let Ok(Frame::Events(events)) = parse_frame(text) else { panic!("not events") };
        assert_eq!(events.iter().map(|e| e.get()).collect::<Vec<_>>(), [r#"{"seq":1,"b":2,"a":1}"#, r#"{"seq":2}"#]);
        let Ok(Frame::Events(one)) = parse_frame(r#"{"type":"event","payload":{"seq":9}}"#) else { panic!() };
        assert_eq!(one[0].get(), r#"{"seq":9}"#);
    }

    #[test]
    fn control_frames_parse_and_malformed_ones_say_why() {
        assert!(matches!(parse_frame(r#"{"type":"reset","oldest":40}"#), Ok(Frame::Reset { oldest: 40 })));
        assert!(matches!(
            parse_frame(r#"{"type":"subscribed","channel":"events","head":5,"oldest":1}"#),
            Ok(Frame::Subscribed { head: 5, oldest: 1 })
        ));
        assert!(matches!(parse_frame(r#"{"type":"pong"}"#), Ok(Frame::Other)));
        assert!(parse_frame(r#"{"type":"event"}"#).unwrap_err().contains("without payload"));
        assert!(parse_frame("nope").unwrap_err().contains("unreadable"));
    }

    #[test]
    fn subscribe_messages_carry_since_and_only_the_filters_given_and_ask_for_batches() {
        let filter = TailFilter { types: vec!["task.*".into()], task_id: Some("t1".into()), ..TailFilter::default() };
        let message: Value = serde_json::from_str(&subscribe_message(&filter, Some(7))).unwrap();
        assert_eq!(
            message,
            serde_json::json!({"action":"subscribe","channel":"events","since":7,
                               "filter":{"types":["task.*"],"task_id":"t1"},"batch":true})
        );
        let live: Value = serde_json::from_str(&subscribe_message(&TailFilter::default(), None)).unwrap();
        assert_eq!(live.get("since"), None);
    }

    #[test]
    fn a_bad_type_pattern_is_refused_before_connecting() {
        let options = TailOptions {
            url: "http://127.0.0.1:1".into(),
            ca_file: None,
            token: None,
            filter: TailFilter { types: vec!["Task".into()], ..TailFilter::default() },
            since: None,
            until_head: false,
            output: Output::Json,
        };
        assert!(matches!(Tail::new(options), Err(TailError::BadFilter(_))));
    }

    #[test]
    fn the_websocket_url_is_derived_from_the_base_url() {
        let tail = |url: &str| {
            Tail::new(TailOptions {
                url: url.into(),
                ca_file: None,
                token: None,
                filter: TailFilter::default(),
                since: None,
                until_head: false,
                output: Output::Json,
            })
        };
        assert_eq!(tail("http://127.0.0.1:8000").unwrap().ws_url, "ws://127.0.0.1:8000/ws");
        assert_eq!(tail("http://h:1/feed").unwrap().ws_url, "ws://h:1/feed/ws");
        assert_eq!(tail("https://h:1/feed").unwrap().ws_url, "wss://h:1/feed/ws");
        assert!(matches!(tail("ftp://h"), Err(TailError::BadUrl(_))));
    }
}
