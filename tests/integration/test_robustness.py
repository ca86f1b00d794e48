"""Robustness of a live node: stale serving by policy (RFC 5861 windows configured on the
cache, RFC 9111 sec. 4.2.4), a full or read-only disk (pass-through, never a 500), slow
readers (bounded memory, idle timeouts)."""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from edgeproxy.cache.store import FS_CHECK_INTERVAL
from tests.support.origin import ScriptedOrigin

pytestmark = pytest.mark.integration

BODY = b"stale but useful\n" * 16


def _url(node: Any, path: str) -> str:
    return f"http://127.0.0.1:{node.port}{path}"


async def _get(client: aiohttp.ClientSession, url: str) -> tuple[int, Any, bytes]:
    async with client.get(url) as r:
        return r.status, r.headers.copy(), await r.read()


def _policy(**extra: Any) -> list[dict[str, Any]]:
    return [{"name": "api", "path": "/api/*", "default_ttl": "0s", "max_ttl": "1d", **extra}]


def _validating(cache_control: str, *, delay_304: float = 0.0, cc_304: str | None = None):
    async def handler(request: web.Request) -> web.StreamResponse:
        if request.headers.get("If-None-Match") == '"v1"':
            if delay_304:
                await asyncio.sleep(delay_304)
            return web.Response(
                status=304, headers={"ETag": '"v1"', "Cache-Control": cc_304 or cache_control}
            )
        return web.Response(
            body=BODY,
            headers={"ETag": '"v1"', "Cache-Control": cache_control, "Content-Type": "text/plain"},
        )

    return handler


def _then(first, rest):
    calls = 0

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        return await (first if calls == 1 else rest)(request)

    return handler


async def _fail_500(request: web.Request) -> web.StreamResponse:
    return web.Response(status=500, body=b"origin broke")


# ---- item 1: stale serving windows from the policy ------------------------------------------


async def test_policy_stale_if_error_serves_stale_on_a_500(make_node, origin, client) -> None:
    """The origin said nothing about stale-if-error; the policy's window lets the cache serve
    its stored response when the origin fails (RFC 9111 sec. 4.2.4, "disconnected ... by
    configuration"; RFC 5861 sec. 4)."""
    origin.routes["/api/sie"] = _then(_validating("max-age=0"), _fail_500)
    node = await make_node({"parents": [origin.endpoint]}, policies=_policy(stale_if_error="60s"))
    url = _url(node, "/api/sie")
    assert (await _get(client, url))[0] == 200
    status, headers, body = await _get(client, url)
    assert status == 200 and body == BODY
    assert "fwd=stale" in headers["Cache-Status"], headers["Cache-Status"]
    assert "stale-if-error" in headers["Cache-Status"]
    assert origin.count("/api/sie") == 2


async def test_without_the_policy_window_the_500_passes(make_node, origin, client) -> None:
    origin.routes["/api/sie0"] = _then(_validating("max-age=0"), _fail_500)
    node = await make_node({"parents": [origin.endpoint]}, policies=_policy())
    url = _url(node, "/api/sie0")
    assert (await _get(client, url))[0] == 200
    status, _, _ = await _get(client, url)
    assert status == 500


@pytest.mark.parametrize("cache_control", ["max-age=0, must-revalidate", "s-maxage=0"])
async def test_policy_stale_if_error_yields_to_the_origin(
    make_node, origin, client, cache_control
) -> None:
    """must-revalidate forbids any stale answer; s-maxage (implied proxy-revalidate for a
    shared cache, RFC 9111 sec. 5.2.2.10) forbids the configured window."""
    origin.routes["/api/sie-no"] = _then(_validating(cache_control), _fail_500)
    node = await make_node({"parents": [origin.endpoint]}, policies=_policy(stale_if_error="60s"))
    url = _url(node, "/api/sie-no")
    assert (await _get(client, url))[0] == 200
    assert (await _get(client, url))[0] == 500


async def test_policy_stale_if_error_serves_stale_when_the_origin_is_gone(
    make_node, client
) -> None:
    own = ScriptedOrigin()
    await own.start()
    stopped = False
    try:
        own.routes["/api/gone"] = _validating("max-age=0")
        node = await make_node(
            {"parents": [own.endpoint], "connect_timeout": "1s", "read_timeout": "2s"},
            policies=_policy(stale_if_error="60s"),
        )
        url = _url(node, "/api/gone")
        assert (await _get(client, url))[0] == 200
        await own.stop()
        stopped = True
        status, headers, body = await _get(client, url)
        assert status == 200 and body == BODY
        assert "fwd=stale" in headers["Cache-Status"], headers["Cache-Status"]
    finally:
        if not stopped:
            await own.stop()


async def test_policy_stale_while_revalidate_refreshes_once(make_node, origin, client) -> None:
    """RFC 5861 sec. 3 by policy: a stale entry is served at once and refreshed in the
    background, once, however many requests arrive meanwhile."""
    origin.routes["/api/swr"] = _validating("max-age=1", delay_304=0.3, cc_304="max-age=60")
    node = await make_node(
        {"parents": [origin.endpoint]}, policies=_policy(stale_while_revalidate="60s")
    )
    url = _url(node, "/api/swr")
    assert (await _get(client, url))[0] == 200
    await asyncio.sleep(1.3)  # now stale, within the policy's 60 s window
    started = time.monotonic()
    results = await asyncio.gather(*(_get(client, url) for _ in range(20)))
    elapsed = time.monotonic() - started
    assert all(status == 200 and body == BODY for status, _, body in results)
    swr = [
        h["Cache-Status"] for _, h, _ in results if "stale-while-revalidate" in h["Cache-Status"]
    ]
    assert swr, [h["Cache-Status"] for _, h, _ in results]
    assert elapsed < 0.3 + 0.25 or len(swr) == 20, elapsed  # nobody waited for the 304
    for _ in range(50):  # the background refresh ends
        if origin.count("/api/swr") >= 2:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.4)
    conditional = [h for m, t, h in origin.seen if t == "/api/swr" and "If-None-Match" in h]
    assert len(conditional) == 1, len(conditional)
    assert origin.count("/api/swr") == 2
    # refreshed: a fresh hit now
    _, headers, _ = await _get(client, url)
    assert "stale-while-revalidate" not in headers["Cache-Status"]
    assert origin.count("/api/swr") == 2


async def test_without_the_policy_window_a_stale_entry_is_revalidated_inline(
    make_node, origin, client
) -> None:
    origin.routes["/api/swr0"] = _validating("max-age=0")
    node = await make_node({"parents": [origin.endpoint]}, policies=_policy())
    url = _url(node, "/api/swr0")
    await _get(client, url)
    _, headers, _ = await _get(client, url)
    assert "fwd=stale" in headers["Cache-Status"] and "fwd-status=304" in headers["Cache-Status"]


# ---- item 2: a full (or read-only) disk degrades to pass-through ----------------------------


@pytest.fixture
def small_tmpfs(tmp_path: Path):
    """A 2 MiB tmpfs mounted for the store (root and Linux only)."""
    if sys.platform != "linux":
        pytest.skip("tmpfs mounts need Linux")
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (a read-only dir does not stop root)")
    mount = shutil.which("mount")
    if mount is None:
        pytest.skip("no mount(8) in this environment")
    target = tmp_path / "small-disk"
    target.mkdir()
    done = subprocess.run(
        [mount, "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(target)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


def _fill_disk(path: Path) -> None:
    """Write until the file system refuses (ENOSPC)."""
    chunk = b"\0" * 65536
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc


def _objects(origin: ScriptedOrigin, size: int) -> dict[str, bytes]:
    bodies: dict[str, bytes] = {}

    async def handler(request: web.Request) -> web.StreamResponse:
        body = bodies.setdefault(request.path, os.urandom(size))
        return web.Response(body=body, headers={"Cache-Control": "max-age=600"})

    for i in range(8):
        origin.routes[f"/api/obj{i}"] = handler
    return bodies


async def test_full_disk_passes_through_and_recovers(
    small_tmpfs, make_node, origin, client, caplog
) -> None:
    bodies = _objects(origin, 300 * 1024)
    node = await make_node(
        {"parents": [origin.endpoint]},
        store=small_tmpfs / "store",
        policies=_policy(),
        store_extra={"ram_size": "0"},
    )
    # stored while there is room
    status, headers, body = await _get(client, _url(node, "/api/obj0"))
    assert status == 200 and body == bodies["/api/obj0"]
    assert "stored" in headers["Cache-Status"]
    for _ in range(100):  # published (the fill ends just after the last byte)
        _, headers, _ = await _get(client, _url(node, "/api/obj0"))
        if "hit" in headers["Cache-Status"]:
            break
        await asyncio.sleep(0.02)
    filler = small_tmpfs / "filler"
    _fill_disk(filler)
    # the node reads the free space at most every FS_CHECK_INTERVAL (statvfs is not made on
    # every miss): a miss within that interval would still try to store, and fail once
    await asyncio.sleep(FS_CHECK_INTERVAL + 0.05)
    for i in (1, 2, 3):
        url = _url(node, f"/api/obj{i}")
        for _ in range(2):
            status, headers, body = await _get(client, url)
            assert status == 200, headers
            assert body == bodies[f"/api/obj{i}"]
            assert "stored" not in headers["Cache-Status"], headers["Cache-Status"]
    assert origin.count("/api/obj1") == 2  # passed through, not stored
    # the stored object is still a hit
    _, headers, body = await _get(client, _url(node, "/api/obj0"))
    assert "hit" in headers["Cache-Status"] and body == bodies["/api/obj0"]
    warnings = [
        r for r in caplog.records if r.name == "edgeproxy.store" and "cannot write" in r.message
    ]
    assert len(warnings) <= 1
    # space returns: new objects are stored again
    filler.unlink()
    await asyncio.sleep(1.1)
    status, headers, body = await _get(client, _url(node, "/api/obj4"))
    assert status == 200 and body == bodies["/api/obj4"]
    assert "stored" in headers["Cache-Status"], headers["Cache-Status"]
    _, headers, _ = await _get(client, _url(node, "/api/obj4"))
    assert "hit" in headers["Cache-Status"]
    assert origin.count("/api/obj4") == 1


async def test_disk_filling_up_under_a_chunked_fill_never_answers_500(
    small_tmpfs, make_node, origin, client
) -> None:
    """Without a length the node cannot check the room first: a fill that hits ENOSPC fails
    (that client's answer is cut, never a 500) and the next requests pass through."""
    body = os.urandom(1024 * 1024)

    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Cache-Control": "max-age=600"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(0, len(body), 64 * 1024):
            await resp.write(body[i : i + 64 * 1024])
        await resp.write_eof()
        return resp

    origin.routes["/api/chunked"] = chunked
    node = await make_node(
        {"parents": [origin.endpoint]},
        store=small_tmpfs / "store",
        policies=_policy(),
        store_extra={"ram_size": "0"},
    )
    filler = small_tmpfs / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * (1536 * 1024))  # about 512 KiB left: less than the body
    url = _url(node, "/api/chunked")
    outcomes = []
    for _ in range(3):
        try:
            async with client.get(url) as r:
                outcomes.append((r.status, await r.read() == body))
        except aiohttp.ClientPayloadError:
            outcomes.append(("cut", False))
    assert all(o[0] != 500 for o in outcomes), outcomes
    assert outcomes[-1] == (200, True), outcomes


# ---- item 3: slow readers cannot pin memory; idle timeouts close them -----------------------

BIG = 8 * 1024 * 1024


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_kib(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "RssAnon", "RssFile"):
                out[name] = int(value.split()[0])
    return out


@pytest.fixture
async def node_process(tmp_path: Path, origin):
    """A node started as its own process (``edgeproxy serve``), with a 2 s idle timeout."""
    if not os.path.exists("/proc/self/status"):
        pytest.skip("needs /proc (Linux)")
    body = os.urandom(BIG)

    async def big(request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, headers={"Cache-Control": "max-age=600"})

    origin.routes["/api/big"] = big
    port, admin = _free_port(), _free_port()
    conf = tmp_path / "node.toml"
    conf.write_text(
        f"""
[node]
name = "slow-t"
role = "edge"
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin}"

[node.limits]
idle_timeout = "2s"

[store]
path = "{tmp_path / "store"}"
max_size = "256MiB"
ram_size = "16MiB"

[upstream]
parents = ["{origin.endpoint}"]

[[policy]]
name = "api"
path = "/api/*"
default_ttl = "1h"
max_ttl = "1d"
"""
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeproxy.cli", "serve", "--config", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        for _ in range(200):
            try:
                _, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"node exited: {proc.stderr.read().decode()[-2000:]}")
                await asyncio.sleep(0.05)
        else:
            pytest.fail("node did not start listening")
        yield proc, port, body
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def test_slow_reader_does_not_pin_memory_and_is_timed_out(node_process, client) -> None:
    import socket

    proc, port, body = node_process
    url = f"http://127.0.0.1:{port}/api/big"
    for _ in range(2):  # fill, then a hit: the object is in the store
        async with client.get(url) as r:
            assert r.status == 200 and await r.read() == body
    await asyncio.sleep(0.3)
    before = _rss_kib(proc.pid)

    # a slow reader: 64 KiB/s for 3 s, with small socket buffers
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(sock, b"GET /api/big HTTP/1.1\r\nHost: x\r\n\r\n")
    received = 0
    peak = before["VmRSS"]
    started = time.monotonic()
    while time.monotonic() - started < 3.0:
        chunk = await asyncio.wait_for(loop.sock_recv(sock, 16 * 1024), 5)
        assert chunk, "closed while the client was still reading"
        received += len(chunk)
        peak = max(peak, _rss_kib(proc.pid)["VmRSS"])
        await asyncio.sleep(0.25)  # 16 KiB per 0.25 s = 64 KiB/s
    assert received < BIG // 2
    growth = peak - before["VmRSS"]
    print(f"slow reader: {received} bytes read, RSS {before} -> peak {peak} KiB")
    assert growth < 2 * 1024, f"RSS grew by {growth} KiB for a slow reader ({before})"

    # the client stops reading: the node gives up after its idle timeout (2 s)
    stopped = time.monotonic()
    await asyncio.sleep(3.0)
    closed = False
    while time.monotonic() - stopped < 8.0:
        try:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 1024 * 1024), 1)
        except ConnectionError:
            closed = True
            break
        except TimeoutError:
            continue  # nothing more, but not closed (yet)
        if not chunk:
            closed = True
            break
        received += len(chunk)
    sock.close()
    assert closed, "the node kept a client that stopped reading"
    assert received < BIG
    # and the node still serves
    async with client.get(url) as r:
        assert r.status == 200 and await r.read() == body


async def test_a_body_evicted_between_lookup_and_read_is_refetched(
    make_node, origin, client, monkeypatch
) -> None:
    """An eviction can unlink a body after the lookup found its entry and before the answer
    reads it: the request becomes a miss (fetched again), never a cut connection."""
    body = os.urandom(3 * 1024 * 1024)

    async def big(request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, headers={"Cache-Control": "max-age=600"})

    origin.routes["/api/big.bin"] = big
    node = await make_node({"parents": [origin.endpoint]}, store_extra={"ram_size": "0"})
    url = _url(node, "/api/big.bin")
    status, _, got = await _get(client, url)
    assert status == 200 and got == body
    store = node.node.store
    for _ in range(200):
        if store.index:
            break
        await asyncio.sleep(0.01)
    (entry,) = store.index.values()

    async def readable_without_mapping(e) -> bool:
        return True  # as if checked just before the eviction

    monkeypatch.setattr(store, "ensure_readable", readable_without_mapping)
    entry.mapped = None
    os.unlink(store.body_path(entry))  # the eviction's unlink
    status, _, got = await _get(client, url)
    assert status == 200 and got == body
    assert origin.count("/api/big.bin") == 2
