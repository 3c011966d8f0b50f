//! The evaluator: the one task that owns every rule's window and state, follows the
//! log like a viewer, and, on the coordinator leader only, logs `alert.firing` and
//! `alert.resolved` when a rule's condition starts or stops holding.
//!
//! It never scans the log. A rule is seeded with two indexed reads: its last alert
//! event (by the rule's own `source`), which says whether it is firing and how many
//! times it fired; and its newest matches within its window (by commit time, at most
//! `threshold` of them, or the last one for an absence rule). From then on a cursor
//! that starts where the seeds stopped feeds it every committed event. Rules are
//! re-read from the store every [`RULES_REFRESH`], so a rule added on another node
//! is watched here too. While there is no rule the log is not followed at all: a
//! server without alerts pays nothing for them.
//!
//! Every node follows and folds; only the leader acts, after folding the log up to
//! the store's head. Alert events carry ids derived from the rule and the firing
//! number (`sf:alert.{rule}.{n}.firing` / `.resolved`), where `n` follows the rule's
//! last alert event in the log, so a leader that takes over, or two that both believe
//! they lead, store each transition once: the second is a duplicate.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::rules::{Kind, Rule, SOURCE_PREFIX};
use super::window::Window;
use super::{AlertState, AlertView, AlertsError};
use crate::cursor::{Cursor, CursorError, Step};
use crate::event::{Event, EventPayload, format_timestamp};
use crate::filter::{Filter, FilterSpec};
use crate::hub::{Hub, ReadLimit};
use crate::ingest::{IngestRules, SERVER_ID_PREFIX};
use crate::store::{Leadership, Order, Query, Store, StoreError};
use crate::writer::WriterHandle;

/// How often rules are re-read from the store (another node may have added or
/// deleted one), and a failed alert event or takeover is retried.
pub(crate) const RULES_REFRESH: Duration = Duration::from_secs(2);
/// Requests that may wait for the evaluator; beyond it callers get 503.
const REQUEST_QUEUE: usize = 64;
/// What one fold step reads.
const FOLD_LIMIT: ReadLimit = ReadLimit { max_events: 5_000, max_bytes: 8 * 1024 * 1024 };
/// Extra rows read when seeding, for the rule's own alert events, which it skips.
const SEED_SLACK: usize = 4;

/// A cheap handle to the evaluator.
#[derive(Clone)]
pub(crate) struct AlertsHandle {
    requests: mpsc::Sender<Request>,
}

enum Request {
    List(oneshot::Sender<Vec<AlertView>>),
    /// Re-read the rules now (one was added or deleted here).
    Reload(oneshot::Sender<()>),
}

impl AlertsHandle {
    /// Every rule with its state, oldest first.
    ///
    /// # Errors
    /// `Busy` when the queue is full, `Stopped` on shutdown.
    pub(crate) async fn list(&self) -> Result<Vec<AlertView>, AlertsError> {
        self.ask(Request::List).await
    }

    /// Has the rules re-read from the store and answers once they are.
    ///
    /// # Errors
    /// `Busy` when the queue is full, `Stopped` on shutdown.
    pub(crate) async fn reload(&self) -> Result<(), AlertsError> {
        self.ask(Request::Reload).await
    }

    async fn ask<T>(&self, request: impl FnOnce(oneshot::Sender<T>) -> Request) -> Result<T, AlertsError> {
        let (reply, answer) = oneshot::channel();
        self.requests.try_send(request(reply)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => AlertsError::Busy,
            mpsc::error::TrySendError::Closed(_) => AlertsError::Stopped,
        })?;
        answer.await.map_err(|_| AlertsError::Stopped)
    }
}

/// What the evaluator needs from the rest of the server.
pub(crate) struct Parts {
    pub hub: Arc<Hub>,
    pub store: Arc<dyn Store>,
    pub writer: WriterHandle,
    pub ingest: IngestRules,
    pub leadership: Leadership,
}

/// Starts the evaluator; it runs until `shutdown`.
pub(crate) fn spawn(parts: Parts, shutdown: CancellationToken) -> (AlertsHandle, tokio::task::JoinHandle<()>) {
    let (requests, rx) = mpsc::channel(REQUEST_QUEUE);
    let cursor = Cursor::new(Arc::clone(&parts.hub), Arc::clone(&parts.store), Filter::default(), None);
    let evaluator =
        Evaluator { cursor, clock: Clock { epoch: Instant::now() }, alarms: Vec::new(), leading: false, parts };
    (AlertsHandle { requests }, tokio::spawn(evaluator.run(rx, shutdown)))
}

/// The evaluator's time: monotonic milliseconds since it started (negative before),
/// and the mapping of commit times onto that axis.
struct Clock {
    epoch: Instant,
}

fn wall_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Clock {
    fn now(&self) -> i64 {
        self.epoch.elapsed().as_millis() as i64
    }

    /// A commit time (wall clock) on the monotonic axis: as long before now as it was
    /// committed before now. Live events land at about now whatever the wall clock
    /// did meanwhile, so a clock step neither expires a window nor fires a silence.
    fn at_wall(&self, ts_ms: i64) -> i64 {
        self.now() - (wall_ms() - ts_ms).max(0)
    }

    /// A monotonic time as the wall-clock time it stands for now, for display.
    fn to_wall(&self, at: i64) -> i64 {
        wall_ms() - (self.now() - at)
    }

    fn instant(&self, at: i64) -> Instant {
        self.epoch + Duration::from_millis(at.max(0) as u64)
    }
}

/// What the log says of a rule: its last alert event.
#[derive(Debug, Clone, Default)]
struct Logged {
    firing: bool,
    /// The firing number of the last alert event; 0 before the first.
    no: u64,
    /// Its commit time.
    since_ms: Option<i64>,
    /// Its seq: older alert events folded later change nothing.
    seq: u64,
}

/// One rule, its window and its state.
struct Alarm {
    rule: Rule,
    /// `rule.source()`, made once: every event is compared with it.
    source: String,
    window: Window,
    logged: Logged,
}

struct Evaluator {
    cursor: Cursor,
    clock: Clock,
    /// Oldest rule first.
    alarms: Vec<Alarm>,
    /// Set once the fold has caught up with the log as it was when leadership came.
    leading: bool,
    parts: Parts,
}

impl Evaluator {
    async fn run(mut self, mut requests: mpsc::Receiver<Request>, shutdown: CancellationToken) {
        // Requests wait while the rules are first seeded: a restarted node answers
        // with the rebuilt state, never with a blank one.
        loop {
            let loaded = tokio::select! {
                () = shutdown.cancelled() => return,
                loaded = self.reload() => loaded,
            };
            match loaded {
                Ok(()) => break,
                Err(e) => {
                    tracing::error!(error = %e, "could not read the alert rules; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(RULES_REFRESH) => {}
                    }
                }
            }
        }
        if self.parts.leadership.is_held() {
            self.take_lead(&shutdown).await;
        }
        let mut refresh = tokio::time::interval(RULES_REFRESH);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = if self.leading { self.next_change() } else { None };
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                held = self.parts.leadership.changed() => {
                    if held && !self.leading {
                        self.take_lead(&shutdown).await;
                    } else if !held && self.leading {
                        self.leading = false;
                        tracing::warn!("no longer the leader: alerts are evaluated elsewhere");
                    }
                }
                request = requests.recv() => {
                    let Some(request) = request else { break };
                    self.serve(request).await;
                }
                // No deadline, no timer: the guard disables the branch (the instant is unused).
                () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => self.evaluate().await,
                // Without rules there is nothing to fold: the log is not followed then,
                // and a first rule starts from the head.
                step = self.cursor.next(FOLD_LIMIT), if !self.alarms.is_empty() => {
                    match step {
                        Ok(step) => self.fold(step),
                        Err(CursorError::Closed) => break,
                        Err(e) => tracing::error!(error = %e, "alerts could not read the log; retrying"),
                    }
                    self.evaluate().await;
                }
                _ = refresh.tick() => {
                    if let Err(e) = self.reload().await {
                        tracing::error!(error = %e, "could not re-read the alert rules");
                    }
                    if !self.leading && self.parts.leadership.is_held() {
                        self.take_lead(&shutdown).await;
                    }
                    self.evaluate().await;
                }
            }
        }
        tracing::info!("alert evaluator stopped");
    }

    async fn serve(&mut self, request: Request) {
        // A caller that gave up waiting needs no answer.
        match request {
            Request::List(reply) => {
                let _ = reply.send(self.views());
            }
            Request::Reload(reply) => {
                if let Err(e) = self.reload().await {
                    tracing::error!(error = %e, "could not re-read the alert rules");
                }
                self.evaluate().await;
                let _ = reply.send(());
            }
        }
    }

    /// Folds everything committed before leadership came (the previous leader's alert
    /// events included, which this node's hub may not have yet), then acts.
    async fn take_lead(&mut self, shutdown: &CancellationToken) {
        let caught_up = tokio::select! {
            () = shutdown.cancelled() => return,
            caught_up = self.catch_up() => caught_up,
        };
        if let Err(e) = caught_up {
            tracing::error!(error = %e, "alerts could not catch up with the log before leading; will retry");
            return;
        }
        self.leading = true;
        tracing::info!(rules = self.alarms.len(), "this node evaluates the alert rules");
        self.evaluate().await;
    }

    async fn catch_up(&mut self) -> Result<(), CursorError> {
        if self.alarms.is_empty() {
            return Ok(());
        }
        let head = self.parts.store.bounds().await?.head;
        while self.cursor.position() < head {
            let step = self.cursor.next_until(head, FOLD_LIMIT).await?;
            self.fold(step);
        }
        Ok(())
    }

    fn fold(&mut self, step: Step) {
        let events = match step {
            Step::Events(events) => events,
            Step::Reset { oldest } => {
                // Retention removed events not yet read: windows go on from what is
                // left; a threshold may count a few matches short for one window.
                tracing::warn!(oldest, "the log was pruned under the alert evaluator");
                return;
            }
        };
        if self.alarms.is_empty() {
            return;
        }
        for e in &events {
            let own_alert = e.source.starts_with(SOURCE_PREFIX);
            let at = self.clock.at_wall(e.ts_ms);
            for alarm in &mut self.alarms {
                if own_alert && *e.source == *alarm.source {
                    fold_alert(&mut alarm.logged, e);
                } else if alarm.rule.filter.matches(e) {
                    alarm.window.record(at);
                }
            }
        }
    }

    /// Reads the rules from the store: seeds the new ones, drops the deleted ones
    /// (logging `alert.resolved` for one that was firing, when leading).
    async fn reload(&mut self) -> Result<(), StoreError> {
        let records = self.parts.store.list_alert_rules().await?;
        let mut rules = Vec::with_capacity(records.len());
        for record in records {
            let id = record.id.clone();
            match Rule::from_record(record) {
                Ok(rule) => rules.push(rule),
                Err(e) => tracing::error!(rule_id = %id, error = %e, "a stored alert rule is not valid; skipped"),
            }
        }
        let kept: HashSet<&str> = rules.iter().map(|r| r.id.as_str()).collect();
        let (alarms, gone): (Vec<Alarm>, Vec<Alarm>) =
            std::mem::take(&mut self.alarms).into_iter().partition(|a| kept.contains(a.rule.id.as_str()));
        self.alarms = alarms;
        if self.alarms.is_empty() {
            // Not followed while there were no rules (see `run`): start at the head.
            let (hub, store) = (Arc::clone(&self.parts.hub), Arc::clone(&self.parts.store));
            self.cursor = Cursor::new(hub, store, Filter::default(), None);
        }
        let known: HashSet<String> = self.alarms.iter().map(|a| a.rule.id.clone()).collect();
        let upto = self.cursor.position();
        let mut fresh = Vec::new();
        for rule in rules.into_iter().filter(|r| !known.contains(&r.id)) {
            fresh.push(self.seed(rule, upto).await?);
        }
        self.alarms.extend(fresh);
        self.alarms.sort_by(|a, b| (a.rule.created_ms, &a.rule.id).cmp(&(b.rule.created_ms, &b.rule.id)));
        for mut alarm in gone {
            tracing::info!(rule_id = %alarm.rule.id, "alert rule deleted");
            if self.leading && alarm.logged.firing {
                if let Err(e) = log_transition(&self.parts, &self.clock, &mut alarm, false, Some("rule deleted")).await
                {
                    tracing::error!(error = %e, rule_id = %alarm.rule.id, "could not log the deleted rule's resolution");
                }
            }
        }
        Ok(())
    }

    /// A rule's state and window from the log up to `upto`, by two indexed reads.
    async fn seed(&self, rule: Rule, upto: u64) -> Result<Alarm, StoreError> {
        let store = &self.parts.store;
        let source = rule.source();
        let mut logged = Logged::default();
        let own = Filter::from_spec(FilterSpec { source: Some(source.clone()), ..FilterSpec::default() })
            .map_err(|e| StoreError::Worker(format!("alert source filter: {e}")))?;
        let last = Query { filter: own, before: Some(upto + 1), order: Order::Desc, limit: 1, ..Query::default() };
        if let Some(e) = store.query(last).await?.first() {
            fold_alert(&mut logged, e);
        }
        let (span_secs, limit) = match rule.kind {
            Kind::Threshold { threshold, window_secs } => (window_secs, threshold as usize + SEED_SLACK),
            Kind::Absence { absent_secs } => (absent_secs, 1 + SEED_SLACK),
        };
        let recent = Query {
            filter: rule.filter.clone(),
            before: Some(upto + 1),
            from_ms: Some(wall_ms() - span_secs as i64 * 1000),
            order: Order::Desc,
            limit,
            ..Query::default()
        };
        let mut window = Window::new(rule.kind.condition(), self.clock.at_wall(rule.created_ms));
        let matches = store.query(recent).await?;
        for e in matches.iter().rev().filter(|e| *e.source != *source) {
            window.record(self.clock.at_wall(e.ts_ms));
        }
        Ok(Alarm { rule, source, window, logged })
    }

    /// When some rule's condition changes by time alone.
    fn next_change(&self) -> Option<Instant> {
        let now = self.clock.now();
        self.alarms.iter().filter_map(|a| a.window.next_change(now)).min().map(|at| self.clock.instant(at))
    }

    /// On the leader: logs a transition for every rule whose condition no longer
    /// agrees with what the log says of it. A failed append is retried on the next
    /// refresh: nothing is marked until the event is committed.
    async fn evaluate(&mut self) {
        if !self.leading {
            return;
        }
        let Evaluator { alarms, parts, clock, .. } = self;
        let now = clock.now();
        for alarm in alarms.iter_mut() {
            alarm.window.expire(now);
            let breached = alarm.window.breached(now);
            if breached == alarm.logged.firing {
                continue;
            }
            if let Err(e) = log_transition(parts, clock, alarm, breached, None).await {
                tracing::error!(error = %e, rule_id = %alarm.rule.id, "could not log an alert event; will retry");
                return;
            }
        }
    }

    fn views(&self) -> Vec<AlertView> {
        let now = self.clock.now();
        self.alarms
            .iter()
            .map(|a| AlertView {
                state: if a.logged.firing { AlertState::Firing } else { AlertState::Ok },
                since: Some(format_timestamp(a.logged.since_ms.unwrap_or(a.rule.created_ms))),
                count: a.window.count(now),
                last_match_at: a
                    .window
                    .last_match()
                    .filter(|&at| at > self.clock.at_wall(a.rule.created_ms))
                    .map(|at| format_timestamp(self.clock.to_wall(at))),
                firing_no: a.logged.no,
                ..AlertView::new(&a.rule)
            })
            .collect()
    }
}

/// Appends `alert.firing` (when `firing`) or `alert.resolved` for `alarm`, and
/// records it as the rule's last alert event.
async fn log_transition(
    parts: &Parts,
    clock: &Clock,
    alarm: &mut Alarm,
    firing: bool,
    reason: Option<&str>,
) -> Result<(), String> {
    let now = clock.now();
    let no = if firing { next_firing_no(alarm.logged.no, parts.hub.head()) } else { alarm.logged.no };
    let count = alarm.window.count(now);
    let mut data = Map::new();
    data.insert("rule_id".into(), json!(alarm.rule.id));
    data.insert("name".into(), json!(alarm.rule.name));
    if let Some(count) = count {
        data.insert("count".into(), json!(count));
    }
    if let Some(reason) = reason {
        data.insert("reason".into(), json!(reason));
    }
    let event_type = if firing { "alert.firing" } else { "alert.resolved" };
    let mut object = Map::new();
    object.insert("id".into(), json!(alert_event_id(&alarm.rule.id, no, firing)));
    object.insert("event_type".into(), json!(event_type));
    object.insert("source".into(), json!(alarm.source));
    object.insert("data".into(), Value::Object(data));
    let event = parts.ingest.server_event(0, object).map_err(|e| e.to_string())?;
    let appended = parts.writer.append(vec![event]).await.map_err(|e| e.to_string())?;
    let seq = appended.first().map_or(0, |a| a.seq);
    if appended.first().is_some_and(|a| a.duplicate) {
        tracing::info!(rule_id = %alarm.rule.id, no, event_type, "alert event already in the log (another leader wrote it)");
    } else {
        tracing::info!(rule_id = %alarm.rule.id, no, event_type, ?count, "alert event logged");
    }
    alarm.logged = Logged { firing, no, since_ms: Some(wall_ms()), seq: seq.max(alarm.logged.seq) };
    Ok(())
}

/// The id of rule `rule_id`'s `no`-th firing or its resolution. In the server's
/// namespace, so no producer can take it first.
pub(crate) fn alert_event_id(rule_id: &str, no: u64, firing: bool) -> String {
    let what = if firing { "firing" } else { "resolved" };
    format!("{SERVER_ID_PREFIX}alert.{rule_id}.{no}.{what}")
}

/// The firing number and kind an alert event's id holds.
fn parse_alert_event_id(id: &str) -> Option<(u64, bool)> {
    let rest = id.strip_prefix(SERVER_ID_PREFIX)?.strip_prefix("alert.")?;
    let (rest, what) = rest.rsplit_once('.')?;
    let (_, no) = rest.rsplit_once('.')?;
    Some((no.parse().ok()?, what == "firing"))
}

/// The number of a rule's next firing: one after its last, when the log shows one.
/// Otherwise (a new rule, or one whose alert events retention pruned) one past the
/// head, which is past every number the rule used before: each number is at most the
/// seq of its own event. So a pruned id remembered for idempotency is never met again.
fn next_firing_no(last: u64, head: u64) -> u64 {
    if last > 0 { last + 1 } else { head + 1 }
}

/// Records `e`, one of the rule's own alert events, as its last unless a newer one
/// was seen already.
fn fold_alert(logged: &mut Logged, e: &Event) {
    if e.seq <= logged.seq || !matches!(&*e.event_type, "alert.firing" | "alert.resolved") {
        return;
    }
    let Ok(payload) = serde_json::from_slice::<EventPayload>(&e.payload()) else { return };
    let Some((no, firing)) = parse_alert_event_id(&payload.id) else { return };
    *logged = Logged { firing, no, since_ms: Some(e.ts_ms), seq: e.seq };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventParts;

    #[test]
    fn alert_event_ids_round_trip_and_stay_in_the_server_namespace() {
        let id = alert_event_id("r0123456789ab", 42, true);
        assert_eq!(id, "sf:alert.r0123456789ab.42.firing");
        assert_eq!(parse_alert_event_id(&id), Some((42, true)));
        assert_eq!(parse_alert_event_id(&alert_event_id("r1", 7, false)), Some((7, false)));
        assert_eq!(parse_alert_event_id("sf:settle.t.closed"), None);
        assert!(id.len() <= crate::event::MAX_ID_CHARS);
    }

    #[test]
    fn a_firing_number_is_never_used_twice() {
        assert_eq!(next_firing_no(3, 100), 4, "after the last one the log shows");
        assert_eq!(next_firing_no(0, 0), 1);
        assert_eq!(next_firing_no(0, 100), 101, "past every seq, so past every earlier number");
    }

    #[test]
    fn a_rules_last_alert_event_decides_its_state_and_older_ones_do_not() {
        let event = |seq: u64, t: &str, id: &str| {
            Event::encode(EventParts {
                seq,
                id,
                event_type: t,
                source: "alerts/r1",
                task_id: None,
                agent_id: None,
                ts_ms: 1000,
                data: r#"{"rule_id":"r1","name":"n","count":3}"#,
            })
            .unwrap()
        };
        let mut logged = Logged::default();
        fold_alert(&mut logged, &event(5, "alert.firing", "sf:alert.r1.2.firing"));
        assert!(logged.firing);
        assert_eq!((logged.no, logged.seq), (2, 5));
        fold_alert(&mut logged, &event(4, "alert.resolved", "sf:alert.r1.1.resolved"));
        assert!(logged.firing, "an older event changes nothing");
        fold_alert(&mut logged, &event(9, "alert.resolved", "sf:alert.r1.2.resolved"));
        assert!(!logged.firing);
    }
}
