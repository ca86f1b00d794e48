"""Range requests and slices (issue 4), end to end.

Against the real S3 origin (SeaweedFS, SigV4) through the counting relay: a 40 MiB object under
an audio policy with ``slice_size = "1MiB"`` and ``slice_threshold = "8MiB"``; 500 random
ranges compared byte for byte with the source, cold and warm; only the slices a range touches
are fetched; 206/416/200 answers per RFC 9110 sec. 14 and 15.5.17; If-Range (sec. 13.1.5);
HEAD consistent with GET.

Against scripted origins (tests/support/origin.py style, plain HTTP parents): the object
changing between slices (never a mix of two versions), a parent that ignores Range, a parent
that answers slice requests with the whole 200, and ranges answered from a growing fill.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDictProxy

from edgeproxy.http.dates import format_http_date
from tests.conftest import BUCKET, CATALOG, s3_upstream

pytestmark = pytest.mark.integration

KiB = 1024
MiB = 1024 * KiB
BIG_KEY = "audio/big-40m.mp3"
BIG_PATH = "/" + BIG_KEY
LEN = 40 * MiB
SLICE = MiB
SMALL_PATH = "/small/one-kib.bin"

POLICIES: list[dict[str, Any]] = [
    {
        "name": "audio",
        "path": "/audio/*",
        "default_ttl": "1d",
        "max_ttl": "365d",
        "slice_size": "1MiB",
        "slice_threshold": "8MiB",
    },
    {
        "name": "images",
        "path": "/images/*",
        "default_ttl": "7d",
        "max_ttl": "365d",
        "compress": True,
    },
    {"name": "default", "path": "*", "default_ttl": "1h", "max_ttl": "1d"},
]

# scripted origins: small slices, so objects stay small and fast
S_SLICE = 64 * KiB
S_LEN = 16 * S_SLICE  # 1 MiB: 16 slices, over the threshold
SCRIPTED_POLICIES: list[dict[str, Any]] = [
    {
        "name": "media",
        "path": "/media/*",
        "default_ttl": "1d",
        "max_ttl": "365d",
        "slice_size": "64KiB",
        "slice_threshold": "256KiB",
    },
    {"name": "default", "path": "*", "default_ttl": "1h", "max_ttl": "1d"},
]

VOLATILE = {"date", "age", "cache-status"}


@dataclass(frozen=True)
class Big:
    data: bytes
    etag: str


@pytest.fixture(scope="module")
def big(seaweed: Any) -> Big:
    """The 40 MiB object, uploaded once for the module."""
    data = random.Random(4040).randbytes(LEN)
    etag = seaweed.put_object(BUCKET, BIG_KEY, data, "audio/mpeg")
    return Big(data, etag)


@dataclass
class Answer:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


async def fetch(
    session: aiohttp.ClientSession,
    url: str,
    range_value: str | None = None,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
) -> Answer:
    all_headers = dict(headers or {})
    if range_value is not None:
        all_headers["Range"] = range_value
    async with session.request(method, url, headers=all_headers) as r:
        body = await r.read()
        return Answer(r.status, r.headers, body)


def check_206(answer: Answer, data: bytes, first: int, last: int, what: str = "") -> None:
    total = len(data)
    assert answer.status == 206, (what, answer.status, answer.body[:200])
    assert answer.headers["Content-Range"] == f"bytes {first}-{last}/{total}", what
    assert int(answer.headers["Content-Length"]) == last - first + 1, what
    assert len(answer.body) == last - first + 1, what
    assert answer.body == data[first : last + 1], f"{what}: bytes differ"


def check_whole(answer: Answer, data: bytes, what: str = "") -> None:
    assert answer.status == 200, (what, answer.status, answer.body[:200])
    assert "Content-Range" not in answer.headers, what
    assert int(answer.headers["Content-Length"]) == len(data), what
    assert answer.body == data, f"{what}: bytes differ"


def check_416(answer: Answer, total: int, what: str = "") -> None:
    assert answer.status == 416, (what, answer.status, answer.body[:200])
    assert answer.headers["Content-Range"] == f"bytes */{total}", what
    assert answer.body == b"", what


def upstream_ranges(relay: Any, path: str = BIG_PATH) -> list[str | None]:
    """The Range header of every upstream request for ``path``, in order."""
    target = f"/{BUCKET}{path}"
    return [s.headers.get("Range") for s in relay.seen if s.target.partition("?")[0] == target]


def aligned(index: int, slice_size: int = SLICE, total: int = LEN) -> str:
    first = index * slice_size
    return f"bytes={first}-{min(first + slice_size, total) - 1}"


def random_ranges(seed: int, count: int, total: int = LEN) -> list[tuple[str, int, int]]:
    """``(Range value, first, last)``: boundary-crossing, inside one slice, single bytes, the
    last byte in its three spellings, suffixes, open-ended, clipped last-pos, the start."""
    rng = random.Random(seed)
    out: list[tuple[str, int, int]] = []
    kinds = ["cross", "cross", "inside", "inside", "single", "last", "suffix", "open"]
    kinds += ["clipped", "start", "multi-slice"]
    for _ in range(count):
        kind = rng.choice(kinds)
        if kind == "cross":
            boundary = rng.randrange(1, total // SLICE) * SLICE
            first = boundary - rng.randint(1, 200 * KiB)
            last = min(total - 1, boundary + rng.randint(0, 200 * KiB))
            out.append((f"bytes={first}-{last}", first, last))
        elif kind == "multi-slice":
            first = rng.randrange(0, total - 3 * SLICE)
            last = first + rng.randint(SLICE, 3 * SLICE)
            out.append((f"bytes={first}-{last}", first, last))
        elif kind == "inside":
            first = rng.randrange(0, total)
            last = min(total - 1, first + rng.randint(0, 64 * KiB))
            out.append((f"bytes={first}-{last}", first, last))
        elif kind == "single":
            p = rng.choice([rng.randrange(0, total), rng.randrange(1, total // SLICE) * SLICE])
            out.append((f"bytes={p}-{p}", p, p))
        elif kind == "last":
            value = rng.choice(
                [f"bytes={total - 1}-{total - 1}", f"bytes={total - 1}-", "bytes=-1"]
            )
            out.append((value, total - 1, total - 1))
        elif kind == "suffix":
            n = rng.choice([rng.randint(1, 2 * SLICE), SLICE, 65536])
            out.append((f"bytes=-{n}", max(0, total - n), total - 1))
        elif kind == "open":
            first = rng.randrange(total - 2 * SLICE, total)
            out.append((f"bytes={first}-", first, total - 1))
        elif kind == "clipped":
            first = rng.randrange(total - SLICE, total)
            last = total + rng.randint(0, 10**9)
            out.append((f"bytes={first}-{last}", first, total - 1))
        else:  # start
            last = rng.randint(0, 2 * SLICE)
            out.append((f"bytes=0-{last}", 0, last))
    return out


def node_url(node: Any, path: str = BIG_PATH) -> str:
    return f"http://127.0.0.1:{node.port}{path}"


async def s3_node(make_node: Any, relay: Any) -> Any:
    return await make_node(s3_upstream(relay.endpoint), policies=POLICIES)


# ---- 500 random ranges, cold and warm --------------------------------------------------------


async def test_500_random_ranges_cold_then_warm(make_node, relay, client, big) -> None:
    node = await s3_node(make_node, relay)
    url = node_url(node)
    ranges = random_ranges(seed=500, count=500)

    # the very first request finds nothing: probe + slices, answered while they arrive
    value, first, last = ranges[0]
    answer = await fetch(client, url, value)
    check_206(answer, big.data, first, last, value)
    assert "sliced" in answer.headers["Cache-Status"]
    assert upstream_ranges(relay)[0] == "bytes=0-0"

    for value, first, last in ranges[1:]:  # cold: slices fetched as ranges touch them
        check_206(await fetch(client, url, value), big.data, first, last, value)
    fetched = upstream_ranges(relay)
    assert None not in fetched, "the whole object was fetched"
    slices = fetched[1:]
    assert len(slices) == len(set(slices)), "a slice was fetched twice"
    touched = {i for _, f, la in ranges for i in range(f // SLICE, la // SLICE + 1)}
    assert set(slices) == {aligned(i) for i in touched}

    before = len(relay.seen)
    for value, first, last in ranges:  # warm: every byte from the cache
        answer = await fetch(client, url, value)
        check_206(answer, big.data, first, last, value)
        assert answer.headers["Cache-Status"].startswith("edge-t; hit"), value
    assert len(relay.seen) == before


async def test_cold_ranges_on_a_fresh_node_concurrently(make_node, relay, client, big) -> None:
    """A second node, empty cache: 50 ranges, 8 at a time, after one range made the manifest.
    Each slice reaches the origin once although several requests want it at once."""
    node = await s3_node(make_node, relay)
    url = node_url(node)
    ranges = random_ranges(seed=50, count=50)
    value, first, last = ranges[0]
    check_206(await fetch(client, url, value), big.data, first, last, value)

    gate = asyncio.Semaphore(8)

    async def one(value: str, first: int, last: int) -> None:
        async with gate:
            check_206(await fetch(client, url, value), big.data, first, last, value)

    await asyncio.gather(*(one(*r) for r in ranges[1:]))
    fetched = upstream_ranges(relay)
    assert fetched[0] == "bytes=0-0" and None not in fetched
    assert len(fetched[1:]) == len(set(fetched[1:])), "a slice was fetched twice"


async def test_concurrent_first_requests_of_an_unknown_sliced_object(
    make_node, relay, client, big
) -> None:
    """Requests that arrive while the probe is in flight follow it (single flight on the object
    key); each must still get its own range, and a full GET the whole object."""
    node = await s3_node(make_node, relay)
    url = node_url(node)
    ranges = random_ranges(seed=7, count=8)
    tasks = [fetch(client, url, value) for value, _, _ in ranges]
    tasks.append(fetch(client, url))
    answers = await asyncio.gather(*tasks)
    wrong = []
    for (value, first, last), answer in zip(ranges, answers, strict=False):
        try:
            check_206(answer, big.data, first, last, value)
        except AssertionError:
            wrong.append(f"{value}: {answer.status} {answer.headers.get('Content-Range')}")
    try:
        check_whole(answers[-1], big.data, "full GET during the probe")
    except AssertionError:
        length = answers[-1].headers.get("Content-Length")
        wrong.append(f"full GET: {answers[-1].status} Content-Length {length}")
    assert not wrong, wrong


async def test_requests_during_a_slow_probe_get_their_bytes(make_node, origin, client) -> None:
    """Deterministic: the probe takes 0.3 s; a full GET and a range arrive meanwhile and
    follow it. The full GET must not be an empty 200 (Content-Length: 0), the range not a
    416 ``bytes */0``."""
    body = random.Random(3).randbytes(S_LEN)

    async def slow_probe(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Range") == "bytes=0-0":
            await asyncio.sleep(0.3)
        return range_response(request, body, {"ETag": '"x"', "Content-Type": "audio/mpeg"})

    origin.routes["/media/probed.mp3"] = slow_probe
    node = await make_node({"parents": [origin.endpoint]}, policies=SCRIPTED_POLICIES)
    url = node_url(node, "/media/probed.mp3")
    leader = asyncio.ensure_future(fetch(client, url, "bytes=0-9"))
    await asyncio.sleep(0.05)
    full, ranged = await asyncio.gather(fetch(client, url), fetch(client, url, "bytes=100-199"))
    check_206(await leader, body, 0, 9, "leader")
    problems = []
    if full.status != 200 or full.body != body:
        problems.append(f"full GET: {full.status}, {len(full.body)} of {len(body)} bytes")
    if ranged.status != 206 or ranged.body != body[100:200]:
        problems.append(f"range: {ranged.status} {ranged.headers.get('Content-Range')}")
    assert not problems, problems


# ---- which slices reach the origin -----------------------------------------------------------


async def test_a_range_in_slices_7_to_9_fetches_only_those(make_node, relay, client, big) -> None:
    node = await s3_node(make_node, relay)
    url = node_url(node)
    first, last = 7 * SLICE + 12345, 9 * SLICE + 999
    check_206(await fetch(client, url, f"bytes={first}-{last}"), big.data, first, last)
    assert upstream_ranges(relay) == ["bytes=0-0", aligned(7), aligned(8), aligned(9)]
    # the same range again, and one inside slice 8: nothing more upstream
    check_206(await fetch(client, url, f"bytes={first}-{last}"), big.data, first, last)
    check_206(await fetch(client, url, "bytes=8500000-8500100"), big.data, 8500000, 8500100)
    assert len(upstream_ranges(relay)) == 4


async def test_a_full_get_of_a_sliced_object_streams_its_slices(
    make_node, relay, client, big
) -> None:
    node = await s3_node(make_node, relay)
    url = node_url(node)
    check_206(await fetch(client, url, "bytes=-1"), big.data, LEN - 1, LEN - 1)
    answer = await fetch(client, url)
    check_whole(answer, big.data, "full GET")
    assert answer.headers["ETag"] == big.etag
    fetched = upstream_ranges(relay)
    assert fetched[0] == "bytes=0-0"
    assert sorted(fetched[1:]) == sorted(aligned(i) for i in range(LEN // SLICE))
    assert len(fetched) == 1 + LEN // SLICE  # every slice once, never the whole object
    before = len(relay.seen)
    check_whole(await fetch(client, url), big.data, "full GET, warm")
    assert len(relay.seen) == before


# ---- single ranges, 416, invalid syntax, several ranges --------------------------------------


EDGE_CASES = [
    ("bytes=0-0", 0, 0),
    ("bytes=5-5", 5, 5),
    (f"bytes={SLICE - 1}-{SLICE}", SLICE - 1, SLICE),  # one byte each side of a boundary
    (f"bytes={LEN - 1}-{LEN - 1}", LEN - 1, LEN - 1),
    (f"bytes={LEN - 1}-", LEN - 1, LEN - 1),
    ("bytes=-1", LEN - 1, LEN - 1),
    ("bytes=-65536", LEN - 65536, LEN - 1),
    (f"bytes=-{LEN + 5}", 0, LEN - 1),  # a suffix longer than the object: all of it
    (f"bytes={LEN - 100}-", LEN - 100, LEN - 1),
    (f"bytes={LEN - 10}-{10 * LEN}", LEN - 10, LEN - 1),  # clipped last-pos
    ("bytes=0-", 0, LEN - 1),
]


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
async def test_single_range_forms(make_node, relay, client, big, warm) -> None:
    node = await s3_node(make_node, relay)
    url = node_url(node)
    if warm:
        check_whole(await fetch(client, url, "bytes=0-0,1-1"), big.data)  # makes all slices
    for value, first, last in EDGE_CASES:
        check_206(await fetch(client, url, value), big.data, first, last, value)


UNSATISFIABLE = [f"bytes={LEN}-", f"bytes={LEN}-{LEN + 5}", f"bytes={10 * LEN}-", "bytes=-0"]


@pytest.mark.parametrize("value", UNSATISFIABLE)
async def test_416_on_a_sliced_object(make_node, relay, client, big, value) -> None:
    node = await s3_node(make_node, relay)
    url = node_url(node)
    check_416(await fetch(client, url, value), LEN, value + " (cold)")
    check_416(await fetch(client, url, value), LEN, value + " (warm)")
    assert upstream_ranges(relay) == ["bytes=0-0"]  # the probe, no slice


async def test_416_on_a_whole_object(make_node, relay, client) -> None:
    node = await s3_node(make_node, relay)
    url = node_url(node, SMALL_PATH)
    data = CATALOG[SMALL_PATH[1:]][1]
    check_416(await fetch(client, url, "bytes=1024-"), len(data), "cold")
    for value in ("bytes=1024-", "bytes=5000-6000", "bytes=-0"):
        check_416(await fetch(client, url, value), len(data), value)
    check_206(await fetch(client, url, "bytes=1023-"), data, 1023, 1023)


INVALID = ["bytes=5-1", "bytes=abc", "items=0-5", "bytes=0-5;x", "bytes", "bytes=-", "bytes=1-2-3"]


@pytest.mark.parametrize("value", INVALID)
async def test_invalid_range_syntax_gets_the_whole_200(make_node, relay, client, value) -> None:
    node = await s3_node(make_node, relay)
    url = node_url(node, SMALL_PATH)
    data = CATALOG[SMALL_PATH[1:]][1]
    check_whole(await fetch(client, url, value), data, value + " (cold)")
    check_whole(await fetch(client, url, value), data, value + " (warm)")


@pytest.mark.parametrize("value", ["bytes=5-1", "bytes=x-"])
async def test_invalid_range_on_a_sliced_object_gets_the_whole_200(
    make_node, relay, client, big, value
) -> None:
    node = await s3_node(make_node, relay)
    check_whole(await fetch(client, node_url(node), value), big.data, value)


# RFC 9110 sec. 14.2: a server MAY ignore the Range header field. edgeproxy's documented choice
# for several satisfiable ranges is to ignore it: the whole 200, never multipart/byteranges.
MULTI = ["bytes=0-0,5-5", "bytes=0-99,200-299,-1", "bytes=1000-1010,-10"]


@pytest.mark.parametrize("value", MULTI)
async def test_several_ranges_get_the_whole_200(make_node, relay, client, big, value) -> None:
    node = await s3_node(make_node, relay)
    small = CATALOG[SMALL_PATH[1:]][1]
    for _ in range(2):  # cold, warm
        answer = await fetch(client, node_url(node, SMALL_PATH), value)
        check_whole(answer, small, value)
        assert "multipart" not in answer.headers.get("Content-Type", "")
        answer = await fetch(client, node_url(node), value)
        check_whole(answer, big.data, value)
        assert answer.headers["Content-Type"] == "audio/mpeg"


async def test_one_satisfiable_member_of_several_gets_a_206(make_node, relay, client, big) -> None:
    """Unsatisfiable members of a range set are dropped (sec. 14.1.1); one left: a 206."""
    node = await s3_node(make_node, relay)
    value = f"bytes=10-20,{LEN}-"
    check_206(await fetch(client, node_url(node), value), big.data, 10, 20, value)


# ---- If-Range (RFC 9110 sec. 13.1.5) ---------------------------------------------------------


async def test_if_range_with_etags_on_a_sliced_object(make_node, relay, client, big) -> None:
    node = await s3_node(make_node, relay)
    url = node_url(node)
    assert big.etag.startswith('"'), big.etag  # SeaweedFS's ETag is strong
    check_206(await fetch(client, url, "bytes=0-0"), big.data, 0, 0)  # manifest
    rng = f"bytes={SLICE - 10}-{SLICE + 10}"
    check_206(
        await fetch(client, url, rng, headers={"If-Range": big.etag}),
        big.data,
        SLICE - 10,
        SLICE + 10,
        "If-Range: the current strong ETag",
    )
    check_whole(
        await fetch(client, url, rng, headers={"If-Range": '"another-version"'}),
        big.data,
        "If-Range: another ETag",
    )
    check_whole(
        await fetch(client, url, rng, headers={"If-Range": "W/" + big.etag}),
        big.data,
        "If-Range: a weak ETag never matches (strong comparison)",
    )


async def test_if_range_with_etags_on_a_whole_object(make_node, relay, client) -> None:
    node = await s3_node(make_node, relay)
    url = node_url(node, SMALL_PATH)
    data = CATALOG[SMALL_PATH[1:]][1]
    etag = (await fetch(client, url)).headers["ETag"]
    check_206(await fetch(client, url, "bytes=10-19", headers={"If-Range": etag}), data, 10, 19)
    check_whole(await fetch(client, url, "bytes=10-19", headers={"If-Range": '"nope"'}), data)
    check_whole(await fetch(client, url, "bytes=10-19", headers={"If-Range": "W/" + etag}), data)


async def test_if_range_on_a_cold_object_is_never_a_wrong_partial(
    make_node, relay, client, big
) -> None:
    """No cached copy yet: a matching If-Range may be answered 206 or 200 (Range may be
    ignored); a non-matching one must be the whole 200."""
    node = await s3_node(make_node, relay)
    url = node_url(node, SMALL_PATH)
    data = CATALOG[SMALL_PATH[1:]][1]
    answer = await fetch(client, url, "bytes=10-19", headers={"If-Range": '"nope"'})
    check_whole(answer, data, "cold, another ETag")
    node2 = await s3_node(make_node, relay)
    answer = await fetch(client, node_url(node2), "bytes=10-19", headers={"If-Range": big.etag})
    if answer.status == 206:
        check_206(answer, big.data, 10, 19, "cold, matching ETag")
    else:
        check_whole(answer, big.data, "cold, matching ETag")


async def test_conditional_get_on_a_sliced_object_is_a_304(make_node, relay, client, big) -> None:
    """RFC 9110 sec. 13.2.2: If-None-Match is evaluated before Range; a match is a 304, as it
    is for a whole entry (Node._serve_entry)."""
    node = await s3_node(make_node, relay)
    url = node_url(node)
    check_206(await fetch(client, url, "bytes=0-0"), big.data, 0, 0)  # manifest
    answers = [
        await fetch(client, url, headers={"If-None-Match": big.etag}),
        await fetch(client, url, "bytes=5-9", headers={"If-None-Match": big.etag}),
    ]
    assert [(a.status, len(a.body)) for a in answers] == [(304, 0), (304, 0)]


# ---- HEAD with Range -------------------------------------------------------------------------


def comparable(headers: CIMultiDictProxy[str]) -> list[tuple[str, str]]:
    return sorted((k.lower(), v) for k, v in headers.items() if k.lower() not in VOLATILE)


HEAD_CASES = [
    "bytes=100-199",
    f"bytes={SLICE - 1}-{SLICE}",
    "bytes=-1",
    f"bytes={LEN}-",
    "bytes=5-1",
    "bytes=0-0,9-9",
    None,
]


@pytest.mark.parametrize("path", [BIG_PATH, SMALL_PATH], ids=["sliced", "whole"])
async def test_head_with_range_is_consistent_with_get(make_node, relay, client, big, path) -> None:
    node = await s3_node(make_node, relay)
    url = node_url(node, path)
    total = LEN if path == BIG_PATH else len(CATALOG[SMALL_PATH[1:]][1])
    # cold HEAD with Range first (the probe answers a HEAD too)
    first_head = await fetch(client, url, "bytes=0-9", method="HEAD")
    assert first_head.status == 206 and first_head.body == b""
    assert first_head.headers["Content-Range"] == f"bytes 0-9/{total}"
    for value in HEAD_CASES:
        value = value.replace(str(LEN), str(total)) if value else value
        get = await fetch(client, url, value)
        head = await fetch(client, url, value, method="HEAD")
        assert head.status == get.status, value
        assert head.body == b"", value
        assert comparable(head.headers) == comparable(get.headers), value


# ---- compression never applies to ranges -----------------------------------------------------


async def test_ranges_of_a_compressible_object_are_identity(make_node, relay, client) -> None:
    node = await s3_node(make_node, relay)
    key = next(k for k, (ctype, _) in CATALOG.items() if k.startswith("images/"))
    data = CATALOG[key][1]
    url = node_url(node, "/" + key)
    for _ in range(2):  # cold, warm
        answer = await fetch(
            client, url, "bytes=10-99", headers={"Accept-Encoding": "br, gzip, deflate"}
        )
        check_206(answer, data, 10, 99)
        assert answer.headers.get("Content-Encoding", "identity") == "identity"


# ---- scripted origins ------------------------------------------------------------------------


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_RANGE = re.compile(r"bytes=(\d+)-(\d+)?$")


def range_response(
    request: web.Request, body: bytes, headers: dict[str, str], honour_range: bool = True
) -> web.Response:
    """A minimal origin: one ``bytes=a-b`` / ``bytes=a-`` range -> 206, else the whole 200."""
    value = request.headers.get("Range")
    match = _RANGE.match(value) if value and honour_range else None
    if match is not None:
        first = int(match[1])
        last = min(int(match[2]) if match[2] else len(body) - 1, len(body) - 1)
        if first >= len(body):
            return web.Response(
                status=416, headers={**headers, "Content-Range": f"bytes */{len(body)}"}
            )
        return web.Response(
            status=206,
            body=body[first : last + 1],
            headers={**headers, "Content-Range": f"bytes {first}-{last}/{len(body)}"},
        )
    return web.Response(body=body, headers=headers)


@dataclass
class Versioned:
    """An object whose ETag and content change after ``switch_after`` requests."""

    versions: list[tuple[str, bytes]]
    switch_after: int
    ranges: list[str | None] = field(default_factory=list)

    @property
    def current(self) -> tuple[str, bytes]:
        return self.versions[0 if len(self.ranges) <= self.switch_after else 1]

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        self.ranges.append(request.headers.get("Range"))
        etag, body = self.current
        headers = {"ETag": etag, "Content-Type": "audio/mpeg", "Cache-Control": "max-age=3600"}
        return range_response(request, body, headers)


def versions(length_2: int = S_LEN) -> list[tuple[str, bytes]]:
    return [
        ('"v1"', random.Random(1).randbytes(S_LEN)),
        ('"v2"', random.Random(2).randbytes(length_2)),
    ]


async def fetch_or_cut(session: aiohttp.ClientSession, url: str, value: str) -> Answer | None:
    """The answer, or None when the node cut the connection (an incomplete body)."""
    try:
        return await fetch(session, url, value)
    except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError):
        return None


def one_version(answer: Answer, vs: list[tuple[str, bytes]], first: int, last: int) -> int:
    """Which version the (complete) answer is entirely from; fails on a mix."""
    for n, (etag, body) in enumerate(vs):
        if answer.body == body[first : last + 1]:
            assert answer.headers.get("ETag") in (None, etag), "body of one version, ETag of other"
            return n
    raise AssertionError(f"a mix of two versions ({len(answer.body)} bytes)")


@pytest.mark.parametrize("length_2", [S_LEN, S_LEN + 1000], ids=["same-length", "new-length"])
async def test_origin_changes_during_a_sliced_answer(make_node, origin, client, length_2) -> None:
    """The object changes after the probe and two slices: the third slice is of another
    version. The client never gets a complete mixed answer (the node cuts the connection), and
    the next request is entirely of the new version."""
    vs = versions(length_2)
    script = Versioned(vs, switch_after=3)  # probe, slice 0, slice 1; then v2
    origin.routes["/media/track.mp3"] = script
    node = await make_node({"parents": [origin.endpoint]}, policies=SCRIPTED_POLICIES)
    url = node_url(node, "/media/track.mp3")
    first, last = 100, 4 * S_SLICE - 100  # slices 0-3
    answer = await fetch_or_cut(client, url, f"bytes={first}-{last}")
    assert answer is None or one_version(answer, vs, first, last) == 0
    assert script.ranges[:3] == [
        "bytes=0-0",
        aligned(0, S_SLICE, S_LEN),
        aligned(1, S_SLICE, S_LEN),
    ]

    new_body = vs[1][1]
    for value, f, la in [
        (f"bytes={first}-{last}", first, last),
        (f"bytes={first}-{last}", first, last),  # warm
        ("bytes=0-", 0, len(new_body) - 1),
        ("bytes=-10", len(new_body) - 10, len(new_body) - 1),
    ]:
        answer = await fetch(client, url, value)
        check_206(answer, new_body, f, la, value)
        assert answer.headers["ETag"] == '"v2"'
    check_whole(await fetch(client, url), new_body, "full GET after the change")


async def test_origin_changes_between_requests_drops_stale_slices(
    make_node, origin, client
) -> None:
    """Slices 0-3 cached as v1; the origin switches to v2. A range over slices 2-5 finds v1
    slices in the cache and v2 upstream: cut, never mixed. Afterwards every byte is v2, even
    those of slices 0-3 that were cached as v1."""
    vs = versions()
    script = Versioned(vs, switch_after=10**9)
    origin.routes["/media/track.mp3"] = script
    node = await make_node({"parents": [origin.endpoint]}, policies=SCRIPTED_POLICIES)
    url = node_url(node, "/media/track.mp3")
    check_206(await fetch(client, url, f"bytes=0-{4 * S_SLICE - 1}"), vs[0][1], 0, 4 * S_SLICE - 1)
    script.switch_after = len(script.ranges)  # from now on: v2

    first, last = 2 * S_SLICE + 7, 6 * S_SLICE - 7
    answer = await fetch_or_cut(client, url, f"bytes={first}-{last}")
    assert answer is None or one_version(answer, vs, first, last) in (0, 1)

    v2 = vs[1][1]
    for value, f, la in [
        (f"bytes={first}-{last}", first, last),
        (f"bytes=0-{4 * S_SLICE - 1}", 0, 4 * S_SLICE - 1),
        ("bytes=0-", 0, S_LEN - 1),
    ]:
        answer = await fetch(client, url, value)
        check_206(answer, v2, f, la, value)
        assert answer.headers["ETag"] == '"v2"'


async def test_concurrent_readers_while_the_origin_changes_never_see_a_mix(
    make_node, origin, client
) -> None:
    """Many ranges at once while the object changes under them: each answer is complete and
    of one version, or cut."""
    vs = versions()
    script = Versioned(vs, switch_after=10**9)
    origin.routes["/media/track.mp3"] = script
    node = await make_node({"parents": [origin.endpoint]}, policies=SCRIPTED_POLICIES)
    url = node_url(node, "/media/track.mp3")
    check_206(await fetch(client, url, "bytes=0-0"), vs[0][1], 0, 0)  # the manifest (v1)
    script.switch_after = len(script.ranges) + 4
    rng = random.Random(9)
    spans = []
    for _ in range(24):
        first = rng.randrange(0, S_LEN - 1)
        spans.append((first, min(S_LEN - 1, first + rng.randint(0, 5 * S_SLICE))))
    answers = await asyncio.gather(
        *(fetch_or_cut(client, url, f"bytes={f}-{la}") for f, la in spans)
    )
    for (f, la), answer in zip(spans, answers, strict=True):
        if answer is None:
            continue  # cut: fine
        assert answer.status == 206, (f, la, answer.status)
        one_version(answer, vs, f, la)
    answer = await fetch(client, url, "bytes=0-")
    check_206(answer, vs[1][1], 0, S_LEN - 1, "after the change")


@dataclass
class Switchable:
    """Two versions of an object; ``current`` picks the one a new request gets. A request whose
    Range is ``hold`` gets its head and half its body at once, the rest after ``gate``."""

    versions: list[tuple[str, bytes]]
    current: int = 0
    hold: str | None = None
    held: asyncio.Event = field(default_factory=asyncio.Event)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    ranges: list[str | None] = field(default_factory=list)

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        value = request.headers.get("Range")
        self.ranges.append(value)
        etag, body = self.versions[self.current]
        headers = {"ETag": etag, "Content-Type": "audio/mpeg", "Cache-Control": "max-age=3600"}
        match = _RANGE.match(value) if value else None
        if value != self.hold or match is None or match[2] is None:
            return range_response(request, body, headers)
        first, last = int(match[1]), int(match[2])
        part = body[first : last + 1]
        headers["Content-Range"] = f"bytes {first}-{last}/{len(body)}"
        resp = web.StreamResponse(status=206, headers=headers)
        resp.content_length = len(part)
        await resp.prepare(request)
        await resp.write(part[: len(part) // 2])
        self.held.set()
        await asyncio.wait_for(self.gate.wait(), 30)
        await resp.write(part[len(part) // 2 :])
        await resp.write_eof()
        return resp


async def test_a_slice_fill_of_the_old_version_is_never_followed_into_a_new_answer(
    make_node, origin, client
) -> None:
    """Slice 5 is being filled as v1 (slowly) when the object changes to v2. A request that
    then learns v2 (new probe, new manifest) and wants slices 4-5 fetches slice 4 as v2; it
    must not take slice 5 from the v1 fill in flight: that would be a complete, mixed answer."""
    vs = versions()
    script = Switchable(vs, hold=aligned(5, S_SLICE, S_LEN))
    origin.routes["/media/track.mp3"] = script
    node = await make_node({"parents": [origin.endpoint]}, policies=SCRIPTED_POLICIES)
    url = node_url(node, "/media/track.mp3")
    check_206(await fetch(client, url, "bytes=0-0"), vs[0][1], 0, 0)  # manifest v1

    slow = asyncio.ensure_future(
        fetch_or_cut(client, url, f"bytes={5 * S_SLICE}-{5 * S_SLICE + 9}")
    )
    await asyncio.wait_for(script.held.wait(), 10)  # slice 5 (v1) is being filled
    script.current = 1  # the object changes
    # a request that meets v2 in a slice: the node drops the v1 manifest (and cuts it)
    assert await fetch_or_cut(client, url, f"bytes={7 * S_SLICE}-{7 * S_SLICE + 9}") is None
    first, last = 4 * S_SLICE + 100, 5 * S_SLICE + 200
    mixed = asyncio.ensure_future(fetch_or_cut(client, url, f"bytes={first}-{last}"))
    await asyncio.sleep(0.3)
    script.gate.set()
    answer = await asyncio.wait_for(mixed, 10)
    assert answer is None or one_version(answer, vs, first, last) == 1
    held = await asyncio.wait_for(slow, 10)
    assert held is None or one_version(held, vs, 5 * S_SLICE, 5 * S_SLICE + 9) == 0
    # and afterwards: v2 throughout
    check_206(await fetch(client, url, f"bytes={first}-{last}"), vs[1][1], first, last)


async def test_a_parent_that_ignores_range(make_node, origin, client) -> None:
    """The parent always answers the whole 200: the object is cached whole and every range
    still comes back right (cold, while filling, and warm)."""
    body = random.Random(3).randbytes(S_LEN)
    seen: list[str | None] = []

    async def whole(request: web.Request) -> web.StreamResponse:
        seen.append(request.headers.get("Range"))
        return web.Response(body=body, headers={"ETag": '"w"', "Content-Type": "audio/mpeg"})

    origin.routes["/media/whole.mp3"] = whole
    node = await make_node({"parents": [origin.endpoint]}, policies=SCRIPTED_POLICIES)
    url = node_url(node, "/media/whole.mp3")
    spans = [(f, la) for f, la in ((10, 20), (S_SLICE - 1, S_SLICE), (S_LEN - 1, S_LEN - 1))]
    spans += [(0, S_LEN - 1), (5 * S_SLICE, 9 * S_SLICE + 3)]
    for f, la in spans:
        check_206(await fetch(client, url, f"bytes={f}-{la}"), body, f, la)
    check_206(await fetch(client, url, "bytes=-100"), body, S_LEN - 100, S_LEN - 1)
    check_416(await fetch(client, url, f"bytes={S_LEN}-"), S_LEN)
    check_whole(await fetch(client, url), body)
    assert len(seen) == 1  # the whole object once, then the cache


async def test_a_parent_that_answers_slice_requests_with_200(make_node, origin, client) -> None:
    """The probe gets a 206 but each slice request the whole 200: the node takes the window it
    needs from the body; the answers are byte-exact, and each slice is fetched once."""
    body = random.Random(4).randbytes(S_LEN)
    seen: list[str | None] = []

    async def probe_only(request: web.Request) -> web.StreamResponse:
        value = request.headers.get("Range")
        seen.append(value)
        headers = {"ETag": '"p"', "Content-Type": "audio/mpeg", "Cache-Control": "max-age=600"}
        return range_response(request, body, headers, honour_range=value == "bytes=0-0")

    origin.routes["/media/partial.mp3"] = probe_only
    node = await make_node({"parents": [origin.endpoint]}, policies=SCRIPTED_POLICIES)
    url = node_url(node, "/media/partial.mp3")
    ranges = random_ranges_small(seed=12, count=40)
    for value, f, la in ranges:
        check_206(await fetch(client, url, value), body, f, la, value)
    slices = seen[1:]
    assert seen[0] == "bytes=0-0"
    assert len(slices) == len(set(slices)), "a slice was fetched twice"
    before = len(seen)
    for value, f, la in ranges:
        check_206(await fetch(client, url, value), body, f, la, value)
    assert len(seen) == before
    check_whole(await fetch(client, url), body)


def random_ranges_small(seed: int, count: int) -> list[tuple[str, int, int]]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        first = rng.randrange(0, S_LEN)
        last = min(S_LEN - 1, first + rng.choice([0, 1, 100, S_SLICE, 3 * S_SLICE]))
        out.append((f"bytes={first}-{last}", first, last))
    out.append(("bytes=-1", S_LEN - 1, S_LEN - 1))
    out.append((f"bytes={S_LEN - 5}-", S_LEN - 5, S_LEN - 1))
    return out


# ---- ranges from a growing fill --------------------------------------------------------------


@dataclass
class Gated:
    """Sends the first ``head`` bytes of ``body`` at once, then waits for ``gate``. A
    ``bytes=0-0`` probe is answered with a 206 at once."""

    body: bytes
    head: int
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    whole_requests: int = 0
    finished: bool = False

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        headers = {"ETag": '"g"', "Content-Type": "application/octet-stream"}
        if request.headers.get("Range") == "bytes=0-0":
            return range_response(request, self.body, headers)
        self.whole_requests += 1
        resp = web.StreamResponse(headers=headers)
        resp.content_length = len(self.body)
        await resp.prepare(request)
        await resp.write(self.body[: self.head])
        await asyncio.wait_for(self.gate.wait(), 30)
        for offset in range(self.head, len(self.body), 64 * KiB):
            await resp.write(self.body[offset : offset + 64 * KiB])
        await resp.write_eof()
        self.finished = True
        return resp


@pytest.mark.parametrize("path", ["/files/slow.bin", "/media/slow.mp3"], ids=["plain", "probed"])
async def test_ranges_are_answered_from_a_growing_fill(make_node, origin, client, path) -> None:
    """A whole (not sliced) object being filled from a slow origin: a range whose bytes have
    arrived is answered at once, the leader's as well as a follower's, before the origin has
    finished; a later range waits for its bytes and is exact. One origin fetch."""
    body = random.Random(5).randbytes(200 * KiB)  # under the threshold: cached whole
    script = Gated(body, head=100 * KiB)
    origin.routes[path] = script
    node = await make_node({"parents": [origin.endpoint]}, policies=SCRIPTED_POLICIES)
    url = node_url(node, path)

    leader = await asyncio.wait_for(fetch(client, url, "bytes=0-1023"), 10)
    check_206(leader, body, 0, 1023, "leader")
    follower = await asyncio.wait_for(fetch(client, url, "bytes=50000-99999"), 10)
    check_206(follower, body, 50000, 99999, "follower")
    assert not script.finished
    late = asyncio.ensure_future(fetch(client, url, f"bytes={150 * KiB}-{150 * KiB + 99}"))
    suffix = asyncio.ensure_future(fetch(client, url, "bytes=-10"))
    await asyncio.sleep(0.3)
    assert not late.done() and not suffix.done()  # their bytes have not arrived
    script.gate.set()
    check_206(await asyncio.wait_for(late, 10), body, 150 * KiB, 150 * KiB + 99, "late")
    check_206(await asyncio.wait_for(suffix, 10), body, len(body) - 10, len(body) - 1, "suffix")
    assert script.whole_requests == 1
    check_206(await fetch(client, url, "bytes=10-20"), body, 10, 20, "warm")
    assert script.whole_requests == 1


# ---- If-Range with a date --------------------------------------------------------------------


OLD = 1_600_000_000.0  # Last-Modified long before Date: a strong validator (sec. 8.8.2.2)


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/files/dated.bin", id="whole"),
        pytest.param("/media/dated.mp3", id="sliced"),
    ],
)
async def test_if_range_with_a_date(make_node, origin, client, path) -> None:
    body = random.Random(6).randbytes(S_LEN)
    last_modified = format_http_date(OLD)

    async def dated(request: web.Request) -> web.StreamResponse:
        headers = {"Last-Modified": last_modified, "Content-Type": "application/octet-stream"}
        return range_response(request, body, headers)

    origin.routes[path] = dated
    node = await make_node({"parents": [origin.endpoint]}, policies=SCRIPTED_POLICIES)
    url = node_url(node, path)
    check_206(await fetch(client, url, "bytes=0-0"), body, 0, 0)  # cached (whole or manifest)
    await asyncio.sleep(0.2)  # the whole object is published
    check_whole(
        await fetch(client, url, "bytes=5-9", headers={"If-Range": format_http_date(OLD + 60)}),
        body,
        "If-Range: another date",
    )
    answer = await fetch(client, url, "bytes=5-9", headers={"If-Range": last_modified})
    check_206(answer, body, 5, 9, "If-Range: the Last-Modified date")
