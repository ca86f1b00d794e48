"""RFC 9111 sec. 4.2 (Freshness): 4.2.1 lifetime, 4.2.2 heuristic freshness, 4.2.3 age,
end to end through a live node.

Each test quotes the requirement it checks. The scripted origin records what reached it, so
"stored" and "not stored" are proven by origin hits, never by reading the store.
"""

from __future__ import annotations

import pytest

from tests.support.rfc import (
    BODY,
    NO_DEFAULT_TTL,
    fetch,
    http_date,
    is_hit,
    node_url,
    own_status,
    respond,
    ttl_of,
    validating,
)

TEN_DAYS = 10 * 86400

pytestmark = pytest.mark.integration


async def test_no_freshness_information_uses_the_policy_default_ttl(
    make_node, origin, client
) -> None:
    """RFC 9111 sec. 4.2.2: "a cache MAY assign a heuristic expiration time when an explicit
    time is not specified"; the node's policy default_ttl is that heuristic (CloudFront's
    "default TTL": used when the origin sends no max-age, s-maxage or Expires). The api policy
    of the test config has default_ttl 5m."""
    origin.routes["/api/plain"] = respond()
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/plain")

    status, headers, _ = await fetch(client, url)
    assert status == 200 and "stored" in headers["Cache-Status"]
    status, headers, body = await fetch(client, url)
    assert status == 200 and body == BODY
    cs = headers["Cache-Status"]
    assert "hit" in cs
    assert 290 <= ttl_of(cs) <= 300, cs
    assert origin.count("/api/plain") == 1


async def test_age_from_upstream_counts_and_hit_reports_ttl(make_node, origin, client) -> None:
    """RFC 9111 sec. 4: "When a stored response is used to satisfy a request without
    validation, a cache MUST generate an Age header field ..., replacing any present in the
    response with a value equal to the stored response's current_age"; sec. 4.2.3:
    corrected_age_value = age_value + response_delay. RFC 9211 sec. 2.1: ``hit``; sec. 2.4:
    ``ttl`` is "the response's remaining freshness lifetime" (3600 - 100)."""
    origin.routes["/api/aged"] = respond(headers={"Cache-Control": "max-age=3600", "Age": "100"})
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/aged")

    _, headers, _ = await fetch(client, url)
    assert int(headers["Age"]) >= 100
    status, headers, body = await fetch(client, url)
    assert status == 200 and body == BODY
    assert int(headers["Age"]) >= 100
    assert headers.getall("Age") == [headers["Age"]]
    cs = headers["Cache-Status"]
    assert "hit" in cs and "ttl=" in cs
    assert 3490 <= ttl_of(cs) <= 3500, cs
    assert origin.count("/api/aged") == 1


async def test_404_without_freshness_is_cached_for_the_error_ttl(make_node, origin, client) -> None:
    """RFC 9110 sec. 15.5.5: "A 404 response is heuristically cacheable; i.e., unless
    otherwise indicated by the method definition or explicit cache controls"; RFC 9111
    sec. 4.2.2: "a cache MAY assign a heuristic expiration time when an explicit time is not
    specified". The node's heuristic for 404/410 is the policy's error_ttl (10 s by default),
    not its default_ttl (5 min for /api/*)."""
    origin.routes["/api/missing"] = respond(b"no such thing", status=404)
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/missing")

    status, _, _ = await fetch(client, url)
    assert status == 404
    status, headers, body = await fetch(client, url)
    assert status == 404 and body == b"no such thing"
    cs = headers["Cache-Status"]
    assert "hit" in cs
    assert 0 <= ttl_of(cs) <= 10, cs
    assert origin.count("/api/missing") == 1


# ---- sec. 4.2.1: calculating the freshness lifetime -------------------------------------------


@pytest.mark.parametrize(
    ("fields", "fresh"),
    [
        ([("Cache-Control", "max-age=3600, s-maxage=1")], False),
        ([("Cache-Control", "s-maxage=1, max-age=3600")], False),
        ([("Cache-Control", "max-age=3600"), ("Cache-Control", "s-maxage=1")], False),
        ([("Cache-Control", "max-age=1, s-maxage=3600")], True),
        ([("Cache-Control", "s-maxage=3600"), ("Expires", "0")], True),
    ],
)
async def test_s_maxage_wins_over_max_age_and_expires(
    make_node, origin, client, fields, fresh
) -> None:
    """Sec. 4.2.1: "If the cache is shared and the s-maxage response directive (Section
    5.2.2.10) is present, use its value"; sec. 5.2.2.10: "for a shared cache, the maximum age
    specified by this directive overrides the maximum age specified by either the max-age
    directive or the Expires header field". Age: 10 makes a 1-second lifetime stale at once
    (cache-tests freshness-max-age-s-maxage-shared-*)."""
    origin.routes["/api/smax"] = respond(headers=[*fields, ("Age", "10")])
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/smax")

    await fetch(client, url)
    status, headers, body = await fetch(client, url)
    assert status == 200 and body == BODY
    assert is_hit(headers) is fresh, headers["Cache-Status"]
    assert origin.count("/api/smax") == (1 if fresh else 2)


@pytest.mark.parametrize(
    ("cache_control", "expires_in", "fresh"),
    [("max-age=3600", -10000, True), ("max-age=0", 10000, False), ("max-age=3600", None, True)],
)
async def test_max_age_wins_over_expires(
    make_node, origin, client, cache_control, expires_in, fresh
) -> None:
    """Sec. 4.2.1 (first match: s-maxage, then max-age, then Expires); sec. 5.3: "If a
    response includes a Cache-Control header field with the max-age directive (Section
    5.2.2.1), a recipient MUST ignore the Expires header field" (cache-tests
    freshness-max-age-expires, freshness-max-age-0-expires; the invalid Expires "0" too)."""
    expires = "0" if expires_in is None else http_date(expires_in)
    origin.routes["/api/both"] = respond(
        headers={"Cache-Control": cache_control, "Expires": expires}
    )
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/both")

    await fetch(client, url)
    _, headers, _ = await fetch(client, url)
    assert is_hit(headers) is fresh, headers["Cache-Status"]
    assert origin.count("/api/both") == (1 if fresh else 2)


@pytest.mark.parametrize(
    ("lines", "fresh"),
    [
        (["max-age=3600, max-age=0"], True),
        (["max-age=0, max-age=3600"], False),
        (["max-age=3600", "max-age=0"], True),
        (["max-age=0", "max-age=3600"], False),
        (["max-age=3600, max-age=3600"], True),
    ],
)
async def test_duplicate_max_age_uses_the_first_occurrence(
    make_node, origin, client, lines, fresh
) -> None:
    """Sec. 4.2.1: "When there is more than one value present for a given directive (e.g., two
    Expires header field lines or multiple Cache-Control: max-age directives), either the
    first occurrence should be used or the response should be considered stale." The node
    uses the first occurrence for directives (edgeproxy/http/cache_control.py; several lines
    are one list, RFC 9110 sec. 5.3), so a later conflicting value never extends or cuts the
    lifetime. (Several Expires lines are taken as stale: see test_rfc9111_sec5_3_expires.)"""
    origin.routes["/api/dup"] = validating(
        cache_control=None, headers=[("Cache-Control", line) for line in lines]
    )
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/dup")

    await fetch(client, url)
    _, headers, _ = await fetch(client, url)
    assert is_hit(headers) is fresh, headers["Cache-Status"]
    assert origin.count("/api/dup") == (1 if fresh else 2)


# ---- sec. 4.2.2: heuristic freshness ---------------------------------------------------------


@pytest.mark.parametrize("status", [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501])
async def test_heuristically_cacheable_status_with_last_modified_is_reused(
    make_node, origin, client, status
) -> None:
    """Sec. 4.2.2: "a cache MAY assign a heuristic expiration time when an explicit time is not
    specified"; RFC 9110 sec. 15.1: "Responses with status codes that are defined as
    heuristically cacheable (e.g., 200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, and
    501 in this specification) can be reused by a cache with heuristic expiration". No policy
    default TTL here: only Last-Modified (ten days old) gives the lifetime. (206 is stored by
    the slice path only: see test_rfc9110_status_codes.)"""
    body = b"" if status == 204 else BODY
    origin.routes["/h"] = respond(
        body, status=status, headers={"Last-Modified": http_date(-TEN_DAYS)}
    )
    node = await make_node({"parents": [origin.endpoint]}, policies=NO_DEFAULT_TTL)
    url = node_url(node, "/h")

    first, _, _ = await fetch(client, url)
    assert first == status
    again, headers, got = await fetch(client, url)
    assert again == status and got == body
    assert is_hit(headers), headers["Cache-Status"]
    assert origin.count("/h") == 1


@pytest.mark.parametrize("status", [299, 302, 303, 307, 400, 403, 409, 499, 500, 503, 599])
async def test_other_status_without_explicit_freshness_is_not_reused(
    make_node, origin, client, status
) -> None:
    """Sec. 4.2.2: "A cache MUST NOT use heuristics to determine freshness when an explicit
    expiration time is present in the stored response" and a heuristic applies only to
    heuristically cacheable statuses (RFC 9110 sec. 15.1); sec. 3: a response is stored only
    if it "contains ... a status code that is defined as heuristically cacheable" when it has
    no Expires, max-age, s-maxage or public. Last-Modified alone never makes these
    reusable, with or without a policy default TTL."""
    origin.routes["/api/h"] = respond(
        status=status, headers={"Last-Modified": http_date(-TEN_DAYS)}
    )
    for policies in (NO_DEFAULT_TTL, None):
        node = await make_node({"parents": [origin.endpoint]}, policies=policies)
        url = node_url(node, "/api/h")
        before = origin.count("/api/h")
        for _ in range(2):
            got, headers, _ = await fetch(client, url)
            assert got == status
            assert not is_hit(headers) and "stored" not in own_status(headers["Cache-Status"])
        assert origin.count("/api/h") == before + 2


async def test_heuristic_lifetime_is_a_tenth_of_the_time_since_last_modified(
    make_node, origin, client
) -> None:
    """Sec. 4.2.2: "If the response has a Last-Modified header field (Section 8.8.2 of
    [HTTP]), caches are encouraged to use a heuristic expiration value that is no more than
    some fraction of the interval since that time. A typical setting of this fraction might
    be 10%." Last modified 1000 s before Date: about 100 s of freshness (RFC 9211 ``ttl``)."""
    origin.routes["/lm"] = respond(headers={"Last-Modified": http_date(-1000)})
    node = await make_node({"parents": [origin.endpoint]}, policies=NO_DEFAULT_TTL)
    url = node_url(node, "/lm")

    await fetch(client, url)
    _, headers, _ = await fetch(client, url)
    assert is_hit(headers)
    assert 90 <= ttl_of(headers["Cache-Status"]) <= 100, headers["Cache-Status"]


async def test_no_heuristic_without_last_modified(make_node, origin, client) -> None:
    """Sec. 4.2.2 bases the heuristic on Last-Modified; without it (and without a policy
    default TTL) a response with only an ETag has no lifetime: it is stored because it can be
    validated (sec. 3: "some caches will not store a response that has neither a cache
    validator nor an explicit expiration time") and every reuse is validated first."""
    origin.routes["/etag-only"] = validating(cache_control=None)
    node = await make_node({"parents": [origin.endpoint]}, policies=NO_DEFAULT_TTL)
    url = node_url(node, "/etag-only")

    _, headers, _ = await fetch(client, url)
    assert own_status(headers["Cache-Status"]).get("stored") is True
    for n in (2, 3):
        status, headers, body = await fetch(client, url)
        assert status == 200 and body == BODY and not is_hit(headers)
        assert origin.last_headers("/etag-only").get("If-None-Match") == '"v1"'
        assert origin.count("/etag-only") == n


@pytest.mark.parametrize(
    ("status", "fields"),
    [
        (200, {"Cache-Control": "no-store"}),
        (200, {"Cache-Control": "private"}),
        (299, {}),
        (302, {"Location": "/elsewhere"}),
        (500, {}),
        (200, {"Vary": "*"}),
    ],
)
async def test_policy_default_ttl_never_makes_storable_what_the_origin_did_not_allow(
    make_node, origin, client, status, fields
) -> None:
    """Sec. 4.2.2: heuristics apply "when an explicit time is not specified" to responses a
    cache may store at all (sec. 3); a policy default TTL is this node's heuristic, so it
    never overrides no-store (sec. 5.2.2.5), private (sec. 5.2.2.7), Vary: * (sec. 4.1) or
    a status that is not heuristically cacheable without explicit freshness (sec. 3). The
    api policy has a 5-minute default TTL."""
    origin.routes["/api/no"] = respond(status=status, headers=fields)
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/no")

    for _ in range(2):
        got, headers, _ = await fetch(client, url)
        assert got == status
        assert not is_hit(headers) and "stored" not in own_status(headers["Cache-Status"])
    assert origin.count("/api/no") == 2


async def test_policy_default_ttl_does_not_skip_no_cache_validation(
    make_node, origin, client
) -> None:
    """Sec. 5.2.2.4: unqualified no-cache means the response "MUST NOT be used to satisfy any
    other request without forwarding it for validation and receiving a successful response";
    a policy default TTL (5 minutes on /api) may store it but never serves it unvalidated."""
    origin.routes["/api/nc"] = validating(cache_control="no-cache")
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/nc")

    await fetch(client, url)
    _, headers, body = await fetch(client, url)
    assert body == BODY and not is_hit(headers)
    assert origin.last_headers("/api/nc").get("If-None-Match") == '"v1"'
    assert origin.count("/api/nc") == 2


# ---- sec. 4.2.3: calculating age -------------------------------------------------------------


async def test_apparent_age_from_date_counts(make_node, origin, client) -> None:
    """Sec. 4.2.3: "apparent_age = max(0, response_time - date_value); ...
    corrected_initial_age = max(apparent_age, corrected_age_value);" and "current_age =
    corrected_initial_age + resident_time". A Date 1000 s in the past (and no Age) ages the
    response by 1000 s: Age >= 1000 and about 2600 s of a 3600 s max-age remain."""
    origin.routes["/api/dated"] = respond(
        headers={"Cache-Control": "max-age=3600", "Date": http_date(-1000)}
    )
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/dated")

    await fetch(client, url)
    _, headers, _ = await fetch(client, url)
    assert is_hit(headers)
    assert int(headers["Age"]) >= 1000
    assert 2590 <= ttl_of(headers["Cache-Status"]) <= 2600, headers["Cache-Status"]


async def test_age_greater_than_max_age_is_stale(make_node, origin, client) -> None:
    """Sec. 4.2: "A response's age is the time that has passed since it was generated by, or
    successfully validated with, the origin server"; the response is fresh only while
    "freshness_lifetime > current_age" (cache-tests freshness-max-age-age: max-age=10 with
    Age: 15 must not be reused)."""
    origin.routes["/api/aged"] = respond(headers={"Cache-Control": "max-age=10", "Age": "15"})
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/aged")

    await fetch(client, url)
    _, headers, _ = await fetch(client, url)
    assert not is_hit(headers)
    assert origin.count("/api/aged") == 2
