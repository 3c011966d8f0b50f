/**
 * Producing: `POST /api/events`, safe to retry.
 *
 * Every event without an `id` gets one before the first attempt, so a retry after a
 * lost answer stores nothing twice: the server answers a re-sent id with its original
 * seq (`"duplicate": true`). Busy answers (429, 503, other 5xx) and network failures
 * are retried with backoff, honouring `Retry-After`; a refusal (400, 401, 403, 413) is
 * thrown at once with the server's words.
 */

import { Backoff, retryAfterMs } from "./backoff.js";
import { authorization, endpoint } from "./base-url.js";
import { SwarmfeedError, errorFromResponse } from "./errors.js";

/** Attempts after the first, by default. */
export const DEFAULT_RETRIES = 5;

/**
 * Stores one event or an array of them (up to the server's 1 000 per request), all or
 * nothing, and resolves once they are durable.
 *
 * @param {string | URL} url the server's base URL
 * @param {object | object[]} events
 * @param {import("./index.js").PostOptions} [options]
 * @returns {Promise<{id: string, seq: number, duplicate?: boolean}[]>} in the order sent
 * @throws {SwarmfeedError} the server's refusal, or `unavailable` once the retries are spent
 */
export async function post(url, events, options = {}) {
  const { token, retries = DEFAULT_RETRIES, signal } = options;
  const fetchImpl = options.fetch ?? globalThis.fetch.bind(globalThis);
  const target = endpoint(url, "/api/events");
  const list = Array.isArray(events) ? events : [events];
  if (!list.every((e) => e !== null && typeof e === "object" && !Array.isArray(e))) {
    throw new TypeError("events must be an event object or an array of them");
  }
  const body = JSON.stringify(list.map((e) => (e.id === undefined || e.id === null ? { ...e, id: newId() } : e)));
  const backoff = new Backoff({ firstMs: options.firstDelayMs, maxMs: options.maxDelayMs });
  for (let attempt = 0; ; attempt += 1) {
    let why;
    let waitMs = 0;
    try {
      const response = await fetchImpl(target, {
        method: "POST",
        headers: { "Content-Type": "application/json", ...authorization(token) },
        body,
        signal,
      });
      if (response.ok) return (await response.json()).events;
      const error = await errorFromResponse(response);
      if (response.status !== 429 && response.status < 500) throw error;
      why = error.message;
      waitMs = retryAfterMs(response.headers);
    } catch (error) {
      if (error instanceof SwarmfeedError || signal?.aborted) throw error;
      why = `cannot reach the server (${error.message})`;
    }
    if (attempt >= retries) {
      throw new SwarmfeedError("unavailable", `gave up after ${attempt + 1} attempts: ${why}`);
    }
    await sleep(Math.max(backoff.next(), waitMs), signal);
  }
}

/** A random (version 4) UUID; `crypto.randomUUID` exists only on secure (https) pages. */
function newId() {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    signal?.throwIfAborted();
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener(
      "abort",
      () => {
        clearTimeout(timer);
        reject(signal.reason);
      },
      { once: true },
    );
  });
}
