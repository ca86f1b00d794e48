"""gzip and Brotli compression for the cache, kept off the event loop.

Contract
--------
* :func:`compress_bytes` compresses a whole body into one content coding (RFC 9110 sec. 8.4.1:
  ``br`` = RFC 7932, ``gzip`` = RFC 1952). Bodies up to :data:`INLINE_LIMIT` (16 KiB, ~0.1 ms)
  are compressed inline; larger ones in an executor thread (both zlib and the ``brotli``
  module release the GIL while they work, so the loop keeps serving). The output is
  deterministic for one body, coding and level (gzip header: mtime 0, no file name), so two
  nodes with the same settings produce the same bytes.
* :class:`StreamCompressor` compresses a body while it streams (from upstream to the client and
  the store): ``compress(chunk)`` returns what is ready (possibly ``b""``), ``flush()`` forces
  out everything fed so far (a sync flush: the output is a valid prefix that a decoder can
  decode completely), ``finish()`` ends the stream. The concatenated outputs decode to the
  concatenated inputs, whatever the chunking. ``acompress``/``afinish`` do the same with
  large chunks in an executor.
* :class:`SingleFlight` runs one coroutine per key at a time and hands its result (or its
  exception) to every concurrent caller: one compression per variant, however many requests
  ask for it at once.
* :func:`decompress` is the inverse (tests and checks; never on the hit path).
* :class:`StreamDecoder` / :func:`decode_chunks` decode an origin's pre-compressed body for a
  client that does not accept its coding, in bounded pieces (a decompression bomb costs time,
  never memory).

Levels: Brotli quality :data:`DEFAULT_BROTLI_QUALITY` (5) and gzip level
:data:`DEFAULT_GZIP_LEVEL` (6), chosen on a 51.7 KB JSON track listing (``python
benchmarks/compress_bench.py --levels``; one core, best of repeated runs)::

    coding   bytes    ms/compression  versus the default
    br 4     11,789   0.30            +4.8 % bytes, 0.56x time
    br 5     11,249   0.53            the knee: 21.8 % of the original
    br 6-8   ~11,200  0.58-0.78       -0.2 to -0.8 % bytes for 1.1-1.5x time
    br 9     11,166   13-16           nothing more for ~25x time
    br 10    10,262   16-30           -8.8 % bytes for 30-55x time
    br 11    10,069   44-69           -10.5 % bytes for 80-130x time (~1 s per MiB)
    gzip 5   12,292   0.27            +1.2 % bytes
    gzip 6   12,144   0.48            23.5 % of the original (zlib's default, nginx's usual)
    gzip 9   11,974   0.93            -1.4 % bytes for 2x time

A variant is compressed once per node and then served from the store, so a higher Brotli
quality only costs on the first request; but q9+ is 25-130x slower, which would stall the
first requester of a multi-megabyte body for seconds. q5 keeps the first compression of a
10 MiB body near 0.1 s; q11 is a candidate for a later background re-compression of hot
objects (10 % fewer bytes), not for the request path.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterator
from concurrent.futures import Executor
from functools import partial
from typing import Final, Generic, TypeVar

import brotli

__all__ = [
    "DEFAULT_BROTLI_QUALITY",
    "DEFAULT_BROTLI_WINDOW",
    "DEFAULT_GZIP_LEVEL",
    "INLINE_LIMIT",
    "SingleFlight",
    "StreamCompressor",
    "StreamDecoder",
    "compress_bytes",
    "compress_sync",
    "decode_chunks",
    "decompress",
    "decompress_limited",
]

DEFAULT_BROTLI_QUALITY: Final = 5
DEFAULT_BROTLI_WINDOW: Final = 22  # lgwin: 4 MiB window, the library default
DEFAULT_GZIP_LEVEL: Final = 6
INLINE_LIMIT: Final = 16 * 1024
"""Bodies (and streamed chunks) up to this size are compressed on the calling thread: at
Brotli q5 / gzip 6 that is ~0.1-0.2 ms, cheaper than a hop to a thread."""

_GZIP_WBITS: Final = 31  # 16 + 15: zlib with the gzip wrapper (RFC 1952), 32 KiB window


def _check_encoding(encoding: str) -> str:
    if encoding == "x-gzip":
        return "gzip"
    if encoding not in ("br", "gzip", "identity"):
        raise ValueError(f"unsupported content coding {encoding!r} (br, gzip or identity)")
    return encoding


def compress_sync(
    data: bytes | bytearray | memoryview,
    encoding: str,
    *,
    brotli_quality: int = DEFAULT_BROTLI_QUALITY,
    gzip_level: int = DEFAULT_GZIP_LEVEL,
) -> bytes:
    """Compress ``data`` on this thread. ``encoding`` is ``br``, ``gzip`` (``x-gzip``) or
    ``identity`` (returns the bytes unchanged); anything else raises ``ValueError``."""
    encoding = _check_encoding(encoding)
    if encoding == "br":
        return brotli.compress(data, quality=brotli_quality, lgwin=DEFAULT_BROTLI_WINDOW)
    if encoding == "gzip":
        return zlib.compress(data, gzip_level, wbits=_GZIP_WBITS)
    return bytes(data)


async def compress_bytes(
    data: bytes | bytearray | memoryview,
    encoding: str,
    *,
    executor: Executor | None = None,
    brotli_quality: int = DEFAULT_BROTLI_QUALITY,
    gzip_level: int = DEFAULT_GZIP_LEVEL,
    inline_limit: int = INLINE_LIMIT,
) -> bytes:
    """Compress a whole body; never blocks the event loop for more than a small body's worth.

    ``len(data) <= inline_limit`` runs inline; larger bodies run in ``executor`` (``None``:
    the loop's default executor). ``data`` must not be mutated until this returns (a
    ``memoryview`` of an mmap of a published body is fine: those are read-only). Raises
    ``ValueError`` for an unsupported ``encoding``; ``identity`` returns the bytes unchanged.
    """
    _check_encoding(encoding)
    if len(data) <= inline_limit:
        return compress_sync(data, encoding, brotli_quality=brotli_quality, gzip_level=gzip_level)
    loop = asyncio.get_running_loop()
    work = partial(
        compress_sync, data, encoding, brotli_quality=brotli_quality, gzip_level=gzip_level
    )
    return await loop.run_in_executor(executor, work)


def decompress(data: bytes, encoding: str) -> bytes:
    """Decode a ``br`` or ``gzip`` body (``identity``: unchanged). For tests and checks: no
    size limit, so never call it on untrusted input in the server."""
    encoding = _check_encoding(encoding)
    if encoding == "br":
        return brotli.decompress(data)
    if encoding == "gzip":
        out = bytearray()
        rest = data
        while rest:  # RFC 1952 sec. 2.2: a gzip file may hold several members
            d = zlib.decompressobj(_GZIP_WBITS)
            out += d.decompress(rest)
            if not d.eof:
                raise ValueError("truncated gzip stream")
            rest = d.unused_data
        return bytes(out)
    return bytes(data)


class StreamCompressor:
    """Incremental ``br``/``gzip`` compression of a body that arrives in chunks.

    Not thread-safe: call it from one task, one call at a time (``acompress`` awaits the
    executor before the next call can start, which keeps that true). After ``finish()`` the
    object is spent: further calls raise ``RuntimeError``.
    """

    __slots__ = ("_brotli", "_finished", "_zlib", "bytes_in", "bytes_out", "encoding")

    def __init__(
        self,
        encoding: str,
        *,
        brotli_quality: int = DEFAULT_BROTLI_QUALITY,
        gzip_level: int = DEFAULT_GZIP_LEVEL,
    ) -> None:
        encoding = _check_encoding(encoding)
        if encoding == "identity":
            raise ValueError("StreamCompressor needs a real coding (br or gzip)")
        self.encoding = encoding
        self._brotli: brotli.Compressor | None = None
        self._zlib: zlib._Compress | None = None
        if encoding == "br":
            self._brotli = brotli.Compressor(quality=brotli_quality, lgwin=DEFAULT_BROTLI_WINDOW)
        else:
            self._zlib = zlib.compressobj(gzip_level, zlib.DEFLATED, _GZIP_WBITS)
        self._finished = False
        self.bytes_in = 0
        self.bytes_out = 0

    def _alive(self) -> None:
        if self._finished:
            raise RuntimeError("StreamCompressor used after finish()")

    def compress(self, chunk: bytes | bytearray | memoryview) -> bytes:
        """Feed one chunk; returns the compressed bytes ready so far (often ``b""``)."""
        self._alive()
        self.bytes_in += len(chunk)
        if self._brotli is not None:
            out = self._brotli.process(chunk)
        else:
            assert self._zlib is not None
            out = self._zlib.compress(chunk)
        self.bytes_out += len(out)
        return out

    def flush(self) -> bytes:
        """Everything fed so far, decodable now (sync flush); costs a little ratio."""
        self._alive()
        if self._brotli is not None:
            out = self._brotli.flush()
        else:
            assert self._zlib is not None
            out = self._zlib.flush(zlib.Z_SYNC_FLUSH)
        self.bytes_out += len(out)
        return out

    def finish(self) -> bytes:
        """End the stream: the last bytes (gzip: with the CRC-32 and length trailer)."""
        self._alive()
        self._finished = True
        if self._brotli is not None:
            out = self._brotli.finish()
        else:
            assert self._zlib is not None
            out = self._zlib.flush(zlib.Z_FINISH)
        self.bytes_out += len(out)
        return out

    async def acompress(
        self,
        chunk: bytes | bytearray | memoryview,
        *,
        executor: Executor | None = None,
        inline_limit: int = INLINE_LIMIT,
    ) -> bytes:
        """:meth:`compress`, with chunks larger than ``inline_limit`` run in ``executor``."""
        if len(chunk) <= inline_limit:
            return self.compress(chunk)
        return await asyncio.get_running_loop().run_in_executor(executor, self.compress, chunk)

    async def afinish(self, *, executor: Executor | None = None) -> bytes:
        """:meth:`finish` in ``executor`` (the final block may take a while at high quality)."""
        return await asyncio.get_running_loop().run_in_executor(executor, self.finish)


DECODE_PIECE = 256 * 1024


class StreamDecoder:
    """Incremental decoding of a ``br``/``gzip`` body (an origin's pre-compressed object) for
    a client that does not accept the coding, with bounded memory: every piece it yields is
    about ``piece`` bytes (Brotli rounds its output buffer up to 32 KiB), however much one
    input chunk expands (a "zip bomb" costs time,
    never RAM). gzip may hold several members (RFC 1952 sec. 2.2). ``finish()`` raises
    ``ValueError`` when the stream was truncated; malformed input raises ``ValueError`` too.
    """

    __slots__ = ("_brotli", "_zlib", "bytes_out", "encoding", "piece")

    def __init__(self, encoding: str, *, piece: int = DECODE_PIECE) -> None:
        encoding = _check_encoding(encoding)
        if encoding == "identity":
            raise ValueError("StreamDecoder needs a real coding (br or gzip)")
        self.encoding = encoding
        self.piece = piece
        self._brotli: brotli.Decompressor | None = None
        self._zlib: zlib._Decompress | None = None
        if encoding == "br":
            self._brotli = brotli.Decompressor()
        else:
            self._zlib = zlib.decompressobj(_GZIP_WBITS)
        self.bytes_out = 0

    def decode(self, chunk: bytes | bytearray | memoryview) -> Iterator[bytes]:
        """Feed one chunk; yields the decoded pieces it releases."""
        try:
            if self._brotli is not None:
                yield from self._decode_br(bytes(chunk))
            else:
                yield from self._decode_gzip(bytes(chunk))
        except (zlib.error, brotli.error) as exc:
            raise ValueError(f"bad {self.encoding} stream: {exc}") from exc

    def _decode_br(self, data: bytes) -> Iterator[bytes]:
        d = self._brotli
        assert d is not None
        out = d.process(data, output_buffer_limit=self.piece)
        while out:  # the limit holds output back: drain it with empty input
            self.bytes_out += len(out)
            yield out
            if d.is_finished():
                return
            out = d.process(b"", output_buffer_limit=self.piece)

    def _decode_gzip(self, data: bytes) -> Iterator[bytes]:
        while data:
            d = self._zlib
            assert d is not None
            if d.eof:  # the next member of a multi-member file
                data = d.unused_data + data
                if not data:
                    return
                d = self._zlib = zlib.decompressobj(_GZIP_WBITS)
            out = d.decompress(data, self.piece)
            data = d.unconsumed_tail
            if out:
                self.bytes_out += len(out)
                yield out
            if d.eof:
                data = d.unused_data + data
                if data:
                    self._zlib = zlib.decompressobj(_GZIP_WBITS)
                else:
                    return

    def finish(self) -> None:
        """Check the stream ended where a coded body must end."""
        if self._brotli is not None:
            if not self._brotli.is_finished():
                raise ValueError("truncated br stream")
        else:
            assert self._zlib is not None
            if not self._zlib.eof:
                raise ValueError("truncated gzip stream")


def decompress_limited(data: bytes | memoryview, encoding: str, limit: int) -> bytes | None:
    """Decode a whole coded body; None when the result would exceed ``limit`` bytes (the
    caller decodes while streaming instead). ``ValueError`` on malformed/truncated input.
    Runs anywhere (the caller puts large bodies in an executor)."""
    decoder = StreamDecoder(encoding)
    out = bytearray()
    for piece in decoder.decode(data):
        out += piece
        if len(out) > limit:
            return None
    decoder.finish()
    return bytes(out)


async def decode_chunks(source: AsyncIterator[bytes], encoding: str) -> AsyncIterator[bytes]:
    """Decode an async stream of coded chunks (see :class:`StreamDecoder`); raises
    ``ValueError`` on a malformed or truncated stream (the caller cuts the connection)."""
    decoder = StreamDecoder(encoding)
    async for chunk in source:
        for piece in decoder.decode(chunk):
            yield piece
    decoder.finish()


K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class SingleFlight(Generic[K, T]):
    """At most one running ``factory()`` per key; concurrent callers share its outcome.

    ``await flight.run(key, factory)``: the first caller for ``key`` starts ``factory()`` in
    its own task; callers arriving while it runs await the same task. All get its result, or
    all see its exception. When it is done the key is forgotten (the next call starts anew:
    by then the caller should find the stored variant instead). A caller that is cancelled
    does not cancel the work for the others.
    """

    def __init__(self) -> None:
        self._running: dict[K, asyncio.Task[T]] = {}
        self.started = 0  # how many factories were started (for tests and metrics)

    def __contains__(self, key: object) -> bool:
        return key in self._running

    def __len__(self) -> int:
        return len(self._running)

    async def run(self, key: K, factory: Callable[[], Awaitable[T]]) -> T:
        task = self._running.get(key)
        if task is None:
            task = asyncio.ensure_future(factory())
            self.started += 1
            self._running[key] = task

            def _forget(done: asyncio.Task[T], key: K = key) -> None:
                if self._running.get(key) is done:
                    del self._running[key]
                if not done.cancelled():
                    done.exception()  # mark retrieved: no "never retrieved" warning

            task.add_done_callback(_forget)
        return await asyncio.shield(task)
