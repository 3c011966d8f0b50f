"""One POST /api/events, and what its answer means for the events in it.

Owns the HTTP side (urllib, the bearer token, timeouts) and the reading of the
server's answer (DESIGN §4): 201, a refused event named by its index, a body that is
too large, a busy server with Retry-After, a server that is down. It keeps no state
and never retries; the client decides.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import List, Optional

from .tls import certificate_problem

#: The most of an error answer that is read; an error body is a short JSON object.
_MAX_ERROR_BODY = 64 * 1024


@dataclass
class Outcome:
    """What became of one request."""

    #: "stored", "rejected" (one event refused), "too_large", "busy", "down".
    kind: str
    #: stored: events the server had seen before (their ids), and so did not store again.
    duplicates: int = 0
    #: rejected: the index of the refused event in the batch, if the server named it.
    index: Optional[int] = None
    #: rejected, down: the server's message or the network error.
    message: str = ""
    #: busy: seconds the server asked to wait.
    retry_after: Optional[float] = None
    #: down: the token was refused (401/403); waiting will not fix that.
    auth: bool = False
    #: down: the server's certificate was not trusted; waiting will not fix that either.
    tls: bool = False


def post_events(
    url: str, token: Optional[str], lines: List[str], timeout: float, context: Optional[ssl.SSLContext] = None
) -> Outcome:
    """POSTs events given as compact JSON objects; never raises for network trouble.
    ``context`` is the TLS context for an ``https://`` URL."""
    body = ("[" + ",".join(lines) + "]").encode("utf-8")
    headers = {"Content-Type": "application/json", "User-Agent": "swarmfeed-python"}
    if token:
        headers["Authorization"] = "Bearer " + token
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            answer = json.loads(response.read() or b"{}")
            events = answer.get("events") or []
            return Outcome("stored", duplicates=sum(1 for e in events if e.get("duplicate")))
    except urllib.error.HTTPError as e:
        return _refusal(e)
    except (OSError, http.client.HTTPException, socket.timeout, ValueError) as e:
        problem = certificate_problem(e)
        if problem is not None:
            return Outcome("down", message="the server's certificate is not trusted: " + problem, tls=True)
        # Refused, reset, timed out, or an answer cut short: the server is not there.
        return Outcome("down", message=str(e) or type(e).__name__)


def _refusal(e: urllib.error.HTTPError) -> Outcome:
    try:
        detail = json.loads(e.read(_MAX_ERROR_BODY) or b"{}").get("error") or {}
    except (ValueError, OSError, AttributeError):
        detail = {}
    message = "HTTP {} {}".format(e.code, detail.get("message") or e.reason)
    if e.code in (429, 503):
        return Outcome("busy", message=message, retry_after=_seconds(e.headers.get("Retry-After")))
    if e.code == 413:
        return Outcome("too_large", message=message)
    if e.code in (401, 403):
        return Outcome("down", message=message, auth=True)
    if 400 <= e.code < 500:
        index = detail.get("index")
        return Outcome("rejected", message=message, index=index if isinstance(index, int) else None)
    return Outcome("down", message=message)


def _seconds(value: Optional[str]) -> Optional[float]:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date; swarmfeed sends seconds
