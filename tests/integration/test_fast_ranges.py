"""Single-Range hits on the fast path (``Node.try_fast`` -> ``Node._fast_range``), end to end.

Against the real S3 origin (SeaweedFS, SigV4) through the counting relay. A GET with one
satisfiable Range on a fresh entry is answered without a task: from the stored body, or from
the one slice of a slice manifest that holds the whole range. The answer must be the slow
path's (the same request with ``If-Range`` naming the entry's strong ETag goes the slow way,
RFC 9110 sec. 13.1.5): status, every header field but the volatile ones, byte-exact body.
Everything else (several ranges, 416, a range across slices, HEAD, a body neither in RAM nor
mapped yet: the first hit on a large body maps it) is left to the slow path.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from typing import Any

import aiohttp
import pytest

from tests.conftest import BUCKET, s3_upstream

pytestmark = pytest.mark.integration

KiB = 1024
MiB = 1024 * KiB
PLAIN_KEY = "plain/fast-range-300k.bin"
SLICED_KEY = "audio/fast-range-10m.mp3"
PLAIN_LEN = 300 * KiB
LARGE_KEY = "plain/fast-range-3m.bin"
LARGE_LEN = 3 * MiB
SLICED_LEN = 10 * MiB + 12345  # 11 slices, the last one short

POLICIES: list[dict[str, Any]] = [
    {
        "name": "audio",
        "path": "/audio/*",
        "default_ttl": "1d",
        "max_ttl": "365d",
        "slice_size": "1MiB",
        "slice_threshold": "1MiB",
    },
    {"name": "default", "path": "*", "default_ttl": "1h", "max_ttl": "1d"},
]

# regenerated on every answer: compared loosely
VOLATILE = {"date", "age", "cache-status"}


@pytest.fixture(scope="module")
def objects(seaweed: Any) -> dict[str, tuple[bytes, str]]:
    """key -> (body, ETag), uploaded once for the module."""
    rng = random.Random(77)
    out = {}
    for key, size, ctype in (
        (PLAIN_KEY, PLAIN_LEN, "application/octet-stream"),
        (LARGE_KEY, LARGE_LEN, "application/octet-stream"),
        (SLICED_KEY, SLICED_LEN, "audio/mpeg"),
    ):
        body = rng.randbytes(size)
        out[key] = (body, seaweed.put_object(BUCKET, key, body, ctype))
    return out


class Fields(dict[str, str]):
    """Response header fields by lower-cased name, plus every (name, value) in order."""

    raw: list[tuple[str, str]]


async def get(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], method: str = "GET"
) -> tuple[int, Fields, bytes]:
    async with session.request(method, url, headers=headers) as r:
        fields = Fields((k.lower(), v) for k, v in r.headers.items())
        fields.raw = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in r.raw_headers]
        return r.status, fields, await r.read()


Answer = tuple[int, dict[str, str], bytes]  # status, fields, body


def stable(fields: Fields) -> list[tuple[str, str]]:
    """Every field but the volatile ones, duplicates kept (a field sent twice would show)."""
    return sorted((k, v) for k, v in fields.raw if k not in VOLATILE)


async def fast_and_slow(
    node: Any, session: aiohttp.ClientSession, url: str, value: str, etag: str
) -> tuple[Answer, Answer, int]:
    """The same range asked plainly and with If-Range (slow path); the fast-hit count the
    plain one added."""
    before = node.node.fast_hits
    fast = await get(session, url, {"Range": value})
    added = node.node.fast_hits - before
    slow = await get(session, url, {"Range": value, "If-Range": etag})
    assert node.node.fast_hits == before + added, "If-Range must take the slow path"
    return fast, slow, added


async def until_fast(
    node: Any, session: aiohttp.ClientSession, url: str, value: str, data: bytes
) -> None:
    """Ask for the range until it is a fast hit (bounded): a slice fill goes on after its
    client's bytes, to the slice's end, then publishes; a slow hit maps a large body."""
    first, last = expected(len(data), value)
    deadline = time.monotonic() + 10
    while True:
        before = node.node.fast_hits
        status, _, body = await get(session, url, {"Range": value})
        assert status == 206 and body == data[first : last + 1], value
        if node.node.fast_hits > before:
            return
        assert time.monotonic() < deadline, f"{value}: never a fast hit"
        await asyncio.sleep(0.02)


def expected(total: int, value: str) -> tuple[int, int]:
    spec = value.removeprefix("bytes=")
    first_s, _, last_s = spec.partition("-")
    if not first_s:
        return total - int(last_s), total - 1
    return int(first_s), min(total - 1, int(last_s)) if last_s else total - 1


def assert_same_206(fast: Answer, slow: Answer, data: bytes, value: str) -> None:
    """The fast path's 206 for ``value`` is the slow path's: status, bytes, Content-Range and
    every field but the per-answer ones."""
    first, last = expected(len(data), value)
    assert fast[0] == slow[0] == 206, value
    assert fast[2] == slow[2] == data[first : last + 1], value
    assert fast[1]["content-range"] == f"bytes {first}-{last}/{len(data)}", value
    assert stable(fast[1]) == stable(slow[1]), value


@pytest.mark.parametrize(
    "value",
    ["bytes=0-0", "bytes=0-65535", "bytes=1000-204799", "bytes=-4096", "bytes=300000-", "bytes=5-"],
)
async def test_plain_entry_range_hit_is_fast_and_equals_the_slow_answer(
    make_node, relay, client, objects, value: str
) -> None:
    node = await make_node(s3_upstream(relay.endpoint), policies=POLICIES)
    url = f"http://127.0.0.1:{node.port}/{PLAIN_KEY}"
    data, etag = objects[PLAIN_KEY]
    for _ in range(2):  # stored, then a hit that maps the body (over the RAM layer's limit)
        status, _, body = await get(client, url, {})
        assert status == 200 and body == data
    upstream = len(relay.seen)

    fast, slow, added = await fast_and_slow(node, client, url, value, etag)
    assert added == 1, "a single range of a fresh stored entry is a fast hit"
    assert_same_206(fast, slow, data, value)
    assert fast[1]["cache-status"].startswith("edge-t; hit")
    assert len(relay.seen) == upstream  # both from the cache


async def test_sliced_range_hit_inside_one_slice_is_fast_and_equals_the_slow_answer(
    make_node, relay, client, objects
) -> None:
    node = await make_node(s3_upstream(relay.endpoint), policies=POLICIES)
    url = f"http://127.0.0.1:{node.port}/{SLICED_KEY}"
    data, etag = objects[SLICED_KEY]
    inside = [
        "bytes=0-524287",  # the start of a track, as a player asks
        f"bytes={3 * MiB + 7}-{4 * MiB - 1}",  # up to the end of slice 3
        f"bytes={10 * MiB}-",  # the short last slice, open-ended
        "bytes=-100",  # a suffix inside the last slice
        f"bytes={5 * MiB}-{5 * MiB}",  # one byte
    ]
    for value in inside:
        # the slice is fetched (the fill goes on after the client's bytes, to the slice's
        # end, then publishes), a slow hit maps it, then it is a fast hit
        await until_fast(node, client, url, value, data)
        upstream = len(relay.seen)
        fast, slow, added = await fast_and_slow(node, client, url, value, etag)
        assert added == 1, value
        assert_same_206(fast, slow, data, value)
        assert len(relay.seen) == upstream, value


async def test_what_the_fast_path_leaves_to_the_slow_path(
    make_node, relay, client, objects
) -> None:
    """Across slices, several ranges, unsatisfiable, HEAD: no fast hit, right answers."""
    node = await make_node(s3_upstream(relay.endpoint), policies=POLICIES)
    url = f"http://127.0.0.1:{node.port}/{SLICED_KEY}"
    data, _ = objects[SLICED_KEY]
    total = len(data)
    plain = f"http://127.0.0.1:{node.port}/{PLAIN_KEY}"
    pdata, _ = objects[PLAIN_KEY]
    # what the ranges below touch is held: each part is a fast hit on its own
    for value in ("bytes=0-9", f"bytes={MiB}-{MiB + 9}", f"bytes={10 * MiB}-"):
        await until_fast(node, client, url, value, data)
    await until_fast(node, client, plain, "bytes=0-9", pdata)

    before = node.node.fast_hits
    status, fields, body = await get(client, url, {"Range": f"bytes={MiB - 10}-{MiB + 9}"})
    assert status == 206 and body == data[MiB - 10 : MiB + 10]  # two slices, joined
    status, fields, body = await get(client, plain, {"Range": "bytes=0-9,20-29"})
    assert status == 200 and body == pdata  # several ranges: the whole (documented choice)
    status, fields, body = await get(client, plain, {"Range": f"bytes={PLAIN_LEN}-"})
    assert status == 416 and fields["content-range"] == f"bytes */{PLAIN_LEN}"
    status, fields, body = await get(client, url, {"Range": f"bytes={total + 5}-"})
    assert status == 416 and fields["content-range"] == f"bytes */{total}"
    status, fields, body = await get(client, plain, {"Range": "bytes=0-9"}, method="HEAD")
    assert status == 206 and body == b"" and fields["content-range"] == f"bytes 0-9/{PLAIN_LEN}"
    assert node.node.fast_hits == before


async def test_large_ranges_of_a_mapped_body_go_out_in_drained_chunks(
    make_node, relay, client, objects
) -> None:
    """Over 1 MiB from a mapping is left to the slow path (as whole hits are): it writes in
    bounded chunks and waits for the client between them; up to 1 MiB is a fast hit."""
    node = await make_node(s3_upstream(relay.endpoint), policies=POLICIES)
    url = f"http://127.0.0.1:{node.port}/{LARGE_KEY}"
    data, _ = objects[LARGE_KEY]
    await until_fast(node, client, url, f"bytes=0-{MiB - 1}", data)
    before = node.node.fast_hits
    for value in (f"bytes=0-{MiB}", "bytes=5-", f"bytes=-{2 * MiB}"):
        status, fields, body = await get(client, url, {"Range": value})
        first, last = expected(LARGE_LEN, value)
        assert status == 206 and body == data[first : last + 1], value
        assert fields["content-range"] == f"bytes {first}-{last}/{LARGE_LEN}"
    assert node.node.fast_hits == before


async def raw_exchange(port: int, request: bytes) -> tuple[bytes, bytes, bool]:
    """Send ``request`` on a new connection; (head, body by Content-Length, closed after)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        length = int(re.search(rb"(?im)^content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
        body = await asyncio.wait_for(reader.readexactly(length), 10)
        closed = await asyncio.wait_for(reader.read(1), 2) == b"" if b"close" in head else False
        return head, body, closed
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("version", "connection", "expect", "closes"),
    [
        ("1.0", "keep-alive", b"Connection: keep-alive", False),
        ("1.1", "close", b"Connection: close", True),
        ("1.0", None, b"Connection: close", True),
    ],
)
async def test_fast_range_connection_handling(
    make_node,
    relay,
    client,
    objects,
    version: str,
    connection: str | None,
    expect: bytes,
    closes: bool,
) -> None:
    """HTTP/1.0 keep-alive and Connection: close on the fast path (RFC 9112 sec. 9.3)."""
    node = await make_node(s3_upstream(relay.endpoint), policies=POLICIES)
    url = f"http://127.0.0.1:{node.port}/{PLAIN_KEY}"
    data, _ = objects[PLAIN_KEY]
    await until_fast(node, client, url, "bytes=0-99", data)
    before = node.node.fast_hits
    request = f"GET /{PLAIN_KEY} HTTP/{version}\r\nHost: t\r\nRange: bytes=10-109\r\n"
    if connection:
        request += f"Connection: {connection}\r\n"
    head, body, closed = await raw_exchange(node.port, (request + "\r\n").encode())
    assert node.node.fast_hits == before + 1
    assert head.startswith(b"HTTP/1.1 206 Partial Content\r\n")
    assert head.count(b"\r\nConnection:") == 1 and expect in head
    assert b"Content-Range: bytes 10-109/%d" % PLAIN_LEN in head
    assert body == data[10:110]
    assert closed is closes
