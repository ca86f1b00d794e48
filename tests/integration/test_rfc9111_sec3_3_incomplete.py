"""RFC 9111 sec. 3.3 (Storing Incomplete Responses) and RFC 9112 sec. 8 (incomplete
messages), end to end through a live node.

Each test quotes the requirement it checks. The scripted origin records what reached it, so
"stored" and "not stored" are proven by origin hits, never by reading the store.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

from tests.support.rfc import (
    fetch,
    node_url,
    respond,
    sequence,
)

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_truncated_upstream_body_fails_the_client_and_is_not_stored(
    make_node, origin, client, framing
) -> None:
    """RFC 9112 sec. 8: "A client that receives an incomplete response message, which can
    occur when a connection is closed prematurely or when decoding a supposed chunked transfer
    coding fails, MUST record the message as incomplete"; RFC 9111 sec. 3.3: "A cache MUST NOT
    use an incomplete response to answer requests unless the response has been made complete".
    The node must pass the failure on (the client sees a failed transfer, never a short clean
    answer) and must not store anything."""
    full = b"z" * 100_000

    async def truncated(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Cache-Control": "max-age=600"})
        if framing == "content-length":
            resp.content_length = len(full)
        else:
            resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(full[:50_000])
        assert request.transport is not None
        request.transport.abort()
        return resp

    origin.routes["/audio/cut.mp3"] = sequence(truncated, respond(full))
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/audio/cut.mp3")

    received = b""
    with pytest.raises(aiohttp.ClientError):
        async with client.get(url) as r:
            assert r.status == 200
            async for chunk in r.content.iter_any():
                received += chunk
    assert len(received) < len(full)

    status, headers, body = await fetch(client, url)
    assert status == 200 and body == full
    assert "hit" not in headers["Cache-Status"]
    assert origin.count("/audio/cut.mp3") == 2
    status, headers, body = await fetch(client, url)
    assert body == full and "hit" in headers["Cache-Status"]
    assert origin.count("/audio/cut.mp3") == 2


async def test_origin_stalling_mid_body_cuts_the_client_and_stores_nothing(
    make_node, origin, client
) -> None:
    """RFC 9112 sec. 8: an incomplete message must be recorded as incomplete; RFC 9111
    sec. 3.3: "A cache MUST NOT use an incomplete response to answer requests unless the
    response has been made complete". An origin that stops sending mid-body (read_timeout =
    1s) leaves the client with a failed transfer and the store without an entry."""
    release = asyncio.Event()

    async def stall(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Cache-Control": "max-age=600"})
        resp.content_length = 100_000
        await resp.prepare(request)
        await resp.write(b"s" * 10_000)
        await release.wait()
        return resp

    origin.routes["/api/stall"] = sequence(stall, respond(b"s" * 100_000))
    node = await make_node({"parents": [origin.endpoint], "read_timeout": "1s"})
    url = node_url(node, "/api/stall")
    try:
        with pytest.raises(aiohttp.ClientError):
            async with client.get(url) as r:
                await asyncio.wait_for(r.read(), 15)
    finally:
        release.set()
    status, headers, body = await fetch(client, url)
    assert status == 200 and len(body) == 100_000
    assert "hit" not in headers["Cache-Status"]
    assert origin.count("/api/stall") == 2
