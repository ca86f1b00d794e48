"""The client-facing HTTP/1.1 server: a lean asyncio Protocol parsing with httptools (llhttp).

Contract:
- keep-alive (HTTP/1.1 default, HTTP/1.0 with ``Connection: keep-alive``), pipelined requests
  answered strictly in order, HEAD, request bodies streamed to the handler with back-pressure
  (reading pauses while the handler has not consumed ``BODY_BUFFER`` bytes), ``Expect:
  100-continue`` answered when the handler first reads the body;
- write back-pressure: ``pause_writing``/``resume_writing`` gate :meth:`HttpConnection.drain`;
- limits from the node config: URL length (414), header bytes and count (431), body size (413);
  a request the parser rejects (bad syntax, conflicting Content-Length/Transfer-Encoding, obsolete
  line folding, bad chunk sizes) gets 400 and the connection is closed; no traceback ever reaches
  a client;
- timeouts: header timeout from the first byte of a request to its last header, idle timeout
  between requests and while a client does not read; enforced by one sweep per second rather
  than a timer per request;
- at most ``max_connections`` open client connections per server (all its listeners, so per
  process): one more is closed (reset) right after accept, as nginx does beyond its
  ``worker_connections``, and counted in ``app.connections_refused``; for a TLS listener that
  is after the handshake (the protocol sees the connection only then);
- a server may listen on several sockets (:meth:`HttpServer.start` once per listener), TLS or
  plain; ``Request.tls`` tells which kind a request arrived on.

Hits are answered synchronously by ``app.try_fast(request, conn)`` when nothing is queued;
everything else runs as a task of ``app.handle(request, ResponseWriter)``, one at a time per
connection so answers keep their order.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import ssl as ssl_module
import time
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

import httptools
from multidict import CIMultiDict

from edgeproxy.http.dates import format_http_date

if TYPE_CHECKING:
    from edgeproxy.config import NodeConfig

log = logging.getLogger("edgeproxy.server")

BODY_BUFFER = 256 * 1024
REFUSAL_LOG_INTERVAL = 60.0
WRITE_VIEW_CHUNK = 1024 * 1024
# what send_file writes through the transport when the socket is full, to learn when it has
# room again (the rest of a body goes by sendfile)
SENDFILE_NUDGE = 16 * 1024
# sendfile(2) errors that say the file (its file system) or socket cannot be sent from: the
# process copies stored bodies from then on (logged once); any other error cuts the connection
SENDFILE_UNSUPPORTED = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP})
_sendfile_refused = False
# A head sent with MSG_MORE (Linux) waits in the socket for the body sendfile(2) sends right
# after it, so the two leave in full segments rather than a small one for the head first (nginx
# gets this from tcp_nopush, TCP_CORK); the receiver wakes once and reads fewer pieces. 0 (not
# used) where the platform has no such flag.
MSG_MORE: int = getattr(socket, "MSG_MORE", 0)
# answers with a body larger than this go with TCP_NOTSENT_LOWAT at the node's notsent_lowat
# (a body up to it fits the socket's buffers at once; see HttpConnection.pace)
PACED_BODY_MIN = 1024 * 1024
TCP_NOTSENT_LOWAT: int = getattr(socket, "TCP_NOTSENT_LOWAT", 0)


def _sendfile_unsupported(exc: OSError) -> None:
    global _sendfile_refused
    if not _sendfile_refused:
        _sendfile_refused = True
        log.warning("sendfile(2) refused (%s): stored bodies are copied instead", exc)


REASONS = {
    100: "Continue",
    200: "OK",
    203: "Non-Authoritative Information",
    204: "No Content",
    206: "Partial Content",
    301: "Moved Permanently",
    302: "Found",
    304: "Not Modified",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    408: "Request Timeout",
    411: "Length Required",
    412: "Precondition Failed",
    413: "Content Too Large",
    414: "URI Too Long",
    416: "Range Not Satisfiable",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
    508: "Loop Detected",
}

# responses that never carry content (RFC 9110 sec. 6.4.1)
NO_BODY_STATUSES = frozenset({204, 304})


class _Reject(Exception):
    """Raised inside a parser callback to refuse the request with ``status``."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class RequestBody:
    """The streamed body of one request, fed by the parser, read by the handler."""

    __slots__ = (
        "_chunks",
        "_conn",
        "_eof",
        "_size",
        "_waiter",
        "continue_sent",
        "expect_continue",
        "received",
    )

    def __init__(self, conn: HttpConnection, expect_continue: bool) -> None:
        self._conn = conn
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._eof = False
        self._waiter: asyncio.Future[None] | None = None
        self.expect_continue = expect_continue
        self.continue_sent = False
        self.received = 0

    @property
    def at_eof(self) -> bool:
        return self._eof and not self._chunks

    def feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        self.received += len(data)
        if self._size >= BODY_BUFFER:
            self._conn.pause_reading()
        self._wake()

    def feed_eof(self) -> None:
        self._eof = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def read(self) -> bytes:
        """Next chunk, or b"" at the end. Sends ``100 Continue`` on first use when asked."""
        if self.expect_continue and not self.continue_sent:
            self.continue_sent = True
            self._conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        while not self._chunks:
            if self._eof:
                return b""
            if self._conn.closed:
                raise ConnectionResetError("client closed while sending the body")
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
            self._waiter = None
        data = self._chunks.popleft()
        self._size -= len(data)
        if self._size < BODY_BUFFER:
            self._conn.resume_reading()
        return data

    async def iter_chunks(self):
        while True:
            chunk = await self.read()
            if not chunk:
                return
            yield chunk


class Request:
    """One parsed request. ``headers`` (a CIMultiDict) is built lazily for the slow path;
    ``hdict`` maps lower-case names to values (duplicates joined with ", ") for cheap lookups."""

    __slots__ = (
        "_headers",
        "body",
        "hdict",
        "keep_alive",
        "method",
        "raw_headers",
        "received_at",
        "target",
        "tls",
        "version",
    )

    def __init__(
        self,
        method: str,
        target: str,
        version: str,
        raw_headers: list[tuple[str, str]],
        hdict: dict[str, str],
        keep_alive: bool,
        body: RequestBody | None,
        received_at: float,
        tls: bool = False,
    ) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.raw_headers = raw_headers
        self.hdict = hdict
        self.keep_alive = keep_alive
        self.body = body
        self.received_at = received_at
        self.tls = tls  # arrived over TLS (the viewer protocol policy reads it)
        self._headers: CIMultiDict[str] | None = None

    @property
    def headers(self) -> CIMultiDict[str]:
        if self._headers is None:
            self._headers = CIMultiDict(self.raw_headers)
        return self._headers


class App(Protocol):
    """What the server needs from the node."""

    connections_refused: int  # connections closed at accept (max_connections)

    def try_fast(self, request: Request, conn: HttpConnection) -> bool: ...

    async def handle(self, request: Request, response: ResponseWriter) -> None: ...


class _ParseError:
    __slots__ = ("detail", "status")

    def __init__(self, status: int, detail: str) -> None:
        self.status = status
        self.detail = detail


class HttpConnection(asyncio.Protocol):
    """One client connection. See the module docstring for the contract."""

    def __init__(self, app: App, limits: NodeConfig, server: HttpServer, tls: bool = False) -> None:
        self.app = app
        self.limits = limits
        self.server = server
        self.tls = tls
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.queue: deque[Request | _ParseError] = deque()
        self.busy = False
        self.closed = False
        self.write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._parse_dead = False
        self.deadline = 0.0
        # the socket's descriptor for sendfile(2) of stored bodies: plain TCP only (-1: TLS,
        # or not known), see send_body; for bodies of at most sendfile_max bytes
        self.sendfile_fd = -1
        self.sendfile_max = limits.sendfile_max
        # a duplicate of the socket's descriptor to send heads with MSG_MORE (the transport's
        # socket object cannot send with flags): made when the first head goes before a
        # sendfile(2), closed with the connection; see send_body
        self._head_sock: socket.socket | None = None
        self._head_sock_tried = False
        self._pending: list[bytes | memoryview] | None = None  # write_soon's, not yet written
        self.paced = False  # TCP_NOTSENT_LOWAT set for a large body (see pace)
        # state of the message being parsed
        self._url = b""
        self._raw: list[tuple[str, str]] = []
        self._hdict: dict[str, str] = {}
        self._header_bytes = 0
        self._current: Request | None = None
        self.in_header_section = False

    # ---- transport events ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        if len(self.server.connections) >= self.limits.max_connections:
            self.closed = True
            self._parse_dead = True
            self.server.refuse(transport)
            return
        self.server.connections.add(self)
        self.deadline = self.loop.time() + self.limits.header_timeout
        if (
            self.limits.sendfile
            and not _sendfile_refused
            and not self.tls
            and transport.get_extra_info("sslcontext") is None
        ):
            sock = transport.get_extra_info("socket")
            if sock is not None:
                self.sendfile_fd = sock.fileno()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        head_sock, self._head_sock = self._head_sock, None
        if head_sock is not None:
            head_sock.close()  # else it would hold the socket open once the transport's goes
        if self._current is not None and self._current.body is not None:
            self._current.body._wake()
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_exception(ConnectionResetError("client went away"))

    def eof_received(self) -> bool | None:
        """The client ended its side (a half-close, TLS close_notify): answers held by
        :meth:`write_soon` go to the transport now, before it starts closing (a closing TLS
        transport drops later writes). None: the transport then closes."""
        if self._pending is not None:
            self.flush()
        return None

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    def pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None and not self.closed:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None and not self.closed:
            self._reading_paused = False
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self._parse_dead:
            return
        try:
            self.parser.feed_data(data)
        except _Reject as exc:
            self._parse_failed(exc.status, exc.detail)
        except httptools.HttpParserUpgrade:
            self._parse_failed(400, "protocol upgrade is not supported")
        except httptools.HttpParserInvalidMethodError:
            self._parse_failed(400, "invalid method")
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            if isinstance(cause, _Reject):
                self._parse_failed(cause.status, cause.detail)
            else:
                self._parse_failed(400, f"malformed request: {exc}")
        self._pump()

    def _parse_failed(self, status: int, detail: str) -> None:
        self._parse_dead = True
        if self._current is not None and self._current.body is not None:
            self._current.body.feed_eof()
        self.queue.append(_ParseError(status, detail))
        if self.transport is not None:
            self.pause_reading()

    # ---- parser callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._raw = []
        self._hdict = {}
        self._header_bytes = 0
        self.in_header_section = True
        self.deadline = self.loop.time() + self.limits.header_timeout

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self.limits.max_url_bytes:
            raise _Reject(414, "request target too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > self.limits.max_header_bytes:
            raise _Reject(431, "request header section too large")
        if len(self._raw) >= self.limits.max_header_count:
            raise _Reject(431, "too many request header fields")
        n = name.decode("latin-1")
        v = value.decode("latin-1").strip(" \t")
        self._raw.append((n, v))
        ln = n.lower()
        prev = self._hdict.get(ln)
        self._hdict[ln] = v if prev is None else prev + ", " + v

    def on_headers_complete(self) -> None:
        self.in_header_section = False
        parser = self.parser
        method = parser.get_method().decode("ascii", "replace")
        try:
            target = self._url.decode("ascii")
        except UnicodeDecodeError:
            raise _Reject(400, "request target is not ASCII") from None
        version = parser.get_http_version()
        if version not in ("1.1", "1.0"):
            raise _Reject(505, "HTTP version not supported")
        hdict = self._hdict
        if version == "1.1" and "host" not in hdict:
            raise _Reject(400, "HTTP/1.1 request without Host")
        body: RequestBody | None = None
        te = hdict.get("transfer-encoding")
        cl = hdict.get("content-length")
        if te is not None or (cl is not None and cl != "0"):
            if cl is not None:
                if not cl.isdigit():
                    raise _Reject(400, "invalid Content-Length")
                if int(cl) > self.limits.max_body_bytes:
                    raise _Reject(413, "request body too large")
            expect = hdict.get("expect")
            body = RequestBody(self, expect is not None and expect.lower() == "100-continue")
        req = Request(
            method,
            target,
            version,
            self._raw,
            hdict,
            parser.should_keep_alive(),
            body,
            self.loop.time(),
            self.tls,
        )
        self._current = req
        self.queue.append(req)
        self.deadline = 0.0  # no header deadline while the request is handled

    def on_body(self, data: bytes) -> None:
        req = self._current
        if req is None or req.body is None:
            return
        if req.body.received + len(data) > self.limits.max_body_bytes:
            raise _Reject(413, "request body too large")
        req.body.feed(data)

    def on_message_complete(self) -> None:
        req = self._current
        if req is not None and req.body is not None:
            req.body.feed_eof()
        self._current = None

    # ---- dispatch --------------------------------------------------------------------------

    def _pump(self) -> None:
        queue = self.queue
        while queue and not self.busy and not self.closed:
            item = queue[0]
            if isinstance(item, _ParseError):
                queue.clear()
                self.write_simple(item.status, item.detail, close=True)
                return
            # Fast path: a request with a body in flight is never answered synchronously.
            if item.body is None and self.app.try_fast(item, self):
                queue.popleft()
                if not item.keep_alive:
                    self.close()
                    return
                continue
            self.busy = True
            task = self.loop.create_task(self._run(item))
            self.server.tasks.add(task)
            task.add_done_callback(self.server.tasks.discard)
            return
        if not queue and not self.busy and not self.in_header_section:
            self.deadline = self.loop.time() + self.limits.idle_timeout

    async def _run(self, req: Request) -> None:
        writer = ResponseWriter(self, req)
        try:
            await self.app.handle(req, writer)
            if not writer.started:
                writer.start(500, [], content_length=0)
            if not writer.finished:
                await writer.end()
        except (ConnectionError, asyncio.CancelledError):
            self.abort()
        except Exception:
            log.exception("unhandled error for %s %s", req.method, req.target)
            if not writer.started:
                body = b"internal error\n"
                writer.start(500, [("Content-Type", "text/plain")], content_length=len(body))
                writer.write_nowait(body)
                writer.finished = True
                self.close()
            else:
                self.abort()
        finally:
            if self.queue and self.queue[0] is req:
                self.queue.popleft()
            self.busy = False
            keep = req.keep_alive and writer.keep_alive
            if req.body is not None and not req.body.at_eof:
                keep = False  # unread body: the stream position is unknown
            if not keep:
                self.close()
            elif not self.closed:
                self._pump()

    # ---- output ----------------------------------------------------------------------------

    def write_soon(self, data: bytes | memoryview) -> None:
        """Write ``data`` once this turn of the event loop has read every connection ready
        in it, together with their answers (see :meth:`HttpServer.flush_soon`)."""
        if self.closed or self.transport is None:
            return
        pending = self._pending
        if pending is None:
            self._pending = [data]
            self.server.flush_soon(self)
        else:
            pending.append(data)

    def flush(self) -> None:
        """Hand what :meth:`write_soon` holds to the transport."""
        pending = self._pending
        if pending is not None:
            self._pending = None
            if not self.closed and self.transport is not None:
                if len(pending) == 1:
                    self.transport.write(pending[0])
                else:
                    self.transport.writelines(pending)

    def write(self, data: bytes | memoryview) -> None:
        if self._pending is not None:
            self.flush()
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def writelines(self, parts: list[bytes | memoryview]) -> None:
        if self._pending is not None:
            self.flush()
        if not self.closed and self.transport is not None:
            self.transport.writelines(parts)

    def send_body(self, file_fd: int, view: memoryview, offset: int = 0, head: bytes = b"") -> int:
        """Send ``head`` then ``view`` (a stored body's mapping; ``offset`` its position in the
        file ``file_fd``) after what was written before, without copying the body through this
        process when possible.

        When the transport's buffer is empty (everything before has reached the socket), the
        head goes with MSG_MORE (it waits for the body, see :data:`MSG_MORE`) and the kernel
        sends as much of the body as the socket takes straight from the page cache
        (sendfile(2), as nginx does); the rest, if any, goes through the transport as usual
        (same order: the transport only writes after its buffer). Returns the body bytes sent
        by sendfile."""
        if self._pending is not None:
            self.flush()
        transport = self.transport
        if self.closed or transport is None:
            return 0
        sendfile_open = self.sendfile_fd >= 0 and transport.get_write_buffer_size() == 0
        if head:
            # MSG_MORE only with a body to follow (it is what pushes the head out)
            done = self._send_head_more(head) if sendfile_open and len(view) else 0
            if done < len(head):
                transport.write(head[done:] if done else head)
                sendfile_open = sendfile_open and transport.get_write_buffer_size() == 0
        sent = 0
        if sendfile_open:
            try:
                sent = os.sendfile(self.sendfile_fd, file_fd, offset, len(view))
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                if exc.errno not in SENDFILE_UNSUPPORTED:
                    self.abort()  # the peer is gone (EPIPE, ECONNRESET)
                    return 0
                _sendfile_unsupported(exc)  # this store's file system: copy from now on
                self.sendfile_fd = -1
        if sent < len(view):
            transport.write(view[sent:])
        return sent

    async def send_file(
        self, file_fd: int, view: memoryview, offset: int = 0, head: bytes = b""
    ) -> None:
        """Send ``head`` then all of ``view`` (``offset`` its position in ``file_fd``) by
        sendfile(2), waiting for room in the socket whenever it is full: however large the
        body, it goes from the page cache without a copy through this process (as nginx's
        sendfile loop), except a nudge of ``SENDFILE_NUDGE`` bytes through the transport each
        time the socket is full (the transport is what tells when it has room again).
        Falls back to copying when the connection cannot sendfile. Raises ConnectionError
        when the client goes away or the file ends early (the connection is then cut)."""
        transport = self.transport
        if self.closed or transport is None:
            raise ConnectionResetError("client went away")
        if self._pending is not None:
            self.flush()
        low, high = transport.get_write_buffer_limits()
        # pause as soon as anything waits in the transport, resume once all of it is out
        transport.set_write_buffer_limits(high=0)
        try:
            if head:
                done = 0
                if self.sendfile_fd >= 0 and transport.get_write_buffer_size() == 0 and len(view):
                    done = self._send_head_more(head)  # MSG_MORE: a body follows
                if done < len(head):
                    transport.write(head[done:] if done else head)
            pos = 0
            total = len(view)
            while pos < total:
                if self.closed:
                    raise ConnectionResetError("client went away")
                if self.sendfile_fd >= 0 and transport.get_write_buffer_size() == 0:
                    try:
                        sent = os.sendfile(self.sendfile_fd, file_fd, offset + pos, total - pos)
                    except BlockingIOError:
                        sent = -1  # the socket is full
                    except OSError as exc:
                        if exc.errno not in SENDFILE_UNSUPPORTED:
                            self.abort()
                            raise ConnectionResetError(f"sendfile: {exc}") from None
                        _sendfile_unsupported(exc)
                        self.sendfile_fd = -1
                        sent = -1
                    if sent == 0:
                        self.abort()  # the file is shorter than its view: never a clean end
                        raise ConnectionResetError("stored body ended early")
                    if sent > 0:
                        pos += sent
                        continue
                step = SENDFILE_NUDGE if self.sendfile_fd >= 0 else WRITE_VIEW_CHUNK
                piece = view[pos : pos + step]
                transport.write(piece)
                pos += len(piece)
                await self.drain()
        finally:
            if not self.closed:
                transport.set_write_buffer_limits(high=high, low=low)

    def pace(self, on: bool) -> None:
        """Set TCP_NOTSENT_LOWAT to the node's ``notsent_lowat`` (on) or back to the system's
        (off): :class:`ResponseWriter` turns it on for a body over PACED_BODY_MIN (a whole
        object, or one sent as slices) and off at its end.

        Without it the kernel takes as much of a large body as the socket's send buffer
        holds (autotuned to MBs), most of it unsent, waiting for the peer's window; with it,
        a write stops once this many bytes wait unsent, and the rest waits in the page cache
        (or this process's buffer) until the socket needs it. What is in flight is not
        limited (throughput over long round trips is kept), only the backlog behind it: less
        kernel memory per slow client. The cost is a wake-up per ``notsent_lowat`` bytes.
        On loopback it also keeps this process sending its own bytes: a window update from
        the client transmits whatever the server queued unsent, in the client's system call
        (perf on wrk: tcp_write_xmit under its recvmsg), so a backlog of MBs has the client's
        core do the server's sending. ``benchmarks/hit_bench.py --sizes 8MiB,4MiB,1MiB
        --lowat-ab``: 8 MiB hits 403 vs 339 req/s, 4 MiB 1,015 vs 634, p99 halved.
        Failures (a socket without the option, or gone) are ignored: the body still goes."""
        lowat = self.limits.notsent_lowat
        if self.paced == on or lowat <= 0 or not TCP_NOTSENT_LOWAT or self.closed:
            return
        if self.transport is None:
            return  # (never connected)
        sock = self.transport.get_extra_info("socket")
        try:
            sock.setsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT, lowat if on else 0)
        except (OSError, AttributeError, ValueError):  # ValueError: uvloop's, once closed
            return
        self.paced = on

    def _send_head_more(self, head: bytes) -> int:
        """Send ``head`` on the socket with MSG_MORE; returns the bytes sent (0 when the
        flag, the duplicate descriptor or the socket's buffer is not available; an error
        of the peer shows on the transport's next write)."""
        sock = self._head_sock
        if sock is None:
            if self._head_sock_tried or not MSG_MORE:
                return 0
            self._head_sock_tried = True
            try:
                fd = os.dup(self.sendfile_fd)
            except OSError:
                return 0  # out of descriptors: heads go through the transport
            try:
                sock = socket.socket(fileno=fd)
                sock.setblocking(False)  # never the process's default timeout: no waiting
            except OSError:
                os.close(fd)
                return 0
            self._head_sock = sock
        try:
            return sock.send(head, MSG_MORE)
        except OSError:
            return 0

    async def drain(self) -> None:
        """Wait until the transport accepts more (back-pressure); slow readers time out."""
        if not self.write_paused:
            return
        if self.closed:
            raise ConnectionResetError("client went away")
        self._drain_waiter = self.loop.create_future()
        try:
            await asyncio.wait_for(self._drain_waiter, self.limits.idle_timeout)
        except TimeoutError:
            self.abort()
            raise ConnectionResetError("client did not read within the idle timeout") from None
        finally:
            self._drain_waiter = None

    def write_simple(
        self,
        status: int,
        detail: str,
        *,
        close: bool = False,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        """A small text answer written at once (errors, 405, ...)."""
        body = (detail + "\n").encode()
        head = [
            f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}\r\n",
            f"Date: {format_http_date(time.time())}\r\n",
            "Content-Type: text/plain; charset=utf-8\r\n",
            f"Content-Length: {len(body)}\r\n",
        ]
        for name, value in headers:
            head.append(f"{name}: {value}\r\n")
        head.append("Connection: close\r\n\r\n" if close else "\r\n")
        self.write("".join(head).encode("latin-1") + body)
        if close:
            self.close()

    def close(self) -> None:
        if self._pending is not None:
            self.flush()
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()

    def abort(self) -> None:
        """Cut the connection without a clean end: a client must see a failed transfer."""
        if self._pending is not None:
            self.flush()  # the answers before the failed one go to the socket first
        if self.transport is not None:
            self.closed = True
            self.transport.abort()


class ResponseWriter:
    """Writes one response: head, then body chunks (Content-Length or chunked framing)."""

    __slots__ = (
        "_head",
        "bytes_sent",
        "chunked",
        "conn",
        "content_length",
        "finished",
        "head_only",
        "keep_alive",
        "request",
        "started",
        "status",
    )

    def __init__(self, conn: HttpConnection, request: Request) -> None:
        self.conn = conn
        self.request = request
        self.started = False
        self.finished = False
        self.chunked = False
        self.head_only = request.method == "HEAD"
        self.keep_alive = request.keep_alive
        self.bytes_sent = 0
        self.status = 0
        self._head: bytes | None = None  # sent with the first body bytes, or on the next tick
        self.content_length: int | None = None

    def _flush_head(self) -> None:
        head, self._head = self._head, None
        if head is not None:
            self.conn.write(head)

    def start(
        self,
        status: int,
        headers: Iterable[tuple[str, str]],
        *,
        content_length: int | None,
        reason: str | None = None,
    ) -> None:
        """Send the status line and header section.

        ``content_length`` None means the length is unknown: chunked for HTTP/1.1, close-
        delimited for HTTP/1.0. ``headers`` must not contain framing or connection fields.
        A body over PACED_BODY_MIN goes paced (:meth:`HttpConnection.pace`) until :meth:`end`.
        """
        if self.started:
            raise RuntimeError("response already started")
        self.started = True
        self.status = status
        self.content_length = content_length
        parts = [f"HTTP/1.1 {status} {reason or REASONS.get(status, 'Unknown')}\r\n"]
        has_date = False
        for name, value in headers:
            if not has_date and name.lower() == "date":
                has_date = True
            parts.append(f"{name}: {value}\r\n")
        if not has_date:
            parts.append(f"Date: {format_http_date(time.time())}\r\n")
        no_body = status in NO_BODY_STATUSES or status < 200
        if not no_body:
            if content_length is not None:
                parts.append(f"Content-Length: {content_length}\r\n")
                if content_length > PACED_BODY_MIN and not self.head_only:
                    self.conn.pace(True)
            elif self.request.version == "1.1":
                if not self.head_only:
                    self.chunked = True
                    parts.append("Transfer-Encoding: chunked\r\n")
            else:
                self.keep_alive = False
        if not self.keep_alive:
            parts.append("Connection: close\r\n")
        elif self.request.version == "1.0":
            parts.append("Connection: keep-alive\r\n")
        parts.append("\r\n")
        # one send for head and body when the body follows in the same tick (a hit); the
        # head still leaves on the next loop iteration when the body has to wait (a fill)
        self._head = "".join(parts).encode("latin-1")
        self.conn.loop.call_soon(self._flush_head)
        if no_body:
            self.head_only = True

    def write_nowait(self, data: bytes | memoryview) -> None:
        if self.head_only or not data:
            return
        self.bytes_sent += len(data)
        if self.content_length is not None and self.bytes_sent > self.content_length:
            # never more than announced: it would be read as the next response
            self.abort()
            raise ConnectionResetError("body longer than its Content-Length")
        parts: list[bytes | memoryview] = []
        if self._head is not None:
            parts.append(self._head)
            self._head = None
        if self.chunked:
            parts.extend((b"%x\r\n" % len(data), data, b"\r\n"))
        else:
            parts.append(data)
        self.conn.writelines(parts)

    async def write(self, data: bytes | memoryview) -> None:
        if self.conn.closed:
            raise ConnectionResetError("client went away")
        self.write_nowait(data)
        await self.conn.drain()

    async def write_file_view(self, file_fd: int, view: memoryview, offset: int) -> None:
        """:meth:`write_view` for a stored body (``view`` maps the file ``file_fd`` from
        ``offset``): by sendfile(2) with the head (see :meth:`HttpConnection.send_file`);
        views over the connection's ``sendfile_max`` are copied as by :meth:`write_view`.
        Content-Length framing only."""
        conn = self.conn
        if self.chunked or self.head_only or len(view) > conn.sendfile_max or conn.sendfile_fd < 0:
            await self.write_view(view)  # (TLS, or sendfile refused: copied in chunks)
            return
        if conn.closed:
            raise ConnectionResetError("client went away")
        self.bytes_sent += len(view)
        if self.content_length is not None and self.bytes_sent > self.content_length:
            self.abort()
            raise ConnectionResetError("body longer than its Content-Length")
        head, self._head = self._head, None  # leaves with the body (MSG_MORE)
        await self.conn.send_file(file_fd, view, offset, head or b"")

    async def write_view(self, view: memoryview) -> None:
        """Write a large buffer in bounded chunks, honouring back-pressure (the transport takes
        up to WRITE_VIEW_CHUNK at once; a slow reader still costs a bounded buffer)."""
        for offset in range(0, len(view), WRITE_VIEW_CHUNK):
            await self.write(view[offset : offset + WRITE_VIEW_CHUNK])

    async def end(self) -> None:
        if self.finished:
            return
        if (
            not self.head_only
            and not self.chunked
            and self.content_length is not None
            and self.bytes_sent != self.content_length
        ):
            self.abort()  # a short body must look like a failed transfer, never a clean end
            return
        self.finished = True
        self._flush_head()
        if self.chunked and not self.conn.closed:
            self.conn.write(b"0\r\n\r\n")
        if self.conn.paced and not self.conn.closed:
            self.conn.pace(False)  # the body is in the kernel or the transport's buffer

    def abort(self) -> None:
        """The body cannot be completed: cut the connection (never a short, clean answer)."""
        if self.bytes_sent == 0:
            self._flush_head()  # a failure before the body: the head was promised
        self.finished = True
        self.keep_alive = False
        self.conn.abort()


class HttpServer:
    """Owns the listening socket(s) and the connection sweep."""

    def __init__(self, app: App, limits: NodeConfig) -> None:
        self.app = app
        self.limits = limits
        self.connections: set[HttpConnection] = set()
        self.tasks: set[asyncio.Task[None]] = set()  # handlers, even of gone clients
        self._servers: list[asyncio.base_events.Server] = []
        self._sweeper: asyncio.Task[None] | None = None
        self._refusal_logged = -REFUSAL_LOG_INTERVAL
        self._to_flush: list[HttpConnection] = []

    async def start(
        self,
        host: str,
        port: int,
        *,
        reuse_port: bool = False,
        sock: object = None,
        ssl: ssl_module.SSLContext | None = None,
    ) -> int:
        """Listen on ``host:port`` (or ``sock``), with TLS when ``ssl`` is given; may be called
        once per listener. Returns the bound port."""
        loop = asyncio.get_running_loop()
        tls = ssl is not None

        def factory() -> HttpConnection:
            return HttpConnection(self.app, self.limits, self, tls)

        # a handshake must end within the header timeout (else a silent client holds a
        # socket the connection limit does not see yet)
        handshake = self.limits.header_timeout if tls else None
        if sock is not None:
            server = await loop.create_server(
                factory, sock=sock, backlog=1024, ssl=ssl, ssl_handshake_timeout=handshake
            )
        else:
            server = await loop.create_server(
                factory,
                host,
                port,
                reuse_port=reuse_port,
                backlog=1024,
                ssl=ssl,
                ssl_handshake_timeout=handshake,
            )
        self._servers.append(server)
        if self._sweeper is None:
            self._sweeper = loop.create_task(self._sweep())
        return int(server.sockets[0].getsockname()[1])

    @property
    def port(self) -> int:
        """The bound port of the first listener."""
        assert self._servers
        return int(self._servers[0].sockets[0].getsockname()[1])

    def flush_soon(self, conn: HttpConnection) -> None:
        """Write ``conn``'s held answers at the end of this loop turn, after the other ready
        connections are read: the answers leave back to back, so a client waiting on several
        connections wakes once for them (as Netty flushes at the end of a read loop)."""
        to_flush = self._to_flush
        to_flush.append(conn)
        if len(to_flush) == 1:
            conn.loop.call_soon(self._flush_all)

    def _flush_all(self) -> None:
        to_flush, self._to_flush = self._to_flush, []
        for conn in to_flush:
            try:
                conn.flush()
            except Exception:  # one broken transport must not hold the others' answers
                log.exception("writing held answers failed")
                conn.abort()

    def refuse(self, transport: asyncio.BaseTransport) -> None:
        """One connection more than ``max_connections``: reset it, count it, log it (at most
        once per ``REFUSAL_LOG_INTERVAL``)."""
        self.app.connections_refused += 1
        transport.abort()  # type: ignore[attr-defined]
        now = time.monotonic()
        if now - self._refusal_logged >= REFUSAL_LOG_INTERVAL:
            self._refusal_logged = now
            log.warning(
                "max_connections (%d) reached: new connections are closed (%d so far)",
                self.limits.max_connections,
                self.app.connections_refused,
            )

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(1.0)
            now = loop.time()
            for conn in list(self.connections):
                if conn.deadline and now > conn.deadline:
                    if conn.busy or conn.queue:
                        continue
                    if conn.in_header_section:
                        conn.write_simple(408, "request header timeout", close=True)
                    else:
                        conn.close()

    async def stop(self, drain_timeout: float = 10.0) -> None:
        """Stop accepting; let in-flight handlers finish (up to ``drain_timeout``), including
        those whose client already left (a fill still publishing); then close."""
        for server in self._servers:
            server.close()
        for conn in list(self.connections):
            if not conn.busy and not conn.queue:
                conn.close()
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=drain_timeout)
        for conn in list(self.connections):
            conn.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
