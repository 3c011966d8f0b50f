//! WebSocket client messages: any text gets a parsed request (a subscription's filter
//! within its limits) or an error message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarmfeed::fuzzing::{MAX_TYPE_PATTERNS, parse_ws_message, type_pattern_count};

fuzz_target!(|text: &str| {
    match parse_ws_message(text) {
        Ok(Some(filter)) => assert!(type_pattern_count(&filter) <= MAX_TYPE_PATTERNS),
        Ok(None) => {}
        Err(message) => assert!(!message.is_empty(), "errors say what is wrong"),
    }
});
