"""RFC 9111 sec. 5.2.1 (Request Cache-Control Directives), end to end through a live node.

Each test quotes the requirement it checks. The scripted origin records what reached it, so
"stored" and "not stored" are proven by origin hits, never by reading the store.
"""

from __future__ import annotations

import pytest

from tests.support.rfc import (
    BODY,
    fetch,
    is_hit,
    node_url,
    own_status,
    respond,
    validating,
)

pytestmark = pytest.mark.integration


async def test_request_no_store_is_not_stored(make_node, origin, client) -> None:
    """RFC 9111 sec. 5.2.1.5: "The no-store request directive indicates that a cache MUST NOT
    store any part of either this request or any response to it"."""
    origin.routes["/api/ns"] = respond(headers={"Cache-Control": "max-age=60"})
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/ns")

    status, headers, body = await fetch(client, url, {"Cache-Control": "no-store"})
    assert status == 200 and body == BODY
    assert "stored" not in headers["Cache-Status"]
    status, headers, _ = await fetch(client, url)
    assert status == 200 and "hit" not in headers["Cache-Status"]
    assert origin.count("/api/ns") == 2


async def test_request_no_cache_is_revalidated(make_node, origin, client) -> None:
    """RFC 9111 sec. 5.2.1.4: "The no-cache request directive indicates that the client prefers
    a stored response not be used to satisfy the request without successful validation on the
    origin server". RFC 9211 sec. 2.2: ``fwd=request`` - the request's semantics did not allow
    the use of the fresh stored response."""
    origin.routes["/api/nc"] = validating(cache_control="max-age=600")
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/nc")

    await fetch(client, url)
    status, headers, body = await fetch(client, url, {"Cache-Control": "no-cache"})
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
    url = node_url(node, "/api/ma")

    await fetch(client, url)
    status, headers, body = await fetch(client, url, {"Cache-Control": "max-age=0"})
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

    status, _, _ = await fetch(client, node_url(node, "/api/oic"), only)
    assert status == 504
    assert origin.count("/api/oic") == 0

    await fetch(client, node_url(node, "/api/oic"))
    status, headers, body = await fetch(client, node_url(node, "/api/oic"), only)
    assert status == 200 and body == BODY and "hit" in headers["Cache-Status"]
    assert origin.count("/api/oic") == 1

    # stored but stale: no validation allowed -> 504, the origin is not contacted
    await fetch(client, node_url(node, "/api/oic-stale"))
    status, _, _ = await fetch(client, node_url(node, "/api/oic-stale"), only)
    assert status == 504
    assert origin.count("/api/oic-stale") == 1


@pytest.mark.parametrize(("max_age", "reused"), [("50", False), ("500", True), ("0", False)])
async def test_request_max_age_compares_with_the_current_age(
    make_node, origin, client, max_age, reused
) -> None:
    """Sec. 5.2.1.1: "The max-age request directive indicates that the client prefers a
    response whose age is less than or equal to the specified number of seconds." The stored
    response is about 100 s old (Age: 100) and fresh for an hour: max-age=500 accepts it,
    max-age=50 does not (a validation, RFC 9211 ``fwd=request``: the request's own
    directive, not staleness, forced it)."""
    origin.routes["/api/ma"] = validating(cache_control="max-age=3600", headers={"Age": "100"})
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/ma")

    await fetch(client, url)
    status, headers, body = await fetch(client, url, {"Cache-Control": f"max-age={max_age}"})
    assert status == 200 and body == BODY
    assert is_hit(headers) is reused, headers["Cache-Status"]
    if not reused:
        assert own_status(headers["Cache-Status"]).get("fwd") == "request"
        assert origin.last_headers("/api/ma").get("If-None-Match") == '"v1"'
    assert origin.count("/api/ma") == (1 if reused else 2)


@pytest.mark.parametrize(
    ("directive", "reused"),
    [("max-stale=3600", True), ("max-stale", True), ("max-stale=10", False), (None, False)],
)
async def test_request_max_stale_accepts_a_stale_response(
    make_node, origin, client, directive, reused
) -> None:
    """Sec. 5.2.1.2: "The max-stale request directive indicates that the client will accept a
    response that has exceeded its freshness lifetime. If a value is present, then the client
    is willing to accept a response that has exceeded its freshness lifetime by no more than
    the specified number of seconds. If no value is assigned to max-stale, then the client
    will accept a stale response of any age." The stored response (max-age=10, Age: 100) is
    about 90 s stale."""
    origin.routes["/api/ms"] = validating(cache_control="max-age=10", headers={"Age": "100"})
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/ms")

    await fetch(client, url)
    request = {"Cache-Control": directive} if directive else {}
    status, headers, body = await fetch(client, url, request)
    assert status == 200 and body == BODY
    assert is_hit(headers) is reused, headers["Cache-Status"]
    assert origin.count("/api/ms") == (1 if reused else 2)
    if reused:  # served stale, with its true age
        assert int(headers["Age"]) >= 100


@pytest.mark.parametrize(("min_fresh", "reused"), [("60", True), ("7200", False)])
async def test_request_min_fresh_wants_freshness_left(
    make_node, origin, client, min_fresh, reused
) -> None:
    """Sec. 5.2.1.3: "The min-fresh request directive indicates that the client prefers a
    response whose freshness lifetime is no less than its current age plus the specified time
    in seconds. That is, the client wants a response that will still be fresh for at least
    the specified number of seconds." About 3600 s of freshness are left."""
    origin.routes["/api/mf"] = validating(cache_control="max-age=3600")
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/mf")

    await fetch(client, url)
    _, headers, body = await fetch(client, url, {"Cache-Control": f"min-fresh={min_fresh}"})
    assert body == BODY
    assert is_hit(headers) is reused, headers["Cache-Status"]
    assert origin.count("/api/mf") == (1 if reused else 2)


async def test_request_no_store_may_be_answered_from_the_store(make_node, origin, client) -> None:
    """Sec. 5.2.1.5: "Note that if a request containing this directive is satisfied from a
    cache, the no-store request directive does not apply to the already stored response."
    A fresh stored response answers a no-store request and stays stored."""
    origin.routes["/api/keep"] = respond(headers={"Cache-Control": "max-age=600"})
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/keep")

    await fetch(client, url)
    _, headers, _ = await fetch(client, url, {"Cache-Control": "no-store"})
    assert is_hit(headers), headers["Cache-Status"]
    _, headers, _ = await fetch(client, url)
    assert is_hit(headers)
    assert origin.count("/api/keep") == 1


@pytest.mark.parametrize("directive", ["foo", "foo=bar", 'x-ext="max-age=0, no-cache"', "FOO"])
async def test_unknown_request_directives_are_ignored(make_node, origin, client, directive) -> None:
    """Sec. 5.2.3: "A cache MUST ignore unrecognized cache directives." (A directive inside a
    quoted argument is no directive, sec. 5.2.)"""
    origin.routes["/api/ext"] = respond(headers={"Cache-Control": "max-age=600"})
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/ext")

    await fetch(client, url)
    _, headers, _ = await fetch(client, url, {"Cache-Control": directive})
    assert is_hit(headers), headers["Cache-Status"]
    assert origin.count("/api/ext") == 1


async def test_request_directives_are_not_stored_with_the_response(
    make_node, origin, client
) -> None:
    """Sec. 5.2: "Cache directives are unidirectional, in that the presence of a directive in a
    request does not imply that the same directive is to be given in the response." A
    request's max-age=0 forces its own validation only; the next plain request is a hit."""
    origin.routes["/api/uni"] = validating(cache_control="max-age=600")
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/uni")

    await fetch(client, url)
    _, headers, _ = await fetch(client, url, {"Cache-Control": "max-age=0"})
    assert not is_hit(headers)
    _, headers, _ = await fetch(client, url)
    assert is_hit(headers)
    assert origin.count("/api/uni") == 2
