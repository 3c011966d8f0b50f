"""The Python producer client against the real swarmfeed binary."""

from __future__ import annotations

import enum
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path
from typing import List

from swarmfeed import Client

from .server import WAIT, Server, free_port

_PACKAGE_ROOT = Path(__file__).resolve().parents[1]

# The client warns through logging (server down, spool full); the tests that expect a
# warning capture it with assertLogs, the rest keep the output quiet.
logging.getLogger("swarmfeed").addHandler(logging.NullHandler())


class EventType(str, enum.Enum):
    """Like the Timmy Time dashboard's enum, which callers pass to log_event."""

    BID_SUBMITTED = "bid.submitted"


def spooled_lines(root: Path) -> List[dict]:
    """Every event in the spool files under ``root``."""
    return [json.loads(line) for path in sorted(root.rglob("*.jsonl")) for line in path.read_text().splitlines() if line]


def spool_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*.jsonl"))


class ClientTest(unittest.TestCase):
    def setUp(self) -> None:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.tmp = Path(tmp.name)
        self.spool_root = self.tmp / "spool"
        self.data_dir = self.tmp / "data"

    def start_server(self, port: int = 0) -> Server:
        server = Server(self.data_dir, port)
        self.addCleanup(server.stop)
        return server

    def client(self, url: str, token: str, **kwargs) -> Client:
        client = Client(url, token, spool_dir=self.spool_root, **kwargs)

        def close() -> None:
            client.close(timeout=1.0)
            # A sender stuck in a request must not write into a deleted directory.
            client._thread.join(WAIT)

        self.addCleanup(close)
        return client

    def test_events_arrive_with_the_right_fields(self) -> None:
        server = self.start_server()
        client = self.client(server.url, server.token)
        created = client.log_event("task.created", "coordinator", task_id="t1", data={"description": "sort the logs"})
        bid = client.log_event(EventType.BID_SUBMITTED, "forge", task_id="t1", agent_id="forge", data={"bid_sats": 21})
        info = client.log_event("system.info", "cli")
        self.assertTrue(client.flush(WAIT), client.stats())

        stored = server.events()
        self.assertEqual([e["id"] for e in stored], [created.id, bid.id, info.id])
        self.assertEqual(stored[0]["event_type"], "task.created")
        self.assertEqual(stored[0]["source"], "coordinator")
        self.assertEqual(stored[0]["task_id"], "t1")
        self.assertIsNone(stored[0]["agent_id"])
        self.assertEqual(stored[0]["data"], {"description": "sort the logs"})
        self.assertEqual(stored[1]["event_type"], "bid.submitted", "a str enum is sent as its value")
        self.assertEqual(stored[1]["agent_id"], "forge")
        self.assertEqual(stored[1]["data"], {"bid_sats": 21})
        self.assertEqual(stored[2]["data"], {})
        # The returned entry is the dashboard's: data as JSON text, None when empty.
        self.assertEqual(json.loads(created.data), {"description": "sort the logs"})
        self.assertIsNone(info.data)
        self.assertIs(bid.event_type, EventType.BID_SUBMITTED)
        self.assertEqual(client.stats()["sent"], 3)

    def test_the_module_level_log_event_is_configured_from_the_environment_and_flushed_at_exit(self) -> None:
        server = self.start_server()
        env = dict(
            os.environ,
            SWARMFEED_URL=server.url,
            SWARMFEED_TOKEN=server.token,
            SWARMFEED_SPOOL_DIR=str(self.spool_root),
            PYTHONPATH=str(_PACKAGE_ROOT),
        )
        script = (
            "from swarmfeed import log_event\n"
            "log_event('agent.joined', 'echo', agent_id='echo', data={'name': 'Echo'})\n"
        )
        subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=WAIT)
        stored = server.events()
        self.assertEqual(len(stored), 1, "the exit handler delivered it")
        self.assertEqual((stored[0]["event_type"], stored[0]["agent_id"]), ("agent.joined", "echo"))

    def test_a_server_that_is_down_then_back_gets_every_event_exactly_once(self) -> None:
        server = self.start_server()
        port, token = int(server.addr.rsplit(":", 1)[1]), server.token
        client = self.client(server.url, token, batch_size=50)
        logged = [client.log_event("tool.called", "agent", data={"n": n}).id for n in range(100)]
        self.assertTrue(client.flush(WAIT))
        server.stop()

        slowest = 0.0
        with self.assertLogs("swarmfeed", "WARNING") as logs:
            for n in range(100, 400):
                start = time.monotonic()
                logged.append(client.log_event("tool.called", "agent", data={"n": n}).id)
                slowest = max(slowest, time.monotonic() - start)
            self.assertFalse(client.flush(1.0), "nothing can be delivered while the server is down")
        self.assertIn("cannot take events", logs.output[0])
        self.assertLess(slowest, 0.25, "log_event does not wait for a server that is down")
        self.assertGreater(client.stats()["in_spool"], 0)

        server = self.start_server(port)
        self.assertTrue(client.flush(WAIT), client.stats())
        stored = server.events()
        self.assertEqual([e["id"] for e in stored], logged, "each event once, in the order logged")
        self.assertEqual([e["data"]["n"] for e in stored], list(range(400)))
        self.assertEqual(client.stats()["in_spool"], 0)

    def test_events_spooled_by_a_process_that_exited_are_delivered_once_by_the_next(self) -> None:
        # A first start makes the admin token; then the server is down.
        server = self.start_server()
        port, url, token = int(server.addr.rsplit(":", 1)[1]), server.url, server.token
        server.stop()
        env = dict(
            os.environ,
            SWARMFEED_URL=url,
            SWARMFEED_TOKEN=token,
            SWARMFEED_SPOOL_DIR=str(self.spool_root),
            PYTHONPATH=str(_PACKAGE_ROOT),
        )
        script = (
            "import swarmfeed\n"
            "for n in range(200):\n"
            "    swarmfeed.log_event('task.created', 'old-process', data={'n': n})\n"
        )
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=WAIT, capture_output=True)
        self.assertLess(time.monotonic() - started, WAIT / 2, "exit does not wait for a server that is down")
        self.assertIn(b"cannot take events", done.stderr, "the process said where its events went")
        spooled = spooled_lines(self.spool_root)
        self.assertEqual(len(spooled), 200)
        # What a process would leave behind had it crashed after sending its spool
        # but before deleting it: the same events, a second time.
        leftover = self.tmp / "leftover"
        shutil.copytree(self.spool_root, leftover)

        server = self.start_server(port)
        client = self.client(url, token)
        self.assertTrue(client.flush(WAIT), client.stats())
        self.assertEqual(len(server.events()), 200)

        # <root>/<one folder per server>/<one folder per client>
        for own in [p for p in leftover.glob("*/*") if p.is_dir()]:
            shutil.move(str(own), str(self.spool_root / own.parent.name / (own.name + "-again")))
        again = Client(url, token, spool_dir=self.spool_root)
        self.assertTrue(again.flush(WAIT), again.stats())
        again.close()
        stored = server.events()
        self.assertEqual(len(stored), 200, "sending the same events again stored nothing")
        self.assertEqual(sorted(e["id"] for e in stored), sorted(e["id"] for e in spooled))
        self.assertEqual(again.stats()["duplicates"], 200)

    def test_the_caller_is_not_blocked_by_a_server_that_never_answers(self) -> None:
        # Accepts connections (the kernel does) and never answers a request.
        hung = socket.socket()
        hung.bind(("127.0.0.1", 0))
        hung.listen(64)
        self.addCleanup(hung.close)
        url = "http://127.0.0.1:{}".format(hung.getsockname()[1])
        client = self.client(url, "token", timeout=2.0, queue_size=50, batch_size=10)
        logged = set()
        slowest = 0.0
        for n in range(1000):
            start = time.monotonic()
            logged.add(client.log_event("tool.called", "agent", data={"n": n}).id)
            slowest = max(slowest, time.monotonic() - start)
        self.assertLess(slowest, 0.25, "a full queue spills to the spool instead of waiting")
        start = time.monotonic()
        client.close(timeout=0.5)
        self.assertLess(time.monotonic() - start, 2.0, "close is bounded even with a request hanging")
        self.assertEqual({e["id"] for e in spooled_lines(self.spool_root)}, logged, "nothing was lost")

    def test_the_spool_stays_within_its_cap_dropping_the_oldest(self) -> None:
        server = self.start_server()
        port, url, token = int(server.addr.rsplit(":", 1)[1]), server.url, server.token
        server.stop()
        cap = 64 * 1024
        client = self.client(url, token, spool_max_bytes=cap, queue_size=100)
        pad = "x" * 200
        with self.assertLogs("swarmfeed", "WARNING") as logs:
            logged = [client.log_event("tool.called", "agent", data={"n": n, "pad": pad}).id for n in range(3000)]
            self.assertFalse(client.flush(1.0))
        self.assertTrue(any("spool is full" in line for line in logs.output), logs.output)
        self.assertLessEqual(spool_bytes(self.spool_root), cap)
        stats = client.stats()
        self.assertGreater(stats["dropped"], 0)
        self.assertEqual(stats["dropped"] + stats["in_spool"], 3000, stats)

        server = self.start_server(port)
        self.assertTrue(client.flush(WAIT), client.stats())
        stored = [e["id"] for e in server.events()]
        self.assertEqual(len(stored), 3000 - stats["dropped"])
        self.assertEqual(stored, logged[-len(stored) :], "the newest events were kept, in order")
        self.assertIn(logged[-1], stored)

    def test_an_event_the_server_refuses_is_dropped_and_the_rest_of_its_batch_stored(self) -> None:
        server = self.start_server()
        client = self.client(server.url, server.token)
        with self.assertLogs("swarmfeed", "WARNING"):
            for n in range(5):
                # Over the server's 16 KiB limit for data; the client cannot know it.
                data = {"n": n, "pad": "x" * (20_000 if n == 2 else 10)}
                client.log_event("tool.called", "agent", data=data)
            self.assertTrue(client.flush(WAIT))
        self.assertEqual([e["data"]["n"] for e in server.events()], [0, 1, 3, 4])
        self.assertEqual(client.stats()["rejected"], 1)

    def test_malformed_events_are_refused_in_the_callers_thread(self) -> None:
        client = self.client("http://127.0.0.1:{}".format(free_port()), "token")
        with self.assertRaisesRegex(ValueError, "event_type"):
            client.log_event("Task Created", "s")
        with self.assertRaisesRegex(ValueError, "source"):
            client.log_event("task.created", "")
        with self.assertRaisesRegex(TypeError, "data must be a dict"):
            client.log_event("task.created", "s", data=[1, 2])  # type: ignore[arg-type]
        with self.assertRaises(TypeError):
            client.log_event("task.created", "s", data={"when": object()})
        self.assertEqual(client.stats()["logged"], 0)


if __name__ == "__main__":
    unittest.main()
