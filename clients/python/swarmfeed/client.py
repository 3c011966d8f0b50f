"""The producer client: ``log_event`` returns at once; a thread delivers.

Owns the flow from a caller's ``log_event`` to a committed event: a bounded in-memory
queue, one background sender thread that batches (by size or after a short
interval), retries what the server asks to be retried, and keeps what the server
cannot take in the on-disk :class:`~swarmfeed.spool.Spool` until it is back. Every
event gets its id (a UUID) when it is logged, so a batch sent twice (a retry after a
lost answer, a spool segment drained again after a crash) is stored once.

Order: events reach the server in the order they were logged, except when the
in-memory queue was full and ``log_event`` spilled straight into the spool.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import random
import re
import ssl
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from .spool import Spool
from .tls import context_for
from .wire import Outcome, post_events

log = logging.getLogger("swarmfeed")

#: Server base URL when neither ``url`` nor ``SWARMFEED_URL`` is given.
DEFAULT_URL = "http://127.0.0.1:8000"
#: Events per request; the server takes up to 1000.
DEFAULT_BATCH_SIZE = 100
#: Seconds an event waits for others to share its request.
DEFAULT_FLUSH_INTERVAL = 0.2
#: Events held in memory; past this, ``log_event`` writes to the spool instead.
DEFAULT_QUEUE_SIZE = 10_000
#: Bytes the spool may hold (``SWARMFEED_SPOOL_BYTES``); the oldest events go first.
DEFAULT_SPOOL_BYTES = 64 * 1024 * 1024
#: Seconds one request may take.
DEFAULT_TIMEOUT = 10.0
#: Most body bytes per request, well under the server's default limit (16 MiB).
MAX_BATCH_BYTES = 1024 * 1024
#: Tries of one batch at a busy server (429/503) before it goes to the spool.
BUSY_ATTEMPTS = 5
#: Longest Retry-After honoured, seconds.
MAX_RETRY_WAIT = 30.0
#: Reconnection delays: doubling from the first to the last, each ±25 %.
INITIAL_BACKOFF = 0.5
MAX_BACKOFF = 10.0
#: Seconds the idle sender waits for an event before looking at the spool again.
_IDLE_WAIT = 1.0

_EVENT_TYPE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
#: Queued to end a batch early (flush, close); carries no event.
_NUDGE = object()


@dataclass
class EventLogEntry:
    """What ``log_event`` returns: the fields of the Timmy Time dashboard's entry.

    ``timestamp`` is when the event was logged here; the server stamps its own
    commit time, and assigns ``seq``, when the event is stored.
    """

    id: str
    event_type: Any
    source: str
    task_id: Optional[str] = None
    agent_id: Optional[str] = None
    #: The data as JSON text, or None when there was none (as in swarm/event_log.py).
    data: Optional[str] = None
    timestamp: str = ""


def spool_root(url: str, spool_dir: Optional[os.PathLike] = None) -> Path:
    """Where the spools for ``url`` live: under ``spool_dir``, else
    ``SWARMFEED_SPOOL_DIR``, else the user's cache directory; one folder per server,
    so that events never drain into the wrong one."""
    base = spool_dir or os.environ.get("SWARMFEED_SPOOL_DIR")
    if not base:
        cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        base = os.path.join(cache, "swarmfeed", "spool")
    return Path(base) / hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]


class _Backoff:
    def __init__(self) -> None:
        self._next = INITIAL_BACKOFF

    def next_delay(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, MAX_BACKOFF)
        return delay * random.uniform(0.75, 1.25)

    def reset(self) -> None:
        self._next = INITIAL_BACKOFF


class Client:
    """Sends events to one swarmfeed server in the background.

    Arguments default to the environment: ``url`` to ``SWARMFEED_URL`` (else
    http://127.0.0.1:8000), ``token`` to ``SWARMFEED_TOKEN``, ``spool_dir`` to
    ``SWARMFEED_SPOOL_DIR`` (else ``~/.cache/swarmfeed/spool``), ``spool_max_bytes`` to
    ``SWARMFEED_SPOOL_BYTES`` (else 64 MiB). For an ``https://`` URL the server's
    certificate is checked against the system's roots, or the CA in ``ca_file`` (else
    ``SWARMFEED_CA_FILE``), or with ``context``; a CA file that cannot be used raises
    :class:`~swarmfeed.tls.TlsError` here, and a certificate that does not verify is
    logged as such while events wait in the spool, as for a refused token.
    """

    def __init__(
        self,
        url: Optional[str] = None,
        token: Optional[str] = None,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        spool_dir: Optional[os.PathLike] = None,
        spool_max_bytes: Optional[int] = None,
        timeout: float = DEFAULT_TIMEOUT,
        ca_file: Optional[str] = None,
        context: Optional[ssl.SSLContext] = None,
    ) -> None:
        if not 1 <= batch_size <= 1000:
            raise ValueError("batch_size must be between 1 and 1000 (the server's batch limit)")
        self.url = (url or os.environ.get("SWARMFEED_URL") or DEFAULT_URL).rstrip("/")
        self._token = token if token is not None else os.environ.get("SWARMFEED_TOKEN")
        self._events_url = self.url + "/api/events"
        self._context = context_for(self.url, ca_file, context)
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._timeout = timeout
        max_bytes = spool_max_bytes or int(os.environ.get("SWARMFEED_SPOOL_BYTES") or DEFAULT_SPOOL_BYTES)
        self._spool = Spool(spool_root(self.url, spool_dir), max_bytes)
        self._spool.adopt()
        self._queue: "queue.Queue[Any]" = queue.Queue(maxsize=queue_size)
        # Guards the closed flag against a log_event racing close(): an event is
        # either queued before the sender's last look, or spooled.
        self._accepting = threading.Lock()
        self._closed = False
        self._closing = threading.Event()
        self._close_deadline = 0.0
        self._wake = threading.Event()
        # Notified after every step of the sender, for flush().
        self._progress = threading.Condition()
        self._inflight: Optional[List[str]] = None
        self._down = False
        self._backoff = _Backoff()
        # Written by the caller and the sender; a lock keeps the sums exact.
        self._counts = {"logged": 0, "sent": 0, "duplicates": 0, "spooled": 0, "rejected": 0, "lost": 0}
        self._counts_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="swarmfeed-sender", daemon=True)
        self._thread.start()

    # -- the caller's side ---------------------------------------------------------

    def log_event(
        self,
        event_type: Any,
        source: str,
        task_id: Optional[str] = None,
        agent_id: Optional[str] = None,
        data: Optional[Mapping[str, Any]] = None,
    ) -> EventLogEntry:
        """Logs an event and returns at once; it is delivered in the background.

        ``event_type`` is a string like ``"task.created"`` or a ``str`` enum (such as
        the dashboard's ``EventType``). Raises ``ValueError`` for a malformed type or
        an empty source and ``TypeError`` for data that is not a JSON object.
        """
        type_name = getattr(event_type, "value", event_type)
        if not isinstance(type_name, str) or not _EVENT_TYPE.match(type_name):
            raise ValueError("event_type {!r} must be dot-separated lowercase words, like 'task.created'".format(type_name))
        if not isinstance(source, str) or not source:
            raise ValueError("source must be a non-empty string")
        if data is not None and not isinstance(data, Mapping):
            raise TypeError("data must be a dict, not {}".format(type(data).__name__))
        event: Dict[str, Any] = {"id": str(uuid.uuid4()), "event_type": type_name, "source": source}
        if task_id is not None:
            event["task_id"] = task_id
        if agent_id is not None:
            event["agent_id"] = agent_id
        if data:
            event["data"] = dict(data)
        # Serialised now, in the caller, so unserialisable data fails here and not
        # silently in the background.
        line = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
        with self._accepting:
            self._count("logged", 1)
            queued = False
            if not self._closed:
                try:
                    self._queue.put_nowait(line)
                    queued = True
                except queue.Full:
                    pass
            if not queued:
                # The queue goes first, so that the spool keeps the order of logging.
                self._spool_queued()
                self._to_spool([line])
        return EventLogEntry(
            id=event["id"],
            event_type=event_type,
            source=source,
            task_id=task_id,
            agent_id=agent_id,
            data=json.dumps(data) if data else None,
            timestamp=datetime.now(timezone.utc).isoformat(),
        )

    def flush(self, timeout: float = 10.0) -> bool:
        """Waits until every event logged so far has been stored by the server, the
        spool included; returns False if that did not happen within ``timeout``
        seconds (the server is down: the events wait in the spool)."""
        deadline = time.monotonic() + timeout
        self._nudge()
        with self._progress:
            while not self._idle():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._progress.wait(remaining)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Delivers what it can within ``timeout`` seconds (at once if the server is
        down), keeps the rest in the spool for the next client, and stops. Events
        logged after close go straight to the spool."""
        with self._accepting:
            if self._closed:
                return
            self._closed = True
        self._close_deadline = time.monotonic() + timeout
        self._closing.set()
        self._nudge()
        self._thread.join(timeout)
        if self._thread.is_alive():
            # The sender is stuck in a request; keep its batch too. If that request
            # succeeds after all, the spooled copy is a repeat the server ignores.
            # The sender closes the spool when the request ends.
            inflight = self._inflight
            if inflight:
                self._to_spool(list(inflight))
            self._spool_queued()

    def stats(self) -> Dict[str, int]:
        """Counters: logged, sent, duplicates (sent before), spooled (ever written to
        the spool), rejected (refused by the server), dropped (spool full), lost (the
        spool could not be written), queued, in_spool, down (1 while the server is
        unreachable)."""
        with self._counts_lock:
            counts = dict(self._counts)
        counts.update(
            dropped=self._spool.dropped,
            queued=self._queue.qsize(),
            in_spool=self._spool.pending,
            down=int(self._down),
        )
        return counts

    @property
    def spool_dir(self) -> Path:
        """This client's own spool directory."""
        return self._spool.dir

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the sender thread ---------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                if self._closing.is_set():
                    self._finish()
                    return
                if self._spool.pending:
                    # Keep the order: while older events wait on disk, newer ones
                    # join them there.
                    self._spool_queued()
                    if self._down:
                        self._pause()
                        if self._closing.is_set():
                            continue
                    self._drain_oldest()
                else:
                    batch = self._take_batch(wait=_IDLE_WAIT)
                    if batch:
                        self._send(batch)
            except Exception:  # noqa: BLE001 - the sender must outlive any one failure
                log.exception("swarmfeed sender: unexpected error; going on")
                self._pause()
            finally:
                with self._progress:
                    self._progress.notify_all()

    def _finish(self) -> None:
        """The sender's last work: one more delivery unless the server is known to
        be down, then everything left goes to the spool."""
        while not self._down and time.monotonic() < self._close_deadline:
            batch = self._take_batch(wait=0)
            if not batch:
                break
            self._send(batch)
        while not self._down and self._spool.pending and time.monotonic() < self._close_deadline:
            self._drain_oldest()
        self._spool_queued()
        self._spool.close()

    def _take_batch(self, wait: float) -> List[str]:
        """Up to batch_size queued events (and MAX_BATCH_BYTES), waiting up to ``wait``
        for the first and flush_interval for the rest. A nudge sends what is there."""
        lines: List[str] = []
        size = 0
        deadline = None
        while len(lines) < self._batch_size and size < MAX_BATCH_BYTES:
            if deadline is None:
                timeout = wait
            else:
                timeout = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _NUDGE:
                # Send what there is now; with nothing, end the step so that a
                # waiting flush() hears about it.
                self._queue.task_done()
                break
            lines.append(item)
            size += len(item) + 1
            if deadline is None:
                deadline = time.monotonic() + self._flush_interval
        return lines

    def _send(self, lines: List[str]) -> None:
        """Delivers queued events, or spools what the server could not take."""
        self._inflight = lines
        try:
            left = self._deliver(lines)
            if left:
                self._to_spool(left)
            else:
                self._up()
        finally:
            self._inflight = None
            for _ in lines:
                self._queue.task_done()

    def _drain_oldest(self) -> None:
        """Sends the oldest spool segment; it is removed only once all of it is in."""
        oldest = self._spool.oldest()
        if oldest is None:
            return
        path, lines = oldest
        for start in range(0, len(lines), self._batch_size):
            if self._deliver(lines[start : start + self._batch_size]):
                return
        self._spool.remove(path)
        self._up()

    def _deliver(self, lines: List[str]) -> List[str]:
        """Posts events; returns those left undelivered because the server is down or
        stayed busy (empty when all were stored or refused for good)."""
        chunks = [lines]
        busy = 0
        while chunks:
            chunk = chunks.pop(0)
            outcome = post_events(self._events_url, self._token, chunk, self._timeout, self._context)
            if outcome.kind == "stored":
                self._count("sent", len(chunk))
                self._count("duplicates", outcome.duplicates)
            elif outcome.kind == "rejected":
                self._reject(chunk, outcome, chunks)
            elif outcome.kind == "too_large":
                if len(chunk) == 1:
                    self._count("rejected", 1)
                    log.warning("swarmfeed dropped an event the server finds too large: %s", outcome.message)
                else:
                    half = len(chunk) // 2
                    chunks[:0] = [chunk[:half], chunk[half:]]
            elif outcome.kind == "busy" and busy + 1 < BUSY_ATTEMPTS and not self._closing.is_set():
                busy += 1
                wait = min(outcome.retry_after or self._backoff.next_delay(), MAX_RETRY_WAIT)
                self._closing.wait(wait)
                chunks.insert(0, chunk)
            else:
                self._went_down(outcome)
                return chunk + [line for rest in chunks for line in rest]
        return []

    def _reject(self, chunk: List[str], outcome: Outcome, chunks: List[List[str]]) -> None:
        """A batch is all or nothing: drop the event the server named and send the
        rest again. Without an index the whole batch is dropped."""
        index = outcome.index
        if index is not None and 0 <= index < len(chunk):
            self._count("rejected", 1)
            log.warning("swarmfeed dropped an event the server refused (%s): %s", outcome.message, chunk[index][:200])
            rest = chunk[:index] + chunk[index + 1 :]
            if rest:
                chunks.insert(0, rest)
        else:
            self._count("rejected", len(chunk))
            log.warning("swarmfeed dropped %d events the server refused: %s", len(chunk), outcome.message)

    def _went_down(self, outcome: Outcome) -> None:
        if not self._down:
            hint = " (check SWARMFEED_TOKEN)" if outcome.auth else ""
            if outcome.tls:
                hint = " (check the server's certificate, or the CA given as ca_file= or SWARMFEED_CA_FILE)"
            log.warning(
                "swarmfeed server %s cannot take events (%s)%s; keeping them in %s",
                self.url,
                outcome.message,
                hint,
                self._spool.dir,
            )
        self._down = True

    def _up(self) -> None:
        if self._down:
            log.info("swarmfeed server %s is back; sending the spooled events", self.url)
            self._down = False
            self._backoff.reset()
            # Spools left by clients that ended while it was away are ours to send.
            self._spool.adopt()

    def _pause(self) -> None:
        """Waits out the backoff; a flush or close cuts it short."""
        self._wake.wait(self._backoff.next_delay())
        self._wake.clear()

    def _spool_queued(self) -> None:
        """Moves everything queued to the spool."""
        lines = []
        taken = 0
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            taken += 1
            if item is not _NUDGE:
                lines.append(item)
        try:
            self._to_spool(lines)
        finally:
            for _ in range(taken):
                self._queue.task_done()

    def _to_spool(self, lines: List[str]) -> None:
        if not lines:
            return
        try:
            self._spool.append(lines)
            self._count("spooled", len(lines))
        except OSError as e:
            self._count("lost", len(lines))
            log.error("swarmfeed cannot write its spool %s (%s): %d events lost", self._spool.dir, e, len(lines))

    def _count(self, name: str, n: int) -> None:
        with self._counts_lock:
            self._counts[name] += n

    def _nudge(self) -> None:
        self._wake.set()
        try:
            self._queue.put_nowait(_NUDGE)
        except queue.Full:
            pass  # the sender has a full batch waiting anyway

    def _idle(self) -> bool:
        with self._queue.mutex:
            unfinished = self._queue.unfinished_tasks
        return unfinished == 0 and self._spool.pending == 0
