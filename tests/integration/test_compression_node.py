"""Compressed variants through a live node (issue 5): negotiated, compressed once, stored, and
served many times; never for audio/images, ranges, no-transform or out-of-range sizes."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web

from edgeproxy.proxy.compress import decompress

pytestmark = pytest.mark.integration

DOC = json.dumps(
    [{"id": i, "title": f"Track {i}", "tags": ["rock", "jazz"]} for i in range(800)]
).encode()
POLICIES = [
    {"name": "api", "path": "/api/*", "default_ttl": "5m", "compress": True},
    {"name": "audio", "path": "/audio/*", "default_ttl": "1d", "compress": False},
    {"name": "default", "path": "*", "default_ttl": "1h"},
]


def _serve(body: bytes, content_type: str, extra: dict[str, str] | None = None):
    async def handler(request: web.Request) -> web.Response:
        headers = {"Cache-Control": "max-age=600", "ETag": '"v1"', "Content-Type": content_type}
        headers.update(extra or {})
        return web.Response(body=body, headers=headers)

    return handler


async def _get(client, url, accept_encoding=None, extra=None):
    headers = dict(extra or {})
    if accept_encoding is not None:
        headers["Accept-Encoding"] = accept_encoding
    async with client.get(url, headers=headers, skip_auto_headers=["Accept-Encoding"]) as r:
        return r.status, r.headers, await r.read()


async def _node(make_node, origin):
    return await make_node({"parents": [origin.endpoint]}, policies=POLICIES)


async def _store_identity(client, node, url):
    """GET once, then wait (bounded) until the fill is published: a request arriving while
    the fill is still publishing follows it and gets identity bytes, by design."""
    await _get(client, url)
    for _ in range(100):
        if node.node.store.index:
            return
        await asyncio.sleep(0.01)


@pytest.mark.parametrize(
    ("accept", "coding"),
    [
        ("br, gzip", "br"),
        ("gzip", "gzip"),
        ("gzip;q=1, br;q=0.5", "gzip"),
        ("*", "br"),
        ("identity", None),
        (None, None),
        ("br;q=0, gzip;q=0", None),
        ("deflate", None),
    ],
)
async def test_buckets_and_bodies(make_node, origin, client, accept, coding) -> None:
    """RFC 9110 sec. 12.5.3 negotiation into br / gzip / identity; the decoded body equals the
    origin's bytes; every answer of a compressible resource carries Vary: Accept-Encoding."""
    origin.routes["/api/doc.json"] = _serve(DOC, "application/json")
    node = await _node(make_node, origin)
    url = f"http://127.0.0.1:{node.port}/api/doc.json"
    await _store_identity(client, node, url)
    status, headers, body = await _get(client, url, accept)
    assert status == 200
    assert headers.get("Content-Encoding") == coding
    assert "accept-encoding" in headers["Vary"].lower()
    assert decompress(body, coding or "identity") == DOC
    if coding is not None:
        assert len(body) < len(DOC) // 3
        assert headers["ETag"] == f'"v1-{coding}"'
    else:
        assert headers["ETag"] == '"v1"'
    assert origin.count("/api/doc.json") == 1


async def test_variant_is_produced_once_under_concurrency(make_node, origin, client) -> None:
    """One compression per variant: 100 concurrent requests wanting br make one br variant."""
    origin.routes["/api/doc.json"] = _serve(DOC, "application/json")
    node = await _node(make_node, origin)
    url = f"http://127.0.0.1:{node.port}/api/doc.json"
    await _store_identity(client, node, url)
    answers = await asyncio.gather(*(_get(client, url, "br, gzip") for _ in range(100)))
    assert {a[1]["Content-Encoding"] for a in answers} == {"br"}
    assert all(decompress(a[2], "br") == DOC for a in answers)
    assert node.node.variants.produced == 1
    assert origin.count("/api/doc.json") == 1


@pytest.mark.parametrize(
    ("path", "body", "ctype", "extra"),
    [
        ("/api/a.mp3", DOC, "audio/mpeg", None),  # never audio
        ("/api/pic.jpg", DOC, "image/jpeg", None),  # never images (but SVG)
        ("/api/tiny.json", b'{"a": 1}', "application/json", None),  # below 1,000 B
        ("/api/nt.json", DOC, "application/json", {"Cache-Control": "max-age=600, no-transform"}),
        ("/audio/doc.json", DOC, "application/json", None),  # the policy does not compress
    ],
)
async def test_what_is_never_compressed(make_node, origin, client, path, body, ctype, extra):
    """Issue 5 item 2: audio/images (except SVG), bodies under the size floor and no-transform
    answers (RFC 9111 sec. 5.2.2.6) are served as they are."""
    origin.routes[path] = _serve(body, ctype, extra)
    node = await _node(make_node, origin)
    url = f"http://127.0.0.1:{node.port}{path}"
    await _get(client, url)
    _, headers, got = await _get(client, url, "br, gzip")
    compressible = (
        path.startswith("/api/")
        and ctype == "application/json"
        and len(body) >= 1000
        and extra is None
    )
    assert (headers.get("Content-Encoding") is not None) == compressible
    if not compressible:
        assert got == body


async def test_range_and_head(make_node, origin, client) -> None:
    """A Range request gets identity bytes (ranges address the identity representation); HEAD
    answers carry the same header fields as GET."""
    origin.routes["/api/doc.json"] = _serve(DOC, "application/json")
    node = await _node(make_node, origin)
    url = f"http://127.0.0.1:{node.port}/api/doc.json"
    await _store_identity(client, node, url)
    status, headers, body = await _get(client, url, "br", {"Range": "bytes=0-99"})
    assert status == 206 and "Content-Encoding" not in headers and body == DOC[:100]
    _, get_headers, get_body = await _get(client, url, "br")
    async with client.head(
        url, headers={"Accept-Encoding": "br"}, skip_auto_headers=["Accept-Encoding"]
    ) as r:
        assert r.headers["Content-Encoding"] == "br"
        assert r.headers["Content-Length"] == get_headers["Content-Length"] == str(len(get_body))
        assert r.headers["ETag"] == get_headers["ETag"]
        assert await r.read() == b""
