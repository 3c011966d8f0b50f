//! One webhook's task: read the next matching events after its position, deliver
//! them, retry the same delivery until the receiver takes it, record the outcome,
//! move on.
//!
//! The order of things is what makes delivery at-least-once and in order: the stored
//! seq moves only after the receiver answered 2xx for everything up to it, and a task
//! works on one delivery at a time. A task stopped anywhere (leadership lost, the
//! webhook deleted, the process killed) leaves the stored seq at or before what was
//! delivered; whoever runs the webhook next starts after it and so sends again, never
//! skips. It owns its cursor and its retry delay; the scheduler owns the task.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::delivery::Message;
use super::{Context, Format, Hook, MAX_BATCH_EVENTS};
use crate::config::FRAME_MAX_BYTES;
use crate::cursor::{Cursor, CursorError, Step};
use crate::event::Event;
use crate::hub::ReadLimit;
use crate::store::WebhookOutcome;

/// What one delivery may carry: 100 events, and no more bytes than a viewer's frame.
const BATCH_LIMIT: ReadLimit = ReadLimit { max_events: MAX_BATCH_EVENTS, max_bytes: FRAME_MAX_BYTES };
/// How often a position that moved only past events not matching the filter is
/// stored: often enough that `lag` says how far behind a quiet webhook is, rarely
/// enough that a busy log costs one write a second, not one per commit.
const STORE_PASSED_EVERY: Duration = Duration::from_secs(1);

/// The delay before each next attempt: `min` doubling to `max`.
#[derive(Debug)]
pub(crate) struct RetryDelay {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl RetryDelay {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        RetryDelay { next: min, min, max: max.max(min) }
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    pub(crate) fn reset(&mut self) {
        self.next = self.min;
    }
}

/// The webhook was deleted while it ran: its task ends.
struct Gone;

/// Runs `hook` until its task is aborted (or the hub closes at shutdown). `position`
/// tells `/metrics` how far it got.
pub(crate) async fn run(context: Arc<Context>, hook: Hook, position: Arc<AtomicU64>) {
    let mut cursor = Cursor::new(
        Arc::clone(&context.hub),
        Arc::clone(&context.store),
        hook.filter.clone(),
        Some(hook.delivered_seq),
    );
    let mut head = context.hub.watch();
    let mut stored = hook.delivered_seq;
    let mut last_stored = Instant::now();
    let mut delay = RetryDelay::new(context.settings.retry_min, context.settings.retry_max);
    loop {
        let at_head = *head.borrow_and_update();
        if cursor.position() >= at_head {
            // Caught up. A position moved only past events that did not match is
            // stored once it is due; until then, wait for the log or for that moment.
            let due = last_stored + STORE_PASSED_EVERY;
            let dirty = cursor.position() > stored;
            if dirty && Instant::now() >= due {
                let upto = cursor.position();
                if record(&context, &hook, &WebhookOutcome::Passed { upto }).await.is_err() {
                    return;
                }
                stored = upto;
                last_stored = Instant::now();
                continue;
            }
            tokio::select! {
                changed = head.changed() => if changed.is_err() { return },
                () = tokio::time::sleep_until(due), if dirty => {}
            }
            continue;
        }
        let events = match cursor.next_until(at_head, BATCH_LIMIT).await {
            Ok(Step::Events(events)) => events,
            Ok(Step::Reset { oldest }) => {
                tracing::warn!(webhook = %hook.id, oldest, "events were pruned by retention before this webhook delivered them; it goes on from the oldest retained");
                continue;
            }
            Err(CursorError::Closed) => return,
            Err(CursorError::Store(e)) => {
                tracing::warn!(webhook = %hook.id, error = %e, "reading the log for a webhook failed; trying again");
                tokio::time::sleep(context.settings.retry_min).await;
                continue;
            }
        };
        if events.is_empty() {
            // Nothing matched up to the head: stored when caught up, at most once a
            // second, not once per commit.
            position.store(cursor.position(), Ordering::Relaxed);
            continue;
        }
        // Until they are delivered, the events read are still behind.
        position.store(events[0].seq - 1, Ordering::Relaxed);
        if deliver(&context, &hook, &events, cursor.position(), &mut delay).await.is_err() {
            return;
        }
        stored = stored.max(cursor.position());
        last_stored = Instant::now();
        position.store(cursor.position(), Ordering::Relaxed);
    }
}

/// Delivers `events` (those of one read, in seq order, not empty), then records the
/// position `upto` the read reached. Returns once the receiver took all of them.
async fn deliver(
    context: &Context,
    hook: &Hook,
    events: &[Arc<Event>],
    upto: u64,
    delay: &mut RetryDelay,
) -> Result<(), Gone> {
    let messages: Vec<Message> = match hook.format {
        Format::Standard => vec![Message::batch(&hook.id, events)],
        Format::Slack => events.iter().map(|e| Message::slack(&hook.id, e)).collect(),
    };
    let last = messages.len() - 1;
    for (i, message) in messages.iter().enumerate() {
        let status = until_delivered(context, hook, message, delay).await?;
        // The last message also covers the events after it that did not match.
        let upto = if i == last { upto } else { message.last_seq };
        // Counted before it is recorded, so whoever sees the record sees the count.
        context.metrics.webhook_delivered(&hook.id);
        record(context, hook, &WebhookOutcome::Delivered { upto, status }).await?;
    }
    Ok(())
}

/// Attempts `message` until the receiver answers 2xx, waiting longer after each
/// failure; records each failure. Returns the status that ended it.
async fn until_delivered(
    context: &Context,
    hook: &Hook,
    message: &Message,
    delay: &mut RetryDelay,
) -> Result<u16, Gone> {
    loop {
        match context.client.attempt(&hook.url, &hook.secret, message).await {
            Ok(status) => {
                delay.reset();
                return Ok(status);
            }
            Err(failure) => {
                let wait = delay.next_delay();
                context.metrics.webhook_failed(&hook.id);
                tracing::warn!(
                    webhook = %hook.id,
                    message = %message.id,
                    error = %failure,
                    retry_in_ms = wait.as_millis() as u64,
                    "webhook delivery failed"
                );
                let outcome = WebhookOutcome::Failed { status: failure.status(), error: failure.to_string() };
                record(context, hook, &outcome).await?;
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Stores an outcome. A store that cannot be written is retried: giving up would
/// lose the record of a delivery the receiver already has (it would be sent again,
/// which at-least-once allows, but the operator would not see why).
async fn record(context: &Context, hook: &Hook, outcome: &WebhookOutcome) -> Result<(), Gone> {
    loop {
        let now = chrono::Utc::now().timestamp_millis();
        match context.store.record_webhook(&hook.id, outcome, now).await {
            Ok(true) => return Ok(()),
            Ok(false) => return Err(Gone),
            Err(e) => {
                tracing::warn!(webhook = %hook.id, error = %e, "recording a webhook's progress failed; trying again");
                tokio::time::sleep(context.settings.retry_min).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_from_the_least_to_the_most_and_start_over_after_a_success() {
        let mut d = RetryDelay::new(Duration::from_secs(1), Duration::from_secs(300));
        let seen: Vec<u64> = (0..11).map(|_| d.next_delay().as_secs()).collect();
        assert_eq!(seen, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        d.reset();
        assert_eq!(d.next_delay(), Duration::from_secs(1));
    }
}
