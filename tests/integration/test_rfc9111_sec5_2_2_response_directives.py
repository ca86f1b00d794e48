"""RFC 9111 sec. 5.2 (Cache-Control syntax), sec. 5.2.2 (Response Cache-Control Directives)
and sec. 5.2.3 (extension directives), end to end through a live node.

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
    NO_DEFAULT_TTL,
    fetch,
    http_date,
    is_hit,
    node_url,
    own_status,
    respond,
    sequence,
    ttl_of,
    validating,
)

pytestmark = pytest.mark.integration


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
    url = node_url(node, "/api/profile")

    status, headers, body = await fetch(client, url)
    assert status == 200 and body == BODY
    assert headers.getall("X-User", []) == ["alice"]
    status, headers, body = await fetch(client, url)
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
    url = node_url(node, "/api/login2")

    async with aiohttp.ClientSession() as first, aiohttp.ClientSession() as second:
        status, headers, body = await fetch(first, url)
        assert status == 200 and body == b"first"
        assert headers.getall("Set-Cookie", []) == ["sid=one"]
        status, headers, _ = await fetch(second, url)
        assert status == 200
        assert "sid=one" not in " ".join(headers.getall("Set-Cookie", []))


async def test_response_no_cache_is_always_revalidated(make_node, origin, client) -> None:
    """RFC 9111 sec. 5.2.2.4: "The no-cache response directive, in its unqualified form
    (without an argument), indicates that the response MUST NOT be used to satisfy any other
    request without forwarding it for validation and receiving a successful response" - even
    while it is fresh (max-age=600)."""
    origin.routes["/api/always"] = validating(cache_control="no-cache, max-age=600")
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/always")

    await fetch(client, url)
    for n in (2, 3):
        status, headers, body = await fetch(client, url)
        assert status == 200 and body == BODY
        assert "hit" not in headers["Cache-Status"].split(";")[1]
        assert origin.count("/api/always") == n
        assert origin.last_headers("/api/always").get("If-None-Match") == '"v1"'


# ---- sec. 5.2: syntax ------------------------------------------------------------------------

INVALID_DELTA_SECONDS = {
    "single-quoted": "max-age='3600'",
    "negative": "max-age=-3600",
    "leading-alpha": "max-age=a3600",
    "trailing-alpha": "max-age=3600a",
    "decimal": "max-age=3600.5",
    "space-before-equals": "max-age =3600",
    "space-after-equals": "max-age= 3600",
    "empty": "max-age=",
    "no-argument": "max-age",
    "unterminated-quote": 'max-age="3600',
    "s-maxage-single-quoted": "s-maxage='3600'",
    "s-maxage-negative": "s-maxage=-1, max-age=3600",
}


@pytest.mark.parametrize(
    "cache_control", INVALID_DELTA_SECONDS.values(), ids=INVALID_DELTA_SECONDS.keys()
)
async def test_invalid_delta_seconds_never_make_a_response_fresh(
    make_node, origin, client, cache_control
) -> None:
    """Sec. 1.2.2: "delta-seconds = 1*DIGIT"; sec. 4.2.1: "Caches are encouraged to consider
    responses that have invalid freshness information (e.g., a max-age directive with
    non-integer content) to be stale." A single-quoted, negative, non-numeric or decimal
    argument, or whitespace around "=" (cache-directive = token [ "=" ( token /
    quoted-string ) ]), counts as 0: the response (stored for its ETag) is validated on every
    reuse, whatever the policy's default TTL (cache-tests freshness-max-age-single-quoted,
    -negative, -a100, -100a, -space-before-equals, -space-after-equals)."""
    origin.routes["/api/inv"] = validating(cache_control=cache_control)
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/inv")

    await fetch(client, url)
    status, headers, body = await fetch(client, url)
    assert status == 200 and body == BODY
    assert not is_hit(headers), headers["Cache-Status"]
    assert origin.last_headers("/api/inv").get("If-None-Match") == '"v1"'


@pytest.mark.parametrize(
    "cache_control",
    ["max-age=3600", 'max-age="3600"', "MaX-AgE=3600", "foo, max-age=3600, bar=baz"],
)
async def test_valid_max_age_forms_make_a_response_fresh(
    make_node, origin, client, cache_control
) -> None:
    """Sec. 5.2: "Cache directives are identified by a token, to be compared
    case-insensitively, and have an optional argument that can use both token and
    quoted-string syntax. For the directives defined below that define arguments, recipients
    ought to accept both forms, even if a specific form is required for generation."
    Sec. 5.2.2.1 ("A sender MUST NOT generate the quoted-string form") binds senders only: as
    a recipient the node takes max-age="3600" as 3600 (cache-tests freshness-max-age-quoted,
    -case-insenstive, -extension). Sec. 5.2: "A proxy, whether or not it implements a cache,
    MUST pass cache directives through in forwarded messages": the client sees the field as
    the origin sent it."""
    origin.routes["/api/ok"] = validating(cache_control=cache_control)
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/ok")

    await fetch(client, url)
    status, headers, body = await fetch(client, url)
    assert status == 200 and body == BODY
    assert is_hit(headers), headers["Cache-Status"]
    assert headers.getall("Cache-Control") == [cache_control]
    assert origin.count("/api/ok") == 1


@pytest.mark.parametrize(
    "cache_control",
    [
        'extension="max-age=3600", max-age=0',
        'max-age=0, extension="max-age=3600"',
        'extension="max-age=3600", max-age="0"',
        'no-cache="a, max-age=3600, b"',
    ],
)
async def test_max_age_inside_a_quoted_string_is_not_a_directive(
    make_node, origin, client, cache_control
) -> None:
    """Sec. 5.2: cache-directive = token [ "=" ( token / quoted-string ) ]; a comma or
    "max-age" inside a quoted-string is part of the argument (RFC 9110 sec. 5.6.4), never a
    directive of its own (cache-tests freshness-max-age-ignore-quoted*)."""
    origin.routes["/api/q"] = validating(cache_control=cache_control)
    node = await make_node({"parents": [origin.endpoint]}, policies=NO_DEFAULT_TTL)
    url = node_url(node, "/api/q")

    await fetch(client, url)
    _, headers, _ = await fetch(client, url)
    assert not is_hit(headers), headers["Cache-Status"]
    assert origin.count("/api/q") == 2


async def test_huge_max_age_is_capped_not_wrapped(make_node, origin, client) -> None:
    """Sec. 1.2.2: "If a cache receives a delta-seconds value greater than the greatest
    integer it can represent, or if any of its subsequent calculations overflows, the cache
    MUST consider the value to be 2147483648 (2^31)". max-age=99999999999 stays a long
    lifetime (cache-tests freshness-max-age-max-plus), then clamped by the policy's max_ttl
    (1 hour on /api)."""
    origin.routes["/api/forever"] = respond(headers={"Cache-Control": "max-age=99999999999"})
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/forever")

    await fetch(client, url)
    _, headers, _ = await fetch(client, url)
    assert is_hit(headers)
    assert 3590 <= ttl_of(headers["Cache-Status"]) <= 3600, headers["Cache-Status"]


# ---- sec. 5.2.2: response directives ---------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "cache_control", "stored"),
    [
        (200, "must-understand, no-store, max-age=600", True),
        (404, "must-understand, no-store, max-age=600", True),
        (299, "must-understand, no-store, max-age=600", False),
        (299, "must-understand, max-age=600", False),
        (299, "max-age=600", True),
    ],
)
async def test_must_understand(make_node, origin, client, status, cache_control, stored) -> None:
    """Sec. 5.2.2.3: "The must-understand response directive limits caching of the response to
    a cache that understands and conforms to the requirements for that response's status
    code. ... When a cache that implements the must-understand directive receives a response
    that includes it, the cache SHOULD ignore the no-store directive if it understands and
    implements the status code's caching requirements." The node understands 200 and 404,
    not 299 (which it stores only when explicitly fresh and without must-understand)."""
    origin.routes["/api/mu"] = respond(status=status, headers={"Cache-Control": cache_control})
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/mu")

    for _ in range(2):
        got, headers, body = await fetch(client, url)
        assert got == status and body == BODY
    assert is_hit(headers) is stored, headers["Cache-Status"]
    assert origin.count("/api/mu") == (1 if stored else 2)


@pytest.mark.parametrize(
    ("cache_control", "omitted"),
    [
        ('no-cache="X-Token", max-age=600', ["X-Token"]),
        ('no-cache="a, b", max-age=600', ["a", "b"]),
        ('no-cache="A,B", max-age=600', ["a", "b"]),
        ('private="x-token", max-age=600', ["X-Token"]),
        ('private="a, b", max-age=600', ["a", "b"]),
    ],
)
async def test_fields_named_by_qualified_no_cache_or_private_are_not_reused(
    make_node, origin, client, cache_control, omitted
) -> None:
    """Sec. 5.2.2.4: "The qualified form of the no-cache response directive, with an argument
    that lists one or more field names, indicates that a cache MAY use the response to
    satisfy a subsequent request, subject to any other restrictions on caching, if the listed
    header fields are excluded from the subsequent response"; sec. 5.2.2.7: "a shared cache
    MUST NOT store the listed header fields if they are present in the original response but
    MAY store the remainder"; both: "Field names are case-insensitive." The hit has every
    other field (cache-tests headers-omit-headers-listed-in-Cache-Control-no-cache*)."""
    fields = {"Cache-Control": cache_control, "X-Token": "t", "a": "1", "b": "2", "c": "3"}
    origin.routes["/api/qual"] = respond(headers=fields)
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/qual")

    await fetch(client, url)
    status, headers, body = await fetch(client, url)
    assert status == 200 and body == BODY
    assert is_hit(headers), headers["Cache-Status"]
    for name in omitted:
        assert name not in headers, name
    assert headers["c"] == "3"
    assert headers["Cache-Control"] == cache_control
    assert origin.count("/api/qual") == 1


@pytest.mark.parametrize(("public", "stored"), [(True, True), (False, False)])
async def test_public_makes_a_response_heuristically_cacheable(
    make_node, origin, client, public, stored
) -> None:
    """Sec. 5.2.2.9: "The public response directive indicates that a cache MAY store the
    response even if it would otherwise be prohibited, subject to the constraints defined in
    Section 3. ... If a response with the public directive has no explicit freshness
    information, it is heuristically cacheable (Section 4.2.2)." A 302 (not heuristically
    cacheable) with Last-Modified and no explicit freshness is reused only with public."""
    fields = {"Location": "/elsewhere", "Last-Modified": http_date(-10 * 86400)}
    if public:
        fields["Cache-Control"] = "public"
    origin.routes["/pub"] = respond(status=302, headers=fields)
    node = await make_node({"parents": [origin.endpoint]}, policies=NO_DEFAULT_TTL)
    url = node_url(node, "/pub")

    for _ in range(2):
        status, headers, _ = await fetch(client, url)
        assert status == 302 and headers["Location"] == "/elsewhere"
    assert is_hit(headers) is stored, headers["Cache-Status"]
    assert origin.count("/pub") == (1 if stored else 2)


@pytest.mark.parametrize("no_transform", [True, False])
async def test_no_transform_forbids_compressing(make_node, origin, client, no_transform) -> None:
    """Sec. 5.2.2.6: "The no-transform response directive indicates that an intermediary
    (regardless of whether it implements a cache) MUST NOT transform the content, as defined
    in Section 7.7 of [HTTP]." Under a compressing policy the node serves a gzip variant of
    a compressible response, never of one with no-transform."""
    doc = b'{"items": [' + b", ".join(b'"item %d"' % i for i in range(300)) + b"]}"
    cache_control = "max-age=600, no-transform" if no_transform else "max-age=600"

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=doc, headers={"Cache-Control": cache_control, "Content-Type": "application/json"}
        )

    origin.routes["/doc.json"] = handler
    policies = [{"name": "api", "path": "*", "default_ttl": "5m", "compress": True}]
    node = await make_node({"parents": [origin.endpoint]}, policies=policies)
    url = node_url(node, "/doc.json")
    gzip_ok = {"Accept-Encoding": "gzip"}

    async with client.get(url, skip_auto_headers=["Accept-Encoding"]) as r:
        assert await r.read() == doc
    for _ in range(200):  # bounded: until the fill is published
        if node.node.store.index:
            break
        await asyncio.sleep(0.01)
    async with client.get(url, headers=gzip_ok) as r:
        await r.read()
        coding = r.headers.get("Content-Encoding")
    assert (coding is None) is no_transform, coding
    assert origin.count("/doc.json") == 1


async def test_unqualified_private_is_never_stored_whatever_else_it_says(
    make_node, origin, client
) -> None:
    """Sec. 5.2.2.7: "The unqualified private response directive indicates that a shared cache
    MUST NOT store the response (i.e., the response is intended for a single user)" - also
    next to public and s-maxage, and in another field line (RFC 9110 sec. 5.3: lines combine
    into one list)."""
    origin.routes["/api/mine"] = respond(
        headers=[("Cache-Control", "public, s-maxage=600"), ("Cache-Control", "private")]
    )
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/mine")

    for _ in range(2):
        status, headers, _ = await fetch(client, url)
        assert status == 200 and not is_hit(headers)
        assert "stored" not in own_status(headers["Cache-Status"])
    assert origin.count("/api/mine") == 2
