//! Webhooks (DESIGN §11): the log pushed to other programs over HTTP, signed as the
//! Standard Webhooks specification says.
//!
//! Each webhook is a durable cursor: a filter and the last seq it delivered, kept in
//! the store, so delivery resumes after a restart, or on another node after a leader
//! change, without skipping or reordering. Only the holder of the store's
//! [`Leadership`] delivers. [`spawn`] starts the scheduler: while this node leads it
//! runs one task per webhook ([`runner`]), each reading the log through its own
//! [`crate::cursor::Cursor`] and retrying its current delivery until the receiver
//! takes it, so a failing webhook holds up nothing but itself, and ingest never waits
//! for any of them.
//!
//! - [`sign`]: the secret and the `webhook-signature` header.
//! - [`ssrf`]: which destinations may be reached, checked at creation and at connect.
//! - [`delivery`]: what is sent (a batch, or Slack's text per event) and one attempt.
//! - [`runner`]: one webhook's loop: read, deliver, retry, record.
//!
//! This module owns the scheduler and the webhooks' in-memory positions; the HTTP
//! surface (`http::webhooks`, the page) and the store's rows are not its.

pub(crate) mod delivery;
pub(crate) mod runner;
pub(crate) mod sign;
pub(crate) mod ssrf;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::event::format_timestamp;
use crate::filter::{Filter, FilterSpec};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::store::{Leadership, Store, WebhookOutcome, WebhookRecord};

/// Most webhooks a server keeps: each is a task and a few metric series while this
/// node leads.
pub(crate) const MAX_WEBHOOKS: usize = 100;
/// Most events in one delivery (DESIGN §11).
pub(crate) const MAX_BATCH_EVENTS: usize = 100;
/// Default first delay before a failed delivery is tried again (`--webhook-retry-min-secs`).
pub(crate) const DEFAULT_RETRY_MIN: Duration = Duration::from_secs(1);
/// Default longest delay between attempts (`--webhook-retry-max-secs`).
pub(crate) const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(300);
/// How long one attempt may take before it counts as failed (DESIGN §11; no flag).
pub(crate) const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the leader re-reads the webhooks, to pick up those another node's API
/// added or removed; this node's own changes wake it at once.
const RELOAD_EVERY: Duration = Duration::from_secs(1);

/// How webhooks are delivered.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Let webhooks reach loopback, private and link-local addresses
    /// (`--webhook-allow-private`; default off: SSRF protection).
    pub allow_private: bool,
    /// The first delay after a failed attempt; doubled after each further failure
    /// (`--webhook-retry-min-secs`, default 1 s).
    pub retry_min: Duration,
    /// The longest delay between attempts (`--webhook-retry-max-secs`, default 300 s).
    pub retry_max: Duration,
    /// How long one attempt may take ([`ATTEMPT_TIMEOUT`]).
    pub attempt_timeout: Duration,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            allow_private: false,
            retry_min: DEFAULT_RETRY_MIN,
            retry_max: DEFAULT_RETRY_MAX,
            attempt_timeout: ATTEMPT_TIMEOUT,
        }
    }
}

/// What a webhook sends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Format {
    /// `{"events":[…]}`, up to 100 events a delivery, signed.
    #[default]
    Standard,
    /// `{"text":"…"}` per event, for Slack and Mattermost incoming webhooks, and Discord's at its `/slack` URL.
    Slack,
}

impl Format {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Format::Standard => "standard",
            Format::Slack => "slack",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "standard" => Some(Format::Standard),
            "slack" => Some(Format::Slack),
            _ => None,
        }
    }
}

/// A stored webhook that cannot run: its row was written by something else than
/// this server's API, or damaged.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Unusable {
    #[error("its url cannot be parsed: {0}")]
    Url(String),
    #[error("its filter cannot be read: {0}")]
    Filter(String),
    #[error("its format {0:?} is unknown")]
    Format(String),
    #[error("its secret is unusable: {0}")]
    Secret(#[from] sign::BadSecret),
}

/// A webhook as the runner uses it: its stored row, parsed.
#[derive(Debug, Clone)]
pub(crate) struct Hook {
    pub(crate) id: String,
    pub(crate) url: reqwest::Url,
    pub(crate) filter: Filter,
    pub(crate) format: Format,
    pub(crate) secret: sign::Secret,
    pub(crate) delivered_seq: u64,
}

impl Hook {
    /// # Errors
    /// [`Unusable`] naming the field that cannot be read.
    pub(crate) fn from_record(r: &WebhookRecord) -> Result<Self, Unusable> {
        let spec: FilterSpec = serde_json::from_str(&r.filter).map_err(|e| Unusable::Filter(e.to_string()))?;
        Ok(Hook {
            id: r.id.clone(),
            url: reqwest::Url::parse(&r.url).map_err(|e| Unusable::Url(e.to_string()))?,
            filter: Filter::from_spec(spec).map_err(|e| Unusable::Filter(e.to_string()))?,
            format: Format::parse(&r.format).ok_or_else(|| Unusable::Format(r.format.clone()))?,
            secret: sign::Secret::parse(&r.secret)?,
            delivered_seq: r.delivered_seq,
        })
    }

    /// What, of a stored row, decides how its task runs: a row that changes in any of
    /// these (it cannot through the API, but another build could) gets a new task.
    fn identity(r: &WebhookRecord) -> (String, String, String, String) {
        (r.url.clone(), r.filter.clone(), r.format.clone(), r.secret.clone())
    }
}

/// A webhook as `GET /api/webhooks` and the Webhooks page show it: everything but the
/// secret.
/// The `webhook` CLI reads the API's list back into it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WebhookView {
    pub id: String,
    pub url: String,
    /// The filter's fields, as given (absent ones match everything).
    #[schema(value_type = Object)]
    pub filter: serde_json::Value,
    pub format: String,
    /// The last seq delivered or passed over as not matching.
    pub delivered_seq: u64,
    /// Events committed after `delivered_seq` (matching the filter or not).
    pub lag: u64,
    /// The HTTP status of the last attempt, if it got an answer.
    pub last_status: Option<u16>,
    /// Why the last attempt failed; null once one succeeds.
    pub last_error: Option<String>,
    /// When the current run of failed attempts began (RFC 3339); null while healthy.
    pub failing_since: Option<String>,
    /// When the last attempt was made (RFC 3339).
    pub last_attempt: Option<String>,
    pub created_at: String,
}

impl WebhookView {
    pub(crate) fn of(r: &WebhookRecord, head: u64) -> Self {
        WebhookView {
            id: r.id.clone(),
            url: r.url.clone(),
            filter: serde_json::from_str(&r.filter).unwrap_or(serde_json::Value::Null),
            format: r.format.clone(),
            delivered_seq: r.delivered_seq,
            lag: head.saturating_sub(r.delivered_seq),
            last_status: r.last_status,
            last_error: r.last_error.clone(),
            failing_since: r.failing_since_ms.map(format_timestamp),
            last_attempt: r.last_attempt_ms.map(format_timestamp),
            created_at: format_timestamp(r.created_ms),
        }
    }
}

/// What the API shares with the scheduler. Cheap to clone.
#[derive(Clone, Default)]
pub struct Webhooks {
    inner: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    /// Wakes the scheduler when this node's API added or removed a webhook.
    changed: Notify,
    /// The position of each running webhook's cursor, for `/metrics`' lag. Empty on
    /// a node that does not lead. Locked only to look up or change the map, never
    /// across an await.
    positions: Mutex<HashMap<String, Arc<AtomicU64>>>,
}

impl Webhooks {
    /// A webhook was added or removed here: re-read them now rather than at the next
    /// reload.
    pub(crate) fn changed(&self) {
        self.inner.changed.notify_one();
    }

    /// Each running webhook's id and position.
    pub(crate) fn positions(&self) -> Vec<(String, u64)> {
        let positions = self.inner.positions.lock().unwrap_or_else(PoisonError::into_inner);
        positions.iter().map(|(id, p)| (id.clone(), p.load(Ordering::Relaxed))).collect()
    }

    fn track(&self, id: &str, at: u64) -> Arc<AtomicU64> {
        let position = Arc::new(AtomicU64::new(at));
        let mut positions = self.inner.positions.lock().unwrap_or_else(PoisonError::into_inner);
        positions.insert(id.to_owned(), Arc::clone(&position));
        position
    }

    fn untrack(&self, id: &str) {
        self.inner.positions.lock().unwrap_or_else(PoisonError::into_inner).remove(id);
    }
}

/// What every webhook task needs.
pub(crate) struct Context {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) hub: Arc<Hub>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) settings: WebhookSettings,
    pub(crate) client: delivery::Client,
}

/// One running webhook: its task (aborted when dropped) and what started it.
struct Running {
    identity: (String, String, String, String),
    /// `None` for a webhook whose row cannot be used; it is reported once, not retried.
    task: Option<AbortOnDropHandle<()>>,
}

impl Running {
    /// Whether its task ended by itself: only a bug (a panic) ends one while its
    /// webhook exists, and the next sync starts it again from the stored seq.
    fn ended(&self) -> bool {
        self.task.as_ref().is_some_and(AbortOnDropHandle::is_finished)
    }
}

/// Starts the scheduler. It runs until `stop`; while this node holds `leadership` it
/// keeps one task per stored webhook, and none while it does not.
///
/// # Errors
/// The delivery client cannot be built (no TLS backend, …).
pub(crate) fn spawn(
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    settings: WebhookSettings,
    handle: Webhooks,
    leadership: Leadership,
    stop: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, delivery::ClientError> {
    let client = delivery::Client::new(&settings)?;
    let context = Arc::new(Context { store, hub, metrics, settings, client });
    Ok(tokio::spawn(schedule(context, handle, leadership, stop)))
}

async fn schedule(context: Arc<Context>, handle: Webhooks, mut leadership: Leadership, stop: CancellationToken) {
    let mut running: HashMap<String, Running> = HashMap::new();
    loop {
        if leadership.is_held() {
            if let Err(e) = sync(&context, &handle, &mut running).await {
                tracing::warn!(error = %e, "reading the webhooks failed; trying again shortly");
            }
        } else if !running.is_empty() {
            tracing::info!(webhooks = running.len(), "not the leader: webhook deliveries stop here");
            for id in running.keys() {
                handle.untrack(id);
            }
            running.clear();
        }
        tokio::select! {
            () = stop.cancelled() => break,
            _ = leadership.changed() => {}
            () = handle.inner.changed.notified() => {}
            () = tokio::time::sleep(RELOAD_EVERY) => {}
        }
    }
    for id in running.keys() {
        handle.untrack(id);
    }
}

/// Makes the running tasks match the stored webhooks: a task for each new one, from
/// its stored seq; none for those gone.
async fn sync(
    context: &Arc<Context>,
    handle: &Webhooks,
    running: &mut HashMap<String, Running>,
) -> Result<(), crate::store::StoreError> {
    let stored = context.store.list_webhooks().await?;
    let ids: std::collections::HashSet<&str> = stored.iter().map(|r| r.id.as_str()).collect();
    running.retain(|id, _| {
        let keep = ids.contains(id.as_str());
        if !keep {
            handle.untrack(id);
            context.metrics.webhook_removed(id);
            tracing::info!(webhook = %id, "webhook removed; its deliveries stop");
        }
        keep
    });
    for record in &stored {
        let identity = Hook::identity(record);
        match running.get(&record.id) {
            Some(r) if r.identity == identity && !r.ended() => continue,
            Some(r) if r.ended() => tracing::error!(webhook = %record.id, "a webhook's task ended; starting it again"),
            _ => {}
        }
        let task = match Hook::from_record(record) {
            Ok(hook) => {
                tracing::info!(webhook = %hook.id, after = hook.delivered_seq, "delivering webhook");
                let position = handle.track(&hook.id, hook.delivered_seq);
                Some(AbortOnDropHandle::new(tokio::spawn(runner::run(Arc::clone(context), hook, position))))
            }
            Err(e) => {
                let error = format!("this webhook cannot run: {e}");
                tracing::error!(webhook = %record.id, error, "unusable webhook");
                let now = chrono::Utc::now().timestamp_millis();
                context.store.record_webhook(&record.id, &WebhookOutcome::Failed { status: None, error }, now).await?;
                None
            }
        };
        running.insert(record.id.clone(), Running { identity, task });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> WebhookRecord {
        WebhookRecord {
            id: "wh_1".into(),
            url: "https://example.com/hook".into(),
            filter: r#"{"types":["task.*"]}"#.into(),
            format: "slack".into(),
            secret: sign::Secret::generate().expose(),
            delivered_seq: 40,
            created_ms: 0,
            last_status: Some(503),
            last_error: Some("the receiver answered HTTP 503".into()),
            failing_since_ms: Some(1_000),
            last_attempt_ms: Some(2_000),
        }
    }

    #[test]
    fn a_stored_row_becomes_a_hook_or_names_what_cannot_be_used() {
        let hook = Hook::from_record(&record()).unwrap();
        assert_eq!(
            (hook.format, hook.delivered_seq, hook.url.as_str()),
            (Format::Slack, 40, "https://example.com/hook")
        );
        let broken = [
            WebhookRecord { filter: r#"{"types":["Nope"]}"#.into(), ..record() },
            WebhookRecord { filter: "not json".into(), ..record() },
            WebhookRecord { format: "xml".into(), ..record() },
            WebhookRecord { secret: "hunter2".into(), ..record() },
            WebhookRecord { url: "::".into(), ..record() },
        ];
        let errors: Vec<String> = broken.iter().map(|r| Hook::from_record(r).unwrap_err().to_string()).collect();
        assert!(errors[0].starts_with("its filter") && errors[1].starts_with("its filter"), "{errors:?}");
        assert_eq!(errors[2], "its format \"xml\" is unknown");
        assert!(errors[3].starts_with("its secret") && !errors[3].contains("hunter2"), "{errors:?}");
        assert!(errors[4].starts_with("its url"), "{errors:?}");
    }

    #[test]
    fn the_view_shows_progress_and_health_but_never_the_secret() {
        let r = record();
        let view = WebhookView::of(&r, 45);
        assert_eq!((view.lag, view.delivered_seq, view.last_status), (5, 40, Some(503)));
        assert_eq!(view.failing_since.as_deref(), Some("1970-01-01T00:00:01.000Z"));
        assert_eq!(view.filter, serde_json::json!({ "types": ["task.*"] }));
        let shown = serde_json::to_string(&view).unwrap();
        assert!(!shown.contains(&r.secret) && !shown.contains("whsec_"), "{shown}");
        assert_eq!(WebhookView::of(&r, 10).lag, 0, "a head behind the stored seq is no lag");
    }
}
