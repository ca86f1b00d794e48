"""RFC 9111 sec. 3 (Storing Responses in Caches), 3.1 (Storing Header and Trailer Fields),
3.2 (Updating Stored Header Fields), 3.5 (Storing Responses to Authenticated Requests), for a
SHARED cache."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from edgeproxy.http.cache_control import EMPTY_CACHE_CONTROL, parse_cache_control
from edgeproxy.http.freshness import HEURISTICALLY_CACHEABLE, NoStoreReason, storability
from edgeproxy.http.headers import storable_headers, update_stored_headers


def H(*pairs: tuple[str, str]) -> CIMultiDict[str]:
    return CIMultiDict(pairs)


def store(
    *resp: tuple[str, str],
    status: int = 200,
    method: str = "GET",
    req: tuple[tuple[str, str], ...] = (),
    default_ttl: float = 0.0,
) -> NoStoreReason | None:
    req_headers = H(*req)
    resp_headers = H(*resp)
    return storability(
        method,
        status,
        req_headers,
        parse_cache_control(req_headers.getall("Cache-Control", ())),
        resp_headers,
        parse_cache_control(resp_headers.getall("Cache-Control", ())),
        policy_default_ttl=default_ttl,
    )


FRESH = ("Cache-Control", "max-age=3600")


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "get", "PATCH"])
def test_method_must_be_understood(method: str) -> None:
    """Sec. 3: "A cache MUST NOT store a response to a request unless: the request method is
    understood by the cache". This cache understands GET and HEAD (methods are
    case-sensitive)."""
    assert store(FRESH, method=method) is NoStoreReason.METHOD


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_get_and_head_are_storable(method: str) -> None:
    """Sec. 3 / sec. 4.3.5: GET responses are stored; HEAD responses can be used to answer
    HEAD and to update stored GET responses."""
    assert store(FRESH, method=method) is None


@pytest.mark.parametrize("status", [100, 101, 103, 199, 600, 0, 304])
def test_status_must_be_final(status: int) -> None:
    """Sec. 3: "the response status code is final (see Section 15 of [HTTP])"; a 304 only
    updates a stored response (sec. 4.3.4)."""
    assert store(FRESH, status=status) is NoStoreReason.STATUS


def test_partial_content_is_not_stored_here() -> None:
    """Sec. 3.3: "a 206 (Partial Content) response MAY be stored as if it were an incomplete
    200 (OK) response"; this function leaves partial responses to the slice store."""
    assert store(FRESH, status=206) is NoStoreReason.PARTIAL


def test_response_no_store() -> None:
    """Sec. 5.2.2.5: "The no-store response directive indicates that a cache MUST NOT store
    any part of either the immediate request or the response" (cache-tests
    cc-resp-no-store-fresh: even with max-age and Expires)."""
    reason = store(
        ("Cache-Control", "max-age=10000, no-store"),
        ("Expires", "Thu, 01 Dec 2094 16:00:00 GMT"),
        ("Date", "Thu, 01 Dec 1994 16:00:00 GMT"),
    )
    assert reason is NoStoreReason.NO_STORE
    assert NoStoreReason.NO_STORE.as_str() == "no-store"


def test_request_no_store() -> None:
    """Sec. 5.2.1.5: "The no-store request directive indicates that a cache MUST NOT store
    any part of either this request or any response to it." """
    reason = store(FRESH, req=(("Cache-Control", "no-store"),))
    assert reason is NoStoreReason.REQUEST_NO_STORE


def test_must_understand_overrides_no_store_for_understood_status() -> None:
    """Sec. 5.2.2.3: "When a cache that implements the must-understand directive receives a
    response that includes it, the cache SHOULD ignore the no-store directive if it
    understands and implements the status code's caching requirements." """
    assert store(("Cache-Control", "max-age=60, must-understand, no-store")) is None


def test_must_understand_with_unknown_status() -> None:
    """Sec. 3: "if the response status code is 206 or 304, or the must-understand cache
    directive (see Section 5.2.2.3) is present: the cache understands the response status
    code"."""
    reason = store(("Cache-Control", "max-age=60, must-understand, no-store"), status=299)
    assert reason is NoStoreReason.MUST_UNDERSTAND
    assert store(("Cache-Control", "max-age=60, must-understand"), status=599) is (
        NoStoreReason.MUST_UNDERSTAND
    )


def test_private_is_not_stored_by_shared_cache() -> None:
    """Sec. 5.2.2.7: "The unqualified private response directive indicates that a shared
    cache MUST NOT store the response" (cache-tests cc-resp-private-shared)."""
    assert store(("Cache-Control", "private, max-age=3600")) is NoStoreReason.PRIVATE


def test_qualified_private_is_storable_without_listed_fields() -> None:
    """Sec. 5.2.2.7: "a shared cache MUST NOT store the listed header fields if they are
    present in the original response but MAY store the remainder of the response message
    without those header fields"."""
    resp = H(
        ("Cache-Control", 'private="Set-Cookie", max-age=60'),
        ("Set-Cookie", "a=b"),
        ("Content-Type", "text/plain"),
    )
    assert store(*resp.items()) is None
    stored = storable_headers(resp)
    assert "Set-Cookie" not in stored
    assert stored["Content-Type"] == "text/plain"


def test_qualified_no_cache_fields_are_not_stored() -> None:
    """Sec. 5.2.2.4: the cache "MAY use the response to satisfy a subsequent request ... if
    the listed header fields are excluded from the subsequent response" (cache-tests
    headers-omit-headers-listed-in-Cache-Control-no-cache)."""
    resp = H(
        ("Cache-Control", 'no-cache="a, b"'),
        ("a", "1"),
        ("b", "2"),
        ("c", "3"),
        ("Cache-Control", "max-age=3600"),
    )
    assert store(*resp.items()) is None
    stored = storable_headers(resp)
    assert "a" not in stored and "b" not in stored
    assert stored["c"] == "3"


AUTH = (("Authorization", "FOO"),)


def test_authorization_not_stored_by_default() -> None:
    """Sec. 3.5: "A shared cache MUST NOT use a cached response to a request with an
    Authorization header field ... to satisfy any subsequent request unless the response
    contains a Cache-Control field with a response directive ... that allows it to be stored
    by a shared cache" (cache-tests other-authorization: even with explicit freshness)."""
    reason = store(
        ("Expires", "Thu, 01 Dec 2094 16:00:00 GMT"),
        ("Date", "Thu, 01 Dec 1994 16:00:00 GMT"),
        req=AUTH,
    )
    assert reason is NoStoreReason.AUTHORIZATION


@pytest.mark.parametrize(
    "directives", ["max-age=3600, public", "max-age=3600, must-revalidate", "s-maxage=3600"]
)
def test_authorization_allowed_by_directive(directives: str) -> None:
    """Sec. 3.5: "In this specification, the following response directives have such an
    effect: must-revalidate (Section 5.2.2.2), public (Section 5.2.2.9), and s-maxage
    (Section 5.2.2.10)." """
    assert store(("Cache-Control", directives), req=AUTH) is None


@pytest.mark.parametrize("vary", ["*", "Accept-Encoding, *", " * "])
def test_vary_star_is_not_stored(vary: str) -> None:
    """Sec. 4.1: "A stored response with a Vary header field value containing a member "*"
    always fails to match", so storing it is useless."""
    assert store(FRESH, ("Vary", vary)) is NoStoreReason.VARY_STAR
    assert store(FRESH, ("Vary", "Accept-Encoding"), ("Vary", vary)) is NoStoreReason.VARY_STAR


@pytest.mark.parametrize(
    "header",
    [
        ("Expires", "Thu, 01 Dec 2094 16:00:00 GMT"),
        ("Expires", "0"),
        ("Cache-Control", "max-age=60"),
        ("Cache-Control", "s-maxage=60"),
    ],
)
@pytest.mark.parametrize("status", [200, 299, 302, 307, 400, 403, 499, 500, 503, 599])
def test_explicit_freshness_makes_any_final_status_storable(
    header: tuple[str, str], status: int
) -> None:
    """Sec. 3: "the response contains at least one of the following: ... an Expires header
    field ...; a max-age response directive ...; if the cache is shared: an s-maxage response
    directive" (cache-tests status-*-fresh include 299, 499, 599)."""
    assert store(header, status=status) is None


@pytest.mark.parametrize("status", sorted(HEURISTICALLY_CACHEABLE - {206}))
def test_heuristically_cacheable_status_with_validator(status: int) -> None:
    """Sec. 3: "a status code that is defined as heuristically cacheable (see Section
    4.2.2)"; RFC 9110 sec. 15.1: "200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, and
    501" (plus 451, RFC 7725)."""
    assert store(("Last-Modified", "Thu, 01 Dec 1994 16:00:00 GMT"), status=status) is None
    assert store(("ETag", '"x"'), status=status) is None


@pytest.mark.parametrize("status", [201, 202, 302, 303, 307, 403, 500, 502, 503, 504, 299, 599])
def test_other_statuses_need_explicit_freshness(status: int) -> None:
    """Sec. 3: without Expires/max-age/s-maxage/public, only heuristically cacheable status
    codes may be stored (cache-tests heuristic-{201,202,403,502,503,504,599}-not_cached), even
    with a validator or a policy default TTL."""
    resp = (("Last-Modified", "Thu, 01 Dec 1994 16:00:00 GMT"), ("ETag", '"x"'))
    assert store(*resp, status=status, default_ttl=300) is NoStoreReason.NO_FRESHNESS


def test_public_makes_other_status_storable() -> None:
    """Sec. 3: "a public response directive"; sec. 5.2.2.9: "If a response with the public
    directive has no explicit freshness information, it is heuristically cacheable"
    (cache-tests heuristic-599-cached with Cache-Control: public)."""
    resp = (("Cache-Control", "public"), ("Last-Modified", "Thu, 01 Dec 1994 16:00:00 GMT"))
    assert store(*resp, status=599) is None


def test_no_freshness_and_no_validator_is_not_useful() -> None:
    """Sec. 3: "some caches will not store a response that has neither a cache validator nor
    an explicit expiration time, as such responses are not usually useful to store"
    (cache-tests freshness-none); a policy default TTL makes it useful."""
    assert store(status=200) is NoStoreReason.NO_FRESHNESS
    assert store(("Content-Type", "text/plain"), status=200, default_ttl=60) is None


def test_reason_strings_are_stable() -> None:
    """The reasons feed logs and metrics: their strings are part of the interface."""
    assert {r.as_str() for r in NoStoreReason} >= {
        "method",
        "status",
        "no-store",
        "private",
        "authorization",
        "vary-star",
        "no-freshness",
        "policy-forbids",
    }


# --- sec. 3.1 Storing Header and Trailer Fields -------------------------------------------


def test_all_fields_stored_except_connection_specific() -> None:
    """Sec. 3.1: "Caches MUST include all received response header fields -- including
    unrecognized ones -- when storing a response"; "The Connection header field and fields
    whose names are listed in it are required by Section 7.6.1 of [HTTP] to be removed before
    forwarding the message. This MAY be implemented by doing so before storage."
    (cache-tests headers-omit-headers-listed-in-Connection)."""
    resp = H(
        ("Connection", "a, b"),
        ("a", "1"),
        ("b", "2"),
        ("c", "3"),
        ("X-Unknown", "kept"),
        ("Set-Cookie", "a=b"),
        ("Transfer-Encoding", "chunked"),
        ("Cache-Control", "max-age=3600"),
    )
    stored = storable_headers(resp, EMPTY_CACHE_CONTROL)
    assert list(stored.keys()) == ["c", "X-Unknown", "Set-Cookie", "Cache-Control"]


def test_proxy_specific_fields_not_stored() -> None:
    """Sec. 3.1: "Header fields that are specific to the proxy that a cache uses when
    forwarding a request MUST NOT be stored ... Effectively, this is limited to
    Proxy-Authenticate ..., Proxy-Authentication-Info ..., and Proxy-Authorization"."""
    resp = H(
        ("Proxy-Authenticate", "Basic"),
        ("Proxy-Authentication-Info", "x"),
        ("Proxy-Authorization", "y"),
        ("WWW-Authenticate", "Basic"),
    )
    assert list(storable_headers(resp).keys()) == ["WWW-Authenticate"]


# --- sec. 3.2 Updating Stored Header Fields -----------------------------------------------


STORED = H(
    ("Date", "Thu, 01 Dec 1994 16:00:00 GMT"),
    ("Cache-Control", "max-age=1"),
    ("Content-Type", "text/plain"),
    ("Content-Length", "1234"),
    ("Content-Encoding", "gzip"),
    ("ETag", '"v1"'),
    ("Set-Cookie", "a=1"),
    ("Set-Cookie", "b=2"),
    ("Test-Header", "A"),
)


def test_304_replaces_fields_and_keeps_others() -> None:
    """Sec. 3.2: "the cache MUST add each header field in the provided response to the stored
    response, replacing field values that are already present" (cache-tests update304:
    Test-Header, Content-Type, Cache-Control, Set-Cookie are updated; fields the 304 omits
    are kept, 304-lm-use-stored-Test-Header)."""
    fresh = H(
        ("Date", "Thu, 01 Dec 1994 17:00:00 GMT"),
        ("Cache-Control", "max-age=3600"),
        ("Content-Type", "text/plain;charset=utf-8"),
        ("Set-Cookie", "a=c"),
        ("X-New", "n"),
    )
    updated = update_stored_headers(STORED, fresh)
    assert updated["Date"] == "Thu, 01 Dec 1994 17:00:00 GMT"
    assert updated.getall("Cache-Control") == ["max-age=3600"]
    assert updated["Content-Type"] == "text/plain;charset=utf-8"
    assert updated.getall("Set-Cookie") == ["a=c"]
    assert updated["Test-Header"] == "A"
    assert updated["ETag"] == '"v1"'
    assert updated["X-New"] == "n"
    # position of replaced fields is kept, new fields are appended
    assert list(updated.keys())[:3] == ["Date", "Cache-Control", "Content-Type"]
    assert list(updated.keys())[-1] == "X-New"
    # inputs are not mutated
    assert STORED.getall("Set-Cookie") == ["a=1", "b=2"]


def test_update_exceptions() -> None:
    """Sec. 3.2 exceptions: "Header fields excepted from storage in Section 3.1", "Header
    fields that the cache's stored response depends upon" (Content-Encoding: the stored body
    is encoded with it), "Header fields that are automatically processed and removed by the
    recipient" (Content-Range) "and The Content-Length header field." """
    fresh = H(
        ("Content-Length", "0"),
        ("Content-Encoding", "br"),
        ("Content-Range", "bytes 0-1/2"),
        ("Connection", "close, X-Hop"),
        ("X-Hop", "1"),
        ("Transfer-Encoding", "chunked"),
        ("Proxy-Authenticate", "Basic"),
    )
    updated = update_stored_headers(STORED, fresh)
    assert updated["Content-Length"] == "1234"
    assert updated["Content-Encoding"] == "gzip"
    for name in ("Content-Range", "Connection", "X-Hop", "Transfer-Encoding"):
        assert name not in updated
    assert "Proxy-Authenticate" not in updated


def test_update_applies_new_field_restrictions() -> None:
    """Sec. 3.1 applied to updates: a 304 carrying ``no-cache="Set-Cookie"`` means the
    stored response must not keep (reuse) Set-Cookie either."""
    fresh = H(("Cache-Control", 'max-age=60, no-cache="Set-Cookie"'))
    updated = update_stored_headers(STORED, fresh)
    assert "Set-Cookie" not in updated
    assert updated["Test-Header"] == "A"
