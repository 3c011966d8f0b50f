//! Subscription and query filters: which events a viewer wants (DESIGN §3).
//!
//! Owns the one declaration of the filter's fields ([`FilterSpec`]: a WebSocket
//! `filter` object, `tail`'s, and the query parameters every filtering endpoint reads),
//! their parsing into a [`Filter`] and matching against a committed event. It does not know where events come from; `store` turns a
//! [`Filter`] into SQL with [`Filter::type_patterns`].

use serde::{Deserialize, Serialize};

use crate::event::{Event, MAX_NAME_CHARS, MAX_TYPE_CHARS, is_dotted_name, is_valid_event_type};

/// Most type patterns one filter may hold; bounds the per-event matching cost.
pub(crate) const MAX_TYPE_PATTERNS: usize = 32;

/// One entry of `types`: an exact type, or a prefix written `task.*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TypePattern {
    Exact(String),
    /// The prefix including its trailing dot: `task.*` is stored as `task.`.
    Prefix(String),
}

impl TypePattern {
    /// Parses `task.created` or `task.*`.
    ///
    /// # Errors
    /// A message naming what is wrong with `s`.
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        if s.chars().count() > MAX_TYPE_CHARS {
            return Err(format!("type pattern is longer than {MAX_TYPE_CHARS} characters"));
        }
        if let Some(prefix) = s.strip_suffix(".*") {
            if is_dotted_name(prefix, 1) {
                return Ok(TypePattern::Prefix(format!("{prefix}.")));
            }
        } else if is_valid_event_type(s) {
            return Ok(TypePattern::Exact(s.to_owned()));
        }
        Err(format!("type pattern {s:?} is neither an event type like \"task.created\" nor a prefix like \"task.*\""))
    }

    pub(crate) fn matches(&self, event_type: &str) -> bool {
        match self {
            TypePattern::Exact(t) => t == event_type,
            TypePattern::Prefix(p) => event_type.starts_with(p.as_str()),
        }
    }
}

/// A filter; all fields optional, combined with AND. The default matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    types: Vec<TypePattern>,
    task_id: Option<String>,
    agent_id: Option<String>,
    source: Option<String>,
}

/// A filter that could not be parsed: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FilterError {
    pub field: &'static str,
    pub message: String,
}

/// The four filter fields, declared once: the `filter` object of a WebSocket
/// `subscribe` message (and of `tail`'s), and the query parameters of every endpoint
/// that filters (`?types=task.*,bid.submitted&task_id=…`, read by `http`'s one filter
/// extractor). `types` is an array, or a string of comma-separated patterns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FilterSpec {
    /// Comma-separated types or prefixes like task.*
    #[serde(default, deserialize_with = "type_list", skip_serializing_if = "Vec::is_empty")]
    #[param(value_type = Option<String>)]
    pub types: Vec<String>,
    /// Only this task's events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// Only this agent's events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// Only this producer's events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl FilterSpec {
    /// The fields' names, as keys and query parameters.
    pub(crate) const FIELDS: [&'static str; 4] = ["types", "task_id", "agent_id", "source"];
}

/// Type patterns written as one string, separated by commas: blanks around each
/// trimmed, empty ones dropped.
pub(crate) fn split_types(s: &str) -> Vec<String> {
    s.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned).collect()
}

/// `types` as an array of patterns, or as one string of them separated by commas (a
/// query parameter, a form field), blanks around each trimmed and empty ones dropped.
fn type_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct Types;
    impl<'de> serde::de::Visitor<'de> for Types {
        type Value = Vec<String>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a list of type patterns, or a string of them separated by commas")
        }

        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Vec<String>, E> {
            Ok(split_types(s))
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            let mut out = Vec::new();
            while let Some(t) = seq.next_element::<String>()? {
                out.push(t);
            }
            Ok(out)
        }
    }
    d.deserialize_any(Types)
}

impl Filter {
    /// # Errors
    /// The first field that is malformed, with the reason.
    pub fn from_spec(spec: FilterSpec) -> Result<Self, FilterError> {
        Self::build(spec.types.iter().map(String::as_str), spec.task_id, spec.agent_id, spec.source)
    }

    fn build<'a>(
        types: impl Iterator<Item = &'a str>,
        task_id: Option<String>,
        agent_id: Option<String>,
        source: Option<String>,
    ) -> Result<Self, FilterError> {
        let mut patterns = Vec::new();
        for t in types {
            if patterns.len() == MAX_TYPE_PATTERNS {
                return Err(FilterError {
                    field: "types",
                    message: format!("at most {MAX_TYPE_PATTERNS} type patterns"),
                });
            }
            let p = TypePattern::parse(t).map_err(|message| FilterError { field: "types", message })?;
            if !patterns.contains(&p) {
                patterns.push(p);
            }
        }
        Ok(Filter {
            types: patterns,
            task_id: check_name("task_id", task_id)?,
            agent_id: check_name("agent_id", agent_id)?,
            source: check_name("source", source)?,
        })
    }

    /// A filter on one task, as the task timeline uses.
    pub fn task(task_id: impl Into<String>) -> Self {
        Filter { task_id: Some(task_id.into()), ..Filter::default() }
    }

    pub fn matches(&self, e: &Event) -> bool {
        (self.types.is_empty() || self.types.iter().any(|p| p.matches(&e.event_type)))
            && self.task_id.as_deref().is_none_or(|t| e.task_id.as_deref() == Some(t))
            && self.agent_id.as_deref().is_none_or(|a| e.agent_id.as_deref() == Some(a))
            && self.source.as_deref().is_none_or(|s| &*e.source == s)
    }

    pub(crate) fn type_patterns(&self) -> &[TypePattern] {
        &self.types
    }

    pub fn task_id(&self) -> Option<&str> {
        self.task_id.as_deref()
    }

    pub fn agent_id(&self) -> Option<&str> {
        self.agent_id.as_deref()
    }

    pub fn source(&self) -> Option<&str> {
        self.source.as_deref()
    }
}

fn check_name(field: &'static str, value: Option<String>) -> Result<Option<String>, FilterError> {
    match value {
        Some(v) if v.is_empty() => Err(FilterError { field, message: "must not be empty".into() }),
        Some(v) if v.chars().count() > MAX_NAME_CHARS => {
            Err(FilterError { field, message: format!("is longer than {MAX_NAME_CHARS} characters") })
        }
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventParts;
    use proptest::prelude::*;

    fn event(event_type: &str, task: Option<&str>, agent: Option<&str>, source: &str) -> Event {
        Event::encode(EventParts {
            seq: 1,
            id: "x",
            event_type,
            source,
            task_id: task,
            agent_id: agent,
            ts_ms: 0,
            data: "{}",
        })
        .unwrap()
    }

    fn types(list: &[&str]) -> Filter {
        Filter::from_spec(FilterSpec { types: list.iter().map(|s| s.to_string()).collect(), ..FilterSpec::default() })
            .unwrap()
    }

    #[test]
    fn prefixes_match_whole_segments_only() {
        let f = types(&["task.*"]);
        assert!(f.matches(&event("task.created", None, None, "s")));
        assert!(f.matches(&event("task.sub.x", None, None, "s")));
        assert!(!f.matches(&event("tasks.created", None, None, "s")));
        assert!(!f.matches(&event("bid.submitted", None, None, "s")));
    }

    #[test]
    fn fields_combine_with_and() {
        let f = Filter::from_spec(FilterSpec {
            types: vec!["bid.submitted".into()],
            task_id: Some("t1".into()),
            agent_id: Some("a1".into()),
            source: None,
        })
        .unwrap();
        assert!(f.matches(&event("bid.submitted", Some("t1"), Some("a1"), "x")));
        assert!(!f.matches(&event("bid.submitted", Some("t2"), Some("a1"), "x")));
        assert!(!f.matches(&event("bid.submitted", Some("t1"), None, "x")));
        assert!(!f.matches(&event("task.created", Some("t1"), Some("a1"), "x")));
    }

    #[test]
    fn bad_patterns_name_the_field() {
        for bad in ["*", "task", "Task.*", "task.*.*", ".*", "a.b*"] {
            let err = Filter::from_spec(FilterSpec { types: vec![bad.into()], ..Default::default() }).unwrap_err();
            assert_eq!(err.field, "types", "{bad}");
        }
        let err = Filter::from_spec(FilterSpec { task_id: Some(String::new()), ..Default::default() }).unwrap_err();
        assert_eq!(err.field, "task_id");
        let many = (0..=MAX_TYPE_PATTERNS).map(|i| format!("a.t{i}")).collect();
        assert!(Filter::from_spec(FilterSpec { types: many, ..Default::default() }).is_err());
    }

    #[test]
    fn types_are_a_list_or_a_comma_separated_string() {
        let spec = |json: &str| serde_json::from_str::<FilterSpec>(json).map(|s| s.types);
        let both = vec!["task.*".to_owned(), "bid.submitted".to_owned()];
        assert_eq!(spec(r#"{"types":"task.*, bid.submitted,"}"#).unwrap(), both);
        assert_eq!(spec(r#"{"types":["task.*","bid.submitted"]}"#).unwrap(), both);
        let query: FilterSpec = serde_urlencoded::from_str("types=task.*,bid.submitted&task_id=t1").unwrap();
        assert_eq!((query.types, query.task_id.as_deref()), (both, Some("t1")));
        assert!(spec(r#"{"types":[1]}"#).is_err());
        assert!(spec(r#"{"colour":"red"}"#).unwrap_err().to_string().contains("colour"));
    }

    proptest! {
        // Filter algebra: adding a type pattern never hides an event that matched before,
        // and the empty filter matches everything.
        #[test]
        fn more_patterns_match_a_superset(
            a in "[a-c]\\.[a-c]", b in "[a-c]\\.[a-c]", t in "[a-c]\\.[a-c]", prefix in any::<bool>()
        ) {
            let e = event(&t, None, None, "s");
            prop_assert!(Filter::default().matches(&e));
            let second = if prefix { format!("{}.*", &b[..1]) } else { b.clone() };
            let one = types(&[&a]);
            let two = types(&[&a, &second]);
            prop_assert!(!one.matches(&e) || two.matches(&e));
            prop_assert_eq!(two.matches(&e), one.matches(&e) || types(&[&second]).matches(&e));
        }
    }
}
