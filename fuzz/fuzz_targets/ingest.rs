//! `POST /api/events` bodies: parsing, validation and redaction must never panic, and
//! whatever they accept must be within the limits of DESIGN §2, with no secret left.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use swarmfeed::fuzzing::{MAX_ID_CHARS, MAX_NAME_CHARS, SERVER_ID_PREFIX, is_valid_event_type};
use swarmfeed::ingest::IngestRules;

/// Built once: compiling the redaction patterns per input would dominate the run.
static RULES: LazyLock<IngestRules> = LazyLock::new(IngestRules::default);

fuzz_target!(|body: &[u8]| {
    let rules = &*RULES;
    let Ok(events) = rules.parse_body(body) else { return };
    assert!(!events.is_empty() && events.len() <= rules.max_batch);
    for e in events {
        assert!(is_valid_event_type(&e.event_type), "{}", e.event_type);
        assert!((1..=MAX_NAME_CHARS).contains(&e.source.chars().count()), "source {:?}", e.source);
        for name in [&e.task_id, &e.agent_id].into_iter().flatten() {
            assert!(name.chars().count() <= MAX_NAME_CHARS, "{name:?}");
        }
        assert!(e.id.chars().count() <= MAX_ID_CHARS);
        assert!(!e.id.starts_with(SERVER_ID_PREFIX), "the server's own id namespace: {}", e.id);
        // Stored as written (a number like 1e400 included), so read it as raw JSON.
        let data: &RawValue = serde_json::from_str(&e.data).expect("stored data is JSON");
        assert!(data.get().starts_with('{'), "data is an object: {}", data.get());
    }
});
