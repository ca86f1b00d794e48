"""RFC 9111 sec. 4 (Constructing Responses from Caches: reuse for GET and HEAD, the Age
field on every answer served from the store), end to end through a live node.

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
    node_url,
    own_status,
    raw_exchange,
    respond,
    sequence,
    split_response,
    validating,
)

# how a stored response answers: (origin handler, request fields, method, expected status)
SERVED_FROM_STORE = {
    "hit": (lambda: respond(headers={"Cache-Control": "max-age=600"}), {}, "GET", 200),
    "hit-full-pipeline": (
        lambda: respond(headers={"Cache-Control": "max-age=600"}),
        {"Cache-Control": "max-stale=1"},
        "GET",
        200,
    ),
    "head-hit": (lambda: respond(headers={"Cache-Control": "max-age=600"}), {}, "HEAD", 200),
    "range-hit": (
        lambda: respond(headers={"Cache-Control": "max-age=600"}),
        {"Range": "bytes=0-9"},
        "GET",
        206,
    ),
    "not-modified-to-client": (
        lambda: validating(cache_control="max-age=600"),
        {"If-None-Match": '"v1"'},
        "GET",
        304,
    ),
    "revalidated": (lambda: validating(cache_control="max-age=0"), {}, "GET", 200),
    "stale-while-revalidate": (
        lambda: validating(
            cache_control="max-age=1, stale-while-revalidate=600", headers={"Age": "10"}
        ),
        {},
        "GET",
        200,
    ),
    "stale-if-error": (
        lambda: sequence(
            validating(cache_control="max-age=0, stale-if-error=600"),
            respond(b"broken", status=500),
        ),
        {},
        "GET",
        200,
    ),
}

pytestmark = pytest.mark.integration


async def test_head_on_a_cold_key_then_get(make_node, origin, client) -> None:
    """RFC 9110 sec. 9.3.2: "The HEAD method is identical to GET except that the server MUST
    NOT send content in the response"; sec. 8.6: a server "MUST NOT send Content-Length in such
    a response unless its field value equals the decimal number of octets that would have been
    sent in the content of a response if the same request had used the GET method". Checked on
    the wire: a HEAD answer followed on the same connection by a GET answer, with nothing in
    between."""
    origin.routes["/api/headme"] = respond(headers={"Cache-Control": "max-age=600"})
    node = await make_node({"parents": [origin.endpoint]})
    host = f"127.0.0.1:{node.port}"
    raw = await raw_exchange(
        node.port,
        (
            f"HEAD /api/headme HTTP/1.1\r\nHost: {host}\r\n\r\n"
            f"GET /api/headme HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        ).encode(),
    )
    head_status, head_fields, rest = split_response(raw)
    assert head_status.startswith("HTTP/1.1 200"), head_status
    assert int(head_fields["content-length"]) == len(BODY)
    assert "transfer-encoding" not in head_fields
    assert rest.startswith(b"HTTP/1.1 200"), rest[:80]
    _, get_fields, get_body = split_response(rest)
    assert int(get_fields["content-length"]) == len(BODY)
    assert get_body == BODY
    if origin.count("/api/headme", "HEAD") == 0:
        # the HEAD miss fetched the whole response with a GET: the GET is a hit
        assert "hit" in get_fields["cache-status"], get_fields["cache-status"]
        assert origin.count("/api/headme") == 1


async def test_head_after_get_is_a_hit_with_the_same_length(make_node, origin, client) -> None:
    """RFC 9110 sec. 9.3.2: "The server SHOULD send the same header fields in response to a
    HEAD request as it would have sent if the request method had been GET"; RFC 9111 sec. 4: a
    stored GET response can satisfy a HEAD. One connection, pipelined (answered in order, so
    the GET's entry is published before the HEADs run): GET, HEAD (fast path), HEAD with a
    request directive (full pipeline); the HEAD answers carry the GET's Content-Length and no
    content."""
    origin.routes["/api/headhit"] = respond(headers={"Cache-Control": "max-age=600"})
    node = await make_node({"parents": [origin.endpoint]})
    host = f"127.0.0.1:{node.port}"

    raw = await raw_exchange(
        node.port,
        (
            f"GET /api/headhit HTTP/1.1\r\nHost: {host}\r\n\r\n"
            f"HEAD /api/headhit HTTP/1.1\r\nHost: {host}\r\n\r\n"
            f"HEAD /api/headhit HTTP/1.1\r\nHost: {host}\r\nCache-Control: max-stale=1\r\n"
            "Connection: close\r\n\r\n"
        ).encode(),
    )
    get_status, get_fields, rest = split_response(raw)
    assert get_status.startswith("HTTP/1.1 200"), get_status
    assert int(get_fields["content-length"]) == len(BODY)
    assert rest[: len(BODY)] == BODY
    rest = rest[len(BODY) :]
    for _ in range(2):
        assert rest.startswith(b"HTTP/1.1 200"), rest[:80]
        _, fields, rest = split_response(rest)
        assert int(fields["content-length"]) == len(BODY)
        assert "transfer-encoding" not in fields
        assert "hit" in fields["cache-status"], fields["cache-status"]
    assert rest == b""
    assert origin.count("/api/headhit") == 1


@pytest.mark.parametrize("case", SERVED_FROM_STORE.values(), ids=SERVED_FROM_STORE.keys())
async def test_every_answer_from_the_store_has_one_age(make_node, origin, client, case) -> None:
    """Sec. 4: "When a stored response is used to satisfy a request without validation, a
    cache MUST generate an Age header field (Section 5.1), replacing any present in the
    response with a value equal to the stored response's current_age; see Section 4.2.3."
    The node also sends it after a validation (the response is still the stored one, its age
    counted from the validation) and on a 304 built from the stored response."""
    make_handler, request, method, status = case
    origin.routes["/api/aged"] = make_handler()
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/aged")

    await fetch(client, url)
    got, headers, _ = await fetch(client, url, request, method=method)
    assert got == status
    assert len(headers.getall("Age", [])) == 1, headers
    assert headers["Age"].isdigit()
    assert own_status(headers["Cache-Status"]).get("fwd") != "uri-miss"


async def test_collapsed_answers_have_an_age(make_node, origin, client) -> None:
    """Sec. 4 (Age on every stored response used) for requests that waited for another
    request's fill (RFC 9211 ``collapsed``): they are answered from the response being
    stored, with an Age like any other."""

    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.2)
        return web.Response(body=BODY, headers={"Cache-Control": "max-age=600", "Age": "7"})

    origin.routes["/api/slow"] = slow
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/slow")

    results = await asyncio.gather(*(fetch(client, url) for _ in range(10)))
    assert origin.count("/api/slow") == 1
    for status, headers, body in results:
        assert status == 200 and body == BODY
        assert len(headers.getall("Age")) == 1 and int(headers["Age"]) >= 7
    assert any(own_status(h["Cache-Status"]).get("collapsed") for _, h, _ in results)
