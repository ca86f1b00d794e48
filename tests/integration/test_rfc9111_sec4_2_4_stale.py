"""RFC 9111 sec. 4.2.4 (Serving Stale Responses) with RFC 5861 (stale-if-error,
stale-while-revalidate), end to end through a live node.

Each test quotes the requirement it checks. The scripted origin records what reached it, so
"stored" and "not stored" are proven by origin hits, never by reading the store.
"""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from tests.support.rfc import (
    BODY,
    fetch,
    is_hit,
    node_url,
    own_status,
    respond,
    sequence,
    validating,
)

pytestmark = pytest.mark.integration


async def test_stale_if_error_serves_the_stored_body_on_a_500(make_node, origin, client) -> None:
    """RFC 5861 sec. 4: "The stale-if-error Cache-Control extension indicates that when an
    error is encountered, a cached stale response MAY be used to satisfy the request,
    regardless of other freshness information" and "An error is any situation that would
    result in a 500, 502, 503, or 504 HTTP response status code being returned"."""
    origin.routes["/api/sie"] = sequence(
        validating(cache_control="max-age=0, stale-if-error=60"),
        respond(b"origin broke", status=500),
    )
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/sie")

    await fetch(client, url)
    status, headers, body = await fetch(client, url)
    assert status == 200
    assert body == BODY
    assert "stale-if-error" in headers["Cache-Status"]
    assert origin.count("/api/sie") == 2


async def test_stale_if_error_serves_the_stored_body_when_the_origin_drops(
    make_node, origin, client
) -> None:
    """RFC 5861 sec. 4: an error is "any situation that would result in a 500, 502, 503, or
    504 HTTP response status code being returned" - a connection closed without an answer
    (502) is one."""

    async def hang_up(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.abort()
        return web.Response(body=b"never sent")

    origin.routes["/api/sie-drop"] = sequence(
        validating(cache_control="max-age=0, stale-if-error=60"), hang_up
    )
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/sie-drop")

    await fetch(client, url)
    status, _, body = await fetch(client, url)
    assert status == 200
    assert body == BODY


async def test_must_revalidate_forbids_stale_if_error(make_node, origin, client) -> None:
    """RFC 9111 sec. 4.2.4: "A cache MUST NOT generate a stale response if it is prohibited by
    an explicit in-protocol directive (e.g., by a no-cache response directive, a
    must-revalidate response directive ...)"; sec. 5.2.2.2: "if a cache is disconnected, the
    cache MUST generate an error response rather than reuse the stale response"."""
    origin.routes["/api/strict"] = sequence(
        validating(cache_control="max-age=0, must-revalidate, stale-if-error=60"),
        respond(b"origin broke", status=500),
    )
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/strict")

    await fetch(client, url)
    status, _, body = await fetch(client, url)
    assert status >= 500
    assert body != BODY


@pytest.mark.parametrize(
    ("cache_control", "served_stale"),
    [
        ("max-age=1", True),
        ("max-age=1, must-revalidate", False),
        ("max-age=1, proxy-revalidate", False),
        ("s-maxage=1", False),
        ("max-age=3600, s-maxage=1", False),
        ("max-age=1, no-cache", False),
    ],
)
async def test_client_max_stale_does_not_override_revalidation_directives(
    make_node, origin, client, cache_control, served_stale
) -> None:
    """Sec. 4.2.4: "A cache MUST NOT generate a stale response if it is prohibited by an
    explicit in-protocol directive (e.g., by a no-cache response directive, a must-revalidate
    response directive, or an applicable s-maxage or proxy-revalidate response directive)";
    sec. 5.2.2.2 (must-revalidate): "a cache MUST NOT reuse that response to satisfy another
    request until it has been successfully validated by the origin"; sec. 5.2.2.8
    (proxy-revalidate) the same for a shared cache; sec. 5.2.2.10: "The s-maxage directive
    incorporates the semantics of the proxy-revalidate response directive (Section 5.2.2.8)
    for a shared cache." The stored response is stale (Age: 10); the client sends
    max-stale=3600, which alone would let it be served (the first case, the control)."""
    origin.routes["/api/st"] = validating(cache_control=cache_control, headers={"Age": "10"})
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/st")

    await fetch(client, url)
    status, headers, body = await fetch(client, url, {"Cache-Control": "max-stale=3600"})
    assert status == 200 and body == BODY
    assert is_hit(headers) is served_stale, headers["Cache-Status"]
    if not served_stale:
        assert origin.last_headers("/api/st").get("If-None-Match") == '"v1"'
    assert origin.count("/api/st") == (1 if served_stale else 2)


async def test_stale_while_revalidate_serves_stale_and_refreshes_in_the_background(
    make_node, origin, client
) -> None:
    """RFC 5861 sec. 3: "When present in an HTTP response, the stale-while-revalidate Cache-
    Control extension indicates that caches MAY serve the response in which it appears after
    it becomes stale, up to the indicated number of seconds. If a cached response is served
    stale due to the presence of this extension, the cache SHOULD attempt to revalidate it
    while still serving stale responses (i.e., without blocking)." RFC 9111 sec. 4.2.4 allows
    it: "or doing so is explicitly permitted by the client or origin server (e.g., by the
    max-stale request directive in Section 5.2.1, extension directives such as those defined
    in [RFC5861], or configuration in accordance with an out-of-band contract)"."""
    origin.routes["/api/swr"] = sequence(
        validating(
            b"old", cache_control="max-age=1, stale-while-revalidate=600", headers={"Age": "10"}
        ),
        validating(b"new", etag='"v2"', cache_control="max-age=600"),
    )
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/swr")

    await fetch(client, url)
    status, headers, body = await fetch(client, url)
    assert status == 200 and body == b"old"
    cs = own_status(headers["Cache-Status"])
    assert cs.get("hit") is True and cs.get("detail") == "stale-while-revalidate", cs
    for _ in range(500):  # bounded: until the background refresh is published
        _, headers, body = await fetch(client, url)
        if body == b"new":
            break
        await asyncio.sleep(0.01)
    assert body == b"new" and is_hit(headers)
    assert origin.count("/api/swr") == 2


async def test_stale_if_error_window_is_bounded(make_node, origin, client) -> None:
    """RFC 5861 sec. 4: "Its value indicates the upper limit to staleness; when the cached
    response is more stale than the indicated amount, the cached response SHOULD NOT be
    used to satisfy the request, absent other information." The stored response is about
    90 s stale, beyond stale-if-error=30: the origin's 500 reaches the client."""
    origin.routes["/api/sie-old"] = sequence(
        validating(cache_control="max-age=10, stale-if-error=30", headers={"Age": "100"}),
        respond(b"origin broke", status=500),
    )
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/sie-old")

    await fetch(client, url)
    status, headers, body = await fetch(client, url)
    assert status == 500 and body == b"origin broke"
    assert own_status(headers["Cache-Status"]).get("fwd-status") == "500"


async def test_no_stale_answer_without_permission(make_node, origin, client) -> None:
    """Sec. 4.2.4: "A cache MUST NOT send stale responses unless it is disconnected or doing so
    is explicitly permitted by the client or origin server". Sec. 4.3.3: on a 5xx to a
    validation request the cache "can either forward this response to the requesting client,
    or act as if the server failed to respond" - without stale-if-error (in the response or
    the policy) the node forwards it."""
    origin.routes["/api/plain-stale"] = sequence(
        validating(cache_control="max-age=0"), respond(b"unavailable", status=503)
    )
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/plain-stale")

    await fetch(client, url)
    status, _, body = await fetch(client, url)
    assert status == 503 and body == b"unavailable"
