"""Reading a fill while it is written (read-while-writer), as an async iterator of chunks.

Contract: :func:`fill_chunks` yields the bytes ``start..end`` (``end`` None: to the end of the
body) of a fill's growing part file as they arrive, at the reader's pace (bounded memory), and
raises :class:`FillFailed` if the fill ends without those bytes: a caller that already sent a
response head must then cut the connection. When the part file was already published (renamed)
before it could be opened, the stored entry is read instead.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from edgeproxy.proxy.coalesce import Fill, FillHead, Outcome

if TYPE_CHECKING:
    from edgeproxy.cache.entry import Entry
    from edgeproxy.cache.store import DiskStore

READ_CHUNK = 256 * 1024


class FillFailed(Exception):
    """The fill ended without the requested bytes."""


def _matches(entry: Entry, head: FillHead) -> bool:
    if head.content_length is not None and entry.size != head.content_length:
        return False
    announced = {n.lower(): v for n, v in head.headers}
    return entry.etag == announced.get("etag") and entry.last_modified == announced.get(
        "last-modified"
    )


async def fill_chunks(
    store: DiskStore, key_hex: str, fill: Fill, head: FillHead, start: int, end: int | None
) -> AsyncIterator[bytes | memoryview]:
    """See the module docstring. Bytes still in a local fill's recent-chunk ring are yielded
    from memory (no executor hop: 200 followers of one fill share the same chunks); older
    ones are read from the part file, opened on first need."""
    fd: int | None = None
    shared = fill.reader  # the fill's own open part file (a local fill), if it has one yet
    try:
        offset = start
        while end is None or offset < end:
            available = fill.written if end is None else min(fill.written, end)
            if offset < available:
                data: bytes | memoryview | None = fill.recent(offset, available - offset)
                if data is None:
                    if fd is None and shared is None:
                        shared = fill.reader
                    if fd is None and shared is not None:
                        # open since the fill began: readable after the publish (rename) and
                        # even after an eviction unlinked the published body
                        read = await store.run_io(
                            os.pread, shared.fileno(), min(available - offset, READ_CHUNK), offset
                        )
                        assert isinstance(read, bytes)
                        data = read
                    elif fd is None:
                        try:
                            opened = await store.run_io(os.open, head.part_path, os.O_RDONLY)
                        except OSError:
                            async for chunk in _published(store, key_hex, fill, head, offset, end):
                                yield chunk
                            return
                        assert isinstance(opened, int)
                        fd = opened
                    if data is None:
                        assert fd is not None
                        read = await store.run_io(
                            os.pread, fd, min(available - offset, READ_CHUNK), offset
                        )
                        assert isinstance(read, bytes)
                        data = read
                if not data:
                    await fill.changed(0.05)
                    continue
                offset += len(data)
                yield data
                continue
            outcome = fill.outcome
            if outcome is None:
                await fill.changed(1.0)
                continue
            if outcome is not Outcome.DONE:
                raise FillFailed(f"fill of {key_hex} ended {outcome.as_str()}")
            if offset >= fill.written:
                if (end is not None and offset < end) or (end is None and not fill.size_known):
                    # done, but fewer bytes seen than announced (or, without a length, none
                    # counted): a follower in another process that found the part file
                    # already published (renamed) never learnt its size; read the rest from
                    # the published entry, which _published checks is the announced body
                    async for chunk in _published(store, key_hex, fill, head, offset, end):
                        yield chunk
                return
    finally:
        if fd is not None:
            await store.run_io(os.close, fd)


async def _published(
    store: DiskStore, key_hex: str, fill: Fill, head: FillHead, start: int, end: int | None
) -> AsyncIterator[bytes]:
    """The part file was published (renamed) before we could open it: read what is on disk
    now, and only if it is the body this head announced (length and validators)."""
    while fill.outcome is None:
        await fill.changed(1.0)
    if fill.outcome is not Outcome.DONE:
        raise FillFailed(f"fill of {key_hex} ended {fill.outcome}")
    entry = await store.read_entry_from_disk(key_hex)
    if (
        entry is None
        or not _matches(entry, head)
        or (fill.body_file is not None and entry.body_file != fill.body_file)
    ):
        raise FillFailed(f"the stored {key_hex} is not the body this fill announced")
    stop = entry.size if end is None else end
    offset = start
    while offset < stop:
        try:
            data = await store.read_range(entry, offset, min(READ_CHUNK, stop - offset))
        except FileNotFoundError as exc:  # evicted since: this answer cannot be completed
            raise FillFailed(f"the stored {key_hex} was evicted while being read") from exc
        if not data:
            raise FillFailed("stored body shorter than announced")
        offset += len(data)
        yield data
