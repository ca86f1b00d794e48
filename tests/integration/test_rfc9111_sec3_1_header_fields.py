"""RFC 9111 sec. 3.1 (Storing Header and Trailer Fields) and RFC 9110 sec. 7.6.1
(Connection: hop-by-hop fields), end to end through a live node.

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
    raw_exchange,
    respond,
    split_response,
    wait_stored,
)

pytestmark = pytest.mark.integration


async def test_hop_by_hop_fields_are_not_forwarded_and_unknown_fields_are_kept(
    make_node, origin, client
) -> None:
    """RFC 9110 sec. 7.6.1: "Intermediaries MUST parse a received Connection header field
    before a message is forwarded and, for each connection-option in this field, remove any
    header or trailer field(s) from the message with the same name as the connection-option,
    and then remove the Connection header field itself"; intermediaries "SHOULD remove or
    replace fields that are known to require removal before forwarding ... Proxy-Connection,
    Keep-Alive, TE, Transfer-Encoding, Upgrade". RFC 9111 sec. 3.1: "Caches MUST include all
    received response header fields -- including unrecognized ones -- when storing a
    response"."""
    origin.routes["/api/hop"] = respond(
        headers={
            "Cache-Control": "max-age=600",
            "Connection": "X-Foo",
            "X-Foo": "1",
            "Keep-Alive": "timeout=5, max=100",
            "Upgrade": "h2c",
            "Proxy-Connection": "keep-alive",
            "X-Unknown": "1",
        }
    )
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/hop")

    for expect in ("fwd=uri-miss", "hit"):
        status, headers, body = await fetch(client, url)
        assert status == 200 and body == BODY
        assert expect in headers["Cache-Status"]
        for name in ("X-Foo", "Keep-Alive", "Upgrade", "Proxy-Connection"):
            assert name not in headers, (expect, name, headers.get(name))
        assert headers.get("Connection", "keep-alive").lower() in ("keep-alive", "close")
        assert headers.getall("X-Unknown", []) == ["1"]
    assert origin.count("/api/hop") == 1


async def test_fields_listed_in_connection_are_neither_stored_nor_forwarded(
    make_node, origin, client
) -> None:
    """RFC 9110 sec. 7.6.1: for each connection-option in Connection, intermediaries "remove
    any header or trailer field(s) from the message with the same name as the
    connection-option, and then remove the Connection header field itself"; RFC 9111 sec.
    3.1: "Caches MAY either store trailer fields separate from header fields or discard them"
    and must store the rest (cache-tests headers-omit-headers-listed-in-Connection: a and b
    gone, c kept; Connection is matched case-insensitively and may span lines)."""
    origin.routes["/api/conn"] = respond(
        headers=[
            ("Cache-Control", "max-age=600"),
            ("Connection", "a, B"),
            ("Connection", "x-third"),
            ("a", "1"),
            ("b", "2"),
            ("X-Third", "3"),
            ("c", "3"),
        ]
    )
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/conn")

    for expect_hit in (False, True):
        status, headers, body = await fetch(client, url)
        assert status == 200 and body == BODY and is_hit(headers) is expect_hit
        for name in ("a", "b", "X-Third"):
            assert name not in headers, name
        assert headers.get("Connection", "keep-alive").lower() in ("keep-alive", "close")
        assert headers.getall("c") == ["3"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("Test-Header", "test-header-store-value"),
        ("X-Test-Header", "x"),
        ("Content-Type", "text/plain"),
        ("X-Frame-Options", "deny"),
        ("X-XSS-Protection", "1"),
        ("Clear-Site-Data", '"cookies"'),
        ("Public-Key-Pins", 'pin-sha256="x"; max-age=10'),
        ("Strict-Transport-Security", "max-age=31536000"),
        ("WWW-Authenticate", 'Basic realm="x"'),
        ("Content-Language", "en"),
        ("Link", "</a.css>; rel=preload"),
    ],
)
async def test_end_to_end_fields_are_stored_and_returned(
    make_node, origin, client, name, value
) -> None:
    """Sec. 3.1: "Caches MUST include all received response header fields -- including
    unrecognized ones -- when storing a response; this assures that new HTTP header fields
    can be successfully deployed." (cache-tests headers-store-*.)"""
    origin.routes["/api/f"] = respond(headers={"Cache-Control": "max-age=600", name: value})
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/f")

    await fetch(client, url)
    _, headers, _ = await fetch(client, url)
    assert is_hit(headers), headers["Cache-Status"]
    assert headers.getall(name) == [value]


async def test_several_lines_of_a_field_are_kept_in_order(make_node, origin, client) -> None:
    """Sec. 3.1 ("all received response header fields") with RFC 9110 sec. 5.3: "the order in
    which field lines with the same name are received is significant to the interpretation
    of the field value; a proxy MUST NOT change the order of these field line values when
    forwarding a message"."""
    links = ["</1.css>; rel=preload", "</2.css>; rel=preload", "</3.js>; rel=preload"]
    origin.routes["/api/links"] = respond(
        headers=[("Cache-Control", "max-age=600"), *(("Link", v) for v in links)]
    )
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/links")

    for expect_hit in (False, True):
        _, headers, _ = await fetch(client, url)
        assert is_hit(headers) is expect_hit
        assert headers.getall("Link") == links


async def test_chunked_upstream_framing_is_not_stored(make_node, origin, client) -> None:
    """RFC 9110 sec. 7.6.1 lists Transfer-Encoding (and TE, Trailer) among the fields that
    only concern one connection; RFC 9112 sec. 6.1: "A server MUST NOT send a response
    containing Transfer-Encoding unless the corresponding request indicates HTTP/1.1" - the
    framing is the sender's choice per hop. An origin answer in chunks is stored as its
    content: a hit has a Content-Length and no Transfer-Encoding (read on the wire)."""

    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Cache-Control": "max-age=600", "Trailer": "X-Checksum"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(0, len(BODY), 50):
            await resp.write(BODY[i : i + 50])
        await resp.write_eof()
        return resp

    origin.routes["/api/chunks"] = chunked
    node = await make_node({"parents": [origin.endpoint]})
    status, _, body = await fetch(client, node_url(node, "/api/chunks"))
    assert status == 200 and body == BODY
    await wait_stored(node)
    raw = await raw_exchange(
        node.port,
        b"GET /api/chunks HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    status_line, fields, rest = split_response(raw)
    assert status_line.startswith("HTTP/1.1 200")
    assert "hit" in fields["cache-status"]
    assert "transfer-encoding" not in fields and "trailer" not in fields
    assert int(fields["content-length"]) == len(BODY) and rest == BODY


@pytest.mark.parametrize("name", ["Proxy-Authenticate", "Proxy-Authentication-Info"])
async def test_proxy_specific_fields_are_not_stored(make_node, origin, client, name) -> None:
    """Sec. 3.1: "Header fields that are specific to the proxy that a cache uses when
    forwarding a request MUST NOT be stored, unless the cache incorporates the identity of
    the proxy into the cache key. Effectively, this is limited to Proxy-Authenticate (Section
    11.7.1 of [HTTP]), Proxy-Authentication-Info (Section 11.7.3 of [HTTP]), and
    Proxy-Authorization (Section 11.7.2 of [HTTP])." A later hit must not carry them."""
    origin.routes["/api/pa"] = respond(headers={"Cache-Control": "max-age=600", name: "x"})
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/pa")

    await fetch(client, url)
    _, headers, _ = await fetch(client, url)
    assert is_hit(headers)
    assert name not in headers


async def test_hop_by_hop_request_fields_are_not_forwarded(make_node, origin, client) -> None:
    """RFC 9110 sec. 7.6.1: "Intermediaries MUST parse a received Connection header field
    before a message is forwarded and, for each connection-option in this field, remove any
    header or trailer field(s) from the message with the same name as the connection-option,
    and then remove the Connection header field itself"; they "SHOULD remove or replace
    fields that are known to require removal before forwarding, whether or not they appear
    as a connection-option, after applying those fields' semantics. This includes but is not
    limited to: Proxy-Connection, Keep-Alive, TE, Transfer-Encoding, Upgrade". A forwarded
    POST keeps its end-to-end fields only."""

    async def sink(request: web.Request) -> web.StreamResponse:
        await request.read()
        return web.Response(status=204)

    origin.routes["/api/in"] = sink
    node = await make_node({"parents": [origin.endpoint]})
    status, _, _ = await fetch(
        client,
        node_url(node, "/api/in"),
        [
            ("Connection", "keep-alive, X-Req-Hop"),
            ("X-Req-Hop", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Connection", "keep-alive"),
            ("TE", "trailers"),
            ("X-End", "1"),
        ],
        method="POST",
        data=b"payload",
    )
    assert status == 204
    seen = origin.last_headers("/api/in")
    for name in ("X-Req-Hop", "Keep-Alive", "Proxy-Connection", "TE"):
        assert name not in seen, name
    assert seen.get("X-End") == "1"


async def test_forwarded_request_field_listed_in_connection_is_dropped(
    make_node, origin, client
) -> None:
    """RFC 9110 sec. 7.6.1: a field named in Connection belongs to that connection only and is
    removed before forwarding - also a field the policy would forward (``forward_headers``):
    the GET that fills the cache must not carry it."""
    origin.routes["/api/fwd"] = respond(headers={"Cache-Control": "max-age=600"})
    policies = [{"name": "api", "path": "*", "default_ttl": "5m", "forward_headers": ["x-fwd"]}]
    node = await make_node({"parents": [origin.endpoint]}, policies=policies)
    await fetch(
        client, node_url(node, "/api/fwd"), [("Connection", "X-Fwd"), ("X-Fwd", "hop-only")]
    )
    assert "X-Fwd" not in origin.last_headers("/api/fwd")
