"""One node in front of a scripted plain-HTTP origin: the node's caching behaviour end to end,
organised by RFC 9111 section (plus RFC 9110, RFC 5861 and RFC 9211 where they apply).

Every test drives a real node over sockets; the scripted origin records what reached it, so
"stored" and "not stored" are proven by origin hits, never by reading the store.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from typing import Any

import aiohttp
import pytest
from aiohttp import web

pytestmark = pytest.mark.integration

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

BODY = b"hello from the origin\n" * 8


# ---- helpers ---------------------------------------------------------------------------------


def _url(node: Any, path: str) -> str:
    return f"http://127.0.0.1:{node.port}{path}"


def _cs(resp: aiohttp.ClientResponse) -> str:
    return resp.headers.get("Cache-Status", "")


def _ttl(cache_status: str) -> int:
    match = re.search(r"ttl=(-?\d+)", cache_status)
    assert match is not None, f"no ttl in Cache-Status {cache_status!r}"
    return int(match.group(1))


async def _get(
    client: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str] | None = None,
    method: str = "GET",
) -> tuple[int, Any, bytes]:
    async with client.request(method, url, headers=headers) as r:
        body = await r.read()
        return r.status, r.headers.copy(), body


def respond(
    body: bytes = BODY,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> Handler:
    """A handler answering the same response to every request."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, body=body, headers=headers or {})

    return handler


def validating(
    body: bytes = BODY,
    *,
    etag: str = '"v1"',
    cache_control: str = "max-age=0",
    headers: dict[str, str] | None = None,
    not_modified_headers: dict[str, str] | None = None,
) -> Handler:
    """200 with an ETag; 304 when the request's If-None-Match names that ETag."""

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.headers.get("If-None-Match") == etag:
            fields = {"ETag": etag, "Cache-Control": cache_control}
            fields.update(not_modified_headers or {})
            return web.Response(status=304, headers=fields)
        fields = {"ETag": etag, "Cache-Control": cache_control, "Content-Type": "text/plain"}
        fields.update(headers or {})
        return web.Response(body=body, headers=fields)

    return handler


def sequence(*handlers: Handler) -> Handler:
    """The n-th request gets the n-th handler (the last one repeats)."""
    calls = 0

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        chosen = handlers[min(calls, len(handlers) - 1)]
        calls += 1
        return await chosen(request)

    return handler


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _raw_exchange(port: int, data: bytes) -> bytes:
    """Send raw bytes to the node and read until it closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


def _split_response(raw: bytes) -> tuple[str, dict[str, str], bytes]:
    """(status line, lower-cased headers, everything after the header section)."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return lines[0], fields, rest


# ---- RFC 9111 sec. 3: storing responses ------------------------------------------------------


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
    url = _url(node, "/api/secret")

    status, headers, body = await _get(client, url)
    assert status == 200 and body == BODY
    assert "stored" not in headers.get("Cache-Status", "")
    status, headers, body = await _get(client, url)
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
    url = _url(node, "/api/login")

    async with aiohttp.ClientSession() as first, aiohttp.ClientSession() as second:
        status, headers, body = await _get(first, url)
        assert status == 200 and body == b"first"
        assert headers.getall("Set-Cookie", []) == ["sid=one"]

        status, headers, body = await _get(second, url)
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
    url = _url(node, "/api/session")

    results = await asyncio.gather(*(_get(client, url) for _ in range(5)))
    cookies = []
    for status, headers, body in results:
        assert status == 200
        got = headers.getall("Set-Cookie", [])
        assert len(got) == 1
        assert body == f"user-{got[0].removeprefix('sid=')}".encode()
        cookies.append(got[0])
    assert len(set(cookies)) == 5, cookies
    assert origin.count("/api/session") == 5


async def test_qualified_private_fields_reach_the_requester_only(make_node, origin, client) -> None:
    """RFC 9111 sec. 5.2.2.7: "If a qualified private response directive is present, with one
    or more field names, then only the listed header fields are limited to a single user: i.e.,
    a shared cache MUST NOT store the listed header fields if they are present in the original
    response but MAY store the remainder of the response message without those header
    fields". The listed fields belong to the user who made the request: that user receives
    them; later users get the stored remainder without them."""
    origin.routes["/api/profile"] = respond(
        headers={"Cache-Control": 'max-age=60, private="X-User"', "X-User": "alice"}
    )
    node = await make_node({"parents": [origin.endpoint]})
    url = _url(node, "/api/profile")

    status, headers, body = await _get(client, url)
    assert status == 200 and body == BODY
    assert headers.getall("X-User", []) == ["alice"]
    status, headers, body = await _get(client, url)
    assert status == 200 and body == BODY
    assert "X-User" not in headers
    assert origin.count("/api/profile") <= 2


@pytest.mark.parametrize(
    "cache_control", ['private="Set-Cookie", max-age=60', 'no-cache="Set-Cookie", max-age=60']
)
async def test_cookie_limited_by_a_qualified_directive_reaches_its_requester(
    make_node, origin, client, cache_control
) -> None:
    """RFC 9111 sec. 5.2.2.7 (qualified private: "a shared cache MUST NOT store the listed
    header fields ... but MAY store the remainder") and sec. 5.2.2.4 (qualified no-cache: the
    cache "MAY use the response to satisfy a subsequent request ... if the listed header fields
    are excluded from the subsequent response"): the restriction is on storing and reuse. The
    user whose request produced the response still receives its Set-Cookie; nobody else
    does."""
    origin.routes["/api/login2"] = sequence(
        respond(b"first", headers={"Cache-Control": cache_control, "Set-Cookie": "sid=one"}),
        respond(b"second", headers={"Cache-Control": "max-age=60"}),
    )
    node = await make_node({"parents": [origin.endpoint]})
    url = _url(node, "/api/login2")

    async with aiohttp.ClientSession() as first, aiohttp.ClientSession() as second:
        status, headers, body = await _get(first, url)
        assert status == 200 and body == b"first"
        assert headers.getall("Set-Cookie", []) == ["sid=one"]
        status, headers, _ = await _get(second, url)
        assert status == 200
        assert "sid=one" not in " ".join(headers.getall("Set-Cookie", []))


@pytest.mark.parametrize("cache_control", ["s-maxage=60", "max-age=0, s-maxage=60"])
async def test_s_maxage_response_is_stored(make_node, origin, client, cache_control) -> None:
    """RFC 9111 sec. 3: a shared cache may store a response containing "an s-maxage response
    directive"; sec. 5.2.2.10: "for a shared cache, the maximum age specified by this directive
    overrides the maximum age specified by either the max-age directive or the Expires header
    field"."""
    origin.routes["/api/shared"] = respond(headers={"Cache-Control": cache_control})
    node = await make_node({"parents": [origin.endpoint]})
    url = _url(node, "/api/shared")

    status, headers, _ = await _get(client, url)
    assert status == 200 and "stored" in headers["Cache-Status"]
    status, headers, body = await _get(client, url)
    assert status == 200 and body == BODY
    assert "hit" in headers["Cache-Status"]
    assert origin.count("/api/shared") == 1


async def test_response_to_authorized_request_is_not_reused(make_node, origin, client) -> None:
    """RFC 9111 sec. 3.5: "A shared cache MUST NOT use a cached response to a request with an
    Authorization header field ... to satisfy any subsequent request unless the response
    contains a Cache-Control field with a response directive ... that allows it to be stored by
    a shared cache" (must-revalidate, public, s-maxage). A plain max-age is not such a
    directive."""
    origin.routes["/api/me"] = respond(headers={"Cache-Control": "max-age=60"})
    node = await make_node({"parents": [origin.endpoint]})
    url = _url(node, "/api/me")
    auth = {"Authorization": "Bearer alice"}

    status, headers, _ = await _get(client, url, auth)
    assert status == 200 and "stored" not in headers["Cache-Status"]
    status, headers, _ = await _get(client, url, auth)
    assert status == 200 and "hit" not in headers["Cache-Status"]
    status, headers, _ = await _get(client, url)
    assert status == 200 and "hit" not in headers["Cache-Status"]
    assert origin.count("/api/me") == 3


@pytest.mark.parametrize(
    "cache_control", ["public, max-age=60", "s-maxage=60", "must-revalidate, max-age=60"]
)
async def test_response_to_authorized_request_is_reused_when_explicitly_shared(
    make_node, origin, client, cache_control
) -> None:
    """RFC 9111 sec. 3.5: "In this specification, the following response directives have such
    an effect: must-revalidate ..., public ..., and s-maxage" - a response to an authorized
    request carrying one of them may be stored and reused."""
    origin.routes["/api/catalog"] = respond(headers={"Cache-Control": cache_control})
    node = await make_node({"parents": [origin.endpoint]})
    url = _url(node, "/api/catalog")
    auth = {"Authorization": "Bearer alice"}

    await _get(client, url, auth)
    status, headers, body = await _get(client, url, auth)
    assert status == 200 and body == BODY
    assert "hit" in headers["Cache-Status"]
    assert origin.count("/api/catalog") == 1


async def test_request_no_store_is_not_stored(make_node, origin, client) -> None:
    """RFC 9111 sec. 5.2.1.5: "The no-store request directive indicates that a cache MUST NOT
    store any part of either this request or any response to it"."""
    origin.routes["/api/ns"] = respond(headers={"Cache-Control": "max-age=60"})
    node = await make_node({"parents": [origin.endpoint]})
    url = _url(node, "/api/ns")

    status, headers, body = await _get(client, url, {"Cache-Control": "no-store"})
    assert status == 200 and body == BODY
    assert "stored" not in headers["Cache-Status"]
    status, headers, _ = await _get(client, url)
    assert status == 200 and "hit" not in headers["Cache-Status"]
    assert origin.count("/api/ns") == 2


# ---- RFC 9111 sec. 4.2 / 4.3: freshness and validation ---------------------------------------


async def test_max_age_zero_with_etag_is_stored_and_revalidated(make_node, origin, client) -> None:
    """RFC 9111 sec. 4.3.1: "When generating a conditional request for validation, a cache ...
    MUST send the relevant entity tags (using If-Match, If-None-Match, or If-Range) if the
    entity tags were provided in the stored response(s) being validated". Sec. 4.3.3: "A 304
    (Not Modified) response status code indicates that the stored response can be updated and
    reused". RFC 9211 sec. 2.2/2.3: ``fwd=stale`` and ``fwd-status`` name what happened."""
    origin.routes["/api/doc"] = validating(cache_control="max-age=0")
    node = await make_node({"parents": [origin.endpoint]})
    url = _url(node, "/api/doc")

    status, headers, body = await _get(client, url)
    assert status == 200 and body == BODY
    assert "stored" in headers["Cache-Status"]
    assert "If-None-Match" not in origin.last_headers("/api/doc")

    status, headers, body = await _get(client, url)
    assert status == 200
    assert body == BODY
    assert int(headers["Content-Length"]) == len(BODY)
    assert origin.last_headers("/api/doc").get("If-None-Match") == '"v1"'
    cs = headers["Cache-Status"]
    assert "fwd=stale" in cs and "fwd-status=304" in cs, cs
    assert headers["ETag"] == '"v1"'
    assert origin.count("/api/doc") == 2


@pytest.mark.parametrize("expires", ["past", "0"])
async def test_expires_in_the_past_is_revalidated(make_node, origin, client, expires) -> None:
    """RFC 9111 sec. 4.2.1: the lifetime is "Expires - Date"; sec. 5.3: "A cache recipient MUST
    interpret invalid date formats, especially the value "0", as representing a time in the
    past (i.e., "already expired")". An already expired response is never served without
    validation (sec. 4.2.4: "A cache MUST NOT send stale responses unless it is disconnected
    or doing so is explicitly permitted")."""
    value = formatdate(time.time() - 3600, usegmt=True) if expires == "past" else "0"
    origin.routes["/api/old"] = validating(cache_control="public", headers={"Expires": value})
    node = await make_node({"parents": [origin.endpoint]})
    url = _url(node, "/api/old")

    await _get(client, url)
    status, headers, body = await _get(client, url)
    assert status == 200 and body == BODY
    assert "hit" not in headers["Cache-Status"]
    assert origin.last_headers("/api/old").get("If-None-Match") == '"v1"'
    assert origin.count("/api/old") == 2


async def test_expires_in_the_past_without_validator_is_refetched(
    make_node, origin, client
) -> None:
    """RFC 9111 sec. 4.2: a response whose Expires is before its Date has a freshness lifetime
    of 0; without a validator it cannot be reused at all (sec. 4.2.4), so the next request is
    a full fetch from the origin."""
    past = formatdate(time.time() - 3600, usegmt=True)
    origin.routes["/api/gone"] = respond(headers={"Expires": past})
    node = await make_node({"parents": [origin.endpoint]})
    url = _url(node, "/api/gone")

    await _get(client, url)
    status, headers, body = await _get(client, url)
    assert status == 200 and body == BODY
    assert "hit" not in headers["Cache-Status"]
    assert "If-None-Match" not in origin.last_headers("/api/gone")
    assert origin.count("/api/gone") == 2


async def test_no_freshness_information_uses_the_policy_default_ttl(
    make_node, origin, client
) -> None:
    """RFC 9111 sec. 4.2.2: "a cache MAY assign a heuristic expiration time when an explicit
    time is not specified"; the node's policy default_ttl is that heuristic (CloudFront's
    "default TTL": used when the origin sends no max-age, s-maxage or Expires). The api policy
    of the test config has default_ttl 5m."""
    origin.routes["/api/plain"] = respond()
    node = await make_node({"parents": [origin.endpoint]})
    url = _url(node, "/api/plain")

    status, headers, _ = await _get(client, url)
    assert status == 200 and "stored" in headers["Cache-Status"]
    status, headers, body = await _get(client, url)
    assert status == 200 and body == BODY
    cs = headers["Cache-Status"]
    assert "hit" in cs
    assert 290 <= _ttl(cs) <= 300, cs
    assert origin.count("/api/plain") == 1


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
    url = _url(node, "/api/plain")

    status, headers, _ = await _get(client, url)
    assert status == 200 and "stored" not in headers["Cache-Status"]
    status, headers, _ = await _get(client, url)
    assert status == 200 and "hit" not in headers["Cache-Status"]
    assert origin.count("/api/plain") == 2


async def test_304_header_fields_replace_the_stored_ones(make_node, origin, client) -> None:
    """RFC 9111 sec. 4.3.4: "the cache MUST update its header fields with the header fields
    provided in the 304 (Not Modified) response, as per Section 3.2"; sec. 3.2: "the cache MUST
    add each header field in the provided response to the stored response, replacing field
    values that are already present". The updated fields (and the 304's max-age) are then used
    by later hits."""
    origin.routes["/api/versioned"] = validating(
        cache_control="max-age=0",
        headers={"X-Version": "1"},
        not_modified_headers={"X-Version": "2", "Cache-Control": "max-age=60"},
    )
    node = await make_node({"parents": [origin.endpoint]})
    url = _url(node, "/api/versioned")

    _, headers, _ = await _get(client, url)
    assert headers.getall("X-Version") == ["1"]
    status, headers, body = await _get(client, url)
    assert status == 200 and body == BODY
    assert "fwd-status=304" in headers["Cache-Status"]
    assert headers.getall("X-Version") == ["2"]
    assert headers["Content-Type"].startswith("text/plain")

    status, headers, body = await _get(client, url)
    assert status == 200 and body == BODY
    assert "hit" in headers["Cache-Status"]
    assert headers.getall("X-Version") == ["2"]
    assert headers["Cache-Control"] == "max-age=60"
    assert origin.count("/api/versioned") == 2


async def test_response_no_cache_is_always_revalidated(make_node, origin, client) -> None:
    """RFC 9111 sec. 5.2.2.4: "The no-cache response directive, in its unqualified form
    (without an argument), indicates that the response MUST NOT be used to satisfy any other
    request without forwarding it for validation and receiving a successful response" - even
    while it is fresh (max-age=600)."""
    origin.routes["/api/always"] = validating(cache_control="no-cache, max-age=600")
    node = await make_node({"parents": [origin.endpoint]})
    url = _url(node, "/api/always")

    await _get(client, url)
    for n in (2, 3):
        status, headers, body = await _get(client, url)
        assert status == 200 and body == BODY
        assert "hit" not in headers["Cache-Status"].split(";")[1]
        assert origin.count("/api/always") == n
        assert origin.last_headers("/api/always").get("If-None-Match") == '"v1"'


async def test_full_response_to_a_revalidation_replaces_the_stored_one(
    make_node, origin, client
) -> None:
    """RFC 9111 sec. 4.3.3: "A full response (i.e., one containing content) indicates that none of
    the stored responses nominated in the conditional request are suitable. Instead, the cache
    MUST use the full response to satisfy the request. The cache MAY store such a full
    response"."""
    origin.routes["/api/changed"] = sequence(
        validating(b"old", etag='"v1"', cache_control="max-age=0"),
        validating(b"new", etag='"v2"', cache_control="max-age=600"),
    )
    node = await make_node({"parents": [origin.endpoint]})
    url = _url(node, "/api/changed")

    await _get(client, url)
    status, headers, body = await _get(client, url)
    assert status == 200 and body == b"new"
    assert headers["ETag"] == '"v2"'
    assert origin.last_headers("/api/changed").get("If-None-Match") == '"v1"'
    status, headers, body = await _get(client, url)
    assert body == b"new" and headers["ETag"] == '"v2"' and "hit" in headers["Cache-Status"]
    assert origin.count("/api/changed") == 2


# ---- RFC 9111 sec. 4.4: invalidation ---------------------------------------------------------


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
    url = _url(node, "/api/item")

    await _get(client, url)
    _, headers, _ = await _get(client, url)
    assert "hit" in headers["Cache-Status"]

    async with client.request(method, url, data=b"payload") as r:
        assert r.status == status
        await r.read()
    assert origin.count("/api/item", method) == 1

    status_after, headers, body = await _get(client, url)
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
    url = _url(node, "/api/item")

    await _get(client, url)
    async with client.post(url, data=b"payload") as r:
        assert r.status == 500
        await r.read()
    status, headers, body = await _get(client, url)
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

    await _get(client, _url(node, "/api/list"))
    async with client.post(_url(node, "/api/create"), data=b"x") as r:
        assert r.status == 201
        await r.read()
    _, headers, _ = await _get(client, _url(node, "/api/list"))
    assert "hit" not in headers["Cache-Status"]
    assert origin.count("/api/list") == 2


# ---- RFC 9111 sec. 5.2.1 / 5.4: request directives ------------------------------------------


async def test_request_no_cache_is_revalidated(make_node, origin, client) -> None:
    """RFC 9111 sec. 5.2.1.4: "The no-cache request directive indicates that the client prefers
    a stored response not be used to satisfy the request without successful validation on the
    origin server". RFC 9211 sec. 2.2: ``fwd=request`` - the request's semantics did not allow
    the use of the fresh stored response."""
    origin.routes["/api/nc"] = validating(cache_control="max-age=600")
    node = await make_node({"parents": [origin.endpoint]})
    url = _url(node, "/api/nc")

    await _get(client, url)
    status, headers, body = await _get(client, url, {"Cache-Control": "no-cache"})
    assert status == 200 and body == BODY
    assert origin.count("/api/nc") == 2
    assert origin.last_headers("/api/nc").get("If-None-Match") == '"v1"'
    cs = headers["Cache-Status"]
    assert "fwd=request" in cs and "fwd-status=304" in cs, cs


async def test_request_max_age_zero_is_revalidated(make_node, origin, client) -> None:
    """RFC 9111 sec. 5.2.1.1: "The max-age request directive indicates that the client prefers
    a response whose age is less than or equal to the specified number of seconds"; a stored
    response older than 0 s must be validated. RFC 9211 sec. 2.2: the stored response was
    fresh, so the forward reason is ``request`` ("the request's semantics ... did not allow
    its use"), not ``stale``."""
    origin.routes["/api/ma"] = validating(cache_control="max-age=600")
    node = await make_node({"parents": [origin.endpoint]})
    url = _url(node, "/api/ma")

    await _get(client, url)
    status, headers, body = await _get(client, url, {"Cache-Control": "max-age=0"})
    assert status == 200 and body == BODY
    assert origin.count("/api/ma") == 2
    assert origin.last_headers("/api/ma").get("If-None-Match") == '"v1"'
    assert "fwd-status=304" in headers["Cache-Status"]
    assert "fwd=request" in headers["Cache-Status"], headers["Cache-Status"]


async def test_only_if_cached(make_node, origin, client) -> None:
    """RFC 9111 sec. 5.2.1.7: "The only-if-cached request directive indicates that the client
    only wishes to obtain a stored response. Caches that honor this request directive SHOULD,
    upon receiving it, respond with either a stored response consistent with the other
    constraints of the request or a 504 (Gateway Timeout) status code"."""
    origin.routes["/api/oic"] = respond(headers={"Cache-Control": "max-age=600"})
    origin.routes["/api/oic-stale"] = validating(cache_control="max-age=0")
    node = await make_node({"parents": [origin.endpoint]})
    only = {"Cache-Control": "only-if-cached"}

    status, _, _ = await _get(client, _url(node, "/api/oic"), only)
    assert status == 504
    assert origin.count("/api/oic") == 0

    await _get(client, _url(node, "/api/oic"))
    status, headers, body = await _get(client, _url(node, "/api/oic"), only)
    assert status == 200 and body == BODY and "hit" in headers["Cache-Status"]
    assert origin.count("/api/oic") == 1

    # stored but stale: no validation allowed -> 504, the origin is not contacted
    await _get(client, _url(node, "/api/oic-stale"))
    status, _, _ = await _get(client, _url(node, "/api/oic-stale"), only)
    assert status == 504
    assert origin.count("/api/oic-stale") == 1


async def test_pragma_no_cache_without_cache_control_is_revalidated(
    make_node, origin, client
) -> None:
    """RFC 7234 sec. 5.4: "When the Cache-Control header field is not present in a request,
    caches MUST consider the no-cache request pragma-directive as having the same effect as if
    "Cache-Control: no-cache" were present" (RFC 9111 sec. 5.4 deprecates Pragma but keeps it
    for HTTP/1.0 clients); when Cache-Control is present, Pragma is ignored."""
    origin.routes["/api/pragma"] = validating(cache_control="max-age=600")
    node = await make_node({"parents": [origin.endpoint]})
    url = _url(node, "/api/pragma")

    await _get(client, url)
    status, headers, body = await _get(client, url, {"Pragma": "no-cache"})
    assert status == 200 and body == BODY
    assert origin.count("/api/pragma") == 2
    assert origin.last_headers("/api/pragma").get("If-None-Match") == '"v1"'
    assert "hit" not in headers["Cache-Status"]

    status, headers, _ = await _get(
        client, url, {"Pragma": "no-cache", "Cache-Control": "max-stale=10"}
    )
    assert status == 200 and "hit" in headers["Cache-Status"]
    assert origin.count("/api/pragma") == 2


# ---- RFC 9111 sec. 4.1: Vary -----------------------------------------------------------------


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
    url = _url(node, "/api/neg")
    json_accept = {"Accept": "application/json"}
    html_accept = {"Accept": "text/html"}

    _, _, body = await _get(client, url, json_accept)
    assert body == b"variant-1"
    _, headers, body = await _get(client, url, json_accept)
    assert body == b"variant-1" and "hit" in headers["Cache-Status"]

    status, headers, body = await _get(client, url, html_accept)
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
    url = _url(node, "/api/negotiated")

    _, _, body = await _get(client, url, {"Accept": "application/json"})
    assert body == b"for application/json"
    _, _, body = await _get(client, url, {"Accept": "text/html"})
    assert body == b"for text/html"
    _, _headers, body = await _get(client, url, {"Accept": "application/json"})
    assert body == b"for application/json"  # one variant per key for now: a refetch, never
    # the text/html variant served to an application/json request


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
    url = _url(node, "/api/negotiated")
    _, _, body = await _get(client, url, {"Accept": "application/json"})
    assert body == b"for (none)"
    _, headers, body = await _get(client, url, {"Accept": "text/html"})
    assert body == b"for (none)"
    assert "hit" in headers["Cache-Status"]
    assert origin.count("/api/negotiated") == 1


async def test_vary_star_is_never_served_from_cache(make_node, origin, client) -> None:
    """RFC 9111 sec. 4.1: "A stored response with a Vary header field value containing a
    member "*" always fails to match"."""
    origin.routes["/api/star"] = respond(headers={"Cache-Control": "max-age=600", "Vary": "*"})
    node = await make_node({"parents": [origin.endpoint]})
    url = _url(node, "/api/star")

    for _ in range(3):
        status, headers, body = await _get(client, url)
        assert status == 200 and body == BODY
        assert "hit" not in headers["Cache-Status"]
    assert origin.count("/api/star") == 3


# ---- RFC 9110 sec. 7.6.1 / RFC 9111 sec. 3.1: header fields ----------------------------------


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
    url = _url(node, "/api/hop")

    for expect in ("fwd=uri-miss", "hit"):
        status, headers, body = await _get(client, url)
        assert status == 200 and body == BODY
        assert expect in headers["Cache-Status"]
        for name in ("X-Foo", "Keep-Alive", "Upgrade", "Proxy-Connection"):
            assert name not in headers, (expect, name, headers.get(name))
        assert headers.get("Connection", "keep-alive").lower() in ("keep-alive", "close")
        assert headers.getall("X-Unknown", []) == ["1"]
    assert origin.count("/api/hop") == 1


# ---- RFC 9111 sec. 4.2.3 / 5.1: Age; RFC 9211: Cache-Status ----------------------------------


async def test_age_from_upstream_counts_and_hit_reports_ttl(make_node, origin, client) -> None:
    """RFC 9111 sec. 4: "When a stored response is used to satisfy a request without
    validation, a cache MUST generate an Age header field ..., replacing any present in the
    response with a value equal to the stored response's current_age"; sec. 4.2.3:
    corrected_age_value = age_value + response_delay. RFC 9211 sec. 2.1: ``hit``; sec. 2.7:
    ``ttl`` is "the response's remaining freshness lifetime" (3600 - 100)."""
    origin.routes["/api/aged"] = respond(headers={"Cache-Control": "max-age=3600", "Age": "100"})
    node = await make_node({"parents": [origin.endpoint]})
    url = _url(node, "/api/aged")

    _, headers, _ = await _get(client, url)
    assert int(headers["Age"]) >= 100
    status, headers, body = await _get(client, url)
    assert status == 200 and body == BODY
    assert int(headers["Age"]) >= 100
    assert headers.getall("Age") == [headers["Age"]]
    cs = headers["Cache-Status"]
    assert "hit" in cs and "ttl=" in cs
    assert 3490 <= _ttl(cs) <= 3500, cs
    assert origin.count("/api/aged") == 1


# ---- single flight ---------------------------------------------------------------------------


async def test_concurrent_misses_make_one_origin_request(make_node, origin, client) -> None:
    """RFC 9211 sec. 2.5: ``collapsed`` "indicates whether this request was collapsed together
    with one or more other forward requests". DESIGN.md step 5: "the first request for a key
    becomes the writer ...; every other request for that key ... streams too". 50 concurrent
    requests for a cold key: one origin request, 50 identical complete bodies."""
    payload = bytes(range(256)) * 400  # 100 KiB

    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.3)
        return web.Response(body=payload, headers={"Cache-Control": "max-age=600"})

    origin.routes["/audio/hot.mp3"] = slow
    node = await make_node({"parents": [origin.endpoint]})
    url = _url(node, "/audio/hot.mp3")

    results = await asyncio.gather(*(_get(client, url) for _ in range(50)))
    assert origin.count("/audio/hot.mp3") == 1
    statuses = [status for status, _, _ in results]
    assert statuses == [200] * 50
    for _, headers, body in results:
        assert len(body) == len(payload)
        assert body == payload
        assert int(headers["Content-Length"]) == len(payload)
    collapsed = [h["Cache-Status"] for _, h, _ in results if "collapsed" in h["Cache-Status"]]
    assert collapsed, [h["Cache-Status"] for _, h, _ in results]


# ---- failures --------------------------------------------------------------------------------


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_truncated_upstream_body_fails_the_client_and_is_not_stored(
    make_node, origin, client, framing
) -> None:
    """RFC 9112 sec. 8: "A client that receives an incomplete response message, which can
    occur when a connection is closed prematurely or when decoding a supposed chunked transfer
    coding fails, MUST record the message as incomplete"; RFC 9111 sec. 3.3: "A cache MUST NOT
    use an incomplete response to answer requests unless the response has been made complete".
    The node must pass the failure on (the client sees a failed transfer, never a short clean
    answer) and must not store anything."""
    full = b"z" * 100_000

    async def truncated(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Cache-Control": "max-age=600"})
        if framing == "content-length":
            resp.content_length = len(full)
        else:
            resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(full[:50_000])
        assert request.transport is not None
        request.transport.abort()
        return resp

    origin.routes["/audio/cut.mp3"] = sequence(truncated, respond(full))
    node = await make_node({"parents": [origin.endpoint]})
    url = _url(node, "/audio/cut.mp3")

    received = b""
    with pytest.raises(aiohttp.ClientError):
        async with client.get(url) as r:
            assert r.status == 200
            async for chunk in r.content.iter_any():
                received += chunk
    assert len(received) < len(full)

    status, headers, body = await _get(client, url)
    assert status == 200 and body == full
    assert "hit" not in headers["Cache-Status"]
    assert origin.count("/audio/cut.mp3") == 2
    status, headers, body = await _get(client, url)
    assert body == full and "hit" in headers["Cache-Status"]
    assert origin.count("/audio/cut.mp3") == 2


async def test_unreachable_parent_gives_502(make_node, client) -> None:
    """RFC 9110 sec. 15.6.3: "The 502 (Bad Gateway) status code indicates that the server,
    while acting as a gateway or proxy, received an invalid response from an inbound server it
    accessed while attempting to fulfill the request" (here: no connection at all)."""
    node = await make_node({"parents": [f"http://127.0.0.1:{_unused_port()}"]})
    status, headers, _ = await _get(client, _url(node, "/api/anything"))
    assert status == 502
    assert "hit" not in headers.get("Cache-Status", "")


async def test_silent_origin_gives_504(make_node, origin, client) -> None:
    """RFC 9110 sec. 15.6.5: "The 504 (Gateway Timeout) status code indicates that the server,
    while acting as a gateway or proxy, did not receive a timely response from an upstream
    server it needed to access in order to complete the request" (read_timeout = 1s)."""
    release = asyncio.Event()

    async def silent(request: web.Request) -> web.StreamResponse:
        await release.wait()
        return web.Response(body=b"too late")

    origin.routes["/api/silent"] = silent
    node = await make_node({"parents": [origin.endpoint], "read_timeout": "1s"})
    try:
        status, _, _ = await asyncio.wait_for(_get(client, _url(node, "/api/silent")), 15)
        assert status == 504
    finally:
        release.set()


async def test_origin_stalling_mid_body_cuts_the_client_and_stores_nothing(
    make_node, origin, client
) -> None:
    """RFC 9112 sec. 8: an incomplete message must be recorded as incomplete; RFC 9111
    sec. 3.3: "A cache MUST NOT use an incomplete response to answer requests unless the
    response has been made complete". An origin that stops sending mid-body (read_timeout =
    1s) leaves the client with a failed transfer and the store without an entry."""
    release = asyncio.Event()

    async def stall(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Cache-Control": "max-age=600"})
        resp.content_length = 100_000
        await resp.prepare(request)
        await resp.write(b"s" * 10_000)
        await release.wait()
        return resp

    origin.routes["/api/stall"] = sequence(stall, respond(b"s" * 100_000))
    node = await make_node({"parents": [origin.endpoint], "read_timeout": "1s"})
    url = _url(node, "/api/stall")
    try:
        with pytest.raises(aiohttp.ClientError):
            async with client.get(url) as r:
                await asyncio.wait_for(r.read(), 15)
    finally:
        release.set()
    status, headers, body = await _get(client, url)
    assert status == 200 and len(body) == 100_000
    assert "hit" not in headers["Cache-Status"]
    assert origin.count("/api/stall") == 2


# ---- RFC 5861 sec. 4: stale-if-error ---------------------------------------------------------


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
    url = _url(node, "/api/sie")

    await _get(client, url)
    status, headers, body = await _get(client, url)
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
    url = _url(node, "/api/sie-drop")

    await _get(client, url)
    status, _, body = await _get(client, url)
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
    url = _url(node, "/api/strict")

    await _get(client, url)
    status, _, body = await _get(client, url)
    assert status >= 500
    assert body != BODY


# ---- negative caching ------------------------------------------------------------------------


async def test_404_without_freshness_is_cached_for_the_error_ttl(make_node, origin, client) -> None:
    """RFC 9110 sec. 15.5.5: "A 404 response is heuristically cacheable; i.e., unless
    otherwise indicated by the method definition or explicit cache controls"; RFC 9111
    sec. 4.2.2: "a cache MAY assign a heuristic expiration time when an explicit time is not
    specified". The node's heuristic for 404/410 is the policy's error_ttl (10 s by default),
    not its default_ttl (5 min for /api/*)."""
    origin.routes["/api/missing"] = respond(b"no such thing", status=404)
    node = await make_node({"parents": [origin.endpoint]})
    url = _url(node, "/api/missing")

    status, _, _ = await _get(client, url)
    assert status == 404
    status, headers, body = await _get(client, url)
    assert status == 404 and body == b"no such thing"
    cs = headers["Cache-Status"]
    assert "hit" in cs
    assert 0 <= _ttl(cs) <= 10, cs
    assert origin.count("/api/missing") == 1


# ---- HEAD ------------------------------------------------------------------------------------


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
    raw = await _raw_exchange(
        node.port,
        (
            f"HEAD /api/headme HTTP/1.1\r\nHost: {host}\r\n\r\n"
            f"GET /api/headme HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        ).encode(),
    )
    head_status, head_fields, rest = _split_response(raw)
    assert head_status.startswith("HTTP/1.1 200"), head_status
    assert int(head_fields["content-length"]) == len(BODY)
    assert "transfer-encoding" not in head_fields
    assert rest.startswith(b"HTTP/1.1 200"), rest[:80]
    _, get_fields, get_body = _split_response(rest)
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

    raw = await _raw_exchange(
        node.port,
        (
            f"GET /api/headhit HTTP/1.1\r\nHost: {host}\r\n\r\n"
            f"HEAD /api/headhit HTTP/1.1\r\nHost: {host}\r\n\r\n"
            f"HEAD /api/headhit HTTP/1.1\r\nHost: {host}\r\nCache-Control: max-stale=1\r\n"
            "Connection: close\r\n\r\n"
        ).encode(),
    )
    get_status, get_fields, rest = _split_response(raw)
    assert get_status.startswith("HTTP/1.1 200"), get_status
    assert int(get_fields["content-length"]) == len(BODY)
    assert rest[: len(BODY)] == BODY
    rest = rest[len(BODY) :]
    for _ in range(2):
        assert rest.startswith(b"HTTP/1.1 200"), rest[:80]
        _, fields, rest = _split_response(rest)
        assert int(fields["content-length"]) == len(BODY)
        assert "transfer-encoding" not in fields
        assert "hit" in fields["cache-status"], fields["cache-status"]
    assert rest == b""
    assert origin.count("/api/headhit") == 1
