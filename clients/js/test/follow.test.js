// Following the log with the JavaScript client, against the real swarmfeed binary.

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { once } from "node:events";
import { createServer } from "node:http";
import { Readable } from "node:stream";
import { test } from "node:test";

import { SwarmfeedError, follow, post } from "../src/index.js";
import { LIMIT, WAIT, api, collector, dataDir, startServer, tools, withTimeout } from "./server.js";

const TRANSPORTS = ["websocket", "sse"];

/** A subscription closed by the test's cleanup, reconnecting quickly. */
function subscribe(t, server, options) {
  const sub = follow(server.url, { token: server.token, firstDelayMs: 50, maxDelayMs: 500, ...options });
  t.after(() => sub.close());
  return sub;
}

const seqs = (events) => events.map((e) => e.seq);
const range = (first, last) => Array.from({ length: last - first + 1 }, (_, i) => first + i);

test("a subscription asks for batches and delivers every event once in seq order", LIMIT, async (t) => {
  const server = await startServer(t, await dataDir(t));
  await post(server.url, tools(0, 300), { token: server.token });
  const got = collector();
  const sub = subscribe(t, server, { since: 0, transport: "websocket", onEvent: got.onEvent });
  await withTimeout(sub.ready, "the subscription");
  await got.until(300);
  for (let chunk = 0; chunk < 4; chunk += 1) {
    await post(server.url, tools(300 + 50 * chunk, 50), { token: server.token });
  }
  await got.until(500);
  assert.deepEqual(seqs(got.events), range(1, 500), "each once, in seq order");
  assert.deepEqual(got.events.map((e) => e.data.n), range(0, 499));
  assert.ok(sub.batches >= 1, "coalesced events came as batch frames");
  assert.ok(sub.frames < 100, `500 events in far fewer frames (${sub.frames}): the subscription asked for batches`);
  assert.equal(sub.lastSeq, 500);
  assert.equal(sub.reconnects, 0);
});

for (const transport of TRANSPORTS) {
  test(`filters select by type prefix, task, agent and source (${transport})`, LIMIT, async (t) => {
    const server = await startServer(t, await dataDir(t));
    const byTask = collector();
    const byAgent = collector();
    const live = collector();
    const subs = [
      subscribe(t, server, { transport, since: 0, types: ["task.*", "bid.submitted"], taskId: "t1", onEvent: byTask.onEvent }),
      subscribe(t, server, { transport, since: 0, agentId: "forge", source: "coordinator", onEvent: byAgent.onEvent }),
      subscribe(t, server, { transport, onEvent: live.onEvent }),
    ];
    await withTimeout(Promise.all(subs.map((s) => s.ready)), "three subscriptions");
    const stored = await post(
      server.url,
      [
        { event_type: "task.created", source: "coordinator", task_id: "t1" },
        { event_type: "task.created", source: "coordinator", task_id: "t2" },
        { event_type: "bid.submitted", source: "forge", task_id: "t1", agent_id: "forge" },
        { event_type: "bid.withdrawn", source: "forge", task_id: "t1", agent_id: "forge" },
        { event_type: "task.assigned", source: "coordinator", task_id: "t1", agent_id: "forge" },
        { event_type: "tasks.x", source: "coordinator", task_id: "t1" },
      ],
      { token: server.token },
    );
    const seq = stored.map((s) => s.seq);
    assert.deepEqual(seqs(await byTask.until(3)), [seq[0], seq[2], seq[4]]);
    assert.deepEqual(seqs(await byAgent.until(1)), [seq[4]]);
    assert.deepEqual(seqs(await live.until(6)), seq, "an empty filter matches everything");
    // A marker after them all: once it arrives, nothing else matched.
    await post(server.url, { event_type: "task.done", source: "coordinator", task_id: "t1", agent_id: "forge" }, { token: server.token });
    await byTask.until(4);
    await byAgent.until(2);
    assert.equal(byTask.events.length, 4);
    assert.equal(byAgent.events.length, 2);
  });

  test(`a subscription resumes after a server restart with nothing lost or repeated (${transport})`, LIMIT, async (t) => {
    const dir = await dataDir(t);
    let server = await startServer(t, dir);
    const got = collector();
    const drops = [];
    const sub = subscribe(t, server, { transport, types: ["task.*"], onEvent: got.onEvent, onDrop: (d) => drops.push(d) });
    await withTimeout(sub.ready, "the subscription");
    const before = await post(server.url, [
      { event_type: "task.created", source: "c", task_id: "t1" },
      { event_type: "tool.called", source: "c" },
      { event_type: "task.started", source: "c", task_id: "t1" },
    ], { token: server.token });
    await got.until(2);
    await server.stop();

    server = await startServer(t, dir, { port: server.port });
    const after = await post(server.url, [
      { event_type: "tool.called", source: "c" },
      { event_type: "task.progress", source: "c", task_id: "t1" },
      { event_type: "task.completed", source: "c", task_id: "t1" },
    ], { token: server.token });
    await got.until(4);
    assert.deepEqual(seqs(got.events), [before[0].seq, before[2].seq, after[1].seq, after[2].seq]);
    assert.equal(drops[0].lastSeq, before[2].seq, "it resumed after the last event it delivered");
    assert.ok(sub.reconnects >= 1);
    // Nothing more arrives: a marker is the next event, not a repeat.
    const marker = await post(server.url, { event_type: "task.marker", source: "c" }, { token: server.token });
    await got.until(5);
    assert.deepEqual(seqs(got.events).slice(4), [marker[0].seq]);
  });

  test(`a subscription behind retention is told of the reset and continues from the oldest event (${transport})`, LIMIT, async (t) => {
    const dir = await dataDir(t);
    let server = await startServer(t, dir);
    await post(server.url, tools(0, 100), { token: server.token });
    await server.stop();
    // Retention prunes when the server starts, then every 30 s.
    server = await startServer(t, dir, { args: ["--retain-events", "30"] });
    await withTimeout(
      (async () => {
        while ((await api(server, "/api/events?limit=1")).events[0].seq !== 71) {
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
      })(),
      "retention to prune to the newest 30",
    );
    const resets = [];
    const got = collector();
    const sub = subscribe(t, server, { transport, since: 10, onEvent: got.onEvent, onReset: (r) => resets.push(r) });
    await got.until(30);
    assert.deepEqual(resets, [{ oldest: 71, lastSeq: 10 }]);
    assert.deepEqual(seqs(got.events), range(71, 100));
    assert.equal(sub.oldest, 71);
  });

  test(`a revoked token stops the subscription with an error instead of reconnecting (${transport})`, LIMIT, async (t) => {
    const server = await startServer(t, await dataDir(t));
    const { id, token } = await api(server, "/api/tokens", { method: "POST", body: { scope: "read", name: "js" } });
    const errors = [];
    const sub = subscribe(t, server, { transport, token, onError: (e) => errors.push(e) });
    await withTimeout(sub.ready, "the subscription");
    await api(server, `/api/tokens/${id}`, { method: "DELETE" });
    const stopped = await withTimeout(sub.done.then(() => null, (e) => e), "the subscription to stop");
    assert.ok(stopped instanceof SwarmfeedError);
    assert.equal(stopped.code, "token_revoked");
    assert.deepEqual(errors, [stopped], "onError heard it once");
    assert.equal(sub.reconnects, 0, "no reconnect with a revoked token");
  });

  test(`an unknown token and a bad filter are refused with the server's words (${transport})`, LIMIT, async (t) => {
    const server = await startServer(t, await dataDir(t));
    const refusal = (options) => withTimeout(subscribe(t, server, { transport, ...options }).ready.then(() => null, (e) => e), "a refusal");

    const unknown = await refusal({ token: "sf_not_a_token" });
    assert.equal(unknown.code, "unauthorized");
    assert.equal(unknown.status, 401);

    const bad = await refusal({ types: ["Not A Type"] });
    // The same refusal in each transport's vocabulary: an `error` frame over WebSocket,
    // the HTTP API's error body over SSE.
    assert.equal(bad.code, transport === "websocket" ? "bad_request" : "invalid_filter");
    assert.match(bad.message, /types/);
  });
}

test("where WebSocket is unavailable (Node 20 without the flag) the subscription follows over SSE", LIMIT, async (t) => {
  const server = await startServer(t, await dataDir(t));
  await post(server.url, tools(0, 3), { token: server.token });
  const client = new URL("../src/index.js", import.meta.url).href;
  const script = `
    import { follow } from ${JSON.stringify(client)};
    const events = [];
    const sub = follow(process.argv[1], { token: process.argv[2], since: 0, onEvent(e) {
      events.push(e.seq);
      if (events.length === 3) { sub.close(); console.log(JSON.stringify({ hasWebSocket: typeof WebSocket, transport: sub.transport, events })); }
    } });
    sub.ready.catch((e) => { console.error(e.message); process.exit(1); });
  `;
  // The child gets no --experimental-websocket, whatever this process was started with.
  const output = await withTimeout(
    new Promise((resolve, reject) =>
      execFile(process.execPath, ["--input-type=module", "-e", script, server.url, server.token], { timeout: WAIT }, (error, stdout, stderr) =>
        error ? reject(new Error(`${error.message}\n${stderr}`)) : resolve(stdout),
      ),
    ),
    "the child process",
  );
  const result = JSON.parse(output);
  if (result.hasWebSocket === "function") t.skip("this Node has a WebSocket without the flag (22 or newer)");
  assert.deepEqual(result, { hasWebSocket: "undefined", transport: "sse", events: [1, 2, 3] });
});

test("behind a proxy that does not pass WebSocket upgrades the subscription falls back to SSE", LIMIT, async (t) => {
  const server = await startServer(t, await dataDir(t));
  // Refuses every upgrade as such a proxy does, and passes plain requests on.
  const proxy = createServer(async (request, response) => {
    if (request.url.startsWith("/ws")) return response.writeHead(400).end("upgrades are not passed");
    try {
      const upstream = await fetch(server.url + request.url, { headers: { authorization: request.headers.authorization } });
      response.writeHead(upstream.status, { "content-type": upstream.headers.get("content-type") });
      Readable.fromWeb(upstream.body).on("error", () => response.destroy()).pipe(response);
    } catch {
      response.writeHead(502).end();
    }
  });
  proxy.on("upgrade", (_request, socket) => socket.end("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"));
  proxy.listen(0, "127.0.0.1");
  await once(proxy, "listening");
  t.after(() => {
    proxy.close();
    proxy.closeAllConnections();
  });

  const got = collector();
  const drops = [];
  const sub = follow(`http://127.0.0.1:${proxy.address().port}`, {
    token: server.token, since: 0, firstDelayMs: 20, maxDelayMs: 50, onEvent: got.onEvent, onDrop: (d) => drops.push(d),
  });
  t.after(() => sub.close());
  await post(server.url, tools(0, 3), { token: server.token });
  await withTimeout(sub.ready, "the subscription over SSE");
  assert.deepEqual(seqs(await got.until(3)), [1, 2, 3]);
  assert.equal(sub.transport, "sse");
  assert.equal(drops.length, 1, "one failed upgrade, then SSE");
  assert.match(drops[0].reason, /WebSocket upgrade failed though the server answers \(HTTP 400\)/);
  sub.close();
});

test("a URL that is not http(s) and a bad option are refused before anything is sent", LIMIT, () => {
  assert.throws(() => follow("ftp://example.org"), { name: "TypeError", message: /url must be http/ });
  assert.throws(() => follow("http://127.0.0.1:1", { since: -1 }), { name: "TypeError", message: /since/ });
  assert.throws(() => follow("http://127.0.0.1:1", { transport: "pigeon" }), { name: "TypeError", message: /transport/ });
  assert.throws(() => follow("http://127.0.0.1:1", { types: "task.*" }), { name: "TypeError", message: /types/ });
  assert.throws(() => follow("http://127.0.0.1:1", { taskId: 7 }), { name: "TypeError", message: /taskId must be a string/ });
  assert.throws(() => follow("http://127.0.0.1:1", { idleTimeoutMs: 0 }), { name: "TypeError", message: /idleTimeoutMs/ });
  assert.throws(() => follow("http://127.0.0.1:1", { firstDelayMs: 0 }), { name: "RangeError", message: /firstDelayMs/ });
});

