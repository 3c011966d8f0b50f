// Posting events with the JavaScript client, against the real swarmfeed binary.

import assert from "node:assert/strict";
import { test } from "node:test";

import { SwarmfeedError, post } from "../src/index.js";
import { LIMIT, api, dataDir, startServer } from "./server.js";

test("posted events get ids, so sending the same ones again stores nothing new", LIMIT, async (t) => {
  const server = await startServer(t, await dataDir(t));
  const events = [
    { event_type: "task.created", source: "coordinator", task_id: "t1", data: { description: "sort the logs" } },
    { event_type: "task.created", source: "coordinator", task_id: "t2", id: "mine-1" },
  ];
  const first = await post(server.url, events, { token: server.token });
  assert.deepEqual(first.map((s) => s.seq), [1, 2]);
  assert.match(first[0].id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.equal(first[1].id, "mine-1");
  assert.equal(events[0].id, undefined, "the caller's objects are not changed");

  const again = await post(server.url, { ...events[0], id: first[0].id }, { token: server.token });
  assert.deepEqual(again, [{ id: first[0].id, seq: 1, duplicate: true }]);
  const stored = await api(server, "/api/events?limit=10");
  assert.deepEqual(stored.events.map((e) => e.seq), [1, 2]);
  assert.deepEqual(stored.events[0].data, { description: "sort the logs" });
});

test("a refused batch throws the server's error naming the event and field, and stores nothing", LIMIT, async (t) => {
  const server = await startServer(t, await dataDir(t));
  const refused = await post(
    server.url,
    [{ event_type: "task.created", source: "c" }, { event_type: "Not A Type", source: "c" }],
    { token: server.token },
  ).then(() => null, (e) => e);
  assert.ok(refused instanceof SwarmfeedError);
  assert.equal(refused.code, "invalid_event");
  assert.equal(refused.status, 400);
  assert.equal(refused.field, "event_type");
  assert.equal(refused.index, 1);
  assert.deepEqual((await api(server, "/api/events")).events, []);

  const unknown = await post(server.url, { event_type: "task.created", source: "c" }, { token: "sf_nope" }).then(() => null, (e) => e);
  assert.equal(unknown.code, "unauthorized");
  await assert.rejects(post(server.url, "task.created"), { name: "TypeError", message: /event object/ });
});

test("a server that cannot be reached is retried with backoff, then reported as unavailable", LIMIT, async () => {
  // A port that nothing listens on: every attempt fails to connect.
  const started = Date.now();
  const error = await post("http://127.0.0.1:9", { event_type: "task.created", source: "c" }, {
    retries: 2,
    firstDelayMs: 20,
    maxDelayMs: 40,
  }).then(() => null, (e) => e);
  assert.equal(error.code, "unavailable");
  assert.match(error.message, /gave up after 3 attempts: cannot reach the server/);
  assert.ok(Date.now() - started >= 20, "it waited between attempts");
});
