"""Large objects as aligned slices (nginx's slice module, without its traps).

Contract:
- A Range request for an uncached object under a policy with ``slice_size`` first probes the
  upstream with ``Range: bytes=0-0`` (coalesced on the object key). The 206 answer's
  Content-Range gives the length: an object over ``slice_threshold`` gets a *manifest* entry
  (the object's header fields, its length and the slice size, an empty body) and its bytes are
  fetched and cached as aligned slices keyed by (object key, slice index), each coalesced on its
  own; a smaller one is fetched whole (the caller's normal path).
- A range touching slices 7-9 fetches only those (one aligned upstream Range request each), and
  a range crossing slice boundaries comes back whole and byte-exact; a full GET streams the
  slices in order.
- One version only: every slice is checked against the manifest's ETag (or Last-Modified) and
  length. A slice of another version raises :class:`VersionChanged`: the manifest is dropped,
  the client's connection cut, and the next request starts over; never a mix of two versions.
- A parent that answers a slice request with 200 (the whole object) is handled: the needed
  window is taken from the body and the rest is not read.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import aiohttp
from multidict import CIMultiDict

from edgeproxy.cache.entry import Entry
from edgeproxy.cache.key import CacheKey, build_key
from edgeproxy.config import PolicyConfig
from edgeproxy.http.cache_status import append_cache_status
from edgeproxy.http.conditional import if_range_allows_partial
from edgeproxy.http.ranges import (
    UNSATISFIABLE,
    parse_content_range,
    parse_range,
    slice_bounds,
    slice_indexes,
)
from edgeproxy.proxy.answers import answer_304
from edgeproxy.proxy.coalesce import Bypass, FillHead, Follow, LocalFill, Outcome
from edgeproxy.proxy.fillread import FillFailed, fill_chunks
from edgeproxy.proxy.upstream import UpstreamError

if TYPE_CHECKING:
    from edgeproxy.cache.store import BodyWriter
    from edgeproxy.proxy.handler import Node
    from edgeproxy.proxy.server import Request, ResponseWriter

log = logging.getLogger("edgeproxy.slices")

WAIT_TIMEOUT = 30.0
COPY_CHUNK = 256 * 1024


class VersionChanged(Exception):
    """The origin object changed between slices."""


def same_version(manifest: Entry, etag: str | None, last_modified: str | None) -> bool:
    """A slice (its ``etag`` / ``last_modified``) belongs to the manifest's version of the
    object: the ETag decides when the manifest has one, else Last-Modified."""
    if manifest.etag:
        return etag == manifest.etag
    if manifest.last_modified:
        return last_modified == manifest.last_modified
    return True  # no validator at all: only the length can be compared


class Slicer:
    """Slice mode of one node (uses its store, coalescer and upstream)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.slices_fetched = 0

    def slice_key(self, policy: PolicyConfig, key: CacheKey, index: int) -> CacheKey:
        headers = {name.lower(): value for name, value in key.forwarded_headers}
        return build_key(policy, key.upstream_target, headers, variant=f"slice:{index}")

    # ---- the probe's answer -----------------------------------------------------------------

    def manifest_from_probe(
        self,
        policy: PolicyConfig,
        key: CacheKey,
        stored_headers: CIMultiDict[str],
        total: int,
        request_time: float,
        response_time: float,
        initial_age: float,
        lifetime: float,
    ) -> Entry:
        fields = [(n, v) for n, v in stored_headers.items() if n.lower() not in ("content-range",)]
        return Entry(
            key_hex=key.hex,
            path=key.path,
            status=200,
            reason="OK",
            headers=fields,
            request_time=request_time,
            response_time=response_time,
            initial_age=initial_age,
            lifetime=lifetime,
            size=0,
            checksum="",
            body_file="",
            sliced=(total, policy.slice_size),
        )

    async def publish_manifest(
        self, policy: PolicyConfig, key: CacheKey, manifest: Entry, old: Entry | None
    ) -> None:
        """Store a manifest; slices of a previous, different version are dropped."""
        store = self.node.store
        writer = store.new_writer(manifest.key_hex)
        await store.publish(writer, manifest)
        if (
            old is not None
            and old.sliced
            and (old.etag, old.last_modified)
            != (
                manifest.etag,
                manifest.last_modified,
            )
        ):
            await self.drop_slices(policy, key, old)

    async def drop_slices(self, policy: PolicyConfig, key: CacheKey, manifest: Entry) -> None:
        """Drop every slice of a manifest's object."""
        assert manifest.sliced is not None
        total, slice_size = manifest.sliced
        for index in range((total + slice_size - 1) // slice_size):
            await self.node.store.drop(self.slice_key(policy, key, index).hex)

    # ---- serving ------------------------------------------------------------------------------

    async def serve(
        self,
        req: Request,
        resp: ResponseWriter,
        policy: PolicyConfig,
        key: CacheKey,
        manifest: Entry,
        member: str,
        upstream_status: str | None = None,
    ) -> None:
        """Answer from a manifest: 200, 206 or 416; bytes from cached or fetched slices."""
        assert manifest.sliced is not None
        total, slice_size = manifest.sliced
        node = self.node
        now = time.time()
        fields = node._head_fields(manifest, policy)
        fields.append(("Age", str(int(manifest.age(now)))))
        fields.append(("Cache-Status", append_cache_status(upstream_status, member)))
        if answer_304(req, resp, manifest, fields):
            return
        first, last, status = 0, total - 1, 200
        value = req.headers.get("range")
        if value is not None:
            if_range = req.headers.get("if-range")
            if if_range is None or if_range_allows_partial(
                if_range, manifest.etag, manifest.last_modified, date=manifest.date
            ):
                ranges = parse_range(value, total)
                if ranges == UNSATISFIABLE:
                    fields.append(("Content-Range", f"bytes */{total}"))
                    resp.start(416, fields, content_length=0)
                    return
                if isinstance(ranges, list) and len(ranges) == 1:
                    first, last = ranges[0]
                    status = 206
                    fields.append(("Content-Range", f"bytes {first}-{last}/{total}"))
        resp.start(status, fields, content_length=last - first + 1 if total else 0)
        if req.method == "HEAD" or total == 0:
            return
        try:
            for index in slice_indexes(first, last, slice_size):
                a, b = slice_bounds(index, slice_size, total)
                lo, hi = max(first, a), min(last, b)
                async for chunk in self.slice_chunks(
                    policy, key, manifest, index, lo - a, hi - lo + 1
                ):
                    await resp.write(chunk)
        except VersionChanged:
            log.warning("%s changed between slices: dropping its manifest", key.path)
            await node.store.drop(manifest.key_hex, only=manifest)
            await self.drop_slices(policy, key, manifest)
            resp.abort()
        except (FillFailed, UpstreamError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("slice of %s failed: %s", key.path, exc)
            resp.abort()

    async def slice_chunks(
        self,
        policy: PolicyConfig,
        key: CacheKey,
        manifest: Entry,
        index: int,
        offset: int,
        length: int,
    ) -> AsyncIterator[bytes]:
        """Bytes ``offset..offset+length`` of slice ``index``: from the store, a fill in
        progress, or a new fill (coalesced per slice)."""
        assert manifest.sliced is not None
        total, slice_size = manifest.sliced
        a, b = slice_bounds(index, slice_size, total)
        size = b - a + 1
        node = self.node
        store = node.store
        skey = self.slice_key(policy, key, index)
        for _ in range(2):
            entry = await store.lookup(skey.hex)
            if (
                entry is not None
                and entry.size == size
                and same_version(manifest, entry.etag, entry.last_modified)
                and await store.ensure_readable(entry)
            ):
                body = store.ram_body(entry)
                if body is None:
                    body = entry.mapped
                if body is not None:
                    yield bytes(memoryview(body)[offset : offset + length])
                else:
                    yield await store.read_range(entry, offset, length)
                return
            got = await node.coalescer.acquire(skey.hex, now=time.time())
            if isinstance(got, Follow):
                fill = got.fill
                fill.followers += 1
                try:
                    if await fill.wait_head(WAIT_TIMEOUT):
                        assert fill.head is not None
                        fields = CIMultiDict(fill.head.headers)
                        if fill.head.content_length != size or not same_version(
                            manifest, fields.get("etag"), fields.get("last-modified")
                        ):
                            # a fill of another version: never followed into this answer
                            while fill.outcome is None:
                                await fill.changed(1.0)
                            continue
                        async for chunk in fill_chunks(
                            store, skey.hex, fill, fill.head, offset, offset + length
                        ):
                            yield chunk
                        return
                    if fill.outcome is Outcome.DONE:
                        continue  # published meanwhile: read it from the store
                    raise FillFailed(f"slice {index} of {key.path}: {fill.outcome}")
                finally:
                    fill.followers -= 1
                    if fill.followers == 0:
                        node.coalescer.forget_remote(fill)  # close a sibling's fill we watched
            if isinstance(got, Bypass):
                async for chunk in self._direct(policy, key, a + offset, a + offset + length - 1):
                    yield chunk
                return
            fill = got.fill
            head = await self._lead(policy, key, skey, manifest, index, a, b, fill)
            async for chunk in fill_chunks(store, skey.hex, fill, head, offset, offset + length):
                yield chunk
            return
        raise FillFailed(f"slice {index} of {key.path} could not be read")

    async def _direct(
        self, policy: PolicyConfig, key: CacheKey, first: int, last: int
    ) -> AsyncIterator[bytes]:
        """An uncached window straight from upstream (when the slice lock is contended)."""
        node = self.node
        fields = node._upstream_headers(key, None, policy, None)
        fields.append(("Range", f"bytes={first}-{last}"))
        upstream = await node.upstream.open("GET", key.upstream_target, fields)
        try:
            if upstream.status != 206:
                raise UpstreamError(502, f"slice answered {upstream.status}")
            async for chunk in upstream.content.iter_chunked(COPY_CHUNK):
                yield chunk
        finally:
            upstream.release()

    async def _lead(
        self,
        policy: PolicyConfig,
        key: CacheKey,
        skey: CacheKey,
        manifest: Entry,
        index: int,
        a: int,
        b: int,
        fill: LocalFill,
    ) -> FillHead:
        """Fetch slice ``index`` (bytes a..b) into a fill; returns its head once announced."""
        node = self.node
        fields = node._upstream_headers(key, None, policy, None)
        fields.append(("Range", f"bytes={a}-{b}"))
        try:
            upstream = await node.upstream.open("GET", key.upstream_target, fields)
        except BaseException:
            await fill.finish(Outcome.UPSTREAM_ERROR)
            raise
        total = manifest.sliced[0] if manifest.sliced else 0
        try:
            etag = upstream.headers.get("ETag")
            last_modified = upstream.headers.get("Last-Modified")
            skip = 0
            if upstream.status == 206:
                span = parse_content_range(upstream.headers.get("Content-Range"))
                if (
                    span is None
                    or span[2] != total
                    or not same_version(manifest, etag, last_modified)
                ):
                    raise VersionChanged(key.path)
                if span[0] != a or span[1] != b:
                    raise UpstreamError(502, f"slice answered {span}, asked {a}-{b}")
            elif upstream.status == 200:
                # the parent ignored Range: take the window from the whole body
                if upstream.content_length not in (None, total) or not same_version(
                    manifest, etag, last_modified
                ):
                    raise VersionChanged(key.path)
                skip = a
            else:
                raise UpstreamError(502, f"slice request answered {upstream.status}")
        except BaseException:
            upstream.release()
            await fill.finish(Outcome.UPSTREAM_ERROR)
            raise
        writer = node.store.new_writer(skey.hex, streaming=True)
        try:
            await writer.open()
        except BaseException:
            await writer.abort()
            upstream.release()
            await fill.finish(Outcome.UPSTREAM_ERROR)  # never leave the slice's lock behind
            raise
        now = time.time()
        slice_fields: list[tuple[str, str]] = []
        if etag:
            slice_fields.append(("ETag", etag))
        if last_modified:
            slice_fields.append(("Last-Modified", last_modified))
        entry = Entry(
            key_hex=skey.hex,
            path=key.path,
            status=200,
            reason="OK",
            headers=slice_fields,
            request_time=now,
            response_time=now,
            initial_age=0.0,
            lifetime=policy.max_ttl,  # reached only through a fresh manifest of its version
            size=0,
            checksum="",
            body_file="",
        )
        head = FillHead(
            status=200,
            reason="OK",
            headers=tuple(slice_fields),
            content_length=b - a + 1,
            part_path=str(writer.tmp_path),
            ttl=int(policy.max_ttl),
        )
        await fill.announce(head)
        fill.handed_off = True
        self.slices_fetched += 1
        task = asyncio.get_running_loop().create_task(
            self._run(fill, upstream, writer, entry, skip, b - a + 1)
        )
        node._background.add(task)
        task.add_done_callback(node._background.discard)
        return head

    async def _run(
        self,
        fill: LocalFill,
        upstream: aiohttp.ClientResponse,
        writer: BodyWriter,
        entry: Entry,
        skip: int,
        length: int,
    ) -> None:
        outcome = Outcome.UPSTREAM_ERROR
        try:
            remaining_skip, remaining = skip, length
            async for chunk in upstream.content.iter_chunked(COPY_CHUNK):
                if remaining_skip:
                    if len(chunk) <= remaining_skip:
                        remaining_skip -= len(chunk)
                        continue
                    chunk = chunk[remaining_skip:]
                    remaining_skip = 0
                chunk = chunk[:remaining]
                await writer.write(chunk)
                remaining -= len(chunk)
                fill.advance(writer.size, chunk)
                if remaining == 0:
                    break
            if remaining:
                raise ConnectionError(f"slice short by {remaining} bytes")
            if skip or upstream.status == 200:
                upstream.close()  # the rest of a whole body is not wanted
            await self.node.store.publish(writer, entry)
            outcome = Outcome.DONE
        except asyncio.CancelledError:
            await writer.abort()
            raise
        except Exception as exc:
            log.warning("slice fill of %s failed: %s", entry.path, exc)
            await writer.abort()
        finally:
            upstream.release()
            fill.advance(writer.size)
            await fill.finish(outcome)
