"""A follower in another process that reads a fill's head only after the part file was
published (renamed) never sees the file's size: it must read the body from the published
entry (when it is the announced one), never end the answer short or empty."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from edgeproxy.proxy.coalesce import Fill, FillHead, Outcome
from edgeproxy.proxy.fillread import FillFailed, fill_chunks

pytestmark = pytest.mark.integration

BODY = b"published body " * 40


async def _stored(make_node, origin, client, etag: str = '"v1"'):
    async def obj(request: web.Request) -> web.StreamResponse:
        return web.Response(body=BODY, headers={"Cache-Control": "max-age=600", "ETag": etag})

    origin.routes["/obj"] = obj
    node = await make_node({"parents": [origin.endpoint]})
    async with client.get(f"http://127.0.0.1:{node.port}/obj") as r:
        assert await r.read() == BODY
    for _ in range(200):
        if node.node.store.index:
            break
        await asyncio.sleep(0.01)
    (key_hex,) = node.node.store.index
    return node, key_hex


def _remote_fill_that_missed_the_file(key_hex: str, length: int | None, etag: str) -> Fill:
    fill = Fill(key_hex, "f1")
    fill.head = FillHead(
        status=200,
        reason="OK",
        headers=(("ETag", etag),),
        content_length=length,
        part_path="/nonexistent/part",
        ttl=600,
    )
    fill.outcome = Outcome.DONE
    fill.size_known = False  # what RemoteFill._poll sets when the part file was gone
    return fill


@pytest.mark.parametrize("length", [len(BODY), None])
async def test_follower_reads_the_published_body(make_node, origin, client, length) -> None:
    node, key_hex = await _stored(make_node, origin, client)
    fill = _remote_fill_that_missed_the_file(key_hex, length, '"v1"')
    got = b"".join(
        [bytes(c) async for c in fill_chunks(node.node.store, key_hex, fill, fill.head, 0, length)]
    )
    assert got == BODY


async def test_follower_refuses_another_published_body(make_node, origin, client) -> None:
    node, key_hex = await _stored(make_node, origin, client)
    fill = _remote_fill_that_missed_the_file(key_hex, len(BODY), '"v2"')  # another version
    with pytest.raises(FillFailed):
        async for _ in fill_chunks(node.node.store, key_hex, fill, fill.head, 0, len(BODY)):
            pass


async def test_follower_refuses_a_body_another_fill_published(make_node, origin, client) -> None:
    """Without validators and without a length, only the body's name tells which fill
    published it: a follower of fill A never sends the body fill B published meanwhile."""
    node, key_hex = await _stored(make_node, origin, client)
    fill = _remote_fill_that_missed_the_file(key_hex, None, '"v1"')
    fill.body_file = "another-fill.body"  # what fill A's done marker named
    with pytest.raises(FillFailed):
        async for _ in fill_chunks(node.node.store, key_hex, fill, fill.head, 0, None):
            pass
    fill.body_file = node.node.store.index[key_hex].body_file  # the one on disk: served
    got = b"".join(
        [bytes(c) async for c in fill_chunks(node.node.store, key_hex, fill, fill.head, 0, None)]
    )
    assert got == BODY


async def test_follower_far_behind_reads_the_fills_own_handle(make_node, origin, client, tmp_path):
    """A follower that fell out of the fill's ring (RING_BYTES behind) reads the part file
    through the handle the fill opened when it began: still readable after the publish
    renamed it and an eviction unlinked it (it used to fail with FileNotFoundError)."""
    node, key_hex = await _stored(make_node, origin, client)
    part = tmp_path / "fill.part"
    part.write_bytes(BODY)
    fill = Fill(key_hex, "f2")
    fill.head = FillHead(
        status=200,
        reason="OK",
        headers=(),
        content_length=len(BODY),
        part_path=str(part),
        ttl=600,
    )
    fill.reader = open(part, "rb", buffering=0)  # noqa: SIM115 - the fill owns it
    fill.written = len(BODY)
    fill.outcome = Outcome.DONE
    part.unlink()  # published, then evicted: the path is gone
    got = b"".join(
        [bytes(c) async for c in fill_chunks(node.node.store, key_hex, fill, fill.head, 0, None)]
    )
    assert got == BODY
    fill.reader.close()
