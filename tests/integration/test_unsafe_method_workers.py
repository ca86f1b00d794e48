"""RFC 9111 sec. 4.4 on a multi-process node: "A cache MUST invalidate the target URI ... when
it receives a non-error status code in response to an unsafe request method". Every worker
may hold responses for the URI (Vary variants stored by different workers): after a POST
through any one of them, none may serve what was stored before it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.support.multinode import MultiNode

pytestmark = pytest.mark.integration

VALUES = ["a", "b", "c", "d", "e", "f"]


async def _fresh_get(base: str, value: str) -> bytes:
    connector = aiohttp.TCPConnector(force_close=True)  # a new connection: any worker
    async with (
        aiohttp.ClientSession(connector=connector) as s,
        s.get(base + "/doc", headers={"X-Variant": value}) as r,
    ):
        assert r.status == 200
        return await r.read()


async def test_a_post_invalidates_every_workers_variants(origin, tmp_path: Path) -> None:
    version = {"n": 1}

    async def doc(request: web.Request) -> web.StreamResponse:
        if request.method == "POST":
            version["n"] += 1
            return web.Response(status=204)
        body = f"v{version['n']} for {request.headers.get('X-Variant')}".encode()
        return web.Response(
            body=body, headers={"Cache-Control": "max-age=600", "Vary": "X-Variant"}
        )

    async def other(request: web.Request) -> web.StreamResponse:
        return web.Response(status=204)

    origin.routes["/doc"] = doc
    origin.routes["/other"] = other
    node = MultiNode(tmp_path, origin.port, policy_extra='forward_headers = ["x-variant"]')
    base = node.base
    try:
        await node.start()
        for _ in range(4):  # every variant stored, by whichever worker took the connection
            for value in VALUES:
                assert await _fresh_get(base, value) == f"v1 for {value}".encode()
        async with aiohttp.ClientSession() as s:
            # an unsafe method elsewhere first: every worker forgets its in-memory view, so
            # the worker that takes the next POST knows none of the Vary variants of /doc
            async with s.post(base + "/other", data=b"x") as r:
                assert r.status == 204
            async with s.post(base + "/doc", data=b"x") as r:
                assert r.status == 204
        await asyncio.sleep(0.5)  # the master's ban reaches every worker (report batches)
        for _ in range(4):
            for value in VALUES:
                assert await _fresh_get(base, value) == f"v2 for {value}".encode()
    finally:
        node.stop()
