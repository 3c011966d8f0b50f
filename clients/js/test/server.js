// A real swarmfeed server for the tests: the binary, a temporary data directory, a port.
//
// The binary is $SWARMFEED_BIN, else $CARGO_TARGET_DIR/debug/swarmfeed, else the
// repository's target/debug/swarmfeed (scripts/test builds it first).

import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

/** How long any single wait in a test may take before it counts as a failure, in ms. */
export const WAIT = 20_000;

/** The options of every test: a whole test that runs longer than this fails. */
export const LIMIT = { timeout: 90_000 };

const REPO = resolve(fileURLToPath(import.meta.url), "../../../..");

export function binary() {
  if (process.env.SWARMFEED_BIN) return process.env.SWARMFEED_BIN;
  return join(process.env.CARGO_TARGET_DIR || join(REPO, "target"), "debug", "swarmfeed");
}

/** A temporary data directory, removed by the test's cleanup. */
export async function dataDir(t) {
  const dir = await mkdtemp(join(tmpdir(), "swarmfeed-js-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return join(dir, "data");
}

/**
 * `swarmfeed serve` on loopback with the per-IP limits off (every test client comes
 * from 127.0.0.1), stopped by the test's cleanup. `port` 0 picks a free one; a restart
 * passes the first server's port so clients find it again.
 */
export async function startServer(t, dir, { port = 0, args = [] } = {}) {
  const child = spawn(
    binary(),
    [
      "--log-format", "json",
      "serve",
      "--bind", `127.0.0.1:${port}`,
      "--data-dir", dir,
      "--max-conns-per-ip", "0",
      "--requests-per-ip-per-sec", "0",
      "--handshakes-per-ip-per-sec", "0",
      "--ingest-rate-per-token", "0",
      ...args,
    ],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  const exited = once(child, "exit");
  const server = {
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      try {
        await withTimeout(exited, "the server to exit");
      } catch (error) {
        child.kill("SIGKILL");
        throw error;
      }
    },
  };
  t.after(() => server.stop());
  // Reads the log to its end, so the server never blocks on a full pipe.
  const lines = createInterface({ input: child.stderr });
  const addr = await withTimeout(
    new Promise((resolveAddr, reject) => {
      lines.on("line", (line) => {
        try {
          const { fields } = JSON.parse(line);
          if (fields?.message === "swarmfeed ready") resolveAddr(fields.addr);
        } catch {
          // Not a JSON log line (a panic message, say): the exit below reports it.
        }
      });
      child.on("error", reject);
      exited.then(([code]) => reject(new Error(`swarmfeed exited with ${code} before it was ready (is ${binary()} built?)`)));
    }),
    "swarmfeed to say it is ready",
  );
  server.url = `http://${addr}`;
  server.port = Number(addr.slice(addr.lastIndexOf(":") + 1));
  server.token = (await readFile(join(dir, "admin.token"), "utf8")).trim();
  return server;
}

/** Calls the server's JSON API with the admin token (or `token`); returns the parsed answer. */
export async function api(server, path, { method = "GET", body, token = server.token } = {}) {
  const response = await fetch(server.url + path, {
    method,
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(WAIT),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

/** `count` tool events numbered from `first` in `data.n`. */
export function tools(first, count) {
  return Array.from({ length: count }, (_, i) => ({ event_type: "tool.called", source: "agent", data: { n: first + i } }));
}

/** `promise`, or a failure naming what did not happen within {@link WAIT}. */
export function withTimeout(promise, what, ms = WAIT) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Collects a subscription's events: `until(n)` resolves once `n` have arrived (or
 * fails after {@link WAIT}).
 */
export function collector() {
  const events = [];
  const waiters = [];
  return {
    events,
    onEvent(event) {
      events.push(event);
      for (const w of waiters.filter((w) => events.length >= w.n)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(events);
      }
    },
    until(n) {
      if (events.length >= n) return Promise.resolve(events);
      return withTimeout(new Promise((resolve) => waiters.push({ n, resolve })), `${n} events (got ${events.length})`);
    },
  };
}
