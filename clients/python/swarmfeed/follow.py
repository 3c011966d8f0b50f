"""Following the log live over the WebSocket ``GET /ws`` (DESIGN §3).

:class:`Subscription` subscribes with a filter, asks for ``batch`` frames (a burst then
costs one frame per paced send, not one per event), and yields events one at a time in
seq order. After a dropped connection it subscribes again after the last seq it
yielded, so nothing is missed and nothing repeated. It owns one socket at a time and
keeps no events of its own beyond the frame being read.

Standard library only: the part of RFC 6455 a client needs (the opening handshake,
masked frames out; text, continuation, ping and close frames in).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import socket
import ssl
import struct
import time
import urllib.parse
from collections import deque
from typing import Any, Deque, Dict, Iterator, List, Optional, Tuple

from .tls import TlsError, certificate_problem, context_for

log = logging.getLogger("swarmfeed")

#: The RFC 6455 constant the server's handshake answer is derived from.
_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: The largest message read: above the server's largest frame (about 1.5 MiB of
#: events), far below what would hurt; a bigger one ends the connection.
MAX_MESSAGE_BYTES = 16 << 20
#: Longest answer to the opening handshake that is read.
_MAX_HANDSHAKE_BYTES = 64 * 1024
#: Seconds without any frame (the server pings every 15 s) before the connection
#: counts as dead and is opened again.
DEFAULT_READ_TIMEOUT = 60.0
#: Reconnect delay: first, and the most it doubles to.
_FIRST_DELAY = 0.5
_MAX_DELAY = 10.0

_OP_CONTINUATION, _OP_TEXT, _OP_BINARY, _OP_CLOSE, _OP_PING, _OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class SubscribeError(Exception):
    """The server refused the subscription (a bad filter, a token without ``read``):
    trying again would not help."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__("{}: {}".format(code, message))
        self.code = code
        self.message = message


class _Dropped(Exception):
    """The connection ended or broke; the subscription opens it again."""


class Subscription:
    """An iterator of the events that match a filter, live, after ``since`` if given.

    ``url`` is the server's base URL (``http://``, ``https://``). ``types`` are exact
    types or prefixes ending in ``.*``. Without ``since`` it starts at the head when
    it is made (live only); with it, it replays what came after that seq first. The
    constructor returns once the server has confirmed the subscription, or raises
    :class:`SubscribeError` when the server refuses it. With ``reconnect`` (the
    default) a dropped connection, or a server that is down when it is made, is opened
    again and resumed; without it, the constructor raises ``OSError`` and the
    iteration ends. For ``https`` the server's certificate is checked against the
    system's roots, or the CA in ``ca_file`` (else ``SWARMFEED_CA_FILE``), or with
    ``context``; one that does not verify raises :class:`~swarmfeed.tls.TlsError`,
    from the constructor or the iteration, and is not retried.
    """

    def __init__(
        self,
        url: str,
        token: Optional[str] = None,
        *,
        types: Optional[List[str]] = None,
        task_id: Optional[str] = None,
        agent_id: Optional[str] = None,
        source: Optional[str] = None,
        since: Optional[int] = None,
        reconnect: bool = True,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        context: Optional[ssl.SSLContext] = None,
        ca_file: Optional[str] = None,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("url must be http://host[:port] or https://host[:port], not {!r}".format(url))
        self._tls = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._tls else 80)
        self._path = parts.path.rstrip("/") + "/ws"
        self._token = token
        self._filter: Dict[str, Any] = {}
        if types:
            self._filter["types"] = list(types)
        for key, value in (("task_id", task_id), ("agent_id", agent_id), ("source", source)):
            if value is not None:
                self._filter[key] = value
        self._reconnect = reconnect
        self._read_timeout = read_timeout
        self._context = context_for(url, ca_file, context)
        self._sock: Optional[socket.socket] = None
        self._reader: Any = None
        self._pending: Deque[Dict[str, Any]] = deque()
        self._closed = False
        #: The seq of the last event yielded (or ``since``): where a reconnect resumes.
        self.last_seq: Optional[int] = since
        #: Frames that carried events, and how many of them were ``batch`` frames.
        self.frames = 0
        self.batches = 0
        #: The ``head`` and ``oldest`` of the latest ``subscribed`` answer.
        self.head: Optional[int] = None
        self.oldest: Optional[int] = None
        try:
            self._open()
        except (_Dropped, OSError) as e:
            self._untrusted(e)
            self._drop()
            if not reconnect:
                raise OSError("cannot subscribe at {}: {}".format(url, e)) from e
            log.warning("swarmfeed: cannot subscribe yet (%s); retrying when iterated", e)

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        return self

    def __next__(self) -> Dict[str, Any]:
        delay = _FIRST_DELAY
        while not self._pending:
            if self._closed:
                raise StopIteration
            try:
                if self._sock is None:
                    self._open()
                self._read_events()
                delay = _FIRST_DELAY
            except (_Dropped, OSError) as e:
                self._untrusted(e)
                self._drop()
                if self._closed:
                    raise StopIteration  # interrupted from another thread
                if not self._reconnect:
                    self._closed = True
                    raise StopIteration
                log.warning(
                    "swarmfeed: subscription dropped (%s); resuming after seq %s in %.1f s", e, self.last_seq, delay
                )
                time.sleep(delay)
                delay = min(delay * 2, _MAX_DELAY)
        event = self._pending.popleft()
        self.last_seq = event["seq"]
        return event

    def close(self) -> None:
        """Ends the subscription; iteration stops."""
        self._closed = True
        if self._sock is not None:
            try:
                self._send(_OP_CLOSE, struct.pack("!H", 1000))
            except OSError:
                pass  # it is being closed either way
        self._drop()

    def interrupt(self) -> None:
        """Ends the subscription from another thread: a read blocked in ``next`` returns
        at once and iteration stops. Only shuts the socket down; the iterating thread
        closes it (a socket, TLS above all, is not written from two threads at once)."""
        self._closed = True
        sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # not connected any more

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self) -> None:
        """Connects and subscribes; returns once the server said ``subscribed``."""
        self._connect()
        while True:
            frame = json.loads(self._read_message())
            kind = frame.get("type")
            if kind == "subscribed":
                self.head, self.oldest = frame.get("head"), frame.get("oldest")
                if self.last_seq is None:
                    # Live from here: a reconnect resumes after this, not at a later head.
                    self.last_seq = self.head
                return
            if kind == "error":
                self._refused(frame)

    def _untrusted(self, error: BaseException) -> None:
        """Ends the subscription with :class:`TlsError` if ``error`` is a certificate
        that did not verify: reconnecting would only fail the same way."""
        problem = certificate_problem(error)
        if problem is not None:
            self._closed = True
            self._drop()
            raise TlsError("the certificate of {}:{} is not trusted: {}".format(self._host, self._port, problem)) from error

    def _refused(self, frame: Dict[str, Any]) -> None:
        self._closed = True
        self._drop()
        raise SubscribeError(frame.get("code", ""), frame.get("message", ""))

    def _connect(self) -> None:
        sock = socket.create_connection((self._host, self._port), timeout=self._read_timeout)
        if self._tls:
            assert self._context is not None  # made for every https URL
            sock = self._context.wrap_socket(sock, server_hostname=self._host)
        self._sock = sock
        self._reader = sock.makefile("rb")
        key = base64.b64encode(os.urandom(16)).decode()
        host = self._host if ":" not in self._host else "[{}]".format(self._host)
        lines = [
            "GET {} HTTP/1.1".format(self._path),
            "Host: {}:{}".format(host, self._port),
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Key: " + key,
            "Sec-WebSocket-Version: 13",
            "User-Agent: swarmfeed-python",
        ]
        if self._token:
            lines.append("Authorization: Bearer " + self._token)
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        status, headers = self._read_handshake()
        if status in (401, 403):
            self._closed = True
            self._drop()
            code = "unauthorized" if status == 401 else "forbidden"
            raise SubscribeError(code, "the server refused the token (HTTP {})".format(status))
        if status != 101:
            raise _Dropped("the upgrade was answered with HTTP {}".format(status))
        expected = base64.b64encode(hashlib.sha1((key + _WS_GUID).encode()).digest()).decode()
        if headers.get("sec-websocket-accept") != expected:
            raise _Dropped("the server's handshake answer does not match")
        subscribe: Dict[str, Any] = {"action": "subscribe", "channel": "events", "filter": self._filter, "batch": True}
        if self.last_seq is not None:
            subscribe["since"] = self.last_seq
        self._send(_OP_TEXT, json.dumps(subscribe).encode())

    def _read_handshake(self) -> Tuple[int, Dict[str, str]]:
        read = 0
        status_line = self._reader.readline(_MAX_HANDSHAKE_BYTES)
        read += len(status_line)
        parts = status_line.decode("latin-1").split()
        if len(parts) < 2 or not parts[1].isdigit():
            raise _Dropped("not an HTTP answer to the upgrade")
        headers: Dict[str, str] = {}
        while True:
            line = self._reader.readline(_MAX_HANDSHAKE_BYTES)
            read += len(line)
            if not line or read > _MAX_HANDSHAKE_BYTES:
                raise _Dropped("the upgrade answer ended early or is too long")
            if line in (b"\r\n", b"\n"):
                return int(parts[1]), headers
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()

    def _read_events(self) -> None:
        """Reads messages until one brings events (into ``_pending``)."""
        while not self._pending:
            frame = json.loads(self._read_message())
            kind = frame.get("type")
            if kind == "event":
                self._take([frame["payload"]])
            elif kind == "batch":
                self.batches += 1
                self._take(frame["payload"])
            elif kind == "reset":
                log.warning(
                    "swarmfeed: events after seq %s were pruned; continuing from %s", self.last_seq, frame.get("oldest")
                )
            elif kind == "error":
                self._refused(frame)
            # pong, unsubscribed, and frame types newer than this client: nothing to do.

    def _take(self, events: List[Dict[str, Any]]) -> None:
        self.frames += 1
        # A resumed subscription starts after last_seq; the check keeps "never twice"
        # true even if a frame were sent twice.
        floor = self.last_seq if self.last_seq is not None else -1
        self._pending.extend(e for e in events if e["seq"] > floor)

    def _read_message(self) -> bytes:
        message = b""
        while True:
            head = self._read_exact(2)
            fin, opcode = head[0] & 0x80, head[0] & 0x0F
            length = head[1] & 0x7F
            if length == 126:
                length = struct.unpack("!H", self._read_exact(2))[0]
            elif length == 127:
                length = struct.unpack("!Q", self._read_exact(8))[0]
            if head[1] & 0x80:
                raise _Dropped("the server sent a masked frame")
            if len(message) + length > MAX_MESSAGE_BYTES:
                raise _Dropped("a message over {} bytes".format(MAX_MESSAGE_BYTES))
            payload = self._read_exact(length)
            if opcode == _OP_PING:
                self._send(_OP_PONG, payload)
            elif opcode == _OP_CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                reason = payload[2:].decode("utf-8", "replace")
                raise _Dropped("the server closed the connection ({} {})".format(code, reason))
            elif opcode in (_OP_TEXT, _OP_BINARY, _OP_CONTINUATION):
                message += payload
                if fin:
                    return message
            # pongs are ignored

    def _read_exact(self, n: int) -> bytes:
        data = self._reader.read(n) if n else b""
        if len(data) < n:
            raise _Dropped("the connection ended")
        return data

    def _send(self, opcode: int, payload: bytes) -> None:
        assert self._sock is not None
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 1 << 16:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self._sock.sendall(head + mask + masked)

    def _drop(self) -> None:
        if self._sock is not None:
            try:
                # Wakes a read blocked in another thread (AsyncSubscription's reader),
                # which close() alone would leave waiting until the read timeout.
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # not connected any more
        for closable in (self._reader, self._sock):
            if closable is not None:
                try:
                    closable.close()
                except OSError:
                    pass  # already gone
        self._reader = None
        self._sock = None
