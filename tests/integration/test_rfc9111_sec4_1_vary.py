"""RFC 9111 sec. 4.1 (Calculating Cache Keys with the Vary Header Field), end to end through a
live node: several stored responses per target URI, one per set of selecting values.

Each test quotes the requirement it checks. Only fields the node forwards (keyed or
``forward_headers``) can select a variant: the origin never sees the others.
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
    respond,
)

pytestmark = pytest.mark.integration

POLICIES = [
    {
        "name": "api",
        "path": "*",
        "default_ttl": "5m",
        "forward_headers": ["accept", "accept-language"],
    }
]


def _negotiating_origin(origin, path: str, vary: str = "Accept"):
    async def negotiate(request: web.Request) -> web.StreamResponse:
        seen = ";".join(
            f"{name}={request.headers.get(name, '-')}" for name in ("Accept", "Accept-Language")
        )
        return web.Response(
            body=f"for {seen}".encode(),
            headers={"Cache-Control": "max-age=600", "Vary": vary, "ETag": f'"{hash(seen)}"'},
        )

    origin.routes[path] = negotiate


async def _get(client, url, headers=None):
    async with client.get(url, headers=headers or {}, skip_auto_headers=["Accept"]) as r:
        return r.status, r.headers, await r.read()


async def test_several_variants_are_stored_and_each_is_a_hit(make_node, origin, client) -> None:
    """Sec. 4.1: "When a cache receives a request that can be satisfied by a stored response
    and that stored response contains a Vary header field, the cache MUST NOT use that stored
    response without revalidation unless all the presented request header fields nominated by
    that Vary field value match those fields in the original request"; sec. 4.1 also allows
    that a cache "MAY store multiple responses for a target URI with different selecting
    header values". Three Accept values -> three origin fetches, then three hits."""
    _negotiating_origin(origin, "/doc")
    node = await make_node({"parents": [origin.endpoint]}, policies=POLICIES)
    url = f"http://127.0.0.1:{node.port}/doc"
    accepts = ["application/json", "text/html", "application/xml"]
    for accept in accepts:
        _, headers, body = await _get(client, url, {"Accept": accept})
        assert body == f"for Accept={accept};Accept-Language=-".encode()
    for accept in accepts * 2:
        _, headers, body = await _get(client, url, {"Accept": accept})
        assert body == f"for Accept={accept};Accept-Language=-".encode()
        assert headers["Cache-Status"].split(";")[1].strip() == "hit", headers["Cache-Status"]
    assert origin.count("/doc") == 3


async def test_absent_field_is_its_own_variant(make_node, origin, client) -> None:
    """Sec. 4.1: "If (after any normalization that might take place) a header field is absent
    from a request, it can only match another request if it is also absent there." """
    _negotiating_origin(origin, "/doc")
    node = await make_node({"parents": [origin.endpoint]}, policies=POLICIES)
    url = f"http://127.0.0.1:{node.port}/doc"
    _, _, with_accept = await _get(client, url, {"Accept": "text/html"})
    _, _, without = await _get(client, url)
    _, headers, again = await _get(client, url)
    assert with_accept != without == again == b"for Accept=-;Accept-Language=-"
    assert "hit" in headers["Cache-Status"]
    assert origin.count("/doc") == 2


async def test_normalized_values_select_the_same_variant(make_node, origin, client) -> None:
    """Sec. 4.1: "The selecting header fields from two requests are defined to match if and
    only if those in the first request can be transformed to those in the second request by
    applying any of the following: adding or removing whitespace, where allowed in the
    header field's syntax; combining multiple header field lines with the same field name
    (see Section 5.2 of [HTTP]); normalizing both header field values in a way that is known
    to have identical semantics"."""
    _negotiating_origin(origin, "/doc")
    node = await make_node({"parents": [origin.endpoint]}, policies=POLICIES)
    url = f"http://127.0.0.1:{node.port}/doc"
    await _get(client, url, {"Accept": "text/html, application/json"})
    _, headers, _ = await _get(client, url, {"Accept": "text/html,application/json"})
    assert "hit" in headers["Cache-Status"]
    assert origin.count("/doc") == 1


async def test_vary_over_several_fields(make_node, origin, client) -> None:
    """Sec. 4.1: "all the presented request header fields nominated by that Vary field value"
    must match: Vary: Accept, Accept-Language stores one response per pair of values."""
    _negotiating_origin(origin, "/doc", vary="Accept, Accept-Language")
    node = await make_node({"parents": [origin.endpoint]}, policies=POLICIES)
    url = f"http://127.0.0.1:{node.port}/doc"
    pairs = [("text/html", "en"), ("text/html", "fr"), ("application/json", "en")]
    for accept, lang in pairs * 2:
        _, _, body = await _get(client, url, {"Accept": accept, "Accept-Language": lang})
        assert body == f"for Accept={accept};Accept-Language={lang}".encode()
    assert origin.count("/doc") == 3


async def test_concurrent_requests_coalesce_per_variant(make_node, origin, client) -> None:
    """Single flight holds per variant: 20 concurrent requests over two Accept values make
    one origin request per value, and nobody gets the other value's answer."""

    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.2)
        accept = request.headers.get("Accept", "-")
        return web.Response(
            body=f"for {accept}".encode(),
            headers={"Cache-Control": "max-age=600", "Vary": "Accept"},
        )

    origin.routes["/slow"] = slow
    node = await make_node({"parents": [origin.endpoint]}, policies=POLICIES)
    url = f"http://127.0.0.1:{node.port}/slow"
    await _get(client, url, {"Accept": "text/html"})  # the primary entry
    accepts = ["application/json", "text/plain"] * 10
    answers = await asyncio.gather(*(_get(client, url, {"Accept": a}) for a in accepts))
    for accept, (status, _, body) in zip(accepts, answers, strict=True):
        assert status == 200 and body == f"for {accept}".encode()
    assert origin.count("/slow") == 3, [a[1]["Cache-Status"] for a in answers]


async def test_invalidation_removes_every_variant(make_node, origin, client) -> None:
    """RFC 9111 sec. 4.4: invalidating a URI invalidates every response stored for it, the
    secondary variants included."""
    _negotiating_origin(origin, "/doc")
    node = await make_node({"parents": [origin.endpoint]}, policies=POLICIES)
    url = f"http://127.0.0.1:{node.port}/doc"
    for accept in ("a/1", "a/2", "a/3"):
        await _get(client, url, {"Accept": accept})
    for _ in range(100):
        if len(node.node.store.index) == 3:
            break
        await asyncio.sleep(0.01)
    assert len(node.node.store.index) == 3
    await node.node.invalidate_uri("/doc")
    assert len(node.node.store.index) == 0
    await _get(client, url, {"Accept": "a/2"})
    assert origin.count("/doc") == 4


# ---- from the former all-in-one module, and Vary's own syntax ----------------------------

FORWARD_ACCEPT = [
    {
        "name": "api",
        "path": "*",
        "default_ttl": "5m",
        "forward_headers": ["accept", "accept-language"],
    }
]


def _negotiate(vary: list[tuple[str, str]]):
    async def handler(request: web.Request) -> web.StreamResponse:
        seen = f"{request.headers.get('Accept', '-')}|{request.headers.get('Accept-Language', '-')}"
        return web.Response(body=seen.encode(), headers=[("Cache-Control", "max-age=600"), *vary])

    return handler


async def test_vary_accept_other_value_is_a_vary_miss(make_node, origin, client) -> None:
    """RFC 9111 sec. 4.1: "the cache MUST NOT use that stored response without revalidation
    unless all the presented request header fields nominated by that Vary field value match
    those fields in the original request"; RFC 9211 sec. 2.2: ``fwd=vary-miss``."""
    calls = 0

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        return web.Response(
            body=f"variant-{calls}".encode(),
            headers={"Cache-Control": "max-age=600", "Vary": "Accept"},
        )

    origin.routes["/api/neg"] = handler
    policies = [{"name": "api", "path": "*", "default_ttl": "5m", "forward_headers": ["accept"]}]
    node = await make_node({"parents": [origin.endpoint]}, policies=policies)
    url = node_url(node, "/api/neg")
    json_accept = {"Accept": "application/json"}
    html_accept = {"Accept": "text/html"}

    _, _, body = await fetch(client, url, json_accept)
    assert body == b"variant-1"
    _, headers, body = await fetch(client, url, json_accept)
    assert body == b"variant-1" and "hit" in headers["Cache-Status"]

    status, headers, body = await fetch(client, url, html_accept)
    assert status == 200
    assert body == b"variant-2"
    assert "fwd=vary-miss" in headers["Cache-Status"], headers["Cache-Status"]
    assert origin.count("/api/neg") == 2


async def test_vary_selected_request_field_reaches_the_origin(make_node, origin, client) -> None:
    """RFC 9111 sec. 4.1: a stored response with Vary is reused only when the nominated
    request fields "match those fields in the original request (i.e., the request that caused
    the cached response to be stored)". The node records the client's Accept as the selecting
    value, so the request that produced the response must have carried that Accept: the
    origin must see the client's value (not none, and not a default added by the node's HTTP
    client), or the node files a response negotiated for another Accept under this one."""

    async def negotiate(request: web.Request) -> web.StreamResponse:
        seen = request.headers.get("Accept", "(none)")
        return web.Response(
            body=f"for {seen}".encode(),
            headers={"Cache-Control": "max-age=600", "Vary": "Accept"},
        )

    origin.routes["/api/negotiated"] = negotiate
    policies = [{"name": "api", "path": "*", "default_ttl": "5m", "forward_headers": ["accept"]}]
    node = await make_node({"parents": [origin.endpoint]}, policies=policies)
    url = node_url(node, "/api/negotiated")

    _, _, body = await fetch(client, url, {"Accept": "application/json"})
    assert body == b"for application/json"
    _, _, body = await fetch(client, url, {"Accept": "text/html"})
    assert body == b"for text/html"
    _, headers, body = await fetch(client, url, {"Accept": "application/json"})
    assert body == b"for application/json"  # never the text/html variant
    assert "hit" in headers["Cache-Status"]  # both variants are stored


async def test_vary_on_a_field_the_node_does_not_forward_is_shared(
    make_node, origin, client
) -> None:
    """RFC 9111 sec. 4.1 compares with "the original request (i.e., the request that caused the
    cached response to be stored)". Only keyed and forward-only fields reach the origin (the
    defence against poisoning through unkeyed inputs), so the origin chose its answer without
    Accept here: every client of this policy would get that same answer, and it is shared."""

    async def negotiate(request: web.Request) -> web.StreamResponse:
        seen = request.headers.get("Accept", "(none)")
        return web.Response(
            body=f"for {seen}".encode(),
            headers={"Cache-Control": "max-age=600", "Vary": "Accept"},
        )

    origin.routes["/api/negotiated"] = negotiate
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/negotiated")
    _, _, body = await fetch(client, url, {"Accept": "application/json"})
    assert body == b"for (none)"
    _, headers, body = await fetch(client, url, {"Accept": "text/html"})
    assert body == b"for (none)"
    assert "hit" in headers["Cache-Status"]
    assert origin.count("/api/negotiated") == 1


async def test_vary_star_is_never_served_from_cache(make_node, origin, client) -> None:
    """RFC 9111 sec. 4.1: "A stored response with a Vary header field value containing a
    member "*" always fails to match"."""
    origin.routes["/api/star"] = respond(headers={"Cache-Control": "max-age=600", "Vary": "*"})
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/star")

    for _ in range(3):
        status, headers, body = await fetch(client, url)
        assert status == 200 and body == BODY
        assert "hit" not in headers["Cache-Status"]
    assert origin.count("/api/star") == 3


@pytest.mark.parametrize(
    "vary",
    [
        [("Vary", "accept, ACCEPT-LANGUAGE")],
        [("Vary", " Accept ,Accept-Language ")],
        [("Vary", "Accept"), ("Vary", "Accept-Language")],
    ],
    ids=["name-case", "whitespace", "two-lines"],
)
async def test_vary_field_names_are_case_insensitive_and_lines_combine(
    make_node, origin, client, vary
) -> None:
    """RFC 9111 sec. 4.1: "The Vary header field value is a list of field names" (RFC 9110
    sec. 12.5.5: "Vary = #( "*" / field-name )"; field names are case-insensitive, RFC 9110
    sec. 5.1, and a list may span field lines, sec. 5.3). However it is spelled, the stored
    response varies on both fields: same values -> a hit, another language -> a new fetch."""
    origin.routes["/api/v"] = _negotiate(vary)
    node = await make_node({"parents": [origin.endpoint]}, policies=FORWARD_ACCEPT)
    url = node_url(node, "/api/v")
    en = {"Accept": "text/html", "Accept-Language": "en"}

    await fetch(client, url, en)
    _, headers, body = await fetch(client, url, en)
    assert body == b"text/html|en" and is_hit(headers), headers["Cache-Status"]
    _, headers, body = await fetch(client, url, {**en, "Accept-Language": "fr"})
    assert body == b"text/html|fr" and not is_hit(headers)
    assert origin.count("/api/v") == 2


async def test_selecting_field_lines_combine_before_matching(make_node, origin, client) -> None:
    """RFC 9111 sec. 4.1: selecting fields match if one request's can be transformed into the
    other's by "combining multiple header field lines with the same field name (see Section
    5.2 of [HTTP])" or "adding or removing whitespace, where allowed in the header field's
    syntax". Accept sent on two lines selects the variant stored for the one-line list.
    (Reordering list members is not normalized: that costs a fetch, never a wrong hit.)"""
    origin.routes["/api/lines"] = _negotiate([("Vary", "Accept")])
    node = await make_node({"parents": [origin.endpoint]}, policies=FORWARD_ACCEPT)
    url = node_url(node, "/api/lines")

    await fetch(client, url, {"Accept": "text/html, application/json"})
    _, headers, body = await fetch(
        client, url, [("Accept", "text/html"), ("Accept", "application/json")]
    )
    assert body == b"text/html, application/json|-"
    assert is_hit(headers), headers["Cache-Status"]
    assert origin.count("/api/lines") == 1
