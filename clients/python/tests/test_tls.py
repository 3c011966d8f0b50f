"""The Python client over https, against the real swarmfeed binary serving TLS with a
certificate from a CA made for the test."""

from __future__ import annotations

import logging
import os
import tempfile
import unittest
from pathlib import Path
from unittest import mock

from swarmfeed import Client, Subscription, TlsError

from .server import WAIT, Server, TestCa

logging.getLogger("swarmfeed").addHandler(logging.NullHandler())


class TlsTest(unittest.TestCase):
    def setUp(self) -> None:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.tmp = Path(tmp.name)
        self.ca = TestCa(self.tmp / "pki")
        self.other = TestCa(self.tmp / "other", name="some other CA")
        self.server = Server(self.tmp / "data", tls=(self.ca.cert, self.ca.key))
        self.addCleanup(self.server.stop)

    def client(self, **kwargs: object) -> Client:
        client = Client(self.server.url, self.server.token, spool_dir=self.tmp / "spool", **kwargs)  # type: ignore[arg-type]
        self.addCleanup(client.close, 1.0)
        return client

    def test_events_go_over_https_trusting_the_ca_file_and_follow_over_wss(self) -> None:
        with Subscription(self.server.url, self.server.token, since=0, ca_file=str(self.ca.ca)) as sub:
            client = self.client(ca_file=str(self.ca.ca))
            logged = [client.log_event("tool.called", "over-https", data={"n": n}).id for n in range(3)]
            self.assertTrue(client.flush(WAIT))
            followed = [next(sub)["id"] for _ in logged]
        self.assertEqual(followed, logged)
        self.assertEqual([e["id"] for e in self.server.events()], logged, "stored once each, in order")

    def test_the_environment_names_the_ca_file(self) -> None:
        with mock.patch.dict(os.environ, {"SWARMFEED_CA_FILE": str(self.ca.ca)}):
            client = self.client()
            entry = client.log_event("agent.joined", "env-ca", agent_id="echo")
            self.assertTrue(client.flush(WAIT))
            with Subscription(self.server.url, self.server.token, since=0, reconnect=False) as sub:
                self.assertEqual(next(sub)["id"], entry.id)

    def test_a_certificate_from_another_ca_is_refused_and_said_so_not_retried(self) -> None:
        with self.assertRaises(TlsError) as refused:
            Subscription(self.server.url, self.server.token, ca_file=str(self.other.ca))
        self.assertIn("not trusted", str(refused.exception))
        self.assertIn("SWARMFEED_CA_FILE", str(refused.exception))
        # Nor do the system's roots know the test CA.
        with self.assertRaises(TlsError):
            Subscription(self.server.url, self.server.token)

        client = self.client(ca_file=str(self.other.ca))
        with self.assertLogs("swarmfeed", level="WARNING") as said:
            client.log_event("tool.called", "untrusted")
            self.assertFalse(client.flush(2.0), "nothing is delivered to a server that is not trusted")
        self.assertTrue(any("certificate" in line and "ca_file" in line for line in said.output), said.output)
        self.assertEqual(self.server.events(), [])

    def test_a_ca_file_that_cannot_be_used_is_named(self) -> None:
        missing = self.tmp / "nowhere.pem"
        with self.assertRaises(TlsError) as refused:
            Client(self.server.url, self.server.token, spool_dir=self.tmp / "spool", ca_file=str(missing))
        self.assertIn(str(missing), str(refused.exception))
        junk = self.tmp / "junk.pem"
        junk.write_text("not a certificate")
        with self.assertRaises(TlsError) as refused:
            Subscription(self.server.url, self.server.token, ca_file=str(junk))
        self.assertIn(str(junk), str(refused.exception))


if __name__ == "__main__":
    unittest.main()
