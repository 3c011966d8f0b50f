//! Filter query parameters: any query string gives a filter within its limits or an
//! error naming the field.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarmfeed::filter::{Filter, FilterSpec};
use swarmfeed::fuzzing::{MAX_TYPE_PATTERNS, type_pattern_count};

fuzz_target!(|query: &str| {
    let Ok(spec) = serde_urlencoded::from_str::<FilterSpec>(query) else { return };
    match Filter::from_spec(spec) {
        Ok(f) => assert!(type_pattern_count(&f) <= MAX_TYPE_PATTERNS),
        Err(e) => assert!(!e.field.is_empty() && !e.message.is_empty(), "errors name the field and say why"),
    }
});
