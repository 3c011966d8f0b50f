//! Redaction of secrets in event data, applied at ingest before anything is stored or
//! broadcast (DESIGN §6).
//!
//! Owns the key pattern and the bearer-token pattern; it does not decide which fields
//! of an event are redacted (`ingest` passes it `data` and the string fields).

use regex::Regex;
use serde_json::Value;

/// Keys whose values are replaced, at any depth (DESIGN §6).
pub const DEFAULT_KEY_PATTERN: &str =
    r"(?i)pass(word)?|secret|token|api[_-]?key|authori[sz]ation|cookie|private[_-]?key|macaroon|preimage|seed";

/// What a redacted value becomes.
pub const REDACTED: &str = "[REDACTED]";

/// Bearer credentials inside free text, e.g. a logged `Authorization` header.
const BEARER_PATTERN: &str = r"(?i)\bbearer\s+[A-Za-z0-9\-._~+/]+=*";

/// Replaces secrets in JSON values. Cheap to share: one per server.
#[derive(Debug, Clone)]
pub struct Redactor {
    keys: Regex,
    bearer: Regex,
}

impl Redactor {
    /// A redactor for keys matching `key_pattern` (searched, not anchored, so `apiKey`
    /// and `x_api_key` both match `api[_-]?key`).
    ///
    /// # Errors
    /// The pattern is not a valid regular expression.
    pub fn new(key_pattern: &str) -> Result<Self, regex::Error> {
        Ok(Redactor {
            keys: Regex::new(key_pattern)?,
            // A constant pattern, covered by the tests below.
            bearer: Regex::new(BEARER_PATTERN).expect("bearer pattern compiles"),
        })
    }

    /// Whether values under `key` are redacted.
    pub fn is_secret_key(&self, key: &str) -> bool {
        self.keys.is_match(key)
    }

    /// `text` with its bearer tokens redacted, or `None` when it holds none. Ingest
    /// applies it to the event's string fields (`source`, `task_id`, `agent_id`) as
    /// well as to every string in `data`.
    pub fn redact_text(&self, text: &str) -> Option<String> {
        self.bearer
            .is_match(text)
            .then(|| self.bearer.replace_all(text, format!("Bearer {REDACTED}").as_str()).into_owned())
    }

    /// Redacts `value` in place; returns whether anything changed.
    ///
    /// Recursion is bounded by the JSON parser's nesting limit (128), so input cannot
    /// exhaust the stack here.
    pub fn redact(&self, value: &mut Value) -> bool {
        match value {
            Value::Object(map) => {
                let mut changed = false;
                for (key, v) in map.iter_mut() {
                    if self.is_secret_key(key) {
                        if v.as_str() != Some(REDACTED) {
                            *v = Value::String(REDACTED.to_owned());
                            changed = true;
                        }
                    } else {
                        changed |= self.redact(v);
                    }
                }
                changed
            }
            Value::Array(items) => items.iter_mut().fold(false, |c, v| self.redact(v) | c),
            Value::String(s) => match self.redact_text(s) {
                Some(redacted) => {
                    *s = redacted;
                    true
                }
                None => false,
            },
            Value::Null | Value::Bool(_) | Value::Number(_) => false,
        }
    }
}

impl Default for Redactor {
    fn default() -> Self {
        // The default pattern is a constant, covered by the tests below.
        Redactor::new(DEFAULT_KEY_PATTERN).expect("default pattern compiles")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn redacted(mut v: Value) -> Value {
        Redactor::default().redact(&mut v);
        v
    }

    #[test]
    fn secret_keys_are_redacted_at_any_depth() {
        let v = redacted(json!({
            "password": "hunter2",
            "nested": {"API_KEY": "k", "list": [{"private-key": "p"}, {"ok": 1}]},
            "Authorization": {"whole": "object"},
            "seed": 12,
            "plain": "fine",
        }));
        assert_eq!(v["password"], REDACTED);
        assert_eq!(v["nested"]["API_KEY"], REDACTED);
        assert_eq!(v["nested"]["list"][0]["private-key"], REDACTED);
        assert_eq!(v["nested"]["list"][1]["ok"], 1);
        assert_eq!(v["Authorization"], REDACTED);
        assert_eq!(v["seed"], REDACTED);
        assert_eq!(v["plain"], "fine");
    }

    #[test]
    fn bearer_tokens_inside_strings_are_redacted() {
        let v = redacted(json!({"log": ["GET / Authorization: Bearer abc.DEF-123== done"]}));
        assert_eq!(v["log"][0], "GET / Authorization: Bearer [REDACTED] done");
    }

    #[test]
    fn clean_data_is_left_alone() {
        let original = json!({"description": "sort the logs", "bid_sats": 40});
        let mut v = original.clone();
        assert!(!Redactor::default().redact(&mut v));
        assert_eq!(v, original);
    }

    #[test]
    fn a_custom_pattern_replaces_the_default() {
        let r = Redactor::new("(?i)^ssn$").unwrap();
        let mut v = json!({"ssn": "1", "password": "kept"});
        r.redact(&mut v);
        assert_eq!(v["ssn"], REDACTED);
        assert_eq!(v["password"], "kept");
        assert!(Redactor::new("(").is_err());
    }
}
