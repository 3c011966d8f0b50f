/**
 * Reconnect and retry delays: exponential, with jitter, bounded.
 *
 * Each delay is drawn from the upper half of the current step (`step/2 … step`), then
 * the step doubles up to `maxMs`. The jitter spreads a crowd of clients that lost the
 * same server, so they do not all come back in the same millisecond; keeping half of
 * the step fixed means a client never retries at once after a failure.
 */

/** The first step, in milliseconds. */
export const FIRST_DELAY_MS = 500;
/** The step doubles up to this, in milliseconds. */
export const MAX_DELAY_MS = 10_000;
/** The longest `Retry-After` honoured, in milliseconds: a wrong header cannot park a client for a day. */
export const MAX_RETRY_AFTER_MS = 60_000;

export class Backoff {
  #first;
  #max;
  #step;

  /** @param {{firstMs?: number, maxMs?: number}} [bounds] */
  constructor({ firstMs = FIRST_DELAY_MS, maxMs = MAX_DELAY_MS } = {}) {
    if (!(firstMs > 0) || !(maxMs >= firstMs)) {
      throw new RangeError(`backoff needs 0 < firstDelayMs <= maxDelayMs, not ${firstMs} and ${maxMs}`);
    }
    this.#first = firstMs;
    this.#max = maxMs;
    this.#step = firstMs;
  }

  /** The next delay in milliseconds; each call doubles the step (up to the bound). */
  next() {
    const step = this.#step;
    this.#step = Math.min(step * 2, this.#max);
    return step / 2 + Math.random() * (step / 2);
  }

  /** Back to the first step, after a success. */
  reset() {
    this.#step = this.#first;
  }
}

/**
 * A `Retry-After` header's seconds as milliseconds (capped), or 0 when absent or in
 * the date form, which swarmfeed never sends.
 *
 * @param {Headers} headers
 */
export function retryAfterMs(headers) {
  const seconds = Number(headers.get("retry-after"));
  return Number.isFinite(seconds) && seconds > 0 ? Math.min(seconds * 1000, MAX_RETRY_AFTER_MS) : 0;
}
