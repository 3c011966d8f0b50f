/**
 * The server-sent events transport: `GET /api/stream`, read through `fetch`.
 *
 * `fetch` rather than `EventSource`, in browsers too: it can send a token in
 * `Authorization` (EventSource sends only cookies), it shows the status of a refused
 * stream (EventSource reports every failure as the same bare `error`), and it leaves
 * reconnecting to the subscription, which resumes from the last seq it delivered
 * with its own backoff instead of EventSource's fixed retry.
 *
 * One call opens one stream and reports to the subscription's handlers; it keeps no
 * events beyond the network read being parsed.
 */

import { retryAfterMs } from "./backoff.js";
import { authorization, endpoint } from "./base-url.js";
import { SwarmfeedError, errorFromResponse } from "./errors.js";

/**
 * The longest SSE message read, in characters: above the server's largest send (about
 * 1.5 MiB of events), far below what would hurt. A longer one ends the stream.
 */
export const MAX_MESSAGE_CHARS = 16 << 20;

/**
 * Splits a `text/event-stream` into messages (the WHATWG HTML "event stream
 * interpretation"): lines end in CR, LF or CRLF, `:` starts a comment, a blank line
 * dispatches the message.
 */
export class SseParser {
  #buffer = "";
  #event = "";
  #data = [];
  #dataChars = 0;
  #id = null;

  /**
   * Takes the next piece of the stream; returns the messages it completed.
   *
   * @param {string} chunk
   * @returns {{event: string, data: string, id: string | null}[]}
   * @throws {SwarmfeedError} when one message grows past {@link MAX_MESSAGE_CHARS}
   */
  push(chunk) {
    this.#buffer += chunk;
    const messages = [];
    let start = 0;
    for (;;) {
      const cr = this.#buffer.indexOf("\r", start);
      const lf = this.#buffer.indexOf("\n", start);
      let end = cr === -1 ? lf : lf === -1 ? cr : Math.min(cr, lf);
      if (end === -1) break;
      let next = end + 1;
      if (this.#buffer[end] === "\r") {
        // A CR at the end of the piece may be the first half of a CRLF.
        if (next === this.#buffer.length) break;
        if (this.#buffer[next] === "\n") next += 1;
      }
      const message = this.#line(this.#buffer.slice(start, end));
      if (message) messages.push(message);
      start = next;
    }
    this.#buffer = this.#buffer.slice(start);
    if (this.#buffer.length + this.#dataChars > MAX_MESSAGE_CHARS) {
      throw new SwarmfeedError("protocol", `an event-stream message over ${MAX_MESSAGE_CHARS} characters`);
    }
    return messages;
  }

  #line(line) {
    if (line === "") {
      const message = this.#data.length
        ? { event: this.#event || "message", data: this.#data.join("\n"), id: this.#id }
        : null;
      this.#event = "";
      this.#data = [];
      this.#dataChars = 0;
      return message;
    }
    if (line.startsWith(":")) return null;
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") {
      this.#data.push(value);
      this.#dataChars += value.length + 1;
    } else if (field === "event") {
      this.#event = value;
    } else if (field === "id" && !value.includes("\0")) {
      this.#id = value;
    }
    // `retry` is the server's advice for EventSource; the subscription's backoff decides.
    return null;
  }
}

/**
 * Opens `GET /api/stream` with the filter as query parameters and `since` when known.
 *
 * @param {string | URL} base the server's base URL
 * @param {import("./follow.js").TransportOptions} options
 * @param {import("./follow.js").TransportHandlers} on
 * @returns {{close(): void}}
 */
export function openSse(base, { token, filter, since, fetch: fetchImpl }, on) {
  const url = endpoint(base, "/api/stream");
  if (filter.types?.length) url.searchParams.set("types", filter.types.join(","));
  for (const [key, value] of Object.entries({ task_id: filter.task_id, agent_id: filter.agent_id, source: filter.source })) {
    if (value !== undefined) url.searchParams.set(key, value);
  }
  if (since !== null) url.searchParams.set("since", String(since));
  const controller = new AbortController();
  let done = false;
  // Exactly one of fatal/dropped reaches the subscription, and nothing after close().
  const end = (report) => {
    if (done) return;
    done = true;
    controller.abort();
    report();
  };

  (async () => {
    let response;
    try {
      response = await fetchImpl(url, {
        headers: { Accept: "text/event-stream", ...authorization(token) },
        cache: "no-store",
        signal: controller.signal,
      });
    } catch (error) {
      return end(() => on.dropped(`cannot reach the server (${error.message})`));
    }
    if (!response.ok) {
      const retryable = response.status === 429 || response.status >= 500;
      const error = await errorFromResponse(response);
      if (retryable) {
        return end(() => on.dropped(error.message, { retryAfterMs: retryAfterMs(response.headers) }));
      }
      return end(() => on.fatal(error));
    }
    const parser = new SseParser();
    const decoder = new TextDecoder();
    // A reader loop, not `for await`: Chrome and Safari cannot iterate a stream.
    const reader = response.body.getReader();
    try {
      for (;;) {
        const { done: ended, value: bytes } = await reader.read();
        if (done) return;
        if (ended) break;
        on.alive();
        const events = [];
        for (const message of parser.push(decoder.decode(bytes, { stream: true }))) {
          if (message.event === "message") {
            events.push(JSON.parse(message.data));
            continue;
          }
          // Events read before a control message are delivered before it, in order.
          if (events.length) on.events(events.splice(0), false);
          if (message.event === "subscribed") {
            on.subscribed(JSON.parse(message.data));
          } else if (message.event === "reset") {
            on.reset(JSON.parse(message.data).oldest);
          } else if (message.event === "revoked") {
            const { reason } = JSON.parse(message.data);
            return end(() => on.fatal(new SwarmfeedError("token_revoked", reason || "token revoked")));
          }
          // Event kinds newer than this client: nothing to do.
          if (done) return;
        }
        if (events.length) on.events(events, false);
      }
      end(() => on.dropped("the server ended the stream"));
    } catch (error) {
      end(() => on.dropped(`the stream broke (${error.message})`));
    }
  })();

  return { close: () => end(() => {}) };
}
