// The event-stream parser on its own: line endings, comments, pieces split anywhere.

import assert from "node:assert/strict";
import { test } from "node:test";

import { MAX_MESSAGE_CHARS, SseParser } from "../src/sse.js";
import { LIMIT } from "./server.js";

const STREAM =
  'retry: 2000\r\nevent: subscribed\r\ndata: {"head":5,"oldest":1}\r\n\r\n' +
  ': keepalive\n\n' +
  'id: 6\ndata: {"seq":6}\n\n' +
  'id: 7\rdata:{"seq":\rdata: 7}\r\r' +
  "id: 3999\nevent: reset\ndata: {\"oldest\":4000}\n\n";

const EXPECTED = [
  { event: "subscribed", data: '{"head":5,"oldest":1}', id: null },
  { event: "message", data: '{"seq":6}', id: "6" },
  { event: "message", data: '{"seq":\n7}', id: "7" },
  { event: "reset", data: '{"oldest":4000}', id: "3999" },
];

test("the parser reads CRLF, CR and LF lines, skips comments and joins data lines", LIMIT, () => {
  assert.deepEqual(new SseParser().push(STREAM), EXPECTED);
});

test("the parser gives the same messages however the stream is cut", LIMIT, () => {
  for (let size = 1; size <= 7; size += 1) {
    const parser = new SseParser();
    const got = [];
    for (let i = 0; i < STREAM.length; i += size) got.push(...parser.push(STREAM.slice(i, i + size)));
    assert.deepEqual(got, EXPECTED, `pieces of ${size}`);
  }
});

test("a message longer than the bound ends the stream instead of growing without limit", LIMIT, () => {
  const parser = new SseParser();
  assert.throws(() => parser.push("data: " + "x".repeat(MAX_MESSAGE_CHARS)), { name: "SwarmfeedError", message: /over/ });
});
