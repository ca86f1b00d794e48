"""RFC 9111 sec. 4.1 (Vary) tests that live outside test_rfc9111_sec4_1_vary.py only because
that module has another owner: the Vary tests of the former all-in-one RFC 9111 module (every
other test moved to the spec-organized test_rfc9111_sec*.py, test_rfc9211_cache_status.py and
test_rfc9110_status_codes.py) and a few more on Vary's own syntax. To be merged there.

Each test quotes the requirement it checks; the scripted origin records what reached it.
"""

from __future__ import annotations

import pytest
from aiohttp import web

from tests.support.rfc import (
    BODY,
    fetch,
    is_hit,
    node_url,
    respond,
)

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


pytestmark = pytest.mark.integration


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
