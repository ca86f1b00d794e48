"""The client-facing HTTP/1.1 server over raw sockets: framing, keep-alive, pipelining, limits,
bad input (RFC 9112). Every malformed request gets a 4xx or a closed connection, never a 500,
and the node keeps serving."""

from __future__ import annotations

import asyncio
import dataclasses
import re

import pytest
from aiohttp import web

pytestmark = pytest.mark.integration


async def _node(make_node, origin, **kwargs):
    async def small(request: web.Request) -> web.Response:
        return web.Response(body=b"hello world", headers={"Cache-Control": "max-age=60"})

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.Response(body=b"got:" + body)

    origin.routes["/api/small"] = small
    origin.routes["/api/echo"] = echo
    return await make_node({"parents": [origin.endpoint]}, **kwargs)


async def _exchange(
    port: int, raw: bytes, *, read_until_close: bool = True, timeout: float = 5.0
) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        if read_until_close:
            return await asyncio.wait_for(reader.read(), timeout)
        return await asyncio.wait_for(reader.read(65536), timeout)
    finally:
        writer.close()


def _statuses(raw: bytes) -> list[int]:
    """Status codes of every response in a byte stream (bodies here never contain 'HTTP/1.1')."""
    return [int(m) for m in re.findall(rb"HTTP/1\.1 (\d{3}) ", raw)]


async def test_pipelined_requests_are_answered_in_order(make_node, origin) -> None:
    node = await _node(make_node, origin)
    req = b"GET /api/small HTTP/1.1\r\nHost: x\r\n\r\n"
    missing = b"GET /api/none HTTP/1.1\r\nHost: x\r\n\r\n"
    last = b"GET /api/small HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    out = await _exchange(node.port, req + missing + req + last)
    assert _statuses(out) == [200, 404, 200, 200]
    assert out.count(b"hello world") == 3
    # the first answer is a miss, the later ones hits: order follows the requests
    statuses = re.findall(rb"Cache-Status: ([^\r]*)", out)
    assert b"fwd=uri-miss" in statuses[0]
    assert b"hit" in statuses[2] and b"hit" in statuses[3]


async def test_keep_alive_and_http10(make_node, origin) -> None:
    node = await _node(make_node, origin)
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    try:
        for _ in range(3):
            writer.write(b"GET /api/small HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200")
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            assert await reader.readexactly(length) == b"hello world"
    finally:
        writer.close()
    # HTTP/1.0 without keep-alive: the server closes after the answer
    out = await _exchange(node.port, b"GET /api/small HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"hello world")
    assert b"Connection: close" in out


async def test_head_has_headers_but_no_body(make_node, origin) -> None:
    node = await _node(make_node, origin)
    await _exchange(node.port, b"GET /api/small HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    out = await _exchange(
        node.port, b"HEAD /api/small HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    head, _, body = out.partition(b"\r\n\r\n")
    assert b"Content-Length: 11" in head
    assert body == b""


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /api/small HTTP/1.1\r\n\r\n", 400),  # no Host
        (b"GET /api/%zz HTTP/1.1\r\nHost: x\r\n\r\n", 400),  # bad percent-encoding
        (b"GET /api/%00 HTTP/1.1\r\nHost: x\r\n\r\n", 400),  # encoded NUL
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 20000 + b"\r\n\r\n", 431),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\n"
            + b"".join(b"X-%d: 1\r\n" % i for i in range(150))
            + b"\r\n",
            431,
        ),
        # request smuggling: both framings (RFC 9112 sec. 6.1) and obsolete line folding
        (
            b"POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        (b"GET /api/small HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n folded\r\n\r\n", 400),
        (
            b"POST /api/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"zz\r\nabc\r\n0\r\n\r\n",
            400,
        ),
        (b"POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n", 413),
        (b"GET /api/small HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    ],
)
async def test_bad_requests_get_4xx_and_the_node_stays_up(make_node, origin, raw, status) -> None:
    node = await _node(make_node, origin)
    out = await _exchange(node.port, raw)
    codes = _statuses(out)
    assert codes and codes[-1] == status, out[:200]
    assert b"Traceback" not in out
    ok = await _exchange(
        node.port, b"GET /api/small HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert _statuses(ok) == [200]


async def test_post_body_streamed_with_100_continue(make_node, origin) -> None:
    node = await _node(make_node, origin)
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    try:
        writer.write(
            b"POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert interim.startswith(b"HTTP/1.1 100 Continue")
        writer.write(b"abcde")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200")
        if b"Transfer-Encoding: chunked" in head:
            rest = await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 5)
            assert b"got:abcde" in rest
        else:
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            assert await reader.readexactly(length) == b"got:abcde"
    finally:
        writer.close()


async def test_chunked_request_body_passes_through(make_node, origin) -> None:
    node = await _node(make_node, origin)
    raw = (
        b"POST /api/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    out = await _exchange(node.port, raw)
    assert _statuses(out) == [200]
    assert b"got:abcde" in out


async def test_idle_connection_is_closed_by_the_header_timeout(make_node, origin) -> None:
    node = await _node(make_node, origin)
    node.server.limits = dataclasses.replace(node.server.limits, header_timeout=1.0)
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    try:
        writer.write(b"GET /api/small HTTP/1.1\r\n")  # never finishes the header section
        out = await asyncio.wait_for(reader.read(), 10)
        assert _statuses(out) == [408]
    finally:
        writer.close()


async def test_suite_runs_on_uvloop() -> None:
    """The production loop: uvloop's transports differ from asyncio's (not subclasses)."""
    assert type(asyncio.get_running_loop()).__module__.startswith("uvloop")
