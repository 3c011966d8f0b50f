//! An alert rule: its name, filter and condition, the body `POST /api/alerts` reads it
//! from and the checks it passes there, its bounds, and its record in the store.
//!
//! Checked once, at the edge: a [`Rule`] is valid by construction, and one read back
//! from the store goes through the same checks (a rule the store holds but this build
//! refuses is skipped and logged, never half-evaluated).

use serde::Deserialize;

use super::window::Condition;
use crate::event::{MAX_NAME_CHARS, is_identifier_char};
use crate::filter::{Filter, FilterSpec};
use crate::store::AlertRuleRecord;

/// Most alert rules a log may hold; each costs an evaluation per committed event.
pub(crate) const MAX_RULES: usize = 100;
/// Largest `threshold`: a threshold rule keeps this many match times (8 bytes each).
pub(crate) const MAX_THRESHOLD: u64 = 10_000;
/// Longest `window_secs`: one day.
pub(crate) const MAX_WINDOW_SECS: u64 = 86_400;
/// Longest `absent_secs`: a week.
pub(crate) const MAX_ABSENT_SECS: u64 = 7 * 86_400;

/// The body of `POST /api/alerts` (DESIGN §11): a threshold rule
/// `{"name","filter","threshold","window_secs"}` or an absence rule
/// `{"name","filter","absent_secs"}`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleBody {
    /// What the alert is called in its events and on the pages; 1 to 128 characters.
    pub name: String,
    /// Which events the rule counts: the filter viewers use (`types`, `task_id`,
    /// `agent_id`, `source`); `{}` counts every event.
    #[schema(value_type = Object)]
    pub filter: FilterSpec,
    /// Fires when at least this many matching events were committed within
    /// `window_secs` (1 to 10 000).
    pub threshold: Option<u64>,
    /// The threshold's window, seconds (1 to 86 400).
    pub window_secs: Option<u64>,
    /// Fires when no matching event was committed for this many seconds (1 to
    /// 604 800). Not with `threshold`.
    pub absent_secs: Option<u64>,
}

/// A rule refused: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub(crate) struct RuleError {
    pub field: String,
    pub message: String,
}

fn refuse(field: &str, message: impl Into<String>) -> RuleError {
    RuleError { field: field.to_owned(), message: message.into() }
}

/// What a rule fires on, in the units the API speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Threshold { threshold: u64, window_secs: u64 },
    Absence { absent_secs: u64 },
}

impl Kind {
    pub(crate) fn condition(self) -> Condition {
        match self {
            Kind::Threshold { threshold, window_secs } => {
                Condition::Threshold { threshold: threshold as usize, window_ms: window_secs as i64 * 1000 }
            }
            Kind::Absence { absent_secs } => Condition::Absence { absent_ms: absent_secs as i64 * 1000 },
        }
    }

    /// The condition in words, for the pages.
    pub(crate) fn describe(self) -> String {
        match self {
            Kind::Threshold { threshold, window_secs } => format!("≥ {threshold} in {window_secs} s"),
            Kind::Absence { absent_secs } => format!("none for {absent_secs} s"),
        }
    }
}

/// A valid alert rule.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub id: String,
    pub name: String,
    /// The filter as given, for answers and the store.
    pub spec: FilterSpec,
    pub filter: Filter,
    pub kind: Kind,
    pub created_ms: i64,
}

impl RuleBody {
    /// Checks the body and makes it rule `id`, created at `created_ms`.
    ///
    /// # Errors
    /// The first field that is wrong, named.
    pub(crate) fn into_rule(self, id: String, created_ms: i64) -> Result<Rule, RuleError> {
        let name = self.name.trim().to_owned();
        if name.is_empty() {
            return Err(refuse("name", "must not be empty"));
        }
        if name.chars().count() > MAX_NAME_CHARS {
            return Err(refuse("name", format!("is longer than {MAX_NAME_CHARS} characters")));
        }
        if !name.chars().all(is_identifier_char) {
            return Err(refuse("name", "must not contain control or format characters"));
        }
        let filter =
            Filter::from_spec(self.filter.clone()).map_err(|e| refuse(&format!("filter.{}", e.field), e.message))?;
        let in_range = |field: &str, value: u64, max: u64| {
            if (1..=max).contains(&value) {
                Ok(value)
            } else {
                Err(refuse(field, format!("must be between 1 and {max}, not {value}")))
            }
        };
        let kind = match (self.threshold, self.window_secs, self.absent_secs) {
            (Some(threshold), Some(window_secs), None) => Kind::Threshold {
                threshold: in_range("threshold", threshold, MAX_THRESHOLD)?,
                window_secs: in_range("window_secs", window_secs, MAX_WINDOW_SECS)?,
            },
            (None, None, Some(absent_secs)) => {
                Kind::Absence { absent_secs: in_range("absent_secs", absent_secs, MAX_ABSENT_SECS)? }
            }
            (Some(_), None, None) => return Err(refuse("window_secs", "is required with threshold")),
            (None, Some(_), None) => return Err(refuse("threshold", "is required with window_secs")),
            (None, None, None) => {
                return Err(refuse("threshold", "give threshold and window_secs, or absent_secs"));
            }
            (_, _, Some(_)) => {
                return Err(refuse(
                    "absent_secs",
                    "a rule is either a threshold (threshold, window_secs) or an absence (absent_secs), not both",
                ));
            }
        };
        Ok(Rule { id, name, spec: self.filter, filter, kind, created_ms })
    }
}

impl Rule {
    /// How the store keeps it.
    pub(crate) fn to_record(&self) -> AlertRuleRecord {
        let (threshold, window_secs, absent_secs) = match self.kind {
            Kind::Threshold { threshold, window_secs } => (Some(threshold), Some(window_secs), None),
            Kind::Absence { absent_secs } => (None, None, Some(absent_secs)),
        };
        AlertRuleRecord {
            id: self.id.clone(),
            name: self.name.clone(),
            // A struct of strings: serialising it cannot fail.
            filter: serde_json::to_string(&self.spec).expect("a filter spec serialises"),
            threshold,
            window_secs,
            absent_secs,
            created_ms: self.created_ms,
        }
    }

    /// A rule read back from the store, checked as if it had just been posted.
    ///
    /// # Errors
    /// The stored rule is not one this build accepts.
    pub(crate) fn from_record(record: AlertRuleRecord) -> Result<Self, RuleError> {
        let filter = serde_json::from_str(&record.filter).map_err(|e| refuse("filter", e.to_string()))?;
        let body = RuleBody {
            name: record.name,
            filter,
            threshold: record.threshold,
            window_secs: record.window_secs,
            absent_secs: record.absent_secs,
        };
        body.into_rule(record.id, record.created_ms)
    }

    /// The `source` of this rule's alert events: one per rule, so the store's index
    /// on source finds a rule's last alert event at once.
    pub(crate) fn source(&self) -> String {
        source_of(&self.id)
    }
}

/// Prefix of the `source` of every alert event; the rule's id follows.
pub(crate) const SOURCE_PREFIX: &str = "alerts/";

pub(crate) fn source_of(rule_id: &str) -> String {
    format!("{SOURCE_PREFIX}{rule_id}")
}

/// A new rule id: `r` and 12 hex digits (48 random bits; a log holds at most
/// [`MAX_RULES`] rules at a time).
pub(crate) fn new_rule_id() -> String {
    use rand::Rng;
    format!("r{:012x}", rand::rng().random::<u64>() & 0xffff_ffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: serde_json::Value) -> RuleBody {
        serde_json::from_value(v).unwrap()
    }

    fn refused(v: serde_json::Value) -> String {
        body(v).into_rule("r1".into(), 0).unwrap_err().field
    }

    #[test]
    fn a_rule_is_a_threshold_or_an_absence() {
        let r = body(
            serde_json::json!({"name":" failures ","filter":{"types":["task.failed"]},"threshold":3,"window_secs":60}),
        )
        .into_rule("r1".into(), 5)
        .unwrap();
        assert_eq!((r.name.as_str(), r.kind), ("failures", Kind::Threshold { threshold: 3, window_secs: 60 }));
        let a =
            body(serde_json::json!({"name":"quiet","filter":{},"absent_secs":600})).into_rule("r2".into(), 5).unwrap();
        assert_eq!(a.kind, Kind::Absence { absent_secs: 600 });
        let back = Rule::from_record(r.to_record()).unwrap();
        assert_eq!((back.name, back.kind, back.spec), (r.name, r.kind, r.spec));
    }

    #[test]
    fn each_bad_body_names_its_field() {
        use serde_json::json;
        assert_eq!(refused(json!({"name":"","filter":{},"absent_secs":1})), "name");
        assert_eq!(refused(json!({"name":"a\u{202e}b","filter":{},"absent_secs":1})), "name");
        assert_eq!(refused(json!({"name":"x","filter":{"types":["Nope"]},"absent_secs":1})), "filter.types");
        assert_eq!(refused(json!({"name":"x","filter":{},"threshold":0,"window_secs":1})), "threshold");
        assert_eq!(refused(json!({"name":"x","filter":{},"threshold":10_001,"window_secs":1})), "threshold");
        assert_eq!(refused(json!({"name":"x","filter":{},"threshold":1,"window_secs":0})), "window_secs");
        assert_eq!(refused(json!({"name":"x","filter":{},"threshold":1})), "window_secs");
        assert_eq!(refused(json!({"name":"x","filter":{},"window_secs":1})), "threshold");
        assert_eq!(refused(json!({"name":"x","filter":{}})), "threshold");
        assert_eq!(refused(json!({"name":"x","filter":{},"absent_secs":0})), "absent_secs");
        assert_eq!(
            refused(json!({"name":"x","filter":{},"threshold":1,"window_secs":1,"absent_secs":1})),
            "absent_secs"
        );
    }

    #[test]
    fn rule_ids_are_short_and_fresh() {
        let (a, b) = (new_rule_id(), new_rule_id());
        assert_eq!(a.len(), 13);
        assert_ne!(a, b);
    }
}
