"""A real swarmfeed server for the tests: the binary, a temporary data directory, a port.

The binary is ``$SWARMFEED_BIN``, else ``$CARGO_TARGET_DIR/debug/swarmfeed``, else the
repository's ``target/debug/swarmfeed`` (scripts/test builds it first).
"""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import threading
import urllib.request
from pathlib import Path
from typing import List, Optional

#: How long any single wait in a test may take before it counts as a failure.
WAIT = 20.0

_REPO = Path(__file__).resolve().parents[3]


def binary() -> Path:
    explicit = os.environ.get("SWARMFEED_BIN")
    if explicit:
        return Path(explicit)
    target = Path(os.environ.get("CARGO_TARGET_DIR") or _REPO / "target")
    return target / "debug" / "swarmfeed"


def free_port() -> int:
    """A port nothing listens on now (for a server that starts later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``swarmfeed serve`` on loopback with the per-IP limits off (every test client
    comes from 127.0.0.1)."""

    def __init__(self, data_dir: Path, port: int = 0) -> None:
        self.data_dir = Path(data_dir)
        args = [
            str(binary()),
            "--log-format",
            "json",
            "serve",
            "--bind",
            "127.0.0.1:{}".format(port),
            "--data-dir",
            str(self.data_dir),
            "--max-conns-per-ip",
            "0",
            "--requests-per-ip-per-sec",
            "0",
            "--handshakes-per-ip-per-sec",
            "0",
            "--ingest-rate-per-token",
            "0",
        ]
        self._process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        ready: "queue.Queue[Optional[str]]" = queue.Queue()
        # Reads the log until the end, so the server never blocks on a full pipe.
        self._reader = threading.Thread(target=self._read_log, args=(ready,), daemon=True)
        self._reader.start()
        try:
            addr = ready.get(timeout=WAIT)
        except queue.Empty:
            self.stop()
            raise RuntimeError("swarmfeed did not say it was ready within {} s".format(WAIT))
        if addr is None:
            raise RuntimeError("swarmfeed exited before it was ready (is {} built?)".format(binary()))
        self.addr = addr
        self.url = "http://" + addr
        self.token = (self.data_dir / "admin.token").read_text().strip()

    def _read_log(self, ready: "queue.Queue[Optional[str]]") -> None:
        told = False
        assert self._process.stderr is not None
        for raw in self._process.stderr:
            if told:
                continue
            try:
                fields = json.loads(raw).get("fields", {})
            except ValueError:
                continue
            if fields.get("message") == "swarmfeed ready":
                ready.put(fields["addr"])
                told = True
        if not told:
            ready.put(None)

    def events(self) -> List[dict]:
        """Every stored event, in seq order."""
        out: List[dict] = []
        after = 0
        while True:
            request = urllib.request.Request(
                "{}/api/events?after={}&limit=1000".format(self.url, after),
                headers={"Authorization": "Bearer " + self.token},
            )
            with urllib.request.urlopen(request, timeout=WAIT) as response:
                page = json.loads(response.read())
            out.extend(page["events"])
            if page["next"] is None:
                return out
            after = page["next"]

    def stop(self) -> None:
        """SIGTERM, and waits for the exit."""
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=WAIT)
        # The reader ends at the end of the log; only then is the pipe closed under it.
        self._reader.join(timeout=WAIT)
        if self._process.stderr is not None and not self._reader.is_alive():
            self._process.stderr.close()
