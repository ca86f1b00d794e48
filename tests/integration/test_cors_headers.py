"""CORS and the response-headers policy through a real node: preflights answered at the edge,
Access-Control-Allow-Origin computed per request on every answer path (miss, fast and slow
hits, 304, 206, followers of a fill, errors) and never carried from one client to another."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from tests.conftest import BUCKET, s3_upstream

pytestmark = pytest.mark.integration

APP = "https://app.example"
SUB = "https://player.music.example"
EVIL = "https://evil.example"
SECURITY = {
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "strict-origin-when-cross-origin",
    "X-Edge-Policy": "api",
}
API_CORS = {
    "allow_origins": [APP, "https://*.music.example"],
    "allow_methods": ["GET", "HEAD"],
    "allow_headers": ["X-Token"],
    "expose_headers": ["ETag", "Content-Range"],
    "max_age": "1h",
}


def _policies() -> list[dict]:
    return [
        {
            "name": "api",
            "path": "/api/*",
            "default_ttl": "5m",
            "cors": API_CORS,
            "response_headers": SECURITY,
        },
        {
            "name": "small",
            "path": "/small/*",
            "default_ttl": "1h",
            "cors": {"allow_origins": ["*"]},
        },
        {"name": "default", "path": "*", "default_ttl": "1h"},
    ]


async def _get(client, url: str, origin: str | None = None, method: str = "GET", **headers):
    if origin is not None:
        headers["Origin"] = origin
    async with client.request(method, url, headers=headers) as r:
        await r.read()
        return r.status, r.headers


def _acao(headers) -> list[str]:
    return headers.getall("Access-Control-Allow-Origin", [])


def _varies_on_origin(headers) -> bool:
    names = [n.strip().lower() for v in headers.getall("Vary", []) for n in v.split(",")]
    return names.count("origin") == 1


def _has_security_headers(headers) -> bool:
    return all(headers.get(name) == value for name, value in SECURITY.items())


async def test_preflight_is_answered_at_the_edge(make_node, relay, client) -> None:
    node = await make_node(s3_upstream(relay.endpoint), policies=_policies())
    url = f"http://127.0.0.1:{node.port}/api/tracks/0.json"
    status, headers = await _get(
        client,
        url,
        SUB,
        "OPTIONS",
        **{"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "x-token"},
    )
    assert status == 204
    assert _acao(headers) == [SUB]
    assert headers["Access-Control-Allow-Methods"] == "GET, HEAD"
    assert headers["Access-Control-Allow-Headers"] == "x-token"
    assert headers["Access-Control-Max-Age"] == "3600"
    assert _has_security_headers(headers)
    assert "Content-Length" not in headers and "Transfer-Encoding" not in headers

    for origin, extra in (
        (EVIL, {"Access-Control-Request-Method": "GET"}),
        (APP, {"Access-Control-Request-Method": "DELETE"}),
        (APP, {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "x-a"}),
    ):
        status, headers = await _get(client, url, origin, "OPTIONS", **extra)
        assert status == 403
        assert _acao(headers) == []
    assert relay.seen == []  # no preflight went upstream

    # an OPTIONS that is no preflight is an ordinary request (refused in front of S3)
    status, _ = await _get(client, url, APP, "OPTIONS")
    assert status == 405


async def test_allow_origin_per_request_on_miss_and_hits(make_node, relay, client) -> None:
    node = await make_node(s3_upstream(relay.endpoint), policies=_policies())
    url = f"http://127.0.0.1:{node.port}/api/tracks/1.json"

    status, headers = await _get(client, url, APP)  # miss
    assert status == 200 and "stored" in headers["Cache-Status"]
    assert _acao(headers) == [APP]
    assert headers["Access-Control-Expose-Headers"] == "ETag, Content-Range"
    assert _varies_on_origin(headers)
    assert _has_security_headers(headers)
    etag = headers["ETag"]

    fast = node.node.fast_hits
    status, headers = await _get(client, url, SUB)  # hit from the fast path
    assert node.node.fast_hits == fast + 1
    assert status == 200 and "hit" in headers["Cache-Status"]
    assert _acao(headers) == [SUB]  # not the first client's
    assert _varies_on_origin(headers) and _has_security_headers(headers)

    status, headers = await _get(client, url, EVIL)
    assert status == 200 and _acao(headers) == []
    assert "Access-Control-Expose-Headers" not in headers
    status, headers = await _get(client, url)  # no Origin: no CORS, but Vary for caches
    assert status == 200 and _acao(headers) == [] and _varies_on_origin(headers)
    assert node.node.fast_hits == fast + 3

    # slow-path answers from the stored entry
    status, headers = await _get(client, url, SUB, **{"If-None-Match": etag})
    assert status == 304 and _acao(headers) == [SUB] and _has_security_headers(headers)
    status, headers = await _get(client, url, APP, Range="bytes=0-9")
    assert status == 206 and _acao(headers) == [APP] and _has_security_headers(headers)
    assert headers["Content-Range"].startswith("bytes 0-9/")
    status, headers = await _get(client, url, EVIL, Range="bytes=0-9")
    assert status == 206 and _acao(headers) == []
    status, headers = await _get(client, url, APP, "HEAD", **{"Cache-Control": "max-age=0"})
    assert status == 200 and _acao(headers) == [APP]
    assert relay.count("GET", f"/{BUCKET}/api/tracks/1.json") == 2  # miss, then max-age=0


async def test_stored_errors_carry_the_policy_headers(make_node, relay, client) -> None:
    node = await make_node(s3_upstream(relay.endpoint), policies=_policies())
    url = f"http://127.0.0.1:{node.port}/api/tracks/404.json"
    status, headers = await _get(client, url, APP)
    assert status == 404 and _acao(headers) == [APP] and _has_security_headers(headers)
    status, headers = await _get(client, url, SUB)
    assert status == 404 and "hit" in headers["Cache-Status"]
    assert _acao(headers) == [SUB] and _has_security_headers(headers)


async def test_any_origin(make_node, relay, client) -> None:
    node = await make_node(s3_upstream(relay.endpoint), policies=_policies())
    url = f"http://127.0.0.1:{node.port}/small/one-kib.bin"
    for origin in (None, APP, EVIL, None):
        status, headers = await _get(client, url, origin)
        assert status == 200 and _acao(headers) == ["*"]
        assert "Access-Control-Expose-Headers" not in headers
    assert relay.count("GET", f"/{BUCKET}/small/one-kib.bin") == 1


async def test_origin_cors_fields_are_replaced_and_followers_get_their_own(
    make_node, origin, client
) -> None:
    """A parent that answers with its own Access-Control-* fields (reflecting whatever it saw),
    slowly, so concurrent requests with different origins follow one fill."""
    started = asyncio.Event()
    release = asyncio.Event()
    body = b"{" + b"x" * 300_000 + b"}"

    async def slow(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={
                "Content-Type": "application/json",
                "Cache-Control": "max-age=600",
                "Access-Control-Allow-Origin": "https://first-client.example",
                "Access-Control-Allow-Credentials": "true",
                "Vary": "Origin",
            }
        )
        resp.content_length = len(body)
        await resp.prepare(request)
        await resp.write(body[:1000])
        started.set()
        await release.wait()
        await resp.write(body[1000:])
        await resp.write_eof()
        return resp

    origin.routes["/api/slow.json"] = slow
    node = await make_node({"parents": [origin.endpoint]}, policies=_policies())
    url = f"http://127.0.0.1:{node.port}/api/slow.json"

    async def fetch(who: str | None):
        return await _get(client, url, who)

    leader = asyncio.ensure_future(fetch(APP))
    await asyncio.wait_for(started.wait(), 10)
    followers = [asyncio.ensure_future(fetch(who)) for who in (SUB, EVIL, None)]
    await asyncio.sleep(0.3)
    release.set()
    results = await asyncio.wait_for(asyncio.gather(leader, *followers), 20)
    assert origin.count("/api/slow.json") == 1
    assert "collapsed" in results[1][1]["Cache-Status"]
    for (status, headers), who in zip(results, (APP, SUB, EVIL, None), strict=True):
        assert status == 200
        assert _acao(headers) == ([who] if who in (APP, SUB) else [])
        assert "Access-Control-Allow-Credentials" not in headers
        assert _varies_on_origin(headers)
        assert _has_security_headers(headers)
    status, headers = await _get(client, url, EVIL)  # the stored entry: a hit
    assert status == 200 and _acao(headers) == []
    assert "Access-Control-Allow-Credentials" not in headers
