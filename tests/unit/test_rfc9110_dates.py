"""RFC 9110 sec. 5.6.7 (Date/Time Formats) and the date-parsing rules of RFC 9111 sec. 4.2."""

from __future__ import annotations

import calendar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeproxy.http.dates import format_http_date, parse_http_date

SUN_06_NOV_1994 = 784111777.0  # Sun, 06 Nov 1994 08:49:37 GMT


def test_imf_fixdate() -> None:
    """RFC 9110 sec. 5.6.7: "An example of the preferred format is
    Sun, 06 Nov 1994 08:49:37 GMT    ; IMF-fixdate"."""
    assert parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT") == SUN_06_NOV_1994


@pytest.mark.parametrize(
    "value",
    ["Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994", "Sun Nov 06 08:49:37 1994"],
)
def test_obsolete_formats_are_accepted(value: str) -> None:
    """RFC 9110 sec. 5.6.7: "A recipient that parses a timestamp value in an HTTP field MUST
    accept all three HTTP-date formats." (rfc850-date and asctime-date; asctime's
    date3 = month SP ( 2DIGIT / ( SP DIGIT ) ))."""
    assert parse_http_date(value) == SUN_06_NOV_1994


def test_asctime_two_digit_day() -> None:
    """RFC 9110 sec. 5.6.7: asctime-date = day-name SP date3 SP time-of-day SP year."""
    assert parse_http_date("Tue Nov 15 12:45:26 1994") == calendar.timegm(
        (1994, 11, 15, 12, 45, 26, 0, 0, 0)
    )


@pytest.mark.parametrize(
    "value",
    [
        "THU, 18 Aug 2050 02:01:18 GMT",
        "Thu, 18 AUG 2050 02:01:18 GMT",
        "Thu, 18 Aug 2050 02:01:18 gMT",
    ],
)
def test_case_insensitive_match(value: str) -> None:
    """RFC 9111 sec. 4.2: "Although all date formats are specified to be case-sensitive, a
    cache recipient SHOULD match the field value case-insensitively." (cache-tests
    freshness-expires-wrong-case-*)."""
    assert parse_http_date(value) == calendar.timegm((2050, 8, 18, 2, 1, 18, 0, 0, 0))


@pytest.mark.parametrize(
    "value",
    [
        "Thu, 18 Aug 2050 02:01:18 UTC",  # zone other than GMT
        "Thu, 18 Aug 2050 02:01:18 +0000",
        "Thu, 18 Aug 2050 02:01:18",  # zone missing
        "Thu, 18 Aug 50 02:01:18 GMT",  # two-digit year in IMF form
        "Thu 18 Aug 2050 02:01:18 GMT",  # missing comma
        "Thu, 18  Aug  2050 02:01:18 GMT",  # multiple spaces
        "Thu, 18-Aug-2050 02:01:18 GMT",  # date dashes
        "Thu, 18 Aug 2050 02.01.18 GMT",  # time periods
        "Thu, 18 Aug 2050 2:01:18 GMT",  # one-digit hour
        "0",
        "",
        "-1",
        "Xyz, 18 Aug 2050 02:01:18 GMT",  # bad day name
        "Thu, 18 Foo 2050 02:01:18 GMT",  # bad month
        "Thu, 31 Feb 2050 02:01:18 GMT",  # no such day
        "Thu, 18 Aug 2050 24:01:18 GMT",  # hour out of range
        "Thu, 18 Aug 2050 02:60:18 GMT",  # minute out of range
        "Thu, 18 Aug 2050 02:01:18 GMT garbage",
        "Thu, ١٨ Aug 2050 02:01:18 GMT",  # non-ASCII digits
    ],
)
def test_invalid_dates(value: str) -> None:
    """RFC 9111 sec. 4.2: "A cache recipient SHOULD consider a date with a zone abbreviation
    other than "GMT" to be invalid for calculating expiration."; RFC 9110 sec. 5.6.7 grammar
    (day = 2DIGIT, year = 4DIGIT, hour = 2DIGIT, exactly one SP between parts). cache-tests
    freshness-expires-invalid-* require these malformed forms to be invalid."""
    assert parse_http_date(value) is None


def test_leap_second_is_rounded_down() -> None:
    """RFC 9111 sec. 4.2: "If a cache recipient's internal implementation of time has less
    resolution than the value of an HTTP-date, the recipient MUST internally represent a
    parsed Expires date as the nearest time equal to or earlier than the received value.\""""
    assert parse_http_date("Sat, 31 Dec 2016 23:59:60 GMT") == calendar.timegm(
        (2016, 12, 31, 23, 59, 59, 0, 0, 0)
    )


def test_surrounding_whitespace_is_not_part_of_the_value() -> None:
    """RFC 9110 sec. 5.5: leading and trailing whitespace is excluded from the field
    value."""
    assert parse_http_date("  Sun, 06 Nov 1994 08:49:37 GMT\t") == SUN_06_NOV_1994


def test_rfc850_two_digit_year_fifty_year_rule() -> None:
    """RFC 9110 sec. 5.6.7: "Recipients of a timestamp value in rfc850-date format, which uses
    a two-digit year, MUST interpret a timestamp that appears to be more than 50 years in the
    future as representing the most recent year in the past that had the same last two
    digits.\""""
    now = calendar.timegm((2026, 10, 3, 0, 0, 0, 0, 0, 0))
    in_2070 = parse_http_date("Friday, 06-Nov-70 08:49:37 GMT", now=now)
    assert in_2070 == calendar.timegm((2070, 11, 6, 8, 49, 37, 0, 0, 0))
    in_1980 = parse_http_date("Thursday, 06-Nov-80 08:49:37 GMT", now=now)
    assert in_1980 == calendar.timegm((1980, 11, 6, 8, 49, 37, 0, 0, 0))
    # near the end of a century a small two-digit year belongs to the next one
    late = calendar.timegm((2095, 1, 1, 0, 0, 0, 0, 0, 0))
    assert parse_http_date("Monday, 01-Jan-01 00:00:00 GMT", now=late) == calendar.timegm(
        (2101, 1, 1, 0, 0, 0, 0, 0, 0)
    )


def test_rfc850_without_now_uses_fixed_pivot() -> None:
    """No clock is read by the rules; without ``now`` years 00-69 are 20xx, 70-99 are 19xx."""
    assert parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT") == SUN_06_NOV_1994
    assert parse_http_date("Monday, 01-Jan-35 00:00:00 GMT") == calendar.timegm(
        (2035, 1, 1, 0, 0, 0, 0, 0, 0)
    )


def test_format_imf_fixdate() -> None:
    """RFC 9110 sec. 5.6.7: "a sender MUST generate timestamps in the IMF-fixdate format"
    (sub-second parts truncated toward the past)."""
    assert format_http_date(SUN_06_NOV_1994) == "Sun, 06 Nov 1994 08:49:37 GMT"
    assert format_http_date(SUN_06_NOV_1994 + 0.999) == "Sun, 06 Nov 1994 08:49:37 GMT"
    assert format_http_date(SUN_06_NOV_1994 + 1) == "Sun, 06 Nov 1994 08:49:38 GMT"
    assert format_http_date(0) == "Thu, 01 Jan 1970 00:00:00 GMT"
    # the per-second cache must not return a stale string for a different second
    assert format_http_date(SUN_06_NOV_1994) == "Sun, 06 Nov 1994 08:49:37 GMT"


@given(st.integers(min_value=0, max_value=253402300799))
def test_format_then_parse_round_trips(ts: int) -> None:
    """RFC 9110 sec. 5.6.7: IMF-fixdate is a fixed-length subset of the date and time
    specification of RFC 5322; what we generate, we parse back exactly."""
    assert parse_http_date(format_http_date(ts)) == ts


@given(st.text())
def test_parse_never_raises(text: str) -> None:
    """Robustness: a recipient must survive arbitrary field values; invalid -> None."""
    result = parse_http_date(text)
    assert result is None or isinstance(result, float)


@given(st.text(alphabet="SunMoTeWdhFrSaJbApyJlgOcNvD0123456789 ,:-GMT", max_size=40))
def test_parse_never_raises_on_date_like_text(text: str) -> None:
    """Robustness on near-miss inputs built from date characters."""
    result = parse_http_date(text)
    assert result is None or isinstance(result, float)
