//! Redaction over arbitrary JSON with an arbitrary key pattern: never panics, leaves
//! no value under a matching key and no bearer token, and the raw-text redaction
//! ingest uses agrees with the one over parsed values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use swarmfeed::fuzzing::{redact_raw, unredacted};
use swarmfeed::redact::Redactor;

fuzz_target!(|input: (&str, &str)| {
    let (pattern, json) = input;
    // Long patterns only slow the search down; key matching is the regex crate's job.
    if pattern.len() > 64 {
        return;
    }
    let Ok(redactor) = Redactor::new(pattern) else { return };
    let Ok(mut value) = serde_json::from_str::<Value>(json) else { return };
    redactor.redact(&mut value);
    assert_eq!(unredacted(&redactor, &value), None, "left visible in {value}");
    // What ingest stores: the raw text, redacted where needed.
    if let Ok(raw) = redact_raw(&redactor, json) {
        let stored = raw.unwrap_or_else(|| json.to_owned());
        if let Ok(stored) = serde_json::from_str::<Value>(&stored) {
            assert_eq!(unredacted(&redactor, &stored), None, "ingest stored a secret in {stored}");
        }
    }
});
