"""RFC 9211 (the Cache-Status response field), end to end through a live node: one member
per answer for this node (named by ``node.name``, here ``edge-t``), with hit / fwd /
fwd-status / stored / collapsed / ttl / detail. (Age on answers from the store: RFC 9111
sec. 4, test_rfc9111_sec4_constructing_responses.)

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
    unused_port,
    validating,
)

NAME = "edge-t"  # the test node's name (tests/conftest.py)

pytestmark = pytest.mark.integration


async def test_concurrent_misses_make_one_origin_request(make_node, origin, client) -> None:
    """RFC 9211 sec. 2.6: ``collapsed`` "indicates whether this request was collapsed together
    with one or more other forward requests". DESIGN.md step 5: "the first request for a key
    becomes the writer ...; every other request for that key ... streams too". 50 concurrent
    requests for a cold key: one origin request, 50 identical complete bodies."""
    payload = bytes(range(256)) * 400  # 100 KiB

    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.3)
        return web.Response(body=payload, headers={"Cache-Control": "max-age=600"})

    origin.routes["/audio/hot.mp3"] = slow
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/audio/hot.mp3")

    results = await asyncio.gather(*(fetch(client, url) for _ in range(50)))
    assert origin.count("/audio/hot.mp3") == 1
    statuses = [status for status, _, _ in results]
    assert statuses == [200] * 50
    for _, headers, body in results:
        assert len(body) == len(payload)
        assert body == payload
        assert int(headers["Content-Length"]) == len(payload)
    collapsed = [h["Cache-Status"] for _, h, _ in results if "collapsed" in h["Cache-Status"]]
    assert collapsed, [h["Cache-Status"] for _, h, _ in results]


async def test_miss_then_hit(make_node, origin, client) -> None:
    """RFC 9211 sec. 2.2: ``fwd=uri-miss``: "The cache did not contain any responses that
    matched the request URI"; sec. 2.5: ``stored`` "indicates whether the cache stored the
    response"; sec. 2.4: ``ttl`` is "the response's remaining freshness lifetime ... as an
    integer number of seconds"; sec. 2.3: "If fwd-status is not present but fwd is, it
    defaults to the status code sent in the response"; sec. 2.1: ``hit`` "indicates that
    the request was satisfied by the cache; that is, it was not forwarded". Sec. 2: "Each
    member of the parameterised list identifies the cache that inserted it"."""
    origin.routes["/api/cs"] = respond(headers={"Cache-Control": "max-age=600"})
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/cs")

    _, headers, _ = await fetch(client, url)
    assert len(headers.getall("Cache-Status")) == 1
    miss = own_status(headers["Cache-Status"])
    assert miss[""] == NAME
    assert miss.get("fwd") == "uri-miss" and miss.get("stored") is True, miss
    assert "hit" not in miss and "fwd-status" not in miss and "collapsed" not in miss
    assert 590 <= int(miss["ttl"]) <= 600

    _, headers, _ = await fetch(client, url)
    hit = own_status(headers["Cache-Status"])
    assert hit[""] == NAME and hit.get("hit") is True, hit
    assert "fwd" not in hit and "stored" not in hit
    assert 590 <= int(hit["ttl"]) <= 600


@pytest.mark.parametrize(
    ("fields", "detail"),
    [
        ({"Cache-Control": "no-store"}, "no-store"),
        ({"Cache-Control": "private, max-age=60"}, "private"),
        ({"Cache-Control": "max-age=60", "Set-Cookie": "a=b"}, "set-cookie"),
        ({"Cache-Control": "max-age=60", "Vary": "*"}, "vary-star"),
    ],
)
async def test_not_stored_says_why_in_detail(make_node, origin, client, fields, detail) -> None:
    """RFC 9211 sec. 2.5: ``stored`` absent (false) when the cache did not store the response;
    sec. 2.8: ``detail`` "allows implementations to convey additional information not
    captured in other parameters, such as implementation-specific states" - here the reason
    it was not stored."""
    origin.routes["/api/ns"] = respond(headers=fields)
    node = await make_node({"parents": [origin.endpoint]})
    _, headers, _ = await fetch(client, node_url(node, "/api/ns"))
    cs = own_status(headers["Cache-Status"])
    assert cs.get("fwd") == "uri-miss" and "stored" not in cs and "ttl" not in cs, cs
    assert cs.get("detail") == detail


async def test_stale_forward_with_a_full_response(make_node, origin, client) -> None:
    """RFC 9211 sec. 2.2: ``fwd=stale``: "The cache was able to select a response for the
    request, but it was stale"; the new 200 replaces it and is stored (sec. 2.5); fwd-status
    defaults to the status sent (sec. 2.3)."""
    origin.routes["/api/old"] = sequence(
        validating(b"old", cache_control="max-age=0"),
        validating(b"new", etag='"v2"', cache_control="max-age=600"),
    )
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/old")

    await fetch(client, url)
    _, headers, body = await fetch(client, url)
    assert body == b"new"
    cs = own_status(headers["Cache-Status"])
    assert cs.get("fwd") == "stale" and cs.get("stored") is True, cs
    assert "fwd-status" not in cs


async def test_fwd_method_for_an_unsafe_request(make_node, origin, client) -> None:
    """RFC 9211 sec. 2.2: ``fwd=method``: "The request method's semantics require the request
    to be forwarded"; sec. 2.3: ``fwd-status`` "indicates which status code ... the next-hop
    server returned in response to the forwarded request"."""
    origin.routes["/api/post"] = respond(b"created", status=201)
    node = await make_node({"parents": [origin.endpoint]})
    status, headers, _ = await fetch(client, node_url(node, "/api/post"), method="POST", data=b"x")
    assert status == 201
    cs = own_status(headers["Cache-Status"])
    assert cs.get("fwd") == "method" and cs.get("fwd-status") == "201", cs


async def test_fwd_bypass_when_the_node_refuses_to_handle_the_request(
    make_node, origin, client
) -> None:
    """RFC 9211 sec. 2.2: ``fwd=bypass``: "The cache was configured to not handle this
    request" - here a request that already went through this node (a loop, RFC 9110 sec.
    7.6.3), answered 508 without forwarding, with a detail."""
    origin.routes["/api/loop"] = respond(headers={"Cache-Control": "max-age=600"})
    node = await make_node({"parents": [origin.endpoint]})
    status, headers, _ = await fetch(
        client, node_url(node, "/api/loop"), {"Via": f"1.1 other, 1.1 {NAME}"}
    )
    assert status == 508
    cs = own_status(headers["Cache-Status"])
    assert cs.get("fwd") == "bypass" and cs.get("detail") == "loop", cs
    assert origin.count("/api/loop") == 0


async def test_a_member_on_every_answer(make_node, origin, client) -> None:
    """RFC 9211 sec. 2: "Caches determine when it is appropriate to add the Cache-Status
    header field to a response. Some might add it to all responses". The node adds exactly
    one member of its own to every answer: only-if-cached misses (504, fwd=miss), errors
    from an unreachable parent (502) and pass-through answers included."""
    origin.routes["/api/x"] = respond(headers={"Cache-Control": "max-age=600"})
    node = await make_node({"parents": [origin.endpoint]})
    dead = await make_node({"parents": [f"http://127.0.0.1:{unused_port()}"]})
    answers = [
        await fetch(client, node_url(node, "/api/x"), {"Cache-Control": "only-if-cached"}),
        await fetch(client, node_url(dead, "/api/x")),
        await fetch(client, node_url(node, "/api/x"), method="DELETE"),
        await fetch(client, node_url(node, "/api/x")),
        await fetch(client, node_url(node, "/api/x")),
    ]
    assert [a[0] for a in answers] == [504, 502, 200, 200, 200]
    for status, headers, _ in answers:
        assert len(headers.getall("Cache-Status")) == 1, status
        assert own_status(headers["Cache-Status"])[""] == NAME
    oic = own_status(answers[0][1]["Cache-Status"])
    assert oic.get("fwd") == "miss" and oic.get("detail") == "only-if-cached", oic
    assert "detail" in own_status(answers[1][1]["Cache-Status"])
    assert is_hit(answers[4][1])


async def test_upstream_members_come_first(make_node, origin, client) -> None:
    """RFC 9211 sec. 2: "The first member of the list represents the cache closest to the
    origin server, and the last member of the list represents the cache closest to the user"
    and "When adding a value to the Cache-Status header field, caches SHOULD preserve the
    existing field value, to allow debugging of the entire chain of caches handling the
    request"."""
    origin.routes["/api/chain"] = respond(
        headers={"Cache-Control": "max-age=600", "Cache-Status": "OriginCache; hit; ttl=1100"}
    )
    node = await make_node({"parents": [origin.endpoint]})
    _, headers, body = await fetch(client, node_url(node, "/api/chain"))
    assert body == BODY
    value = headers["Cache-Status"]
    assert value.startswith("OriginCache; hit; ttl=1100, "), value
    assert own_status(value)[""] == NAME


async def test_ttl_on_a_miss_is_the_remaining_freshness(make_node, origin, client) -> None:
    """RFC 9211 sec. 2.4: ``ttl`` "indicates the response's remaining freshness lifetime (see
    Section 4.2.1 of [HTTP-CACHING]) as calculated by the cache, as an integer number of
    seconds, measured when the response header section is sent by the cache". An answer
    100 s old (Age: 100) with max-age=3600 has about 3500 s left - on the miss as on the
    hit that follows."""
    origin.routes["/api/aged"] = respond(headers={"Cache-Control": "max-age=3600", "Age": "100"})
    node = await make_node({"parents": [origin.endpoint]})
    _, headers, _ = await fetch(client, node_url(node, "/api/aged"))
    assert 3490 <= int(own_status(headers["Cache-Status"])["ttl"]) <= 3500, headers["Cache-Status"]


async def test_fwd_status_when_the_answer_status_differs(make_node, origin, client) -> None:
    """RFC 9211 sec. 2.3: "If fwd-status is not present but fwd is, it defaults to the status
    code sent in the response." A Range request for a cold key is forwarded as a full GET
    (200) and answered 206: the member must say fwd-status=200."""
    origin.routes["/api/range"] = respond(headers={"Cache-Control": "max-age=600"})
    node = await make_node({"parents": [origin.endpoint]})
    status, headers, body = await fetch(
        client, node_url(node, "/api/range"), {"Range": "bytes=0-9"}
    )
    assert status == 206 and body == BODY[:10]
    cs = own_status(headers["Cache-Status"])
    assert cs.get("fwd") == "uri-miss" and cs.get("fwd-status") == "200", cs
