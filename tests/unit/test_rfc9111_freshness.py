"""RFC 9111 sec. 4.2 (Freshness), 4.2.1 (lifetime), 4.2.2 (heuristics), 4.2.3 (age),
4.2.4 (serving stale), 5.1 (Age), 5.2.1 (request directives), 5.3 (Expires) and RFC 5861
(stale-while-revalidate, stale-if-error), for a SHARED cache. All times are explicit."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from edgeproxy.http.cache_control import (
    EMPTY_CACHE_CONTROL,
    CacheControl,
    parse_cache_control,
    parse_cdn_cache_control,
)
from edgeproxy.http.dates import format_http_date
from edgeproxy.http.freshness import (
    Freshness,
    apply_policy_ttl,
    corrected_initial_age,
    current_age,
    decide,
    freshness_lifetime,
    parse_age,
    stale_if_error_ok,
)

T0 = 1_700_000_000.0  # the response was received at T0


def H(*pairs: tuple[str, str]) -> CIMultiDict[str]:
    return CIMultiDict(pairs)


def cc(text: str) -> CacheControl:
    return parse_cache_control([text])


def date(offset: float) -> str:
    return format_http_date(T0 + offset)


def lifetime(*pairs: tuple[str, str], status: int = 200, **kw: float) -> tuple[float | None, str]:
    headers = H(*pairs)
    resp_cc = parse_cache_control(headers.getall("Cache-Control", ()))
    return freshness_lifetime(status, headers, resp_cc, response_time=T0, **kw)


# --- sec. 4.2.1 Calculating Freshness Lifetime --------------------------------------------


def test_s_maxage_first_for_shared_cache() -> None:
    """Sec. 4.2.1: "If the cache is shared and the s-maxage response directive (Section
    5.2.2.10) is present, use its value" (cache-tests freshness-max-age-s-maxage-shared-*:
    s-maxage wins over a longer or shorter max-age)."""
    assert lifetime(("Cache-Control", "max-age=3600, s-maxage=1")) == (1.0, "s-maxage")
    assert lifetime(("Cache-Control", "s-maxage=3600, max-age=1")) == (3600.0, "s-maxage")
    assert lifetime(("Cache-Control", "max-age=3600"), ("Cache-Control", "s-maxage=1")) == (
        1.0,
        "s-maxage",
    )


def test_max_age_over_expires() -> None:
    """Sec. 4.2.1: "If the max-age response directive (Section 5.2.2.1) is present, use its
    value"; sec. 5.3: "If a response includes a Cache-Control header field with the max-age
    directive, a recipient MUST ignore the Expires header field" (cache-tests
    freshness-max-age-expires, freshness-max-age-0-expires, -expires-invalid)."""
    assert lifetime(("Cache-Control", "max-age=3600"), ("Expires", date(-10000))) == (
        3600.0,
        "max-age",
    )
    assert lifetime(("Cache-Control", "max-age=0"), ("Expires", date(10000))) == (0.0, "max-age")
    assert lifetime(("Cache-Control", "max-age=3600"), ("Expires", "0")) == (3600.0, "max-age")


def test_expires_minus_date() -> None:
    """Sec. 4.2.1: "If the Expires response header field (Section 5.3) is present, use its
    value minus the value of the Date response header field" (cache-tests
    freshness-expires-future / -past / -present / -old-date)."""
    assert lifetime(("Expires", date(30 * 86400)), ("Date", date(0))) == (30 * 86400.0, "expires")
    assert lifetime(("Expires", date(-30 * 86400)), ("Date", date(0))) == (0.0, "expires")
    assert lifetime(("Expires", date(0)), ("Date", date(0))) == (0.0, "expires")
    assert lifetime(("Expires", date(300)), ("Date", date(400))) == (0.0, "expires")
    # the origin's clock is used, not ours (Date 100 s slow): still 60 s of lifetime
    assert lifetime(("Expires", date(-40)), ("Date", date(-100))) == (60.0, "expires")


def test_expires_without_valid_date_uses_response_time() -> None:
    """Sec. 4.2.1: "... minus the value of the Date response header field (using the time the
    message was received if it is not present, as per Section 6.6.1 of [HTTP])" (cache-tests
    freshness-expires-invalid-date: Date "foo", reused)."""
    assert lifetime(("Expires", date(10))) == (10.0, "expires")
    assert lifetime(("Expires", date(10)), ("Date", "foo")) == (10.0, "expires")


@pytest.mark.parametrize(
    "value", ["0", "-1", "Thu, 18 Aug 2050 02:01:18 UTC", "Thu, 18 Aug 50 02:01:18 GMT", ""]
)
def test_invalid_expires_is_already_expired(value: str) -> None:
    """Sec. 5.3: "A cache recipient MUST interpret invalid date formats, especially the value
    "0", as representing a time in the past (i.e., "already expired")."""
    assert lifetime(("Expires", value), ("Date", date(0))) == (0.0, "expires")


@pytest.mark.parametrize("second", [600, 60, -600])
def test_several_expires_lines_are_already_expired(second: int) -> None:
    """Sec. 4.2.1: "When there is more than one value present for a given directive (e.g., two
    Expires header field lines ...), either the first occurrence should be used or the
    response should be considered stale." We consider it stale: the lines combine into one
    field value (RFC 9110 sec. 5.3) that is no HTTP-date, and sec. 5.3 has "A cache recipient
    MUST interpret invalid date formats ... as representing a time in the past" - even when
    both lines name the same future date."""
    assert lifetime(("Expires", date(60)), ("Expires", date(second)), ("Date", date(0))) == (
        0.0,
        "expires",
    )


def test_one_expires_line_gives_the_lifetime() -> None:
    """Sec. 4.2.1: "If the Expires response header field (Section 5.3) is present, use its
    value minus the value of the Date response header field" - one line, one value."""
    assert lifetime(("Expires", date(60)), ("Date", date(0))) == (60.0, "expires")


def test_invalid_max_age_is_stale_even_with_future_expires() -> None:
    """Sec. 4.2.1: "Caches are encouraged to consider responses that have invalid freshness
    information (e.g., a max-age directive with non-integer content) to be stale.\""""
    assert lifetime(("Cache-Control", "max-age=3600a"), ("Expires", date(3600))) == (
        0.0,
        "max-age",
    )


def test_targeted_field_ignores_expires() -> None:
    """RFC 9213 sec. 2.1: the cache "MUST ignore the Cache-Control and Expires header fields
    in that response" when it uses a targeted field (cache-tests cdn-max-age-expires)."""
    headers = H(("Expires", date(-10000)), ("Date", date(0)))
    chosen = parse_cdn_cache_control(["max-age=3600"])
    assert freshness_lifetime(200, headers, chosen, response_time=T0) == (3600.0, "max-age")
    no_lifetime = parse_cdn_cache_control(["public"])
    assert freshness_lifetime(599, headers, no_lifetime, response_time=T0) == (None, "none")


# --- sec. 4.2.2 Calculating Heuristic Freshness -------------------------------------------


def test_heuristic_ten_percent_of_last_modified_age() -> None:
    """Sec. 4.2.2: "If the response has a Last-Modified header field ..., caches are
    encouraged to use a heuristic expiration value that is no more than some fraction of the
    interval since that time. A typical setting of this fraction might be 10%." """
    assert lifetime(("Last-Modified", date(-10000)), ("Date", date(0))) == (1000.0, "heuristic")
    assert lifetime(("Last-Modified", date(-5)), ("Date", date(0))) == (0.5, "heuristic")
    # without Date, the time of receipt stands in (RFC 9110 sec. 6.6.1)
    assert lifetime(("Last-Modified", date(-100))) == (10.0, "heuristic")


def test_heuristic_is_capped() -> None:
    """Sec. 4.2.2: "This specification does not provide specific algorithms, but it does
    impose worst-case constraints on their results" - ours is capped (default one day)."""
    lm = (("Last-Modified", date(-365 * 86400)), ("Date", date(0)))
    assert lifetime(*lm) == (86400.0, "heuristic")
    assert lifetime(*lm, heuristic_max=600.0) == (600.0, "heuristic")
    assert lifetime(*lm, heuristic_fraction=0.0) == (0.0, "heuristic")


def test_future_last_modified_gives_zero() -> None:
    """Sec. 4.2.2 worst-case constraint: a Last-Modified after Date yields no freshness."""
    assert lifetime(("Last-Modified", date(100)), ("Date", date(0))) == (0.0, "heuristic")


@pytest.mark.parametrize("status", [201, 202, 302, 403, 500, 502, 503, 504, 599])
def test_no_heuristic_for_other_statuses(status: int) -> None:
    """Sec. 4.2.2: "heuristics can only be used on responses without explicit freshness whose
    status codes are defined as "heuristically cacheable" (e.g., see Section 15.1 of [HTTP])
    and on responses without explicit freshness that have been marked as explicitly cacheable
    (e.g., with a public response directive)" (cache-tests heuristic-*-not_cached)."""
    assert lifetime(("Last-Modified", date(-10000)), ("Date", date(0)), status=status) == (
        None,
        "none",
    )
    assert lifetime(
        ("Last-Modified", date(-10000)), ("Date", date(0)), ("Cache-Control", "public"), status=599
    ) == (1000.0, "heuristic")


def test_no_heuristic_when_explicit() -> None:
    """Sec. 4.2.2: "A cache MUST NOT use heuristics to determine freshness when an explicit
    expiration time is present in the stored response.\""""
    assert lifetime(("Expires", date(5)), ("Last-Modified", date(-(10**6))), ("Date", date(0))) == (
        5.0,
        "expires",
    )


def test_nothing_applies() -> None:
    """Sec. 4.2.1: "Otherwise, no explicit expiration time is present in the response. A
    heuristic freshness lifetime might be applicable" - and without Last-Modified it is not
    (cache-tests freshness-none)."""
    assert lifetime() == (None, "none")
    assert lifetime(("Last-Modified", "garbage")) == (None, "none")


# --- policy TTLs -------------------------------------------------------------------------


def test_policy_clamps_explicit_lifetime() -> None:
    """CloudFront semantics: origin freshness (s-maxage/max-age/Expires) is clamped into
    [min_ttl, max_ttl]."""
    kw = {"min_ttl": 10.0, "default_ttl": 300.0, "max_ttl": 3600.0}
    assert apply_policy_ttl(60.0, "max-age", **kw) == 60.0
    assert apply_policy_ttl(0.0, "max-age", **kw) == 10.0
    assert apply_policy_ttl(10**9, "s-maxage", **kw) == 3600.0
    assert apply_policy_ttl(0.0, "expires", **kw) == 10.0


def test_policy_default_without_explicit_lifetime() -> None:
    """CloudFront semantics: without origin freshness, default_ttl is used; with default_ttl
    0 the heuristic lifetime (or 0) is used, clamped into [min_ttl, max_ttl]."""
    kw = {"min_ttl": 0.0, "max_ttl": 3600.0}
    assert apply_policy_ttl(None, "none", default_ttl=300.0, **kw) == 300.0
    assert apply_policy_ttl(50.0, "heuristic", default_ttl=300.0, **kw) == 300.0
    assert apply_policy_ttl(50.0, "heuristic", default_ttl=0.0, **kw) == 50.0
    assert apply_policy_ttl(86400.0, "heuristic", default_ttl=0.0, **kw) == 3600.0
    assert apply_policy_ttl(None, "none", default_ttl=0.0, **kw) == 0.0
    assert apply_policy_ttl(None, "none", default_ttl=0.0, min_ttl=5.0, max_ttl=10.0) == 5.0


# --- sec. 4.2.3 Calculating Age / sec. 5.1 Age ----------------------------------------------


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (["15"], 15),
        (["0"], 0),
        (["7200,0"], 7200),
        (["0,7200"], 0),
        (["7200", "0"], 7200),
        (["0", "7200"], 0),
        (["0, 0"], 0),
        (["7200, 7200"], 7200),
        (["abc"], None),
        (["-7200"], None),
        (["7200.0"], None),
        ([""], None),
        (["99999999999"], 2147483648),
    ],
)
def test_age_parsing(lines: list[str], expected: int | None) -> None:
    """Sec. 5.1: "a cache encountering a message with a list-based Age field value SHOULD use
    the first member of the field value, discarding subsequent ones. If the field value
    (after discarding additional members, as per above) is invalid (e.g., it contains
    something other than a non-negative integer), a cache SHOULD ignore the field."
    (cache-tests age-parse-*)."""
    assert parse_age(H(*[("Age", v) for v in lines])) == expected


def test_corrected_initial_age_uses_age_and_delay() -> None:
    """Sec. 4.2.3: "response_delay = response_time - request_time; corrected_age_value =
    age_value + response_delay; ... corrected_initial_age = max(apparent_age,
    corrected_age_value)" (cache-tests freshness-max-age-age: Age 15 > max-age 10)."""
    headers = H(("Date", date(0)), ("Age", "15"))
    assert corrected_initial_age(headers, request_time=T0 - 2, response_time=T0) == 17.0


def test_corrected_initial_age_uses_apparent_age() -> None:
    """Sec. 4.2.3: "apparent_age = max(0, response_time - date_value)" - the conservative
    combination takes the larger of the two estimates."""
    headers = H(("Date", date(-30)))
    assert corrected_initial_age(headers, request_time=T0, response_time=T0) == 30.0
    future = H(("Date", date(+30)), ("Age", "5"))
    assert corrected_initial_age(future, request_time=T0, response_time=T0) == 5.0


def test_invalid_age_is_ignored_not_fatal() -> None:
    """Sec. 5.1: an invalid Age is ignored, so age_value is "0, if not available"
    (sec. 4.2.3)."""
    headers = H(("Date", date(0)), ("Age", "-7200"))
    assert corrected_initial_age(headers, request_time=T0, response_time=T0) == 0.0


def test_current_age() -> None:
    """Sec. 4.2.3: "resident_time = now - response_time; current_age = corrected_initial_age
    + resident_time;\""""
    assert current_age(17.0, T0, T0 + 100) == 117.0
    assert current_age(17.0, T0, T0 - 100) == 17.0  # clock stepped back: never younger


# --- sec. 4.2 fresh/stale decision ---------------------------------------------------------


def D(
    *,
    age: float,
    ttl: float | None,
    resp: str = "",
    req: str = "",
    pragma: bool = False,
    swr_default: float = 0.0,
) -> Freshness:
    """Decide for a response received at T0 with corrected_initial_age 0, asked at T0+age."""
    return decide(
        now=T0 + age,
        response_time=T0,
        corrected_initial_age=0.0,
        lifetime=ttl,
        resp_cc=cc(resp),
        req_cc=cc(req),
        req_pragma_no_cache=pragma,
        stale_while_revalidate_default=swr_default,
    )


def test_fresh_iff_lifetime_exceeds_age() -> None:
    """Sec. 4.2: "response_is_fresh = (freshness_lifetime > current_age)" (cache-tests
    freshness-max-age-0: max-age=0 is never reused)."""
    assert D(age=10, ttl=60) is Freshness.FRESH
    assert D(age=60, ttl=60) is Freshness.STALE
    assert D(age=0, ttl=0) is Freshness.STALE
    assert D(age=0, ttl=None) is Freshness.STALE


def test_age_header_counts_towards_age() -> None:
    """Sec. 4.2.3: the initial age includes the Age received from upstream (cache-tests
    freshness-max-age-age, freshness-expires-age-slow-date / -fast-date)."""
    slow_date = H(("Date", date(-10)), ("Expires", date(10)), ("Age", "25"))
    ttl, _ = freshness_lifetime(200, slow_date, EMPTY_CACHE_CONTROL, response_time=T0)
    age0 = corrected_initial_age(slow_date, request_time=T0, response_time=T0)
    state = decide(
        now=T0,
        response_time=T0,
        corrected_initial_age=age0,
        lifetime=ttl,
        resp_cc=EMPTY_CACHE_CONTROL,
        req_cc=EMPTY_CACHE_CONTROL,
        req_pragma_no_cache=False,
    )
    assert (ttl, age0, state) == (20.0, 25.0, Freshness.STALE)


def test_response_no_cache_always_validates() -> None:
    """Sec. 5.2.2.4: unqualified no-cache "indicates that the response MUST NOT be used to
    satisfy any other request without forwarding it for validation and receiving a successful
    response" (cache-tests cc-resp-no-cache: even with max-age and Expires); sec. 4.2.4 also
    forbids serving it stale."""
    assert D(age=1, ttl=10000, resp="max-age=10000, no-cache") is Freshness.STALE
    assert D(age=100, ttl=1, resp="no-cache, stale-while-revalidate=3600") is Freshness.STALE
    assert D(age=100, ttl=1, resp="no-cache", req="max-stale") is Freshness.STALE
    # the qualified form does not force validation (the fields are stripped instead)
    assert D(age=1, ttl=3600, resp='no-cache="set-cookie", max-age=3600') is Freshness.FRESH


def test_request_no_cache_and_pragma() -> None:
    """Sec. 5.2.1.4: "The no-cache request directive indicates that the client prefers a
    stored response not be used to satisfy the request without successful validation on the
    origin server"; sec. 5.4: Pragma: no-cache is its HTTP/1.0 form."""
    assert D(age=1, ttl=3600, req="no-cache") is Freshness.STALE
    assert D(age=1, ttl=3600, pragma=True) is Freshness.STALE


def test_request_max_age() -> None:
    """Sec. 5.2.1.1: "The max-age request directive indicates that the client prefers a
    response whose age is less than or equal to the specified number of seconds"
    (cache-tests ccreq-ma0, ccreq-magreaterage)."""
    assert D(age=1, ttl=3600, req="max-age=0") is Freshness.STALE
    assert D(age=1800, ttl=3600, req="max-age=600") is Freshness.STALE
    assert D(age=600, ttl=3600, req="max-age=600") is Freshness.FRESH


def test_request_min_fresh() -> None:
    """Sec. 5.2.1.3: "The min-fresh request directive indicates that the client prefers a
    response whose freshness lifetime is no less than its current age plus the specified time
    in seconds" (cache-tests ccreq-min-fresh, ccreq-min-fresh-age)."""
    assert D(age=0, ttl=1500, req="min-fresh=2000") is Freshness.STALE
    assert D(age=1000, ttl=1500, req="min-fresh=1000") is Freshness.STALE
    assert D(age=400, ttl=1500, req="min-fresh=1000") is Freshness.FRESH


def test_request_max_stale() -> None:
    """Sec. 5.2.1.2: "The max-stale request directive indicates that the client will accept a
    response that has exceeded its freshness lifetime. If a value is present, then the client
    is willing to accept a response that has exceeded its freshness lifetime by no more than
    the specified number of seconds." (cache-tests ccreq-max-stale, ccreq-max-stale-age)."""
    assert D(age=2000, ttl=1500, req="max-stale=1000") is Freshness.FRESH
    assert D(age=2600, ttl=1500, req="max-stale=1000") is Freshness.STALE
    assert D(age=10**8, ttl=1, req="max-stale") is Freshness.FRESH


@pytest.mark.parametrize("resp", ["must-revalidate", "proxy-revalidate", "s-maxage=1"])
def test_max_stale_not_allowed_when_prohibited(resp: str) -> None:
    """Sec. 4.2.4: "A cache MUST NOT generate a stale response if it is prohibited by an
    explicit in-protocol directive (e.g., by a no-cache response directive, a must-revalidate
    response directive, or an applicable s-maxage or proxy-revalidate response directive"
    (cache-tests stale-close-must-revalidate / -proxy-revalidate / -s-maxage=2)."""
    assert D(age=10, ttl=1, resp=resp, req="max-stale=1000") is Freshness.STALE


def test_stale_while_revalidate_window() -> None:
    """RFC 5861 sec. 3: "When present in an HTTP response, the stale-while-revalidate
    Cache-Control extension indicates that caches MAY serve the response in which it appears
    after it becomes stale, up to the indicated number of seconds." (cache-tests
    stale-while-revalidate)."""
    resp = "max-age=60, stale-while-revalidate=30"
    assert D(age=30, ttl=60, resp=resp) is Freshness.FRESH
    assert D(age=61, ttl=60, resp=resp) is Freshness.STALE_WHILE_REVALIDATE
    assert D(age=90, ttl=60, resp=resp) is Freshness.STALE_WHILE_REVALIDATE
    assert D(age=91, ttl=60, resp=resp) is Freshness.STALE


@pytest.mark.parametrize("resp", ["must-revalidate", "proxy-revalidate", "no-cache"])
def test_stale_while_revalidate_not_with_revalidation_directives(resp: str) -> None:
    """RFC 9111 sec. 4.2.4 (prohibited stale responses) and sec. 5.2.2.2: "In all
    circumstances, a cache MUST NOT ignore the must-revalidate directive"."""
    full = f"max-age=60, stale-while-revalidate=3600, {resp}"
    assert D(age=61, ttl=60, resp=full) is Freshness.STALE


def test_explicit_swr_honoured_with_s_maxage_but_not_default() -> None:
    """RFC 9111 sec. 4.2.4: stale responses may be generated when "explicitly permitted by the
    client or origin server (e.g., by ... extension directives such as those defined in
    [RFC5861] ...)"; sec. 5.2.2.10: s-maxage "incorporates the semantics of the
    proxy-revalidate response directive" - so a policy default window does not apply to an
    s-maxage response, while the origin's own stale-while-revalidate does (our choice)."""
    assert D(age=61, ttl=60, resp="s-maxage=60, stale-while-revalidate=30") is (
        Freshness.STALE_WHILE_REVALIDATE
    )
    assert D(age=61, ttl=60, resp="s-maxage=60", swr_default=30) is Freshness.STALE
    assert D(age=61, ttl=60, resp="max-age=60", swr_default=30) is (
        Freshness.STALE_WHILE_REVALIDATE
    )
    assert D(age=61, ttl=60, resp="max-age=60, stale-while-revalidate=0", swr_default=30) is (
        Freshness.STALE
    )


def test_request_constraints_beat_stale_while_revalidate() -> None:
    """Sec. 5.2.1.1/5.2.1.4: a client asking for validation or a young response is not served
    a stale one in the background window."""
    resp = "max-age=60, stale-while-revalidate=3600"
    assert D(age=61, ttl=60, resp=resp, req="no-cache") is Freshness.STALE
    assert D(age=61, ttl=60, resp=resp, req="max-age=10") is Freshness.STALE


# --- RFC 5861 sec. 4 stale-if-error ------------------------------------------------------


def E(*, age: float, ttl: float | None, resp: str = "", req: str = "", window: float = 0.0) -> bool:
    return stale_if_error_ok(
        now=T0 + age,
        response_time=T0,
        corrected_initial_age=0.0,
        lifetime=ttl,
        resp_cc=cc(resp),
        req_cc=cc(req),
        default_window=window,
    )


def test_stale_if_error_response_directive() -> None:
    """RFC 5861 sec. 4: "The stale-if-error Cache-Control extension indicates that when an
    error is encountered, a cached stale response MAY be used to satisfy the request,
    regardless of other freshness information." ... "Its value indicates the upper limit to
    staleness" (cache-tests stale-if-error-cc-response, -expired)."""
    assert E(age=100, ttl=0, resp="max-age=0, stale-if-error=3600")
    assert not E(age=3601, ttl=0, resp="max-age=0, stale-if-error=3600")
    assert not E(age=3, ttl=0, resp="max-age=0, stale-if-error=1")


def test_stale_if_error_request_directive() -> None:
    """RFC 5861 sec. 4: "When used as a request Cache-Control extension, its scope of
    application is the request it appears in" (cache-tests stale-if-error-cc-request,
    -expired)."""
    assert E(age=100, ttl=0, req="stale-if-error=3600")
    assert not E(age=3, ttl=0, req="stale-if-error=1")


def test_stale_if_error_default_window() -> None:
    """RFC 9111 sec. 4.2.4: a disconnected cache may serve stale responses "by configuration
    in accordance with an out-of-band contract"; without any window it may not."""
    assert E(age=100, ttl=10, window=300)
    assert not E(age=100, ttl=10, window=0)
    assert not E(age=400, ttl=10, window=300)
    assert E(age=5, ttl=10)  # still fresh: always servable


@pytest.mark.parametrize("resp", ["must-revalidate", "proxy-revalidate", "no-cache"])
def test_stale_if_error_never_with_revalidation_directives(resp: str) -> None:
    """RFC 9111 sec. 5.2.2.2: "if a cache is disconnected, the cache MUST generate an error
    response rather than reuse the stale response"; sec. 4.2.4 for proxy-revalidate and
    no-cache."""
    assert not E(age=100, ttl=10, resp=f"max-age=10, stale-if-error=3600, {resp}", window=300)


def test_stale_if_error_with_s_maxage() -> None:
    """Sec. 5.2.2.10: "A shared cache MUST NOT reuse a stale response with s-maxage to satisfy
    another request until it has been successfully validated by the origin" - the default and
    request windows do not apply; the origin's explicit stale-if-error does (our choice)."""
    assert not E(age=100, ttl=10, resp="s-maxage=10", req="stale-if-error=600", window=300)
    assert E(age=100, ttl=10, resp="s-maxage=10, stale-if-error=600")
