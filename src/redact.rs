//! Redaction of secrets in event data, applied at ingest before anything is stored or
//! broadcast (DESIGN §6).
//!
//! Owns the key pattern and the bearer-token pattern; it does not decide which fields
//! of an event are redacted (`ingest` passes it `data` and the string fields).

use regex::Regex;
use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

/// Keys whose values are replaced, at any depth (DESIGN §6).
pub(crate) const DEFAULT_KEY_PATTERN: &str =
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
    pub(crate) fn is_secret_key(&self, key: &str) -> bool {
        self.keys.is_match(key)
    }

    /// `text` with its bearer tokens redacted, or `None` when it holds none. Ingest
    /// applies it to the event's string fields (`source`, `task_id`, `agent_id`) as
    /// well as to every string in `data`.
    pub(crate) fn redact_text(&self, text: &str) -> Option<String> {
        self.holds_bearer(text)
            .then(|| self.bearer.replace_all(text, format!("Bearer {REDACTED}").as_str()).into_owned())
    }

    /// Whether `text` holds a bearer token. Every string of every event passes here,
    /// and nearly none holds the word: a plain scan for it answers those without the
    /// regex engine.
    fn holds_bearer(&self, text: &str) -> bool {
        text.as_bytes().windows(6).any(|w| w.eq_ignore_ascii_case(b"bearer")) && self.bearer.is_match(text)
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

/// Deepest nesting the rewrite of [`Redactor::redact_raw`] follows. Its scan has
/// already held the text to serde_json's limit (128); this only guards the stack
/// should the two ever count differently.
const MAX_DEPTH: usize = 256;

/// Why raw JSON could not be redacted.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RawError {
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error("nested more than {MAX_DEPTH} levels deep")]
    TooDeep,
}

impl Redactor {
    /// Redacts JSON given as text, keeping every number, `true`, `false` and `null`
    /// exactly as written (a `Value` would turn integers beyond 64 bits into floats).
    /// Answers the compact redacted text, or `None` when nothing needed redacting
    /// (the caller then keeps the text it has).
    ///
    /// # Errors
    /// The text is not JSON, or is nested deeper than serde_json allows.
    pub(crate) fn redact_raw(&self, json: &RawValue) -> Result<Option<String>, RawError> {
        // Most data holds no secret: one pass that allocates nothing tells, and only
        // data with a secret is rewritten. The rewrite re-reads each level it enters,
        // which made the common case twice as slow as parsing into a `Value` when
        // every event went through it.
        let mut scan = serde_json::Deserializer::from_str(json.get());
        if !Scan(self).deserialize(&mut scan)? {
            return Ok(None);
        }
        let mut out = String::with_capacity(json.get().len());
        Ok(self.walk(json, 0, &mut out)?.then_some(out))
    }

    /// Writes `raw` redacted into `out`; answers whether anything changed.
    fn walk(&self, raw: &RawValue, depth: usize, out: &mut String) -> Result<bool, RawError> {
        let text = raw.get();
        let mut changed = false;
        match text.as_bytes().first() {
            Some(b'{') => {
                if depth == MAX_DEPTH {
                    return Err(RawError::TooDeep);
                }
                let Fields(fields) = serde_json::from_str(text)?;
                out.push('{');
                for (i, (key, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::to_string(key)?);
                    out.push(':');
                    if self.is_secret_key(key) {
                        changed |= value.get() != REDACTED_JSON;
                        out.push_str(REDACTED_JSON);
                    } else {
                        changed |= self.walk(value, depth + 1, out)?;
                    }
                }
                out.push('}');
            }
            Some(b'[') => {
                if depth == MAX_DEPTH {
                    return Err(RawError::TooDeep);
                }
                let items: Vec<&RawValue> = serde_json::from_str(text)?;
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    changed |= self.walk(item, depth + 1, out)?;
                }
                out.push(']');
            }
            Some(b'"') => {
                let s: std::borrow::Cow<'_, str> = serde_json::from_str(text)?;
                match self.redact_text(&s) {
                    Some(redacted) => {
                        out.push_str(&serde_json::to_string(&redacted)?);
                        changed = true;
                    }
                    None => out.push_str(text),
                }
            }
            // A number, true, false or null: exactly as written.
            _ => out.push_str(text),
        }
        Ok(changed)
    }
}

/// One pass over JSON text answering whether anything in it may need redacting: a
/// secret key anywhere, or a bearer token in a string. serde_json's nesting limit
/// applies as it does to any parse.
struct Scan<'r>(&'r Redactor);

impl<'de> DeserializeSeed<'de> for Scan<'_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Scan<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JSON")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let mut found = false;
        while let Some(secret) = map.next_key_seed(SecretKey(self.0))? {
            if secret {
                map.next_value::<IgnoredAny>()?;
                found = true;
            } else {
                found |= map.next_value_seed(Scan(self.0))?;
            }
        }
        Ok(found)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        let mut found = false;
        while let Some(f) = seq.next_element_seed(Scan(self.0))? {
            found |= f;
        }
        Ok(found)
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<bool, E> {
        Ok(self.0.holds_bearer(s))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
}

/// An object's key, answered as whether it is a secret one, without allocating it.
struct SecretKey<'r>(&'r Redactor);

impl<'de> DeserializeSeed<'de> for SecretKey<'_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for SecretKey<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object key")
    }
    fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
        Ok(self.0.is_secret_key(key))
    }
}

/// `"[REDACTED]"` as a JSON string.
const REDACTED_JSON: &str = "\"[REDACTED]\"";

/// An object's members in the order written, values as raw text.
struct Fields<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> Visitor<'de> for Visit {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(entry) = map.next_entry::<String, &'de RawValue>()? {
                    fields.push(entry);
                }
                Ok(Fields(fields))
            }
        }
        deserializer.deserialize_map(Visit)
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

    fn raw(text: &str) -> Option<String> {
        let raw: &RawValue = serde_json::from_str(text).unwrap();
        Redactor::default().redact_raw(raw).unwrap()
    }

    #[test]
    fn raw_json_is_redacted_like_a_value_and_keeps_its_numbers() {
        let text = r#"{"n": 123456789012345678901234567890, "token": {"a": 1}, "list": [1.50, "Bearer abc", {"seed": 2}],
                      "\u00e9": "\u00e9", "ok": null}"#;
        assert_eq!(
            raw(text).unwrap(),
            r#"{"n":123456789012345678901234567890,"token":"[REDACTED]","list":[1.50,"Bearer [REDACTED]",{"seed":"[REDACTED]"}],"é":"\u00e9","ok":null}"#
        );
        assert_eq!(raw(r#"{"a": [1, {"b": "clean"}], "token": "[REDACTED]"}"#), None, "nothing to redact");
        let mut value: Value = serde_json::from_str(text).unwrap();
        Redactor::default().redact(&mut value);
        let from_raw: Value = serde_json::from_str(&raw(text).unwrap()).unwrap();
        assert_eq!(from_raw, value, "the same redaction as on a value");
    }

    #[test]
    fn raw_json_nested_too_deeply_is_an_error_not_a_crash() {
        let deep = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
        let raw: &RawValue = serde_json::from_str(&deep).unwrap();
        assert!(Redactor::default().redact_raw(raw).is_err());
        let deep_secret = format!("{}{{\"token\":1}}{}", "[".repeat(100), "]".repeat(100));
        let raw: &RawValue = serde_json::from_str(&deep_secret).unwrap();
        let redacted = Redactor::default().redact_raw(raw).unwrap().unwrap();
        assert!(redacted.contains(r#"{"token":"[REDACTED]"}"#), "within the limit it is rewritten");
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
