"""The on-disk spool: events kept while the server cannot take them.

Owns a directory of JSON-lines segment files, oldest first, capped in total bytes:
when an append would pass the cap, whole oldest segments are dropped and counted.
It does not talk to the server; the client drains it segment by segment and removes a
segment only once every event in it was acknowledged (re-sending part of one is
harmless, because every event carries its id).

Several processes may share one spool root (every agent of a swarm using the
defaults). Each client writes only to its own subdirectory, which it holds an
exclusive ``flock`` on; a client that finds a sibling whose lock is free (its process
ended, or its client was closed) adopts that sibling's segments, so events spooled
by a process that has since exited are delivered by the next one. Without ``fcntl``
(Windows) there is no adoption: each client drains only its own spool.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from pathlib import Path
from typing import List, Optional, Tuple

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("swarmfeed")

_LOCK = ".lock"
_SUFFIX = ".jsonl"


class Spool:
    """A bounded, multi-segment JSON-lines spool owned by one client.

    Every method is thread-safe; none holds the internal lock for longer than one
    small file operation, so a caller that spills into the spool is not held up.
    """

    def __init__(self, root: Path, max_bytes: int, segment_bytes: Optional[int] = None) -> None:
        if max_bytes <= 0:
            raise ValueError("spool max_bytes must be positive")
        self.root = Path(root)
        self.max_bytes = max_bytes
        # Eight segments to the cap: dropping the oldest loses an eighth at most.
        self.segment_bytes = segment_bytes or max(4096, max_bytes // 8)
        self.dropped = 0
        self._mutex = threading.Lock()
        self._counter = 0
        # Oldest first: (path, bytes, lines).
        self._segments: List[List] = []
        self._current = None  # the open file of the newest segment, if appendable
        self._closed = False
        self.root.mkdir(parents=True, exist_ok=True)
        self.dir = self.root / "{}-{}".format(os.getpid(), uuid.uuid4().hex[:8])
        self.dir.mkdir()
        self._lock_file = open(self.dir / _LOCK, "w")
        if fcntl is not None:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)

    # -- size ---------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Events waiting in the spool."""
        with self._mutex:
            return sum(s[2] for s in self._segments)

    @property
    def size(self) -> int:
        """Bytes the spool holds."""
        with self._mutex:
            return sum(s[1] for s in self._segments)

    # -- writing ------------------------------------------------------------------

    def append(self, lines: List[str]) -> None:
        """Appends events (compact JSON, one per item), dropping the oldest segments
        when the cap would be passed. An event larger than the whole cap is dropped."""
        if not lines:
            return
        with self._mutex:
            dropped = 0
            for line in lines:
                data = (line + "\n").encode("utf-8")
                if len(data) > self.max_bytes:
                    dropped += 1
                    continue
                while self._segments and self._total() + len(data) > self.max_bytes:
                    dropped += self._drop_oldest()
                if self._current is None or self._segments[-1][1] >= self.segment_bytes:
                    self._open_segment()
                self._current.write(data)
                self._segments[-1][1] += len(data)
                self._segments[-1][2] += 1
            if self._current is not None:
                self._current.flush()
                if self._closed:
                    # A late append (a sender that outlived close) keeps no file open.
                    self._close_current()
            self._note_dropped(dropped)

    def _total(self) -> int:
        return sum(s[1] for s in self._segments)

    def _open_segment(self) -> None:
        self._close_current()
        self._counter += 1
        name = "{:020d}-{:06d}{}".format(time.time_ns(), self._counter, _SUFFIX)
        path = self.dir / name
        self._current = open(path, "ab")
        self._segments.append([path, 0, 0])

    def _close_current(self) -> None:
        if self._current is not None:
            self._current.close()
            self._current = None

    def _drop_oldest(self) -> int:
        path, _, lines = self._segments.pop(0)
        if not self._segments:
            self._close_current()
        _unlink(path)
        return lines

    def _note_dropped(self, count: int) -> None:
        if count:
            self.dropped += count
            log.warning(
                "swarmfeed spool is full (%d bytes): dropped the %d oldest events (%d dropped in all)",
                self.max_bytes,
                count,
                self.dropped,
            )

    # -- draining -----------------------------------------------------------------

    def oldest(self) -> Optional[Tuple[Path, List[str]]]:
        """The oldest segment and its events, or None. The segment is sealed first, so
        nothing is appended to it while it is being sent. Lines that are not JSON (a
        write cut short by a crash) are dropped and counted."""
        with self._mutex:
            if not self._segments:
                return None
            path = self._segments[0][0]
            if len(self._segments) == 1:
                self._close_current()
            try:
                raw = path.read_bytes()
            except FileNotFoundError:
                self._segments.pop(0)
                return None
            lines, bad = [], 0
            for line in raw.decode("utf-8", errors="replace").splitlines():
                if not line.strip():
                    continue
                try:
                    json.loads(line)
                except ValueError:
                    bad += 1
                    continue
                lines.append(line)
            self._segments[0][2] = len(lines)
            self._note_dropped(bad)
            return path, lines

    def remove(self, path: Path) -> None:
        """Removes a segment whose events were all delivered."""
        with self._mutex:
            for i, seg in enumerate(self._segments):
                if seg[0] == path:
                    if i == len(self._segments) - 1:
                        self._close_current()
                    del self._segments[i]
                    break
            _unlink(path)

    # -- other processes' spools --------------------------------------------------

    def adopt(self) -> int:
        """Takes over the segments of sibling spools whose owner is gone; returns how
        many events were adopted."""
        if fcntl is None:
            return 0
        adopted = 0
        try:
            siblings = [p for p in self.root.iterdir() if p.is_dir() and p != self.dir]
        except OSError:
            return 0
        for sibling in siblings:
            try:
                lock = open(sibling / _LOCK, "r+")
            except OSError:
                continue  # being created or removed right now; look again later
            try:
                try:
                    fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # its owner is alive
                for segment in sorted(sibling.glob("*" + _SUFFIX)):
                    adopted += self._adopt_segment(segment)
                _unlink(sibling / _LOCK)
                try:
                    sibling.rmdir()
                except OSError:
                    pass
            finally:
                lock.close()
        return adopted

    def _adopt_segment(self, segment: Path) -> int:
        target = self.dir / segment.name
        try:
            os.rename(segment, target)
        except OSError:
            return 0
        data = target.read_bytes()
        lines = data.count(b"\n")
        with self._mutex:
            # Sealing the open segment lets the list stay sorted by creation time
            # (which names begin with) while appends still go to the newest segment.
            self._close_current()
            self._segments.append([target, len(data), lines])
            self._segments.sort(key=lambda s: s[0].name)
            dropped = 0
            while self._segments and self._total() > self.max_bytes:
                dropped += self._drop_oldest()
            self._note_dropped(dropped)
        return lines

    # -- end ----------------------------------------------------------------------

    def close(self) -> None:
        """Closes files and releases the lock; an empty spool directory is removed,
        a non-empty one stays for the next client to adopt."""
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            self._close_current()
            empty = not self._segments
            if empty:
                _unlink(self.dir / _LOCK)
            self._lock_file.close()
            if empty:
                try:
                    self.dir.rmdir()
                except OSError:
                    pass


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
