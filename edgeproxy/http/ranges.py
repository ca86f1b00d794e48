"""Range requests (RFC 9110 sec. 14): parsing a ``Range`` field against a representation length.

Contract: :func:`parse_range` is pure. It returns ``None`` when the field must be ignored (absent,
not a ``bytes`` range, or syntactically invalid: RFC 9110 sec. 14.2 "a server MAY ignore"), the
constant :data:`UNSATISFIABLE` (answer 416 with ``Content-Range: bytes */LEN``), or a list of
``(first, last)`` inclusive byte positions clipped to the length.
"""

from __future__ import annotations

import re
from typing import Final

UNSATISFIABLE: Final = "unsatisfiable"

# ASCII digits only (str.isdigit() accepts superscripts that int() refuses); more than 18
# digits is beyond any real length: treated as "huge" instead of parsed (int() caps at 4300)
_DIGITS = re.compile(r"[0-9]{1,18}")
_HUGE = re.compile(r"[0-9]{19,}")
_HUGE_VALUE = 10**18

MAX_RANGES = 16


def parse_range(value: str | None, length: int) -> list[tuple[int, int]] | str | None:
    """Parse ``Range: bytes=...`` (RFC 9110 sec. 14.1.2) for a representation of ``length``."""
    if not value:
        return None
    unit, sep, spec = value.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    result: list[tuple[int, int]] = []
    any_valid = False
    parts = spec.split(",")
    if len(parts) > MAX_RANGES:
        return None  # too many ranges: ignore (sec. 14.2 allows it; guards against abuse)
    for part in parts:
        part = part.strip(" \t")
        if not part:
            continue
        first_s, dash, last_s = part.partition("-")
        if not dash:
            return None
        first_s, last_s = first_s.strip(), last_s.strip()
        if first_s:
            first_n, last_n = _number(first_s), _number(last_s) if last_s else None
            if first_n is None or (last_s and last_n is None):
                return None
            first = first_n
            last = last_n if last_n is not None else length - 1
            if last_s and last < first:
                return None  # invalid range-spec: the whole field is invalid
            any_valid = True
            if first >= length:
                continue  # unsatisfiable part
            result.append((first, min(last, length - 1)))
        else:
            suffix_n = _number(last_s)
            if suffix_n is None:
                return None
            suffix = suffix_n
            any_valid = True
            if suffix == 0 or length == 0:
                continue
            result.append((max(0, length - suffix), length - 1))
    if not any_valid:
        return None
    if not result:
        return UNSATISFIABLE
    return result


def _number(text: str) -> int | None:
    """A 1*DIGIT value (RFC 9110 sec. 14.1.1); None if not ASCII digits."""
    if _DIGITS.fullmatch(text):
        return int(text)
    if _HUGE.fullmatch(text):
        return _HUGE_VALUE
    return None


def slice_indexes(first: int, last: int, slice_size: int) -> range:
    """Indexes of the aligned slices covering bytes ``first..last`` (inclusive)."""
    return range(first // slice_size, last // slice_size + 1)


def slice_bounds(index: int, slice_size: int, total: int) -> tuple[int, int]:
    """Inclusive byte positions of slice ``index`` of an object of ``total`` bytes."""
    first = index * slice_size
    return first, min(first + slice_size, total) - 1


def parse_content_range(value: str | None) -> tuple[int, int, int] | None:
    """``bytes FIRST-LAST/TOTAL`` (RFC 9110 sec. 14.4) -> the three numbers; else None."""
    if not value:
        return None
    unit, _, rest = value.strip().partition(" ")
    if unit.lower() != "bytes":
        return None
    span, _, total_s = rest.strip().partition("/")
    first_s, dash, last_s = span.partition("-")
    if not dash or not all(_DIGITS.fullmatch(x) for x in (first_s, last_s, total_s)):
        return None
    first, last, total = int(first_s), int(last_s), int(total_s)
    if last < first or last >= total:
        return None
    return first, last, total
