"""RFC 9111 sec. 4.4 (Invalidating Stored Responses), end to end through a live node.

Each test quotes the requirement it checks. The scripted origin records what reached it, so
"stored" and "not stored" are proven by origin hits, never by reading the store.
"""

from __future__ import annotations

import pytest
from aiohttp import web

from tests.support.rfc import (
    BODY,
    fetch,
    is_hit,
    node_url,
    own_status,
    respond,
)


def _unsafe_answer(status: int = 200, fields: dict[str, str] | None = None):
    """GET: a fresh stored response; any other method: ``status`` with ``fields``."""

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.method == "GET":
            return web.Response(body=BODY, headers={"Cache-Control": "max-age=600"})
        await request.read()
        return web.Response(status=status, body=b"done", headers=fields or {})

    return handler


pytestmark = pytest.mark.integration


@pytest.mark.parametrize(("method", "status"), [("POST", 200), ("PUT", 204), ("DELETE", 200)])
async def test_successful_unsafe_method_invalidates_the_target_uri(
    make_node, origin, client, method, status
) -> None:
    """RFC 9111 sec. 4.4: "A cache MUST invalidate the target URI ... when it receives a
    non-error status code in response to an unsafe request method (including methods whose
    safety is unknown)"."""

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.method == "GET":
            return web.Response(body=BODY, headers={"Cache-Control": "max-age=600"})
        await request.read()
        return web.Response(status=status, body=b"" if status == 204 else b"done")

    origin.routes["/api/item"] = handler
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/item")

    await fetch(client, url)
    _, headers, _ = await fetch(client, url)
    assert "hit" in headers["Cache-Status"]

    async with client.request(method, url, data=b"payload") as r:
        assert r.status == status
        await r.read()
    assert origin.count("/api/item", method) == 1

    status_after, headers, body = await fetch(client, url)
    assert status_after == 200 and body == BODY
    assert "hit" not in headers["Cache-Status"]
    assert origin.count("/api/item", "GET") == 2


async def test_failed_unsafe_method_does_not_invalidate(make_node, origin, client) -> None:
    """RFC 9111 sec. 4.4: invalidation happens on "a non-error status code in response to an
    unsafe request method"; "a "non-error response" is one with a 2xx (Successful) or 3xx
    (Redirection) status code". A 5xx answer to a POST leaves the stored GET response alone."""

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.method == "GET":
            return web.Response(body=BODY, headers={"Cache-Control": "max-age=600"})
        await request.read()
        return web.Response(status=500, body=b"boom")

    origin.routes["/api/item"] = handler
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/item")

    await fetch(client, url)
    async with client.post(url, data=b"payload") as r:
        assert r.status == 500
        await r.read()
    status, headers, body = await fetch(client, url)
    assert status == 200 and body == BODY
    assert "hit" in headers["Cache-Status"]
    assert origin.count("/api/item", "GET") == 1


async def test_unsafe_method_invalidates_location(make_node, origin, client) -> None:
    """RFC 9111 sec. 4.4: "A cache MAY invalidate other URIs when it receives a non-error
    status code in response to an unsafe request method. In particular, the URI(s) in the
    Location and Content-Location response header fields (if present) are candidates for
    invalidation" - the node does it for same-origin (path-absolute) values."""

    async def create(request: web.Request) -> web.StreamResponse:
        await request.read()
        return web.Response(status=201, body=b"created", headers={"Location": "/api/list"})

    origin.routes["/api/list"] = respond(headers={"Cache-Control": "max-age=600"})
    origin.routes["/api/create"] = create
    node = await make_node({"parents": [origin.endpoint]})

    await fetch(client, node_url(node, "/api/list"))
    async with client.post(node_url(node, "/api/create"), data=b"x") as r:
        assert r.status == 201
        await r.read()
    _, headers, _ = await fetch(client, node_url(node, "/api/list"))
    assert "hit" not in headers["Cache-Status"]
    assert origin.count("/api/list") == 2


@pytest.mark.parametrize("method", ["PATCH", "M-SEARCH", "PROPPATCH", "MKCOL"])
async def test_other_and_unknown_methods_invalidate_the_target_uri(
    make_node, origin, client, method
) -> None:
    """Sec. 4.4: "A cache MUST invalidate the target URI (Section 7.1 of [HTTP]) when it
    receives a non-error status code in response to an unsafe request method (including
    methods whose safety is unknown)." The node forwards any method it does not serve from
    the cache and treats all but GET, HEAD, OPTIONS and TRACE as unsafe (cache-tests
    invalidate-M-SEARCH). RFC 9211 sec. 2.2: ``fwd=method``."""
    origin.routes["/api/item"] = _unsafe_answer()
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/item")

    await fetch(client, url)
    status, headers, _ = await fetch(client, url, method=method, data=b"abc")
    assert status == 200 and origin.count("/api/item", method) == 1
    cs = own_status(headers["Cache-Status"])
    assert cs.get("fwd") == "method" and "stored" not in cs, cs
    _, headers, _ = await fetch(client, url)
    assert not is_hit(headers), headers["Cache-Status"]
    assert origin.count("/api/item", "GET") == 2


@pytest.mark.parametrize("method", ["OPTIONS", "GET", "HEAD"])
async def test_safe_methods_do_not_invalidate(make_node, origin, client, method) -> None:
    """Sec. 4.4 invalidates on "an unsafe request method"; RFC 9110 sec. 9.2.1: "Of the request
    methods defined by this specification, the GET, HEAD, OPTIONS, and TRACE methods are
    defined to be safe." A safe request leaves the stored response in place."""
    origin.routes["/api/item"] = _unsafe_answer()
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/item")

    await fetch(client, url)
    await fetch(client, url, method=method)
    _, headers, _ = await fetch(client, url)
    assert is_hit(headers), headers["Cache-Status"]
    assert origin.count("/api/item", "GET") == 1


@pytest.mark.parametrize("status", [301, 303, 404, 409, 500])
async def test_only_non_error_answers_invalidate(make_node, origin, client, status) -> None:
    """Sec. 4.4: a cache invalidates "when it receives a non-error status code in response to
    an unsafe request method", where "a "non-error response" is one with a 2xx (Successful)
    or 3xx (Redirection) status code." A 4xx/5xx answer leaves the stored response alone
    (cache-tests invalidate-*-failed); a 3xx invalidates."""
    origin.routes["/api/item"] = _unsafe_answer(status)
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/item")

    await fetch(client, url)
    got, _, _ = await fetch(client, url, method="POST", data=b"abc")
    assert got == status
    _, headers, _ = await fetch(client, url)
    assert is_hit(headers) is (status >= 400), headers["Cache-Status"]


@pytest.mark.parametrize("field", ["Location", "Content-Location"])
async def test_same_origin_location_fields_are_invalidated(
    make_node, origin, client, field
) -> None:
    """Sec. 4.4: "A cache MAY invalidate other URIs when it receives a non-error status code in
    response to an unsafe request method (including methods whose safety is unknown). In
    particular, the URI(s) in the Location and Content-Location response header fields (if
    present) are candidates for invalidation" (cache-tests invalidate-*-location, -cl)."""
    origin.routes["/api/list"] = respond(headers={"Cache-Control": "max-age=600"})
    origin.routes["/api/create"] = _unsafe_answer(201, {field: "/api/list?page=1"})
    node = await make_node({"parents": [origin.endpoint]})

    await fetch(client, node_url(node, "/api/list"))
    await fetch(client, node_url(node, "/api/create"), method="PUT", data=b"x")
    _, headers, _ = await fetch(client, node_url(node, "/api/list"))
    assert not is_hit(headers), headers["Cache-Status"]
    assert origin.count("/api/list") == 2


@pytest.mark.parametrize("form", ["absolute", "relative"])
async def test_absolute_and_relative_same_origin_locations_are_invalidated(
    make_node, origin, client, form
) -> None:
    """Sec. 4.4: the Location and Content-Location URIs are candidates for invalidation; RFC
    9110 sec. 10.2.2 / 8.7: their values are URI-references, "relative to the target URI".
    The public conformance suite sends them absolute (http://host/.../location_target); a
    relative reference ("list") resolves against /api/create to /api/list. Both name the
    node's own origin (scheme, host and port of the request)."""
    origin.routes["/api/list"] = respond(headers={"Cache-Control": "max-age=600"})
    node = await make_node({"parents": [origin.endpoint]})
    value = f"http://127.0.0.1:{node.port}/api/list" if form == "absolute" else "list"
    origin.routes["/api/create"] = _unsafe_answer(201, {"Location": value})

    await fetch(client, node_url(node, "/api/list"))
    await fetch(client, node_url(node, "/api/create"), method="POST", data=b"x")
    _, headers, _ = await fetch(client, node_url(node, "/api/list"))
    assert not is_hit(headers), headers["Cache-Status"]


async def test_cross_origin_location_is_never_invalidated(make_node, origin, client) -> None:
    """Sec. 4.4: "However, a cache MUST NOT trigger an invalidation under these conditions if
    the origin (Section 4.3.1 of [HTTP]) of the URI to be invalidated differs from that of the
    target URI (Section 7.1 of [HTTP]). This helps prevent denial-of-service attacks." """
    origin.routes["/api/list"] = respond(headers={"Cache-Control": "max-age=600"})
    node = await make_node({"parents": [origin.endpoint]})
    origin.routes["/api/create"] = _unsafe_answer(
        201,
        {
            "Location": "http://elsewhere.example/api/list",
            "Content-Location": f"https://127.0.0.1:{node.port}/api/list",
        },
    )

    await fetch(client, node_url(node, "/api/list"))
    await fetch(client, node_url(node, "/api/create"), method="POST", data=b"x")
    _, headers, _ = await fetch(client, node_url(node, "/api/list"))
    assert is_hit(headers), headers["Cache-Status"]
    assert origin.count("/api/list") == 1
