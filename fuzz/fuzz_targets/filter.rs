//! Filter query parameters: any query string gives a filter or a named error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarmfeed::filter::{Filter, FilterQuery, MAX_TYPE_PATTERNS};

fuzz_target!(|query: &str| {
    let Ok(q) = serde_urlencoded::from_str::<FilterQuery>(query) else { return };
    match Filter::from_query(&q) {
        Ok(f) => assert!(f.type_patterns().len() <= MAX_TYPE_PATTERNS),
        Err(e) => assert!(!e.message.is_empty()),
    }
});
