"""Range arithmetic (RFC 9110 sec. 14): ``parse_range``, ``slice_indexes``/``slice_bounds`` and
``parse_content_range`` against simple references, property-based (hypothesis).

The references are deliberately naive: a regular expression for the grammar (sec. 14.1.1,
14.4) and, for the selected bytes, the set of positions of a representation of ``length`` bytes
enumerated one by one (sec. 14.1.2). edgeproxy's documented choices the references share:

- syntactically invalid fields (any invalid range-spec, a last-pos below its first-pos, an
  unknown unit, no range-spec at all) are ignored (``None``: the whole 200, sec. 14.2 "MAY
  ignore");
- more than ``MAX_RANGES`` list members: ignored (abuse guard, sec. 14.2);
- empty list members are skipped (sec. 5.6.1: a recipient MUST accept empty elements);
- unsatisfiable members are dropped; none left -> ``UNSATISFIABLE`` (416, sec. 15.5.17);
- a suffix-range on an empty representation selects nothing (a 206 cannot express an empty
  range), so it counts as unsatisfiable.
"""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from edgeproxy.http.ranges import (
    MAX_RANGES,
    UNSATISFIABLE,
    parse_content_range,
    parse_range,
    slice_bounds,
    slice_indexes,
)

# ---- references ------------------------------------------------------------------------------

_SPEC = re.compile(r"([0-9]*)-([0-9]*)")


def _positions(spec_first: int | None, spec_last: int | None, length: int) -> list[int]:
    """The byte positions one range-spec selects, enumerated (sec. 14.1.2), for small lengths."""
    if spec_first is None:  # suffix-range: the last ``spec_last`` bytes
        assert spec_last is not None
        return [p for p in range(length) if p >= length - spec_last]
    return [p for p in range(length) if p >= spec_first and (spec_last is None or p <= spec_last)]


def reference_parse_range(value: str | None, length: int) -> list[tuple[int, int]] | str | None:
    """RFC 9110 sec. 14.1.1/14.1.2 the slow way (``length`` must be small)."""
    if not value:
        return None
    unit, sep, rest = value.partition("=")
    if not sep or unit.lower() != "bytes":
        return None
    members = [m.strip(" \t") for m in rest.split(",")]
    if len(members) > MAX_RANGES:
        return None
    specs = [m for m in members if m]
    if not specs:
        return None
    selected: list[tuple[int, int]] = []
    for spec in specs:
        match = _SPEC.fullmatch(spec)
        if match is None or not (match[1] or match[2]):
            return None
        if match[1]:
            first = int(match[1])
            last = int(match[2]) if match[2] else None
            if last is not None and last < first:
                return None  # sec. 14.1.1: invalid int-range: the field is invalid
            positions = _positions(first, last, length)
        else:
            positions = _positions(None, int(match[2]), length)
        if positions:
            assert positions == list(range(positions[0], positions[-1] + 1))
            selected.append((positions[0], positions[-1]))
    return selected or UNSATISFIABLE


def reference_content_range(value: str | None) -> tuple[int, int, int] | None:
    """``bytes FIRST-LAST/TOTAL`` with LAST < TOTAL and FIRST <= LAST (sec. 14.4)."""
    if not value:
        return None
    match = re.fullmatch(r"(?i:bytes) +([0-9]+)-([0-9]+)/([0-9]+)", value.strip(" "))
    if match is None:
        return None
    first, last, total = (int(g) for g in match.groups())
    if not first <= last < total:
        return None
    return first, last, total


# ---- strategies ------------------------------------------------------------------------------

_num = st.integers(min_value=0, max_value=80).map(str) | st.just("") | st.just("007")
_ows = st.sampled_from(["", " ", "\t", " \t "])


@st.composite
def range_spec(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["int", "open", "suffix", "garbage", "empty"]))
    if kind == "int":
        return f"{draw(_num)}-{draw(_num)}"
    if kind == "open":
        return f"{draw(_num)}-"
    if kind == "suffix":
        return f"-{draw(_num)}"
    if kind == "empty":
        return ""
    return draw(st.text(alphabet="0123456789-x", max_size=6))


@st.composite
def range_field(draw: st.DrawFn) -> str:
    unit = draw(st.sampled_from(["bytes", "bytes", "bytes", "BYTES", "Bytes", "items", ""]))
    specs = draw(st.lists(range_spec(), min_size=0, max_size=MAX_RANGES + 2))
    joined = ",".join(f"{draw(_ows)}{spec}{draw(_ows)}" for spec in specs)
    sep = draw(st.sampled_from(["=", "=", "=", ""]))
    return f"{unit}{sep}{joined}"


_lengths = st.integers(min_value=0, max_value=120)


# ---- parse_range -----------------------------------------------------------------------------


@given(range_field(), _lengths)
@settings(max_examples=600)
@example("bytes=0-0", 1)
@example("bytes=-0", 10)
@example("bytes=-5", 0)
@example("bytes=0-", 0)
@example("bytes=5-1", 10)
@example("bytes=,,", 10)
@example("bytes=-", 10)
@example("bytes=0-1,,2-3", 10)
@example("bytes=10-,0-0", 10)
def test_parse_range_matches_the_reference(value: str, length: int) -> None:
    assert parse_range(value, length) == reference_parse_range(value, length)


@given(st.text(alphabet="bytes=0123456789-,", max_size=30), _lengths)
@settings(max_examples=600)
def test_parse_range_on_arbitrary_ascii_text_matches_the_reference(value: str, length: int) -> None:
    assert parse_range(value, length) == reference_parse_range(value, length)


@given(st.text(alphabet=st.characters(codec="ascii"), max_size=40), _lengths)
@settings(max_examples=500)
def test_parse_range_never_raises_on_ascii(value: str, length: int) -> None:
    result = parse_range(value, length)
    assert result is None or result == UNSATISFIABLE or isinstance(result, list)


@given(range_field(), st.integers(min_value=1, max_value=10**12))
@settings(max_examples=500)
def test_selected_ranges_lie_inside_the_representation(value: str, length: int) -> None:
    result = parse_range(value, length)
    if isinstance(result, list):
        assert result  # never an empty list: that is UNSATISFIABLE
        for first, last in result:
            assert 0 <= first <= last < length


@given(
    st.integers(min_value=1, max_value=10**13),
    st.integers(min_value=0, max_value=10**13),
    st.integers(min_value=0, max_value=10**13),
)
def test_large_representation_single_ranges(length: int, a: int, b: int) -> None:
    """The forms the integration tests use, on lengths too large to enumerate."""
    first, last = min(a, b), max(a, b)
    expected = UNSATISFIABLE if first >= length else [(first, min(last, length - 1))]
    assert parse_range(f"bytes={first}-{last}", length) == expected
    expected_open = UNSATISFIABLE if first >= length else [(first, length - 1)]
    assert parse_range(f"bytes={first}-", length) == expected_open
    suffix = a
    expected_suffix = UNSATISFIABLE if suffix == 0 else [(max(0, length - suffix), length - 1)]
    assert parse_range(f"bytes=-{suffix}", length) == expected_suffix


@pytest.mark.parametrize(
    ("value", "length", "expected"),
    [
        (None, 10, None),
        ("", 10, None),
        ("bytes=0-4", 10, [(0, 4)]),
        ("bytes=9-9", 10, [(9, 9)]),  # the last byte
        ("bytes=9-", 10, [(9, 9)]),
        ("bytes=-1", 10, [(9, 9)]),
        ("bytes=-100", 10, [(0, 9)]),  # a suffix longer than the representation: all of it
        ("bytes=5-100", 10, [(5, 9)]),  # last-pos past the end: clipped (sec. 14.1.2)
        ("bytes=10-", 10, UNSATISFIABLE),
        ("bytes=10-20", 10, UNSATISFIABLE),
        ("bytes=-0", 10, UNSATISFIABLE),
        ("bytes=0-0,10-", 10, [(0, 0)]),  # unsatisfiable members are dropped
        ("bytes=5-1", 10, None),  # sec. 14.1.1: last-pos < first-pos is invalid, not 416
        ("bytes=x-1", 10, None),
        ("bytes 0-1", 10, None),
        ("items=0-1", 10, None),
        ("bytes=", 10, None),
        ("bytes=0-1;q=1", 10, None),
        ("bytes=" + ",".join(["0-0"] * (MAX_RANGES + 1)), 10, None),
        ("bytes=" + ",".join(["0-0"] * MAX_RANGES), 10, [(0, 0)] * MAX_RANGES),
    ],
)
def test_parse_range_examples(value: str | None, length: int, expected: object) -> None:
    assert parse_range(value, length) == expected


# Header values reach parse_range decoded as latin-1 (server.py on_header), so any byte
# 0x80-0xFF can appear. str.isdigit() is true for U+00B2/U+00B3/U+00B9 (superscripts), which
# int() refuses: such values must be treated as invalid (the whole 200, sec. 14.2), never
# raise (a 500). Python also refuses int() of more than 4300 digits (CVE-2020-10735
# guard), and 16 KiB of header section allows that many.


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("bytes=\xb2-", None),
        ("bytes=0-\xb9", None),
        ("bytes=-\xb3", None),
        ("bytes=0-" + "9" * 5000, [(0, 99)]),
        ("bytes=" + "9" * 5000 + "-", UNSATISFIABLE),
        ("bytes=-" + "9" * 5000, [(0, 99)]),
    ],
    ids=["sup2-first", "sup1-last", "sup3-suffix", "huge-last", "huge-first", "huge-suffix"],
)
def test_parse_range_odd_digits_never_raise(value: str, expected: object) -> None:
    assert parse_range(value, 100) == expected


@pytest.mark.parametrize(
    "value", ["bytes \xb2-3/10", "bytes 0-3/" + "9" * 5000], ids=["sup2", "huge-total"]
)
def test_parse_content_range_odd_digits_never_raise(value: str) -> None:
    assert parse_content_range(value) is None or isinstance(parse_content_range(value), tuple)


# ---- slices ----------------------------------------------------------------------------------


@st.composite
def object_and_range(draw: st.DrawFn) -> tuple[int, int, int, int]:
    slice_size = draw(st.integers(min_value=1, max_value=4 * 1024 * 1024))
    total = draw(st.integers(min_value=1, max_value=64 * slice_size))
    first = draw(st.integers(min_value=0, max_value=total - 1))
    last = draw(st.integers(min_value=first, max_value=total - 1))
    return slice_size, total, first, last


@given(object_and_range())
@settings(max_examples=600)
@example((1024 * 1024, 40 * 1024 * 1024, 7 * 1024 * 1024, 10 * 1024 * 1024 - 1))
@example((1024 * 1024, 40 * 1024 * 1024, 7 * 1024 * 1024 - 1, 7 * 1024 * 1024))
@example((1024 * 1024, 40 * 1024 * 1024 + 1, 40 * 1024 * 1024, 40 * 1024 * 1024))
@example((1, 1, 0, 0))
def test_slices_cover_a_range_exactly(case: tuple[int, int, int, int]) -> None:
    """The slices of a range: aligned, contiguous, inside the object, each touching the range,
    and the windows taken from them add up to exactly the range's bytes."""
    slice_size, total, first, last = case
    indexes = list(slice_indexes(first, last, slice_size))
    assert indexes == list(range(indexes[0], indexes[-1] + 1))
    bounds = [slice_bounds(i, slice_size, total) for i in indexes]
    for (a, b), index in zip(bounds, indexes, strict=True):
        assert a == index * slice_size  # aligned
        assert 0 <= a <= b < total
        assert b - a + 1 == slice_size or b == total - 1  # only the object's last is short
        assert a <= last and b >= first  # no slice fetched for nothing
    for (_, b), (a2, _) in itertools.pairwise(bounds):
        assert a2 == b + 1  # no gap, no overlap
    assert bounds[0][0] <= first and last <= bounds[-1][1]
    windows = [(max(first, a), min(last, b)) for a, b in bounds]
    assert sum(hi - lo + 1 for lo, hi in windows) == last - first + 1
    assert windows[0][0] == first and windows[-1][1] == last


@given(st.integers(min_value=1, max_value=2000), st.integers(min_value=1, max_value=300))
@settings(max_examples=500)
def test_slices_of_a_whole_object_partition_it(total: int, slice_size: int) -> None:
    """Byte by byte: every byte of the object is in exactly one slice, the one its position
    names, and a full GET (0..total-1) touches every slice once."""
    count = -(-total // slice_size)
    assert list(slice_indexes(0, total - 1, slice_size)) == list(range(count))
    owner = [-1] * total
    for index in range(count):
        a, b = slice_bounds(index, slice_size, total)
        for p in range(a, b + 1):
            assert owner[p] == -1
            owner[p] = index
    assert owner == [p // slice_size for p in range(total)]


@given(object_and_range())
def test_slice_indexes_match_a_byte_by_byte_reference(case: tuple[int, int, int, int]) -> None:
    slice_size, _total, first, last = case
    if last - first > 5000:
        last = first + 5000
    expected = sorted({p // slice_size for p in range(first, last + 1)})
    assert list(slice_indexes(first, last, slice_size)) == expected


# ---- Content-Range ---------------------------------------------------------------------------


@given(st.integers(min_value=1, max_value=10**15), st.data())
def test_content_range_round_trip(total: int, data: st.DataObject) -> None:
    first = data.draw(st.integers(min_value=0, max_value=total - 1))
    last = data.draw(st.integers(min_value=first, max_value=total - 1))
    assert parse_content_range(f"bytes {first}-{last}/{total}") == (first, last, total)


@given(st.text(alphabet="bytesBYTES 0123456789-/*", max_size=24))
@settings(max_examples=800)
@example("bytes 0-0/1")
@example("bytes 0-1/1")
@example("bytes 2-1/5")
@example("bytes */5")
@example("bytes 0-4/*")
@example("Bytes 0-4/5")
@example("bytes  0-4/5 ")
def test_content_range_matches_the_reference(value: str) -> None:
    assert parse_content_range(value) == reference_content_range(value)


@pytest.mark.parametrize(
    "value",
    [None, "", "bytes */100", "bytes 0-99/*", "bytes 5-4/100", "bytes 0-100/100", "items 0-1/2"],
)
def test_content_range_rejects(value: str | None) -> None:
    assert parse_content_range(value) is None
