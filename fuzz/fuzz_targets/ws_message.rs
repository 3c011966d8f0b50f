//! WebSocket client messages: any text gets a parsed request or an error message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarmfeed::transport::ws::parse_request;

fuzz_target!(|text: &str| {
    if let Err(message) = parse_request(text) {
        assert!(!message.is_empty(), "errors say what is wrong");
    }
});
