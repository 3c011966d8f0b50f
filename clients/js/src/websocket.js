/**
 * The WebSocket transport: `GET /ws`, one `subscribe` with `"batch": true`.
 *
 * Uses the platform's `WebSocket` (browsers; Node 22+, or Node 20 with
 * `--experimental-websocket`). A token goes in `Authorization`, which Node's WebSocket
 * can send and a browser's cannot (a browser authenticates the upgrade with its
 * session cookie; the subscription picks SSE for a browser given a token).
 *
 * A refused upgrade looks like any network failure to a WebSocket (no status), so a
 * failed handshake is followed by one plain `GET /ws` with the same credentials: 401
 * or 403 is the server refusing them, and the subscription stops with its words.
 */

import { retryAfterMs } from "./backoff.js";
import { authorization, endpoint } from "./base-url.js";
import { SwarmfeedError, errorFromResponse } from "./errors.js";

/**
 * How often an idle socket sends `{"action":"ping"}`, in milliseconds. The server's own
 * pings are answered by the platform out of sight of scripts; the `pong` this earns
 * is what tells a quiet feed from a dead connection.
 */
export const PING_INTERVAL_MS = 20_000;

/** The close code for a policy violation: a revoked token, or a client the server gave up on. */
const POLICY_VIOLATION = 1008;

/**
 * Whether this platform's WebSocket can send an `Authorization` header: Node's
 * (undici's) takes `{headers}` as its second argument; a browser's takes only
 * subprotocols there.
 */
export function webSocketCarriesHeaders() {
  return typeof globalThis.process === "object" && typeof globalThis.process.versions?.node === "string";
}

/**
 * Connects, subscribes and reports frames to the subscription's handlers.
 *
 * @param {string | URL} base the server's base URL
 * @param {import("./follow.js").TransportOptions} options
 * @param {import("./follow.js").TransportHandlers} on
 * @returns {{close(): void}}
 */
export function openWebSocket(base, { token, filter, since, fetch: fetchImpl }, on) {
  const url = endpoint(base, "/ws");
  const probeUrl = new URL(url);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const ws = token ? new WebSocket(url, { headers: authorization(token) }) : new WebSocket(url);
  let opened = false;
  let done = false;
  let pinger = null;
  const end = (report) => {
    if (done) return;
    done = true;
    clearInterval(pinger);
    if (ws.readyState === WebSocket.CONNECTING || ws.readyState === WebSocket.OPEN) ws.close(1000);
    report();
  };

  ws.onopen = () => {
    opened = true;
    const subscribe = { action: "subscribe", channel: "events", filter, batch: true };
    if (since !== null) subscribe.since = since;
    ws.send(JSON.stringify(subscribe));
    pinger = setInterval(() => ws.send('{"action":"ping"}'), PING_INTERVAL_MS);
  };

  ws.onmessage = ({ data }) => {
    if (done) return;
    on.alive();
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return end(() => on.dropped("the server sent a frame that is not JSON"));
    }
    switch (frame.type) {
      case "event":
        return on.events([frame.payload], false);
      case "batch":
        return on.events(frame.payload, true);
      case "subscribed":
        return on.subscribed(frame);
      case "reset":
        return on.reset(frame.oldest);
      case "error":
        // The only message sent is the subscription: its refusal (a bad filter) stands.
        return end(() => on.fatal(new SwarmfeedError(frame.code || "bad_request", frame.message || "")));
      // pong, unsubscribed, and frame types newer than this client: nothing to do.
    }
  };

  // A failed handshake: Node's WebSocket reports it with `error` and no `close`,
  // browsers with both, so either one asks the server why.
  const handshakeFailed = () => {
    end(() => {});
    probe(probeUrl, token, fetchImpl).then(({ fatal, reason, retryAfter, fallback }) =>
      fatal ? on.fatal(fatal) : on.dropped(reason, { retryAfterMs: retryAfter, fallback }),
    );
  };

  ws.onclose = ({ code, reason }) => {
    if (done) return;
    if (!opened) return handshakeFailed();
    if (code === POLICY_VIOLATION) {
      const error =
        reason === "token revoked"
          ? new SwarmfeedError("token_revoked", reason)
          : new SwarmfeedError("policy", reason || "the server closed the connection for a policy violation (1008)");
      return end(() => on.fatal(error));
    }
    end(() => on.dropped(`the server closed the connection (${code}${reason ? ` ${reason}` : ""})`));
  };

  // After the handshake every failure is followed by `close`, which says more.
  ws.onerror = () => {
    if (!done && !opened) handshakeFailed();
  };

  return { close: () => end(() => {}) };
}

/**
 * Asks `GET /ws` without an upgrade why the upgrade failed.
 *
 * @returns {Promise<{fatal?: SwarmfeedError, reason: string, retryAfter?: number, fallback?: boolean}>}
 */
async function probe(url, token, fetchImpl) {
  let response;
  try {
    response = await fetchImpl(url, { headers: authorization(token), cache: "no-store" });
  } catch (error) {
    return { reason: `cannot reach the server (${error.message})` };
  }
  const error = await errorFromResponse(response);
  if (response.status === 401 || response.status === 403) return { fatal: error, reason: error.message };
  if (response.status === 429 || response.status >= 500) {
    return { reason: error.message, retryAfter: retryAfterMs(response.headers) };
  }
  // The server answers HTTP but the upgrade does not get through (a proxy that does
  // not pass WebSockets, say): the same subscription over SSE may.
  return { reason: `the WebSocket upgrade failed though the server answers (HTTP ${response.status})`, fallback: true };
}
