"""`[node] sendfile` (on by default): stored bodies of 64 KiB to `sendfile_max` go by
sendfile(2) on plain-TCP connections, larger ones by copy; every byte arrives in order, on the
fast path, the slow path (ranges) and pipelined requests."""

from __future__ import annotations

import asyncio
import gc
import os

import pytest
from aiohttp import web

pytestmark = pytest.mark.integration

BODY = os.urandom(700 * 1024)


async def _stored(
    make_node,
    origin,
    client,
    path: str,
    body: bytes,
    node_extra: dict,
    ram_object_max: str = "64KiB",
):
    """A node (``node_extra`` in its [node] table) whose store holds ``body`` at ``path``,
    fetched once from an in-process origin, mapped from the page cache (unless
    ``ram_object_max`` keeps it in RAM): returns the node and the object's URL."""

    async def answer(request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, headers={"Cache-Control": "max-age=600", "ETag": '"v1"'})

    origin.routes[path] = answer
    node = await make_node(
        {"parents": [origin.endpoint]},
        store_extra={"ram_object_max": ram_object_max},
        node_extra=node_extra,
    )
    url = f"http://127.0.0.1:{node.port}{path}"
    async with client.get(url) as r:
        assert await r.read() == body
    for _ in range(200):
        if node.node.store.index:
            break
        await asyncio.sleep(0.01)
    return node, url


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

    node, url = await _stored(
        make_node,
        origin,
        client,
        "/api/big.bin",
        BODY,
        {"sendfile": sendfile, "sendfile_max": sendfile_max},
    )
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

    node, url = await _stored(
        make_node, origin, client, "/api/small.bin", BODY[:100_000], {"sendfile": True}
    )
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


async def test_heads_before_sendfile_wait_for_the_body_and_their_descriptor_closes_with_it(
    make_node, origin, client, monkeypatch
) -> None:
    """The head of an answer whose body goes by sendfile(2) is sent with MSG_MORE (head and
    body leave in full segments), through one duplicate descriptor per connection that is
    closed with the connection: no descriptor left behind, and a ``Connection: close``
    answer still ends promptly (the duplicate would otherwise hold the socket open)."""
    import socket

    from edgeproxy.proxy import server as server_module

    if not server_module.MSG_MORE:
        pytest.skip("no MSG_MORE on this platform")
    flags: list[tuple[int, int]] = []
    real_send = socket.socket.send

    def recording(self, data, flags_=0):
        flags.append((len(data), flags_))
        return real_send(self, data, flags_)

    monkeypatch.setattr(socket.socket, "send", recording)

    node, url = await _stored(
        make_node, origin, client, "/api/m.bin", BODY[:100_000], {"sendfile": True}
    )
    async with client.get(url) as r:  # a hit: the body is mapped (its descriptors open)
        assert "hit" in r.headers["Cache-Status"] and await r.read() == BODY[:100_000]

    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    async def settle(expected: int) -> int:
        for _ in range(200):  # the server sees the clients' ends on its next loop turns
            if not node.server.connections and open_fds() <= expected:
                break
            await asyncio.sleep(0.01)
        return open_fds()

    await client.close()  # the warming connection: the baseline has no client connection
    baseline = await settle(10**6)
    # the connection objects sit in reference cycles (the parser holds its protocol): with
    # the collector off, only the explicit close at connection_lost frees the duplicate
    gc.disable()
    try:
        requests = {
            "fast": b"GET /api/m.bin HTTP/1.1\r\nHost: x\r\n",
            "fast range": b"GET /api/m.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=9-99008\r\n",
            "slow range": b"GET /api/m.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=9-99008\r\n"
            b'If-Range: "v1"\r\n',
        }
        expected_bodies = {"fast": BODY[:100_000], "fast range": BODY[9:99009]}
        expected_bodies["slow range"] = expected_bodies["fast range"]
        for name, request in requests.items():
            # keep-alive: two answers on the connection, one duplicate while it is open
            flags.clear()
            reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
            for _ in range(2):
                writer.write(request + b"\r\n")
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                assert await reader.readexactly(length) == expected_bodies[name], name
            assert [(n, f) for n, f in flags] == [(len(head), server_module.MSG_MORE)] * 2, name
            assert open_fds() == baseline + 3, name  # the client's socket, the server's, its copy
            writer.close()
            await writer.wait_closed()
            assert await settle(baseline) == baseline, name
            # Connection: close: the answer ends (EOF) once sent
            reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
            writer.write(request + b"Connection: close\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(-1), 10)
            assert answer.split(b"\r\n\r\n", 1)[1] == expected_bodies[name], name
            writer.close()
            assert await settle(baseline) == baseline, name
    finally:
        gc.enable()


async def test_heads_go_through_the_transport_when_no_descriptor_is_left(
    make_node, origin, client, monkeypatch
) -> None:
    """os.dup failing (EMFILE): heads and bodies go as before, whole and in order."""
    import errno

    from edgeproxy.proxy import server as server_module

    if not server_module.MSG_MORE:
        pytest.skip("no MSG_MORE on this platform: no duplicate is made")

    node, url = await _stored(
        make_node, origin, client, "/api/m.bin", BODY[:100_000], {"sendfile": True}
    )
    async with client.get(url) as r:  # a hit: the body is mapped before descriptors run out
        assert "hit" in r.headers["Cache-Status"] and await r.read() == BODY[:100_000]
    dups = []

    def no_fd(fd):
        dups.append(fd)
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(os, "dup", no_fd)
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    try:
        for _ in range(3):
            writer.write(b"GET /api/m.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            assert b"hit" in head and await reader.readexactly(100_000) == BODY[:100_000]
    finally:
        writer.close()
    assert len(dups) == 1  # tried once for the connection


async def test_a_body_larger_than_the_socket_takes_goes_by_sendfile_as_room_frees(
    make_node, origin, client, monkeypatch
) -> None:
    """With sendfile_max above the body, a body the socket cannot take at once (a client
    with a small receive window reading slowly) still goes by sendfile(2), call after call as
    the socket frees room, but for small nudges through the transport; every byte arrives
    in order and the connection serves the next request."""
    import socket

    big = os.urandom(6 * 1024 * 1024)
    sent: list[int] = []
    real = os.sendfile

    def counting(*args):
        n = real(*args)
        sent.append(n)
        return n

    node, _ = await _stored(
        make_node, origin, client, "/api/big6.bin", big, {"sendfile": True, "sendfile_max": "16MiB"}
    )
    monkeypatch.setattr(os, "sendfile", counting)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)  # a small window
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", node.port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=64 * 1024)
    try:
        for _ in range(2):
            writer.write(b"GET /api/big6.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert b" 200 " in head and b"hit" in head
            received = bytearray()
            while len(received) < len(big):
                received += await asyncio.wait_for(reader.read(64 * 1024), 10)
                if len(received) < 1024 * 1024:
                    await asyncio.sleep(0.001)  # slow at first: the socket fills
            assert bytes(received) == big
    finally:
        writer.close()
    assert len(sent) > 2  # several calls, each once the socket had room again
    assert sum(sent) >= 0.9 * 2 * len(big)  # all but the nudges from the page cache


def _server_lowat(node, writer: asyncio.StreamWriter) -> int:
    """TCP_NOTSENT_LOWAT of the node's side of the client connection ``writer`` is on (0:
    the system's)."""
    import socket

    here = writer.get_extra_info("sockname")
    (conn,) = [c for c in node.server.connections if c.transport.get_extra_info("peername") == here]
    sock = conn.transport.get_extra_info("socket")
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT)


async def _small_window_connection(port: int):
    """A client connection with a 32 KiB receive buffer (the server cannot hand the kernel a
    large body before the client reads it, whatever the host's defaults)."""
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return await asyncio.open_connection(sock=sock, limit=64 * 1024)


needs_lowat = pytest.mark.skipif(
    not hasattr(__import__("socket"), "TCP_NOTSENT_LOWAT"), reason="no TCP_NOTSENT_LOWAT here"
)


@needs_lowat
@pytest.mark.parametrize("sendfile_max", ["1MiB", "16MiB"])
async def test_a_body_over_1_mib_goes_with_notsent_lowat_and_then_the_system_setting(
    make_node, origin, client, sendfile_max
) -> None:
    """While a stored body over 1 MiB goes (copied, or by sendfile with sendfile_max above
    it), the connection's TCP_NOTSENT_LOWAT is the node's notsent_lowat; once it is out, the
    system's again, for the next answers on the connection."""
    big = os.urandom(3 * 1024 * 1024)
    node, _ = await _stored(
        make_node,
        origin,
        client,
        "/api/big3.bin",
        big,
        {"sendfile_max": sendfile_max, "notsent_lowat": "96KiB"},
    )
    reader, writer = await _small_window_connection(node.port)
    try:
        for _ in range(2):  # and again on the same connection
            writer.write(b"GET /api/big3.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert b" 200 " in head and b"hit" in head
            # the client has not read the body: the server is still sending it
            assert _server_lowat(node, writer) == 96 * 1024
            assert await asyncio.wait_for(reader.readexactly(len(big)), 10) == big
            for _ in range(100):  # the writer's last step runs once the transport drained
                if _server_lowat(node, writer) == 0:
                    break
                await asyncio.sleep(0.01)
            assert _server_lowat(node, writer) == 0
    finally:
        writer.close()


@needs_lowat
async def test_notsent_lowat_0_leaves_the_system_setting(make_node, origin, client) -> None:
    big = os.urandom(3 * 1024 * 1024)
    node, _ = await _stored(make_node, origin, client, "/api/big3.bin", big, {"notsent_lowat": 0})
    reader, writer = await _small_window_connection(node.port)
    try:
        writer.write(b"GET /api/big3.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert _server_lowat(node, writer) == 0
        assert await asyncio.wait_for(reader.readexactly(len(big)), 10) == big
    finally:
        writer.close()


@needs_lowat
async def test_pacing_a_connection_the_client_closed_is_a_no_op(make_node, origin, client) -> None:
    """A large answer starting after its client left (a miss that waited on upstream): the
    socket is gone (uvloop's wrapper then raises ValueError), the answer must not fail."""
    big = os.urandom(3 * 1024 * 1024)
    node, _ = await _stored(make_node, origin, client, "/api/big3.bin", big, {})
    _, writer = await _small_window_connection(node.port)
    here = writer.get_extra_info("sockname")
    for _ in range(200):
        conns = [
            c for c in node.server.connections if c.transport.get_extra_info("peername") == here
        ]
        if conns:
            break
        await asyncio.sleep(0.01)
    (conn,) = conns
    writer.close()
    for _ in range(200):
        if conn.closed:
            break
        await asyncio.sleep(0.01)
    assert conn.closed
    conn.pace(True)
    conn.pace(False)
    assert not conn.paced


@needs_lowat
async def test_a_ram_body_over_1_mib_goes_paced_too(make_node, origin, client) -> None:
    """With ram_object_max above 1 MiB, a hit on a RAM body over 1 MiB (and a range of
    more than 1 MiB of it) leaves the fast path for the writer, which paces it."""
    big = os.urandom(3 * 1024 * 1024)
    node, _ = await _stored(
        make_node, origin, client, "/api/ram3.bin", big, {"notsent_lowat": "96KiB"}, "4MiB"
    )
    store = node.node.store
    for _ in range(200):  # the RAM layer holds it once the fill is published
        if any(store.ram.get(k) is not None for k in store.index):
            break
        await asyncio.sleep(0.01)
    assert any(store.ram.get(k) is not None for k in store.index)
    reader, writer = await _small_window_connection(node.port)
    try:
        for extra, size in ((b"", len(big)), (b"Range: bytes=100-2000099\r\n", 2_000_000)):
            writer.write(b"GET /api/ram3.bin HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert b"hit" in head
            assert _server_lowat(node, writer) == 96 * 1024
            body = await asyncio.wait_for(reader.readexactly(size), 10)
            assert body == (big if size == len(big) else big[100:2000100])
    finally:
        writer.close()
