"""RFC 9110 sec. 13 (Conditional Requests) as evaluated by a cache (RFC 9111 sec. 4.3.2)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from edgeproxy.http.conditional import (
    if_range_allows_partial,
    not_modified,
    not_modified_matches,
    parse_etag,
    parse_etag_list,
    strong_match,
    weak_match,
)
from edgeproxy.http.dates import format_http_date

T0 = 1_700_000_000.0
LM = format_http_date(T0 - 3000)


def H(*pairs: tuple[str, str]) -> CIMultiDict[str]:
    return CIMultiDict(pairs)


# --- entity-tags (sec. 8.8.3) ------------------------------------------------------------


def test_parse_etag_list() -> None:
    """Sec. 13.1.2: If-None-Match = "*" / #entity-tag; entity-tag = [ weak ] opaque-tag;
    weak = %s"W/"; opaque-tag = DQUOTE *etagc DQUOTE (etagc includes ",")."""
    assert parse_etag_list('"a", W/"b",,"c,d"') == [
        (False, '"a"'),
        (True, '"b"'),
        (False, '"c,d"'),
    ]
    assert parse_etag_list("*") == "*"
    assert parse_etag_list(" * ") == "*"
    assert parse_etag_list("") == []


def test_lenient_forms_normalize() -> None:
    """Leniency checked by cache-tests conditional-etag-weak-respond-lowercase and
    conditional-etag-*-unquoted: ``w/`` is a weak prefix, unquoted tags get quotes."""
    assert parse_etag('w/"x"') == (True, '"x"')
    assert parse_etag("abcdef") == (False, '"abcdef"')
    assert parse_etag(None) is None


def test_comparison_functions() -> None:
    """Sec. 8.8.3.2: "Strong comparison: two entity tags are equivalent if both are not weak
    and their opaque-tags match character-by-character. Weak comparison: two entity tags are
    equivalent if their opaque-tags match character-by-character, regardless of either or
    both being tagged as "weak".\""""
    assert strong_match((False, '"1"'), (False, '"1"'))
    assert not strong_match((True, '"1"'), (False, '"1"'))
    assert not strong_match((True, '"1"'), (True, '"1"'))
    assert weak_match((True, '"1"'), (False, '"1"'))
    assert not weak_match((False, '"1"'), (False, '"2"'))


# --- If-None-Match / If-Modified-Since (sec. 13.1.2, 13.1.3, 13.2.2) -----------------------


@pytest.mark.parametrize(
    "inm",
    ['"abcdef"', 'W/"abcdef"', '"1234", "abcdef", "5678"', '"abcdef", "1234"', "*", "abcdef"],
)
def test_if_none_match_weak_comparison(inm: str) -> None:
    """Sec. 13.1.2: "A recipient MUST use the weak comparison function when comparing
    entity tags for If-None-Match"; RFC 9111 sec. 4.3.2: "If the field value is "*", or if the
    field value is a list of entity tags and at least one of them matches the entity tag of
    the selected stored response, a cache recipient SHOULD generate a 304 (Not Modified)
    response" (cache-tests conditional-etag-strong-respond*, -weak-respond)."""
    assert not_modified("GET", H(("If-None-Match", inm)), '"abcdef"', None)
    assert not_modified("HEAD", H(("If-None-Match", inm)), 'W/"abcdef"', None)


def test_if_none_match_mismatch() -> None:
    """Sec. 13.1.2: the condition is true (send the full response) when no tag matches."""
    assert not not_modified("GET", H(("If-None-Match", '"x", "y"')), '"abcdef"', None)
    assert not not_modified("GET", H(("If-None-Match", '"x"')), None, LM)


def test_if_none_match_lines_combine() -> None:
    """RFC 9110 sec. 5.3: several field lines form one list."""
    headers = H(("If-None-Match", '"x"'), ("If-None-Match", '"abcdef"'))
    assert not_modified("GET", headers, '"abcdef"', None)


def test_if_none_match_takes_precedence() -> None:
    """RFC 9111 sec. 4.3.2: "If an If-None-Match header field is not present, a request
    containing an If-Modified-Since header field ... indicates that the client wants to
    validate one or more of its own stored responses by modification date"; RFC 9110 sec.
    13.1.3: "A recipient MUST ignore If-Modified-Since if the request contains an
    If-None-Match header field" (cache-tests conditional-etag-precedence)."""
    later = format_http_date(T0)
    mismatch = H(("If-None-Match", '"other"'), ("If-Modified-Since", later))
    assert not not_modified("GET", mismatch, '"abcdef"', LM)
    match = H(("If-None-Match", '"abcdef"'), ("If-Modified-Since", format_http_date(0)))
    assert not_modified("GET", match, '"abcdef"', LM)


def test_if_modified_since() -> None:
    """RFC 9111 sec. 4.3.2: 304 if "the selected stored response has a Last-Modified field
    value that is earlier than or equal to the conditional timestamp" (cache-tests
    conditional-lm-fresh, -fresh-earlier, -fresh-rfc850)."""
    assert not_modified("GET", H(("If-Modified-Since", LM)), None, LM)
    assert not_modified("GET", H(("If-Modified-Since", format_http_date(T0 - 2000))), None, LM)
    rfc850 = "Tuesday, 14-Nov-23 21:23:20 GMT"  # the same instant as LM
    assert not_modified("GET", H(("If-Modified-Since", rfc850)), None, LM)
    older = H(("If-Modified-Since", format_http_date(T0 - 4000)))
    assert not not_modified("GET", older, None, LM)


def test_if_modified_since_fallbacks() -> None:
    """RFC 9111 sec. 4.3.2: "2) no Last-Modified header field is present in the selected
    stored response, but it has a Date field value that is earlier than or equal to the
    conditional timestamp; or, 3) neither Last-Modified nor Date is present in the selected
    stored response, but the cache recorded it as having been received at a time earlier
    than or equal to the conditional timestamp" (cache-tests conditional-lm-fresh-no-lm)."""
    ims = H(("If-Modified-Since", format_http_date(T0)))
    assert not_modified("GET", ims, None, None, date=format_http_date(T0 - 10))
    assert not not_modified("GET", ims, None, None, date=format_http_date(T0 + 10))
    assert not_modified("GET", ims, None, None, received_at=T0 - 1)
    assert not not_modified("GET", ims, None, None)


@pytest.mark.parametrize("ims", ["garbage", "0", "Tue, 14 Nov 2023 21:43:20 UTC"])
def test_invalid_if_modified_since_is_ignored(ims: str) -> None:
    """Sec. 13.1.3: "A recipient MUST ignore the If-Modified-Since header field if the
    received field value is not a valid HTTP-date, the field value has more than one member,
    or if the request method is neither GET nor HEAD.\""""
    assert not not_modified("GET", H(("If-Modified-Since", ims)), None, LM)


def test_if_modified_since_multiple_members_ignored() -> None:
    """Sec. 13.1.3: ignored if "the field value has more than one member"."""
    two = H(("If-Modified-Since", LM), ("If-Modified-Since", LM))
    assert not not_modified("GET", two, None, LM)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_only_get_and_head(method: str) -> None:
    """Sec. 13.1.3 (If-Modified-Since applies to GET/HEAD only) and RFC 9111 sec. 4: unsafe
    methods are written through, never answered from cache."""
    assert not not_modified(method, H(("If-Modified-Since", LM)), None, LM)
    assert not not_modified(method, H(("If-None-Match", "*")), '"a"', None)


def test_no_conditionals() -> None:
    """Without a precondition there is nothing to evaluate."""
    assert not not_modified("GET", H(), '"a"', LM)


def test_unparseable_last_modified_never_304() -> None:
    """Conservative: a stored Last-Modified we cannot read cannot be compared."""
    assert not not_modified("GET", H(("If-Modified-Since", LM)), None, "garbage")


# --- If-Range (sec. 13.1.5) ---------------------------------------------------------------


def test_if_range_entity_tag_strong_match_only() -> None:
    """Sec. 13.1.5: "If the entity-tag validator provided exactly matches the ETag field value
    for the selected representation using the strong comparison function (Section 8.8.3.2),
    the condition is true"; "A valid entity-tag can be distinguished from a valid HTTP-date by
    examining the first three characters for a DQUOTE." A weak tag never matches strongly."""
    assert if_range_allows_partial('"v1"', '"v1"', None)
    assert not if_range_allows_partial('"v1"', '"v2"', None)
    assert not if_range_allows_partial('W/"v1"', 'W/"v1"', None)
    assert not if_range_allows_partial('"v1"', 'W/"v1"', None)
    assert not if_range_allows_partial('"v1"', None, LM)


def test_if_range_date_exact_and_strong() -> None:
    """Sec. 13.1.5: "If the HTTP-date validator provided exactly matches the Last-Modified
    field value for the selected representation, the condition is true"; "If the HTTP-date
    validator provided is not a strong validator in the sense defined by Section 8.8.2.2, the
    condition is false"; sec. 8.8.2.2: a cache may deem it strong when "That cache entry
    includes a Date value which is at least one second after the Last-Modified value"."""
    sent = format_http_date(T0)
    assert if_range_allows_partial(LM, None, LM, date=sent)
    assert not if_range_allows_partial(format_http_date(T0 - 2999), None, LM, date=sent)
    # Date equal to Last-Modified: the validator is weak
    assert not if_range_allows_partial(LM, None, LM, date=LM)
    # no Date known: strength cannot be deduced
    assert not if_range_allows_partial(LM, None, LM)
    assert not if_range_allows_partial(LM, '"v1"', None, date=sent)


@pytest.mark.parametrize("value", [None, "", "garbage", "0"])
def test_if_range_invalid(value: str | None) -> None:
    """Sec. 13.1.5: an If-Range that is neither a strong entity-tag match nor an exact, strong
    date match is false: the whole representation is sent."""
    assert not if_range_allows_partial(value, '"v1"', LM, date=format_http_date(T0))


@given(st.text(max_size=80))
def test_parsers_never_raise(text: str) -> None:
    """Robustness: arbitrary precondition values never raise."""
    parse_etag_list(text)
    not_modified("GET", H(("If-None-Match", text)), text or None, text)
    not_modified("GET", H(("If-Modified-Since", text)), None, text)
    if_range_allows_partial(text, text, text, date=text)


LM_A = format_http_date(T0)
LM_B = format_http_date(T0 + 60)


@pytest.mark.parametrize(
    ("stored_etag", "stored_lm", "fresh_etag", "fresh_lm", "matches"),
    [
        ('"v1"', None, '"v1"', None, True),
        ('"v1"', None, '"v2"', None, False),
        ('W/"v1"', None, '"v1"', None, False),  # a weak stored tag holds no strong validator
        ('"v1"', None, 'W/"v1"', None, True),
        ('W/"v1"', None, 'W/"v1"', None, True),
        ('W/"v1"', None, 'W/"v2"', None, False),
        (None, LM_A, '"v1"', None, False),
        (None, LM_A, None, LM_A, True),
        (None, LM_A, None, LM_B, False),
        (None, LM_A, None, "garbage", False),
        ('"v1"', LM_A, '"v1"', LM_B, True),  # the entity-tag decides
        ('"v1"', LM_A, None, None, True),  # no validator in the 304: confirms what was sent
        (None, None, None, None, True),
    ],
)
def test_not_modified_matches(stored_etag, stored_lm, fresh_etag, fresh_lm, matches) -> None:
    """RFC 9111 sec. 4.3.4: "If none of the stored responses contain at least one of the same
    strong validators, then the cache MUST NOT use the new response to update any stored
    responses"; weak validators must "correspond to one of the cache's stored responses"."""
    assert not_modified_matches(stored_etag, stored_lm, fresh_etag, fresh_lm) is matches
