"""RFC 9111 sec. 5.3 (Expires) with RFC 9110 sec. 5.6.7 (HTTP-date), end to end through a
live node.

Each test quotes the requirement it checks. The scripted origin records what reached it, so
"stored" and "not stored" are proven by origin hits, never by reading the store.
"""

from __future__ import annotations

import time
from email.utils import formatdate

import pytest

from edgeproxy.http.dates import parse_http_date
from tests.support.rfc import (
    BODY,
    RawOrigin,
    fetch,
    http_date,
    is_hit,
    node_url,
    raw_response,
    respond,
    validating,
)

# cache-tests expires-parse.mjs: each value is invalid, so it means "already expired"
INVALID_EXPIRES = {
    "zero": "0",
    "negative": "-1",
    "garbage": "soon",
    "empty": "",
    "utc-zone": "Thu, 18 Aug 2050 02:01:18 UTC",
    "numeric-zone": "Thu, 18 Aug 2050 02:01:18 +0000",
    "two-digit-year": "Thu, 18 Aug 50 02:01:18 GMT",
    "missing-comma": "Thu 18 Aug 2050 02:01:18 GMT",
    "multiple-spaces": "Thu, 18  Aug  2050 02:01:18 GMT",
    "date-dashes": "Thu, 18-Aug-2050 02:01:18 GMT",
    "time-periods": "Thu, 18 Aug 2050 02.01.18 GMT",
    "one-digit-hour": "Thu, 18 Aug 2050 2:01:18 GMT",
    "no-zone": "Thu, 18 Aug 2050 02:01:18",
    "iso-8601": "2050-08-18T02:01:18Z",
}
# RFC 9110 sec. 5.6.7: "A recipient that parses a timestamp value in an HTTP field MUST accept
# all three HTTP-date formats"; sec. 4.2: dates matched case-insensitively
VALID_EXPIRES = {
    "imf-fixdate": "Thu, 18 Aug 2050 02:01:18 GMT",
    "rfc850": "Thursday, 18-Aug-50 02:01:18 GMT",
    "asctime": "Thu Aug 18 02:01:18 2050",
    "asctime-one-digit-day": "Mon Aug  1 02:01:18 2050",
    "wrong-case": "THU, 18 AUG 2050 02:01:18 gmt",
}

pytestmark = pytest.mark.integration


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
    url = node_url(node, "/api/old")

    await fetch(client, url)
    status, headers, body = await fetch(client, url)
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
    url = node_url(node, "/api/gone")

    await fetch(client, url)
    status, headers, body = await fetch(client, url)
    assert status == 200 and body == BODY
    assert "hit" not in headers["Cache-Status"]
    assert "If-None-Match" not in origin.last_headers("/api/gone")
    assert origin.count("/api/gone") == 2


@pytest.mark.parametrize("value", INVALID_EXPIRES.values(), ids=INVALID_EXPIRES.keys())
async def test_invalid_expires_means_already_expired(make_node, origin, client, value) -> None:
    """Sec. 5.3: "A cache recipient MUST interpret invalid date formats, especially the value
    "0", as representing a time in the past (i.e., "already expired")"; sec. 4.2: "a cache
    SHOULD consider a date with a zone abbreviation other than "GMT" to be invalid for
    calculating expiration"; RFC 9110 sec. 5.6.7 defines the only valid forms (four-digit
    year, comma, single spaces, colons, GMT). The response has an ETag, so it is stored, and
    the second request is a validation, never a hit."""
    origin.routes["/api/exp"] = validating(cache_control=None, headers={"Expires": value})
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/exp")

    await fetch(client, url)
    status, headers, body = await fetch(client, url)
    assert status == 200 and body == BODY
    assert not is_hit(headers), headers["Cache-Status"]
    assert origin.last_headers("/api/exp").get("If-None-Match") == '"v1"'
    assert origin.count("/api/exp") == 2


@pytest.mark.parametrize("value", VALID_EXPIRES.values(), ids=VALID_EXPIRES.keys())
async def test_every_http_date_form_of_a_future_expires_is_fresh(
    make_node, origin, client, value
) -> None:
    """RFC 9110 sec. 5.6.7: "A recipient that parses a timestamp value in an HTTP field MUST
    accept all three HTTP-date formats"; RFC 9111 sec. 4.2: "Although all date formats are
    specified to be case-sensitive, a cache recipient SHOULD match the field value
    case-insensitively." A future Expires in any of them makes the response fresh (the
    controls of the test above)."""
    origin.routes["/api/exp"] = validating(cache_control=None, headers={"Expires": value})
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/exp")

    await fetch(client, url)
    status, headers, body = await fetch(client, url)
    assert status == 200 and body == BODY
    assert is_hit(headers), headers["Cache-Status"]
    assert origin.count("/api/exp") == 1


@pytest.mark.parametrize("second", [3600, -3600])
async def test_several_expires_lines_mean_already_expired(
    make_node, origin, client, second
) -> None:
    """Sec. 4.2.1: "When there is more than one value present for a given directive (e.g., two
    Expires header field lines ...), either the first occurrence should be used or the
    response should be considered stale." The node considers it stale: the lines combine
    into one field value (RFC 9110 sec. 5.3) that is not an HTTP-date, i.e. an invalid date,
    "already expired" (sec. 5.3) - even when the first line is in the future."""
    origin.routes["/api/exp2"] = validating(
        cache_control=None, headers=[("Expires", http_date(3600)), ("Expires", http_date(second))]
    )
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/exp2")

    await fetch(client, url)
    _, headers, _ = await fetch(client, url)
    assert not is_hit(headers), headers["Cache-Status"]
    assert origin.last_headers("/api/exp2").get("If-None-Match") == '"v1"'


@pytest.mark.parametrize("date", [None, "yesterday-ish"], ids=["no-date", "invalid-date"])
@pytest.mark.parametrize(("expires_in", "fresh"), [(3600, True), (-3600, False)])
async def test_expires_without_a_valid_date_counts_from_the_response_time(
    make_node, client, date, expires_in, fresh
) -> None:
    """Sec. 4.2.1: "If the Expires response header field (Section 5.3) is present, use its
    value minus the value of the Date response header field (using the time the message was
    received if it is not present, as per Section 6.6.1 of [HTTP])"; RFC 9110 sec. 6.6.1: "A
    recipient with a clock that receives a response message without a Date header field MUST
    record the time it was received and append a corresponding Date header field to the
    message's header section if it is cached or forwarded downstream." The raw origin sends
    no Date (or an invalid one); the node's answers carry a valid Date."""
    fields = [("Expires", http_date(expires_in)), ("ETag", '"v1"')]
    if date is not None:
        fields.append(("Date", date))

    def answer(method: str, target: str, headers: object) -> bytes:
        return raw_response(200, fields, BODY, reason="OK")

    async with RawOrigin(routes={"/api/nodate": answer}) as raw:
        node = await make_node({"parents": [raw.endpoint]})
        url = node_url(node, "/api/nodate")
        for _ in range(2):
            status, headers, body = await fetch(client, url)
            assert status == 200 and body == BODY
            if date is None:
                assert parse_http_date(headers["Date"]) is not None, headers.getall("Date")
        assert is_hit(headers) is fresh, headers["Cache-Status"]
        assert raw.count("/api/nodate") == (1 if fresh else 2)
