"""HTTP-date parsing and formatting (RFC 9110 sec. 5.6.7). Pure: no clock reads.

Accepted forms (RFC 9110 sec. 5.6.7: "A recipient that parses a timestamp value in an HTTP
field MUST accept all three HTTP-date formats"):

* IMF-fixdate ``Sun, 06 Nov 1994 08:49:37 GMT`` (the preferred form),
* obsolete rfc850-date ``Sunday, 06-Nov-94 08:49:37 GMT``,
* obsolete asctime-date ``Sun Nov  6 08:49:37 1994`` (implicitly UTC).

Strictness follows RFC 9111 sec. 4.2 and the public cache conformance suite
(http-tests/cache-tests ``expires-freshness.mjs``):

* names of days and months and the ``GMT`` zone are matched case-insensitively
  ("a cache recipient SHOULD match the field value case-insensitively");
* any zone other than ``GMT`` is invalid ("SHOULD consider a date with a zone abbreviation
  other than "GMT" to be invalid"), so ``UTC`` is rejected;
* a two-digit year in the IMF form, a missing comma, doubled spaces, dashes in the IMF form,
  periods in the time and one-digit hours are all invalid;
* out-of-range fields (hour 24, 31 Feb...) are invalid. A leap second (``:60``) is accepted and
  represented as ``:59`` ("the nearest time equal to or earlier than the received value").

The weekday name must be a valid name but is not checked against the date (as most
implementations do). Invalid input gives ``None``; the parser never raises.
"""

from __future__ import annotations

import calendar
import re
import time
from functools import lru_cache

__all__ = ["format_http_date", "parse_http_date"]

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_NUM = {m.lower(): i + 1 for i, m in enumerate(_MONTHS)}

_DAY = "(?:mon|tue|wed|thu|fri|sat|sun)"
_LONG_DAY = "(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)"
_MON = "(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)"
_TIME = "([0-9]{2}):([0-9]{2}):([0-9]{2})"
_FLAGS = re.IGNORECASE | re.ASCII

# IMF-fixdate = day-name "," SP date1 SP time-of-day SP GMT ; date1 = day SP month SP year
_IMF_RE = re.compile(rf"{_DAY}, ([0-9]{{2}}) {_MON} ([0-9]{{4}}) {_TIME} GMT", _FLAGS)
# rfc850-date = day-name-l "," SP date2 SP time-of-day SP GMT ; date2 = day "-" month "-" 2DIGIT
_RFC850_RE = re.compile(rf"{_LONG_DAY}, ([0-9]{{2}})-{_MON}-([0-9]{{2}}) {_TIME} GMT", _FLAGS)
# asctime-date = day-name SP date3 SP time-of-day SP year
# date3 = month SP ( 2DIGIT / ( SP DIGIT ) )
_ASCTIME_RE = re.compile(rf"{_DAY} {_MON} ([0-9]{{2}}| [0-9]) {_TIME} ([0-9]{{4}})", _FLAGS)

_MAX_LEN = 64  # every valid HTTP-date is 24..33 characters long
_FIFTY_YEARS = 50 * 365.2425 * 86400


def _to_timestamp(
    year: int, month: int, day: int, hour: int, minute: int, second: int
) -> float | None:
    if year < 1 or not 1 <= day <= calendar.monthrange(year, month)[1]:
        return None
    if hour > 23 or minute > 59 or second > 60:
        return None
    if second == 60:  # leap second: nearest representable time not later than the value
        second = 59
    return float(calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)))


@lru_cache(maxsize=2048)
def _parse_cached(value: str) -> float | None:
    m = _IMF_RE.fullmatch(value)
    if m is not None:
        day, mon, year, hh, mm, ss = m.groups()
        return _to_timestamp(
            int(year), _MONTH_NUM[mon.lower()], int(day), int(hh), int(mm), int(ss)
        )
    m = _ASCTIME_RE.fullmatch(value)
    if m is not None:
        mon, day, hh, mm, ss, year = m.groups()
        return _to_timestamp(
            int(year), _MONTH_NUM[mon.lower()], int(day), int(hh), int(mm), int(ss)
        )
    return None


def _parse_rfc850(value: str, now: float | None) -> float | None:
    m = _RFC850_RE.fullmatch(value)
    if m is None:
        return None
    day, mon, yy, hh, mm, ss = m.groups()
    fields = (_MONTH_NUM[mon.lower()], int(day), int(hh), int(mm), int(ss))
    two = int(yy)
    if now is None:
        # No clock here (these rules never read one): fixed pivot 00-69 -> 20xx,
        # 70-99 -> 19xx, as nginx and most parsers do.
        return _to_timestamp(2000 + two if two < 70 else 1900 + two, *fields)
    # RFC 9110 sec. 5.6.7: "Recipients of a timestamp value in rfc850-date format, which
    # uses a two-digit year, MUST interpret a timestamp that appears to be more than 50
    # years in the future as representing the most recent year in the past that had the
    # same last two digits."
    this_year = time.gmtime(now).tm_year
    year = this_year - this_year % 100 + two
    ts = _to_timestamp(year, *fields)
    if ts is None:
        return None
    if ts - now > _FIFTY_YEARS:
        return _to_timestamp(year - 100, *fields)
    later = _to_timestamp(year + 100, *fields)
    if later is not None and later - now <= _FIFTY_YEARS:
        return later
    return ts


def parse_http_date(value: str, *, now: float | None = None) -> float | None:
    """Parse an HTTP-date (RFC 9110 sec. 5.6.7) into POSIX seconds, or ``None`` if invalid.

    ``now`` (POSIX seconds) is only used for the two-digit year of the obsolete rfc850 form
    (the 50-year rule of sec. 5.6.7); without it a fixed pivot is used (00-69 -> 2000-2069,
    70-99 -> 1970-1999). Leading/trailing whitespace around the field value is ignored.
    Never raises.
    """
    if not isinstance(value, str):
        return None
    value = value.strip(" \t")
    if not 20 <= len(value) <= _MAX_LEN:
        return None
    try:
        ts = _parse_cached(value)
        if ts is None and "-" in value:
            ts = _parse_rfc850(value, now)
        return ts
    except (ValueError, OverflowError):  # pragma: no cover - defensive; regexes bound input
        return None


# Hot path: the Date/Last-Modified we emit changes once a second, so keep the string for the
# current integer second. A tuple is replaced atomically, so concurrent readers are safe.
_last_formatted: tuple[int, str] = (-(2**62), "")


def format_http_date(ts: float) -> str:
    """Format POSIX seconds as an IMF-fixdate (RFC 9110 sec. 5.6.7), e.g.
    ``Sun, 06 Nov 1994 08:49:37 GMT``. Sub-second parts are truncated toward the past.

    The string for the most recent integer second is cached, so calling this for every
    response costs one comparison in the common case. Locale-independent.
    """
    global _last_formatted
    sec = int(ts // 1)
    cached = _last_formatted
    if cached[0] == sec:
        return cached[1]
    t = time.gmtime(sec)
    text = (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year:04d} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )
    _last_formatted = (sec, text)
    return text
