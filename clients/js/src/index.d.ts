// Types of swarmfeed's JavaScript client (written by hand beside the ESM source; no build step).

/** One event of the log (docs/PROTOCOL.md, "The event"). */
export interface SwarmEvent {
  /** Gapless and increasing. */
  seq: number;
  id: string;
  event_type: string;
  source: string;
  task_id?: string | null;
  agent_id?: string | null;
  /** Commit time, UTC, milliseconds (RFC 3339). */
  timestamp: string;
  /** Always an object; secrets already redacted. */
  data: Record<string, unknown>;
}

/** An event to store; without `id` the client makes one, so a retry stores nothing twice. */
export interface NewEvent {
  event_type: string;
  source: string;
  task_id?: string;
  agent_id?: string;
  id?: string;
  data?: Record<string, unknown>;
}

/** The server's answer for each stored event, in the order sent. */
export interface Stored {
  id: string;
  seq: number;
  /** The id was stored before; `seq` is the original one. */
  duplicate?: boolean;
}

/**
 * What the server refused, in its words. `code` is the server's (`unauthorized`,
 * `forbidden`, `bad_request`, `invalid_event`, `token_revoked`, …) or the client's
 * (`policy` for a WebSocket closed with 1008, `http_<status>` for an answer without the
 * server's error body, `unavailable` when post's retries are spent, `closed` when a
 * subscription was closed before it was confirmed, `protocol` for a malformed stream,
 * `unsupported` when the platform refused to open the connection at all).
 */
export class SwarmfeedError extends Error {
  constructor(code: string, message: string, details?: { status?: number; field?: string; index?: number });
  readonly name: "SwarmfeedError";
  readonly code: string;
  /** The HTTP status, when the refusal came as one. */
  readonly status?: number;
  /** The field a refused event got wrong. */
  readonly field?: string;
  /** The index of the refused event in the batch. */
  readonly index?: number;
}

export interface FollowOptions {
  /** A token with scope `read`, sent as `Authorization: Bearer`. Without one, a browser's session cookie authenticates. */
  token?: string;
  /** Exact types (`bid.submitted`) or prefixes (`task.*`); any of them matches; at most 32. */
  types?: string[];
  taskId?: string;
  agentId?: string;
  source?: string;
  /** Deliver the events after this seq first (0 = from the oldest retained). Without it: live from the head. */
  since?: number | null;
  /**
   * `"auto"` (default): WebSocket where the platform has one that can authenticate
   * (Node with a token, or a browser with its cookie), else SSE; a server that answers
   * HTTP but whose upgrades fail is followed over SSE from then on.
   */
  transport?: "auto" | "websocket" | "sse";
  /** Each matching event, once, in seq order. */
  onEvent?: (event: SwarmEvent) => void;
  /** `since` was older than the oldest retained event: events continue from `oldest`. Reload what you show. */
  onReset?: (reset: { oldest: number; lastSeq: number | null }) => void;
  /** The server refused (a bad filter, a token unknown or revoked): the subscription has stopped. */
  onError?: (error: SwarmfeedError) => void;
  /** The connection dropped; it is opened again after `delayMs`, resuming after `lastSeq`. */
  onDrop?: (drop: { reason: string; delayMs: number; lastSeq: number | null }) => void;
  /** First reconnect delay in ms (default 500); it doubles, with jitter, up to `maxDelayMs` (default 10 000). */
  firstDelayMs?: number;
  maxDelayMs?: number;
  /** Silence after which a connection is opened again, in ms (default 60 000). */
  idleTimeoutMs?: number;
  /** The `fetch` used for SSE and for asking why an upgrade failed (default: the global one). */
  fetch?: typeof fetch;
}

/** A live subscription; see {@link follow}. */
export class Subscription {
  constructor(url: string | URL, options?: FollowOptions);
  /** The seq of the last event delivered (or `since`, or the head when subscribed live): where a reconnect resumes. */
  readonly lastSeq: number | null;
  /** `head` and `oldest` of the latest `subscribed` answer. */
  readonly head: number | null;
  readonly oldest: number | null;
  /** The transport of the current (or last) connection. */
  readonly transport: "websocket" | "sse" | null;
  /** Frames (or stream reads) that carried events, and how many were `batch` frames. */
  readonly frames: number;
  readonly batches: number;
  /** Reconnects scheduled so far. */
  readonly reconnects: number;
  /** Resolves once the server confirmed the first subscription; rejects with the error if it stops before. */
  readonly ready: Promise<void>;
  /** Resolves after `close()`; rejects with the {@link SwarmfeedError} that stopped the subscription. */
  readonly done: Promise<void>;
  /** Ends the subscription: no event is delivered after it returns. */
  close(): void;
}

/**
 * Follows the log at `url` (the server's base URL): delivers each matching event once,
 * in seq order, and resumes after the last one delivered on every reconnect.
 *
 * @throws {TypeError} for a URL that is not http(s), a transport this platform lacks, or a bad option
 */
export function follow(url: string | URL, options?: FollowOptions): Subscription;

export interface PostOptions {
  /** A token with scope `write`. */
  token?: string;
  /** Attempts after the first for busy answers (429, 5xx) and network failures (default 5). */
  retries?: number;
  firstDelayMs?: number;
  maxDelayMs?: number;
  signal?: AbortSignal;
  fetch?: typeof fetch;
}

/**
 * Stores one event or an array of up to 1 000 (all or nothing) and resolves once they
 * are durable. Events without an `id` get one first, so retries store nothing twice.
 *
 * @throws {SwarmfeedError} the server's refusal (400, 401, 403, 413), or `unavailable` once retries are spent
 */
export function post(url: string | URL, events: NewEvent | NewEvent[], options?: PostOptions): Promise<Stored[]>;
