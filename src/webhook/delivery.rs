//! What a webhook sends, and one attempt at sending it.
//!
//! A [`Message`] is one delivery: its `webhook-id` and its body, fixed when it is made
//! and sent unchanged on every retry. Only the timestamp and the signature are made
//! anew per attempt, as the specification asks. The [`Client`] connects through
//! [`GuardedResolver`], follows no redirect, uses no proxy, and gives up on an attempt
//! after [`super::ATTEMPT_TIMEOUT`].

use std::sync::Arc;

use bytes::Bytes;
use reqwest::Url;
use reqwest::header::{CONTENT_TYPE, HeaderValue};

use super::WebhookSettings;
use super::sign::Secret;
use super::ssrf::{self, GuardedResolver};
use crate::event::Event;
use crate::swarm::projection::event_data;
use crate::view::event::describe;

/// One delivery, the same on every attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    /// `webhook-id`: the webhook and the first and last seq carried, so a delivery made
    /// again after a restart, carrying the same events, has the same id; one that
    /// carries more has another (receivers dedupe by it, or by event id).
    pub(crate) id: String,
    pub(crate) body: Bytes,
    /// The seq of the last event carried.
    pub(crate) last_seq: u64,
}

impl Message {
    /// `{"events":[…]}`: the events exactly as `GET /api/events` gives them. `events`
    /// is not empty and in seq order.
    pub(crate) fn batch(webhook: &str, events: &[Arc<Event>]) -> Self {
        let (first, last) = (events.first().map_or(0, |e| e.seq), events.last().map_or(0, |e| e.seq));
        Message {
            id: message_id(webhook, first, last),
            body: crate::event::events_object(events, &[]).into(),
            last_seq: last,
        }
    }

    /// `{"text":"…"}` for one event: its icon and display text, as the dashboard shows
    /// them.
    pub(crate) fn slack(webhook: &str, event: &Event) -> Self {
        let (icon, _, display) = describe(event, &event_data(event));
        let body = serde_json::json!({ "text": format!("{icon} {display}") });
        Message { id: message_id(webhook, event.seq, event.seq), body: body.to_string().into(), last_seq: event.seq }
    }
}

fn message_id(webhook: &str, first: u64, last: u64) -> String {
    format!("msg_{webhook}_{first}_{last}")
}

/// The delivery client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the webhook client: {0}")]
pub(crate) struct ClientError(#[source] reqwest::Error);

/// Why an attempt failed, as `last_error` says it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Failure {
    /// The receiver answered, but not 2xx (a redirect included: none is followed).
    #[error("the receiver answered HTTP {0}")]
    Status(u16),
    #[error("{0}")]
    Refused(#[from] ssrf::Refused),
    #[error("no answer within {0} s")]
    Timeout(u64),
    #[error("{0}")]
    Send(String),
}

impl Failure {
    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            Failure::Status(s) => Some(*s),
            _ => None,
        }
    }
}

/// The HTTP client every webhook of a node shares.
pub(crate) struct Client {
    http: reqwest::Client,
    allow_private: bool,
    timeout_secs: u64,
}

impl Client {
    /// # Errors
    /// [`ClientError`] when reqwest cannot build the client.
    pub(crate) fn new(settings: &WebhookSettings) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(settings.attempt_timeout)
            .connect_timeout(settings.attempt_timeout)
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would connect on our behalf to addresses we never checked.
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver { allow_private: settings.allow_private }))
            .user_agent(concat!("swarmfeed-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ClientError)?;
        Ok(Client {
            http,
            allow_private: settings.allow_private,
            timeout_secs: settings.attempt_timeout.as_secs().max(1),
        })
    }

    /// Sends `message` to `url` once, signed with `secret` at the current time.
    /// Returns the 2xx status it got.
    ///
    /// # Errors
    /// [`Failure`]: a refused address, no connection, no answer in time, or an answer
    /// other than 2xx.
    pub(crate) async fn attempt(&self, url: &Url, secret: &Secret, message: &Message) -> Result<u16, Failure> {
        if let Some(refused) = ssrf::literal_refusal(url, self.allow_private) {
            return Err(refused.into());
        }
        let timestamp = chrono::Utc::now().timestamp();
        let signature = secret.sign(&message.id, timestamp, &message.body);
        let sent = self
            .http
            .post(url.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header("webhook-id", &message.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(message.body.clone())
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => Ok(response.status().as_u16()),
            Ok(response) => Err(Failure::Status(response.status().as_u16())),
            Err(e) if e.is_timeout() => Err(Failure::Timeout(self.timeout_secs)),
            Err(e) => Err(Failure::Send(describe_error(e, url))),
        }
    }
}

/// A send error as an operator reads it: what failed, the host, and the innermost
/// cause (the one that says why: "Connection refused", a certificate problem, the SSRF
/// refusal). Never the URL's path, which may be a Slack webhook's secret.
fn describe_error(e: reqwest::Error, url: &Url) -> String {
    let e = e.without_url();
    let mut why = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        why = c.to_string();
        cause = c.source();
    }
    let host = url.host_str().unwrap_or_default();
    if e.is_connect() { format!("cannot connect to {host}: {why}") } else { format!("sending to {host} failed: {why}") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventParts;

    fn event(seq: u64, event_type: &str, data: &str) -> Arc<Event> {
        Arc::new(
            Event::encode(EventParts {
                seq,
                id: &format!("e{seq}"),
                event_type,
                source: "s",
                task_id: None,
                agent_id: Some("a1"),
                ts_ms: 0,
                data,
            })
            .unwrap(),
        )
    }

    #[test]
    fn a_batch_carries_the_events_as_the_api_gives_them_and_is_named_by_its_seqs() {
        let events = vec![event(4, "task.created", r#"{"description":"x"}"#), event(9, "a.b", "{}")];
        let m = Message::batch("wh_1", &events);
        assert_eq!(m.id, "msg_wh_1_4_9");
        assert_eq!(m.last_seq, 9);
        let expected = format!(r#"{{"events":[{},{}]}}"#, str_of(&events[0]), str_of(&events[1]));
        assert_eq!(m.body, expected.as_bytes());
        assert_eq!(Message::batch("wh_1", &events), m, "made again, the same message");
    }

    fn str_of(e: &Event) -> String {
        String::from_utf8(e.payload().to_vec()).unwrap()
    }

    #[test]
    fn slack_messages_hold_the_events_display_text() {
        let m = Message::slack("wh_1", &event(3, "task.assigned", r#"{"bid_sats":40}"#));
        assert_eq!(m.id, "msg_wh_1_3_3");
        let body: serde_json::Value = serde_json::from_slice(&m.body).unwrap();
        assert_eq!(body, serde_json::json!({ "text": "👤 Task assigned to a1 (40 sats)" }));
        let m = Message::slack("wh_1", &event(5, "custom.thing", "{}"));
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&m.body).unwrap()["text"], "• custom.thing");
    }
}
