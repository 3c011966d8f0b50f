//! Alert rules whose firing is an event (DESIGN §11).
//!
//! A rule fires when at least N matching events were committed in the last W seconds
//! (a threshold), or when none was for S seconds (an absence). Firing logs one
//! `alert.firing` `{rule_id, name, count?}` and clearing one `alert.resolved`:
//! ordinary events, appended through the writer, so every view shows them, `tail`
//! prints them and webhooks deliver them.
//!
//! - [`rules`]: a rule, the API body it is read from and its checks and bounds.
//! - [`window`]: one rule's recent matches and whether it is breached (pure).
//! - [`evaluator`]: the task that owns every rule's window and state, follows the log
//!   and, on the coordinator leader, logs the alert events.
//!
//! Rules are kept in the store; their state is not. It is folded from the log (the
//! rule's last alert event) and a window of recent matches, so a restart or a takeover
//! rebuilds it without firing twice. The HTTP handlers and the page are in `http`.

pub(crate) mod evaluator;
pub(crate) mod rules;
pub(crate) mod window;

use serde::Serialize;

use crate::filter::FilterSpec;

pub(crate) use evaluator::{AlertsHandle, Parts, spawn};

/// Why the evaluator could not answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AlertsError {
    #[error("the alert evaluator is busy")]
    Busy,
    #[error("the alert evaluator has stopped")]
    Stopped,
}

/// Whether a rule fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum AlertState {
    Ok,
    Firing,
}

impl AlertState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            AlertState::Ok => "ok",
            AlertState::Firing => "firing",
        }
    }
}

/// A rule and its state, as `GET /api/alerts` answers it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = Alert)]
pub(crate) struct AlertView {
    pub id: String,
    pub name: String,
    #[schema(value_type = Object)]
    pub filter: FilterSpec,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_secs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub absent_secs: Option<u64>,
    /// The condition in words, e.g. `≥ 3 in 60 s` or `none for 600 s`.
    pub condition: String,
    pub created_at: String,
    pub state: AlertState,
    /// When the state began: the time of the rule's last alert event, or its creation.
    pub since: Option<String>,
    /// Threshold rules: matching events in the window now, counted up to the
    /// threshold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// Absence rules: the last matching event this node knows of, if any since the
    /// rule was made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_match_at: Option<String>,
    /// The firing number of the rule's last alert event (0 before the first): its
    /// ids are `sf:alert.{id}.{n}.firing` and `….resolved`.
    pub firing_no: u64,
}

impl AlertView {
    /// Rule `rule` as it starts: `ok` since its creation, nothing counted yet.
    pub(crate) fn new(rule: &rules::Rule) -> Self {
        let record = rule.to_record();
        AlertView {
            id: rule.id.clone(),
            name: rule.name.clone(),
            filter: rule.spec.clone(),
            threshold: record.threshold,
            window_secs: record.window_secs,
            absent_secs: record.absent_secs,
            condition: rule.kind.describe(),
            created_at: crate::event::format_timestamp(rule.created_ms),
            state: AlertState::Ok,
            since: Some(crate::event::format_timestamp(rule.created_ms)),
            count: None,
            last_match_at: None,
            firing_no: 0,
        }
    }
}
