"""The asyncio API against the real swarmfeed binary: ``async with`` a client,
``await log_event``, and ``async for`` over a subscription that resumes exactly
across a server restart."""

from __future__ import annotations

import asyncio
import logging
import tempfile
import unittest
from pathlib import Path
from typing import Any, Dict, List

from swarmfeed import AsyncClient, AsyncSubscription, SubscribeError

from .server import WAIT, Server, TestCa, free_port

logging.getLogger("swarmfeed").addHandler(logging.NullHandler())


async def take(sub: AsyncSubscription, n: int) -> List[Dict[str, Any]]:
    """The next ``n`` events of ``sub``, within the tests' wait."""

    async def collect() -> List[Dict[str, Any]]:
        out = []
        async for event in sub:
            out.append(event)
            if len(out) == n:
                break
        return out

    return await asyncio.wait_for(collect(), WAIT)


class AsyncTest(unittest.IsolatedAsyncioTestCase):
    def setUp(self) -> None:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.tmp = Path(tmp.name)

    async def test_logged_events_are_stored_once_each_in_order(self) -> None:
        server = Server(self.tmp / "data")
        self.addCleanup(server.stop)
        async with AsyncClient(server.url, server.token, spool_dir=self.tmp / "spool") as client:
            entries = [await client.log_event("tool.called", "async", data={"n": n}) for n in range(250)]
            self.assertTrue(await client.flush(WAIT))
            self.assertEqual(client.stats()["sent"], 250)
        self.assertEqual([e["id"] for e in server.events()], [e.id for e in entries])
        with self.assertRaises(ValueError):
            async with AsyncClient(server.url, server.token, spool_dir=self.tmp / "spool") as client:
                await client.log_event("Not A Type", "async")

    async def test_a_subscription_resumes_exactly_across_a_server_restart(self) -> None:
        port = free_port()
        server = Server(self.tmp / "data", port=port)
        async with AsyncClient(server.url, server.token, spool_dir=self.tmp / "spool") as client:
            sub = client.subscribe(types=["tool.*"], since=0)
            async with sub:
                for n in range(5):
                    await client.log_event("tool.called", "before", data={"n": n})
                first = await take(sub, 5)
                server.stop()
                server = Server(self.tmp / "data", port=port)
                self.addCleanup(server.stop)
                for n in range(5, 12):
                    await client.log_event("tool.called", "after", data={"n": n})
                await client.log_event("agent.joined", "after", agent_id="not-a-tool")
                rest = await take(sub, 7)
        seen = [e["seq"] for e in first + rest]
        self.assertEqual(seen, sorted(set(seen)), "no repeats, in order")
        self.assertEqual([e["data"]["n"] for e in first + rest], list(range(12)), "no gap across the restart")
        self.assertTrue(sub.batches >= 1, "batch frames asked for and unpacked")

    async def test_closing_ends_a_step_that_is_waiting_for_events(self) -> None:
        server = Server(self.tmp / "data")
        self.addCleanup(server.stop)
        sub = AsyncSubscription(server.url, server.token, types=["task.*"])
        await sub.open()
        waiting = asyncio.ensure_future(sub.__anext__())
        await asyncio.sleep(0.3)
        self.assertFalse(waiting.done(), "no event has come")
        started = asyncio.get_running_loop().time()
        await asyncio.wait_for(sub.close(), WAIT)
        with self.assertRaises(StopAsyncIteration):
            await asyncio.wait_for(waiting, WAIT)
        self.assertLess(asyncio.get_running_loop().time() - started, 5.0, "not left to the read timeout")

    async def test_a_refused_filter_raises_and_ends(self) -> None:
        server = Server(self.tmp / "data")
        self.addCleanup(server.stop)
        with self.assertRaises(SubscribeError) as refused:
            async with AsyncSubscription(server.url, server.token, types=["no such type!"]):
                pass
        self.assertIn("types", str(refused.exception))

    async def test_over_https_with_the_ca_file(self) -> None:
        ca = TestCa(self.tmp / "pki")
        server = Server(self.tmp / "data", tls=(ca.cert, ca.key))
        self.addCleanup(server.stop)
        client = AsyncClient(server.url, server.token, spool_dir=self.tmp / "spool", ca_file=str(ca.ca))
        async with client, client.subscribe(since=0) as sub:
            entry = await client.log_event("task.created", "async-tls", task_id="t1")
            self.assertTrue(await client.flush(WAIT))
            (event,) = await take(sub, 1)
        self.assertEqual(event["id"], entry.id)


if __name__ == "__main__":
    unittest.main()
