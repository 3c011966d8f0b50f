"""The asyncio API: :class:`AsyncClient` and :class:`AsyncSubscription`.

Both are thin on purpose. They drive the same engines as the thread-based API, so
batching, retries with the ids given at log time, the on-disk spool while the server
is down, and exact resumption after a dropped subscription behave identically, and
there is one implementation of each to trust:

- ``await client.log_event(…)`` queues the event and returns its entry at once;
  the client's sender thread delivers it. It never waits on the network; only when
  the in-memory queue is full does it append to the spool file, as the thread API
  does.
- ``await client.flush()`` and ``await client.close()`` wait in a worker thread, so
  the event loop keeps running while they wait for the server.
- An :class:`AsyncSubscription` reads its WebSocket in a thread of its own (one per
  subscription, not the loop's shared pool, so many subscriptions never starve
  ``asyncio.to_thread`` callers), and hands each event to the loop.

Example::

    async with AsyncClient("https://feed.example.com", token) as client:
        await client.log_event("task.created", "planner", task_id="t1")
        async for event in client.subscribe(types=["task.*"], since=0):
            print(event["seq"], event["event_type"])
"""

from __future__ import annotations

import asyncio
import ssl
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Mapping, Optional, TypeVar

from .client import Client, EventLogEntry
from .follow import Subscription

T = TypeVar("T")

#: What the reading thread returns when the subscription has ended.
_END = object()


class AsyncClient:
    """Sends events to one swarmfeed server, for asyncio code.

    Takes the arguments of :class:`~swarmfeed.client.Client` (``url``, ``token``,
    ``ca_file``, ``context``, the spool and batching settings) with the same
    defaults from the environment. Use it with ``async with``, which closes it
    (delivering what it can within the close timeout, spooling the rest).
    """

    def __init__(self, url: Optional[str] = None, token: Optional[str] = None, **settings: Any) -> None:
        self._ca_file: Optional[str] = settings.get("ca_file")
        self._context: Optional[ssl.SSLContext] = settings.get("context")
        self._client = Client(url, token, **settings)

    @property
    def url(self) -> str:
        return self._client.url

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def log_event(
        self,
        event_type: Any,
        source: str,
        task_id: Optional[str] = None,
        agent_id: Optional[str] = None,
        data: Optional[Mapping[str, Any]] = None,
    ) -> EventLogEntry:
        """Logs an event; it is delivered in the background. Raises as
        :meth:`Client.log_event` does for a malformed event."""
        return self._client.log_event(event_type, source, task_id=task_id, agent_id=agent_id, data=data)

    async def flush(self, timeout: float = 10.0) -> bool:
        """Waits until every event logged so far is stored; False if ``timeout``
        passed first (the server is down or busy)."""
        return await asyncio.to_thread(self._client.flush, timeout)

    async def close(self, timeout: float = 5.0) -> None:
        """Delivers what it can within ``timeout``, spools the rest, and stops."""
        await asyncio.to_thread(self._client.close, timeout)

    def stats(self) -> Dict[str, int]:
        """The counters of :meth:`Client.stats`."""
        return self._client.stats()

    def subscribe(self, **options: Any) -> "AsyncSubscription":
        """An :class:`AsyncSubscription` to this client's server, with its token and
        TLS settings; ``options`` are those of :class:`Subscription` (``types``,
        ``task_id``, ``agent_id``, ``source``, ``since``, ``reconnect``…)."""
        token = self._client._token
        options.setdefault("ca_file", self._ca_file)
        options.setdefault("context", self._context)
        return AsyncSubscription(self.url, token, **options)


class AsyncSubscription:
    """``async for`` over the events that match a filter, live, resumed exactly after
    a dropped connection: :class:`~swarmfeed.follow.Subscription` for asyncio, with
    its arguments. The subscription is opened at the first ``async for`` step or at
    ``async with``; a refused one raises :class:`~swarmfeed.follow.SubscribeError`, an
    untrusted certificate :class:`~swarmfeed.tls.TlsError`.
    """

    def __init__(self, url: str, token: Optional[str] = None, **options: Any) -> None:
        self._open_sync: Callable[[], Subscription] = lambda: Subscription(url, token, **options)
        self._sync: Optional[Subscription] = None
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="swarmfeed-subscription")
        self._closed = False

    @property
    def last_seq(self) -> Optional[int]:
        """The seq of the last event yielded: where a reconnect resumes."""
        return self._sync.last_seq if self._sync is not None else None

    @property
    def batches(self) -> int:
        return self._sync.batches if self._sync is not None else 0

    async def open(self) -> None:
        """Subscribes, if not yet done; returns once the server has confirmed it."""
        if self._sync is None:
            self._sync = await self._in_reader(self._open_sync)

    async def __aenter__(self) -> "AsyncSubscription":
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __aiter__(self) -> "AsyncSubscription":
        return self

    async def __anext__(self) -> Dict[str, Any]:
        if self._closed:
            raise StopAsyncIteration
        await self.open()
        sync = self._sync
        assert sync is not None

        def step() -> Any:
            # StopIteration cannot cross into a future; it becomes a sentinel.
            return next(sync, _END)

        event = await self._in_reader(step)
        if event is _END:
            raise StopAsyncIteration
        return event

    async def close(self) -> None:
        """Ends the subscription; a pending ``async for`` step ends too."""
        self._closed = True
        sync = self._sync
        if sync is not None:
            # Wakes a step blocked in the reading thread; the close itself (its close
            # frame, the socket) runs in that thread after the step, never beside it.
            sync.interrupt()
            await self._in_reader(sync.close)
        self._reader.shutdown(wait=False)

    async def _in_reader(self, work: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._reader, work)


__all__: List[str] = ["AsyncClient", "AsyncSubscription"]
