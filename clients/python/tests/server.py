"""A real swarmfeed server for the tests: the binary, a temporary data directory, a port.

The binary is ``$SWARMFEED_BIN``, else ``$CARGO_TARGET_DIR/debug/swarmfeed``, else the
repository's ``target/debug/swarmfeed`` (scripts/test builds it first).
"""

from __future__ import annotations

import json
import os
import queue
import socket
import ssl
import subprocess
import threading
import urllib.request
from pathlib import Path
from typing import List, Optional, Tuple

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
    comes from 127.0.0.1). With ``tls`` (a certificate and key file) it serves https,
    and ``url`` names it ``localhost`` as the test certificates do."""

    def __init__(self, data_dir: Path, port: int = 0, tls: Optional[Tuple[Path, Path]] = None) -> None:
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
        if tls is not None:
            args += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
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
        if tls is not None:
            self.url = "https://localhost:" + addr.rsplit(":", 1)[1]
        self.token = (self.data_dir / "admin.token").read_text().strip()
        #: How the tests' own requests trust the server (its CA, when serving https).
        self.context: Optional[ssl.SSLContext] = (
            ssl.create_default_context(cafile=str(Path(tls[0]).parent / "ca.pem")) if tls is not None else None
        )

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
            with urllib.request.urlopen(request, timeout=WAIT, context=self.context) as response:
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


class TestCa:
    """A certificate authority of the test's own, made with the ``openssl`` command in
    ``directory``: ``ca.pem``, and a server certificate for localhost and 127.0.0.1
    signed by it (``server.pem``, ``server.key``). No key is committed."""

    def __init__(self, directory: Path, name: str = "swarmfeed test CA") -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca = self.dir / "ca.pem"
        self.cert = self.dir / "server.pem"
        self.key = self.dir / "server.key"
        ca_key = self.dir / "ca.key"
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"]
        _openssl(["req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(self.ca), "-subj", "/CN=" + name])
        _openssl(
            [
                "req", "-x509", *ec, "-keyout", str(self.key), "-out", str(self.cert),
                "-subj", "/CN=swarmfeed test server", "-CA", str(self.ca), "-CAkey", str(ca_key),
                "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                "-addext", "basicConstraints=critical,CA:FALSE",
            ]
        )  # fmt: skip


def _openssl(args: List[str]) -> None:
    done = subprocess.run(["openssl", *args], capture_output=True, timeout=WAIT)
    if done.returncode != 0:
        raise RuntimeError("openssl {} failed: {}".format(args[0], done.stderr.decode(errors="replace")))
