"""Fast-path answers are written at the end of the event loop's turn (``write_soon``): every
connection ready in the turn is read and answered first, then the answers leave back to back;
order on a connection is kept whatever is written next (a slow answer, an error, a close)."""

from __future__ import annotations

import asyncio
import re

import pytest
from aiohttp import web

from edgeproxy.proxy.server import HttpConnection

pytestmark = pytest.mark.integration

HIT = b"GET /api/small HTTP/1.1\r\nHost: x\r\n\r\n"


async def _warm_node(make_node, origin, client):
    async def small(request: web.Request) -> web.Response:
        return web.Response(body=b"hello world", headers={"Cache-Control": "max-age=60"})

    origin.routes["/api/small"] = small
    node = await make_node({"parents": [origin.endpoint]})
    url = f"http://127.0.0.1:{node.port}/api/small"
    for _ in range(200):
        async with client.get(url) as r:
            await r.read()
            if "hit" in r.headers["Cache-Status"]:
                return node
        await asyncio.sleep(0.01)
    raise AssertionError("the object never became a hit")


async def test_connections_ready_together_are_all_read_before_any_answer_is_written(
    make_node, origin, client, monkeypatch
) -> None:
    node = await _warm_node(make_node, origin, client)
    events: list[tuple[str, int]] = []
    real_received = HttpConnection.data_received
    real_flush = HttpConnection.flush

    def received(self, data):
        events.append(("read", id(self)))
        real_received(self, data)

    def flush(self):
        if self._pending is not None:
            events.append(("write", id(self)))
        real_flush(self)

    monkeypatch.setattr(HttpConnection, "data_received", received)
    monkeypatch.setattr(HttpConnection, "flush", flush)
    streams = [await asyncio.open_connection("127.0.0.1", node.port) for _ in range(3)]
    try:
        await asyncio.sleep(0.05)  # accepted: nothing pending
        events.clear()
        for _, writer in streams:  # all three requests are on the wire before the loop turns
            writer.write(HIT)
        for reader, _ in streams:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert b" 200 " in head and b"hit" in head
            assert await reader.readexactly(11) == b"hello world"
    finally:
        for _, writer in streams:
            writer.close()
    kinds = [kind for kind, _ in events]
    assert kinds == ["read"] * 3 + ["write"] * 3
    assert {conn for _, conn in events[:3]} == {conn for _, conn in events[3:]}


async def test_held_answers_keep_their_order_before_errors_slow_answers_and_a_close(
    make_node, origin, client
) -> None:
    node = await _warm_node(make_node, origin, client)
    missing = b"GET /api/none HTTP/1.1\r\nHost: x\r\n\r\n"  # the slow path (a 404 miss)
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    try:
        # hits held, then a slow answer, then more hits held, then a malformed request
        writer.write(HIT * 3 + missing + HIT * 2 + b"GET / HTTP/1.1\r\nHost x\r\n\r\n")
        out = await asyncio.wait_for(reader.read(), 5)  # the server closes after the 400
    finally:
        writer.close()
    statuses = [int(s) for s in re.findall(rb"HTTP/1\.1 (\d{3}) ", out)]
    assert statuses == [200, 200, 200, 404, 200, 200, 400]
    assert out.count(b"hello world") == 5
    # Connection: close on a hit: the whole answer, then the end of the connection
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    try:
        writer.write(HIT + HIT[:-2] + b"Connection: close\r\n\r\n")
        out = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", out) == [b"200", b"200"]
    assert out.endswith(b"hello world") and out.count(b"hello world") == 2
