"""TLS at the edge and the viewer protocol policy (issue 10 item 9), on live nodes in front of
the real SeaweedFS origin: HTTPS next to plain HTTP, TLS 1.2 as the floor, ALPN http/1.1,
CloudFront's ``redirect-to-https`` / ``https-only`` (also for objects the fast path would
answer), certificate reload (in process, and by SIGHUP on a multi-process node) that leaves
established connections alone."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from edgeproxy.app import RunningNode
from edgeproxy.config import parse_config
from edgeproxy.seaweed import SeaweedServer
from tests.conftest import ACCESS_KEY, CATALOG, S3_ENV, SECRET_KEY, node_config_dict, s3_upstream
from tests.support.selfsigned import make_cert

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SMALL = "small/one-kib.bin"
IMAGE = "images/album-000.webp"
DOC = "api/tracks/0.json"

POLICIES = [
    {
        "name": "small",
        "path": "/small/*",
        "default_ttl": "1h",
        "viewer_protocol": "redirect-to-https",
    },
    {"name": "api", "path": "/api/*", "default_ttl": "1h", "viewer_protocol": "https-only"},
    {"name": "default", "path": "*", "default_ttl": "1h", "max_ttl": "1d"},  # allow-all
]


# ---- a raw HTTP/1.1 client over TCP or TLS (keep-alive, peer certificate) --------------------


class Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @property
    def ssl_object(self) -> ssl.SSLObject | None:
        return self.writer.get_extra_info("ssl_object")

    def peer_cert_der(self) -> bytes:
        obj = self.ssl_object
        assert obj is not None
        der = obj.getpeercert(binary_form=True)
        assert der is not None
        return der

    async def request(
        self, method: str, target: str, host: str = "127.0.0.1", close: bool = False
    ) -> tuple[int, dict[str, str], bytes]:
        lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
        if method == "POST":
            lines.append("Content-Length: 0")
        if close:
            lines.append("Connection: close")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)
        status_line, *fields = head.decode("latin-1").split("\r\n")
        headers: dict[str, str] = {}
        for line in fields:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        length = 0 if method == "HEAD" else int(headers.get("content-length", "0"))
        body = await asyncio.wait_for(self.reader.readexactly(length), 10)
        return int(status_line.split()[1]), headers, body

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


def client_context(cafile: Path, *, alpn: bool = True) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cafile))
    if alpn:
        ctx.set_alpn_protocols(["h2", "http/1.1"])
    return ctx


async def connect(port: int, ctx: ssl.SSLContext | None = None) -> Conn:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname="localhost" if ctx else None
    )
    return Conn(reader, writer)


async def fetch(
    port: int, target: str, ctx: ssl.SSLContext | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    conn = await connect(port, ctx)
    try:
        return await conn.request(method, target, close=True)
    finally:
        await conn.close()


# ---- nodes -----------------------------------------------------------------------------------


Starter = Callable[..., Awaitable[RunningNode]]


@pytest.fixture
async def start_node(tmp_path: Path, seaweed: SeaweedServer) -> AsyncIterator[Starter]:
    started: list[RunningNode] = []

    async def factory(node: dict[str, Any], policies: list[dict[str, Any]]) -> RunningNode:
        data = node_config_dict(
            tmp_path / f"store-{len(started)}", s3_upstream(seaweed.endpoint), policies=policies
        )
        data["node"].update(node)
        config = parse_config(data, str(tmp_path / "edge.toml"))
        running = RunningNode(config, environ=dict(S3_ENV))
        await running.start()
        started.append(running)
        return running

    yield factory
    for running in started:
        await running.stop(drain_timeout=1.0)


@pytest.fixture
def certs(tmp_path: Path) -> tuple[Path, Path]:
    """The node's certificate and key as the config names them (relative: tls/edge.*)."""
    return make_cert(tmp_path / "tls")


TLS_NODE = {"tls_cert": "tls/edge.crt", "tls_key": "tls/edge.key", "tls_listen": "127.0.0.1:0"}


# ---- HTTPS next to HTTP ----------------------------------------------------------------------


async def test_https_and_plain_http_serve_the_same_bytes(start_node, certs) -> None:
    node = await start_node(TLS_NODE, POLICIES)
    assert node.tls_port and node.tls_port != node.port
    expected = CATALOG[IMAGE][1]
    conn = await connect(node.tls_port, client_context(certs[0]))
    try:
        status, _, body = await conn.request("GET", f"/{IMAGE}")
        assert (status, body) == (200, expected)
        obj = conn.ssl_object
        assert obj is not None
        assert obj.version() in ("TLSv1.2", "TLSv1.3")
        assert obj.selected_alpn_protocol() == "http/1.1"  # never h2: we speak HTTP/1.1
        status, headers, body = await conn.request("GET", f"/{IMAGE}")  # keep-alive, a hit
        assert (status, body) == (200, expected) and "hit" in headers["cache-status"]
    finally:
        await conn.close()
    status, _, body = await fetch(node.port, f"/{IMAGE}")  # allow-all: plain HTTP too
    assert (status, body) == (200, expected)


async def test_tls_below_1_2_is_refused(start_node, certs, tmp_path: Path) -> None:
    node = await start_node(TLS_NODE, POLICIES)

    def old_client() -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_1
            ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        ctx.set_ciphers("ALL:@SECLEVEL=0")
        return ctx

    # control: this client does speak TLS 1.1 to a server that allows it
    loose = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        loose.minimum_version = ssl.TLSVersion.TLSv1
    loose.set_ciphers("ALL:@SECLEVEL=0")
    loose.load_cert_chain(str(certs[0]), str(certs[1]))

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    control = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=loose)
    try:
        try:
            conn = await connect(control.sockets[0].getsockname()[1], old_client())
        except (ssl.SSLError, OSError) as exc:
            pytest.skip(f"this OpenSSL cannot speak TLS 1.1 as a client ({exc})")
        assert conn.ssl_object is not None and conn.ssl_object.version() == "TLSv1.1"
        await conn.close()
    finally:
        control.close()
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await connect(node.tls_port, old_client())
    status, _, _ = await fetch(node.tls_port, f"/{IMAGE}", client_context(certs[0]))
    assert status == 200  # and the node still serves


async def test_tls_on_listen_speaks_no_plain_http(start_node, certs) -> None:
    node = await start_node({"tls_cert": "tls/edge.crt", "tls_key": "tls/edge.key"}, POLICIES)
    assert node.tls_port == node.port
    status, _, body = await fetch(node.port, f"/{SMALL}", client_context(certs[0]))
    assert (status, body) == (200, CATALOG[SMALL][1])
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    try:
        writer.write(f"GET /{SMALL} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        with contextlib.suppress(ConnectionError):
            data = await asyncio.wait_for(reader.read(4096), 10)
            assert not data.startswith(b"HTTP/"), data[:80]
    finally:
        writer.close()


async def test_a_silent_client_cannot_hold_a_tls_socket(start_node, certs) -> None:
    """No handshake within the header timeout: the socket is closed (the connection limit
    only sees connections once their handshake is done)."""
    node = await start_node({**TLS_NODE, "limits": {"header_timeout": "1s"}}, POLICIES)
    reader, writer = await asyncio.open_connection("127.0.0.1", node.tls_port)
    try:
        with contextlib.suppress(ConnectionError):
            assert await asyncio.wait_for(reader.read(), 20) == b""
    finally:
        writer.close()


# ---- viewer protocol -------------------------------------------------------------------------


async def test_redirect_to_https_also_for_what_the_fast_path_would_serve(start_node, certs) -> None:
    node = await start_node(TLS_NODE, POLICIES)
    ctx = client_context(certs[0])
    target = f"/{SMALL}?w=10"
    expected = CATALOG[SMALL][1]
    conn = await connect(node.tls_port, ctx)
    try:
        for _ in range(3):
            status, headers, body = await conn.request("GET", target)
            assert (status, body) == (200, expected)
        assert "hit" in headers["cache-status"]
    finally:
        await conn.close()
    hits = node.node.fast_hits
    assert hits >= 1  # a fresh RAM hit: exactly what try_fast answers without a task
    plain = await connect(node.port)
    try:
        status, headers, _ = await plain.request("GET", target, host=f"127.0.0.1:{node.port}")
        assert status == 301
        assert headers["location"] == f"https://127.0.0.1:{node.tls_port}{target}"
        status, headers, _ = await plain.request("HEAD", target, host="cdn.example")
        assert (status, headers["location"]) == (
            301,
            f"https://cdn.example:{node.tls_port}{target}",
        )
        status, headers, _ = await plain.request("POST", target)
        assert status == 403 and "location" not in headers  # CloudFront redirects no body
    finally:
        await plain.close()
    assert node.node.fast_hits == hits
    status, _, body = await fetch(node.tls_port, target, ctx)  # the Location works
    assert (status, body) == (200, expected)


async def test_https_only_refuses_plain_http(start_node, certs) -> None:
    node = await start_node(TLS_NODE, POLICIES)
    ctx = client_context(certs[0])
    expected = CATALOG[DOC][1]
    assert (await fetch(node.tls_port, f"/{DOC}", ctx))[::2] == (200, expected)
    assert (await fetch(node.tls_port, f"/{DOC}", ctx))[::2] == (200, expected)  # cached
    status, headers, body = await fetch(node.port, f"/{DOC}")
    assert status == 403 and b"HTTPS required" in body and "location" not in headers
    # allow-all policies still answer plain HTTP
    assert (await fetch(node.port, f"/{IMAGE}"))[0] == 200


# ---- reload ----------------------------------------------------------------------------------


async def test_reload_serves_new_connections_the_new_certificate(
    start_node, certs, tmp_path: Path
) -> None:
    node = await start_node(TLS_NODE, POLICIES)
    first_der = ssl.PEM_cert_to_DER_cert(certs[0].read_text())
    renewed = make_cert(tmp_path / "renewed", "edge", "localhost")
    trust = tmp_path / "both.pem"
    trust.write_text(certs[0].read_text() + renewed[0].read_text())
    ctx = client_context(trust)

    established = await connect(node.tls_port, ctx)
    try:
        assert established.peer_cert_der() == first_der
        assert (await established.request("GET", f"/{SMALL}"))[0] == 200
        shutil.copy(renewed[0], certs[0])
        shutil.copy(renewed[1], certs[1])
        assert node.reload_tls()
        fresh = await connect(node.tls_port, ctx)
        try:
            assert fresh.peer_cert_der() == ssl.PEM_cert_to_DER_cert(renewed[0].read_text())
            assert (await fresh.request("GET", f"/{SMALL}"))[0] == 200
        finally:
            await fresh.close()
        # the established connection goes on, with the certificate it was made with
        assert (await established.request("GET", f"/{SMALL}"))[0] == 200
        assert established.peer_cert_der() == first_der
    finally:
        await established.close()

    certs[0].write_text("not a certificate\n")  # a renewal gone wrong
    assert not node.reload_tls()
    kept = await connect(node.tls_port, ctx)
    try:
        assert kept.peer_cert_der() == ssl.PEM_cert_to_DER_cert(renewed[0].read_text())
    finally:
        await kept.close()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


@pytest.mark.parametrize("workers", [1, 2])
async def test_sighup_reloads_the_certificate(
    seaweed: SeaweedServer, certs, tmp_path: Path, workers: int
) -> None:
    """``edgeproxy serve``, plain HTTP and HTTPS. One process: SIGHUP swaps the certificate
    for new connections, an established one goes on. Two workers: SIGHUP to the master starts
    workers with the renewed certificate; the old ones finish what they serve and exit."""
    port, tls_port, admin_port = _free_port(), _free_port(), _free_port()
    config = tmp_path / "edge.toml"
    config.write_text(
        f"""
[node]
name = "edge-tls"
role = "edge"
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin_port}"
workers = {workers}
tls_cert = "tls/edge.crt"
tls_key = "tls/edge.key"
tls_listen = "127.0.0.1:{tls_port}"

[store]
path = "store"
max_size = "64MiB"
ram_size = "8MiB"

[upstream.s3]
endpoint = "{seaweed.endpoint}"
bucket = "music"
access_key_env = "EP_TEST_ACCESS"
secret_key_env = "EP_TEST_SECRET"

[[policy]]
name = "default"
path = "*"
default_ttl = "1h"
"""
    )
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(EP_TEST_ACCESS=ACCESS_KEY, EP_TEST_SECRET=SECRET_KEY, NO_PROXY="127.0.0.1")
    log_path = tmp_path / "node.log"
    workers_seen: set[int] = set()
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgeproxy.cli", "serve", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=str(REPO),
            env=env,
        )

    async def worker_pids() -> list[int] | None:
        """The workers (an empty list for a single process), None while not ready."""
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as s,
            s.get(f"http://127.0.0.1:{admin_port}/healthz") as r,
        ):
            if r.status != 200:
                return None
            found = list((await r.json()).get("workers", []))
            workers_seen.update(found)
            return found if len(found) == (workers if workers > 1 else 0) else None

    renewed = make_cert(tmp_path / "renewed", "edge", "localhost")
    trust = tmp_path / "both.pem"
    trust.write_text(certs[0].read_text() + renewed[0].read_text())
    ctx = client_context(trust)
    try:
        deadline = time.monotonic() + 30
        first: list[int] | None = None
        while time.monotonic() < deadline and first is None:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                first = await worker_pids()
            await asyncio.sleep(0.1)
        assert first is not None, log_path.read_text()[-3000:]
        first_der = ssl.PEM_cert_to_DER_cert(certs[0].read_text())
        conn = await connect(tls_port, ctx)
        assert conn.peer_cert_der() == first_der
        assert (await conn.request("GET", f"/{SMALL}", close=True))[::2] == (
            200,
            CATALOG[SMALL][1],
        )
        await conn.close()
        # plain HTTP next to it (another object: the other worker's request for an object
        # still being published can be cut, a coalescing race outside this test's subject)
        assert (await fetch(port, f"/{IMAGE}"))[::2] == (200, CATALOG[IMAGE][1])

        established = await connect(tls_port, ctx)
        assert (await established.request("GET", f"/{SMALL}"))[0] == 200

        shutil.copy(renewed[0], certs[0])
        shutil.copy(renewed[1], certs[1])
        os.kill(proc.pid, signal.SIGHUP)
        new_der = ssl.PEM_cert_to_DER_cert(renewed[0].read_text())
        seen_new = False
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not seen_new:
            # an old worker closes connections it has not read a request from yet when it
            # stops (as nginx does with idle keep-alive ones): try again
            with contextlib.suppress(ssl.SSLError, ConnectionError, asyncio.IncompleteReadError):
                conn = await connect(tls_port, ctx)
                try:
                    status, _, body = await conn.request("GET", f"/{SMALL}", close=True)
                    assert (status, body) == (200, CATALOG[SMALL][1])
                    seen_new = conn.peer_cert_der() == new_der
                finally:
                    await conn.close()
            await asyncio.sleep(0.1)
        assert seen_new, log_path.read_text()[-3000:]
        assert proc.poll() is None  # SIGHUP reloads; it never stops the node
        if workers == 1:
            # the connection made before the reload goes on, with the certificate it had
            assert (await established.request("GET", f"/{SMALL}"))[0] == 200
            assert established.peer_cert_der() == first_der
        else:  # the old generation drains (closing idle connections, as nginx), then exits
            deadline = time.monotonic() + 30
            while set(await worker_pids() or first) & set(first):
                assert time.monotonic() < deadline, log_path.read_text()[-3000:]
                await asyncio.sleep(0.1)
        await established.close()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        for pid in workers_seen:
            if not _gone(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
