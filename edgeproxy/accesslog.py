"""The access log: one JSON line per request, to stdout or a file (``node.access_log``).

Contract:
- Off by default: formatting and buffering a line costs about 2 us, as much as answering a
  RAM hit in ``Node.try_fast`` (~1.8 us, measured in-process), so a logging node serves fewer
  hits per core. When off, the hit path pays one attribute check (``Node.access_log is None``).
- A line: ``{"time", "node", "method", "path", "status", "bytes", "cache", "upstream_ms",
  "duration_ms"}``. ``path`` is the request path without its query (queries may carry
  presigned signatures); ``cache`` is the request's :class:`~edgeproxy.proxy.handler.Phase`
  value (null when the request was refused before the cache, e.g. 405); ``bytes`` counts body
  bytes sent; ``upstream_ms`` is the time to the upstream's response head (null when no
  upstream request was made); ``duration_ms`` runs from the parsed request head to the end of
  the answer.
- Lines are buffered and written with one ``write`` per flush (at 64 KiB, every second, and on
  close/reopen) to a file opened with O_APPEND, so lines of several worker processes appending
  to one file do not interleave. Writes are synchronous (a page-cache write, as nginx's).
- :meth:`AccessLog.reopen` (SIGUSR1) closes and reopens the file: rotate by renaming the file,
  then sending SIGUSR1 (as nginx's USR1).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgeproxy.proxy.server import Request, ResponseWriter

FLUSH_BYTES = 64 * 1024
FLUSH_INTERVAL = 1.0


_json_string = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]


class Pending:
    """What the pipeline learns about one request while it runs (phase, upstream time)."""

    __slots__ = ("phase", "upstream")

    def __init__(self) -> None:
        self.phase: str | None = None
        self.upstream: float | None = None


# the request being handled in this task (each slow-path request runs in its own task)
CURRENT: ContextVar[Pending | None] = ContextVar("edgeproxy_access_pending", default=None)


def note_phase(phase: str) -> None:
    pending = CURRENT.get()
    if pending is not None:
        pending.phase = phase


def note_upstream(seconds: float) -> None:
    pending = CURRENT.get()
    if pending is not None:
        pending.upstream = seconds


class AccessLog:
    def __init__(self, target: str, node: str) -> None:
        """``target``: "stdout" or a file path (appended to, created if missing)."""
        self.target = target
        self.node = node
        self._node_json = json.dumps(node)
        self._fd: int | None = None
        self._buffer: list[str] = []
        self._buffered = 0
        self._timer: asyncio.TimerHandle | None = None
        self._second = -1
        self._second_text = ""
        self.lines = 0
        self.open()

    # ---- file handling ---------------------------------------------------------------------

    def open(self) -> None:
        if self.target != "stdout" and self._fd is None:
            self._fd = os.open(self.target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def reopen(self) -> None:
        """After a rotation (SIGUSR1): flush to the old file, then open the path anew."""
        self.flush()
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.close(fd)
        self.open()

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._buffer:
            return
        data = "".join(self._buffer)
        self._buffer = []
        self._buffered = 0
        if self._fd is None:
            sys.stdout.write(data)
            sys.stdout.flush()
            return
        view = memoryview(data.encode())
        with contextlib.suppress(OSError):  # a full disk must not fail requests
            while view:
                view = view[os.write(self._fd, view) :]

    def close(self) -> None:
        self.flush()
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.close(fd)

    # ---- records ---------------------------------------------------------------------------

    def begin(self) -> tuple[Pending, object]:
        pending = Pending()
        return pending, CURRENT.set(pending)

    def end(
        self, begun: tuple[Pending, object], req: Request, resp: ResponseWriter, failed: bool
    ) -> None:
        pending, token = begun
        CURRENT.reset(token)  # type: ignore[arg-type]
        status = resp.status or (500 if failed else 0)
        self.write(req, status, resp.bytes_sent, pending.phase, pending.upstream, time.monotonic())

    def write(
        self,
        req: Request,
        status: int,
        nbytes: int,
        phase: str | None,
        upstream: float | None,
        mono_now: float,
    ) -> None:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        stamp = f"{self._second_text}.{int((now - second) * 1000):03d}"
        # formatted by hand (a third of json.dumps's cost); only the path needs escaping, the
        # method is an HTTP token and the node name is validated by the config
        up = "null" if upstream is None else f"{upstream * 1000:.3f}"
        duration = max(0.0, mono_now - req.received_at) * 1000
        line = (
            f'{{"time":"{stamp}Z","node":{self._node_json},"method":"{req.method}",'
            f'"path":{_json_string(req.target.partition("?")[0])},"status":{status},'
            f'"bytes":{nbytes},"cache":{"null" if phase is None else chr(34) + phase + chr(34)},'
            f'"upstream_ms":{up},"duration_ms":{duration:.3f}}}'
        )
        self._buffer.append(line + "\n")
        self._buffered += len(line) + 1
        self.lines += 1
        if self._buffered >= FLUSH_BYTES:
            self.flush()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._timer = loop.call_later(FLUSH_INTERVAL, self.flush)
