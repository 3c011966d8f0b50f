//! `POST /api/events` bodies: parsing, validation and redaction must never panic, and
//! whatever they accept must be within the limits of DESIGN §2.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use swarmfeed::event::{MAX_ID_CHARS, MAX_NAME_CHARS, is_valid_event_type};
use swarmfeed::ingest::IngestRules;

/// Built once: compiling the redaction patterns per input would dominate the run.
static RULES: LazyLock<IngestRules> = LazyLock::new(IngestRules::default);

fuzz_target!(|body: &[u8]| {
    let rules = &*RULES;
    if let Ok(events) = rules.parse_body(body) {
        assert!(!events.is_empty() && events.len() <= rules.max_batch);
        for e in events {
            assert!(is_valid_event_type(&e.event_type));
            assert!((1..=MAX_NAME_CHARS).contains(&e.source.chars().count()));
            assert!(e.id.chars().count() <= MAX_ID_CHARS);
            let data: serde_json::Value = serde_json::from_str(&e.data).expect("stored data is JSON");
            assert!(data.is_object());
        }
    }
});
