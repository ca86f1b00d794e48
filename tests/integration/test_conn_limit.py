"""The connection limit (issue 10 item 4): beyond ``[node.limits] max_connections`` open client
connections, a new one is closed right after accept without an answer (nginx beyond its
``worker_connections``), counted in ``edgeproxy_connections_refused_total``; the connections
already open keep being served and the node takes new ones again once some close."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from edgeproxy.app import RunningNode
from edgeproxy.config import parse_config
from edgeproxy.seaweed import SeaweedServer
from tests.conftest import CATALOG, S3_ENV, node_config_dict, s3_upstream

pytestmark = pytest.mark.integration

SMALL = "small/one-kib.bin"
LIMIT = 3


@pytest.fixture
async def node(tmp_path: Path, seaweed: SeaweedServer) -> AsyncIterator[RunningNode]:
    data = node_config_dict(tmp_path / "store", s3_upstream(seaweed.endpoint))
    data["node"]["limits"] = {"max_connections": LIMIT}
    running = RunningNode(parse_config(data, str(tmp_path / "edge.toml")), environ=dict(S3_ENV))
    await running.start()
    yield running
    await running.stop(drain_timeout=1.0)


class Client:
    """One keep-alive connection speaking raw HTTP/1.1."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Client:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def get(self, target: str) -> tuple[int, bytes]:
        self.writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
        body = await asyncio.wait_for(self.reader.readexactly(length), 10)
        return int(head.split()[1]), body

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


async def refused(port: int) -> bool:
    """True when the node closes a new connection without answering its request."""
    client = await Client.open(port)
    try:
        await client.get(f"/{SMALL}")
    except (asyncio.IncompleteReadError, ConnectionError):
        return True
    finally:
        await client.close()
    return False


async def refused_total(node: RunningNode) -> float:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{node.admin_port}/metrics") as r,
    ):
        text = await r.text()
    match = re.search(r"^edgeproxy_connections_refused_total\{[^}]*\} (\S+)$", text, re.M)
    assert match is not None, text[:2000]
    return float(match.group(1))


async def test_connections_beyond_the_limit_are_closed_and_counted(node: RunningNode) -> None:
    expected = CATALOG[SMALL][1]
    before = await refused_total(node)
    open_ones = [await Client.open(node.port) for _ in range(LIMIT)]
    try:
        for client in open_ones:  # each is accepted and served (and so counted as open)
            assert await client.get(f"/{SMALL}") == (200, expected)
        assert await refused(node.port)
        assert await refused(node.port)
        assert await refused_total(node) == before + 2
        for client in open_ones:  # the open ones are not disturbed
            assert await client.get(f"/{SMALL}") == (200, expected)
        await open_ones.pop().close()
        for _ in range(50):  # the server sees the close on its next loop turn
            if len(node.server.connections) < LIMIT:
                break
            await asyncio.sleep(0.02)
        newcomer = await Client.open(node.port)
        open_ones.append(newcomer)
        assert await newcomer.get(f"/{SMALL}") == (200, expected)  # room again
        assert await refused(node.port)
    finally:
        for client in open_ones:
            await client.close()
    assert await refused_total(node) == before + 3
