/**
 * swarmfeed's JavaScript client, for browsers and Node 20+. No dependencies.
 *
 * - `follow.js`: a subscription that delivers each matching event once, in seq order,
 *   and resumes after the last one on every reconnect (WebSocket, else SSE).
 * - `websocket.js`, `sse.js`: the two transports, one connection each.
 * - `post.js`: `POST /api/events` with ids, so retries store nothing twice.
 * - `backoff.js`, `base-url.js`, `errors.js`: delays, endpoints, the one error type.
 */

export { follow, Subscription } from "./follow.js";
export { post } from "./post.js";
export { SwarmfeedError } from "./errors.js";
