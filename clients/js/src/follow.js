/**
 * Following the log live: a subscription that delivers each matching event once, in
 * seq order, across reconnects and server restarts (docs/PROTOCOL.md).
 *
 * The subscription owns the position (`lastSeq`, the last event delivered), the
 * backoff and the choice of transport; a transport (`websocket.js`, `sse.js`) owns one
 * connection and reports what it read. Each reconnect subscribes again after
 * `lastSeq`, so nothing is missed and nothing repeated. No events are kept beyond the
 * frame being delivered: a slow caller slows the reading, it never grows a queue.
 */

import { Backoff } from "./backoff.js";
import { endpoint } from "./base-url.js";
import { SwarmfeedError } from "./errors.js";
import { openSse } from "./sse.js";
import { openWebSocket, webSocketCarriesHeaders } from "./websocket.js";

/**
 * Silence after which a connection counts as dead and is opened again, in
 * milliseconds: both transports hear from the server at least every 20 s (a `pong`
 * to the client's ping over WebSocket, a keepalive comment over SSE).
 */
export const IDLE_TIMEOUT_MS = 60_000;

/**
 * @typedef {object} TransportOptions
 * @property {string | undefined} token
 * @property {{types?: string[], task_id?: string, agent_id?: string, source?: string}} filter
 * @property {number | null} since
 * @property {typeof fetch} fetch
 *
 * @typedef {object} TransportHandlers
 * @property {() => void} alive something arrived
 * @property {(answer: {head: number, oldest: number}) => void} subscribed
 * @property {(events: object[], batched: boolean) => void} events
 * @property {(oldest: number) => void} reset
 * @property {(error: SwarmfeedError) => void} fatal the server refused: stop
 * @property {(reason: string, hints?: {retryAfterMs?: number, fallback?: boolean}) => void} dropped reconnect
 */

/**
 * Starts following the log; see {@link Subscription}.
 *
 * @param {string | URL} url
 * @param {import("./index.js").FollowOptions} [options]
 */
export function follow(url, options) {
  return new Subscription(url, options);
}

export class Subscription {
  /** The seq of the last event delivered (or `since`, or the head when subscribed live): where a reconnect resumes. */
  lastSeq;
  /** `head` and `oldest` of the latest `subscribed` answer. */
  head = null;
  oldest = null;
  /** The transport of the current (or last) connection: `"websocket"` or `"sse"`. */
  transport = null;
  /** Frames (or stream reads) that carried events, and how many were `batch` frames. */
  frames = 0;
  batches = 0;
  /** Connections opened after the first. */
  reconnects = 0;
  /** Resolves once the server confirmed the first subscription; rejects if it stops before. */
  ready;
  /** Resolves when `close()` is called; rejects with the {@link SwarmfeedError} that stopped it. */
  done;

  #base;
  #options;
  #filter;
  #fetch;
  #backoff;
  #idleMs;
  #connection = null;
  #generation = 0;
  #fellBack = false;
  #stopped = false;
  #retry = null;
  #idle = null;
  #confirm;
  #settle;

  /**
   * @param {string | URL} url the server's base URL (`http://…` or `https://…`)
   * @param {import("./index.js").FollowOptions} [options]
   * @throws {TypeError} for a URL that is not http(s), a transport this platform lacks, or a bad option
   */
  constructor(url, options = {}) {
    const { types, taskId, agentId, source, since = null, transport = "auto" } = options;
    endpoint(url, "/"); // throws now for a URL that is not http(s), not on every reconnect
    this.#base = String(url);
    if (!["auto", "websocket", "sse"].includes(transport)) {
      throw new TypeError(`transport must be "auto", "websocket" or "sse", not ${JSON.stringify(transport)}`);
    }
    if (transport === "websocket" && typeof globalThis.WebSocket !== "function") {
      throw new TypeError('transport "websocket" needs a WebSocket (Node 20: run with --experimental-websocket)');
    }
    if (since !== null && !(Number.isSafeInteger(since) && since >= 0)) {
      throw new TypeError(`since must be a seq (an integer >= 0), not ${JSON.stringify(since)}`);
    }
    if (types !== undefined && !(Array.isArray(types) && types.every((t) => typeof t === "string"))) {
      throw new TypeError("types must be an array of strings");
    }
    this.#filter = {};
    if (types?.length) this.#filter.types = [...types];
    for (const [key, name, value] of [["task_id", "taskId", taskId], ["agent_id", "agentId", agentId], ["source", "source", source]]) {
      if (value === undefined || value === null) continue;
      if (typeof value !== "string") throw new TypeError(`${name} must be a string, not ${JSON.stringify(value)}`);
      this.#filter[key] = value;
    }
    this.#options = { ...options, transport };
    this.#fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.#backoff = new Backoff({ firstMs: options.firstDelayMs, maxMs: options.maxDelayMs });
    this.#idleMs = options.idleTimeoutMs ?? IDLE_TIMEOUT_MS;
    if (!(this.#idleMs > 0)) throw new TypeError(`idleTimeoutMs must be above 0, not ${options.idleTimeoutMs}`);
    this.lastSeq = since;
    // Both settle once; a caller that awaits neither is not warned about a rejection it
    // also hears through onError.
    let confirm, refuse;
    this.ready = new Promise((resolve, reject) => ((confirm = resolve), (refuse = reject)));
    this.done = new Promise((resolve, reject) => {
      this.#settle = (error) => {
        refuse(error ?? new SwarmfeedError("closed", "the subscription was closed before the server confirmed it"));
        if (error) reject(error);
        else resolve();
      };
    });
    this.ready.catch(() => {});
    this.done.catch(() => {});
    this.#confirm = confirm;
    this.#connect();
  }

  /** Ends the subscription: no event is delivered after it returns. */
  close() {
    this.#stop(null);
  }

  #chooseTransport() {
    const wanted = this.#options.transport;
    if (wanted !== "auto") return wanted;
    if (this.#fellBack || typeof globalThis.WebSocket !== "function") return "sse";
    // A browser's WebSocket cannot carry a token; a fetch-read SSE stream can.
    if (this.#options.token && !webSocketCarriesHeaders()) return "sse";
    return "websocket";
  }

  #connect() {
    this.#retry = null;
    if (this.#stopped) return;
    const generation = ++this.#generation;
    const current = (handler) => (...args) => {
      if (generation === this.#generation && !this.#stopped) handler(...args);
    };
    /** @type {TransportHandlers} */
    const handlers = {
      alive: current(() => this.#armIdle()),
      subscribed: current((answer) => this.#subscribed(answer)),
      events: current((events, batched) => this.#deliver(events, batched)),
      reset: current((oldest) => this.#reset(oldest)),
      fatal: current((error) => this.#stop(error)),
      dropped: current((reason, hints) => this.#dropped(reason, hints)),
    };
    this.transport = this.#chooseTransport();
    const open = this.transport === "websocket" ? openWebSocket : openSse;
    const options = { token: this.#options.token, filter: this.#filter, since: this.lastSeq, fetch: this.#fetch };
    try {
      this.#connection = open(this.#base, options, handlers);
    } catch (error) {
      // The platform refused to open it at all (a page on https asking for ws://, say):
      // the same would happen on every attempt.
      return this.#stop(new SwarmfeedError("unsupported", error.message));
    }
    this.#armIdle();
  }

  #armIdle() {
    clearTimeout(this.#idle);
    this.#idle = setTimeout(() => {
      this.#connection?.close();
      this.#dropped(`nothing heard from the server for ${this.#idleMs / 1000} s`);
    }, this.#idleMs);
  }

  #subscribed({ head, oldest }) {
    this.head = head;
    this.oldest = oldest;
    // Live from here: a reconnect resumes after this head, not at a later one.
    if (this.lastSeq === null) this.lastSeq = head;
    this.#backoff.reset();
    this.#confirm();
  }

  #deliver(events, batched) {
    if (!Array.isArray(events)) return;
    this.frames += 1;
    if (batched) this.batches += 1;
    for (const event of events) {
      if (this.#stopped) return;
      // A resumed subscription starts after lastSeq; the check keeps "never twice"
      // true even if a frame were sent twice.
      if (!Number.isSafeInteger(event?.seq) || (this.lastSeq !== null && event.seq <= this.lastSeq)) continue;
      this.lastSeq = event.seq;
      this.#call(this.#options.onEvent, event);
    }
  }

  #reset(oldest) {
    const lastSeq = this.lastSeq;
    // The server continues from `oldest`; a reconnect before its first event resumes there too.
    this.lastSeq = oldest - 1;
    this.#call(this.#options.onReset, { oldest, lastSeq });
  }

  #dropped(reason, { retryAfterMs = 0, fallback = false } = {}) {
    if (this.#stopped) return;
    this.#generation += 1;
    this.#connection?.close();
    this.#connection = null;
    clearTimeout(this.#idle);
    if (fallback && this.#options.transport === "auto") this.#fellBack = true;
    const delayMs = Math.max(this.#backoff.next(), retryAfterMs);
    this.#call(this.#options.onDrop, { reason, delayMs, lastSeq: this.lastSeq });
    this.reconnects += 1;
    this.#retry = setTimeout(() => this.#connect(), delayMs);
  }

  #stop(error) {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#generation += 1;
    clearTimeout(this.#retry);
    clearTimeout(this.#idle);
    this.#connection?.close();
    this.#connection = null;
    if (error) this.#call(this.#options.onError, error);
    this.#settle(error);
  }

  /** Calls the caller's callback; its exception is rethrown on its own, leaving the subscription's state intact. */
  #call(callback, value) {
    if (!callback) return;
    try {
      callback(value);
    } catch (error) {
      queueMicrotask(() => {
        throw error;
      });
    }
  }
}
