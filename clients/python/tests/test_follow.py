"""Following the log over /ws with the Python client, against the real swarmfeed binary."""

from __future__ import annotations

import json
import logging
import tempfile
import unittest
import urllib.request
from pathlib import Path
from typing import List

from swarmfeed import SubscribeError, Subscription

from .server import WAIT, Server

logging.getLogger("swarmfeed").addHandler(logging.NullHandler())


def post(server: Server, events: List[dict]) -> List[int]:
    """Stores ``events`` in one request; returns their seqs."""
    request = urllib.request.Request(
        server.url + "/api/events",
        data=json.dumps(events).encode(),
        headers={"Authorization": "Bearer " + server.token, "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=WAIT) as response:
        return [e["seq"] for e in json.loads(response.read())["events"]]


def tools(first: int, count: int) -> List[dict]:
    return [{"event_type": "tool.called", "source": "agent", "data": {"n": n}} for n in range(first, first + count)]


class FollowTest(unittest.TestCase):
    def setUp(self) -> None:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.data_dir = Path(tmp.name) / "data"

    def start_server(self, port: int = 0) -> Server:
        # The server paces each subscription to its default 10 sends a second, so a
        # burst is coalesced: into batch frames for a client that asks for them.
        server = Server(self.data_dir, port)
        self.addCleanup(server.stop)
        return server

    def follow(self, server: Server, **kwargs) -> Subscription:
        subscription = Subscription(server.url, server.token, read_timeout=WAIT, **kwargs)
        self.addCleanup(subscription.close)
        return subscription

    def test_a_subscription_asks_for_batches_and_yields_every_event_once_in_seq_order(self) -> None:
        server = self.start_server()
        post(server, tools(0, 300))
        # Without reconnect, a server that stops sending ends the test instead of hanging it.
        sub = self.follow(server, since=0, reconnect=False)
        got = [next(sub) for _ in range(300)]
        for chunk in range(4):
            post(server, tools(300 + 50 * chunk, 50))
        got += [next(sub) for _ in range(200)]
        self.assertEqual([e["seq"] for e in got], list(range(1, 501)), "each once, in seq order")
        self.assertEqual([e["data"]["n"] for e in got], list(range(500)))
        self.assertGreaterEqual(sub.batches, 1, "coalesced events came as batch frames")
        self.assertLess(sub.frames, 100, "500 events in far fewer frames: the subscription asked for batches")
        self.assertEqual(sub.last_seq, 500)

    def test_a_dropped_subscription_resumes_after_the_last_event_it_yielded(self) -> None:
        server = self.start_server()
        port = int(server.addr.rsplit(":", 1)[1])
        sub = self.follow(server, types=["task.*"])
        first = post(server, [{"event_type": "task.created", "source": "c", "task_id": "t1"}])[0]
        self.assertEqual(next(sub)["seq"], first)
        server.stop()

        server = self.start_server(port)
        later = post(
            server,
            [
                {"event_type": "tool.called", "source": "c"},
                {"event_type": "task.started", "source": "c", "task_id": "t1"},
                {"event_type": "task.completed", "source": "c", "task_id": "t1"},
            ],
        )
        with self.assertLogs("swarmfeed", "WARNING") as logs:
            resumed = [next(sub) for _ in range(2)]
        self.assertIn("resuming after seq {}".format(first), logs.output[0])
        self.assertEqual([e["seq"] for e in resumed], later[1:], "what matched while it was away, once")
        self.assertEqual([e["event_type"] for e in resumed], ["task.started", "task.completed"])

    def test_a_bad_filter_or_token_is_an_error_that_names_it(self) -> None:
        server = self.start_server()
        with self.assertRaises(SubscribeError) as refused:
            self.follow(server, types=["Not A Type"])
        self.assertEqual(refused.exception.code, "bad_request")
        self.assertIn("types", refused.exception.message)
        with self.assertRaises(SubscribeError) as refused:
            Subscription(server.url, "not-a-token", read_timeout=WAIT)
        self.assertEqual(refused.exception.code, "unauthorized")
        with self.assertRaises(ValueError):
            Subscription("ftp://example.org")


if __name__ == "__main__":
    unittest.main()
