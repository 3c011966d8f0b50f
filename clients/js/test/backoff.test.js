// Reconnect delays on their own: doubling, jittered, bounded.

import assert from "node:assert/strict";
import { test } from "node:test";

import { Backoff, retryAfterMs } from "../src/backoff.js";
import { LIMIT } from "./server.js";

test("delays double from the first step up to the bound, each jittered within the upper half of its step", LIMIT, () => {
  for (let run = 0; run < 200; run += 1) {
    const backoff = new Backoff({ firstMs: 100, maxMs: 1_000 });
    const steps = [100, 200, 400, 800, 1_000, 1_000];
    for (const step of steps) {
      const delay = backoff.next();
      assert.ok(delay >= step / 2 && delay <= step, `${delay} within [${step / 2}, ${step}]`);
    }
    backoff.reset();
    assert.ok(backoff.next() <= 100, "after a success it starts again from the first step");
  }
  assert.throws(() => new Backoff({ firstMs: 0 }), RangeError);
  assert.throws(() => new Backoff({ firstMs: 500, maxMs: 100 }), RangeError);
});

test("Retry-After is read in seconds and capped; absent or malformed means no wait of its own", LIMIT, () => {
  assert.equal(retryAfterMs(new Headers({ "Retry-After": "2" })), 2_000);
  assert.equal(retryAfterMs(new Headers({ "Retry-After": "86400" })), 60_000);
  assert.equal(retryAfterMs(new Headers({ "Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT" })), 0);
  assert.equal(retryAfterMs(new Headers()), 0);
});
