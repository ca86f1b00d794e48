"""RFC 9111 sec. 4.3 (Validation): 4.3.1 sending a validation request, 4.3.2 handling a
received validation request, 4.3.3 handling a validation response, 4.3.4 freshening
stored responses upon validation (GET and HEAD), end to end through a live node.

Each test quotes the requirement it checks. The scripted origin records what reached it, so
"stored" and "not stored" are proven by origin hits, never by reading the store.
"""

from __future__ import annotations

import pytest
from aiohttp import web

from tests.support.rfc import (
    BODY,
    RawOrigin,
    fetch,
    http_date,
    is_hit,
    node_url,
    own_status,
    raw_exchange,
    raw_response,
    respond,
    sequence,
    split_response,
    validating,
    wait_stored,
)

LAST_MODIFIED = http_date(-10 * 86400)

pytestmark = pytest.mark.integration


async def test_max_age_zero_with_etag_is_stored_and_revalidated(make_node, origin, client) -> None:
    """RFC 9111 sec. 4.3.1: "When generating a conditional request for validation, a cache ...
    MUST send the relevant entity tags (using If-Match, If-None-Match, or If-Range) if the
    entity tags were provided in the stored response(s) being validated". Sec. 4.3.3: "A 304
    (Not Modified) response status code indicates that the stored response can be updated and
    reused". RFC 9211 sec. 2.2/2.3: ``fwd=stale`` and ``fwd-status`` name what happened."""
    origin.routes["/api/doc"] = validating(cache_control="max-age=0")
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/doc")

    status, headers, body = await fetch(client, url)
    assert status == 200 and body == BODY
    assert "stored" in headers["Cache-Status"]
    assert "If-None-Match" not in origin.last_headers("/api/doc")

    status, headers, body = await fetch(client, url)
    assert status == 200
    assert body == BODY
    assert int(headers["Content-Length"]) == len(BODY)
    assert origin.last_headers("/api/doc").get("If-None-Match") == '"v1"'
    cs = headers["Cache-Status"]
    assert "fwd=stale" in cs and "fwd-status=304" in cs, cs
    assert headers["ETag"] == '"v1"'
    assert origin.count("/api/doc") == 2


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
    url = node_url(node, "/api/versioned")

    _, headers, _ = await fetch(client, url)
    assert headers.getall("X-Version") == ["1"]
    status, headers, body = await fetch(client, url)
    assert status == 200 and body == BODY
    assert "fwd-status=304" in headers["Cache-Status"]
    assert headers.getall("X-Version") == ["2"]
    assert headers["Content-Type"].startswith("text/plain")

    status, headers, body = await fetch(client, url)
    assert status == 200 and body == BODY
    assert "hit" in headers["Cache-Status"]
    assert headers.getall("X-Version") == ["2"]
    assert headers["Cache-Control"] == "max-age=60"
    assert origin.count("/api/versioned") == 2


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
    url = node_url(node, "/api/changed")

    await fetch(client, url)
    status, headers, body = await fetch(client, url)
    assert status == 200 and body == b"new"
    assert headers["ETag"] == '"v2"'
    assert origin.last_headers("/api/changed").get("If-None-Match") == '"v1"'
    status, headers, body = await fetch(client, url)
    assert body == b"new" and headers["ETag"] == '"v2"' and "hit" in headers["Cache-Status"]
    assert origin.count("/api/changed") == 2


# ---- sec. 4.3.1: sending a validation request ------------------------------------------------


@pytest.mark.parametrize(
    ("etag", "last_modified"),
    [('"v1"', None), (None, LAST_MODIFIED), ('W/"v1"', LAST_MODIFIED)],
    ids=["etag", "last-modified", "both"],
)
async def test_validation_request_carries_the_stored_validators(
    make_node, origin, client, etag, last_modified
) -> None:
    """Sec. 4.3.1: "When generating a conditional request for validation, a cache: MUST send
    the relevant entity tags (using If-Match, If-None-Match, or If-Range) if the entity tags
    were provided in the stored response(s) being validated; SHOULD send the Last-Modified
    value (using If-Modified-Since) if the request is not for a subrange, a single stored
    response is being validated, and that response contains a Last-Modified value"."""

    async def handler(request: web.Request) -> web.StreamResponse:
        fields = {"Cache-Control": "max-age=0"}
        if etag:
            fields["ETag"] = etag
        if last_modified:
            fields["Last-Modified"] = last_modified
        conditional = "If-None-Match" in request.headers or "If-Modified-Since" in request.headers
        return web.Response(
            status=304 if conditional else 200, headers=fields, body=None if conditional else BODY
        )

    origin.routes["/api/v"] = handler
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/v")

    await fetch(client, url)
    status, headers, body = await fetch(client, url)
    assert status == 200 and body == BODY
    sent = origin.last_headers("/api/v")
    assert sent.get("If-None-Match") == etag
    assert sent.get("If-Modified-Since") == last_modified
    assert own_status(headers["Cache-Status"]).get("fwd-status") == "304"
    assert origin.count("/api/v") == 2


# ---- sec. 4.3.2: handling a received validation request --------------------------------------


@pytest.mark.parametrize(
    ("stored", "if_none_match", "not_modified"),
    [
        ('"v1"', '"v1"', True),
        ('"v1"', 'W/"v1"', True),
        ('W/"v1"', '"v1"', True),
        ('W/"v1"', 'W/"v1"', True),
        ('"v1"', '"x", "v1"', True),
        ('"v1"', "*", True),
        ('"v1"', '"v2"', False),
        ('"v1"', 'W/"v2", "x"', False),
    ],
)
async def test_if_none_match_uses_the_weak_comparison(
    make_node, origin, client, stored, if_none_match, not_modified
) -> None:
    """Sec. 4.3.2: "When a cache receives a request that can be satisfied by a stored response
    and that stored response contains validators, the cache SHOULD evaluate any applicable
    conditional header field preconditions received in that request with respect to the
    corresponding validators contained within the stored response." RFC 9110 sec. 13.1.2:
    "A recipient MUST use the weak comparison function when comparing entity tags for
    If-None-Match (Section 8.8.3.2), since weak entity tags can be used for cache validation
    even if there have been changes to the representation data." The origin is not asked."""
    origin.routes["/api/inm"] = validating(etag=stored, cache_control="max-age=600")
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/inm")

    await fetch(client, url)
    status, headers, body = await fetch(client, url, {"If-None-Match": if_none_match})
    assert status == (304 if not_modified else 200)
    assert body == (b"" if not_modified else BODY)
    assert is_hit(headers), headers["Cache-Status"]
    assert origin.count("/api/inm") == 1


@pytest.mark.parametrize(
    ("request_fields", "not_modified"),
    [
        ({"If-Modified-Since": http_date()}, True),
        ({"If-Modified-Since": LAST_MODIFIED}, True),
        ({"If-Modified-Since": http_date(-20 * 86400)}, False),
        ({"If-Modified-Since": "yesterday"}, False),
        ({"If-None-Match": '"other"', "If-Modified-Since": http_date()}, False),
        ({"If-None-Match": '"v1"', "If-Modified-Since": http_date(-20 * 86400)}, True),
    ],
    ids=["now", "equal", "older", "invalid", "inm-mismatch-wins", "inm-match-wins"],
)
async def test_if_modified_since_only_without_if_none_match(
    make_node, origin, client, request_fields, not_modified
) -> None:
    """Sec. 4.3.2: "If-None-Match takes precedence over If-Modified-Since" and "If an
    If-None-Match header field is not present, a request containing an If-Modified-Since
    header field (Section 13.1.3 of [HTTP]) indicates that the client wants to validate one
    or more of its own stored responses by modification date." RFC 9110 sec. 13.1.3: "A
    recipient MUST ignore If-Modified-Since if the request contains an If-None-Match header
    field" and "MUST ignore the If-Modified-Since header field if the received field value is
    not a valid HTTP-date"; 304 when "the selected representation's last modification date
    is earlier or equal to the date provided in the field value"."""
    origin.routes["/api/ims"] = validating(
        cache_control="max-age=600", headers={"Last-Modified": LAST_MODIFIED}
    )
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/ims")

    await fetch(client, url)
    status, _, body = await fetch(client, url, request_fields)
    assert status == (304 if not_modified else 200)
    assert body == (b"" if not_modified else BODY)
    assert origin.count("/api/ims") == 1


@pytest.mark.parametrize(("offset", "not_modified"), [(60, True), (-60, False)])
async def test_if_modified_since_without_last_modified_uses_the_stored_date(
    make_node, origin, client, offset, not_modified
) -> None:
    """Sec. 4.3.2: "If a request contains an If-Modified-Since header field and the
    Last-Modified header field is not present in a selected stored response, a cache SHOULD
    use the stored response's Date field value (or, if no Date field is present, the time
    that the stored response was received) to evaluate the conditional." The stored Date is
    about now."""
    origin.routes["/api/nolm"] = respond(headers={"Cache-Control": "max-age=600"})
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/nolm")

    await fetch(client, url)
    status, _, _ = await fetch(client, url, {"If-Modified-Since": http_date(offset)})
    assert status == (304 if not_modified else 200)
    assert origin.count("/api/nolm") == 1


async def test_304_to_the_client_carries_the_stored_validators_and_metadata(
    make_node, origin, client
) -> None:
    """RFC 9110 sec. 15.4.5: "The server generating a 304 response MUST generate any of the
    following header fields that would have been sent in a 200 (OK) response to the same
    request: Content-Location, Date, ETag, and Vary; Cache-Control and Expires"; a 304 has
    no content. RFC 9111 sec. 4: a stored response used without validation gets an Age. Read
    on the wire: a 304 head with its ETag and Last-Modified, then the next answer."""
    fields = {
        "ETag": '"v1"',
        "Last-Modified": LAST_MODIFIED,
        "Cache-Control": "max-age=600",
        "Expires": http_date(600),
        "Content-Location": "/api/meta.json",
        "Vary": "Accept-Encoding",
        "X-Other": "kept",
    }
    origin.routes["/api/meta"] = respond(headers=fields)
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/meta")
    await fetch(client, url)
    await wait_stored(node)

    host = f"127.0.0.1:{node.port}"
    raw = await raw_exchange(
        node.port,
        (
            f'GET /api/meta HTTP/1.1\r\nHost: {host}\r\nIf-None-Match: "v1"\r\n\r\n'
            f"GET /api/meta HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        ).encode(),
    )
    status_line, head, rest = split_response(raw)
    assert status_line.startswith("HTTP/1.1 304"), status_line
    for name in ("etag", "last-modified", "cache-control", "expires", "content-location", "vary"):
        assert head.get(name) == fields[name.title() if name != "etag" else "ETag"], name
    assert head.get("date") and head.get("age", "").isdigit()
    assert "hit" in head["cache-status"]
    assert "transfer-encoding" not in head and head.get("content-length", "0") == "0"
    assert rest.startswith(b"HTTP/1.1 200"), rest[:60]  # nothing sent after the 304's head
    assert origin.count("/api/meta") == 1


async def test_validation_request_for_a_cold_key_gets_the_full_response(
    make_node, origin, client
) -> None:
    """Sec. 4.3.2: "A cache MUST NOT evaluate conditional header fields that ... occur in a
    request with a target resource for which it has no stored responses". The node does not
    answer such a request from nothing: it fetches the full response (to store it; the
    client's validator is not forwarded) and the client gets the 200; the next conditional
    request is evaluated against the stored response."""
    origin.routes["/api/cold"] = validating(cache_control="max-age=600")
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/cold")

    status, _, body = await fetch(client, url, {"If-None-Match": '"v1"'})
    assert status == 200 and body == BODY
    status, headers, _ = await fetch(client, url, {"If-None-Match": '"v1"'})
    assert status == 304 and is_hit(headers)
    assert origin.count("/api/cold") == 1


async def test_client_validation_of_a_stale_entry_is_revalidated_then_evaluated(
    make_node, origin, client
) -> None:
    """Sec. 4.3.2 with sec. 4.3.3/4.3.4: a stale stored response is validated upstream first
    ("A 304 (Not Modified) response status code indicates that the stored response can be
    updated and reused"); the client's own If-None-Match is then evaluated against the
    freshened response, so the client gets a 304."""
    origin.routes["/api/stale-cond"] = validating(cache_control="max-age=0")
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/stale-cond")

    await fetch(client, url)
    status, headers, body = await fetch(client, url, {"If-None-Match": '"v1"'})
    assert status == 304 and body == b""
    cs = own_status(headers["Cache-Status"])
    assert cs.get("fwd") == "stale" and cs.get("fwd-status") == "304", cs
    assert headers["ETag"] == '"v1"'
    assert origin.count("/api/stale-cond") == 2


# ---- sec. 4.3.4: freshening stored responses upon validation ---------------------------------


async def test_304_updates_the_stored_headers_for_head_as_for_get(
    make_node, origin, client
) -> None:
    """Sec. 4.3.4: "the cache MUST update its header fields with the header fields provided in
    the 304 (Not Modified) response, as per Section 3.2" - whichever request triggered the
    validation. A HEAD on a stale entry is validated like a GET (RFC 9110 sec. 9.3.2: "The
    server SHOULD send the same header fields in response to a HEAD request as it would have
    sent if the request method had been GET"); the 304's fields answer the HEAD and stay
    stored for the next GET, which is then a hit."""
    origin.routes["/api/hv"] = validating(
        cache_control="max-age=0",
        headers={"X-Version": "1"},
        not_modified_headers={"X-Version": "2", "Cache-Control": "max-age=600"},
    )
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/hv")

    await fetch(client, url)
    status, headers, body = await fetch(client, url, method="HEAD")
    assert status == 200 and body == b""
    assert headers.getall("X-Version") == ["2"]
    assert int(headers["Content-Length"]) == len(BODY)
    assert own_status(headers["Cache-Status"]).get("fwd-status") == "304"
    assert origin.last_headers("/api/hv").get("If-None-Match") == '"v1"'

    status, headers, body = await fetch(client, url)
    assert status == 200 and body == BODY and is_hit(headers)
    assert headers.getall("X-Version") == ["2"]
    assert headers["Cache-Control"] == "max-age=600"
    assert origin.count("/api/hv") == 2


async def test_304_does_not_update_excluded_fields(make_node, client) -> None:
    """Sec. 3.2: the cache "MUST add each header field in the provided response to the stored
    response, replacing field values that are already present, with the following
    exceptions: Header fields excepted from storage in Section 3.1, ... The Content-Length
    header field." A 304 naming a field in Connection, with a wrong Content-Length: the
    hop-by-hop fields are not stored, the body and its length stay, the rest is updated."""

    def answer(method: str, target: str, headers) -> bytes:
        if headers.get("If-None-Match") == '"v1"':
            return raw_response(
                304,
                [
                    ("Date", http_date()),
                    ("ETag", '"v1"'),
                    ("Cache-Control", "max-age=600"),
                    ("Connection", "X-Hop"),
                    ("X-Hop", "1"),
                    ("Keep-Alive", "timeout=5"),
                    ("X-New", "2"),
                    ("Content-Length", "0"),
                ],
                reason="Not Modified",
            )
        return raw_response(
            200,
            [
                ("Date", http_date()),
                ("ETag", '"v1"'),
                ("Cache-Control", "max-age=0"),
                ("X-New", "1"),
                ("Content-Type", "text/plain"),
            ],
            BODY,
            reason="OK",
        )

    async with RawOrigin(routes={"/api/x": answer}) as raw:
        node = await make_node({"parents": [raw.endpoint]})
        url = node_url(node, "/api/x")
        await fetch(client, url)
        for expect_hit in (False, True):
            status, headers, body = await fetch(client, url)
            assert status == 200 and body == BODY
            assert is_hit(headers) is expect_hit
            assert int(headers["Content-Length"]) == len(BODY)
            assert headers.getall("X-New") == ["2"]
            assert "X-Hop" not in headers and "Keep-Alive" not in headers
        assert raw.count("/api/x") == 2


async def test_304_with_another_strong_validator_does_not_update(make_node, origin, client) -> None:
    """Sec. 4.3.4: "If the new response contains one or more strong validators ..., then each
    of those strong validators identifies a selected representation for update. ... If none
    of the stored responses contain at least one of the same strong validators, then the
    cache MUST NOT use the new response to update any stored responses." An origin answers
    the node's If-None-Match: "v1" with a 304 naming "v2" (its current version, whose full
    response is "new"): the node must not relabel the stored "old" content as "v2"."""

    async def handler(request: web.Request) -> web.StreamResponse:
        fields = {"Cache-Control": "max-age=600"}
        if origin.count("/api/relabel") == 1:
            return web.Response(body=b"old", headers={**fields, "ETag": '"v1"', "Age": "900"})
        if request.headers.get("If-None-Match"):
            return web.Response(status=304, headers={**fields, "ETag": '"v2"'})
        return web.Response(body=b"new", headers={**fields, "ETag": '"v2"'})

    origin.routes["/api/relabel"] = handler
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/relabel")

    await fetch(client, url)
    for _ in range(2):
        _, headers, body = await fetch(client, url)
        assert (headers.get("ETag"), body) in (('"v1"', b"old"), ('"v2"', b"new")), body
