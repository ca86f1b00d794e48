"""`[node] sendfile` (on by default): stored bodies of 64 KiB to `sendfile_max` go by
sendfile(2) on plain-TCP connections, larger ones by copy; every byte arrives in order, on the
fast path, the slow path (ranges) and pipelined requests."""

from __future__ import annotations

import asyncio
import os

import pytest
from aiohttp import web

pytestmark = pytest.mark.integration

BODY = os.urandom(700 * 1024)


@pytest.mark.parametrize(
    ("sendfile", "sendfile_max"), [(True, "1MiB"), (False, "1MiB"), (True, "128KiB")]
)
async def test_bodies_arrive_whole_and_in_order(
    make_node, origin, client, sendfile, sendfile_max, monkeypatch
) -> None:
    calls = []
    real = os.sendfile

    def counting(*args):
        calls.append(args[3])
        return real(*args)

    monkeypatch.setattr(os, "sendfile", counting)

    async def big(request: web.Request) -> web.StreamResponse:
        return web.Response(body=BODY, headers={"Cache-Control": "max-age=600", "ETag": '"v1"'})

    origin.routes["/api/big.bin"] = big
    node = await make_node(
        {"parents": [origin.endpoint]},
        store_extra={"ram_object_max": "64KiB"},  # mapped from the page cache, not RAM
        node_extra={"sendfile": sendfile, "sendfile_max": sendfile_max},
    )
    url = f"http://127.0.0.1:{node.port}/api/big.bin"
    async with client.get(url) as r:
        assert await r.read() == BODY
    for _ in range(200):
        if node.node.store.index:
            break
        await asyncio.sleep(0.01)
    for _ in range(3):  # fast-path hits
        async with client.get(url) as r:
            assert "hit" in r.headers["Cache-Status"] and await r.read() == BODY
    async with client.get(url, headers={"Range": "bytes=1000-299999"}) as r:  # fast path
        assert r.status == 206 and await r.read() == BODY[1000:300000]
    async with client.get(url, headers={"Range": "bytes=7-100006"}) as r:  # 100,000 bytes
        assert r.status == 206 and await r.read() == BODY[7:100007]
    # If-Range takes the slow path: 100,000 bytes from offset 4097 of the file
    slow = {"Range": "bytes=4097-104096", "If-Range": '"v1"'}
    async with client.get(url, headers=slow) as r:
        assert r.status == 206 and await r.read() == BODY[4097:104097]
    for last in (131071, 131072):  # exactly 128 KiB, and one byte more
        async with client.get(url, headers={"Range": f"bytes=0-{last}"}) as r:
            assert r.status == 206 and await r.read() == BODY[: last + 1]
    # pipelined on one connection: each answer's body right after its own head
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    try:
        request = b"GET /api/big.bin HTTP/1.1\r\nHost: x\r\n\r\n"
        writer.write(
            request * 3 + b"GET /api/big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=5-9\r\n\r\n"
        )
        for expected in (BODY, BODY, BODY, BODY[5:10]):
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            assert await reader.readexactly(length) == expected
    finally:
        writer.close()
    assert bool(calls) is sendfile  # the setting decides
    if sendfile_max == "128KiB":  # only the ranges of at most 128 KiB went by sendfile
        assert sorted(calls) == [100_000, 100_000, 131_072]


async def test_a_file_system_without_sendfile_falls_back_to_copying(
    make_node, origin, client, monkeypatch
) -> None:
    """sendfile(2) refused with EINVAL (a file system that cannot): the answer goes on by copy,
    whole, and the process stops trying (new connections copy at once)."""
    import errno

    from edgeproxy.proxy import server as server_module

    monkeypatch.setattr(server_module, "_sendfile_refused", False)
    calls = []

    def refusing(*args):
        calls.append(args[3])
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(os, "sendfile", refusing)

    async def big(request: web.Request) -> web.StreamResponse:
        return web.Response(body=BODY[:100_000], headers={"Cache-Control": "max-age=600"})

    origin.routes["/api/small.bin"] = big
    node = await make_node(
        {"parents": [origin.endpoint]},
        store_extra={"ram_object_max": "64KiB"},
        node_extra={"sendfile": True},
    )
    url = f"http://127.0.0.1:{node.port}/api/small.bin"
    async with client.get(url) as r:
        assert await r.read() == BODY[:100_000]
    for _ in range(200):
        if node.node.store.index:
            break
        await asyncio.sleep(0.01)
    for _ in range(2):
        async with client.get(url) as r:
            assert "hit" in r.headers["Cache-Status"] and await r.read() == BODY[:100_000]
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)  # a new connection
    try:
        writer.write(b"GET /api/small.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert b"hit" in head and await reader.readexactly(100_000) == BODY[:100_000]
    finally:
        writer.close()
    assert calls == [100_000]  # tried once, then never again in this process
