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
        for _ in range(500):  # accepted (the client fixture's connection is the 4th)
            if len(node.server.connections) >= 3:
                break
            await asyncio.sleep(0.01)
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


class _Transport:
    """What HttpConnection uses of a transport, recording writes and closes in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, bytes]] = []

    def write(self, data) -> None:
        self.events.append(("write", bytes(data)))

    def writelines(self, parts) -> None:
        self.events.append(("write", b"".join(bytes(p) for p in parts)))

    def close(self) -> None:
        self.events.append(("close", b""))

    def abort(self) -> None:
        self.events.append(("abort", b""))

    def get_extra_info(self, name, default=None):
        return default

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


@pytest.mark.parametrize("end", ["eof", "close", "abort"])
async def test_held_answers_go_to_the_transport_before_the_connection_ends(
    make_node, origin, client, end
) -> None:
    """The client's half-close (eof_received: a closing TLS transport drops later writes),
    a close and an abort each hand the held answers to the transport first."""
    node = await _warm_node(make_node, origin, client)
    conn = HttpConnection(node.node, node.config.node, node.server)
    transport = _Transport()
    conn.connection_made(transport)
    conn.data_received(HIT * 2)  # two hits, answered and held
    assert transport.events == []
    if end == "eof":
        assert not conn.eof_received()  # falsy: the transport closes itself afterwards
    elif end == "close":
        conn.close()
    else:
        conn.abort()
    writes = b"".join(data for kind, data in transport.events if kind == "write")
    assert writes.count(b"HTTP/1.1 200 OK") == 2 and writes.count(b"hello world") == 2
    assert transport.events[0][0] == "write"
    assert [kind for kind, _ in transport.events[1:]] == ([] if end == "eof" else [end])
    conn.connection_lost(None)
