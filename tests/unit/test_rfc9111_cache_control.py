"""RFC 9111 sec. 5.2 (Cache-Control), sec. 1.2.2 (delta-seconds), sec. 5.4 (Pragma) and
RFC 9213 (CDN-Cache-Control)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from edgeproxy.http.cache_control import (
    DELTA_SECONDS_CAP,
    EMPTY_CACHE_CONTROL,
    MAX_STALE_ANY,
    CacheControl,
    fields_to_strip,
    parse_cache_control,
    parse_cdn_cache_control,
    request_no_cache,
    select_response_cache_control,
)


def cc(*lines: str) -> CacheControl:
    return parse_cache_control(list(lines))


def test_absent_is_empty() -> None:
    """No Cache-Control field: no directives."""
    assert parse_cache_control([]) is EMPTY_CACHE_CONTROL
    assert parse_cache_control(None) is EMPTY_CACHE_CONTROL
    assert cc("") == EMPTY_CACHE_CONTROL


def test_directive_names_are_case_insensitive() -> None:
    """Sec. 5.2: "Cache directives are identified by a token, to be compared
    case-insensitively" (cache-tests cc-resp-no-store-case-insensitive,
    freshness-max-age-case-insenstive)."""
    parsed = cc("No-StOrE, MaX-aGe=3600, No-CaChE, PUBLIC")
    assert parsed.no_store and parsed.no_cache and parsed.public
    assert parsed.max_age == 3600


def test_all_boolean_directives() -> None:
    """Sec. 5.2.1 and 5.2.2 define these directives without arguments."""
    parsed = cc(
        "no-store, no-cache, private, public, must-revalidate, proxy-revalidate, "
        "must-understand, no-transform, immutable, only-if-cached"
    )
    assert parsed.no_store and parsed.no_cache and parsed.private and parsed.public
    assert parsed.must_revalidate and parsed.proxy_revalidate and parsed.must_understand
    assert parsed.no_transform and parsed.immutable and parsed.only_if_cached


def test_delta_seconds_directives() -> None:
    """Sec. 5.2.1.1-5.2.1.3, 5.2.2.1, 5.2.2.10 and RFC 5861: arguments are delta-seconds
    (sec. 1.2.2: delta-seconds = 1*DIGIT)."""
    parsed = cc(
        "max-age=1, s-maxage=2, stale-while-revalidate=3, stale-if-error=4, max-stale=5, "
        "min-fresh=6"
    )
    assert (parsed.max_age, parsed.s_maxage) == (1, 2)
    assert (parsed.stale_while_revalidate, parsed.stale_if_error) == (3, 4)
    assert (parsed.max_stale, parsed.min_fresh) == (5, 6)


def test_whitespace_and_empty_members() -> None:
    """RFC 9110 sec. 5.6.1: "a recipient MUST accept empty list elements" and optional
    whitespace around commas."""
    parsed = cc(" ,, max-age=60 ,\t,public,  ")
    assert parsed.max_age == 60 and parsed.public


def test_multiple_lines_combine() -> None:
    """RFC 9110 sec. 5.3: several field lines are equivalent to one comma-joined line."""
    parsed = cc("max-age=60", "public", "stale-if-error=5")
    assert parsed.max_age == 60 and parsed.public and parsed.stale_if_error == 5


def test_quoted_max_age_is_accepted() -> None:
    """Sec. 5.2: arguments "can use both token and quoted-string syntax. For the directives
    defined below that define arguments, recipients ought to accept both forms" (cache-tests
    freshness-max-age-quoted)."""
    assert cc('max-age="3600"').max_age == 3600
    assert cc('s-maxage="10"').s_maxage == 10


def test_max_age_inside_quoted_string_is_ignored() -> None:
    """Sec. 5.2 grammar: the argument of an extension is a quoted-string; a comma or
    "max-age" inside it is not a directive (cache-tests freshness-max-age-ignore-quoted*)."""
    assert cc('extension="max-age=100", max-age=1').max_age == 1
    assert cc('max-age=1, extension="max-age=100"').max_age == 1
    assert cc('extension="max-age=100", max-age="1"').max_age == 1
    assert cc('max-age="1", extension="max-age=100"').max_age == 1
    parsed = cc('foo="a, b=\\"c\\", max-age=9", max-age=2')
    assert parsed.max_age == 2
    assert parsed.raw["foo"] == 'a, b="c", max-age=9'


@pytest.mark.parametrize(
    "text",
    [
        "max-age='3600'",
        "max-age=-100",
        "max-age=a100",
        "max-age=100a",
        "max-age=3600.0",
        "max-age=3600.5",
        "max-age=",
        "max-age",
        "max-age= 100",
        "max-age =100",
        'max-age="36',
        "max-age=1 2",
    ],
)
def test_invalid_max_age_means_stale(text: str) -> None:
    """Sec. 4.2.1: "Caches are encouraged to consider responses that have invalid freshness
    information (e.g., a max-age directive with non-integer content) to be stale." Invalid
    delta-seconds are represented as 0 (cache-tests freshness-max-age-single-quoted,
    -negative, -a100, -100a, -space-before-equals, -space-after-equals: not reused)."""
    assert cc(text).max_age == 0


def test_invalid_s_maxage_means_stale() -> None:
    """Sec. 4.2.1 (invalid freshness information is stale), applied to s-maxage."""
    assert cc("s-maxage=abc, max-age=3600").s_maxage == 0


def test_leading_zeros_are_digits() -> None:
    """Sec. 1.2.2: delta-seconds = 1*DIGIT (cache-tests freshness-max-age-leading-zero)."""
    assert cc("max-age=003600").max_age == 3600


@pytest.mark.parametrize("value", ["2147483648", "2147483649", "99999999999", "9" * 40])
def test_large_values_are_capped(value: str) -> None:
    """Sec. 1.2.2: "If a cache receives a delta-seconds value greater than the greatest
    integer it can represent, or if any of its subsequent calculations overflows, the cache
    MUST consider the value to be 2147483648 (2^31) or the greatest positive integer it can
    conveniently represent." """
    assert cc(f"max-age={value}").max_age == DELTA_SECONDS_CAP == 2147483648


def test_duplicate_directive_first_occurrence_wins() -> None:
    """Sec. 4.2.1: "When there is more than one value present for a given directive (e.g.,
    two Expires header field lines or multiple Cache-Control: max-age directives), either the
    first occurrence should be used or the response should be considered stale." We use the
    first occurrence, on one line or across lines."""
    assert cc("max-age=1800, max-age=1").max_age == 1800
    assert cc("max-age=1, max-age=1800").max_age == 1
    assert cc("max-age=1800", "max-age=1").max_age == 1800
    assert cc("max-age=1", "max-age=1800").max_age == 1


def test_no_cache_unqualified_and_qualified() -> None:
    """Sec. 5.2.2.4: "The no-cache response directive, in its unqualified form (without an
    argument), indicates that the response MUST NOT be used to satisfy any other request
    without forwarding it for validation"; the qualified form lists field names, which "are
    case-insensitive"."""
    unq = cc("no-cache")
    assert unq.no_cache and unq.no_cache_fields == ()
    q = cc('no-cache="Set-Cookie, X-Foo"')
    assert not q.no_cache
    assert q.no_cache_fields == ("set-cookie", "x-foo")
    token_form = cc("no-cache=Set-Cookie")
    assert not token_form.no_cache and token_form.no_cache_fields == ("set-cookie",)


def test_private_unqualified_and_qualified() -> None:
    """Sec. 5.2.2.7: "The unqualified private response directive indicates that a shared cache
    MUST NOT store the response"; "If a qualified private response directive is present, with
    an argument that lists one or more field names, then only the listed header fields are
    limited to a single user"."""
    assert cc("private").private
    q = cc('private="Set-Cookie"')
    assert not q.private and q.private_fields == ("set-cookie",)


def test_empty_or_broken_field_list_is_unqualified() -> None:
    """Conservative reading of sec. 5.2.2.4/5.2.2.7: an empty or unparseable field list gives
    the unqualified (more restrictive) directive."""
    assert cc('no-cache=""').no_cache
    assert cc('private="a b"').private
    assert cc('private="unterminated').private


def test_fields_to_strip() -> None:
    """Sec. 3.1: "The no-cache (Section 5.2.2.4) and private (Section 5.2.2.7) cache
    directives can have arguments that prevent storage of header fields by all caches and
    shared caches, respectively."""
    assert fields_to_strip(cc('private="a", no-cache="b, a"')) == ("a", "b")
    assert fields_to_strip(cc("max-age=1")) == ()


def test_max_stale_without_value_means_any() -> None:
    """Sec. 5.2.1.2: "If no value is assigned to max-stale, then the client will accept a
    stale response of any age." """
    assert cc("max-stale").max_stale == MAX_STALE_ANY
    assert cc("max-stale=abc").max_stale == 0


def test_unknown_directives_are_kept_raw_and_ignored() -> None:
    """Sec. 5.2.3: "A cache MUST ignore unrecognized cache directives." They are exposed in
    ``raw`` (first occurrence) for callers, never used by the rules."""
    parsed = cc('foobar, community="UCI", max-age=3600, foobar=2')
    assert parsed.max_age == 3600
    assert dict(parsed.raw) == {"foobar": None, "community": "UCI"}


def test_garbage_members_are_skipped() -> None:
    """Robustness: members that are not ``token [ "=" ... ]`` are ignored."""
    parsed = cc('@@@, "quoted", =5, max-age=7, ;;;')
    assert parsed.max_age == 7
    assert dict(parsed.raw) == {}


def test_single_string_argument() -> None:
    """Convenience: a single str is one field line, not an iterable of characters."""
    assert parse_cache_control("max-age=5").max_age == 5


def test_result_is_frozen_and_shared() -> None:
    """Parsed values are immutable (they are memoized and shared between requests)."""
    parsed = cc("max-age=5, foo=bar")
    with pytest.raises(AttributeError):
        parsed.max_age = 6  # type: ignore[misc]
    with pytest.raises(TypeError):
        parsed.raw["foo"] = "x"  # type: ignore[index]
    assert cc("max-age=5, foo=bar") == parsed


@given(st.lists(st.text(max_size=80), max_size=4))
def test_parser_never_raises(lines: list[str]) -> None:
    """Robustness: any field value parses without raising; delta-seconds stay in range."""
    parsed = parse_cache_control(lines)
    for value in (parsed.max_age, parsed.s_maxage, parsed.min_fresh):
        assert value is None or 0 <= value <= DELTA_SECONDS_CAP


@given(st.text(alphabet="max-ge=s0123456789,\"; \\'private-no-cache", max_size=60))
def test_parser_never_raises_on_directive_like_text(text: str) -> None:
    """Robustness on near-miss inputs built from directive characters."""
    parse_cache_control([text])
    parse_cdn_cache_control([text])


# --- Pragma (sec. 5.4) -------------------------------------------------------------------


def test_pragma_no_cache_without_cache_control() -> None:
    """Sec. 5.4: "The Pragma request header field was defined for HTTP/1.0 caches, so that
    clients could specify a "no-cache" request (as Cache-Control was not defined until
    HTTP/1.1)." It is honoured only when Cache-Control is absent."""
    headers = CIMultiDict([("Pragma", "No-Cache")])
    assert request_no_cache(EMPTY_CACHE_CONTROL, headers)
    with_cc = CIMultiDict([("Pragma", "no-cache"), ("Cache-Control", "max-age=60")])
    assert not request_no_cache(cc("max-age=60"), with_cc)
    extension = CIMultiDict([("Pragma", "unrecognised-extension")])
    assert not request_no_cache(EMPTY_CACHE_CONTROL, extension)


def test_request_cache_control_no_cache() -> None:
    """Sec. 5.2.1.4: "The no-cache request directive indicates that the client prefers a
    stored response not be used to satisfy the request without successful validation on the
    origin server." """
    headers = CIMultiDict([("Cache-Control", "no-cache")])
    assert request_no_cache(cc("no-cache"), headers)


# --- CDN-Cache-Control (RFC 9213) --------------------------------------------------------


def test_cdn_cache_control_parses_dictionary() -> None:
    """RFC 9213 sec. 2.1: targeted fields are Dictionary structured fields carrying the
    cache directives."""
    parsed = parse_cdn_cache_control(["max-age=3600, foobar"])
    assert parsed is not None and parsed.max_age == 3600 and parsed.targeted
    assert parse_cdn_cache_control(["max-age=99999999999"]).max_age == DELTA_SECONDS_CAP


@pytest.mark.parametrize(
    "value",
    ["max-age=10000, &&&&&", 'max-age="10000"', "max-age =100", "max-age= 100", "max-age=1,"],
)
def test_cdn_cache_control_invalid_is_ignored(value: str) -> None:
    """RFC 9213 sec. 2.1: a cache uses the targeted field only with "a valid value"; an
    invalid Structured Field or a directive of the wrong type makes it invalid (cache-tests
    cdn-cc-invalid-sh-type-unknown / -wrong)."""
    assert parse_cdn_cache_control([value]) is None


def test_select_prefers_valid_targeted_field() -> None:
    """RFC 9213 sec. 2.1: "the cache MUST select the first (in target list order) field with a
    valid value and use its value to determine the caching policy for the response, and it
    MUST ignore the Cache-Control and Expires header fields in that response, unless no valid
    value is available from the listed header fields." """
    headers = CIMultiDict([("Cache-Control", "no-store"), ("CDN-Cache-Control", "max-age=10000")])
    chosen = select_response_cache_control(headers)
    assert chosen.max_age == 10000 and not chosen.no_store and chosen.targeted
    invalid = CIMultiDict([("Cache-Control", "no-store"), ("CDN-Cache-Control", 'max-age="1"')])
    fallback = select_response_cache_control(invalid)
    assert fallback.no_store and not fallback.targeted
    assert select_response_cache_control(headers, targets=()).no_store
