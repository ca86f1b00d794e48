"""gzip (RFC 1952) and Brotli (RFC 7932) content codings: round trips, streaming, where the
work runs, and one compression per variant under concurrency."""

from __future__ import annotations

import asyncio
import functools
import gzip
import json
import random
import threading
import zlib
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any

import brotli
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeproxy.proxy.compress import (
    DEFAULT_BROTLI_QUALITY,
    DEFAULT_GZIP_LEVEL,
    INLINE_LIMIT,
    SingleFlight,
    StreamCompressor,
    compress_bytes,
    compress_sync,
    decompress,
)

CODINGS = ("br", "gzip")


@functools.cache
def json_body(size: int, seed: int = 1) -> bytes:
    """``size`` bytes of a JSON array of track-like objects (truncated at ``size``)."""
    rng = random.Random(seed)
    parts: list[bytes] = []
    total = 0
    while total < size + 1:
        item = {
            "id": rng.randrange(10**9),
            "title": " ".join(rng.choice(["night", "blue", "echo", "gold"]) for _ in range(3)),
            "duration_ms": rng.randrange(90_000, 400_000),
        }
        part = json.dumps(item).encode() + b","
        parts.append(part)
        total += len(part)
    return (b"[" + b"".join(parts))[:size]


class CountingExecutor(Executor):
    """Runs submissions on a real thread pool and counts them (and records the threads)."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=2)
        self.submissions = 0
        self.threads: set[int] = set()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.submissions += 1

        def run() -> Any:
            self.threads.add(threading.get_ident())
            return fn(*args, **kwargs)

        return self._pool.submit(run)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)


@pytest.fixture
def executor() -> Any:
    ex = CountingExecutor()
    yield ex
    ex.shutdown()


# --- one-shot round trips -----------------------------------------------------------------


@pytest.mark.parametrize("coding", CODINGS)
@pytest.mark.parametrize("size", [0, 1, 999, 1000, 16 * 1024, 50 * 1024, 1024 * 1024])
def test_round_trip(coding: str, size: int) -> None:
    body = json_body(size)
    packed = compress_sync(body, coding)
    assert decompress(packed, coding) == body
    if size >= 1000:
        assert len(packed) < len(body) // 2


def test_codings_are_the_standard_formats() -> None:
    """Any gzip / Brotli decoder reads them: the stdlib gzip module, brotli.decompress."""
    body = json_body(20_000)
    assert gzip.decompress(compress_sync(body, "gzip")) == body
    assert zlib.decompress(compress_sync(body, "gzip"), 47) == body
    assert brotli.decompress(compress_sync(body, "br")) == body
    packed = compress_sync(body, "gzip")
    assert packed[:2] == b"\x1f\x8b" and packed[4:8] == b"\0\0\0\0"  # magic; mtime 0


def test_deterministic_and_levels() -> None:
    body = json_body(50 * 1024)
    for coding in CODINGS:
        assert compress_sync(body, coding) == compress_sync(body, coding)
    assert compress_sync(body, "br") == compress_sync(
        body, "br", brotli_quality=DEFAULT_BROTLI_QUALITY
    )
    assert compress_sync(body, "gzip") == compress_sync(body, "gzip", gzip_level=DEFAULT_GZIP_LEVEL)
    assert len(compress_sync(body, "br", brotli_quality=11)) < len(
        compress_sync(body, "br", brotli_quality=1)
    )
    assert len(compress_sync(body, "gzip", gzip_level=9)) < len(
        compress_sync(body, "gzip", gzip_level=1)
    )


def test_identity_and_unknown_codings() -> None:
    assert compress_sync(b"abc", "identity") == b"abc"
    assert decompress(b"abc", "identity") == b"abc"
    assert decompress(compress_sync(b"abc" * 500, "x-gzip"), "gzip") == b"abc" * 500
    for bad in ("deflate", "zstd", "", "BR"):
        with pytest.raises(ValueError):
            compress_sync(b"abc", bad)
        with pytest.raises(ValueError):
            StreamCompressor(bad)
    with pytest.raises(ValueError):
        StreamCompressor("identity")


def test_decompress_multi_member_gzip_and_truncation() -> None:
    both = compress_sync(b"hello ", "gzip") + compress_sync(b"world", "gzip")
    assert decompress(both, "gzip") == b"hello world"
    with pytest.raises((ValueError, zlib.error)):
        decompress(compress_sync(b"x" * 5000, "gzip")[:-4], "gzip")


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=40_000), st.sampled_from(CODINGS))
def test_round_trip_random_bytes(body: bytes, coding: str) -> None:
    assert decompress(compress_sync(body, coding), coding) == body


# --- streaming ----------------------------------------------------------------------------


def _stream(body: bytes, coding: str, sizes: list[int], flush_every: int = 0) -> bytes:
    comp = StreamCompressor(coding)
    out = bytearray()
    pos = 0
    i = 0
    while pos < len(body):
        n = sizes[i % len(sizes)]
        out += comp.compress(body[pos : pos + n])
        pos += n
        i += 1
        if flush_every and i % flush_every == 0:
            out += comp.flush()
    out += comp.finish()
    assert comp.bytes_in == len(body)
    assert comp.bytes_out == len(out)
    return bytes(out)


@pytest.mark.parametrize("coding", CODINGS)
@pytest.mark.parametrize("sizes", [[1], [7], [1, 4093, 17], [65_537], [16_384], [3, 100_000]])
def test_streaming_odd_chunks_equals_one_shot_decoding(coding: str, sizes: list[int]) -> None:
    """Whatever the chunking, the stream decodes to the body, as the one-shot coding does."""
    body = json_body(150_000 if sizes != [1] else 5_000)
    streamed = _stream(body, coding, sizes)
    assert decompress(streamed, coding) == body
    assert decompress(compress_sync(body, coding), coding) == body


@pytest.mark.parametrize("coding", CODINGS)
def test_stream_flush_gives_a_decodable_prefix(coding: str) -> None:
    body = json_body(40_000)
    comp = StreamCompressor(coding)
    first = comp.compress(body[:10_000]) + comp.flush()
    if coding == "gzip":
        d = zlib.decompressobj(31)
        assert d.decompress(first) == body[:10_000]
    else:
        d = brotli.Decompressor()
        assert d.process(first) == body[:10_000]
    rest = comp.compress(body[10_000:]) + comp.finish()
    assert decompress(first + rest, coding) == body
    assert decompress(_stream(body, coding, [999], flush_every=3), coding) == body


@pytest.mark.parametrize("coding", CODINGS)
def test_empty_stream(coding: str) -> None:
    comp = StreamCompressor(coding)
    assert decompress(comp.finish(), coding) == b""


def test_stream_is_spent_after_finish() -> None:
    comp = StreamCompressor("gzip")
    comp.finish()
    for call in (lambda: comp.compress(b"x"), comp.flush, comp.finish):
        with pytest.raises(RuntimeError):
            call()


@settings(max_examples=40, deadline=None)
@given(
    st.binary(max_size=30_000),
    st.lists(st.integers(1, 5000), min_size=1, max_size=8),
    st.sampled_from(CODINGS),
)
def test_streaming_random(body: bytes, sizes: list[int], coding: str) -> None:
    assert decompress(_stream(body, coding, sizes), coding) == body


# --- off the event loop -------------------------------------------------------------------


@pytest.mark.parametrize("coding", CODINGS)
async def test_small_bodies_inline_large_in_executor(coding: str, executor: Any) -> None:
    small = json_body(INLINE_LIMIT)
    large = json_body(INLINE_LIMIT + 1)
    assert decompress(await compress_bytes(small, coding, executor=executor), coding) == small
    assert executor.submissions == 0
    assert decompress(await compress_bytes(large, coding, executor=executor), coding) == large
    assert executor.submissions == 1
    assert threading.get_ident() not in executor.threads
    big = json_body(2 * 1024 * 1024)
    assert decompress(await compress_bytes(big, coding, executor=executor), coding) == big
    assert executor.submissions == 2


async def test_compress_bytes_options(executor: Any) -> None:
    body = json_body(50 * 1024)
    out = await compress_bytes(body, "br", executor=executor, brotli_quality=1)
    assert out == compress_sync(body, "br", brotli_quality=1)
    out = await compress_bytes(body, "gzip", executor=executor, gzip_level=1, inline_limit=10**6)
    assert out == compress_sync(body, "gzip", gzip_level=1)
    assert executor.submissions == 1  # the second ran inline (raised limit)
    with pytest.raises(ValueError):
        await compress_bytes(body, "zstd", executor=executor)
    view = memoryview(body)
    assert decompress(await compress_bytes(view, "gzip", executor=executor), "gzip") == body


async def test_default_executor_is_used_when_none_given() -> None:
    body = json_body(100_000)
    assert decompress(await compress_bytes(body, "br"), "br") == body


async def test_event_loop_keeps_running_during_a_large_compression(executor: Any) -> None:
    """A multi-megabyte compression runs while the loop keeps ticking (the codecs release
    the GIL in the executor thread)."""
    body = random.Random(3).randbytes(1_000_000) + json_body(3_000_000)
    ticks = 0
    done = False

    async def ticker() -> None:
        nonlocal ticks
        while not done:
            ticks += 1
            await asyncio.sleep(0.001)

    task = asyncio.ensure_future(ticker())
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await compress_bytes(body, "br", executor=executor, brotli_quality=6)
    took = loop.time() - t0
    done = True
    await task
    assert executor.submissions == 1
    if took > 0.05:  # only meaningful when the compression took a while
        assert ticks >= 5


@pytest.mark.parametrize("coding", CODINGS)
async def test_stream_async_chunks(coding: str, executor: Any) -> None:
    body = json_body(200_000)
    comp = StreamCompressor(coding)
    out = bytearray()
    for start in range(0, len(body), 50_000):
        out += await comp.acompress(body[start : start + 50_000], executor=executor)
    out += await comp.acompress(b"", executor=executor)  # tiny: inline
    submitted = executor.submissions
    assert submitted == 4
    out += await comp.afinish(executor=executor)
    assert executor.submissions == submitted + 1
    assert decompress(bytes(out), coding) == body


# --- one compression per variant ----------------------------------------------------------


async def test_single_flight_100_concurrent_requests(executor: Any) -> None:
    """100 concurrent requests for a missing variant cause one compression; all get it."""
    body = json_body(200_000)
    flight: SingleFlight[tuple[str, str], bytes] = SingleFlight()
    produced = 0

    async def produce() -> bytes:
        nonlocal produced
        produced += 1
        return await compress_bytes(body, "br", executor=executor)

    results = await asyncio.gather(*(flight.run(("key", "br"), produce) for _ in range(100)))
    assert produced == 1 and flight.started == 1
    assert executor.submissions == 1
    assert all(r is results[0] for r in results)
    assert decompress(results[0], "br") == body
    assert len(flight) == 0 and ("key", "br") not in flight
    # later, a new flight starts (the caller would find the stored variant instead)
    await flight.run(("key", "br"), produce)
    assert produced == 2


async def test_single_flight_keys_are_independent() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    gate = asyncio.Event()
    calls: list[str] = []

    def factory(name: str) -> Callable[[], Any]:
        async def run() -> str:
            calls.append(name)
            await gate.wait()
            return name

        return run

    tasks = [asyncio.ensure_future(flight.run(k, factory(k))) for k in ("br", "gzip", "br")]
    await asyncio.sleep(0.01)
    assert sorted(calls) == ["br", "gzip"] and len(flight) == 2
    gate.set()
    assert await asyncio.gather(*tasks) == ["br", "gzip", "br"]


async def test_single_flight_error_reaches_every_waiter_then_retries() -> None:
    flight: SingleFlight[str, bytes] = SingleFlight()
    attempts = 0

    async def failing() -> bytes:
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(0.01)
        raise OSError("disk full")

    results = await asyncio.gather(
        *(flight.run("k", failing) for _ in range(10)), return_exceptions=True
    )
    assert attempts == 1
    assert all(isinstance(r, OSError) for r in results)
    assert len(flight) == 0

    async def ok() -> bytes:
        return b"fine"

    assert await flight.run("k", ok) == b"fine"


async def test_single_flight_cancelled_waiter_does_not_cancel_the_work() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    gate = asyncio.Event()

    async def slow() -> str:
        await gate.wait()
        return "done"

    first = asyncio.ensure_future(flight.run("k", slow))
    second = asyncio.ensure_future(flight.run("k", slow))
    await asyncio.sleep(0.01)
    first.cancel()
    await asyncio.sleep(0.01)
    gate.set()
    assert await second == "done"
    assert first.cancelled()
    assert flight.started == 1
