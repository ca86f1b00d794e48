"""Helpers shared by the spec-organized end-to-end tests (``tests/integration/test_rfc*.py``).

Every such test drives a real node over sockets in front of a scripted origin: the aiohttp
``ScriptedOrigin`` (fixture ``origin``, tests/support/origin.py) for ordinary answers, or
:class:`RawOrigin` here when the answer must be something aiohttp's server will not send (no
``Date``, interim 1xx answers, fields on a 304, exact bytes). "Stored" and "not stored" are
proven by what reached the origin, never by reading the store.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from tests.support.origin import RecordingOrigin

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Fields = Mapping[str, str] | Iterable[tuple[str, str]]

BODY = b"hello from the origin\n" * 8

NO_DEFAULT_TTL = [{"name": "strict", "path": "*", "default_ttl": "0s", "max_ttl": "1d"}]
"""One policy without a default TTL: only the origin's freshness (or the RFC 9111 sec. 4.2.2
heuristic from Last-Modified) gives a lifetime, as in a cache without policy TTLs."""


def node_url(node: Any, path: str) -> str:
    return f"http://127.0.0.1:{node.port}{path}"


def http_date(offset: float = 0.0) -> str:
    """An IMF-fixdate ``offset`` seconds from now (RFC 9110 sec. 5.6.7)."""
    return formatdate(time.time() + offset, usegmt=True)


def ttl_of(cache_status: str) -> int:
    match = re.search(r"ttl=(-?\d+)", cache_status)
    assert match is not None, f"no ttl in Cache-Status {cache_status!r}"
    return int(match.group(1))


def own_status(cache_status: str) -> dict[str, str | bool]:
    """This node's Cache-Status member (the last one, RFC 9211 sec. 2) as ``{param: value}``:
    a bare parameter (``hit``, ``stored``, ``collapsed``) maps to True, ``fwd=stale`` to
    ``"stale"``, a quoted string to its text; the cache's name is under ``""``."""
    members: list[str] = []
    quoted, start = False, 0
    for i, ch in enumerate(cache_status):
        if ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            members.append(cache_status[start:i])
            start = i + 1
    members.append(cache_status[start:])
    parts = [p.strip() for p in members[-1].split(";")]
    out: dict[str, str | bool] = {"": parts[0]}
    for part in parts[1:]:
        name, eq, value = part.partition("=")
        if not eq:
            out[name] = True
        elif value.startswith('"'):
            out[name] = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        else:
            out[name] = value
    return out


def is_hit(headers: Any) -> bool:
    """This node answered from its store without contacting upstream (RFC 9211 ``hit``)."""
    return own_status(headers.get("Cache-Status", "")).get("hit") is True


async def fetch(
    client: aiohttp.ClientSession,
    url: str,
    headers: Fields | None = None,
    method: str = "GET",
    data: bytes | None = None,
) -> tuple[int, Any, bytes]:
    """One request, redirects not followed; (status, a copy of the response's header
    multidict, body)."""
    async with client.request(method, url, headers=headers, data=data, allow_redirects=False) as r:
        body = await r.read()
        return r.status, r.headers.copy(), body


async def wait_stored(node: Any, count: int = 1) -> None:
    """Wait (bounded, about 5 s) until the node's store holds ``count`` entries: a request on
    another connection right after a miss may otherwise follow the still-running fill."""
    for _ in range(500):
        if len(node.node.store.index) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the store never held {count} entries")


def _fields(headers: Fields | None) -> CIMultiDict[str]:
    """Header fields as a multidict: a list of pairs may repeat a name (several lines)."""
    if headers is None:
        return CIMultiDict()
    if isinstance(headers, Mapping):
        return CIMultiDict(headers)
    return CIMultiDict(list(headers))


def respond(
    body: bytes = BODY,
    *,
    status: int = 200,
    headers: Fields | None = None,
) -> Handler:
    """A handler answering the same response to every request (``headers`` may be a list of
    pairs to send a field on several lines)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, body=body, headers=_fields(headers))

    return handler


def validating(
    body: bytes = BODY,
    *,
    etag: str = '"v1"',
    cache_control: str | None = "max-age=0",
    headers: Fields | None = None,
    not_modified_headers: Fields | None = None,
) -> Handler:
    """200 with an ETag; 304 when the request's If-None-Match names that ETag.

    ``cache_control=None`` sends no Cache-Control (freshness from Expires or heuristics)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.headers.get("If-None-Match") == etag:
            fields = CIMultiDict({"ETag": etag})
            if cache_control is not None:
                fields["Cache-Control"] = cache_control
            update = _fields(not_modified_headers)
            for name in update:
                fields.popall(name, None)
            fields.extend(update)
            return web.Response(status=304, headers=fields)
        fields = CIMultiDict({"ETag": etag, "Content-Type": "text/plain"})
        if cache_control is not None:
            fields["Cache-Control"] = cache_control
        extra = _fields(headers)
        for name in extra:
            fields.popall(name, None)
        fields.extend(extra)
        return web.Response(body=body, headers=fields)

    return handler


def sequence(*handlers: Handler) -> Handler:
    """The n-th request gets the n-th handler (the last one repeats)."""
    calls = 0

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        chosen = handlers[min(calls, len(handlers) - 1)]
        calls += 1
        return await chosen(request)

    return handler


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def raw_exchange(port: int, data: bytes) -> bytes:
    """Send raw bytes to the node and read until it closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


def split_response(raw: bytes) -> tuple[str, dict[str, str], bytes]:
    """(status line, lower-cased headers, everything after the header section)."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return lines[0], fields, rest


def raw_response(
    status: int,
    fields: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    *,
    reason: str = "Whatever",
    interim: Iterable[bytes] = (),
) -> bytes:
    """Exact response bytes: optional interim (1xx) heads, then the final head and body with a
    Content-Length (none for 1xx/204/304). No field is added: no Date unless given."""
    head = [f"HTTP/1.1 {status} {reason}"]
    head.extend(f"{name}: {value}" for name, value in fields)
    if status not in (204, 304) and status >= 200:
        head.append(f"Content-Length: {len(body)}")
    final = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
    return b"".join(interim) + final + (b"" if status in (204, 304) else body)


RawAnswer = Callable[[str, str, CIMultiDict[str]], bytes]


@dataclass
class RawOrigin(RecordingOrigin):
    """An HTTP/1.1 origin that answers each request with scripted bytes (keep-alive).

    ``routes[path]`` is a function (method, target, headers) -> response bytes (see
    :func:`raw_response`); every request is recorded in ``seen`` like ScriptedOrigin's."""

    routes: dict[str, RawAnswer] = field(default_factory=dict)
    seen: list[tuple[str, str, CIMultiDict[str]]] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers: CIMultiDict[str] = CIMultiDict()
                for line in lines[1:]:
                    if line:
                        name, _, value = line.partition(":")
                        headers.add(name.strip(), value.strip())
                length = int(headers.get("Content-Length", "0"))
                if length:
                    await reader.readexactly(length)
                self.seen.append((method, target, headers))
                answer = self.routes.get(target.partition("?")[0])
                if answer is None:
                    data = raw_response(404, [("Date", http_date())], b"not scripted")
                else:
                    data = answer(method, target, headers)
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def __aenter__(self) -> RawOrigin:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
