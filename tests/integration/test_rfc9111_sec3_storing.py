"""RFC 9111 sec. 3 (Storing Responses in Caches), end to end through a live node.

Each test quotes the requirement it checks. The scripted origin records what reached it, so
"stored" and "not stored" are proven by origin hits, never by reading the store.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

from tests.support.rfc import (
    BODY,
    fetch,
    http_date,
    is_hit,
    node_url,
    own_status,
    respond,
    sequence,
)

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    "cache_control",
    ["private", "private, max-age=60", "no-store", "no-store, max-age=60, public"],
)
async def test_private_and_no_store_responses_are_not_stored(
    make_node, origin, client, cache_control
) -> None:
    """RFC 9111 sec. 3: "A cache MUST NOT store a response to a request unless: ... the
    no-store cache directive is not present in the response ...; if the cache is shared: the
    private response directive is either not present or allows a shared cache to store a
    modified response". Sec. 5.2.2.7: "The unqualified private response directive indicates
    that a shared cache MUST NOT store the response"."""
    origin.routes["/api/secret"] = respond(headers={"Cache-Control": cache_control})
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/secret")

    status, headers, body = await fetch(client, url)
    assert status == 200 and body == BODY
    assert "stored" not in headers.get("Cache-Status", "")
    status, headers, body = await fetch(client, url)
    assert status == 200 and body == BODY
    assert "hit" not in headers.get("Cache-Status", "")
    assert origin.count("/api/secret") == 2


async def test_set_cookie_response_is_not_shared(make_node, origin, client) -> None:
    """RFC 9111 sec. 7.3 leaves cookies to the origin ("Set-Cookie ... does not inhibit
    caching ... Servers that wish to control caching of these responses are encouraged to emit
    appropriate Cache-Control response header fields"); RFC 2965 sec. 3.2.3: "If the cookie is
    intended for use by a single user, the Set-Cookie2 header SHOULD NOT be cached". This node
    is stricter by design (DESIGN.md: "Uncacheable answers (private, Set-Cookie) are never
    handed to other waiters"): a response setting a cookie is delivered to its requester only,
    and a second client never receives that cookie."""
    origin.routes["/api/login"] = sequence(
        respond(b"first", headers={"Cache-Control": "max-age=60", "Set-Cookie": "sid=one"}),
        respond(b"second", headers={"Cache-Control": "max-age=60"}),
    )
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/login")

    async with aiohttp.ClientSession() as first, aiohttp.ClientSession() as second:
        status, headers, body = await fetch(first, url)
        assert status == 200 and body == b"first"
        assert headers.getall("Set-Cookie", []) == ["sid=one"]

        status, headers, body = await fetch(second, url)
        assert status == 200 and body == b"second"
        assert "sid=one" not in " ".join(headers.getall("Set-Cookie", []))
        assert "hit" not in headers.get("Cache-Status", "")
    assert origin.count("/api/login") == 2


async def test_set_cookie_response_is_not_handed_to_collapsed_waiters(
    make_node, origin, client
) -> None:
    """Single flight must not become cookie sharing: RFC 2965 sec. 3.2.3 "If the cookie is
    intended for use by a single user, the Set-Cookie2 header SHOULD NOT be cached"; DESIGN.md:
    "Uncacheable answers (private, Set-Cookie) are never handed to other waiters". Concurrent
    requests for a key whose answer sets a cookie each get their own origin answer."""
    calls = 0

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        mine = calls
        await asyncio.sleep(0.2)
        return web.Response(
            body=f"user-{mine}".encode(),
            headers={"Cache-Control": "max-age=60", "Set-Cookie": f"sid={mine}"},
        )

    origin.routes["/api/session"] = handler
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/session")

    results = await asyncio.gather(*(fetch(client, url) for _ in range(5)))
    cookies = []
    for status, headers, body in results:
        assert status == 200
        got = headers.getall("Set-Cookie", [])
        assert len(got) == 1
        assert body == f"user-{got[0].removeprefix('sid=')}".encode()
        cookies.append(got[0])
    assert len(set(cookies)) == 5, cookies
    assert origin.count("/api/session") == 5


@pytest.mark.parametrize("cache_control", ["s-maxage=60", "max-age=0, s-maxage=60"])
async def test_s_maxage_response_is_stored(make_node, origin, client, cache_control) -> None:
    """RFC 9111 sec. 3: a shared cache may store a response containing "an s-maxage response
    directive"; sec. 5.2.2.10: "for a shared cache, the maximum age specified by this directive
    overrides the maximum age specified by either the max-age directive or the Expires header
    field"."""
    origin.routes["/api/shared"] = respond(headers={"Cache-Control": cache_control})
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/shared")

    status, headers, _ = await fetch(client, url)
    assert status == 200 and "stored" in headers["Cache-Status"]
    status, headers, body = await fetch(client, url)
    assert status == 200 and body == BODY
    assert "hit" in headers["Cache-Status"]
    assert origin.count("/api/shared") == 1


async def test_no_freshness_no_validator_and_default_ttl_zero_is_not_stored(
    make_node, origin, client
) -> None:
    """RFC 9111 sec. 3: "some caches will not store a response that has neither a cache
    validator nor an explicit expiration time, as such responses are not usually useful to
    store". With default_ttl 0 ("only what the origin says") nothing gives it a lifetime."""
    origin.routes["/api/plain"] = respond()
    node = await make_node(
        {"parents": [origin.endpoint]},
        policies=[{"name": "strict", "path": "*", "default_ttl": "0s", "max_ttl": "1d"}],
    )
    url = node_url(node, "/api/plain")

    status, headers, _ = await fetch(client, url)
    assert status == 200 and "stored" not in headers["Cache-Status"]
    status, headers, _ = await fetch(client, url)
    assert status == 200 and "hit" not in headers["Cache-Status"]
    assert origin.count("/api/plain") == 2


@pytest.mark.parametrize(
    ("fields", "stored"),
    [
        ({"Expires": "+600"}, True),
        ({"Cache-Control": "max-age=600"}, True),
        ({"Cache-Control": "s-maxage=600"}, True),
        ({"Cache-Control": "public"}, True),
        ({}, False),
        ({"Cache-Control": "no-transform, must-revalidate"}, False),
    ],
)
async def test_a_status_not_heuristically_cacheable_needs_explicit_permission(
    make_node, origin, client, fields, stored
) -> None:
    """Sec. 3: a cache MUST NOT store a response unless "the response contains at least one of
    the following: a public response directive ...; an Expires header field ...; a max-age
    response directive ...; if the cache is shared: an s-maxage response directive ...; a
    cache extension that allows it to be cached ...; or a status code that is defined as
    heuristically cacheable". A 302 is not heuristically cacheable (RFC 9110 sec. 15.4.3)."""
    fields = {k: http_date(600) if v == "+600" else v for k, v in fields.items()}
    origin.routes["/api/moved"] = respond(status=302, headers={"Location": "/x", **fields})
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/moved")

    status, headers, _ = await fetch(client, url)
    assert status == 302
    assert (own_status(headers["Cache-Status"]).get("stored") is True) is stored
    status, headers, _ = await fetch(client, url)
    assert status == 302 and headers["Location"] == "/x"
    assert is_hit(headers) is stored
    assert origin.count("/api/moved") == (1 if stored else 2)


async def test_responses_to_unsafe_methods_are_not_stored(make_node, origin, client) -> None:
    """Sec. 3: a cache stores a response only if "the request method is understood by the
    cache"; RFC 9110 sec. 9.3.3: "Responses to POST requests are only cacheable when they
    include explicit freshness information ... However, POST caching is not widely
    implemented." The node stores responses to GET (and answers HEAD from them) only: a
    fresh-looking answer to a POST is neither reused for the next POST nor for a GET."""

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        return web.Response(
            body=f"{request.method} answer".encode(),
            headers={"Cache-Control": "max-age=600", "Content-Location": "/api/form"},
        )

    origin.routes["/api/form"] = handler
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/form")

    for _ in range(2):
        status, headers, body = await fetch(client, url, method="POST", data=b"x")
        assert status == 200 and body == b"POST answer" and not is_hit(headers)
    status, headers, body = await fetch(client, url)
    assert body == b"GET answer" and not is_hit(headers)
    assert origin.count("/api/form", "POST") == 2
