"""swarmfeed: send a swarm's events to a swarmfeed server, without waiting for it.

A drop-in for the Timmy Time dashboard's ``swarm/event_log.py``: change

    from swarm.event_log import log_event

to

    from swarmfeed import log_event

and every ``log_event(event_type, source, task_id=None, agent_id=None, data=None)``
goes to swarmfeed instead of a local SQLite file. The call returns at once; a
background thread sends events in batches, retries with the ids given at log time (so
nothing is stored twice), and keeps events in a bounded spool on disk while the server
is down. The module-level functions use one default :class:`Client`, configured from
the environment (``SWARMFEED_URL``, ``SWARMFEED_TOKEN``, ``SWARMFEED_SPOOL_DIR``,
``SWARMFEED_SPOOL_BYTES``) on first use and closed at exit.

Modules: ``client`` (the queue, the sender thread, the retries), ``spool`` (the
on-disk spool), ``wire`` (one HTTP request and what its answer means), ``follow``
(:class:`Subscription`: the log live over WebSocket, resumed after a dropped connection),
``tls`` (which CAs an ``https://`` server is checked against: ``ca_file=``,
``SWARMFEED_CA_FILE``), ``aio`` (:class:`AsyncClient`, :class:`AsyncSubscription`: the
same for asyncio).
"""

from __future__ import annotations

import atexit
import os
import threading
from typing import Any, Mapping, Optional

from .aio import AsyncClient, AsyncSubscription
from .client import Client, EventLogEntry
from .follow import SubscribeError, Subscription
from .tls import TlsError

__all__ = [
    "AsyncClient",
    "AsyncSubscription",
    "TlsError",
    "Client",
    "EventLogEntry",
    "SubscribeError",
    "Subscription",
    "log_event",
    "flush",
    "close",
    "configure",
    "default_client",
]
__version__ = "0.1.0"

_default: Optional[Client] = None
_default_lock = threading.Lock()


def default_client() -> Client:
    """The module's client, made from the environment on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Client()
        return _default


def configure(**kwargs: Any) -> Client:
    """Replaces the default client with ``Client(**kwargs)``; the old one is closed
    (its undelivered events stay in its spool and are adopted by the new one)."""
    global _default
    with _default_lock:
        old, _default = _default, Client(**kwargs)
    if old is not None:
        old.close()
    return _default


def log_event(
    event_type: Any,
    source: str,
    task_id: Optional[str] = None,
    agent_id: Optional[str] = None,
    data: Optional[Mapping[str, Any]] = None,
) -> EventLogEntry:
    """Logs an event through the default client; see :meth:`Client.log_event`."""
    return default_client().log_event(event_type, source, task_id, agent_id, data)


def flush(timeout: float = 10.0) -> bool:
    """Waits until the default client's events are stored; see :meth:`Client.flush`."""
    return default_client().flush(timeout)


def close(timeout: float = 5.0) -> None:
    """Closes the default client, if one was made; runs by itself at exit."""
    global _default
    with _default_lock:
        client, _default = _default, None
    if client is not None:
        client.close(timeout)


def _forget_after_fork() -> None:
    # A forked child has the parent's client but not its sender thread; it makes its
    # own on first use instead of queueing into a client nobody drains.
    global _default, _default_lock
    _default = None
    _default_lock = threading.Lock()


atexit.register(close)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
