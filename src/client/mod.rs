//! The command-line clients: they talk to a running server over HTTP like any other
//! program would, and share nothing with the server's internals but the event's shape.
//!
//! - [`tail`]: watch the feed in a terminal (WebSocket, resuming after the last seq).
//! - [`emit`]: post events from flags, a file or stdin, with idempotent retries.
//! - [`webhook`]: add, list and remove webhooks through the admin API.
//! - [`remote`]: the server's URL, checked once, and the endpoints under it.
//! - [`backoff`]: delays between attempts, with jitter.

pub(crate) mod backoff;
pub mod emit;
pub mod remote;
pub mod tail;
pub mod webhook;
