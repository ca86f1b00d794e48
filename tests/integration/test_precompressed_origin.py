"""Objects the origin stores already compressed (issue 5 item 5), and the policy options of
item 1/2 (406, size limits), through a live node.

RFC 9110 sec. 12.5.3: a request without Accept-Encoding has no preference, so the origin's
coded bytes go out as they are (as S3 itself answers, and so tiers pass them on coded); a
client whose Accept-Encoding excludes the coding gets the decoded bytes, produced once and
stored as the ``identity`` variant of the entry (or decoded while streaming when too large).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os

import brotli
import pytest
from aiohttp import web

from edgeproxy.proxy import variants as variants_module
from tests.conftest import BUCKET, s3_upstream

pytestmark = pytest.mark.integration

DOC = json.dumps([{"id": i, "title": f"Track {i}", "genre": "jazz"} for i in range(2000)]).encode()
GZ = gzip.compress(DOC, mtime=0)
BR = brotli.compress(DOC)
POLICIES = [
    {"name": "api", "path": "/api/*", "default_ttl": "5m", "compress": True},
    {"name": "strict", "path": "/strict/*", "default_ttl": "5m", "compress": True,
     "unacceptable_encoding": "406"},
    {"name": "small", "path": "/small/*", "default_ttl": "5m", "compress": True,
     "compress_min_size": 100, "compress_max_size": 20_000},
    {"name": "default", "path": "*", "default_ttl": "1h"},
]  # fmt: skip


def _coded(body: bytes, coding: str, etag: str = '"v1"'):
    async def handler(request: web.Request) -> web.Response:
        headers = {
            "Cache-Control": "max-age=600",
            "ETag": etag,
            "Content-Type": "application/json",
            "Content-Encoding": coding,
        }
        return web.Response(body=body, headers=headers)

    return handler


def _plain(body: bytes, ctype: str = "application/json"):
    async def handler(request: web.Request) -> web.Response:
        headers = {"Cache-Control": "max-age=600", "ETag": '"p1"', "Content-Type": ctype}
        return web.Response(body=body, headers=headers)

    return handler


async def _get(client, url, accept_encoding=None, extra=None):
    headers = dict(extra or {})
    if accept_encoding is not None:
        headers["Accept-Encoding"] = accept_encoding
    async with client.get(url, headers=headers, skip_auto_headers=["Accept-Encoding"]) as r:
        return r.status, r.headers, await r.read()


async def _wait_stored(node, count: int = 1) -> None:
    for _ in range(200):
        if len(node.node.store.index) >= count:
            return
        await asyncio.sleep(0.01)


@pytest.mark.parametrize(("coding", "coded_body"), [("gzip", GZ), ("br", BR)])
@pytest.mark.parametrize(
    ("accept", "decoded"),
    [(None, False), ("gzip, br", False), ("identity", True), ("deflate", True)],
)
async def test_coded_object_served_coded_or_decoded(
    make_node, origin, client, coding, coded_body, accept, decoded
) -> None:
    """Clients that accept the coding (or say nothing) get the origin's bytes; the others get
    the decoded bytes with a distinct ETag; every answer says Vary: Accept-Encoding; the
    origin is asked once, whoever asked first."""
    origin.routes["/api/doc.json"] = _coded(coded_body, coding)
    node = await make_node({"parents": [origin.endpoint]}, policies=POLICIES)
    url = f"http://127.0.0.1:{node.port}/api/doc.json"
    for _ in range(3):  # cold miss, then hits (the decoded variant is made once)
        status, headers, body = await _get(client, url, accept)
        assert status == 200
        assert "accept-encoding" in headers["Vary"].lower()
        if decoded:
            assert body == DOC
            assert "Content-Encoding" not in headers
            assert headers["ETag"] == f'"v1-{coding}-identity"'
        else:
            assert body == coded_body
            assert headers["Content-Encoding"] == coding
            assert headers["ETag"] == '"v1"'
        await _wait_stored(node)
    assert origin.count("/api/doc.json") == 1


async def test_decoded_and_coded_clients_share_one_fetch(make_node, origin, client) -> None:
    """A cold object asked for concurrently by clients that accept gzip and clients that do
    not: one origin request; each client gets the bytes it can read."""
    origin.routes["/api/doc.json"] = _coded(GZ, "gzip")
    node = await make_node({"parents": [origin.endpoint]}, policies=POLICIES)
    url = f"http://127.0.0.1:{node.port}/api/doc.json"
    accepts = ["gzip", "identity", "br", None] * 10
    answers = await asyncio.gather(*(_get(client, url, a) for a in accepts))
    for accept, (status, headers, body) in zip(accepts, answers, strict=True):
        assert status == 200
        if accept in ("identity", "br"):
            assert body == DOC and "Content-Encoding" not in headers
        else:
            assert body == GZ and headers["Content-Encoding"] == "gzip"
    assert origin.count("/api/doc.json") == 1


async def test_large_coded_object_decoded_while_streaming(
    make_node, origin, client, monkeypatch
) -> None:
    """A coded body above the stored-variant limit is decoded per request while streaming
    (no Content-Length), and no identity variant is stored."""
    monkeypatch.setattr(variants_module, "DECODE_STORE_LIMIT", 1000)
    origin.routes["/api/doc.json"] = _coded(GZ, "gzip")
    node = await make_node({"parents": [origin.endpoint]}, policies=POLICIES)
    url = f"http://127.0.0.1:{node.port}/api/doc.json"
    await _get(client, url, "gzip")
    await _wait_stored(node)
    status, headers, body = await _get(client, url, "identity")
    assert status == 200 and body == DOC
    assert "Content-Length" not in headers and headers.get("Transfer-Encoding") == "chunked"
    assert len(node.node.store.index) == 1  # only the coded entry
    # a conditional request with the decoded form's validator is answered 304
    status, headers, _ = await _get(
        client, url, "identity", {"If-None-Match": '"v1-gzip-identity"'}
    )
    assert status == 304
    assert origin.count("/api/doc.json") == 1


async def test_corrupt_coded_body_cuts_the_decoding_client(make_node, origin, client) -> None:
    """Coded bytes that do not decode are never passed off as a complete decoded answer."""
    origin.routes["/api/bad.json"] = _coded(GZ[: len(GZ) // 2], "gzip")
    node = await make_node({"parents": [origin.endpoint]}, policies=POLICIES)
    url = f"http://127.0.0.1:{node.port}/api/bad.json"
    status, _, body = await _get(client, url, "gzip")  # as the origin sent it
    assert status == 200 and body == GZ[: len(GZ) // 2]
    await _wait_stored(node)
    with pytest.raises(Exception) as failure:
        await _get(client, url, "identity")
    assert "payload" in repr(failure.value).lower() or "closed" in repr(failure.value).lower()


async def test_invalidation_removes_the_decoded_variant(make_node, origin, client) -> None:
    """Hard invalidation drops the coded entry and its decoded variant: the next request for
    either goes to the origin."""
    origin.routes["/api/doc.json"] = _coded(GZ, "gzip")
    node = await make_node({"parents": [origin.endpoint]}, policies=POLICIES)
    url = f"http://127.0.0.1:{node.port}/api/doc.json"
    await _get(client, url, "gzip")
    await _wait_stored(node)
    await _get(client, url, "identity")
    await _wait_stored(node, 2)
    assert len(node.node.store.index) == 2
    await node.node.invalidate_uri("/api/doc.json")
    assert len(node.node.store.index) == 0
    status, _, body = await _get(client, url, "identity")
    assert status == 200 and body == DOC
    assert origin.count("/api/doc.json") == 2


async def test_real_s3_object_stored_gzip(make_node, seaweed, relay, client) -> None:
    """An object uploaded to the real S3 origin with Content-Encoding: gzip metadata."""
    seaweed.put_object(
        BUCKET, "api/precoded.json", GZ, "application/json", headers={"Content-Encoding": "gzip"}
    )
    node = await make_node(s3_upstream(relay.endpoint), policies=POLICIES)
    url = f"http://127.0.0.1:{node.port}/api/precoded.json"
    status, headers, body = await _get(client, url, "gzip, br")
    assert status == 200 and headers["Content-Encoding"] == "gzip" and body == GZ
    await _wait_stored(node)
    status, headers, body = await _get(client, url, "identity")
    assert status == 200 and body == DOC and "Content-Encoding" not in headers
    assert relay.count("GET", f"/{BUCKET}/api/precoded.json") == 1


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("identity;q=0", 406),  # nothing this cache can send is acceptable
        ("*;q=0", 406),
        ("br;q=0, gzip;q=0, identity;q=0", 406),
        ("gzip, identity;q=0", 200),
        ("identity", 200),
        (None, 200),
    ],
)
async def test_406_only_when_the_policy_asks(make_node, origin, client, accept, expected) -> None:
    """RFC 9110 sec. 12.5.3/15.5.7: with nothing acceptable, a strict policy answers 406; the
    default policy answers identity anyway (sec. 12.1 allows it)."""
    origin.routes["/strict/doc.json"] = _plain(DOC)
    origin.routes["/api/doc.json"] = _plain(DOC)
    node = await make_node({"parents": [origin.endpoint]}, policies=POLICIES)
    for path in ("/strict/doc.json", "/api/doc.json"):  # cold, then from the cache
        url = f"http://127.0.0.1:{node.port}{path}"
        await _get(client, url)
        await _wait_stored(node, 1 if path.startswith("/strict") else 2)
        status, headers, body = await _get(client, url, accept)
        want = expected if path.startswith("/strict") else 200
        assert status == want, (path, accept)
        if status == 406:
            assert "accept-encoding" in headers["Vary"].lower()
        else:
            coding = headers.get("Content-Encoding", "identity")
            assert (gzip.decompress(body) if coding == "gzip" else body) == DOC


async def test_406_for_a_stored_type_never_compressed(make_node, origin, client) -> None:
    """An image (never compressed) asked for with identity excluded: 406 on a strict policy."""
    origin.routes["/strict/pic.jpg"] = _plain(b"\xff\xd8" + b"j" * 5000, "image/jpeg")
    node = await make_node({"parents": [origin.endpoint]}, policies=POLICIES)
    url = f"http://127.0.0.1:{node.port}/strict/pic.jpg"
    await _get(client, url)
    await _wait_stored(node)
    status, _, _ = await _get(client, url, "gzip, identity;q=0")
    assert status == 406
    status, _, body = await _get(client, url, "gzip")
    assert status == 200 and body.startswith(b"\xff\xd8")


@pytest.mark.parametrize(("size", "compressed"), [(99, False), (5000, True), (20_001, False)])
async def test_policy_size_limits(make_node, origin, client, size, compressed) -> None:
    """compress_min_size / compress_max_size bound what a policy compresses."""
    body = (b'{"k": "' + b"a" * size)[:size]
    origin.routes["/small/doc.json"] = _plain(body)
    node = await make_node({"parents": [origin.endpoint]}, policies=POLICIES)
    url = f"http://127.0.0.1:{node.port}/small/doc.json"
    await _get(client, url)
    await _wait_stored(node)
    status, headers, got = await _get(client, url, "gzip")
    assert status == 200
    assert ("Content-Encoding" in headers) == compressed
    assert (gzip.decompress(got) if compressed else got) == body


async def test_coded_object_is_never_sliced(make_node, origin, client) -> None:
    """Slices of a coded body cannot be decoded one by one: a large origin-coded object under
    a sliced policy is stored whole, and a client refusing the coding gets decoded bytes."""
    big = os.urandom(300_000)
    coded = gzip.compress(big, mtime=0)

    async def ranged(request: web.Request) -> web.StreamResponse:
        headers = {
            "Cache-Control": "max-age=600",
            "ETag": '"g1"',
            "Content-Type": "application/octet-stream",
            "Content-Encoding": "gzip",
        }
        rng = request.headers.get("Range")
        if rng:
            first, _, last = rng.partition("=")[2].partition("-")
            a, b = int(first), min(int(last or len(coded) - 1), len(coded) - 1)
            headers["Content-Range"] = f"bytes {a}-{b}/{len(coded)}"
            return web.Response(status=206, body=coded[a : b + 1], headers=headers)
        return web.Response(body=coded, headers=headers)

    origin.routes["/big/f.bin"] = ranged
    policies = [
        {"name": "big", "path": "/big/*", "default_ttl": "5m", "slice_size": "64KiB",
         "slice_threshold": "128KiB"},
        {"name": "default", "path": "*", "default_ttl": "1h"},
    ]  # fmt: skip
    node = await make_node({"parents": [origin.endpoint]}, policies=policies)
    url = f"http://127.0.0.1:{node.port}/big/f.bin"
    status, headers, body = await _get(client, url, "gzip", {"Range": "bytes=0-9"})
    assert status == 206 and body == coded[:10] and headers["Content-Encoding"] == "gzip"
    await _wait_stored(node)
    assert all(e.sliced is None for e in node.node.store.index.values())
    status, headers, body = await _get(client, url, "identity")
    assert status == 200 and body == big and "Content-Encoding" not in headers


async def test_background_refresh_keeps_vary_accept_encoding(make_node, origin, client) -> None:
    """A stale-while-revalidate refresh (RFC 5861) of an origin-coded object is stored with
    the same Vary: Accept-Encoding as the answer it replaces (RFC 9110 sec. 12.5.5)."""
    calls = {"n": 0}

    async def coded(request: web.Request) -> web.StreamResponse:
        calls["n"] += 1
        return web.Response(
            body=GZ,
            headers={
                # already stale when stored (Age > max-age), inside its SWR window
                "Cache-Control": "max-age=1, stale-while-revalidate=600",
                "Age": "5",
                "ETag": f'"e{calls["n"]}"',
                "Content-Type": "application/json",
                "Content-Encoding": "gzip",
            },
        )

    origin.routes["/api/swr.json"] = coded
    node = await make_node({"parents": [origin.endpoint]}, policies=POLICIES)
    url = f"http://127.0.0.1:{node.port}/api/swr.json"
    _, first, _ = await _get(client, url, "gzip")
    assert "accept-encoding" in first["Vary"].lower()
    await _wait_stored(node)
    _, stale, _ = await _get(client, url, "gzip")  # served stale; refreshed in the background
    assert "stale-while-revalidate" in stale["Cache-Status"]
    for _ in range(200):  # the refresh is published
        entry = next(iter(node.node.store.index.values()), None)
        if entry is not None and entry.etag == '"e2"':
            break
        await asyncio.sleep(0.01)
    assert entry is not None and entry.etag == '"e2"'
    assert "accept-encoding" in dict((n.lower(), v.lower()) for n, v in entry.headers)["vary"]
