//! `swarmfeed emit`: posting events from the command line, one or a JSON-lines file.
//!
//! Owns the producer side of `POST /api/events` (DESIGN §4): building an event from
//! flags, reading and checking a file, cutting it into batches, retrying what the
//! server asks to be retried, and the ids that make every retry and every re-run
//! idempotent. Events are checked with the server's own rules ([`IngestRules`]) before
//! anything is sent, so a bad line is reported with its number and nothing of the file
//! is posted. It does not parse the command line (`cli`) or print (`main`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::{StatusCode, Url, header};
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use super::backoff::Backoff;
use super::remote::{BadUrl, base_url, endpoint};
use crate::ingest::{IngestRules, Invalid, MAX_BATCH};

/// Attempts per request, the first included, before giving up on a busy or
/// unreachable server.
pub(crate) const MAX_ATTEMPTS: u32 = 6;
/// Longest `Retry-After` honoured; a longer one is cut to this.
pub(crate) const MAX_RETRY_WAIT: Duration = Duration::from_secs(30);
/// Longest one request may take, body and answer included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Most events in one request: the server's batch limit.
pub const BATCH_EVENTS: usize = MAX_BATCH;
/// Most body bytes in one request; a quarter of the server's default body limit
/// (16 MiB), so that a batch of large events is split rather than refused with 413.
pub(crate) const BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Longest line of a file, bytes; a longer one is reported, not read into memory.
pub(crate) const MAX_LINE_BYTES: usize = 1024 * 1024;

/// What went wrong, named for the person who typed the command.
#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    #[error(transparent)]
    BadUrl(#[from] BadUrl),
    #[error(transparent)]
    Client(#[from] super::remote::ClientSetup),
    #[error("--data is not a JSON object: {0}")]
    Data(String),
    #[error("{flag}: {message}")]
    Invalid { flag: &'static str, message: String },
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{} line {line}: {message}", path.display())]
    Line { path: PathBuf, line: usize, message: String },
    #[error("{} holds no events", path.display())]
    NoEvents { path: PathBuf },
    #[error("{} changed while it was being posted; what was posted stays stored", path.display())]
    Changed { path: PathBuf },
    #[error("the server refused the token (401); pass --token or set SWARMFEED_TOKEN")]
    Unauthorized,
    #[error("the server refused (HTTP {status}, {code}): {message}")]
    Rejected { status: u16, code: String, message: String, index: Option<usize> },
    #[error("the server stayed busy (HTTP {status}) through {attempts} attempts; nothing more was posted")]
    Busy { status: u16, attempts: u32 },
    #[error("the TLS handshake with {url} failed: {reason}; {hint}", hint = super::remote::TLS_HINT)]
    Tls { url: Url, reason: String },
    #[error("cannot reach {url} after {attempts} attempts: {source}")]
    Unreachable { url: Url, attempts: u32, source: reqwest::Error },
    #[error("unreadable answer from the server: {0}")]
    Answer(String),
}

/// One event as the server acknowledged it.
#[derive(Debug, Clone, Deserialize)]
pub struct Accepted {
    pub id: String,
    pub seq: u64,
    /// The id was stored before; nothing new was stored.
    #[serde(default)]
    pub duplicate: bool,
}

/// The rules events are checked with before sending: the server's, except the size of
/// `data`, whose limit is the server's setting (`--max-data-bytes`) and unknown here.
fn local_rules() -> IngestRules {
    IngestRules { max_data_bytes: usize::MAX, ..IngestRules::default() }
}

/// Which flag of `emit` a field of the event comes from.
fn flag_of(field: Option<&str>) -> &'static str {
    match field {
        Some("event_type") => "TYPE",
        Some("source") => "--source",
        Some("task_id") => "--task",
        Some("agent_id") => "--agent",
        Some("data") => "--data",
        Some("id") => "--id",
        _ => "event",
    }
}

/// The flags of one `emit` command.
#[derive(Debug, Clone, Default)]
pub struct EventFlags {
    pub event_type: String,
    pub source: String,
    pub task: Option<String>,
    pub agent: Option<String>,
    /// JSON text of the `data` object.
    pub data: Option<String>,
    pub id: Option<String>,
}

/// Builds and checks the event of one `emit` command. Without `--id` it gets a new
/// UUIDv7 here, not at the server, so that a retry after a lost answer cannot store
/// it twice.
///
/// # Errors
/// [`EmitError::Data`] or [`EmitError::Invalid`] naming the flag.
pub fn single_event(flags: EventFlags) -> Result<Map<String, Value>, EmitError> {
    let mut event = Map::new();
    event.insert("id".into(), flags.id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string()).into());
    event.insert("event_type".into(), flags.event_type.into());
    event.insert("source".into(), flags.source.into());
    if let Some(task) = flags.task {
        event.insert("task_id".into(), task.into());
    }
    if let Some(agent) = flags.agent {
        event.insert("agent_id".into(), agent.into());
    }
    if let Some(data) = flags.data {
        match serde_json::from_str::<Value>(&data) {
            Ok(object @ Value::Object(_)) => event.insert("data".into(), object),
            Ok(_) => return Err(EmitError::Data("it is JSON, but not an object {…}".into())),
            Err(e) => return Err(EmitError::Data(e.to_string())),
        };
    }
    match local_rules().event(0, event.clone()) {
        Ok(_) => Ok(event),
        Err(Invalid::Event { field, message, .. }) => {
            Err(EmitError::Invalid { flag: flag_of(field.as_deref()), message })
        }
        Err(other) => Err(EmitError::Invalid { flag: "event", message: other.to_string() }),
    }
}

/// The id of the event on line `line` (1-based) of a file whose content hashes to
/// `file_digest`, when the line has none of its own: 64 hex digits of
/// SHA-256(file digest ‖ line number).
///
/// Deriving it from the whole file's content means posting the same file again
/// stores nothing new, while another file that happens to hold an identical line
/// (tomorrow's run of the same job) is not mistaken for a repeat. The price: an edited
/// or appended file is a new file, and its events are posted again.
pub fn line_id(file_digest: &[u8; 32], line: usize) -> String {
    let mut hash = Sha256::new();
    hash.update(file_digest);
    hash.update((line as u64).to_be_bytes());
    hex::encode(hash.finalize())
}

/// Posts events, retrying what can be retried.
#[derive(Debug, Clone)]
pub struct Emitter {
    http: reqwest::Client,
    events_url: Url,
    token: Option<String>,
}

impl Emitter {
    /// # Errors
    /// The URL is not `http://…` or `https://…`, or the HTTP client cannot be set up
    /// (`ca_file`, trusted instead of the system's roots, cannot be used).
    pub fn new(url: &str, token: Option<String>, ca_file: Option<&std::path::Path>) -> Result<Self, EmitError> {
        let base = base_url(url)?;
        let events_url = endpoint(&base, "api/events")?;
        let http = super::remote::http_client(&base, ca_file, REQUEST_TIMEOUT)?;
        Ok(Emitter { http, events_url, token })
    }

    /// Posts one event.
    ///
    /// # Errors
    /// As [`Emitter::post_body`].
    pub async fn post_one(&self, event: &Map<String, Value>) -> Result<Accepted, EmitError> {
        let body = serde_json::to_string(event).map_err(|e| EmitError::Data(e.to_string()))?;
        self.post_body(body).await?.into_iter().next().ok_or_else(|| EmitError::Answer("no event in the answer".into()))
    }

    /// POSTs a body (an event or an array) and returns what was stored. Every event
    /// carries an id, so sending the same body again after a lost answer stores
    /// nothing twice: 429, 503 and 507 are retried after their `Retry-After` (at most
    /// [`MAX_RETRY_WAIT`]), an unreachable server after a growing delay, up to
    /// [`MAX_ATTEMPTS`] in all. Each retry is announced on stderr.
    ///
    /// # Errors
    /// [`EmitError::Unauthorized`], [`EmitError::Rejected`] (with the failing event's
    /// index in the body), [`EmitError::Busy`] or [`EmitError::Unreachable`] after the
    /// last attempt, [`EmitError::Answer`] for a 201 that does not parse.
    pub(crate) async fn post_body(&self, body: String) -> Result<Vec<Accepted>, EmitError> {
        let mut backoff = Backoff::default();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut request = self
                .http
                .post(self.events_url.clone())
                .header(header::CONTENT_TYPE, "application/json")
                .body(body.clone());
            if let Some(token) = &self.token {
                request = request.bearer_auth(token);
            }
            let wait = match request.send().await {
                Err(source) => {
                    if let Some(reason) = super::remote::tls_failure(&source) {
                        return Err(EmitError::Tls { url: self.events_url.clone(), reason });
                    }
                    if attempt >= MAX_ATTEMPTS {
                        return Err(EmitError::Unreachable { url: self.events_url.clone(), attempts: attempt, source });
                    }
                    let wait = backoff.next_delay();
                    eprintln!(
                        "swarmfeed emit: cannot reach the server ({source}); retrying in {:.1} s",
                        wait.as_secs_f64()
                    );
                    wait
                }
                Ok(response) => match response.status() {
                    StatusCode::CREATED => {
                        #[derive(Deserialize)]
                        struct Answer {
                            events: Vec<Accepted>,
                        }
                        let answer: Answer = response.json().await.map_err(|e| EmitError::Answer(e.to_string()))?;
                        return Ok(answer.events);
                    }
                    StatusCode::UNAUTHORIZED => return Err(EmitError::Unauthorized),
                    status @ (StatusCode::TOO_MANY_REQUESTS
                    | StatusCode::SERVICE_UNAVAILABLE
                    | StatusCode::INSUFFICIENT_STORAGE) => {
                        if attempt >= MAX_ATTEMPTS {
                            return Err(EmitError::Busy { status: status.as_u16(), attempts: attempt });
                        }
                        let fallback = backoff.next_delay();
                        let wait = retry_after(response.headers()).unwrap_or(fallback).min(MAX_RETRY_WAIT);
                        let why = if status == StatusCode::INSUFFICIENT_STORAGE { "its disk is full" } else { "busy" };
                        eprintln!(
                            "swarmfeed emit: server {why} (HTTP {}); retrying in {:.1} s",
                            status.as_u16(),
                            wait.as_secs_f64()
                        );
                        wait
                    }
                    status => return Err(rejection(status, response.bytes().await.unwrap_or_default().as_ref())),
                },
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// `Retry-After` in seconds (the form swarmfeed sends); an HTTP date is not honoured.
fn retry_after(headers: &header::HeaderMap) -> Option<Duration> {
    let secs: u64 = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(secs))
}

/// The error of a refused request, from the body of DESIGN §4:
/// `{"error":{"code","message","field"?,"index"?}}`.
fn rejection(status: StatusCode, body: &[u8]) -> EmitError {
    #[derive(Deserialize)]
    struct Body {
        error: Detail,
    }
    #[derive(Deserialize)]
    struct Detail {
        code: String,
        message: String,
        index: Option<usize>,
    }
    match serde_json::from_slice::<Body>(body) {
        Ok(Body { error }) => EmitError::Rejected {
            status: status.as_u16(),
            code: error.code,
            message: error.message,
            index: error.index,
        },
        Err(_) => EmitError::Rejected {
            status: status.as_u16(),
            code: "http".into(),
            message: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
            index: None,
        },
    }
}

/// A file that was read through and found good: what posting it needs.
#[derive(Debug, Clone)]
pub struct CheckedFile {
    pub path: PathBuf,
    /// SHA-256 of the bytes checked; the seed of [`line_id`].
    pub digest: [u8; 32],
    /// Bytes checked; posting reads no further, so lines appended since are left out.
    pub len: u64,
    pub events: usize,
}

/// What posting a file did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileReport {
    pub events: usize,
    /// Events stored by this run.
    pub new: usize,
    /// Events whose id was stored already (an earlier run, or its own `id`).
    pub duplicates: usize,
    pub batches: usize,
    /// The first and last seq of the file's events.
    pub seqs: Option<(u64, u64)>,
}

/// Reads a file line by line, at most [`MAX_LINE_BYTES`] a line, hashing what it reads.
struct LineReader {
    path: PathBuf,
    reader: tokio::io::Take<BufReader<tokio::fs::File>>,
    /// The number of the line read last, 1-based.
    number: usize,
    bytes: u64,
    buffer: Vec<u8>,
    hash: Sha256,
}

impl LineReader {
    /// Opens `path` to read at most `limit` bytes of it.
    async fn open(path: &Path, limit: u64) -> Result<Self, EmitError> {
        let file =
            tokio::fs::File::open(path).await.map_err(|source| EmitError::Read { path: path.to_owned(), source })?;
        Ok(LineReader {
            path: path.to_owned(),
            reader: BufReader::new(file).take(limit),
            number: 0,
            bytes: 0,
            buffer: Vec::new(),
            hash: Sha256::new(),
        })
    }

    /// The next line that is not blank, with its number, without its line ending.
    async fn next(&mut self) -> Result<Option<(usize, &str)>, EmitError> {
        loop {
            self.buffer.clear();
            self.number += 1;
            // One byte over the cap tells a line at the cap from a longer one.
            let cap = MAX_LINE_BYTES as u64 + 1;
            let read = (&mut self.reader).take(cap).read_until(b'\n', &mut self.buffer).await;
            let n = read.map_err(|source| EmitError::Read { path: self.path.clone(), source })?;
            if n == 0 {
                return Ok(None);
            }
            let content = self.buffer.strip_suffix(b"\n").unwrap_or(&self.buffer);
            if content.len() > MAX_LINE_BYTES {
                return Err(self.line_error(format!("is longer than {MAX_LINE_BYTES} bytes")));
            }
            self.bytes += n as u64;
            self.hash.update(&self.buffer);
            if self.buffer.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let number = self.number;
            return match std::str::from_utf8(&self.buffer) {
                Ok(text) => Ok(Some((number, text.trim_end()))),
                Err(e) => Err(self.line_error(format!("is not UTF-8 text ({e})"))),
            };
        }
    }

    fn line_error(&self, message: String) -> EmitError {
        EmitError::Line { path: self.path.clone(), line: self.number, message }
    }

    /// SHA-256 of every byte read.
    fn digest(self) -> [u8; 32] {
        self.hash.finalize().into()
    }
}

/// One line of a file as an event object; without an `id` of its own it gets
/// [`line_id`].
fn line_event(path: &Path, digest: &[u8; 32], number: usize, text: &str) -> Result<Map<String, Value>, EmitError> {
    let line_error = |message: String| EmitError::Line { path: path.to_owned(), line: number, message };
    let mut event = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => map,
        Ok(_) => return Err(line_error("is not a JSON object {…}".into())),
        Err(e) => return Err(line_error(format!("is not JSON: {e}"))),
    };
    if event.get("id").is_none_or(Value::is_null) {
        event.insert("id".into(), line_id(digest, number).into());
    }
    Ok(event)
}

/// Reads `path` through, hashing it and checking every event with the server's rules,
/// so that a bad line stops the command before anything is posted.
///
/// # Errors
/// The file cannot be read, a line is not a valid event (named by its number), or
/// there is no event in it.
pub async fn check_file(path: &Path) -> Result<CheckedFile, EmitError> {
    let rules = local_rules();
    let mut reader = LineReader::open(path, u64::MAX).await?;
    let mut events = 0;
    // The ids depend on the digest of the whole file, unknown until the end; any id
    // of that shape passes the rules, so a placeholder digest checks the same.
    let placeholder = [0; 32];
    while let Some((number, text)) = reader.next().await? {
        let event = line_event(path, &placeholder, number, text)?;
        rules.event(0, event).map_err(|e| {
            let message = match e {
                Invalid::Event { message, .. } => message,
                other => other.to_string(),
            };
            EmitError::Line { path: path.to_owned(), line: number, message }
        })?;
        events += 1;
    }
    if events == 0 {
        return Err(EmitError::NoEvents { path: path.to_owned() });
    }
    let len = reader.bytes;
    Ok(CheckedFile { path: path.to_owned(), digest: reader.digest(), len, events })
}

/// Events waiting to be posted together, and the line each came from.
#[derive(Default)]
struct Batch {
    body: String,
    lines: Vec<usize>,
}

impl Batch {
    /// Whether `json` still fits, by count and by bytes.
    fn fits(&self, json: &str) -> bool {
        self.lines.is_empty() || (self.lines.len() < BATCH_EVENTS && self.body.len() + json.len() + 2 <= BATCH_BYTES)
    }

    fn push(&mut self, line: usize, json: &str) {
        self.body.push(if self.lines.is_empty() { '[' } else { ',' });
        self.body.push_str(json);
        self.lines.push(line);
    }
}

/// Posts a checked file in batches of up to [`BATCH_EVENTS`] events (and
/// [`BATCH_BYTES`]), in file order; `progress(done, total)` is called after each.
/// Posting it again stores nothing new: every event has an id, its own or
/// [`line_id`].
///
/// # Errors
/// The server refused an event (named by its line) or a batch, stayed busy or
/// unreachable, or the file changed since it was checked. Batches posted before the
/// error stay stored; a re-run after a fix posts only the rest.
pub async fn post_file(
    emitter: &Emitter,
    file: &CheckedFile,
    mut progress: impl FnMut(usize, usize),
) -> Result<FileReport, EmitError> {
    let mut reader = LineReader::open(&file.path, file.len).await?;
    let mut report = FileReport::default();
    let mut batch = Batch::default();
    loop {
        let line = reader.next().await?;
        let json = match line {
            Some((number, text)) => {
                let event = line_event(&file.path, &file.digest, number, text)
                    .map_err(|_| EmitError::Changed { path: file.path.clone() })?;
                Some((number, Value::Object(event).to_string()))
            }
            None => None,
        };
        let full = json.as_ref().is_none_or(|(_, json)| !batch.fits(json));
        if full && !batch.lines.is_empty() {
            let sent = std::mem::take(&mut batch);
            post_batch(emitter, file, sent, &mut report).await?;
            progress(report.events, file.events);
        }
        match json {
            Some((number, json)) => batch.push(number, &json),
            None => break,
        }
    }
    if reader.digest() != file.digest {
        return Err(EmitError::Changed { path: file.path.clone() });
    }
    Ok(report)
}

async fn post_batch(
    emitter: &Emitter,
    file: &CheckedFile,
    mut batch: Batch,
    report: &mut FileReport,
) -> Result<(), EmitError> {
    batch.body.push(']');
    let accepted = emitter.post_body(batch.body).await.map_err(|e| match e {
        EmitError::Rejected { message, index: Some(i), .. } if i < batch.lines.len() => EmitError::Line {
            path: file.path.clone(),
            line: batch.lines[i],
            message: format!("the server refused it: {message}"),
        },
        EmitError::Rejected { status, code, message, .. } => EmitError::Line {
            path: file.path.clone(),
            line: batch.lines[0],
            message: format!(
                "the server refused the batch of lines {} to {} (HTTP {status}, {code}): {message}",
                batch.lines[0],
                batch.lines[batch.lines.len() - 1]
            ),
        },
        other => other,
    })?;
    report.batches += 1;
    report.events += accepted.len();
    for a in &accepted {
        if a.duplicate {
            report.duplicates += 1;
        } else {
            report.new += 1;
        }
        report.seqs = Some(report.seqs.map_or((a.seq, a.seq), |(lo, hi)| (lo.min(a.seq), hi.max(a.seq))));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(event_type: &str) -> EventFlags {
        EventFlags { event_type: event_type.into(), source: "cli".into(), ..EventFlags::default() }
    }

    #[test]
    fn line_ids_are_stable_distinct_and_short_enough() {
        let a = [1; 32];
        let b = [2; 32];
        assert_eq!(line_id(&a, 7), line_id(&a, 7), "the same file and line give the same id");
        assert_ne!(line_id(&a, 7), line_id(&a, 8), "each line has its own");
        assert_ne!(line_id(&a, 7), line_id(&b, 7), "another file has its own");
        assert_eq!(line_id(&a, 7).len(), 64);
        assert!(line_id(&a, 7).len() <= crate::event::MAX_ID_CHARS);
        // Pinned, so that a change of the derivation, which would make re-runs of old
        // files post their events again, is a visible decision.
        assert_eq!(line_id(&[0; 32], 1), {
            let mut h = Sha256::new();
            h.update([0u8; 32]);
            h.update(1u64.to_be_bytes());
            hex::encode(h.finalize())
        });
    }

    #[test]
    fn a_single_event_gets_an_id_before_it_is_sent() {
        let event = single_event(flags("task.created")).unwrap();
        assert_eq!(event["id"].as_str().unwrap().len(), 36);
        let mine = single_event(EventFlags { id: Some("k1".into()), ..flags("task.created") }).unwrap();
        assert_eq!(mine["id"], "k1");
    }

    #[test]
    fn a_single_event_carries_exactly_the_flags_given() {
        let event = single_event(EventFlags {
            task: Some("t1".into()),
            data: Some(r#"{"description":"sort"}"#.into()),
            ..flags("task.created")
        })
        .unwrap();
        assert_eq!(event["task_id"], "t1");
        assert_eq!(event["data"]["description"], "sort");
        assert!(event.get("agent_id").is_none());
    }

    #[test]
    fn bad_flags_are_named() {
        let err = single_event(flags("Task")).unwrap_err();
        assert!(matches!(err, EmitError::Invalid { flag: "TYPE", .. }), "{err}");
        let err = single_event(EventFlags { data: Some("[1]".into()), ..flags("a.b") }).unwrap_err();
        assert!(err.to_string().starts_with("--data is not a JSON object"), "{err}");
        let err = single_event(EventFlags { data: Some("{".into()), ..flags("a.b") }).unwrap_err();
        assert!(matches!(err, EmitError::Data(_)));
        let err = single_event(EventFlags { task: Some("x".repeat(129)), ..flags("a.b") }).unwrap_err();
        assert!(err.to_string().starts_with("--task: "), "{err}");
    }

    async fn check(content: &str) -> Result<CheckedFile, EmitError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        std::fs::write(&path, content).unwrap();
        check_file(&path).await
    }

    #[tokio::test]
    async fn blank_lines_are_skipped_and_the_digest_is_the_files() {
        let content = "\n{\"event_type\":\"a.b\",\"source\":\"s\"}\n  \n{\"event_type\":\"a.c\",\"source\":\"s\"}";
        let checked = check(content).await.unwrap();
        assert_eq!(checked.events, 2);
        assert_eq!(checked.len, content.len() as u64);
        assert_eq!(checked.digest, <[u8; 32]>::from(Sha256::digest(content.as_bytes())));
    }

    #[tokio::test]
    async fn a_bad_line_is_named_by_its_number() {
        let good = r#"{"event_type":"a.b","source":"s"}"#;
        for (bad, says) in [
            ("not json", "is not JSON"),
            ("[1,2]", "is not a JSON object"),
            (r#"{"event_type":"a.b"}"#, "source is required"),
            (r#"{"event_type":"a.b","source":"s","seq":1}"#, "seq is set by the server"),
            (r#"{"event_type":"a.b","source":"s","colour":1}"#, "unknown field"),
        ] {
            let err = check(&format!("{good}\n\n{bad}\n{good}\n")).await.unwrap_err();
            let EmitError::Line { line, message, .. } = &err else { panic!("{err}") };
            assert_eq!(*line, 3, "{bad}");
            assert!(message.contains(says), "{bad}: {message}");
        }
    }

    #[tokio::test]
    async fn an_overlong_line_is_refused_without_reading_it_whole() {
        let long = format!(r#"{{"event_type":"a.b","source":"s","data":{{"x":"{}"}}}}"#, "y".repeat(MAX_LINE_BYTES));
        let err = check(&long).await.unwrap_err();
        assert!(err.to_string().contains("line 1: is longer than"), "{err}");
    }

    #[tokio::test]
    async fn a_file_without_events_is_an_error() {
        assert!(matches!(check("\n \n").await, Err(EmitError::NoEvents { .. })));
    }

    #[test]
    fn batches_close_at_the_event_or_byte_limit() {
        let mut batch = Batch::default();
        for i in 0..BATCH_EVENTS {
            assert!(batch.fits("{}"));
            batch.push(i + 1, "{}");
        }
        assert!(!batch.fits("{}"), "no more than {BATCH_EVENTS} events");
        let mut batch = Batch::default();
        let big = "x".repeat(BATCH_BYTES / 2);
        assert!(batch.fits(&big));
        batch.push(1, &big);
        assert!(!batch.fits(&big), "no more than {BATCH_BYTES} bytes");
        assert!(Batch::default().fits(&"x".repeat(BATCH_BYTES * 2)), "one event always goes, the server judges it");
    }

    #[test]
    fn refusals_are_read_from_the_error_body() {
        let body = br#"{"error":{"code":"invalid_event","message":"event 3: data must be a JSON object","field":"data","index":3}}"#;
        let err = rejection(StatusCode::BAD_REQUEST, body);
        assert!(matches!(err, EmitError::Rejected { status: 400, index: Some(3), .. }), "{err}");
        let err = rejection(StatusCode::PAYLOAD_TOO_LARGE, b"too large");
        assert!(err.to_string().contains("HTTP 413"), "{err}");
    }

    #[test]
    fn retry_after_is_read_in_seconds() {
        let mut headers = header::HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(header::RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        headers.insert(header::RETRY_AFTER, "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap());
        assert_eq!(retry_after(&headers), None);
    }
}
